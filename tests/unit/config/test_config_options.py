"""The one typed reader, :class:`nxauth.Options`, and the rules it holds
everywhere: in every section of the configuration and in backend options.

Properties: a non-finite number at any numeric key, a value of a wrong type
at any key and an unknown key at any depth are each refused with a
:class:`nxauth.ConfigError` naming that key's dotted path.  Tables: the
message style, ``KEY: must be EXPECTED, got WHAT``.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import math
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nxauth import ConfigError, Secret
from nxauth.config import Config, Options, SecretRef, load_config, parse_config
from tests.support.docs import InstanceBuilder, backend_option_getters

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
BUILD_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

#: Infinities, and NaNs of either sign with any payload (what a mapping from code can hold).
non_finite = st.sampled_from([math.inf, -math.inf]) | st.builds(
    lambda sign, payload: struct.unpack("<d", struct.pack("<Q", sign << 63 | 0x7FF0000000000000 | payload))[0],
    st.integers(0, 1),
    st.integers(1, 2**52 - 1),
)
#: Values of every type a TOML file (or a mapping from code) can hold at a key.
any_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.datetimes()
    | st.dates()
    | st.builds(Secret, st.text(max_size=8)),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)


def refused(call: Callable[[], object]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        call()
    return info.value


def names_key(error: ConfigError, key: str, *, source: str = "x.toml", below: bool = False) -> bool:
    """``error`` names ``key`` (or, with ``below``, an item or key inside it)
    both as its ``key`` and in its message."""
    assert error.key is not None
    exact = error.key == key
    inside = below and error.key.startswith((f"{key}[", f"{key}."))
    return (exact or inside) and str(error).startswith(f"{source}: {error.key}: ")


# ---------------------------------------------------------------- what each key accepts

#: Which getter rule each key of a section follows, from the dataclass defaults.
_KIND_OF_DEFAULT: dict[type, str] = {bool: "boolean", int: "integer", float: "number", str: "string", tuple: "array"}
_KIND_OF_OPTIONAL = {
    "Path | None": "string",
    "frozenset[str] | None": "array",
    "str | None": "string",
    "SecretRef | Secret | None": "secret",
    "bool | None": "boolean",
    "int | None": "integer",
}


def _section_keys() -> dict[str, str]:
    """``{"session.max_attempts": "integer", ...}`` for every key of every
    section, and the top-level and per-instance keys."""
    keys = {"state_dir": "string", "backends.x.kind": "string", "backends.x.timeout": "number"}
    keys |= {"auth[0].use": "string", "auth[0].control": "string"}
    keys |= {"account[0].use": "string", "account[0].control": "string"}
    for section in dataclasses.fields(Config):
        if not dataclasses.is_dataclass(section.default):
            continue
        for item in dataclasses.fields(section.default):
            default = getattr(section.default, item.name)
            kind = _KIND_OF_OPTIONAL[str(item.type)] if default is None else _KIND_OF_DEFAULT[type(default)]
            keys[f"{section.name}.{item.name}"] = kind
    return keys


SECTION_KEYS = _section_keys()
NUMERIC_SECTION_KEYS = sorted(key for key, kind in SECTION_KEYS.items() if kind in ("integer", "number"))


def _accepted_by_section(kind: str, value: Any) -> bool:
    """The value has the type a section's key of ``kind`` takes (its range aside)."""
    if isinstance(value, bool):
        return kind == "boolean"
    if kind == "secret":
        return _accepted_by_getter("secret", value)
    return {
        "boolean": False,
        "integer": isinstance(value, int),
        "number": isinstance(value, int | float),
        "string": isinstance(value, str),
        "array": isinstance(value, list | tuple),  # the sections take no lone string
    }[kind]


def _accepted_by_getter(getter: str, value: Any) -> bool:
    """The value has the type a backend option read by ``getter`` takes."""
    if isinstance(value, bool):
        return getter == "boolean"
    if getter == "secret":  # a table that looks like a reference is read as one
        looks = isinstance(value, Mapping) and bool(value) and set(value) <= {"env", "file"}
        return looks or isinstance(value, Secret | SecretRef)
    return {
        "boolean": False,
        "integer": isinstance(value, int),
        "number": isinstance(value, int | float),
        "string": isinstance(value, str),
        "choice": isinstance(value, str),
        "strings": isinstance(value, str | list | tuple),
    }[getter]


