"""Reading a configuration: ``parse_config`` (pure, on a mapping) and
``load_config`` (reads the TOML file), and where the file is looked for."""

from __future__ import annotations

import ipaddress
import os
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeVar

from nxauth.config.options import Options, SecretRef, convert_secrets, describe, quote
from nxauth.config.schema import (
    DEFAULT_ACCOUNT,
    DEFAULT_AUTH,
    AdmissionConfig,
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
    StoreConfig,
    ThrottleConfig,
    TransportConfig,
    UsernameConfig,
    default_state_dir,
)
from nxauth.errors import ConfigError
from nxauth.files import read_small
from nxauth.model import Secret

__all__ = ["default_config_path", "load_config", "parse_config"]

T = TypeVar("T")


def default_config_path() -> Path | None:
    """``$NXAUTH_CONFIG``, else ``/etc/nxauth/nxauth.toml`` if it exists, else ``None``
    (the embedded default)."""
    env = os.environ.get("NXAUTH_CONFIG")
    if env:
        return Path(env)
    system = Path("/etc/nxauth/nxauth.toml")
    return system if system.exists() else None


_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
_NAME_RULE: Final = "1 to 64 letters, digits, '-', '_' or '.'"
_SECONDS: Final = "seconds"
_DAY: Final = 86400.0


def _check_name(table: Options, key: str, name: object, what: str = "an instance name") -> str:
    """``name`` if it is a valid instance (or account) name, else the error for ``key``."""
    if not isinstance(name, str) or not name or not set(name) <= _NAME_CHARS or len(name) > 64:
        got = quote(name) if isinstance(name, str) and name else describe(name)
        raise table.error(key, f"must be {what} ({_NAME_RULE}), got {got}")
    return name


