"""The backend registry (kinds by name, filled by ``nxauth_register_backends``)
and the context a backend factory gets."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, final

from nxauth.config import BackendConfig, Config, Options
from nxauth.errors import ConfigError, PluginError
from nxauth.plugins.roles import Backend

if TYPE_CHECKING:
    from nxauth.store.protocol import Store

__all__ = ["BackendContext", "BackendFactory", "BackendRegistry"]


@final
class BackendContext:
    """What a backend factory gets: the instance's name and options, and the
    authenticator's long-lived things (configuration, store, state directory)."""

    __module__ = "nxauth"

    def __init__(
        self,
        config: BackendConfig,
        *,
        root: Config,
        store: Callable[[], Store],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = config.name
        self.clock = clock
        self.kind = config.kind
        self.timeout = config.timeout
        self.config = root
        self.options = Options(config.options, source=root.source, prefix=f"backends.{config.name}")
        self._store = store

    @property
    def store(self) -> Store:
        """The embedded store (opened on first use)."""
        return self._store()

    @property
    def state_dir(self) -> Path:
        """The directory where nxauth keeps its state (``state_dir``)."""
        return self.config.state_dir

    def path(self, value: str) -> Path:
        """``value`` as a path: ``~`` expanded, and a relative path taken from
        the configuration file's directory (from the working directory when
        the configuration is a mapping or the default)."""
        candidate = Path(value).expanduser()
        if candidate.is_absolute() or self.config.source.startswith("<"):
            return candidate
        return Path(self.config.source).resolve().parent / candidate

    @property
    def transport_account(self) -> str:
        """The stage-1 account (``transport.account``, ``nx`` by default)."""
        return self.config.transport.account

    def error(self, key: str, message: str) -> ConfigError:
        """A :class:`ConfigError` naming this instance's option ``key``."""
        return self.options.error(key, message)

    def __repr__(self) -> str:
        return f"BackendContext(name={self.name!r}, kind={self.kind!r})"


#: ``factory(context)`` builds one backend instance of a kind.
BackendFactory = Callable[[BackendContext], Backend]


@final
class BackendRegistry:
    """Backend kinds by name.  Plugins add to it in ``nxauth_register_backends``."""

    __module__ = "nxauth"

    def __init__(self) -> None:
        self._factories: dict[str, BackendFactory] = {}
        self._owners: dict[str, str] = {}
        self.current_plugin = "<code>"

    def add(self, kind: str, factory: BackendFactory) -> None:
        """Make backend kind ``kind`` available, built by ``factory(context)``."""
        if not isinstance(kind, str) or not kind or not callable(factory):
            raise PluginError(
                "registry.add(kind, factory) needs a kind name and a callable", plugin=self.current_plugin
            )
        if kind in self._factories:
            raise PluginError(
                f"backend kind {kind!r} is already provided by {self._owners[kind]!r}", plugin=self.current_plugin
            )
        self._factories[kind] = factory
        self._owners[kind] = self.current_plugin

    def get(self, kind: str) -> BackendFactory | None:
        """The factory of ``kind``, or ``None``."""
        return self._factories.get(kind)

    def owner(self, kind: str) -> str | None:
        """The name of the plugin that registered ``kind``, or ``None``."""
        return self._owners.get(kind)

    def kinds(self) -> list[str]:
        """Every registered kind, sorted."""
        return sorted(self._factories)

    def __contains__(self, kind: object) -> bool:
        return kind in self._factories
