"""The plugin contract: every hook nxauth calls.

A plugin is any object or module with functions named like these hooks and
marked with :data:`nxauth.hookimpl`.  Hooks are synchronous and cheap; the work
(I/O, hashing, network) lives in the backend objects a plugin registers.  No
verdict ever passes through a hook's return value.

Parameters are plain names: pluggy passes arguments by name, and ignores
keyword-only parameters and defaults, so a hook implementation may accept any
subset of the parameters listed here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, final, overload

if TYPE_CHECKING:
    from nxauth.model import AdminEvent, AuthEvent
    from nxauth.plugins.registry import BackendRegistry

__all__ = ["HookimplMarker", "HookspecMarker", "hookimpl", "hookspec"]

PROJECT = "nxauth"

_F = TypeVar("_F", bound=Callable[..., Any])


@final
class HookimplMarker:
    """pluggy's ``HookimplMarker`` without importing pluggy.

    Marking a function sets the same attribute, with the same options, as
    ``pluggy.HookimplMarker("nxauth")`` does (a test holds the two equal), so
    any pluggy ``PluginManager("nxauth")`` finds the implementation.  Built-in
    backends and audit sinks use it, which keeps pluggy (and the entry-point
    scan it brings) out of ``nxauth authorized-keys``, the command sshd runs
    on every login.
    """

    def __init__(self, project_name: str) -> None:
        self.project_name = project_name

    @overload
    def __call__(self, function: _F) -> _F: ...

    @overload
    def __call__(
        self,
        function: None = ...,
        *,
        hookwrapper: bool = ...,
        optionalhook: bool = ...,
        tryfirst: bool = ...,
        trylast: bool = ...,
        specname: str | None = ...,
        wrapper: bool = ...,
    ) -> Callable[[_F], _F]: ...

    def __call__(
        self,
        function: _F | None = None,
        *,
        hookwrapper: bool = False,
        optionalhook: bool = False,
        tryfirst: bool = False,
        trylast: bool = False,
        specname: str | None = None,
        wrapper: bool = False,
    ) -> _F | Callable[[_F], _F]:
        def mark(func: _F) -> _F:
            opts = {
                "wrapper": wrapper,
                "hookwrapper": hookwrapper,
                "optionalhook": optionalhook,
                "tryfirst": tryfirst,
                "trylast": trylast,
                "specname": specname,
            }
            setattr(func, self.project_name + "_impl", opts)
            return func

        return mark if function is None else mark(function)


@final
class HookspecMarker:
    """pluggy's ``HookspecMarker`` without importing pluggy (see :class:`HookimplMarker`)."""

    def __init__(self, project_name: str) -> None:
        self.project_name = project_name

    def __call__(self, function: _F) -> _F:
        opts = {"firstresult": False, "historic": False, "warn_on_impl": None, "warn_on_impl_args": None}
        setattr(function, self.project_name + "_spec", opts)
        return function


hookspec = HookspecMarker(PROJECT)
#: Mark a function or method as an implementation of an nxauth hook.
hookimpl = HookimplMarker(PROJECT)


@hookspec
def nxauth_register_backends(registry: BackendRegistry) -> None:
    """Make backend kinds available.

    Called once per :class:`nxauth.Authenticator`, while it is built, before
    the configuration's backend instances are created.  Call
    ``registry.add(kind, factory)`` for each kind the plugin provides;
    ``factory(context)`` is called later with a :class:`nxauth.BackendContext`
    for each configured instance of that kind, and returns the backend object
    (which has any of ``authorized_keys(account)``, ``authenticate(attempt)``
    and ``check_account(identity)``).

    :param registry: the :class:`nxauth.BackendRegistry` of this authenticator.
    :return: nothing; the return value is ignored.
    """


@hookspec
def nxauth_auth_event(event: AuthEvent) -> None:
    """Observe one decision of either stage (audit sinks, metrics).

    Called after every decision: accepted, failed, or refused before any
    backend (lockout, stage order, bad input, closed session).  The event
    never holds a secret.  Each implementation is called on its own: an
    exception in one is logged and does not keep the others from seeing the
    event.  It never turns a deny into an allow; with ``audit.required =
    true`` in the configuration, a failing implementation turns an accept into
    a deny.

    :param event: the :class:`nxauth.AuthEvent`.
    :return: nothing; the return value is ignored.
    """


@hookspec
def nxauth_admin_event(event: AdminEvent) -> None:
    """Observe one administrative change (a user added, a password set, a
    node granted...), made by the ``nxauth`` commands.

    The built-in sinks (log, syslog, JSON lines, the store's audit table)
    record it; the commands call them without loading plugins, so a
    third-party sink sees the changes made through a host program's own
    plugin manager only.

    :param event: the :class:`nxauth.AdminEvent`.
    :return: nothing; the return value is ignored.
    """
