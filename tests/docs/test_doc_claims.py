"""Every testable statement of docs/configuration.md, docs/protocol.md and
docs/security.md, one test per claim, each naming the page and the part it
checks.  Tables are parsed from the pages, so a default, a bound, a code or
a field changed on one side only fails here.

(The line limit is tests/unit/integrations/test_line_limit.py, relative
secret files tests/unit/config/test_secret_paths.py, the deploy guide
tests/docs/test_deploy_guide.py; the exchange's lines and audit trail
tests/unit/integrations/test_exchange.py.)"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nxauth
from nxauth import config as config_module
from nxauth.config import parse_config
from nxauth.integrations.asyncssh import INHERITED_ENV, session_environment
from nxauth.integrations.protocol import (
    PREFIX,
    PROTOCOL_VERSION,
    TEXTS,
    Code,
    format_line,
    identity_environment,
    terminal_prompt,
    terminal_text,
)
from nxauth.testing import MemoryBackend, RecordingSink
from tests.docs.test_docs import section_body
from tests.support.docs import DOCS, code_blocks
from tests.support.keys import ListKeySource, TransportKey

CONFIGURATION = (DOCS / "configuration.md").read_text(encoding="utf-8")
PROTOCOL = (DOCS / "protocol.md").read_text(encoding="utf-8")
SECURITY = (DOCS / "security.md").read_text(encoding="utf-8")
CONCEPTS = (DOCS / "concepts.md").read_text(encoding="utf-8")


def table_rows(body: str) -> list[list[str]]:
    """The cells of every table row in ``body`` (header and rule lines dropped)."""
    rows = []
    for line in body.splitlines():
        if not line.startswith("| ") or set(line) <= set("|- "):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        rows.append(cells)
    return [row for row in rows if row[0] not in ("key", "code", "field", "reason", "variable", "flag", "file")]


def unquote(cell: str) -> str:
    return cell.strip().strip("`")


# ================================================================ docs/configuration.md

SECTIONS = {
    field.name: field for field in dataclasses.fields(config_module.Config) if dataclasses.is_dataclass(field.default)
}
DEFAULT = parse_config({})


def documented_options() -> Iterator[tuple[str, str, str, str]]:
    """``(section, key, default cell, meaning cell)`` of the section tables."""
    for section in SECTIONS:
        for key, default, meaning in table_rows(section_body(CONFIGURATION, f"## `[{section}]`")):
            yield section, unquote(key), default, meaning


OPTIONS = list(documented_options())
#: Defaults the tables give in words; each is checked by its own test below.
PROSE_DEFAULTS = {
    ("transport", "allowed_key_types"),
    ("throttle", "max_user_failures_all_sources"),
    ("throttle", "max_lockout"),
    ("audit", "jsonl"),
    ("server", "host_key"),
    ("store", "url"),
    ("store", "password"),
    ("store", "node"),
    ("audit", "table"),
    ("server", "node_key"),
    ("admission", "reserve"),
    ("server", "max_startups"),
}


def test_the_tables_are_parsed() -> None:
    assert len(OPTIONS) >= 30
    assert {s for s, *_ in OPTIONS} == set(SECTIONS)


LITERAL_DEFAULTS = [o[:3] for o in OPTIONS if o[:2] not in PROSE_DEFAULTS]


@pytest.mark.parametrize(
    ("section", "key", "default"), LITERAL_DEFAULTS, ids=[f"{s}.{k}" for s, k, _ in LITERAL_DEFAULTS]
)
def test_each_documented_default_is_the_default(section: str, key: str, default: str) -> None:
    """configuration.md, each section's table, column "default": what an
    empty file gives."""
    actual = getattr(getattr(DEFAULT, section), key)
    (literal,) = re.findall(r"`([^`]+)`", default) or [default]
    expected = tomllib.loads(f"v = {literal}")["v"]
    if isinstance(actual, tuple):
        actual = list(actual)
    assert actual == expected, f"configuration.md [{section}] {key}: documented {default}, is {actual!r}"


def test_prose_defaults() -> None:
    """configuration.md: ``allowed_key_types`` "every supported type but
    ssh-dss" (kept as None: the policy's full set); ``max_user_failures_all_sources``
    "10 * max_user_failures (at least max_user_failures)"; ``max_lockout``
    "3600 (at least lockout)"; ``jsonl`` "none"; ``host_key``
    "ssh_host_ed25519_key in the state directory"."""
    assert DEFAULT.transport.allowed_key_types is None
    assert DEFAULT.throttle.max_user_failures_all_sources == 10 * DEFAULT.throttle.max_user_failures
    assert parse_config({"throttle": {"max_user_failures": 7}}).throttle.max_user_failures_all_sources == 70
    with pytest.raises(nxauth.ConfigError, match="at least 7"):
        parse_config({"throttle": {"max_user_failures": 7, "max_user_failures_all_sources": 6}})
    assert DEFAULT.throttle.max_lockout == 3600
    assert parse_config({"throttle": {"lockout": 7200}}).throttle.max_lockout == 7200
    with pytest.raises(nxauth.ConfigError, match="at least 7200"):
        parse_config({"throttle": {"lockout": 7200, "max_lockout": 3600}})
    assert DEFAULT.audit.jsonl is None
    assert DEFAULT.server.host_key is None
    assert DEFAULT.host_key_path == DEFAULT.state_dir / "ssh_host_ed25519_key"
    assert DEFAULT.store.url is None and DEFAULT.store.password is None  # "none (SQLite)", "none"
    assert DEFAULT.store.node is None
    assert DEFAULT.server.node_key is None  # "none": no relay
    assert DEFAULT.audit.table is None and not DEFAULT.audit_table  # "on with a PostgreSQL store, else off"
    assert parse_config({"store": {"url": "postgresql://nx@db/nxauth"}}).audit_table
    assert DEFAULT.store_path == DEFAULT.state_dir / "nxauth.db"


RANGE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?) to (\d+(?:\.\d+)?)(?![\w.])")
RANGED = [(s, k, m) for s, k, _, m in OPTIONS if RANGE.search(m)]


def test_ranges_are_found() -> None:
    assert {f"{s}.{k}" for s, k, _ in RANGED} >= {
        "session.max_attempts",
        "session.max_password_bytes",
        "transport.rsa_min_bits",
        "usernames.max_length",
        "login.timeout",
    }


@pytest.mark.parametrize(("section", "key", "meaning"), RANGED, ids=[f"{s}.{k}" for s, k, _ in RANGED])
def test_each_documented_range_is_enforced(section: str, key: str, meaning: str) -> None:
    """configuration.md: "N to M" in a row's meaning is the accepted range,
    both ends included; one step outside is a ConfigError naming the key."""
    match = RANGE.search(meaning)
    assert match is not None
    low, high = (float(x) if "." in x else int(x) for x in match.groups())
    is_int = isinstance(getattr(getattr(DEFAULT, section), key), int)
    step = 1 if is_int else 0.001
    given = {"url": "postgresql://nxauth@127.0.0.1/nxauth"} if section == "store" else {}  # its keys need a url
    for value in (low, high):
        assert getattr(getattr(parse_config({section: {**given, key: value}}), section), key) == value
    for value in (low - step, high + step):
        with pytest.raises(nxauth.ConfigError) as info:
            parse_config({section: {**given, key: value}})
        assert info.value.key == f"{section}.{key}"


def _default(section: str, key: str) -> object:
    return getattr(getattr(DEFAULT, section), key, None)


NUMERIC = [
    (s, k) for s, k, *_ in OPTIONS if isinstance(_default(s, k), int | float) and not isinstance(_default(s, k), bool)
]


@pytest.mark.parametrize(("section", "key"), NUMERIC, ids=[f"{s}.{k}" for s, k in NUMERIC])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True], ids=["nan", "inf", "-inf", "boolean"])
def test_numbers_are_finite_and_never_booleans(section: str, key: str, value: object) -> None:
    """configuration.md, introduction: "Numbers must be finite: TOML's nan,
    inf and -inf are refused everywhere a number is read, and a boolean is
    never taken for a number"."""
    with pytest.raises(nxauth.ConfigError) as info:
        parse_config({section: {key: value}})
    assert info.value.key == f"{section}.{key}"


