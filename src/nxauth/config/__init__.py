"""Configuration: TOML (or a mapping of the same shape) into frozen dataclasses.

``parse_config(mapping, source=...)`` is pure; ``load_config(path)`` reads the
file.  Every error is a :class:`nxauth.ConfigError` naming the source and the
dotted key.  Backend options stay a mapping here and are read, typed and
checked for unknown keys through :class:`Options` when the backend is built.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import os
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeVar, final, overload

from nxauth.errors import ConfigError
from nxauth.model import Secret

__all__ = [
    "AuditConfig",
    "BackendConfig",
    "Config",
    "Control",
    "LoginConfig",
    "Options",
    "PluginsConfig",
    "SecretRef",
    "ServerConfig",
    "SessionConfig",
    "StackEntry",
    "ThrottleConfig",
    "TransportConfig",
    "UsernameConfig",
    "default_config_path",
    "default_state_dir",
    "load_config",
    "parse_config",
]

T = TypeVar("T")
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
class SecretRef:
    """A secret named in the configuration: ``{env = "NAME"}`` or ``{file = "path"}``."""

    env: str | None = None
    file: str | None = None

    def resolve(self, *, source: str, key: str) -> Secret:
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ConfigError(f"environment variable {self.env} is not set", source=source, key=key)
            return Secret(value)
        assert self.file is not None
        try:
            with open(self.file, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise ConfigError(f"cannot read secret file {self.file}: {exc.strerror}", source=source, key=key) from None
        except UnicodeDecodeError:
            raise ConfigError(f"secret file {self.file} is not UTF-8", source=source, key=key) from None
        return Secret(text.rstrip("\r\n"))


@final
class Options:
    """A backend instance's options, read with typed getters.

    Each getter names the dotted key in its error.  After the factory has
    built the backend, :meth:`check_unused` refuses keys it never read, so a
    misspelled option is an error and not a silent default.
    """

    __module__ = "nxauth"

    def __init__(self, values: Mapping[str, Any], *, source: str, prefix: str) -> None:
        self._values = dict(values)
        self._used: set[str] = set()
        self.source = source
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"Options({self.prefix}, keys={sorted(self._values)})"

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def keys(self) -> list[str]:
        return list(self._values)

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, source=self.source, key=f"{self.prefix}.{key}" if key else self.prefix)

    def _get(self, key: str, types: tuple[type, ...], what: str, default: Any) -> Any:
        self._used.add(key)
        if key not in self._values:
            return default
        value = self._values[key]
        if isinstance(value, SecretRef):
            raise self.error(key, "a secret reference is not allowed here")
        if isinstance(value, bool) and bool not in types:
            raise self.error(key, f"expected {what}, got a boolean")
        if not isinstance(value, types):
            raise self.error(key, f"expected {what}, got {type(value).__name__}")
        return value

    @overload
    def string(self, key: str) -> str | None: ...
    @overload
    def string(self, key: str, default: str) -> str: ...
    def string(self, key: str, default: str | None = None) -> str | None:
        """A string option (``default`` when absent)."""
        value: str | None = self._get(key, (str,), "a string", default)
        return value

    @overload
    def boolean(self, key: str) -> bool | None: ...
    @overload
    def boolean(self, key: str, default: bool) -> bool: ...
    def boolean(self, key: str, default: bool | None = None) -> bool | None:
        value: bool | None = self._get(key, (bool,), "true or false", default)
        return value

    @overload
    def integer(self, key: str, *, minimum: int | None = ..., maximum: int | None = ...) -> int | None: ...
    @overload
    def integer(self, key: str, default: int, *, minimum: int | None = ..., maximum: int | None = ...) -> int: ...
    def integer(
        self, key: str, default: int | None = None, *, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        value: int | None = self._get(key, (int,), "an integer", default)
        if value is not None:
            if minimum is not None and value < minimum:
                raise self.error(key, f"must be at least {minimum}")
            if maximum is not None and value > maximum:
                raise self.error(key, f"must be at most {maximum}")
        return value

    @overload
    def number(self, key: str, *, minimum: float | None = ..., maximum: float | None = ...) -> float | None: ...
    @overload
    def number(
        self, key: str, default: float, *, minimum: float | None = ..., maximum: float | None = ...
    ) -> float: ...
    def number(
        self, key: str, default: float | None = None, *, minimum: float | None = None, maximum: float | None = None
    ) -> float | None:
        """A number (int or float in TOML), returned as float."""
        raw = self._get(key, (int, float), "a number", default)
        if raw is None:
            return None
        value = float(raw)
        if math.isnan(value) or (minimum is not None and value < minimum):
            raise self.error(key, f"must be a number of at least {minimum}")
        if maximum is not None and value > maximum:
            raise self.error(key, f"must be at most {maximum}")
        return value

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = self.string(key, default)
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def strings(self, key: str, default: Sequence[str] = ()) -> tuple[str, ...]:
        value = self._get(key, (list, tuple, str), "a list of strings", None)
        if value is None:
            return tuple(default)
        if isinstance(value, str):
            value = [value]
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{key}[{index}]", f"expected a string, got {type(item).__name__}")
        return tuple(value)

    def secret(self, key: str, *, required: bool = False) -> Secret | None:
        """A secret: ``{env = "NAME"}``, ``{file = "path"}``, or a
        :class:`nxauth.Secret` handed in from code.  A literal string is
        refused: secrets do not belong in configuration files."""
        self._used.add(key)
        if key not in self._values:
            if required:
                raise self.error(key, "is required")
            return None
        value = self._values[key]
        if isinstance(value, Secret):
            return value
        if isinstance(value, SecretRef):
            return value.resolve(source=self.source, key=f"{self.prefix}.{key}")
        raise self.error(key, 'a secret must be a reference: {env = "NAME"} or {file = "/path"}')

    def raw(self, key: str, default: Any = None) -> Any:
        """The value as given (for nested tables a backend parses itself)."""
        self._used.add(key)
        return self._values.get(key, default)

    def check_unused(self) -> None:
        unknown = sorted(set(self._values) - self._used)
        if unknown:
            raise self.error(unknown[0], "unknown option")


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


@final
@dataclass(frozen=True, slots=True)
class AuditConfig:
    log: bool = True
    syslog: bool = False
    jsonl: Path | None = None
    required: bool = False
    syslog_address: str = "/dev/log"


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


def default_state_dir() -> Path:
    """``/var/lib/nxauth`` for root, ``$XDG_STATE_HOME/nxauth`` otherwise."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/nxauth")
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "nxauth"


