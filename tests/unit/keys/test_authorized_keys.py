"""authorized_keys lines, options and quoting (sshd(8) AUTHORIZED_KEYS FILE FORMAT), and from= matching."""

from __future__ import annotations

import calendar
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from nxauth.errors import KeyFormatError
from nxauth.keys.authorized_keys import (
    AuthorizedKey,
    KeyOptions,
    format_options,
    parse_authorized_key,
    parse_authorized_keys,
    parse_expiry_time,
    read_authorized_keys,
)
from nxauth.keys.formats import parse_public_key
from nxauth.keys.patterns import match_from, match_source_address

KEY = (
    ed25519.Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    .decode()
)
KEY2 = (
    ed25519.Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    .decode()
)
ALL_RESTRICTIONS = frozenset({"no-pty", "no-port-forwarding", "no-agent-forwarding", "no-x11-forwarding", "no-user-rc"})
Z2030 = float(calendar.timegm((2030, 1, 2, 3, 4, 5, 0, 0, 0)))


def entry(options: str) -> AuthorizedKey:
    parsed = parse_authorized_key(f"{options} {KEY} a comment" if options else f"{KEY} a comment")
    assert parsed is not None
    return parsed


OPTION_CASES: list[Any] = [
    pytest.param("", {}, frozenset(), id="no-options"),
    pytest.param("restrict", {"restrict": True}, ALL_RESTRICTIONS, id="restrict"),
    pytest.param(
        "restrict,pty", {"restrict": True, "pty": True}, ALL_RESTRICTIONS - {"no-pty"}, id="restrict-then-pty"
    ),
    pytest.param("pty,restrict", {"restrict": True, "pty": False}, ALL_RESTRICTIONS, id="pty-then-restrict"),
    pytest.param(
        "restrict,port-forwarding,agent-forwarding,X11-forwarding,user-rc,pty",
        {"port_forwarding": True, "agent_forwarding": True, "x11_forwarding": True, "user_rc": True},
        frozenset(),
        id="restrict-all-undone",
    ),
    pytest.param("no-pty", {"no_pty": True}, {"no-pty"}, id="no-pty"),
    pytest.param("no-port-forwarding", {"no_port_forwarding": True}, {"no-port-forwarding"}, id="no-port-fwd"),
    pytest.param("no-agent-forwarding", {"no_agent_forwarding": True}, {"no-agent-forwarding"}, id="no-agent-fwd"),
    pytest.param("no-X11-forwarding", {"no_x11_forwarding": True}, {"no-x11-forwarding"}, id="no-x11"),
    pytest.param("no-user-rc", {"no_user_rc": True}, {"no-user-rc"}, id="no-user-rc"),
    pytest.param("no-pty,pty", {"no_pty": False, "pty": True}, frozenset(), id="last-flag-wins"),
    pytest.param("NO-PTY,Restrict", {"no_pty": True, "restrict": True}, ALL_RESTRICTIONS, id="case-insensitive"),
    pytest.param("cert-authority", {"cert_authority": True}, frozenset(), id="cert-authority"),
    pytest.param("no-touch-required", {"no_touch_required": True}, frozenset(), id="no-touch-required"),
    pytest.param("no-touch-required,touch-required", {"no_touch_required": False}, frozenset(), id="touch-required"),
    pytest.param("verify-required", {"verify_required": True}, frozenset(), id="verify-required"),
    pytest.param('command="/usr/bin/nxauth login"', {"command": "/usr/bin/nxauth login"}, frozenset(), id="command"),
    pytest.param('command="echo \\"hi\\""', {"command": 'echo "hi"'}, frozenset(), id="command-escaped-quote"),
    pytest.param('command="a\\b\\\\c"', {"command": "a\\b\\\\c"}, frozenset(), id="command-backslashes-kept"),
    pytest.param('command="a\\\\"b"', {"command": 'a\\"b'}, frozenset(), id="backslash-before-escaped-quote"),
    pytest.param('command=""', {"command": ""}, frozenset(), id="command-empty"),
    pytest.param('COMMAND="x"', {"command": "x"}, frozenset(), id="command-uppercase"),
    pytest.param('from="10.0.0.0/8,!10.1.*"', {"from_patterns": ("10.0.0.0/8", "!10.1.*")}, frozenset(), id="from"),
    pytest.param('principals="nx,ops"', {"principals": ("nx", "ops")}, frozenset(), id="principals"),
    pytest.param('expiry-time="20300102030405Z"', {"expiry_time": Z2030}, frozenset(), id="expiry-time"),
    pytest.param(
        'expiry-time="20300102030405Z",expiry-time="20250101Z"',
        {"expiry_time": float(calendar.timegm((2025, 1, 1, 0, 0, 0, 0, 0, 0)))},
        frozenset(),
        id="expiry-earliest-wins",
    ),
    pytest.param(
        'environment="A=1",environment="B_2=x y"', {"environment": ("A=1", "B_2=x y")}, frozenset(), id="environment"
    ),
    pytest.param(
        'permitopen="localhost:4000",permitopen="[::1]:22",permitopen="h:*"',
        {"permitopen": ("localhost:4000", "[::1]:22", "h:*")},
        frozenset(),
        id="permitopen",
    ),
    pytest.param(
        'permitlisten="8080",permitlisten="localhost:*"',
        {"permitlisten": ("8080", "localhost:*")},
        frozenset(),
        id="permitlisten",
    ),
    pytest.param('tunnel="0"', {"tunnel": "0"}, frozenset(), id="tunnel"),
    pytest.param('tunnel="any"', {"tunnel": "any"}, frozenset(), id="tunnel-any"),
    pytest.param(
        ",restrict,,no-pty,", {"restrict": True, "no_pty": True}, ALL_RESTRICTIONS, id="empty-entries-as-sshd"
    ),
]


