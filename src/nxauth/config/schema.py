"""What a configuration is: the frozen dataclasses and their defaults."""

from __future__ import annotations

import enum
import ipaddress
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, final

from nxauth.config.options import SecretRef
from nxauth.model import Secret

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_AUTH",
    "AuditConfig",
    "BackendConfig",
    "Config",
    "Control",
    "LoginConfig",
    "Network",
    "PluginsConfig",
    "ServerConfig",
    "SessionConfig",
    "StackEntry",
    "ThrottleConfig",
    "TransportConfig",
    "UsernameConfig",
    "default_state_dir",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Control(enum.Enum):
    """Linux-PAM control flags for a stack entry."""

    __module__ = "nxauth"

    REQUIRED = "required"
    REQUISITE = "requisite"
    SUFFICIENT = "sufficient"
    OPTIONAL = "optional"


@final
@dataclass(frozen=True, slots=True)
class BackendConfig:
    """A named backend instance: ``[backends.NAME]`` with ``kind`` and options."""

    name: str
    kind: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    timeout: float | None = None
    implicit: bool = False


@final
@dataclass(frozen=True, slots=True)
class StackEntry:
    """One ``[[auth]]`` or ``[[account]]`` line: a backend instance and its control flag."""

    use: str
    control: Control
    key: str = ""


@final
@dataclass(frozen=True, slots=True)
class TransportConfig:
    account: str = "nx"
    key_sources: tuple[str, ...] = ("keystore",)
    allowed_key_types: frozenset[str] | None = None
    rsa_min_bits: int = 2048
    forced_command: str = "nxauth login"


@final
@dataclass(frozen=True, slots=True)
class SessionConfig:
    max_attempts: int = 6
    challenge_ttl: float = 60.0
    max_password_bytes: int = 8192
    workers: int = 8


@final
@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    #: password hashes at once; 0: the cores this process may run on
    hashes: int = 0
    #: slots kept for clean sources; None: a quarter, at least 1 of 2 or more
    reserve: int | None = None
    #: logins that may wait for a hash slot
    queue: int = 256
    #: seconds a login may wait for one
    wait: float = 5.0
    #: seconds after which a failing source's penalty is halved
    penalty_halflife: float = 300.0


@final
@dataclass(frozen=True, slots=True)
class UsernameConfig:
    case: str = "fold"
    max_length: int = 256


@final
@dataclass(frozen=True, slots=True)
class ThrottleConfig:
    enabled: bool = True
    window: float = 900.0
    max_user_failures: int = 10
    max_source_failures: int = 30
    lockout: float = 60.0
    max_lockout: float = 3600.0
    exempt: tuple[Network, ...] = ()
    max_user_failures_all_sources: int = 100  # the configuration's default: 10 * max_user_failures


@final
@dataclass(frozen=True, slots=True)
class AuditConfig:
    log: bool = True
    syslog: bool = False
    jsonl: Path | None = None
    required: bool = False
    syslog_address: str = "/dev/log"
    #: seconds the sinks together may take per event (default 50 ms); a sink
    #: still running then is a failing sink (a deny with ``required``)
    sink_timeout: float = 0.05
    #: the store's audit table; None: on with a PostgreSQL store (see Config.audit_table)
    table: bool | None = None


@final
@dataclass(frozen=True, slots=True)
class PluginsConfig:
    entry_points: bool = True
    disabled: tuple[str, ...] = ()
    strict: bool = False


@final
@dataclass(frozen=True, slots=True)
class LoginConfig:
    """After stage 2, for ``nxauth login`` (behind OpenSSH) and ``nxauth serve``."""

    command: tuple[str, ...] = ()
    timeout: float = 120.0