def test_the_error_message_of_the_introduction(tmp_path: Path) -> None:
    """configuration.md, introduction: ``nxauth.toml: backends.corp.timeout:
    must be a number of seconds, got nan``."""
    path = tmp_path / "nxauth.toml"
    path.write_text('[backends.corp]\nkind = "passwords"\ntimeout = nan\n')
    with pytest.raises(nxauth.ConfigError) as info:
        nxauth.load_config(path)
    assert str(info.value) == f"{path}: backends.corp.timeout: must be a number of seconds, got nan"


@pytest.mark.parametrize(
    ("mapping", "key"),
    [
        ({"sesion": {}}, "sesion"),
        ({"session": {"max_attempt": 3}}, "session.max_attempt"),
        ({"backends": {"p": {"kind": "passwords", "time_cos": 2}}}, "backends.p.time_cos"),
        ({"auth": [{"use": "passwords", "contrl": "required"}]}, "auth[0].contrl"),
    ],
)
def test_unknown_keys_are_errors_with_a_suggestion(tmp_path: Path, mapping: dict[str, Any], key: str) -> None:
    """configuration.md, introduction: "Unknown keys are errors, in the
    sections below and in the backend tables alike, at any depth ... (the
    error suggests a close known key, if there is one)"."""
    mapping = {"state_dir": str(tmp_path / "state"), **mapping}
    with pytest.raises(nxauth.ConfigError, match=r"unknown option \(did you mean") as info:
        nxauth.Authenticator(mapping, entry_points=False).close()
    assert info.value.key == key


def test_an_empty_file_is_the_embedded_default_written_out(tmp_path: Path) -> None:
    """configuration.md: "An empty file is a valid configuration: the
    embedded default", and the block that writes it out."""
    (block,) = [b for b in code_blocks(DOCS / "configuration.md") if "the embedded default, written out" in b.text]
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    written = tmp_path / "written.toml"
    written.write_text(block.text)
    a, b = nxauth.load_config(empty), nxauth.load_config(written)
    assert dataclasses.replace(a, source="", state_dir=Path("/var/lib/nxauth")) == dataclasses.replace(b, source="")