def default_config_path() -> Path | None:
    """``$NXAUTH_CONFIG``, else ``/etc/nxauth/nxauth.toml`` if it exists, else ``None``
    (the embedded default)."""
    env = os.environ.get("NXAUTH_CONFIG")
    if env:
        return Path(env)
    system = Path("/etc/nxauth/nxauth.toml")
    return system if system.exists() else None


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
    usernames: UsernameConfig = UsernameConfig()
    throttle: ThrottleConfig = ThrottleConfig()
    audit: AuditConfig = AuditConfig()
    plugins: PluginsConfig = PluginsConfig()
    login: LoginConfig = LoginConfig()
    server: ServerConfig = ServerConfig()
    backends: Mapping[str, BackendConfig] = field(default_factory=lambda: MappingProxyType({}))
    auth: tuple[StackEntry, ...] = DEFAULT_AUTH
    account: tuple[StackEntry, ...] = DEFAULT_ACCOUNT

    @property
    def store_path(self) -> Path:
        return self.state_dir / "nxauth.db"

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


# ---------------------------------------------------------------- parsing


class _Reader:
    """Reads one table of the mapping, tracking keys and naming them in errors."""

    def __init__(self, table: Any, *, source: str, prefix: str) -> None:
        if not isinstance(table, Mapping):
            raise ConfigError(f"expected a table, got {type(table).__name__}", source=source, key=prefix or None)
        self.table = table
        self.source = source
        self.prefix = prefix
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(message, source=self.source, key=self.key(name))

    def get(self, name: str, types: tuple[type, ...], what: str, default: Any) -> Any:
        self.used.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise self.error(name, f"expected {what}, got {type(value).__name__}")
        return value

    def number(self, name: str, default: float, *, minimum: float = 0.0, maximum: float = 1e9) -> float:
        value = float(self.get(name, (int, float), "a number", default))
        if not minimum <= value <= maximum:
            raise self.error(name, f"must be between {minimum:g} and {maximum:g}")
        return value

    def integer(self, name: str, default: int, *, minimum: int = 0, maximum: int = 10**9) -> int:
        value: int = self.get(name, (int,), "an integer", default)
        if not minimum <= value <= maximum:
            raise self.error(name, f"must be between {minimum} and {maximum}")
        return value

    def string(self, name: str, default: str) -> str:
        value: str = self.get(name, (str,), "a string", default)
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value: bool = self.get(name, (bool,), "true or false", default)
        return value

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(name, (list, tuple), "a list of strings", None)
        if value is None:
            return default
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.error(f"{name}[{index}]", "expected a non-empty string")
        return tuple(value)

    def sub(self, name: str) -> _Reader:
        self.used.add(name)
        return _Reader(self.table.get(name, {}), source=self.source, prefix=self.key(name))

    def finish(self) -> None:
        for name in self.table:
            if name not in self.used:
                raise self.error(str(name), "unknown key")