@pytest.mark.parametrize(("options", "fields", "restrictions"), OPTION_CASES)
def test_options(options: str, fields: dict[str, Any], restrictions: frozenset[str]) -> None:
    parsed = entry(options)
    for name, value in fields.items():
        assert getattr(parsed.options, name) == value, name
    assert parsed.options.restrictions == frozenset(restrictions)
    assert parsed.key.comment == "a comment"
    again = parse_authorized_key(parsed.to_line())
    assert again is not None
    assert again.options.restrictions == parsed.options.restrictions
    assert again.options.as_mapping() == parsed.options.as_mapping()
    assert again.key == parsed.key


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param("foo " + KEY, "unknown key option .foo.", id="unknown-option"),
        pytest.param("no-restrict " + KEY, "unknown key option", id="restrict-not-negatable"),
        pytest.param("ptyx " + KEY, "unknown key option", id="option-prefix"),
        pytest.param("restrict=yes " + KEY, "unknown key option", id="flag-with-value"),
        pytest.param("command=ls " + KEY, "missing start quote", id="unquoted-value"),
        pytest.param('command="ls ' + KEY, "missing end quote", id="missing-end-quote"),
        pytest.param('command="ls"x ' + KEY, "unknown key option", id="garbage-after-value"),
        pytest.param('command="a\\" ' + KEY, "missing end quote", id="trailing-backslash-escapes-quote"),
        pytest.param('command="a",command="b" ' + KEY, 'multiple "command"', id="two-commands"),
        pytest.param('from="a",from="b" ' + KEY, 'multiple "from"', id="two-froms"),
        pytest.param('principals="a",principals="b" ' + KEY, 'multiple "principals"', id="two-principals"),
        pytest.param('environment="NOEQUALS" ' + KEY, "environment", id="env-no-equals"),
        pytest.param('environment="A-B=1" ' + KEY, "environment", id="env-bad-name"),
        pytest.param('environment="=1" ' + KEY, "environment", id="env-empty-name"),
        pytest.param('permitopen="host" ' + KEY, "permission", id="permitopen-no-port"),
        pytest.param('permitopen="host:0" ' + KEY, "permission", id="permitopen-port-0"),
        pytest.param('permitopen="host:65536" ' + KEY, "permission", id="permitopen-port-big"),
        pytest.param('permitopen="[::1:22" ' + KEY, "permission", id="permitopen-bad-bracket"),
        pytest.param('permitlisten="x" ' + KEY, "permission", id="permitlisten-bad-port"),
        pytest.param('tunnel="tun0" ' + KEY, "tun device", id="tunnel-bad"),
        pytest.param('expiry-time="2030" ' + KEY, "expiry-time", id="expiry-bad"),
        pytest.param("restrict", "options but no key", id="options-no-key"),
        pytest.param("restrict ", "options but no key", id="options-space-no-key"),
        pytest.param("ssh-ed25519", "key data missing", id="type-only"),
        pytest.param("ssh-ed25519 %%%%", "base64", id="bad-base64"),
        pytest.param(KEY.replace("ssh-ed25519", "ssh-rsa"), "does not match", id="type-mismatch"),
        pytest.param("ssh-foo AAAA", "unsupported key type", id="unsupported-type"),
        pytest.param("restrict ssh-foo AAAA", "unsupported key type", id="unsupported-type-after-options"),
        pytest.param(KEY + "\0 comment", "NUL", id="nul-byte"),
        pytest.param("restrict\0 " + KEY, "NUL", id="nul-in-options"),
        pytest.param("restrict,\n" + KEY, "newline", id="embedded-newline"),
        pytest.param("restrict," + "x" * (1024 * 1024) + " " + KEY, "longer than", id="1MB-line"),
        pytest.param("1024 35 1234567 rsa1-style", "unknown", id="rsa1-format"),
    ],
)
def test_bad_lines(line: str, message: str) -> None:
    with pytest.raises(KeyFormatError, match=message) as info:
        parse_authorized_key(line, lineno=17)
    assert info.value.lineno == 17
    assert str(info.value).startswith("line 17: ")