@pytest.mark.parametrize("name", ["", "a" * 65, "bad name", "ünï", "a/b"])
def test_instance_names(name: str) -> None:
    """configuration.md, ``[backends.NAME]``: "An instance name is 1 to 64
    letters, digits, -, _ or ."."""
    with pytest.raises(nxauth.ConfigError, match="1 to 64 letters"):
        parse_config({"backends": {name: {"kind": "passwords"}}})
    assert parse_config({"backends": {"a-b_c.D9" + "x" * 56: {"kind": "passwords"}}})


def test_a_literal_secret_is_refused(tmp_path: Path) -> None:
    """configuration.md, ``[backends.NAME]``: "a literal string is refused"."""
    ldap = {"kind": "ldap", "uri": "ldaps://x", "user_dn": "uid={username},dc=x", "bind_dn": "cn=s"}
    mapping = {"state_dir": str(tmp_path / "state"), "backends": {"d": {**ldap, "bind_password": "hunter2"}}}
    with pytest.raises(nxauth.ConfigError, match="must be a secret reference") as info:
        nxauth.Authenticator(mapping, entry_points=False).close()
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "at least one key type"),
        (["ssh-dss"], "never accepted"),
        (["ssh-ed25519-cert-v01@openssh.com"], "certificate type"),
        (["rsa-sha2-512"], "signature algorithm"),
        (["ssh-ed25510"], "unknown key type"),
    ],
)
def test_allowed_key_types_validation(value: list[str], message: str) -> None:
    """configuration.md, ``[transport]``: "an empty list is an error";
    ssh-dss, a certificate type and a signature algorithm "are refused with a
    message saying so"."""
    with pytest.raises(nxauth.ConfigError, match=message):
        parse_config({"transport": {"allowed_key_types": value}})


def test_the_stack_defaults() -> None:
    """configuration.md, ``[[auth]]`` and ``[[account]]``: "Without [[auth]]
    the auth stack is passwords; without [[account]] the account stack is
    users; an explicitly empty stack (auth = []) denies everyone", with
    ``control`` defaulting to ``required``."""
    assert [(e.use, e.control.value) for e in DEFAULT.auth] == [("passwords", "required")]
    assert [(e.use, e.control.value) for e in DEFAULT.account] == [("users", "required")]
    assert parse_config({"auth": []}).auth == ()


def test_an_empty_auth_stack_denies_everyone(tmp_path: Path, transport_key: TransportKey) -> None:
    with nxauth.Authenticator(
        {"state_dir": str(tmp_path / "s"), "transport": {"key_sources": ["k"]}, "auth": [], "account": []},
        backends={"k": ListKeySource(transport_key.line)},
        entry_points=False,
    ) as auth:
        session = auth.open_session(peer=("198.51.100.7", 1))
        session.check_transport_key("nx", transport_key.line)
        with pytest.raises(nxauth.AuthenticationFailed) as info:
            session.login("alice", "x")
    assert info.value.reason is nxauth.Reason.NO_DECISION


def test_relative_paths_of_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """configuration.md, introduction: "Relative paths are relative to the
    configuration file's directory (to the working directory for a
    configuration given as a mapping ...)"; ``[server] host_key``: "relative
    paths are taken from the configuration file's directory"."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "nxauth.toml").write_text('state_dir = "state"\n[audit]\njsonl = "audit.jsonl"\n[server]\nhost_key = "hk"\n')
    monkeypatch.chdir(tmp_path)
    loaded = nxauth.load_config(etc / "nxauth.toml")
    base = etc.resolve()
    assert (loaded.state_dir, loaded.audit.jsonl, loaded.server.host_key) == (
        base / "state",
        base / "audit.jsonl",
        base / "hk",
    )
    mapping = parse_config({"state_dir": "state"})
    assert mapping.state_dir == Path("state")  # the working directory's


# ================================================================ docs/protocol.md


def protocol_codes() -> dict[int, str]:
    rows = table_rows(section_body(PROTOCOL, "## Lines"))
    return {int(unquote(code)): text for code, text, _ in rows}


def test_the_codes_table_is_the_codes() -> None:
    """protocol.md, Lines: the table of codes is :class:`Code`, and each
    closing code's text is what :data:`TEXTS` sends."""
    documented = protocol_codes()
    assert set(documented) == {int(code) for code in Code}
    for code, text in TEXTS.items():
        assert documented[int(code)] == f"`{text}`", f"NX> {int(code)}"
    assert documented[Code.USER] == "`User:`" and documented[Code.PASSWORD] == "`Password:`"
    assert documented[Code.GREETING] == "`nxauth VERSION protocol 1`" and PROTOCOL_VERSION == 1
    assert documented[Code.AUTHENTICATED] == "`Authenticated USERNAME`"


def test_a_status_line() -> None:
    """protocol.md, Lines: "NX> , a three-digit code, a space and a text",
    UTF-8, ended by LF."""
    assert PREFIX == "NX> "
    for code in Code:
        line = format_line(code, "téxt")
        assert re.fullmatch(rb"NX> \d{3} t\xc3\xa9xt\n", line), line