def _place(dotted: str, value: Any) -> dict[str, Any]:
    """A configuration mapping with ``value`` at ``dotted`` (``a.b``, ``auth[0].use``)."""
    head, _, rest = dotted.partition(".")
    if head.endswith("[0]"):
        entry: dict[str, Any] = {"use": "pam"}
        entry.update(_place(rest, value))
        return {head[:-3]: [entry]}
    return {head: _place(rest, value) if rest else value}


BACKEND_GETTERS = backend_option_getters()
BACKEND_KEYS = sorted((kind, key, getter) for kind, keys in BACKEND_GETTERS.items() for key, getter in keys.items())
NUMERIC_BACKEND_KEYS = [(kind, key) for kind, key, getter in BACKEND_KEYS if getter in ("integer", "number")]
TYPED_BACKEND_KEYS = [(kind, key, getter) for kind, key, getter in BACKEND_KEYS if getter != "raw"]


@pytest.fixture(scope="module")
def builder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InstanceBuilder]:
    built = InstanceBuilder(tmp_path_factory.mktemp("state"))
    yield built
    built.close()


def test_the_keys_are_found() -> None:
    assert {"session.challenge_ttl", "throttle.window", "server.port", "backends.x.timeout"} <= set(
        NUMERIC_SECTION_KEYS
    )
    assert ("ldap", "connect_timeout") in NUMERIC_BACKEND_KEYS and ("passwords", "time_cost") in NUMERIC_BACKEND_KEYS
    assert {getter for _, _, getter in TYPED_BACKEND_KEYS} >= {"string", "boolean", "integer", "number", "strings"}


# ---------------------------------------------------------------- non-finite numbers


@SETTINGS
@given(key=st.sampled_from(NUMERIC_SECTION_KEYS), value=non_finite)
def test_a_non_finite_number_is_refused_at_every_section_key(key: str, value: float) -> None:
    error = refused(lambda: parse_config(_place(key, value), source="x.toml"))
    assert names_key(error, key)
    assert f"got {value!r}" in str(error)


@BUILD_SETTINGS
@given(where=st.sampled_from(NUMERIC_BACKEND_KEYS), value=non_finite)
def test_a_non_finite_number_is_refused_at_every_backend_option(
    builder: InstanceBuilder, where: tuple[str, str], value: float
) -> None:
    kind, key = where
    error = refused(lambda: builder.build(kind, {key: value}))
    assert names_key(error, f"backends.{kind}.{key}", source="<mapping>")
    assert f"got {value!r}" in str(error)


def test_nan_and_inf_literals_of_a_toml_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "nxauth.toml"
    for literal in ("nan", "+nan", "-nan", "inf", "+inf", "-inf"):
        path.write_text(f"[session]\nchallenge_ttl = {literal}\n")
        error = refused(lambda: load_config(path))
        assert error.key == "session.challenge_ttl"
        assert str(error) == f"{path}: session.challenge_ttl: must be a number of seconds, got {float(literal)!r}"
        path.write_text(f"[backends.corp]\nkind = 'ldap'\ntimeout = {literal}\n")
        assert refused(lambda: load_config(path)).key == "backends.corp.timeout"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=repr)
def test_number_without_bounds_refuses_non_finite(value: float) -> None:
    """Options.number had no default bounds: an infinity passed when a plugin
    gave none (or only one), and NaN only failed through its minimum."""
    options = Options({"n": value}, source="s", prefix="backends.p")
    for call in (
        lambda: options.number("n"),
        lambda: options.number("n", maximum=10.0),
        lambda: options.number("n", minimum=0.0),
        lambda: options.integer("n"),
    ):
        assert "backends.p.n" in str(refused(call))


# ---------------------------------------------------------------- wrong types


@SETTINGS
@given(st.data())
def test_a_value_of_a_wrong_type_is_refused_at_every_section_key(data: st.DataObject) -> None:
    key, kind = data.draw(st.sampled_from(sorted(SECTION_KEYS.items())), label="key")
    value = data.draw(any_value.filter(lambda v: not _accepted_by_section(kind, v)), label="value")
    error = refused(lambda: parse_config(_place(key, value), source="x.toml"))
    assert names_key(error, key)