@pytest.mark.parametrize("line", ["", "   ", "\t", "# a comment", "   # indented comment", "\r\n", "#" + KEY])
def test_blank_and_comment_lines(line: str) -> None:
    assert parse_authorized_key(line) is None


def test_leading_whitespace_crlf_and_quoted_spaces() -> None:
    parsed = parse_authorized_key(f'  \tcommand="a b  c",no-pty  {KEY}   trailing  comment \r\n', 3)
    assert parsed is not None
    assert parsed.options.command == "a b  c"
    assert parsed.key.comment == "trailing  comment"
    assert parsed.lineno == 3


def test_long_lines_within_the_limit_parse() -> None:
    parsed = parse_authorized_key(f'command="{"x" * 100_000}" {KEY} {"c" * 20_000}')
    assert parsed is not None and len(parsed.options.command or "") == 100_000


def test_a_key_type_inside_a_quoted_value_is_not_the_key() -> None:
    parsed = parse_authorized_key(f'command="{KEY}" {KEY2}')
    assert parsed is not None
    assert parsed.key == parse_public_key(KEY2)
    assert parsed.options.command == KEY


def test_parse_authorized_keys_collects_errors_with_line_numbers() -> None:
    text = "\n".join(
        [
            "# header",
            KEY + " first",
            "bogus-option " + KEY,
            "",
            'from="10.0.0.0/8" ' + KEY2,
            'command="unterminated ' + KEY,
            "ssh-ed25519 AAAA",
        ]
    )
    entries, errors = parse_authorized_keys(text)
    assert [e.lineno for e in entries] == [2, 5]
    assert [e.lineno for e in errors] == [3, 6, 7]
    assert entries[1].options.from_patterns == ("10.0.0.0/8",)


def test_read_authorized_keys(tmp_path: Path) -> None:
    path = tmp_path / "authorized_keys"
    path.write_bytes(f"{KEY}\nrestrict {KEY2} caf\xc3\xa9\nno-pty \xff\xfe {KEY}\n".encode("latin-1"))
    entries, errors = read_authorized_keys(path)
    assert [e.lineno for e in entries] == [1, 2]
    assert entries[1].key.comment == "café"
    assert [(e.lineno, e.detail) for e in errors] == [(3, "line is not UTF-8")]
    with pytest.raises(OSError):
        read_authorized_keys(tmp_path / "missing")