def _strings(table: Options, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The sections' arrays: an array (a lone string is refused) of non-empty strings."""
    return table.strings(key, default, allow_single=False, allow_empty=False)


def _key_types(tr: Options) -> frozenset[str] | None:
    """``transport.allowed_key_types``: plain key type names stage 1 knows
    (``None`` when left out).  A misspelled name would only refuse more keys
    without a word, so every name is checked."""
    names = _strings(tr, "allowed_key_types")
    if "allowed_key_types" not in tr:
        return None
    if not names:
        raise tr.invalid("allowed_key_types", "at least one key type (leave it out for every supported type)", [])
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
            why = f"unknown key type {quote(name)}; supported: {supported}"
        raise tr.error(f"allowed_key_types[{index}]", why)
    return frozenset(names)


def _transport(tr: Options) -> TransportConfig:
    allowed = _key_types(tr)
    sources = _strings(tr, "key_sources", ("keystore",))
    return TransportConfig(
        account=_check_name(tr, "account", tr.string("account", "nx"), "an account name"),
        key_sources=tuple(_check_name(tr, f"key_sources[{i}]", item) for i, item in enumerate(sources)),
        allowed_key_types=allowed,
        rsa_min_bits=tr.integer("rsa_min_bits", 2048, minimum=1024, maximum=16384),
        forced_command=tr.string("forced_command", "nxauth login"),
    )


def _session(se: Options) -> SessionConfig:
    return SessionConfig(
        max_attempts=se.integer("max_attempts", 6, minimum=1, maximum=100),
        challenge_ttl=se.number("challenge_ttl", 60.0, minimum=1.0, maximum=3600.0, unit=_SECONDS),
        max_password_bytes=se.integer("max_password_bytes", 8192, minimum=64, maximum=1 << 20),
        workers=se.integer("workers", 8, minimum=1, maximum=256),
    )


def _admission(ad: Options) -> AdmissionConfig:
    return AdmissionConfig(
        hashes=ad.integer("hashes", 0, minimum=0, maximum=4096),
        reserve=ad.integer("reserve", minimum=0, maximum=4095),
        queue=ad.integer("queue", 256, minimum=0, maximum=65536),
        wait=ad.number("wait", 5.0, minimum=0.01, maximum=600.0, unit=_SECONDS),
        penalty_halflife=ad.number("penalty_halflife", 300.0, minimum=1.0, maximum=_DAY, unit=_SECONDS),
    )


def _usernames(us: Options) -> UsernameConfig:
    return UsernameConfig(
        case=us.choice("case", ("fold", "preserve"), "fold"),
        max_length=us.integer("max_length", 256, minimum=1, maximum=256),
    )


def _networks(table: Options, key: str) -> tuple[Network, ...]:
    networks = []
    for index, text in enumerate(_strings(table, key)):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise table.error(f"{key}[{index}]", f"must be an IP network, got {quote(text)}") from None
    return tuple(networks)


def _throttle(th: Options) -> ThrottleConfig:
    lockout = th.number("lockout", 60.0, minimum=1.0, maximum=_DAY * 30, unit=_SECONDS)
    per_user = th.integer("max_user_failures", 10, minimum=1, maximum=10**6)
    return ThrottleConfig(
        enabled=th.boolean("enabled", True),
        window=th.number("window", 900.0, minimum=1.0, maximum=_DAY * 30, unit=_SECONDS),
        max_user_failures=per_user,
        max_user_failures_all_sources=th.integer(
            "max_user_failures_all_sources", 10 * per_user, minimum=per_user, maximum=10**7
        ),
        max_source_failures=th.integer("max_source_failures", 30, minimum=1, maximum=10**6),
        lockout=lockout,
        max_lockout=th.number("max_lockout", max(3600.0, lockout), minimum=lockout, maximum=_DAY * 365, unit=_SECONDS),
        exempt=_networks(th, "exempt"),
    )


def _audit(au: Options, path: Callable[[str | None], Path | None]) -> AuditConfig:
    return AuditConfig(
        log=au.boolean("log", True),
        syslog=au.boolean("syslog", False),
        jsonl=path(au.string("jsonl")),
        required=au.boolean("required", False),
        syslog_address=au.string("syslog_address", "/dev/log"),
        sink_timeout=au.number("sink_timeout", 0.05, above=0.0, maximum=10.0, unit=_SECONDS),
        table=au.boolean("table"),
    )


def _plugins(pl: Options) -> PluginsConfig:
    return PluginsConfig(
        entry_points=pl.boolean("entry_points", True),
        disabled=_strings(pl, "disabled"),
        strict=pl.boolean("strict", False),
    )


def _login(lo: Options) -> LoginConfig:
    return LoginConfig(
        command=_strings(lo, "command"),
        timeout=lo.number("timeout", 120.0, minimum=1.0, maximum=3600.0, unit=_SECONDS),
    )


def _server(sv: Options, path: Callable[[str | None], Path | None]) -> ServerConfig:
    listen = _strings(sv, "listen", ("127.0.0.1",))
    for index, address in enumerate(listen):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise sv.error(f"listen[{index}]", f"must be an IP address, got {quote(address)}") from None
    if not listen:
        raise sv.invalid("listen", "at least one IP address", [])
    return ServerConfig(
        listen=listen,
        port=sv.integer("port", 4022, minimum=1, maximum=65535),
        host_key=path(sv.string("host_key")),
        node_key=path(sv.string("node_key", allow_empty=False)),
        max_startups=_max_startups(sv),
        per_source_max_startups=sv.integer("per_source_max_startups", 10, minimum=0, maximum=1 << 20),
        penalties=sv.boolean("penalties", True),
        penalty_authfail=sv.number("penalty_authfail", 5.0, minimum=0.0, maximum=_DAY, unit=_SECONDS),
        penalty_noauth=sv.number("penalty_noauth", 1.0, minimum=0.0, maximum=_DAY, unit=_SECONDS),
        penalty_grace=sv.number("penalty_grace", 10.0, minimum=0.0, maximum=_DAY, unit=_SECONDS),
        penalty_max=sv.number("penalty_max", 600.0, minimum=1.0, maximum=_DAY, unit=_SECONDS),
        penalty_min=sv.number("penalty_min", 15.0, minimum=0.0, maximum=_DAY, unit=_SECONDS),
        login_grace_time=sv.number("login_grace_time", 120.0, minimum=1.0, maximum=_DAY, unit=_SECONDS),
    )


def _max_startups(sv: Options) -> tuple[int, int, int]:
    """``"start:rate:full"`` as sshd writes it, or one integer (``start`` =
    ``full``: no random early drop)."""
    raw = sv.raw("max_startups", "10:30:100")
    if isinstance(raw, int) and not isinstance(raw, bool):
        if not 1 <= raw <= 1 << 20:
            raise sv.error("max_startups", f"must be 1 to {1 << 20}, got {raw}")
        return (raw, 100, raw)
    expected = '"start:rate:full" (sshd\'s MaxStartups, e.g. "10:30:100") or an integer'
    if not isinstance(raw, str):
        raise sv.invalid("max_startups", expected, raw)
    parts = raw.split(":")
    if len(parts) != 3 or not all(part.isdigit() and part.isascii() for part in parts):
        raise sv.invalid("max_startups", expected, raw)
    start, rate, full = (int(part) for part in parts)
    if not (1 <= start <= full <= 1 << 20 and 0 <= rate <= 100):
        raise sv.error("max_startups", f"needs 1 <= start <= full and a rate of 0 to 100, got {quote(raw)}")
    return (start, rate, full)


_PG_SCHEMES: Final = ("postgresql://", "postgres://")


def _store(st: Options, base_dir: Path | None) -> StoreConfig:
    """``[store]``: ``url`` a PostgreSQL URL without a password; the password a secret reference."""
    url = st.string("url", allow_empty=False)
    password = convert_secrets(st.raw("password"), source=st.source, key=st.key("password"), base_dir=base_dir)
    if password is not None and not isinstance(password, (SecretRef, Secret)):
        raise st.invalid("password", 'a secret reference ({env = "NAME"} or {file = "/path"})', password)
    schema = st.string("schema", "public", allow_empty=False)
    if not schema.isidentifier() or schema.lower() != schema or len(schema) > 63:
        raise st.error("schema", f"must be a lower-case SQL identifier, got {quote(schema)}")
    pool_size = st.integer("pool_size", 4, minimum=1, maximum=1000)
    connect_timeout = st.number("connect_timeout", 5.0, above=0.0, maximum=600.0, unit=_SECONDS)
    node = st.string("node", allow_empty=False)
    if node is not None:
        _check_name(st, "node", node, "a node name")
    if url is None:
        for key in ("password", "schema", "pool_size", "connect_timeout"):
            if key in st:
                raise st.error(key, "is for a PostgreSQL store: set url too")
        return StoreConfig(node=node)
    if not url.startswith(_PG_SCHEMES):
        raise st.error("url", "must be a PostgreSQL URL (postgresql://USER@HOST:PORT/DATABASE)")
    try:
        parts = urllib.parse.urlsplit(url)
        inline = parts.password is not None
    except ValueError:
        raise st.error("url", "is not a valid URL") from None
    query = {name.lower() for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)}
    if inline or any("password" in name or name in ("passfile", "sslkeylogfile") for name in query):
        # the message does not repeat the URL: it holds a password
        raise st.error(
            "url", "must not hold a password or passphrase: give the password as password = {file = ...} or {env = ...}"
        )
    return StoreConfig(
        url=url, password=password, schema=schema, pool_size=pool_size, connect_timeout=connect_timeout, node=node
    )


