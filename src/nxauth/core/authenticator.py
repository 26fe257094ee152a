"""The Authenticator: owns the configuration, the plugin manager, the backend
instances, the store and the throttle.  One per server process."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, final

from nxauth.config import BackendConfig, Config, StackEntry, default_config_path, load_config, parse_config
from nxauth.core.audit import StoreSink, sinks_from_config
from nxauth.core.runtime import Plan, PlannedStep, Runtime
from nxauth.core.throttle import source_key, user_key
from nxauth.details import declared_details
from nxauth.errors import ConfigError, NxauthError, PluginError, UsageError
from nxauth.model import Peer
from nxauth.plugins.manager import collect_backends, describe_plugins, make_plugin_manager
from nxauth.plugins.registry import BackendContext
from nxauth.plugins.roles import AccountBackend, AuthBackend, KeySource

if TYPE_CHECKING:
    from nxauth.core.session import Session
    from nxauth.plugins.roles import Backend
    from nxauth.store.protocol import Store

__all__ = ["Authenticator", "runtime_of"]

log = logging.getLogger("nxauth")

#: role -> (its Protocol, the method that is the role)
ROLES: dict[str, tuple[type, str]] = {
    "key source": (KeySource, "authorized_keys"),
    "auth": (AuthBackend, "authenticate"),
    "account": (AccountBackend, "check_account"),
}


@final
class Authenticator:
    """Authenticates remote users in two stages.

    Build it from a :class:`nxauth.config.Config`, from a mapping of the TOML
    file's shape, or with :meth:`from_file`.  ``plugins`` are extra pluggy
    plugins (objects or modules with ``nxauth_*`` hook implementations);
    ``backends`` maps instance names to ready backend objects, usable in the
    stacks like configured ones, so a host composes a pipeline in code.
    """

    __module__ = "nxauth"

    def __init__(
        self,
        config: Config | Mapping[str, Any] | None = None,
        *,
        plugins: Iterable[object] = (),
        backends: Mapping[str, object] | None = None,
        builtins: bool = True,
        entry_points: bool | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if config is None:
            config = Config()
        elif isinstance(config, Mapping):
            config = parse_config(config)
        elif not isinstance(config, Config):
            raise UsageError(f"config must be a Config or a mapping, not {type(config).__name__}")
        if backends is not None and not isinstance(backends, Mapping):
            raise UsageError("backends must be a mapping of instance name to backend object")
        if isinstance(plugins, str | bytes):
            raise UsageError("plugins must be an iterable of plugin objects")
        self._config = config
        self._closables: list[Any] = []
        use_entry_points = config.plugins.entry_points if entry_points is None else entry_points
        pm, errors = make_plugin_manager(
            plugins, builtins=builtins, entry_points=use_entry_points, disabled=config.plugins.disabled
        )
        self._pm = pm
        self._registry = collect_backends(pm, errors)
        self._plugin_errors: tuple[PluginError, ...] = tuple(errors)
        for error in errors:
            log.warning("%s", error)
        if errors and config.plugins.strict:
            raise errors[0]
        self._runtime = Runtime(config, clock, pm)
        self._register_sinks()
        built = self._build_backends(dict(backends or {}))
        self._backends: Mapping[str, Backend] = MappingProxyType(built)
        self._runtime.bind(self._backends, self._make_plan())

    # ------------------------------------------------------------ building

    @classmethod
    def from_file(cls, path: str | os.PathLike[str] | None = None, **kwargs: Any) -> Authenticator:
        """Build from a TOML file.  ``None``: ``$NXAUTH_CONFIG``, then
        ``/etc/nxauth/nxauth.toml``, else the embedded default."""
        if path is None:
            path = default_config_path()
        if path is not None and not isinstance(path, str | os.PathLike):
            raise UsageError("path must be a str or os.PathLike")
        return cls(load_config(path) if path is not None else Config(), **kwargs)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "<mapping>", **kwargs: Any) -> Authenticator:
        """Build from a mapping of the same shape as the TOML file."""
        if not isinstance(data, Mapping):
            raise UsageError("from_mapping needs a mapping")
        return cls(parse_config(data, source=source), **kwargs)

    def _register_sinks(self) -> None:
        for sink, name in sinks_from_config(self._config.audit):
            self._pm.register(sink, name=name)
            if hasattr(sink, "close"):
                self._closables.append(sink)
        if self._config.audit_table:
            runtime = self._runtime
            table = StoreSink(lambda: runtime.store)
            self._pm.register(table, name="nxauth.audit.table")
            self._closables.append(table)  # written out on close, before the runtime closes the store

    def _missing_kind(self, kind: str) -> str:
        hints = [str(e) for e in self._plugin_errors]
        text = f"unknown backend kind {kind!r}; available: {', '.join(self._registry.kinds()) or 'none'}"
        return text + (f" (plugins that failed to load: {'; '.join(hints)})" if hints else "")

    def _build_backends(self, given: dict[str, Any]) -> dict[str, Backend]:
        config = self._config
        built: dict[str, Backend] = {}
        wanted: dict[str, str] = {}
        for name, key in config.instance_names():
            wanted.setdefault(name, key)
        for name in config.backends:
            wanted.setdefault(name, f"backends.{name}")
        for name, key in wanted.items():
            if name in given:
                built[name] = given[name]
                continue
            declared = config.backends.get(name)
            if declared is None:
                if name not in self._registry:
                    raise ConfigError(
                        f"unknown backend instance {name!r}: no [backends.{name}] table and no backend kind of that "
                        f"name ({self._missing_kind(name)})",
                        source=config.source,
                        key=key,
                    )
                declared = BackendConfig(name, name, implicit=True)
            built[name] = self._build_one(declared)
        for name, value in given.items():
            built.setdefault(name, value)
        self._check_roles(built)
        return built

    def _build_one(self, declared: BackendConfig) -> Backend:
        factory = self._registry.get(declared.kind)
        if factory is None:
            raise ConfigError(
                self._missing_kind(declared.kind), source=self._config.source, key=f"backends.{declared.name}.kind"
            )
        runtime = self._runtime
        context = BackendContext(
            declared, root=self._config, store=lambda: runtime.store, clock=runtime.clock, admission=runtime.admission
        )
        try:
            backend = factory(context)
        except NxauthError:
            raise
        except Exception as exc:
            owner = self._registry.owner(declared.kind)
            raise PluginError(
                f"building backend {declared.name!r} of kind {declared.kind!r} failed: {type(exc).__name__}: {exc}",
                plugin=owner,
            ) from exc
        context.options.check_unused()
        if backend is None:
            raise PluginError(
                f"factory for kind {declared.kind!r} returned None", plugin=self._registry.owner(declared.kind)
            )
        if hasattr(backend, "close"):
            self._closables.append(backend)
        return backend

    def _check_roles(self, built: Mapping[str, object]) -> None:
        source = self._config.source

        def need(name: str, role: str, key: str) -> None:
            protocol, method = ROLES[role]
            if not isinstance(built[name], protocol) or not callable(getattr(built[name], method, None)):
                raise ConfigError(
                    f"backend {name!r} cannot be used as {role} (it has no {method}() method)", source=source, key=key
                )

        for index, name in enumerate(self._config.transport.key_sources):
            need(name, "key source", f"transport.key_sources[{index}]")
        for entry in self._config.auth:
            need(entry.use, "auth", f"{entry.key}.use")
        for entry in self._config.account:
            need(entry.use, "account", f"{entry.key}.use")

    def _make_plan(self) -> Plan:
        """Bind each stack entry to its backend method once, not per login."""

        timeout_of = self._runtime.timeout_of

        def steps(entries: tuple[StackEntry, ...], method: str) -> tuple[PlannedStep, ...]:
            return tuple((e.use, e.control, getattr(self._backends[e.use], method), timeout_of(e.use)) for e in entries)

        auth = steps(self._config.auth, "authenticate")
        account = steps(self._config.account, "check_account")
        used = {step[0] for step in (*auth, *account)}
        details = {name: declared_details(self._backends[name], name=name) for name in sorted(used)}
        return Plan(auth, account, any(step[3] is not None for step in (*auth, *account)), details)

    # ------------------------------------------------------------ what a host may read

    @property
    def config(self) -> Config:
        """The configuration this authenticator was built from."""
        return self._config

    @property
    def backends(self) -> Mapping[str, Backend]:
        """The backend instances by name: the configured ones and those given
        in code (read-only)."""
        return self._backends

    @property
    def plugin_errors(self) -> tuple[PluginError, ...]:
        """The plugins that could not be loaded, each a :class:`PluginError`
        naming it (logged; fatal only with ``plugins.strict``)."""
        return self._plugin_errors

    @property
    def store(self) -> Store:
        """The embedded store (opened on first use), for programs that manage
        users and keys (``nxauth useradd``, ``nxauth keys``)."""
        return self._runtime.store

    def canonical_username(self, username: object) -> str:
        """The canonical form of ``username`` under this configuration
        (raises :class:`nxauth.InvalidUsername` for a name that cannot be used)."""
        return self._runtime.canonical_username(username)

    # ------------------------------------------------------------ sessions and audit

    def open_session(self, peer: Peer | tuple[str, int] | None = None) -> Session:
        """Start one client connection's session.  ``peer`` is ``(host, port)``."""
        from nxauth.core.session import Session

        return Session(self._runtime, Peer.coerce(peer))

    def unlock(self, target: str, *, user: bool | None = None) -> int:
        """Lift the throttle for a username or an address; return rows removed.
        ``user=True`` takes ``target`` as a username even when it looks like
        an address (``10.0.0.1`` is a valid name), ``user=False`` as an
        address only; by default an address if it parses as one."""
        key = None if user else source_key(target.strip())
        if key is None:
            if user is False:
                raise UsageError(f"not an IP address: {target[:60]!r}")
            key = user_key(self.canonical_username(target))
        return self._runtime.throttle.unlock(key)

    def describe(self) -> dict[str, Any]:
        """The composed pipeline, as ``nxauth check`` prints it."""

        def stack(entries: tuple[StackEntry, ...]) -> list[dict[str, str]]:
            return [{"use": e.use, "control": e.control.value, "kind": self._kind_of(e.use)} for e in entries]

        cfg = self._config
        return {
            "config": cfg.source,
            "transport_account": cfg.transport.account,
            "key_sources": [{"use": n, "kind": self._kind_of(n)} for n in cfg.transport.key_sources],
            "auth": stack(cfg.auth),
            "account": stack(cfg.account),
            "store": str(cfg.store_path) if cfg.store.url is None else f"{cfg.store.url} (schema {cfg.store.schema})",
            "plugins": dict(describe_plugins(self._pm)),
            "backend_kinds": {kind: self._registry.owner(kind) for kind in self._registry.kinds()},
            "plugin_errors": [str(e) for e in self._plugin_errors],
        }

    def _kind_of(self, name: str) -> str:
        declared = self._config.backends.get(name)
        if declared is not None:
            return declared.kind
        if name in self._registry:
            return name
        return f"<code: {type(self._backends.get(name)).__name__}>"

    def close(self) -> None:
        """Release pools, sinks, backends and the store."""
        for item in reversed(self._closables):
            try:
                item.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing %r failed: %s", item, exc)
        self._closables.clear()
        self._runtime.close()

    def __enter__(self) -> Authenticator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Authenticator(config={self._config.source!r}, backends={list(self._backends)})"


def runtime_of(authenticator: Authenticator) -> Runtime:
    """The runtime of ``authenticator``, for nxauth's own integrations (the
    authorized-keys command and daemon, the embedded server): internal."""
    return authenticator._runtime