def test_the_documented_numbers_are_the_defaults() -> None:
    """protocol.md, Rules: ``session.max_password_bytes`` "(8192 by
    default)", ``[login] timeout`` "(120 by default)",
    ``session.max_attempts`` "(6 by default)"."""
    assert "`session.max_password_bytes` bytes\n  (8192 by default)" in PROTOCOL
    assert DEFAULT.session.max_password_bytes == 8192
    assert "`[login] timeout` seconds\n  (120 by default)" in PROTOCOL
    assert DEFAULT.login.timeout == 120
    assert "`session.max_attempts`\n  (6 by default)" in PROTOCOL
    assert DEFAULT.session.max_attempts == 6


def test_the_audited_words_are_reasons() -> None:
    """protocol.md, Rules: the server audits ``protocol-error``,
    ``login-timeout``, ``client-gone``: reasons of the reasons table."""
    for word in ("protocol-error", "login-timeout", "client-gone"):
        assert f"`{word}`" in PROTOCOL
        assert nxauth.Reason(word)


def test_on_a_terminal() -> None:
    """protocol.md, On a terminal: "plain prompts instead of status lines:
    login: and Password: ... A failure prints Authentication failed., and
    nothing is printed on success"."""
    assert terminal_prompt(Code.USER, "User:") == "login: "
    assert terminal_prompt(Code.PASSWORD, "Password:") == "Password: "
    assert terminal_text(Code.FAILED, TEXTS[Code.FAILED]) == "Authentication failed.\r\n"
    assert terminal_text(Code.AUTHENTICATED, "Authenticated alice") == ""


def test_the_environment_table() -> None:
    """protocol.md, After success: the variables of the table, and every
    inherited ``NXAUTH_*`` removed."""
    documented = {unquote(row[0]) for row in table_rows(section_body(PROTOCOL, "## After success"))}
    grant = nxauth.TransportGrant("nx", "ssh-ed25519", "SHA256:x", "keystore")
    identity = nxauth.Identity(
        "alice", "passwords", nxauth.Peer("198.51.100.7", 52100), "s1", grant, frozenset({"a b", "c"}), {}
    )
    env = identity_environment(identity, {"NXAUTH_EVIL": "1", "PATH": "/bin"})
    assert {k for k in env if k.startswith("NXAUTH_")} == documented
    assert "NXAUTH_EVIL" not in env and env["NXAUTH_PEER"] == "198.51.100.7 52100"
    assert env["NXAUTH_GROUPS"] == "a b\nc"  # one per line, spaces kept


def test_the_embedded_servers_minimal_environment() -> None:
    """protocol.md, After success: under ``nxauth serve`` the environment is
    "PATH, HOME, USER, LOGNAME, SHELL, LANG, LANGUAGE, TZ, LC_*", never the
    server's own."""
    sentence = re.search(r"a\s+minimal one \(([^)]*)\)", PROTOCOL)
    assert sentence is not None
    listed = set(re.findall(r"`([A-Z_]+)`", sentence.group(1)))
    assert listed - {"LC_", "TERM"} == set(INHERITED_ENV)
    env = session_environment(
        {**dict.fromkeys(INHERITED_ENV, "x"), "LC_ALL": "C", "LDAP_PW": "s", "NXAUTH_CONFIG": "c"}
    )
    assert set(env) == set(INHERITED_ENV) | {"LC_ALL"}


# ================================================================ docs/concepts.md, the reasons table


def reason_rows() -> dict[str, str]:
    rows = table_rows(section_body(CONCEPTS, "## Reasons"))
    return {unquote(row[0]): row[3] for row in rows}


def test_the_throttle_column_of_the_reasons_table() -> None:
    """concepts.md, Reasons, column "throttle" (security.md: "the reasons
    table has the full list"): a reason marked "no" is never counted, one
    marked "yes" always; the "no" reasons the session does not settle at
    all are those of the integrations' aborts and the throttle's own."""
    from nxauth.core.stage2 import NOT_COUNTED

    rows = reason_rows()
    assert set(rows) == {reason.value for reason in nxauth.Reason}
    counted = {name for name, cell in rows.items() if cell.startswith("yes")}
    not_counted = {name for name, cell in rows.items() if cell == "no"}
    codes = {reason.value for reason in NOT_COUNTED}
    assert counted & codes == set()
    assert codes <= not_counted
    assert not_counted - codes == {"protocol-error", "client-gone", "throttle-unavailable"}


# ================================================================ docs/security.md


@pytest.fixture
def audited(tmp_path: Path, transport_key: TransportKey) -> Iterator[tuple[nxauth.Authenticator, Path]]:
    jsonl = tmp_path / "audit.jsonl"
    with nxauth.Authenticator(
        {
            "state_dir": str(tmp_path / "state"),
            "audit": {"jsonl": str(jsonl)},
            "transport": {"key_sources": ["k"]},
            "throttle": {"max_user_failures": 2},
        },
        backends={"k": ListKeySource(transport_key.line)},
        entry_points=False,
    ) as auth:
        yield auth, jsonl


def log_in(auth: nxauth.Authenticator, key: str, user: str, password: str, host: str = "2001:db8::7") -> str:
    session = auth.open_session(peer=(host, 52100))
    session.check_transport_key("nx", key)
    try:
        return session.login(user, password).username
    except nxauth.AuthenticationFailed as exc:
        return exc.reason.value


