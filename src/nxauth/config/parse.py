"""Reading a configuration: ``parse_config`` (pure, on a mapping) and
``load_config`` (reads the TOML file), and where the file is looked for."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from nxauth.config.options import SecretRef
from nxauth.config.schema import (
    DEFAULT_ACCOUNT,
    DEFAULT_AUTH,
    AuditConfig,
    BackendConfig,
    Config,
    Control,
    LoginConfig,
    Network,
    PluginsConfig,
    ServerConfig,
    SessionConfig,
    StackEntry,
    ThrottleConfig,
    TransportConfig,
    UsernameConfig,
    default_state_dir,
)
from nxauth.errors import ConfigError

__all__ = ["default_config_path", "load_config", "parse_config"]


def default_config_path() -> Path | None:
    """``$NXAUTH_CONFIG``, else ``/etc/nxauth/nxauth.toml`` if it exists, else ``None``
    (the embedded default)."""
    env = os.environ.get("NXAUTH_CONFIG")
    if env:
        return Path(env)
    system = Path("/etc/nxauth/nxauth.toml")
    return system if system.exists() else None


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
    from nxauth.keys.formats import _CERT_BASE, DSS, PLAIN_KEY_TYPES

    for index, name in enumerate(names):
        if name in PLAIN_KEY_TYPES and name != DSS:
            continue
        if name == DSS or _CERT_BASE.get(name) == DSS:
            why = "ssh-dss (DSA) keys are never accepted"
        elif name in _CERT_BASE:
            why = f"names a certificate type: list {_CERT_BASE[name]!r}, which covers its certificates"
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
