"""The plugin manager: built-ins by import path, third parties by entry point.

A fresh :class:`pluggy.PluginManager` is made for every
:class:`nxauth.Authenticator`; there is no module-level manager.  A plugin
that fails to import or register becomes a :class:`PluginError` naming it,
and the others still load (fatal only with ``plugins.strict``).  Whatever
``plugins.strict`` says, a plugin with an ``nxauth_*`` function that is no
hook, and a backend kind registered twice or a built-in kind registered by
another plugin (:data:`nxauth.plugins.registry.RESERVED_KINDS`), raise
:class:`PluginError`.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from nxauth.errors import PluginError
from nxauth.plugins import hookspecs
from nxauth.plugins.registry import BackendRegistry

if TYPE_CHECKING:
    import pluggy
    from pluggy import HookImpl


__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "collect_backends",
    "describe_plugins",
    "make_plugin_manager",
]

log = logging.getLogger("nxauth.plugins")

ENTRY_POINT_GROUP: Final = "nxauth"
#: The hooks nxauth calls (each documented in :mod:`nxauth.plugins.hookspecs`).
HOOKS: Final = ("nxauth_register_backends", "nxauth_auth_event")

#: Built-in plugins, registered by import path exactly like third-party ones.
#: Each module is cheap to import: optional dependencies are imported when a
#: backend of its kind is first built.
BUILTIN_PLUGINS: Final[tuple[str, ...]] = (
    "nxauth.backends.keystore",
    "nxauth.backends.authorized_keys",
    "nxauth.backends.passwords",
    "nxauth.backends.users",
    "nxauth.backends.system",
    "nxauth.backends.pam",
    "nxauth.backends.ldap",
)


# the distribution ("name version") of each plugin loaded from an entry point,
# per plugin manager (pluggy records it only for its own entry-point loader)
_DISTRIBUTIONS: weakref.WeakKeyDictionary[pluggy.PluginManager, dict[str, str]] = weakref.WeakKeyDictionary()


def _name_of(plugin: object) -> str:
    return getattr(plugin, "__name__", None) or type(plugin).__name__


def _register(pm: pluggy.PluginManager, plugin: object, name: str, errors: list[PluginError]) -> bool:
    try:
        pm.register(plugin, name=name)
    except Exception as exc:  # noqa: BLE001 - one broken plugin must not stop the others
        errors.append(PluginError(f"cannot register: {exc}", plugin=name))
        return False
    return True


def make_plugin_manager(
    plugins: Iterable[object] = (),
    *,
    builtins: bool = True,
    entry_points: bool = True,
    disabled: Iterable[str] = (),
) -> tuple[pluggy.PluginManager, list[PluginError]]:
    """Make a fresh plugin manager and load plugins into it.

    Order: built-ins (by import path), then entry points of the group
    ``nxauth``, then ``plugins`` given from code.  Returns the manager and the
    errors of plugins that could not be loaded (each names its plugin).
    """
    import pluggy  # here, not at the top: ``nxauth authorized-keys`` builds key sources without it

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    errors: list[PluginError] = []
    skip = set(disabled)

    if builtins:
        for path in BUILTIN_PLUGINS:
            if path in skip:
                continue
            try:
                module = importlib.import_module(path)
            except Exception as exc:  # noqa: BLE001
                errors.append(PluginError(f"cannot import: {type(exc).__name__}: {exc}", plugin=path))
                continue
            _register(pm, module, path, errors)

    if entry_points:
        from importlib import metadata

        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in skip or ep.value in skip:
                continue
            if pm.has_plugin(ep.name):
                errors.append(PluginError("an entry point of that name is already registered", plugin=ep.name))
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001
                errors.append(
                    PluginError(f"cannot load entry point {ep.value}: {type(exc).__name__}: {exc}", plugin=ep.name)
                )
                continue
            dist = getattr(ep, "dist", None)  # None for an entry point made by hand
            if _register(pm, plugin, ep.name, errors) and dist is not None:
                _DISTRIBUTIONS.setdefault(pm, {})[ep.name] = f"{dist.name} {dist.version}"

    for plugin in plugins:
        name = _name_of(plugin)
        if pm.is_registered(plugin):
            continue
        if pm.has_plugin(name):
            name = f"{name}-{id(plugin):x}"
        _register(pm, plugin, name, errors)

    _check_pending(pm, errors)
    _refuse_wrappers(pm, errors)
    return pm, errors


def _check_pending(pm: pluggy.PluginManager, errors: list[PluginError]) -> None:
    """Refuse plugins with a function named ``nxauth_*`` that is no hook
    (a misspelled ``nxauth_auth_evnt``, marked or not) or a hook function not
    marked with :data:`nxauth.hookimpl`: such a plugin would silently never
    be called, so it is an error whatever ``plugins.strict`` says."""
    from pluggy import PluginValidationError

    unknown: list[PluginError] = []
    for _ in range(100):
        try:
            pm.check_pending()
            break
        except PluginValidationError as exc:
            plugin = exc.plugin
            name = pm.get_name(plugin) or _name_of(plugin)
            unknown.append(PluginError(f"unknown hook: {exc}", plugin=name))
            pm.unregister(plugin)
    for name, plugin in pm.list_name_plugin():
        for attr in dir(plugin):
            if not attr.startswith(hookspecs.PROJECT + "_"):
                continue
            function = getattr(plugin, attr, None)
            if not inspect.isroutine(function):
                continue
            opts = getattr(function, hookspecs.PROJECT + "_impl", None)
            if attr not in HOOKS and not (isinstance(opts, dict) and opts.get("specname") in HOOKS):
                unknown.append(PluginError(f"unknown hook {attr!r}; the hooks are {', '.join(HOOKS)}", plugin=name))
            elif attr in HOOKS and opts is None:
                unknown.append(PluginError(f"hook {attr!r} is not marked with @nxauth.hookimpl", plugin=name))
    if unknown:
        errors.extend(unknown)
        raise PluginError("; ".join(str(e) for e in unknown))


def _refuse_wrappers(pm: pluggy.PluginManager, errors: list[PluginError]) -> None:
    """Unregister plugins with ``wrapper=True`` or ``hookwrapper=True``
    implementations: nxauth calls each implementation on its own (one that
    fails cannot stop the others, see :func:`call_each`), so a wrapper would
    silently never run."""
    for name in HOOKS:
        for impl in getattr(pm.hook, name).get_hookimpls():
            if (impl.wrapper or impl.hookwrapper) and pm.is_registered(impl.plugin):
                errors.append(
                    PluginError(
                        f"{name}: wrapper implementations are not supported (nxauth calls each implementation on "
                        "its own, so that one that fails cannot stop the others)",
                        plugin=impl.plugin_name,
                    )
                )
                pm.unregister(impl.plugin)


def implementations(pm: pluggy.PluginManager, name: str) -> list[HookImpl]:
    """The implementations of hook ``name`` in pluggy's call order:
    ``tryfirst`` first, ``trylast`` last, otherwise the last registered first."""
    return list(reversed(getattr(pm.hook, name).get_hookimpls()))


def call_one(impl: HookImpl, arguments: Mapping[str, object]) -> None:
    """Call one implementation with the arguments it names (as pluggy does).
    A wrapper (refused at construction) raises :class:`PluginError`."""
    if impl.wrapper or impl.hookwrapper:
        raise PluginError("wrapper implementations are not supported", plugin=impl.plugin_name)
    impl.function(*(arguments[arg] for arg in impl.argnames))


def call_each(pm: pluggy.PluginManager, name: str, arguments: Mapping[str, object]) -> list[tuple[str, Exception]]:
    """Call every implementation of hook ``name`` in pluggy's order, each on
    its own; return the ``(plugin name, exception)`` of those that raised."""
    failed: list[tuple[str, Exception]] = []
    for impl in implementations(pm, name):
        try:
            call_one(impl, arguments)
        except Exception as exc:  # noqa: BLE001 - reported to the caller, which decides
            failed.append((impl.plugin_name, exc))
    return failed


def collect_backends(pm: pluggy.PluginManager, errors: list[PluginError]) -> BackendRegistry:
    """Call every plugin's ``nxauth_register_backends`` into one registry.

    Each plugin's hook is called on its own, so a plugin that raises is
    reported by name and the others' kinds are still registered.  A conflict
    (a built-in kind registered by another plugin, a kind registered twice)
    raises :class:`PluginError` naming the plugins, whatever
    ``plugins.strict`` says: the configuration must never run code other
    than the kind's one owner.
    """
    registry = BackendRegistry()
    for impl in implementations(pm, "nxauth_register_backends"):
        registry.current_plugin = impl.plugin_name
        # a built-in kind is reserved to the very module that owns it, not to a name
        builtin = sys.modules.get(impl.plugin_name) if impl.plugin_name in BUILTIN_PLUGINS else None
        registry._builtin = impl.plugin_name if builtin is not None and impl.plugin is builtin else None
        try:
            call_one(impl, {"registry": registry})
        except PluginError as exc:
            errors.append(exc)
        except Exception as exc:  # noqa: BLE001
            errors.append(
                PluginError(f"nxauth_register_backends failed: {type(exc).__name__}: {exc}", plugin=impl.plugin_name)
            )
    registry.current_plugin = "<code>"
    registry._builtin = None
    if registry.conflicts:
        raise PluginError("; ".join(str(e) for e in registry.conflicts))
    return registry


def describe_plugins(pm: pluggy.PluginManager) -> Mapping[str, Any]:
    """Each loaded plugin's name and, for one loaded from an entry point, its
    distribution as ``"name version"`` (``None`` for built-ins and plugins
    given from code); for ``nxauth check``."""
    distributions = _DISTRIBUTIONS.get(pm, {})
    return {name: distributions.get(name) for name, _plugin in pm.list_name_plugin()}
