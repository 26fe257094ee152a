"""The backend registry (kinds by name, filled by ``nxauth_register_backends``)
and the context a backend factory gets."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, NoReturn, final

from nxauth.admission import Admission
from nxauth.config import BackendConfig, Config, Options
from nxauth.errors import ConfigError, PluginError

if TYPE_CHECKING:
    from nxauth.plugins.roles import Backend
    from nxauth.store.protocol import Store

__all__ = ["BackendContext", "BackendFactory", "BackendRegistry"]


@final
class BackendContext:
    """What a backend factory gets: the instance's name and options, and the
    authenticator's long-lived things (configuration, store, state directory,
    the admission gate for expensive work)."""

    __module__ = "nxauth"

    def __init__(
        self,
        config: BackendConfig,
        *,
        root: Config,
        store: Callable[[], Store],
        clock: Callable[[], float] = time.time,
        admission: Admission | None = None,
    ) -> None:
        self.name = config.name
        #: the authenticator's gate for expensive work (password hashes): see :class:`nxauth.Admission`
        self.admission = admission if admission is not None else Admission()
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


#: The built-in kinds and the built-in plugin module that alone may register
#: each: a fixed table, so a kind stays reserved when its built-in is disabled
#: (``plugins.disabled``) and whatever order plugins register in.
RESERVED_KINDS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "keystore": "nxauth.backends.keystore",
        "authorized_keys": "nxauth.backends.authorized_keys",
        "passwords": "nxauth.backends.passwords",
        "users": "nxauth.backends.users",
        "system": "nxauth.backends.system",
        "pam": "nxauth.backends.pam",
        "ldap": "nxauth.backends.ldap",
    }
)

#: ``factory(context)`` builds one backend instance of a kind.
BackendFactory = Callable[[BackendContext], "Backend"]  # roles: not imported at run time (cold start)


@final
class BackendRegistry:
    """Backend kinds by name.  Plugins add to it in ``nxauth_register_backends``.

    A kind has one owner: a second registration of a kind, and a registration
    of a built-in kind (:data:`RESERVED_KINDS`) by any plugin but the built-in
    module that owns it, raise :class:`PluginError` and are recorded as
    conflicts, which make the authenticator refuse to build whatever
    ``plugins.strict`` says (a plugin that swallows the exception does not
    make the conflict go away).
    """

    __module__ = "nxauth"

    def __init__(self) -> None:
        self._factories: dict[str, BackendFactory] = {}
        self._owners: dict[str, str] = {}
        self._builtin: str | None = None  # the built-in module being called, set by collect_backends
        self._conflicts: list[PluginError] = []
        self.current_plugin = "<code>"

    def add(self, kind: str, factory: BackendFactory) -> None:
        """Make backend kind ``kind`` available, built by ``factory(context)``."""
        owner = self.current_plugin
        if not isinstance(kind, str) or not kind or not callable(factory):
            raise PluginError("registry.add(kind, factory) needs a kind name and a callable", plugin=owner)
        reserved = RESERVED_KINDS.get(kind)
        if reserved is not None and self._builtin != reserved:
            self._conflict(
                PluginError(
                    f"backend kind {kind!r} is reserved for the built-in plugin {reserved!r}; no other plugin may "
                    "register it",
                    plugin=owner,
                )
            )
        if kind in self._factories:
            self._conflict(
                PluginError(
                    f"backend kind {kind!r} is registered by both {self._owners[kind]!r} and {owner!r}; a kind has "
                    "one owner (disable one of them in plugins.disabled)",
                    plugin=owner,
                )
            )
        self._factories[kind] = factory
        self._owners[kind] = owner

    def _conflict(self, error: PluginError) -> NoReturn:
        self._conflicts.append(error)
        raise error

    def add_builtin(self, module_name: str) -> None:
        """Call the built-in module ``module_name``'s ``nxauth_register_backends``
        as its owner (for nxauth's lean paths that run without pluggy)."""
        import importlib

        if module_name not in RESERVED_KINDS.values():
            raise PluginError("not a built-in plugin", plugin=module_name)
        self.current_plugin = self._builtin = module_name
        try:
            importlib.import_module(module_name).nxauth_register_backends(self)
        finally:
            self.current_plugin, self._builtin = "<code>", None

    @property
    def conflicts(self) -> tuple[PluginError, ...]:
        """The refused registrations (reserved or duplicate kinds), in order."""
        return tuple(self._conflicts)

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