def test_the_json_lines_fields(audited: tuple[nxauth.Authenticator, Path], transport_key: TransportKey) -> None:
    """security.md, What is logged: the example object and the table of
    fields are the keys of every JSON line; ``time`` ISO 8601, UTC, ms."""
    auth, jsonl = audited
    assert log_in(auth, transport_key.line, "mallory", "pw") == "unknown-user"
    (example,) = [b for b in code_blocks(DOCS / "security.md") if b.language == "json"]
    fields = set()
    for row in table_rows(section_body(SECURITY, "## What is logged")):
        fields |= {unquote(name) for name in row[0].split(", ")}
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert set(json.loads(example.text)) == fields
    for event in events:
        assert set(event) == fields
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", event["time"])
        assert event["outcome"] in ("accepted", "failed", "refused")
        assert event["method"] in ("publickey", "sshsig", "password", "session")
    stage2 = events[-1]
    example_event = json.loads(example.text)
    for name in ("stage", "outcome", "reason", "method", "user", "invalid_user", "host", "port", "backend", "detail"):
        assert stage2[name] == example_event[name], name


def test_the_example_log_lines(
    audited: tuple[nxauth.Authenticator, Path], transport_key: TransportKey, caplog: pytest.LogCaptureFixture
) -> None:
    """security.md, What is logged: the example lines are what the
    ``nxauth.audit`` logger writes (session ids and fingerprints aside);
    Accepted at INFO, Failed and Refused at WARNING."""
    auth, _ = audited
    caplog.set_level(logging.INFO, logger="nxauth.audit")
    assert log_in(auth, transport_key.line, "mallory", "pw") == "unknown-user"
    for _ in range(2):
        log_in(auth, transport_key.line, "alice", "guess", host="203.0.113.9")
    assert log_in(auth, transport_key.line, "alice", "guess", host="203.0.113.9") == "locked-out"
    (block,) = [b for b in code_blocks(DOCS / "security.md") if "Failed password for invalid user" in b.text]
    examples = block.text.splitlines()
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "nxauth.audit"]

    def shape(line: str) -> str:
        line = re.sub(r"session=[0-9a-f.]+(\.\.\.)?", "session=S", line)
        line = re.sub(r"SHA256:\S+", "SHA256:F", line)
        return re.sub(r"seconds=\d+", "seconds=N", line)

    produced = {shape(text): level for level, text in lines}
    for example in examples:
        if example.startswith("Accepted password"):
            continue  # needs a password set: the line's shape is that of Accepted publickey
        wanted = shape(example)
        if example.startswith("Accepted publickey"):
            wanted = wanted.replace("198.51.100.7", "2001:db8::7").replace("via keystore", "via k")
        if "locked-out" in example:
            wanted = wanted.replace("203.0.113.9 port 40022", "203.0.113.9 port 52100")
        assert wanted in produced, f"security.md example not produced: {example}\n{sorted(produced)}"
        level = produced[wanted]
        assert level == (logging.INFO if example.startswith("Accepted") else logging.WARNING)


def test_user_and_detail_are_cut(audited: tuple[nxauth.Authenticator, Path], transport_key: TransportKey) -> None:
    """security.md, the fields table: ``user`` "cut to 100 characters";
    Never logged: "usernames and details are cut (100 and 300 characters)
    and escaped ... so one event is one line"."""
    auth, jsonl = audited
    log_in(auth, transport_key.line, "m" * 250, "pw")
    log_in(auth, transport_key.line, "a\u202eb" * 3, "pw")
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert max(len(e["user"]) for e in events) == 100
    assert all(len(e["detail"]) <= 300 for e in events)
    assert all("\n" not in line for line in jsonl.read_text().splitlines())


def test_a_secrets_repr() -> None:
    """security.md, Never logged: "nxauth.Secret objects, whose repr and str
    are Secret('***')"."""
    secret = nxauth.Secret("hunter2")
    assert repr(secret) == str(secret) == "Secret('***')"


class Raising:
    def authenticate(self, attempt: nxauth.Attempt) -> nxauth.Verdict:
        raise RuntimeError(f"server said: bad password {attempt.password.reveal()}")

    def check_account(self, identity: nxauth.Identity) -> nxauth.Verdict:
        return nxauth.Verdict.allow()


def test_a_backend_that_raises(tmp_path: Path, transport_key: TransportKey, caplog: pytest.LogCaptureFixture) -> None:
    """security.md, Never logged: "when a backend raises, the nxauth.stack log
    line names the exception's type only; the audit detail is the word
    backend-raised"; Failing closed: a backend that raises is a deny
    (``backend-error``)."""
    sink = RecordingSink()
    caplog.set_level(logging.DEBUG)
    with nxauth.Authenticator(
        {"state_dir": str(tmp_path / "s"), "transport": {"key_sources": ["k"]}, "auth": [{"use": "r"}],
         "account": [{"use": "r"}]},
        backends={"k": ListKeySource(transport_key.line), "r": Raising()},
        plugins=[sink],
        entry_points=False,
    ) as auth:  # fmt: skip
        assert log_in(auth, transport_key.line, "alice", "hunter2-secret") == "backend-error"
    (event,) = [e for e in sink.events if e.stage == 2]
    assert event.detail == "backend-raised"
    stack_lines = [r.getMessage() for r in caplog.records if r.name == "nxauth.stack"]
    assert stack_lines and all("RuntimeError" in line and "server said" not in line for line in stack_lines)
    assert "hunter2-secret" not in caplog.text