@BUILD_SETTINGS
@given(st.data())
def test_a_value_of_a_wrong_type_is_refused_at_every_backend_option(
    builder: InstanceBuilder, data: st.DataObject
) -> None:
    kind, key, getter = data.draw(st.sampled_from(TYPED_BACKEND_KEYS), label="option")
    value = data.draw(any_value.filter(lambda v: not _accepted_by_getter(getter, v)), label="value")
    error = refused(lambda: builder.build(kind, {key: value}))
    assert names_key(error, f"backends.{kind}.{key}", source="<mapping>", below=True)


@SETTINGS
@given(value=st.text(min_size=1, max_size=40), key=st.sampled_from(sorted(SECTION_KEYS)))
def test_a_string_at_a_wrong_key_is_never_shown(value: str, key: str) -> None:
    """A password pasted at the wrong key must not reach the message: a
    string is described by its type, unless it is a name or choice nxauth
    repeats on purpose."""
    if SECTION_KEYS[key] in ("string", "array"):
        return
    message = str(refused(lambda: parse_config(_place(key, "\x00" + value), source="x.toml")))
    assert "\x00" + value not in message and "a string" in message


# ---------------------------------------------------------------- unknown keys

extra_name = st.text(st.characters(categories=["L", "N", "P"]), min_size=1, max_size=12)


@SETTINGS
@given(st.data())
def test_an_unknown_key_is_refused_in_every_table_of_the_configuration(data: st.DataObject) -> None:
    tables = {"": {}, "auth[0]": {"use": "pam"}, "account[0]": {"use": "users"}}
    tables |= {section: {} for section in {key.split(".")[0] for key in SECTION_KEYS if "." in key} - set(tables)}
    del tables["backends"]  # an instance's other keys are its options: the next test
    where = data.draw(st.sampled_from(sorted(tables)), label="table")
    known = {key.rsplit(".", 1)[-1] for key in SECTION_KEYS if key.startswith(f"{where}.")}
    if not where:
        known = {field.name for field in dataclasses.fields(Config)}
    name = data.draw(extra_name.filter(lambda n: n not in known), label="name")
    table = {**tables[where], name: 1}
    mapping = {name: 1} if not where else {where[:-3]: [table]} if where.endswith("]") else {where: table}
    error = refused(lambda: parse_config(mapping, source="x.toml"))
    assert names_key(error, f"{where}.{name}" if where else name)
    assert error.detail.startswith("unknown option")


@BUILD_SETTINGS
@given(st.data())
def test_an_unknown_option_is_refused_for_every_kind(builder: InstanceBuilder, data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(sorted(BACKEND_GETTERS)), label="kind")
    name = data.draw(extra_name.filter(lambda n: n not in BACKEND_GETTERS[kind]), label="name")
    error = refused(lambda: builder.build(kind, {name: data.draw(any_value, label="value")}))
    assert names_key(error, f"backends.{kind}.{name}", source="<mapping>")
    assert error.detail.startswith("unknown option")


# ---------------------------------------------------------------- the reader over any nesting

_key_name = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
_LEAVES = ("integer", "number", "string", "boolean", "strings")
_VALID: dict[str, Any] = {"integer": 7, "number": 1.5, "string": "x", "boolean": True, "strings": ["a", "b"]}
#: A schema: a table of keys, each a leaf getter's name or a nested table.
schemas = st.recursive(
    st.sampled_from(_LEAVES),
    lambda children: st.dictionaries(_key_name, children, min_size=1, max_size=4),
    max_leaves=12,
).filter(lambda schema: isinstance(schema, dict))


def _document(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _document(kind) if isinstance(kind, dict) else _VALID[kind] for key, kind in schema.items()}


def _read(options: Options, schema: Mapping[str, Any]) -> None:
    for key, kind in schema.items():
        if isinstance(kind, dict):
            _read(options.table(key), kind)
        else:
            getattr(options, kind)(key)


