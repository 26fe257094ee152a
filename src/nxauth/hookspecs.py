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

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .model import AuthEvent
    from .plugins import BackendRegistry

__all__ = ["hookimpl", "hookspec"]

PROJECT = "nxauth"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Mark a function or method as an implementation of an nxauth hook.
hookimpl = pluggy.HookimplMarker(PROJECT)


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