def _convert_secrets(value: Any, *, source: str, key: str) -> Any:
    """Turn ``{env = ...}`` / ``{file = ...}`` tables into :class:`SecretRef`."""
    if isinstance(value, Mapping):
        keys = set(value)
        if keys and keys <= {"env", "file"} and not isinstance(value, MappingProxyType):
            if len(keys) != 1:
                raise ConfigError("a secret reference has exactly one of env or file", source=source, key=key)
            (kind,) = keys
            target = value[kind]
            if not isinstance(target, str) or not target:
                raise ConfigError(f"secret reference {kind} must be a non-empty string", source=source, key=key)
            return SecretRef(env=target) if kind == "env" else SecretRef(file=target)
        return {name: _convert_secrets(item, source=source, key=f"{key}.{name}") for name, item in value.items()}
    if isinstance(value, list):
        return [_convert_secrets(item, source=source, key=f"{key}[{index}]") for index, item in enumerate(value)]
    return value


_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _check_key_types(tr: _Reader) -> frozenset[str] | None:
    """``transport.allowed_key_types``: plain key type names stage 1 knows
    (``None`` when left out).  A misspelled name would only refuse more keys
    without a word, so every name is checked."""
    if "allowed_key_types" not in tr.table:
        return None
    names = tr.strings("allowed_key_types", ())
    if not names:
        raise tr.error("allowed_key_types", "names no key type (leave it out for every supported type)")
    from nxauth.keys.wire import CERT_BASE, DSS, PLAIN_KEY_TYPES

    for index, name in enumerate(names):
        if name in PLAIN_KEY_TYPES and name != DSS:
            continue
        if name == DSS or CERT_BASE.get(name) == DSS:
            why = "ssh-dss (DSA) keys are never accepted"
        elif name in CERT_BASE:
            why = f"names a certificate type: list {CERT_BASE[name]!r}, which covers its certificates"
        elif name in ("rsa-sha2-256", "rsa-sha2-512"):
            why = f"{name!r} is a signature algorithm: the key type is 'ssh-rsa'"
        else:
            supported = ", ".join(sorted(PLAIN_KEY_TYPES - {DSS}))
            why = f"unknown key type {name[:100]!r}; supported: {supported}"
        raise tr.error(f"allowed_key_types[{index}]", why)
    return frozenset(names)


def _check_name(name: Any, *, source: str, key: str) -> str:
    if not isinstance(name, str) or not name or not set(name) <= _NAME_CHARS or len(name) > 64:
        raise ConfigError(
            "an instance name is 1 to 64 letters, digits, '-', '_' or '.'",
            source=source,
            key=key,
        )
    return name


def _parse_stack(value: Any, *, source: str, name: str) -> tuple[StackEntry, ...]:
    if not isinstance(value, list):
        raise ConfigError("expected an array of tables ([[" + name + "]])", source=source, key=name)
    entries = []
    for index, item in enumerate(value):
        key = f"{name}[{index}]"
        reader = _Reader(item, source=source, prefix=key)
        use = _check_name(reader.get("use", (str,), "a string", None), source=source, key=f"{key}.use")
        control_text = reader.string("control", "required")
        try:
            control = Control(control_text)
        except ValueError:
            raise reader.error(
                "control", f"unknown control flag {control_text!r} (required, requisite, sufficient, optional)"
            ) from None
        reader.finish()
        entries.append(StackEntry(use, control, key))
    return tuple(entries)


def _parse_networks(reader: _Reader, name: str) -> tuple[Network, ...]:
    networks = []
    for index, text in enumerate(reader.strings(name, ())):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise reader.error(f"{name}[{index}]", f"not an IP network: {text!r}") from None
    return tuple(networks)


