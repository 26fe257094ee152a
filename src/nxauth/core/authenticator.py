"""The Authenticator: owns the configuration, the plugin manager, the backend
instances, the store and the throttle.  One per server process."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, final

import pluggy

from nxauth.config import BackendConfig, Config, Control, StackEntry, default_config_path, load_config, parse_config
from nxauth.core.audit import sinks_from_config
from nxauth.core.throttle import Throttle, source_key, user_key
from nxauth.errors import ConfigError, NxauthError, PluginError, UsageError
from nxauth.model import AuthEvent, Peer
from nxauth.plugins.manager import call_each, collect_backends, describe_plugins, make_plugin_manager
from nxauth.plugins.registry import BackendContext, BackendRegistry
from nxauth.store.protocol import Store
from nxauth.store.sqlite import SqliteStore
from nxauth.usernames import normalize_username

if TYPE_CHECKING:
    from nxauth.core.session import Session

__all__ = ["Authenticator"]

log = logging.getLogger("nxauth")

PlannedStep = tuple[str, Control, Callable[[Any], Any], float | None]


@final
@dataclass(frozen=True, slots=True)
class Plan:
    """The stacks, bound to their backends' methods."""

    auth: tuple[PlannedStep, ...]
    account: tuple[PlannedStep, ...]
    needs_timeouts: bool