@final
@dataclass(frozen=True, slots=True)
class ServerConfig:
    """``nxauth serve``: the embedded SSH server."""

    listen: tuple[str, ...] = ("127.0.0.1",)
    port: int = 4022
    host_key: Path | None = None
    #: the private key this server host presents to its cluster's nodes: set,
    #: a user granted nodes may log in through this host to one of them
    node_key: Path | None = None
    #: sshd's MaxStartups start:rate:full, over connections that have not passed stage 2
    max_startups: tuple[int, int, int] = (10, 30, 100)
    #: sshd's PerSourceMaxStartups (0: no limit)
    per_source_max_startups: int = 10
    #: sshd's PerSourcePenalties, in seconds
    penalties: bool = True
    penalty_authfail: float = 5.0
    penalty_noauth: float = 1.0
    penalty_grace: float = 10.0
    penalty_max: float = 600.0
    penalty_min: float = 15.0
    #: sshd's LoginGraceTime: from the TCP accept to stage 2's success, at most
    login_grace_time: float = 120.0


@final
@dataclass(frozen=True, slots=True)
class StoreConfig:
    """``[store]``: the embedded SQLite file (no ``url``), or PostgreSQL
    shared by every host of a cluster (``url``, the password as a secret
    reference, resolved when the store opens)."""

    url: str | None = None
    password: SecretRef | Secret | None = None
    schema: str = "public"
    pool_size: int = 4
    connect_timeout: float = 5.0
    #: this host's name among the cluster's nodes (its own passwords are keyed by it)
    node: str | None = None

    def __repr__(self) -> str:  # the password reference names a file or variable only; still, show neither
        return f"StoreConfig(url={self.url!r}, schema={self.schema!r}, node={self.node!r})"


def default_state_dir() -> Path:
    """``/var/lib/nxauth`` for root, ``$XDG_STATE_HOME/nxauth`` otherwise."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/nxauth")
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "nxauth"


DEFAULT_AUTH: Final = (StackEntry("passwords", Control.REQUIRED, "auth[0]"),)
DEFAULT_ACCOUNT: Final = (StackEntry("users", Control.REQUIRED, "account[0]"),)


@final
@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration.  ``Config()`` is the embedded default."""

    source: str = "<default>"
    state_dir: Path = field(default_factory=default_state_dir)
    transport: TransportConfig = TransportConfig()
    session: SessionConfig = SessionConfig()
    admission: AdmissionConfig = AdmissionConfig()
    usernames: UsernameConfig = UsernameConfig()
    throttle: ThrottleConfig = ThrottleConfig()
    audit: AuditConfig = AuditConfig()
    plugins: PluginsConfig = PluginsConfig()
    login: LoginConfig = LoginConfig()
    server: ServerConfig = ServerConfig()
    store: StoreConfig = StoreConfig()
    backends: Mapping[str, BackendConfig] = field(default_factory=lambda: MappingProxyType({}))
    auth: tuple[StackEntry, ...] = DEFAULT_AUTH
    account: tuple[StackEntry, ...] = DEFAULT_ACCOUNT

    @property
    def store_path(self) -> Path:
        """The embedded store's file: ``nxauth.db`` in ``state_dir``."""
        return self.state_dir / "nxauth.db"

    @property
    def audit_table(self) -> bool:
        """Whether events go to the store's audit table: ``audit.table``, by
        default on with a PostgreSQL store (the cluster's one trail)."""
        return self.audit.table if self.audit.table is not None else self.store.url is not None

    @property
    def host_key_path(self) -> Path:
        """The embedded server's host key: ``server.host_key``, else
        ``ssh_host_ed25519_key`` in the state directory."""
        return self.server.host_key or self.state_dir / "ssh_host_ed25519_key"

    def instance_names(self) -> Iterator[tuple[str, str]]:
        """Every instance name the configuration refers to, with the dotted key
        of its first mention."""
        seen: set[str] = set()
        for index, name in enumerate(self.transport.key_sources):
            if name not in seen:
                seen.add(name)
                yield name, f"transport.key_sources[{index}]"
        for entry in (*self.auth, *self.account):
            if entry.use not in seen:
                seen.add(entry.use)
                yield entry.use, f"{entry.key}.use"