def _backends(table: Options, base_dir: Path | None) -> dict[str, BackendConfig]:
    """``[backends.NAME]``: the kind and timeout of each instance; its other
    keys are the options, read when the backend is built (secret references
    become :class:`SecretRef` here, and are resolved then)."""
    backends: dict[str, BackendConfig] = {}
    for name in table:
        _check_name(table, str(name), name)
        instance = table.table(name)
        kind = instance.string("kind", name, allow_empty=False)
        timeout = instance.number("timeout", above=0.0, maximum=3600.0, unit=_SECONDS)
        options = {key: instance.raw(key) for key in instance if key not in ("kind", "timeout")}
        options = convert_secrets(options, source=table.source, key=instance.prefix, base_dir=base_dir)
        backends[name] = BackendConfig(name, kind, MappingProxyType(options), timeout)
    return backends


def _stack(root: Options, name: str) -> tuple[StackEntry, ...]:
    entries = []
    for entry in root.tables(name):
        use = entry.string("use")
        if use is None:
            raise entry.missing("use", f"an instance name ({_NAME_RULE})")
        control = entry.choice("control", tuple(flag.value for flag in Control), Control.REQUIRED.value)
        entries.append(StackEntry(_check_name(entry, "use", use), Control(control), entry.prefix))
        entry.check_unused()
    return tuple(entries)


def parse_config(data: Mapping[str, Any], *, source: str = "<mapping>", base_dir: Path | None = None) -> Config:
    """Build a :class:`Config` from a mapping of the TOML file's shape.

    Pure: reads no file (secret references are resolved later, when the
    backend that needs them is built).  Missing sections take the embedded
    defaults; an explicitly empty stack (``auth = []``) denies everyone.
    ``base_dir`` anchors relative paths (the config file's directory).
    Every section is read with :class:`Options`, so its rules (finite
    numbers, unknown keys refused, the message style) hold here too.
    """
    root = Options(data, source=source)

    def path(value: str | None) -> Path | None:
        if value is None:
            return None
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() or base_dir is None else base_dir / candidate

    def section(name: str, read: Callable[[Options], T]) -> T:
        table = root.table(name)
        value = read(table)
        table.check_unused()
        return value

    state_dir = path(root.string("state_dir")) or default_state_dir()
    transport = section("transport", _transport)
    session = section("session", _session)
    admission = section("admission", _admission)
    usernames = section("usernames", _usernames)
    throttle = section("throttle", _throttle)
    audit = section("audit", lambda au: _audit(au, path))
    plugins = section("plugins", _plugins)
    login = section("login", _login)
    server = section("server", lambda sv: _server(sv, path))
    store = section("store", lambda st: _store(st, base_dir))
    backends = _backends(root.table("backends"), base_dir)
    auth = _stack(root, "auth")  # asked for even when absent, so a misspelling gets a suggestion
    account = _stack(root, "account")
    root.check_unused()

    return Config(
        source=source,
        state_dir=state_dir,
        transport=transport,
        session=session,
        admission=admission,
        usernames=usernames,
        throttle=throttle,
        audit=audit,
        plugins=plugins,
        login=login,
        server=server,
        store=store,
        backends=MappingProxyType(backends),
        auth=auth if "auth" in root else DEFAULT_AUTH,
        account=account if "account" in root else DEFAULT_ACCOUNT,
    )


#: The largest configuration file read (a FIFO, device or directory is refused at once).
CONFIG_LIMIT: Final = 1024 * 1024


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and parse a TOML configuration file."""
    source = os.fspath(path)
    try:
        data = tomllib.loads(read_small(source, limit=CONFIG_LIMIT).decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8", source=source) from None
    except FileNotFoundError:
        raise ConfigError("file not found", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=source) from None
    return parse_config(data, source=source, base_dir=Path(source).resolve().parent)