def test_the_throttle_numbers(audited: tuple[nxauth.Authenticator, Path]) -> None:
    """security.md, the throttle: "throttle.window (900 seconds)",
    "max_user_failures, 10", "10 times max_user_failures: 100",
    "max_source_failures, 30", "throttle.lockout (60 s)", "max_lockout
    (3600 s)"; Stage 1: "session.max_attempts (6)"; Bad input:
    "session.max_password_bytes (8192 bytes)", "usernames.max_length (256)";
    sinks: "audit.sink_timeout (50 ms by default)"."""
    th = DEFAULT.throttle
    assert (th.window, th.max_user_failures, th.max_user_failures_all_sources) == (900, 10, 100)
    assert (th.max_source_failures, th.lockout, th.max_lockout) == (30, 60, 3600)
    assert "`throttle.window` (900 seconds)" in SECURITY and "`session.max_attempts` (6)" in SECURITY
    assert DEFAULT.session.max_attempts == 6
    assert "`session.max_password_bytes` (8192\n  bytes)" in SECURITY and DEFAULT.session.max_password_bytes == 8192
    assert "`usernames.max_length` (256)" in SECURITY and DEFAULT.usernames.max_length == 256
    assert "`audit.sink_timeout` (50 ms by default)" in SECURITY and DEFAULT.audit.sink_timeout == 0.05


def test_the_files_table(audited: tuple[nxauth.Authenticator, Path], transport_key: TransportKey) -> None:
    """security.md, Files: the store 0600 in a 0700 directory, ``audit.jsonl``
    0600, "created by the first event"."""
    auth, jsonl = audited
    assert not jsonl.exists()
    log_in(auth, transport_key.line, "alice", "x")
    state = auth.config.state_dir
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "nxauth.db").stat().st_mode) == 0o600
    assert stat.S_IMODE(jsonl.stat().st_mode) == 0o600


def test_stage_1_failures_do_not_count_against_the_throttle(tmp_path: Path, transport_key: TransportKey) -> None:
    """security.md, Stage 1: "Stage-1 failures count against the session's
    attempts, not against the throttle"."""
    with nxauth.Authenticator(
        {"state_dir": str(tmp_path / "s"), "transport": {"key_sources": ["k"]}, "auth": [{"use": "m"}],
         "account": [{"use": "m"}], "throttle": {"max_source_failures": 1, "max_user_failures": 1}},
        backends={"k": ListKeySource(transport_key.line), "m": MemoryBackend({"alice": "pw"})},
        entry_points=False,
    ) as auth:  # fmt: skip
        for _ in range(3):
            session = auth.open_session(peer=("198.51.100.7", 1))
            with pytest.raises(nxauth.AuthenticationFailed):
                session.check_transport_key("nx", TransportKey().line)
            assert session.attempts == 1
        assert log_in(auth, transport_key.line, "alice", "pw", host="198.51.100.7") == "alice"


class Chatty:
    audit_details = frozenset({"wrong-pin"})

    def authenticate(self, attempt: nxauth.Attempt) -> nxauth.Verdict:
        attempt.info(f"server echoed {attempt.password.reveal()}")
        attempt.info("second message")
        if attempt.username == "declared":
            return nxauth.Verdict.deny(nxauth.Reason.BAD_PASSWORD, "wrong-pin")
        return nxauth.Verdict.deny(nxauth.Reason.BAD_PASSWORD, f"LDAP said: {attempt.password.reveal()}")

    def check_account(self, identity: nxauth.Identity) -> nxauth.Verdict:
        return nxauth.Verdict.allow()


def test_details_are_declared_words(tmp_path: Path, transport_key: TransportKey) -> None:
    """security.md, Never logged and the ``detail`` field: a backend's detail
    is kept only when declared (else ``undeclared-detail``), its messages
    only counted (``backend-messages=N``)."""
    sink = RecordingSink()
    mapping = {
        "state_dir": str(tmp_path / "s"),
        "transport": {"key_sources": ["k"]},
        "auth": [{"use": "c"}],
        "account": [{"use": "c"}],
    }
    backends = {"k": ListKeySource(transport_key.line), "c": Chatty()}
    with nxauth.Authenticator(mapping, backends=backends, plugins=[sink], entry_points=False) as auth:
        log_in(auth, transport_key.line, "declared", "hunter2-secret")
        log_in(auth, transport_key.line, "free", "hunter2-secret")
    details = [e.detail for e in sink.events if e.stage == 2]
    assert details == ["wrong-pin backend-messages=2", "undeclared-detail backend-messages=2"]


# ================================================================ configuration.md, the backend kinds