def test_parsers_refuse_non_strings() -> None:
    with pytest.raises(KeyFormatError):
        parse_authorized_key(b"ssh-ed25519 AAAA")  # type: ignore[arg-type]
    with pytest.raises(KeyFormatError):
        parse_authorized_keys(None)  # type: ignore[arg-type]


def test_format_options_quoting() -> None:
    options = KeyOptions(restrict=True, pty=True, command='say "hi" \\"there\\"', from_patterns=("10.0.0.1", "!*"))
    text = format_options(options)
    assert text == 'restrict,pty,command="say \\"hi\\" \\\\"there\\\\"",from="10.0.0.1,!*"'
    parsed = parse_authorized_key(f"{text} {KEY}")
    assert parsed is not None and parsed.options == options
    assert format_options(KeyOptions()) == ""
    assert AuthorizedKey(parse_public_key(KEY)).to_line() == KEY


@pytest.mark.parametrize("value", ["ends with backslash\\", "new\nline", "nul\0"])
def test_format_options_refuses_unwritable_values(value: str) -> None:
    with pytest.raises(KeyFormatError):
        format_options(KeyOptions(command=value))


def test_as_mapping() -> None:
    mapping = entry('restrict,pty,command="x",from="1.2.3.4",environment="A=1",tunnel="3"').options.as_mapping()
    assert mapping == {
        "restrict": True,
        "pty": True,
        "command": "x",
        "from": ["1.2.3.4"],
        "environment": ["A=1"],
        "tunnel": "3",
    }
    assert KeyOptions().as_mapping() == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("20300102Z", calendar.timegm((2030, 1, 2, 0, 0, 0, 0, 0, 0)), id="date-utc"),
        pytest.param("203001020304Z", calendar.timegm((2030, 1, 2, 3, 4, 0, 0, 0, 0)), id="minutes-utc"),
        pytest.param("20300102030405z", Z2030, id="lowercase-z"),
        pytest.param("20300102030405UTC", Z2030, id="utc-suffix"),
        pytest.param("20300102030405", time.mktime((2030, 1, 2, 3, 4, 5, 0, 0, 0)), id="local-time"),
        pytest.param("20300702", time.mktime((2030, 7, 2, 0, 0, 0, 0, 0, 0)), id="local-summer-isdst-0"),
    ],
)
def test_expiry_time(text: str, expected: float) -> None:
    assert parse_expiry_time(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2030",
        "203001021",
        "2030-01-02",
        "20301302",
        "20300100",
        "20300102250000",
        "19690101Z",
        "Z",
        "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17",  # fullwidth digits,
    ],
)
def test_expiry_time_invalid(text: str) -> None:
    with pytest.raises(KeyFormatError):
        parse_expiry_time(text)