def parse_config(data: Mapping[str, Any], *, source: str = "<mapping>", base_dir: Path | None = None) -> Config:
    """Build a :class:`Config` from a mapping of the TOML file's shape.

    Pure: reads no file (secret references are resolved later, when the
    backend that needs them is built).  Missing sections take the embedded
    defaults; an explicitly empty stack (``auth = []``) denies everyone.
    ``base_dir`` anchors relative paths (the config file's directory).
    """
    root = _Reader(data, source=source, prefix="")

    def path(value: str | None) -> Path | None:
        if value is None:
            return None
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() or base_dir is None else base_dir / candidate

    state_text = root.get("state_dir", (str,), "a path string", None)
    state_dir = path(state_text) or default_state_dir()

    tr = root.sub("transport")
    allowed = _check_key_types(tr)
    transport = TransportConfig(
        account=_check_name(tr.string("account", "nx"), source=source, key="transport.account"),
        key_sources=tuple(
            _check_name(item, source=source, key=f"transport.key_sources[{i}]")
            for i, item in enumerate(tr.strings("key_sources", ("keystore",)))
        ),
        allowed_key_types=allowed,
        rsa_min_bits=tr.integer("rsa_min_bits", 2048, minimum=1024, maximum=16384),
        forced_command=tr.string("forced_command", "nxauth login"),
    )
    tr.finish()

    se = root.sub("session")
    session = SessionConfig(
        max_attempts=se.integer("max_attempts", 6, minimum=1, maximum=100),
        challenge_ttl=se.number("challenge_ttl", 60.0, minimum=1.0, maximum=3600.0),
        max_password_bytes=se.integer("max_password_bytes", 8192, minimum=64, maximum=1 << 20),
        workers=se.integer("workers", 8, minimum=1, maximum=256),
    )
    se.finish()

    us = root.sub("usernames")
    case = us.string("case", "fold")
    if case not in ("fold", "preserve"):
        raise us.error("case", f"must be 'fold' or 'preserve', got {case!r}")
    usernames = UsernameConfig(case=case, max_length=us.integer("max_length", 256, minimum=1, maximum=256))
    us.finish()

    th = root.sub("throttle")
    lockout = th.number("lockout", 60.0, minimum=1.0, maximum=86400.0 * 30)
    throttle = ThrottleConfig(
        enabled=th.boolean("enabled", True),
        window=th.number("window", 900.0, minimum=1.0, maximum=86400.0 * 30),
        max_user_failures=th.integer("max_user_failures", 10, minimum=1, maximum=10**6),
        max_source_failures=th.integer("max_source_failures", 30, minimum=1, maximum=10**6),
        lockout=lockout,
        max_lockout=th.number("max_lockout", max(3600.0, lockout), minimum=lockout, maximum=86400.0 * 365),
        exempt=_parse_networks(th, "exempt"),
    )
    th.finish()

    au = root.sub("audit")
    jsonl = au.get("jsonl", (str,), "a path string", None)
    audit = AuditConfig(
        log=au.boolean("log", True),
        syslog=au.boolean("syslog", False),
        jsonl=path(jsonl),
        required=au.boolean("required", False),
        syslog_address=au.string("syslog_address", "/dev/log"),
    )
    au.finish()

    pl = root.sub("plugins")
    plugins = PluginsConfig(
        entry_points=pl.boolean("entry_points", True),
        disabled=pl.strings("disabled", ()),
        strict=pl.boolean("strict", False),
    )
    pl.finish()

    lo = root.sub("login")
    command = lo.strings("command", ())
    if command and not command[0]:
        raise lo.error("command", "the program (first item) must not be empty")
    login = LoginConfig(command=command, timeout=lo.number("timeout", 120.0, minimum=1.0, maximum=3600.0))
    lo.finish()

    sv = root.sub("server")
    listen = sv.strings("listen", ("127.0.0.1",))
    for index, address in enumerate(listen):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise sv.error(f"listen[{index}]", f"not an IP address: {address!r}") from None
    if not listen:
        raise sv.error("listen", "needs at least one address")
    host_key = sv.get("host_key", (str,), "a path string", None)
    server = ServerConfig(
        listen=listen,
        port=sv.integer("port", 4022, minimum=1, maximum=65535),
        host_key=path(host_key),
    )
    sv.finish()

    backends: dict[str, BackendConfig] = {}
    root.used.add("backends")
    raw_backends = data.get("backends", {})
    if not isinstance(raw_backends, Mapping):
        raise ConfigError("expected a table of backend instances", source=source, key="backends")
    for name, table in raw_backends.items():
        key = f"backends.{name}"
        _check_name(name, source=source, key=key)
        if not isinstance(table, Mapping):
            raise ConfigError("expected a table", source=source, key=key)
        kind = table.get("kind", name)
        if not isinstance(kind, str) or not kind:
            raise ConfigError("expected a backend kind (a string)", source=source, key=f"{key}.kind")
        timeout = table.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600
        ):
            raise ConfigError("expected a number of seconds in (0, 3600]", source=source, key=f"{key}.timeout")
        options = {k: v for k, v in table.items() if k not in ("kind", "timeout")}
        options = _convert_secrets(options, source=source, key=key)
        backends[name] = BackendConfig(
            name, kind, MappingProxyType(options), None if timeout is None else float(timeout)
        )

    root.used.update(("auth", "account"))
    auth = _parse_stack(data["auth"], source=source, name="auth") if "auth" in data else DEFAULT_AUTH
    account = _parse_stack(data["account"], source=source, name="account") if "account" in data else DEFAULT_ACCOUNT
    root.finish()

    return Config(
        source=source,
        state_dir=state_dir,
        transport=transport,
        session=session,
        usernames=usernames,
        throttle=throttle,
        audit=audit,
        plugins=plugins,
        login=login,
        server=server,
        backends=MappingProxyType(backends),
        auth=auth,
        account=account,
    )


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and parse a TOML configuration file."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("file not found", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=source) from None
    return parse_config(data, source=source, base_dir=Path(source).resolve().parent)