def backend_ranges() -> list[tuple[str, str, str]]:
    body = section_body(CONFIGURATION, "## `[backends.NAME]`")
    found = []
    for kind in re.findall(r"^### Kind `([a-z_]+)`$", body, re.MULTILINE):
        for key, _default, meaning in table_rows(section_body(body, f"### Kind `{kind}`")):
            match = RANGE.search(meaning)
            if match and not meaning[match.end() :].startswith(" letters"):  # a length, its own test
                found.append((kind, unquote(key), meaning))
    return found


BACKEND_RANGES = backend_ranges()


def test_backend_ranges_are_found() -> None:
    assert {f"{k}.{o}" for k, o, _ in BACKEND_RANGES} >= {
        "passwords.time_cost",
        "system.min_uid",
        "ldap.connect_timeout",
        "ldap.pool_size",
        "ldap.max_group_depth",
    }


@pytest.mark.parametrize(("kind", "key", "meaning"), BACKEND_RANGES, ids=[f"{k}.{o}" for k, o, _ in BACKEND_RANGES])
def test_each_documented_backend_range_is_enforced(tmp_path: Path, kind: str, key: str, meaning: str) -> None:
    """configuration.md, each ``### Kind`` table: "N to M" is the accepted
    range of the option, both ends included, as the kind's factory reads it
    (a real build, as ``nxauth check`` does)."""
    from tests.support.docs import InstanceBuilder

    match = RANGE.search(meaning)
    assert match is not None
    low, high = (float(x) if "." in x else int(x) for x in match.groups())
    step = 1 if isinstance(low, int) and isinstance(high, int) else min(0.001, low / 10 if low else 0.001)
    builder = InstanceBuilder(tmp_path)
    try:
        for value in (low, high):
            builder.build(kind, {key: value})
        for value in (low - step, high + step):
            with pytest.raises(nxauth.ConfigError) as info:
                builder.build(kind, {key: value})
            assert info.value.key == f"backends.{kind}.{key}"
    finally:
        builder.close()


# ================================================================ more of configuration.md and security.md


@pytest.fixture
def counted(tmp_path: Path, transport_key: TransportKey) -> Iterator[tuple[nxauth.Authenticator, list[str]]]:
    seen: list[str] = []

    class Backend(MemoryBackend):
        def authenticate(self, attempt: nxauth.Attempt) -> nxauth.Verdict:
            seen.append(attempt.password.reveal())
            return super().authenticate(attempt)

    mapping = {
        "state_dir": str(tmp_path / "s"),
        "transport": {"key_sources": ["k"]},
        "auth": [{"use": "m"}],
        "account": [{"use": "m"}],
        "session": {"max_password_bytes": 64},
    }
    backends = {"k": ListKeySource(transport_key.line), "m": Backend({"alice": "é" * 32})}
    with nxauth.Authenticator(mapping, backends=backends, entry_points=False) as auth:
        yield auth, seen


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("é" * 32, "alice"),  # 64 bytes: the limit
        ("é" * 32 + "x", "invalid-password"),  # 65 bytes
        ("x" * 63 + "é", "invalid-password"),  # 65 bytes, 64 characters
        ("pass\x00word", "invalid-password"),
        ("", "empty-password"),
    ],
    ids=["limit", "limit+1", "multi-byte straddling", "NUL", "empty"],
)
def test_max_password_bytes_is_checked_before_any_backend(
    counted: tuple[nxauth.Authenticator, list[str]], transport_key: TransportKey, password: str, reason: str
) -> None:
    """configuration.md, ``[session] max_password_bytes``: "longer passwords
    are refused before any backend"; security.md, Bad input: "passwords with
    a NUL or longer than session.max_password_bytes (invalid-password)",
    "empty passwords (empty-password): never sent anywhere"."""
    auth, seen = counted
    assert log_in(auth, transport_key.line, "alice", password) == reason
    assert seen == ([password] if reason == "alice" else [])


def test_attempts_count_both_stages_together(tmp_path: Path, transport_key: TransportKey) -> None:
    """security.md, Stage 1: "every failure counts against
    session.max_attempts (6), both stages together ... then the session is
    closed for good"."""
    with nxauth.Authenticator(
        {"state_dir": str(tmp_path / "s"), "transport": {"key_sources": ["k"]}, "auth": [{"use": "m"}],
         "account": [{"use": "m"}]},
        backends={"k": ListKeySource(transport_key.line), "m": MemoryBackend({"alice": "pw"})},
        entry_points=False,
    ) as auth:  # fmt: skip
        session = auth.open_session(peer=("198.51.100.7", 1))
        for _ in range(3):
            with pytest.raises(nxauth.AuthenticationFailed):
                session.check_transport_key("nx", TransportKey().line)
        session.check_transport_key("nx", transport_key.line)
        for _ in range(2):
            with pytest.raises(nxauth.AuthenticationFailed):
                session.login("alice", "wrong")
        assert session.state is not nxauth.SessionState.CLOSED
        with pytest.raises(nxauth.AuthenticationFailed):
            session.login("alice", "wrong")
        assert session.attempts == 6 and session.state is nxauth.SessionState.CLOSED
        with pytest.raises(nxauth.AuthenticationFailed) as info:
            session.login("alice", "pw")
        assert info.value.reason is nxauth.Reason.SESSION_CLOSED