def _paths(schema: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every key of the schema, nested ones included, with its kind."""
    for key, kind in schema.items():
        yield (*prefix, key), kind
        if isinstance(kind, dict):
            yield from _paths(kind, (*prefix, key))


def _set(document: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        document = document[key]
    document[path[-1]] = value


def _reads(document: Mapping[str, Any], schema: Mapping[str, Any]) -> Options:
    options = Options(document, source="x.toml", prefix="backends.p")
    _read(options, schema)
    options.check_unused()
    return options


@SETTINGS
@given(schemas)
def test_a_valid_nested_document_is_read(schema: dict[str, Any]) -> None:
    _reads(_document(schema), schema)


@SETTINGS
@given(st.data())
def test_a_non_finite_number_at_any_depth_names_its_path(data: st.DataObject) -> None:
    schema = copy.deepcopy(data.draw(schemas, label="schema"))
    leaves = [path for path, kind in _paths(schema) if not isinstance(kind, dict)]
    path = data.draw(st.sampled_from(leaves), label="at")
    _set_kind(schema, path, data.draw(st.sampled_from(["integer", "number"]), label="getter"))
    document = _document(schema)
    _set(document, path, data.draw(non_finite, label="value"))
    error = refused(lambda: _reads(document, schema))
    assert names_key(error, "backends.p." + ".".join(path))


def _set_kind(schema: dict[str, Any], path: tuple[str, ...], kind: str) -> None:
    for key in path[:-1]:
        schema = schema[key]
    schema[path[-1]] = kind


@SETTINGS
@given(st.data())
def test_a_wrong_type_at_any_depth_names_its_path(data: st.DataObject) -> None:
    schema = data.draw(schemas, label="schema")
    path, kind = data.draw(st.sampled_from(list(_paths(schema))), label="at")
    accepted: Callable[[Any], bool] = (
        (lambda v: isinstance(v, Mapping)) if isinstance(kind, dict) else (lambda v: _accepted_by_getter(kind, v))
    )
    document = _document(schema)
    _set(document, path, data.draw(any_value.filter(lambda v: not accepted(v)), label="value"))
    error = refused(lambda: _reads(document, schema))
    assert names_key(error, "backends.p." + ".".join(path), below=kind == "strings")


@SETTINGS
@given(st.data())
def test_an_unknown_key_at_any_depth_names_its_path(data: st.DataObject) -> None:
    schema = data.draw(schemas, label="schema")
    tables = [(), *(path for path, kind in _paths(schema) if isinstance(kind, dict))]
    where = data.draw(st.sampled_from(tables), label="table")
    level = schema
    for key in where:
        level = level[key]
    name = data.draw(_key_name.filter(lambda n: n not in level), label="name")
    document = _document(schema)
    _set(document, (*where, name), data.draw(any_value, label="value"))
    error = refused(lambda: _reads(document, schema))
    assert names_key(error, "backends.p." + ".".join((*where, name)))
    assert error.detail.startswith("unknown option")


def test_raw_takes_the_whole_value_as_read() -> None:
    options = Options({"rules": {"a": {"anything": 1}}, "tls": {"verify": True}}, source="s", prefix="backends.p")
    assert options.raw("rules") == {"a": {"anything": 1}}
    assert options.table("tls").boolean("verify") is True
    options.check_unused()


def test_tables_reads_an_array_of_tables() -> None:
    options = Options({"servers": [{"host": "a"}, {"host": "b", "port": 0}]}, source="s", prefix="backends.p")
    first, second = options.tables("servers")
    assert (first.string("host"), second.string("host")) == ("a", "b")
    error = refused(lambda: second.integer("port", minimum=1))
    assert str(error) == "s: backends.p.servers[1].port: must be at least 1, got 0"
    assert options.tables("absent") == ()
    options.check_unused()
    second.raw("extra")
    extra = Options({"servers": [{"host": "a", "prot": 1}]}, source="s", prefix="backends.p")
    extra.tables("servers")[0].string("host")
    assert str(refused(extra.check_unused)) == "s: backends.p.servers[0].prot: unknown option"


# ---------------------------------------------------------------- the message style

NAN, INF = math.nan, math.inf
NAME_RULE = "(1 to 64 letters, digits, '-', '_' or '.')"
SECTION_MESSAGES: list[Any] = [
    pytest.param({"session": {"challenge_ttl": NAN}}, "session.challenge_ttl: must be a number of seconds, got nan"),
    pytest.param({"throttle": {"window": -INF}}, "throttle.window: must be a number of seconds, got -inf"),
    pytest.param(
        {"backends": {"ldap": {"timeout": NAN}}}, "backends.ldap.timeout: must be a number of seconds, got nan"
    ),
    pytest.param({"backends": {"ldap": {"timeout": 0}}}, "backends.ldap.timeout: must be more than 0, got 0"),
    pytest.param(
        {"backends": {"ldap": {"timeout": 3600.5}}}, "backends.ldap.timeout: must be at most 3600, got 3600.5"
    ),
    pytest.param(
        {"backends": {"ldap": {"timeout": True}}},
        "backends.ldap.timeout: must be a number of seconds, got a boolean (true)",
    ),
    pytest.param({"session": {"max_attempts": True}}, "session.max_attempts: must be an integer, got a boolean (true)"),
    pytest.param({"session": {"max_attempts": 2.0}}, "session.max_attempts: must be an integer, got 2.0"),
    pytest.param({"session": {"max_attempts": "6"}}, "session.max_attempts: must be an integer, got a string"),
    pytest.param({"session": {"max_attempts": 0}}, "session.max_attempts: must be at least 1, got 0"),
    pytest.param({"session": {"max_attempts": 101}}, "session.max_attempts: must be at most 100, got 101"),
    pytest.param({"server": {"port": 10**40}}, "server.port: must be at most 65535, got a very large integer"),
    pytest.param(
        {"session": {"challenge_ttl": 10**400}},
        "session.challenge_ttl: must be a number of seconds, got a very large integer",
    ),
    pytest.param(
        {"throttle": {"lockout": 100, "max_lockout": 50}}, "throttle.max_lockout: must be at least 100, got 50"
    ),
    pytest.param({"audit": {"log": "yes"}}, "audit.log: must be true or false, got a string"),
    pytest.param({"state_dir": 3}, "state_dir: must be a string, got 3"),
    pytest.param(
        {"transport": {"forced_command": {"env": "X"}}},
        "transport.forced_command: must be a string, got a secret reference",
    ),
    pytest.param(
        {"transport": {"key_sources": "keystore"}},
        "transport.key_sources: must be an array of non-empty strings, got a string",
    ),
    pytest.param(
        {"transport": {"key_sources": [""]}},
        "transport.key_sources[0]: must be a non-empty string, got an empty string",
    ),
    pytest.param(
        {"transport": {"key_sources": ["bad name"]}},
        f"transport.key_sources[0]: must be an instance name {NAME_RULE}, got 'bad name'",
    ),
    pytest.param(
        {"transport": {"allowed_key_types": []}},
        "transport.allowed_key_types: must be at least one key type (leave it out for every supported type), got an empty array",
    ),
    pytest.param({"usernames": {"case": "upper"}}, "usernames.case: must be one of fold, preserve, got 'upper'"),
    pytest.param(
        {"usernames": {"case": "x" * 200}}, f"usernames.case: must be one of fold, preserve, got '{'x' * 100}...'"
    ),
    pytest.param({"throttle": {"exempt": ["not-a-net"]}}, "throttle.exempt[0]: must be an IP network, got 'not-a-net'"),
    pytest.param({"server": {"listen": ["localhost"]}}, "server.listen[0]: must be an IP address, got 'localhost'"),
    pytest.param({"server": {"listen": []}}, "server.listen: must be at least one IP address, got an empty array"),
    pytest.param({"session": 3}, "session: must be a table, got 3"),
    pytest.param({"sesion": {}}, "sesion: unknown option (did you mean session?)"),
    pytest.param({"session": {"max_attempt": 3}}, "session.max_attempt: unknown option (did you mean max_attempts?)"),
    pytest.param({"session": {"zzz": 3}}, "session.zzz: unknown option"),
    pytest.param({"auht": []}, "auht: unknown option (did you mean auth?)"),
    pytest.param({"auth": {"use": "pam"}}, "auth: must be an array of tables ([[auth]]), got a table"),
    pytest.param({"auth": [3]}, "auth[0]: must be a table, got 3"),
    pytest.param({"auth": [{"control": "required"}]}, f"auth[0].use: is required: an instance name {NAME_RULE}"),
    pytest.param(
        {"auth": [{"use": "pam", "control": "sometimes"}]},
        "auth[0].control: must be one of required, requisite, sufficient, optional, got 'sometimes'",
    ),
    pytest.param(
        {"auth": [{"use": "pam", "contrl": "required"}]}, "auth[0].contrl: unknown option (did you mean control?)"
    ),
    pytest.param({"backends": []}, "backends: must be a table, got an empty array"),
    pytest.param(
        {"backends": {"bad name": {}}}, f"backends.bad name: must be an instance name {NAME_RULE}, got 'bad name'"
    ),
    pytest.param({"backends": {"x": {"kind": ""}}}, "backends.x.kind: must be a non-empty string, got an empty string"),
    pytest.param(
        {"backends": {"x": {"pw": {"env": "A", "file": "b"}}}},
        "backends.x.pw: must be a secret reference with one of env or file, got both",
    ),
    pytest.param(
        {"backends": {"x": {"tls": {"pw": {"file": ""}}}}},
        "backends.x.tls.pw.file: must be the path of a file, got an empty string",
    ),
]


@pytest.mark.parametrize(("data", "message"), SECTION_MESSAGES)
def test_section_messages(data: dict[str, Any], message: str) -> None:
    error = refused(lambda: parse_config(data, source="x.toml"))
    assert str(error) == f"x.toml: {message}"
    assert f"{error.key}: {error.detail}" == message


def options(**values: Any) -> Options:
    return Options(values, source="x.toml", prefix="backends.corp")


OPTION_MESSAGES: list[Any] = [
    pytest.param(lambda: options(port=636).string("port"), "port: must be a string, got 636", id="string"),
    pytest.param(
        lambda: options(name="").string("name", allow_empty=False),
        "name: must be a non-empty string, got an empty string",
        id="string-empty",
    ),
    pytest.param(lambda: options(tls="yes").boolean("tls"), "tls: must be true or false, got a string", id="boolean"),
    pytest.param(lambda: options(tls=1).boolean("tls"), "tls: must be true or false, got 1", id="boolean-int"),
    pytest.param(lambda: options(port=2.5).integer("port"), "port: must be an integer, got 2.5", id="integer-float"),
    pytest.param(
        lambda: options(port=False).integer("port"),
        "port: must be an integer, got a boolean (false)",
        id="integer-bool",
    ),
    pytest.param(
        lambda: options(port=0).integer("port", minimum=1, maximum=9),
        "port: must be at least 1, got 0",
        id="integer-min",
    ),
    pytest.param(
        lambda: options(port=10).integer("port", minimum=1, maximum=9),
        "port: must be at most 9, got 10",
        id="integer-max",
    ),
    pytest.param(lambda: options(t=INF).number("t"), "t: must be a number, got inf", id="number-inf"),
    pytest.param(
        lambda: options(t=NAN).number("t", unit="seconds"), "t: must be a number of seconds, got nan", id="number-nan"
    ),
    pytest.param(lambda: options(t=True).number("t"), "t: must be a number, got a boolean (true)", id="number-bool"),
    pytest.param(
        lambda: options(t=0.001).number("t", minimum=0.01), "t: must be at least 0.01, got 0.001", id="number-min"
    ),
    pytest.param(lambda: options(t=0).number("t", above=0), "t: must be more than 0, got 0", id="number-above"),
    pytest.param(lambda: options(t=[1]).number("t"), "t: must be a number, got an array", id="number-array"),
    pytest.param(
        lambda: options(t=datetime.date(2026, 1, 1)).number("t"),
        "t: must be a number, got a date or time",
        id="number-date",
    ),
    pytest.param(lambda: options(t=None).number("t"), "t: must be a number, got nothing (None)", id="number-none"),
    pytest.param(lambda: options(m=3).choice("m", ("a", "b"), "a"), "m: must be one of a, b, got 3", id="choice-type"),
    pytest.param(lambda: options(m="c").choice("m", ("a", "b"), "a"), "m: must be one of a, b, got 'c'", id="choice"),
    pytest.param(lambda: options(g=3).strings("g"), "g: must be a string or an array of strings, got 3", id="strings"),
    pytest.param(lambda: options(g=["a", 1]).strings("g"), "g[1]: must be a string, got 1", id="strings-item"),
    pytest.param(
        lambda: options(g="a").strings("g", allow_single=False),
        "g: must be an array of strings, got a string",
        id="strings-single",
    ),
    pytest.param(
        lambda: options(g=[""]).strings("g", allow_empty=False),
        "g[0]: must be a non-empty string, got an empty string",
        id="strings-empty",
    ),
    pytest.param(
        lambda: options(g="").strings("g", allow_empty=False),
        "g: must be a non-empty string, got an empty string",
        id="strings-single-empty",
    ),
    pytest.param(
        lambda: options(pw="hunter2").secret("pw"),
        'pw: must be a secret reference ({env = "NAME"} or {file = "/path"}), got a string',
        id="secret-literal",
    ),
    pytest.param(
        lambda: options(pw=3).secret("pw"),
        'pw: must be a secret reference ({env = "NAME"} or {file = "/path"}), got 3',
        id="secret-int",
    ),
    pytest.param(
        lambda: options().secret("pw", required=True),
        'pw: is required: a secret reference ({env = "NAME"} or {file = "/path"})',
        id="secret-required",
    ),
    pytest.param(
        lambda: options(pw=SecretRef(env="X")).string("pw"),
        "pw: must be a string, got a secret reference",
        id="reference-not-a-string",
    ),
    pytest.param(
        lambda: options(pw=Secret("hunter2")).string("pw"),
        "pw: must be a string, got a secret",
        id="secret-not-a-string",
    ),
    pytest.param(lambda: options(tls="x").table("tls"), "tls: must be a table, got a string", id="table"),
    pytest.param(
        lambda: options(tls=SecretRef(file="/x")).table("tls"),
        "tls: must be a table, got a secret reference",
        id="table-reference",
    ),
    pytest.param(
        lambda: options(tls={"t": NAN}).table("tls").number("t"), "tls.t: must be a number, got nan", id="table-number"
    ),
    pytest.param(
        lambda: options(s={"a": 1}).tables("s"), "s: must be an array of tables ([[s]]), got a table", id="tables"
    ),
    pytest.param(lambda: options(s=[{}, "x"]).tables("s"), "s[1]: must be a table, got a string", id="tables-item"),
]


@pytest.mark.parametrize(("call", "message"), OPTION_MESSAGES)
def test_option_messages(call: Callable[[], object], message: str) -> None:
    error = refused(call)
    assert str(error) == f"x.toml: backends.corp.{message}"
    assert "hunter2" not in str(error)


def test_unknown_options_are_refused_in_order_and_at_depth() -> None:
    opts = options(verfy=True, tls={"verify": True, "ca": "x", "veriffy": "y"}, other=1)
    opts.boolean("verify")
    tls = opts.table("tls")
    tls.boolean("verify")
    tls.string("ca")
    assert str(refused(opts.check_unused)) == "x.toml: backends.corp.verfy: unknown option (did you mean verify?)"
    opts.raw("verfy")
    assert str(refused(opts.check_unused)) == "x.toml: backends.corp.tls.veriffy: unknown option (did you mean verify?)"
    tls.string("veriffy")
    assert str(refused(opts.check_unused)) == "x.toml: backends.corp.other: unknown option"


def test_secret_accepts_references_and_secrets_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NX_TEST_PW", "from-env")
    opts = options(a=SecretRef(env="NX_TEST_PW"), b={"env": "NX_TEST_PW"}, c=Secret("from-code"))
    assert [opts.secret(key).reveal() for key in "abc"] == ["from-env", "from-env", "from-code"]  # type: ignore[union-attr]
    assert opts.secret("absent") is None
    assert "from" not in repr(opts) and repr(opts) == "Options(backends.corp, keys=['a', 'b', 'c'])"


def test_backend_options_in_a_configuration_keep_their_secret_references() -> None:
    config = parse_config({"backends": {"x": {"pw": {"env": "A"}, "nested": [{"file": "/f"}], "kind": "ldap"}}})
    declared = config.backends["x"]
    assert (declared.kind, declared.timeout) == ("ldap", None)
    assert declared.options == {"pw": SecretRef(env="A"), "nested": [SecretRef(file="/f")]}


def test_defaults_of_numbers_keep_the_bounds_too() -> None:
    """A default out of its own bounds is the code's mistake: it fails closed,
    as both readers did; a default list is returned as given, as both did."""
    assert (
        str(refused(lambda: options().number("t", 5, minimum=10)))
        == "x.toml: backends.corp.t: must be at least 10, got 5"
    )
    assert refused(lambda: options().number("t", math.nan)).key == "backends.corp.t"
    assert refused(lambda: options().integer("n", 0, minimum=1)).key == "backends.corp.n"
    assert options().number("t", 5, minimum=1) == 5.0 and isinstance(options().number("t", 5), float)
    assert options().strings("g", ("",), allow_empty=False) == ("",)


def test_the_reader_is_cheap_to_import() -> None:
    """``nxauth authorized-keys`` imports the configuration on every sshd login."""
    code = (
        "import sys, nxauth.config\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pluggy', 'cryptography', 'difflib')"
        " or m.startswith('nxauth.keys') or m.startswith('nxauth.plugins'))\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