ROLE_METHODS = {"key source": "authorized_keys", "auth": "authenticate", "account": "check_account"}


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
        self.config = config
        self.clock = clock
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._timeout_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._closables: list[Any] = []

        use_entry_points = config.plugins.entry_points if entry_points is None else entry_points
        pm, errors = make_plugin_manager(
            plugins, builtins=builtins, entry_points=use_entry_points, disabled=config.plugins.disabled
        )
        self.plugin_manager: pluggy.PluginManager = pm
        self.registry: BackendRegistry = collect_backends(pm, errors)
        self.plugin_errors: tuple[PluginError, ...] = tuple(errors)
        for error in errors:
            log.warning("%s", error)
        if errors and config.plugins.strict:
            raise errors[0]
        self._register_sinks()
        self.throttle = Throttle(lambda: self.store, config.throttle, clock=clock)
        self.backends: Mapping[str, object] = MappingProxyType(self._build_backends(dict(backends or {})))
        self.plan = self._make_plan()

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
        for sink, name in sinks_from_config(self.config.audit):
            self.plugin_manager.register(sink, name=name)
            if hasattr(sink, "close"):
                self._closables.append(sink)

    def _missing_kind(self, kind: str) -> str:
        hints = [str(e) for e in self.plugin_errors]
        text = f"unknown backend kind {kind!r}; available: {', '.join(self.registry.kinds()) or 'none'}"
        return text + (f" (plugins that failed to load: {'; '.join(hints)})" if hints else "")

    def _build_backends(self, given: dict[str, object]) -> dict[str, object]:
        config = self.config
        built: dict[str, object] = {}
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
                if name not in self.registry:
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

    def _build_one(self, declared: BackendConfig) -> object:
        factory = self.registry.get(declared.kind)
        if factory is None:
            raise ConfigError(
                self._missing_kind(declared.kind), source=self.config.source, key=f"backends.{declared.name}.kind"
            )
        context = BackendContext(declared, root=self.config, store=lambda: self.store, clock=self.clock)
        try:
            backend = factory(context)
        except NxauthError:
            raise
        except Exception as exc:
            owner = self.registry.owner(declared.kind)
            raise PluginError(
                f"building backend {declared.name!r} of kind {declared.kind!r} failed: {type(exc).__name__}: {exc}",
                plugin=owner,
            ) from exc
        context.options.check_unused()
        if backend is None:
            raise PluginError(
                f"factory for kind {declared.kind!r} returned None", plugin=self.registry.owner(declared.kind)
            )
        if hasattr(backend, "close"):
            self._closables.append(backend)
        return backend

    def _check_roles(self, built: Mapping[str, object]) -> None:
        source = self.config.source

        def need(name: str, role: str, key: str) -> None:
            method = ROLE_METHODS[role]
            if not callable(getattr(built[name], method, None)):
                raise ConfigError(
                    f"backend {name!r} cannot be used as {role} (it has no {method}() method)", source=source, key=key
                )

        for index, name in enumerate(self.config.transport.key_sources):
            need(name, "key source", f"transport.key_sources[{index}]")
        for entry in self.config.auth:
            need(entry.use, "auth", f"{entry.key}.use")
        for entry in self.config.account:
            need(entry.use, "account", f"{entry.key}.use")

    def _make_plan(self) -> Plan:
        """Bind each stack entry to its backend method once, not per login."""

        def steps(entries: tuple[StackEntry, ...], method: str) -> tuple[PlannedStep, ...]:
            return tuple(
                (e.use, e.control, getattr(self.backends[e.use], method), self.timeout_of(e.use)) for e in entries
            )

        auth = steps(self.config.auth, "authenticate")
        account = steps(self.config.account, "check_account")
        return Plan(auth, account, any(step[3] is not None for step in (*auth, *account)))

    # ------------------------------------------------------------ long-lived things

    @property
    def store(self) -> Store:
        """The embedded store, opened on first use."""
        store = self._store
        if store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = SqliteStore(self.config.store_path)
                store = self._store
        return store

    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """The bounded pool that runs the synchronous core for ``login_async``."""
        if self._executor is None:
            with self._executor_lock:
                if self._executor is None:
                    self._executor = concurrent.futures.ThreadPoolExecutor(
                        max_workers=self.config.session.workers, thread_name_prefix="nxauth"
                    )
        return self._executor

    def timeout_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """The pool that runs backend calls that have a timeout."""
        if self._timeout_executor is None:
            with self._executor_lock:
                if self._timeout_executor is None:
                    self._timeout_executor = concurrent.futures.ThreadPoolExecutor(
                        max_workers=self.config.session.workers * 2, thread_name_prefix="nxauth-backend"
                    )
        return self._timeout_executor

    def timeout_of(self, name: str) -> float | None:
        declared = self.config.backends.get(name)
        return declared.timeout if declared is not None else None

    def canonical_username(self, username: object) -> str:
        """The canonical form of ``username`` under this configuration
        (raises :class:`nxauth.InvalidUsername` for a name that cannot be used)."""
        cfg = self.config.usernames
        return normalize_username(username, case=cfg.case, max_length=cfg.max_length)

    # ------------------------------------------------------------ sessions and audit

    def open_session(self, peer: Peer | tuple[str, int] | None = None) -> Session:
        """Start one client connection's session.  ``peer`` is ``(host, port)``."""
        from nxauth.core.session import Session

        return Session(self, Peer.coerce(peer))

    def emit(self, event: AuthEvent) -> bool:
        """Hand ``event`` to every ``nxauth_auth_event`` implementation, each
        on its own; return False if any of them failed."""
        failed = call_each(self.plugin_manager, "nxauth_auth_event", {"event": event})
        for plugin, exc in failed:  # a failing sink never stops the others
            log.error("audit sink %s failed: %s: %s", plugin, type(exc).__name__, exc)
        ok = not failed
        return ok

    def unlock(self, target: str) -> int:
        """Lift the throttle for a username or an address; return rows removed."""
        key = source_key(target.strip())
        if key is None:
            key = user_key(self.canonical_username(target))
        return self.throttle.unlock(key)

    def describe(self) -> dict[str, Any]:
        """The composed pipeline, as ``nxauth check`` prints it."""

        def stack(entries: tuple[StackEntry, ...]) -> list[dict[str, str]]:
            return [{"use": e.use, "control": e.control.value, "kind": self.kind_of(e.use)} for e in entries]

        cfg = self.config
        return {
            "config": cfg.source,
            "transport_account": cfg.transport.account,
            "key_sources": [{"use": n, "kind": self.kind_of(n)} for n in cfg.transport.key_sources],
            "auth": stack(cfg.auth),
            "account": stack(cfg.account),
            "store": str(cfg.store_path),
            "plugins": dict(describe_plugins(self.plugin_manager)),
            "backend_kinds": {kind: self.registry.owner(kind) for kind in self.registry.kinds()},
            "plugin_errors": [str(e) for e in self.plugin_errors],
        }

    def kind_of(self, name: str) -> str:
        declared = self.config.backends.get(name)
        if declared is not None:
            return declared.kind
        if name in self.registry:
            return name
        return f"<code: {type(self.backends.get(name)).__name__}>"

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    def close(self) -> None:
        """Release pools, sinks, backends and the store."""
        for item in reversed(self._closables):
            try:
                item.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing %r failed: %s", item, exc)
        self._closables.clear()
        for pool in (self._executor, self._timeout_executor):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        if self._store is not None:
            self._store.close()

    def __enter__(self) -> Authenticator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Authenticator(config={self.config.source!r}, backends={list(self.backends)})"