def test_wrong_account(tmp_path: Path, transport_key: TransportKey) -> None:
    """configuration.md, ``[transport] account``: "stage 1 refuses every other
    name (wrong-account)"."""
    with nxauth.Authenticator(
        {"state_dir": str(tmp_path / "s"), "transport": {"key_sources": ["k"]}},
        backends={"k": ListKeySource(transport_key.line)},
        entry_points=False,
    ) as auth:
        session = auth.open_session(peer=("198.51.100.7", 1))
        with pytest.raises(nxauth.AuthenticationFailed) as info:
            session.check_transport_key("root", transport_key.line)
    assert info.value.reason is nxauth.Reason.WRONG_ACCOUNT


@pytest.mark.parametrize(("case", "same"), [("fold", True), ("preserve", False)])
def test_usernames_case(tmp_path: Path, transport_key: TransportKey, case: str, same: bool) -> None:
    """configuration.md, ``[usernames] case``: "fold": "Alice and alice are
    one user"; "preserve": as typed."""
    with nxauth.Authenticator(
        {"state_dir": str(tmp_path / "s"), "transport": {"key_sources": ["k"]}, "auth": [{"use": "m"}],
         "account": [{"use": "m"}], "usernames": {"case": case}},
        backends={"k": ListKeySource(transport_key.line), "m": MemoryBackend({"alice": "pw"})},
        entry_points=False,
    ) as auth:  # fmt: skip
        assert (log_in(auth, transport_key.line, "Alice", "pw") == "alice") is same


@pytest.mark.parametrize("name", ["", " alice", "alice ", "al\x07ice", "al\u200bice", "a" * 257])
def test_invalid_usernames(tmp_path: Path, transport_key: TransportKey, name: str) -> None:
    """security.md, Bad input: "usernames that are empty, longer than
    usernames.max_length (256), with control or format characters ... or
    leading or trailing white space (invalid-username)"."""
    with nxauth.Authenticator(
        {"state_dir": str(tmp_path / "s"), "transport": {"key_sources": ["k"]}, "auth": [{"use": "m"}],
         "account": [{"use": "m"}]},
        backends={"k": ListKeySource(transport_key.line), "m": MemoryBackend({"alice": "pw"})},
        entry_points=False,
    ) as auth:  # fmt: skip
        assert log_in(auth, transport_key.line, name, "pw") == "invalid-username"


def test_every_declared_instance_is_built(tmp_path: Path) -> None:
    """configuration.md, ``[backends.NAME]``: "Every declared instance is
    built, whether a stack uses it or not" (so its mistakes show at once)."""
    mapping = {
        "state_dir": str(tmp_path / "s"),
        "backends": {"unused": {"kind": "passwords", "time_cost": 0}},
    }
    with pytest.raises(nxauth.ConfigError) as info:
        nxauth.Authenticator(mapping, entry_points=False).close()
    assert info.value.key == "backends.unused.time_cost"


def test_a_kind_used_directly_gets_default_options(tmp_path: Path) -> None:
    """configuration.md, ``[backends.NAME]``: "A stack entry ... that names a
    kind directly (use = "pam") without a [backends.pam] table gets an
    instance of that kind with default options"."""
    mapping = {"state_dir": str(tmp_path / "s"), "auth": [{"use": "passwords"}], "account": [{"use": "users"}]}
    with nxauth.Authenticator(mapping, entry_points=False) as auth:
        assert {"passwords", "users"} <= set(auth.backends)


def test_500_when_sshd_does_not_expose_the_key(tmp_path: Path, transport_key: TransportKey) -> None:
    """protocol.md, the codes table: ``500`` ``Internal error``: "the server
    closes (a deployment error, e.g. sshd without ExposeAuthInfo yes)"; and
    ``999`` ``Bye``: "the last line before the server closes"."""
    import socket

    from nxauth.integrations.openssh import run_login

    with nxauth.Authenticator(
        {"state_dir": str(tmp_path / "s"), "transport": {"key_sources": ["k"]}},
        backends={"k": ListKeySource(transport_key.line)},
        entry_points=False,
    ) as auth:
        server, client = socket.socketpair()
        with server, client:
            client.shutdown(socket.SHUT_WR)
            status = run_login(
                auth, account="nx", environ={}, stdin_fd=server.fileno(), stdout_fd=server.fileno(), terminal=False
            )
            server.shutdown(socket.SHUT_WR)
            out = client.recv(4096).decode()
    assert status != 0
    assert out == "NX> 500 Internal error\nNX> 999 Bye\n"


@pytest.mark.parametrize(
    ("service", "ok"),
    [("a" * 64, True), ("nx.auth+x-1_2", True), ("a" * 65, False), (".hidden", False), ("a/b", False), ("", False)],
)
def test_the_pam_service_name(tmp_path: Path, service: str, ok: bool) -> None:
    """configuration.md, Kind ``pam``, ``service``: "1 to 64 letters,
    digits, _ . + -, not starting with a dot"."""
    from tests.support.docs import InstanceBuilder

    builder = InstanceBuilder(tmp_path)
    try:
        if ok:
            builder.build("pam", {"service": service})
        else:
            with pytest.raises(nxauth.ConfigError) as info:
                builder.build("pam", {"service": service})
            assert info.value.key == "backends.pam.service"
    finally:
        builder.close()