FROM_CASES = [
    pytest.param(["198.51.100.7"], "198.51.100.7", True, id="exact"),
    pytest.param(["198.51.100.8"], "198.51.100.7", False, id="other-ip"),
    pytest.param(["198.51.100.*"], "198.51.100.7", True, id="glob"),
    pytest.param(["198.51.100.?"], "198.51.100.7", True, id="glob-question"),
    pytest.param(["198.51.100.??"], "198.51.100.7", False, id="glob-question-length"),
    pytest.param(["*"], "2001:db8::1", True, id="star"),
    pytest.param(["198.51.100.0/24"], "198.51.100.7", True, id="cidr"),
    pytest.param(["198.51.101.0/24"], "198.51.100.7", False, id="cidr-other"),
    pytest.param(["0.0.0.0/0"], "198.51.100.7", True, id="cidr-all"),
    pytest.param(["10.0.0.0/8,198.51.100.7"], "198.51.100.7", True, id="comma-list"),
    pytest.param(["10.0.0.0/8", "198.51.100.7"], "198.51.100.7", True, id="sequence"),
    pytest.param(["*,!198.51.100.7"], "198.51.100.7", False, id="negated-denies-outright"),
    pytest.param(["!198.51.100.7,*"], "198.51.100.7", False, id="negation-order-irrelevant"),
    pytest.param(["!198.51.100.0/24,*"], "198.51.100.7", False, id="negated-cidr"),
    pytest.param(["!10.0.0.0/8,*"], "198.51.100.7", True, id="negated-non-match"),
    pytest.param(["!10.0.0.0/8"], "198.51.100.7", False, id="only-negations"),
    pytest.param(["198.51.100.7/24"], "198.51.100.7", False, id="inconsistent-mask-denies"),
    pytest.param(["*,10.0.0.0/33"], "198.51.100.7", False, id="mask-too-long-denies"),
    pytest.param(["*,,10.0.0.1"], "198.51.100.7", False, id="empty-entry-denies"),
    pytest.param(["*,!"], "198.51.100.7", False, id="bare-negation-denies"),
    pytest.param([""], "198.51.100.7", False, id="empty"),
    pytest.param([], "198.51.100.7", False, id="no-patterns"),
    pytest.param(["*.example.com"], "198.51.100.7", False, id="hostname-pattern"),
    pytest.param(["2001:db8::/32"], "2001:db8::1", True, id="ipv6-cidr"),
    pytest.param(["2001:DB8::*"], "2001:db8::1", True, id="ipv6-uppercase-glob"),
    pytest.param(["!2001:DB8::*,*"], "2001:db8::1", False, id="ipv6-uppercase-negation"),
    pytest.param(["198.51.100.7"], "::ffff:198.51.100.7", True, id="v4-mapped-host"),
    pytest.param(["127.1"], "127.0.0.1", True, id="inet-aton-short"),
    pytest.param(["010.0.0.1"], "8.0.0.1", True, id="inet-aton-octal"),
    pytest.param(["0x7f.1"], "127.0.0.1", True, id="inet-aton-hex"),
    pytest.param(["*,!127.1"], "127.0.0.1", False, id="inet-aton-negated"),
    pytest.param(["10.0.0.0/ 8"], "10.1.2.3", True, id="masklen-strtoul-space"),
    pytest.param(["*"], "not-an-ip", False, id="host-not-ip"),
    pytest.param(["*"], "", False, id="host-empty"),
]


@pytest.mark.parametrize(("patterns", "host", "expected"), FROM_CASES)
def test_match_from(patterns: list[str], host: str, expected: bool) -> None:
    assert match_from(patterns, host) is expected


def test_match_from_refuses_a_bare_string() -> None:
    assert not match_from("*", "198.51.100.7")


@pytest.mark.parametrize(
    ("allowed", "host", "expected"),
    [
        pytest.param("198.51.100.0/24", "198.51.100.7", 1, id="match"),
        pytest.param("10.0.0.0/8,198.51.100.7", "198.51.100.7", 1, id="list"),
        pytest.param("10.0.0.0/8", "198.51.100.7", 0, id="no-match"),
        pytest.param("2001:db8::/32", "2001:db8::5", 1, id="ipv6"),
        pytest.param("198.51.100.*", "198.51.100.7", -1, id="no-wildcards"),
        pytest.param("!10.0.0.0/8", "198.51.100.7", -1, id="no-negation"),
        pytest.param("10.0.0.1/8", "10.0.0.1", -1, id="inconsistent"),
        pytest.param("", "10.0.0.1", -1, id="empty"),
        pytest.param("10.0.0.0/8,", "10.0.0.1", -1, id="empty-entry"),
        pytest.param("bad,10.0.0.0/8", "10.0.0.1", -1, id="invalid-then-match"),
        pytest.param("10.0.0.0/8", "nonsense", 0, id="host-not-ip"),
    ],
)
def test_match_source_address(allowed: str, host: str, expected: int) -> None:
    assert match_source_address(allowed, host) == expected
