"""The ldap backend's pure parts, without a server: escaping, DN templates,
filters (checked against ldap3's own encoder), wire decoding, the ppolicy
control, Active Directory sub-codes and account state, and the options."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nxauth
from nxauth import ConfigError, Reason, Secret
from nxauth.backends.ldap import ad, build_ldap_backend, wire
from nxauth.backends.ldap import filter as filters
from nxauth.backends.ldap.connection import make_ssl_context, parse_uri
from nxauth.backends.ldap.escape import (
    DnTemplate,
    check_ad_logon_name,
    escape_filter_value,
    escape_rdn_value,
    first_rdn,
    normalize_dn,
    parse_dn,
)
from nxauth.config import BackendConfig, Config, SecretRef
from nxauth.plugins.registry import BackendContext
from nxauth.testing import make_attempt

ldap3 = pytest.importorskip("ldap3")


def ldap3_encoding(text: str) -> bytes:
    """How ldap3 (parser and pyasn1 encoder) encodes a filter: the oracle."""
    from ldap3.operation.search import compile_filter, parse_filter
    from pyasn1.codec.ber import encoder

    tree = parse_filter(text, None, False, False, None, False)
    return bytes(encoder.encode(compile_filter(tree.elements[0])))


def context(options: dict[str, Any], name: str = "corp") -> BackendContext:
    return BackendContext(BackendConfig(name, "ldap", options), root=Config(), store=lambda: None)  # type: ignore[arg-type,return-value]


def build(options: dict[str, Any]) -> Any:
    ctx = context(options)
    backend = build_ldap_backend(ctx)
    ctx.options.check_unused()
    return backend


BASE = {"uri": "ldaps://ldap.example.org", "user_dn": "uid={username},ou=people,dc=example,dc=org"}


# ------------------------------------------------------------ escaping


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("alice", "alice"),
        ("smith, j", "smith\\, j"),
        ("x+y=z", "x\\+y\\=z"),
        ('a"b;c<d>e\\f', 'a\\"b\\;c\\<d\\>e\\\\f'),
        ("#hash", "\\#hash"),
        (" lead", "\\ lead"),
        ("trail ", "trail\\ "),
        ("nul\x00byte", "nul\\00byte"),
        ("bell\x07", "bell\\07"),
        ("zoë", "zoë"),
        ("mid#dle", "mid#dle"),
    ],
    ids=[
        "plain",
        "comma",
        "plus-equals",
        "specials",
        "leading-hash",
        "leading-space",
        "trailing-space",
        "nul",
        "control",
        "unicode",
        "inner-hash",
    ],
)
def test_escape_rdn_value(value: str, escaped: str) -> None:
    assert escape_rdn_value(value) == escaped
    # what was escaped parses back to exactly the value, as one RDN
    assert parse_dn(f"uid={escaped},dc=x") == [[("uid", value)], [("dc", "x")]]


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("alice", "alice"),
        ("*", "\\2a"),
        (")(uid=*", "\\29\\28uid=\\2a"),
        ("a\\b", "a\\5cb"),
        ("\x00", "\\00"),
        (b"\xff", "\\ff"),
    ],
    ids=["plain", "star", "injection", "backslash", "nul", "non-utf8"],
)
def test_escape_filter_value(value: str | bytes, escaped: str) -> None:
    assert escape_filter_value(value) == escaped


def test_ldap3_escape_rdn_writes_a_raw_nul_which_is_why_it_is_not_used() -> None:
    from ldap3.utils.dn import escape_rdn

    assert "\x00" in escape_rdn("a\x00b")
    assert "\x00" not in escape_rdn_value("a\x00b")


def test_dn_template_fills_an_escaped_value() -> None:
    template = DnTemplate("uid={username},ou=people,dc=example,dc=org")
    assert template.fill("alice") == "uid=alice,ou=people,dc=example,dc=org"
    assert template.fill("alice,ou=admins") == "uid=alice\\,ou\\=admins,ou=people,dc=example,dc=org"
    assert parse_dn(template.fill("a,b+c"))[0] == [("uid", "a,b+c")]


@pytest.mark.parametrize(
    "text",
    [
        "uid=alice,ou=people",
        "uid={username},cn={username}",
        "uid=x{username},ou=people",
        "uid={username}x,ou=people",
        "uid={user},ou=people",
        "{username}",
        "uid={username},ou=people,bad",
    ],
    ids=["no-placeholder", "twice", "prefix", "suffix", "other-placeholder", "bare", "not-a-dn"],
)
def test_dn_template_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        DnTemplate(text)


def test_normalize_dn_and_first_rdn() -> None:
    assert normalize_dn("CN=Admins , OU=Groups,DC=Example,DC=org") == normalize_dn(
        "cn=admins,ou=groups,dc=example,dc=org"
    )
    assert normalize_dn("cn=a\\2cb,dc=x") == normalize_dn("cn=a\\,b,dc=x")
    assert normalize_dn("cn=a,dc=x") != normalize_dn("cn=a\\,dc=x")
    assert first_rdn("cn=Admins,ou=groups") == ("cn", "Admins")
    assert first_rdn("cn=a+sn=b,ou=x") is None


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("jdoe", True),
        ("j.doe-2", True),
        ("jdoe@corp", False),
        ("CORP\\jdoe", False),
        ("a*", False),
        ("a\x00", False),
        ("", False),
    ],
)
def test_ad_logon_names(name: str, ok: bool) -> None:
    assert (check_ad_logon_name(name) is None) is ok


# ------------------------------------------------------------ filters


FILTERS = [
    "(uid=alice)",
    "(&(objectClass=person)(|(uid=a*b*c)(cn~=x))(!(x>=5)))",
    "(cn=*)",
    "(cn=*a*)",
    "(cn=a*)",
    "(cn=*a)",
    "(cn<=b)",
    "(member:1.2.840.113556.1.4.1941:=cn=x,dc=y)",
    "(uid=\\2a\\28\\00)",
    "(cn=zoë)",
    "(&(objectClass=user)(|(sAMAccountName=x)(userPrincipalName=x)))",
]


@pytest.mark.parametrize("text", FILTERS)
def test_filters_encode_as_ldap3_does(text: str) -> None:
    assert filters.parse_filter(text).encode() == ldap3_encoding(text)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_a_value_in_a_slot_is_the_escaped_value_as_ldap3_sees_it(value: str) -> None:
    """Putting the raw value into the compiled template gives the very bytes
    ldap3 sends for the template with the value escaped: no value can
    change the filter's structure."""
    template = "(&(objectClass=person)(|(uid={username})(mail={username}@example.org)))"
    compiled = filters.parse_filter(template, ["username"])
    raw = value.encode("utf-8")  # hypothesis text has no lone surrogates
    escaped = template.replace("{username}", escape_filter_value(value))
    assert compiled.encode({"username": raw}) == ldap3_encoding(escaped)


@pytest.mark.parametrize(
    "text",
    [
        "uid=x",
        "(uid=x",
        "(uid=x))",
        "(&)",
        "(uid=a(b)",
        "(uid=\\zz)",
        "({username}=x)",
        "(uid={other})",
        "(cn=**)",
        "(=x)",
        "(uid~x)",
    ],
)
def test_bad_filters_are_refused(text: str) -> None:
    with pytest.raises(filters.FilterError):
        filters.parse_filter(text, ["username"])


def test_filter_slots() -> None:
    compiled = filters.parse_filter("(uid={username})", ["username"])
    assert compiled.slots == frozenset({"username"})
    with pytest.raises(KeyError):
        compiled.encode()


# ------------------------------------------------------------ wire


def test_requests_decode_with_ldap3() -> None:
    from ldap3.protocol.rfc4511 import LDAPMessage
    from pyasn1.codec.ber import decoder

    request = wire.bind_request(7, b"uid=a,dc=x", "pässword".encode(), [(wire.PPOLICY_OID, False, None)])
    message, rest = decoder.decode(request, asn1Spec=LDAPMessage())
    assert not rest
    assert int(message["messageID"]) == 7
    bind = message["protocolOp"]["bindRequest"]
    assert bytes(bind["name"]) == b"uid=a,dc=x"
    assert bytes(bind["authentication"]["simple"]) == "pässword".encode()  # no SASLprep
    assert str(message["controls"][0]["controlType"]) == wire.PPOLICY_OID
    search = wire.search_request(
        8, b"dc=x", 2, filters.parse_filter("(uid=a)").encode(), ["cn", "memberOf"], size_limit=2
    )
    message, rest = decoder.decode(search, asn1Spec=LDAPMessage())
    assert not rest
    assert int(message["protocolOp"]["searchRequest"]["sizeLimit"]) == 2


def tlv(tag: int, content: bytes) -> bytes:
    """Test-side BER (definite short or long form), independent of the module."""
    n = len(content)
    length = (
        bytes([n])
        if n < 0x80
        else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    )
    return bytes([tag]) + length + content


def test_responses_decode() -> None:
    dn = b"uid=alice,ou=people,dc=example,dc=org"
    attribute = tlv(0x30, tlv(0x04, b"mail") + tlv(0x31, tlv(0x04, b"a@e.example") + tlv(0x04, b"b" * 200)))
    entry = tlv(0x30, tlv(0x02, b"\x02") + tlv(0x64, tlv(0x04, dn) + tlv(0x30, attribute)))
    assert wire.message_length(entry) == len(entry)
    decoded = wire.decode_entry(wire.decode_message(entry))
    assert decoded.dn == dn.decode()
    assert decoded.text("MAIL") == ("a@e.example", "b" * 200)
    control = b"0\x03\x81\x01\x01"
    controls = tlv(0xA0, tlv(0x30, tlv(0x04, wire.PPOLICY_OID.encode()) + tlv(0x04, control)))
    result = tlv(0x61, tlv(0x0A, b"\x31") + tlv(0x04, b"") + tlv(0x04, b"bad"))
    bind = tlv(0x30, tlv(0x02, b"\x05") + result + controls)
    decoded_result = wire.decode_result(wire.decode_message(bind))
    assert (decoded_result.code, decoded_result.message) == (49, "bad")
    assert decoded_result.controls[wire.PPOLICY_OID] == control
    assert wire.parse_ppolicy(control).error == "accountLocked"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"0\x03\x81\x01\x00", wire.PasswordPolicy("passwordExpired")),
        (b"0\x03\x81\x01\x02", wire.PasswordPolicy("changeAfterReset")),
        (b"0\x00", wire.PasswordPolicy()),
        (b"0\x05\xa0\x03\x80\x01\x3c", wire.PasswordPolicy(expires_in=60)),
        (b"0\x05\xa0\x03\x81\x01\x02", wire.PasswordPolicy(grace_left=2)),
    ],
    ids=["expired", "reset", "empty", "expires-in", "grace"],
)
def test_ppolicy_control(value: bytes, expected: wire.PasswordPolicy) -> None:
    assert wire.parse_ppolicy(value) == expected


@pytest.mark.parametrize("data", [b"\x04\x00", b"\x30\x85\x00\x00\x00\x00\x01", b"\x30\x84\x7f\xff\xff\xff"])
def test_garbage_is_a_wire_error(data: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.message_length(data)


def test_truncated_messages_wait_for_more() -> None:
    assert wire.message_length(b"\x30") is None
    assert wire.message_length(b"\x30\x82\x01") is None
    assert wire.message_length(b"\x30\x82\x01\x00") == 260
    with pytest.raises(wire.WireError):
        wire.decode_message(b"\x30\x05\x02\x01\x01\x61")


# ------------------------------------------------------------ Active Directory

AD_MESSAGE = "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data {}, v4563\x00"


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("525", Reason.UNKNOWN_USER),
        ("52e", Reason.BAD_PASSWORD),
        ("530", Reason.RESTRICTED),
        ("531", Reason.RESTRICTED),
        ("532", Reason.PASSWORD_EXPIRED),
        ("533", Reason.DISABLED),
        ("701", Reason.ACCOUNT_EXPIRED),
        ("773", Reason.PASSWORD_EXPIRED),
        ("775", Reason.ACCOUNT_LOCKED),
        ("52E", Reason.BAD_PASSWORD),
        ("999", Reason.BAD_PASSWORD),
    ],
)
def test_ad_subcodes(code: str, reason: Reason) -> None:
    found, detail = ad.subcode_reason(AD_MESSAGE.format(code))
    assert found is reason
    # a known sub-code is named; an unknown one is not echoed (it came from the server's text)
    assert detail == (f"ad-data={code.lower()}" if code.lower() in ad.SUBCODES else "ad-data-unknown")


def test_ad_message_without_subcode() -> None:
    assert ad.subcode_reason("invalid credentials") == (Reason.BAD_PASSWORD, "invalid-credentials")
    assert ad.parse_subcode("metadata 775") is None


def _ad_entry(**values: str) -> wire.Entry:
    return wire.Entry("cn=x", {k.lower(): (v.encode(),) for k, v in values.items()})


NOW = 1_750_000_000.0


def _filetime(unix: float) -> str:
    return str(int((unix + 11644473600) * 10_000_000))


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"userAccountControl": "512", "accountExpires": "0", "pwdLastSet": _filetime(NOW - 86400)}, None),
        ({"userAccountControl": "514"}, Reason.DISABLED),
        ({"userAccountControl": "528"}, Reason.ACCOUNT_LOCKED),
        ({"userAccountControl": str(512 | 0x800000)}, Reason.PASSWORD_EXPIRED),
        ({"accountExpires": _filetime(NOW - 1)}, Reason.ACCOUNT_EXPIRED),
        ({"accountExpires": _filetime(NOW + 3600)}, None),
        ({"accountExpires": "9223372036854775807"}, None),
        ({"pwdLastSet": "0"}, Reason.PASSWORD_EXPIRED),
        ({"userAccountControl": "garbage"}, None),
    ],
    ids=[
        "normal",
        "disabled",
        "locked",
        "pw-expired-flag",
        "expired",
        "expires-later",
        "never",
        "must-change",
        "garbage",
    ],
)
def test_ad_account_state(values: dict[str, str], reason: Reason | None) -> None:
    state = ad.account_state(_ad_entry(**values), lambda: NOW)
    assert (state[0] if state else None) is reason


# ------------------------------------------------------------ options


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"user_dn": BASE["user_dn"]}, "uri"),
        ({**BASE, "uri": "http://x"}, "uri[0]"),
        ({**BASE, "uri": ["ldaps://a", "ldaps://a"]}, "uri"),
        ({**BASE, "user_dn": "uid=alice,dc=x"}, "user_dn"),
        ({"uri": "ldaps://x"}, "user_base"),
        ({**BASE, "upn_suffix": "corp.example.org"}, "upn_suffix"),
        ({**BASE, "implementation": "activedirectory", "upn_suffix": "corp.example.org"}, "upn_suffix"),
        ({**BASE, "implementation": "novell"}, "implementation"),
        ({**BASE, "bind_dn": "cn=svc,dc=x"}, "bind_password"),
        ({**BASE, "bind_dn": "cn=svc,dc=x", "bind_password": "literal"}, "bind_password"),
        ({**BASE, "bind_password": Secret("x")}, "bind_dn"),
        ({**BASE, "bind_dn": "cn=svc,dc=x", "bind_password": Secret("")}, "bind_password"),
        ({**BASE, "require_groups": ["admins"]}, "require_groups"),
        ({**BASE, "group_membership": ["member"]}, "group_base"),
        ({**BASE, "group_membership": ["owner"]}, "group_membership[0]"),
        ({"uri": "ldaps://x", "user_base": "dc=x", "user_filter": "(uid=x)"}, "user_filter"),
        ({"uri": "ldaps://x", "user_base": "dc=x", "user_filter": "(uid={username}"}, "user_filter"),
        ({**BASE, "ca_file": "/nonexistent/ca.pem"}, "ca_file"),
        ({**BASE, "client_key": "/etc/hostname"}, "client_key"),
        ({**BASE, "operation_timeout": 0}, "operation_timeout"),
        ({**BASE, "user_scpoe": "one"}, "user_scpoe"),
        ({**BASE, "attributes": ["mail", "bad name"]}, "attributes"),
        ({**BASE, "deny_groups": ["cn=x,,"], "group_base": "dc=x"}, "deny_groups"),
    ],
    ids=[
        "no-uri",
        "bad-scheme",
        "duplicate-server",
        "template-without-placeholder",
        "no-way-to-find-users",
        "upn-needs-ad",
        "two-modes",
        "unknown-implementation",
        "bind-dn-without-password",
        "literal-password",
        "password-without-dn",
        "empty-service-password",
        "require-without-group-source",
        "member-without-group-base",
        "unknown-membership",
        "filter-without-placeholder",
        "unbalanced-filter",
        "missing-ca-file",
        "key-without-cert",
        "zero-timeout",
        "misspelled-option",
        "bad-attribute",
        "bad-group-dn",
    ],
)
def test_config_errors_name_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(options)
    assert info.value.key == f"backends.corp.{key}"


def test_secret_reference_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NXAUTH_TEST_LDAP_PW", "s3")
    backend = build({**BASE, "bind_dn": "cn=svc,dc=x", "bind_password": SecretRef(env="NXAUTH_TEST_LDAP_PW")})
    assert backend.settings.bind_password == Secret("s3")
    assert "s3" not in repr(backend)


def test_tls_context_is_strict() -> None:
    context = make_ssl_context()
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(
    ("uri", "insecure", "expected"),
    [
        ("ldaps://ldap.example.org", False, ("ldap.example.org", 636, "ldaps")),
        ("ldap://ldap.example.org", False, ("ldap.example.org", 389, "starttls")),
        ("ldap://ldap.example.org:1389/", True, ("ldap.example.org", 1389, "none")),
        ("ldaps://[::1]:6636", False, ("::1", 6636, "ldaps")),
    ],
)
def test_parse_uri(uri: str, insecure: bool, expected: tuple[str, int, str]) -> None:
    spec = parse_uri(uri, insecure=insecure)
    assert (spec.host, spec.port, spec.tls) == expected


@pytest.mark.parametrize("uri", ["ldapi:///run/slapd", "ldap://", "ldap://h/dc=x", "ldap://u:p@h", "ldap://h:99999"])
def test_parse_uri_refuses(uri: str) -> None:
    with pytest.raises(ValueError):
        parse_uri(uri, insecure=False)


def test_ldap_is_a_builtin_kind(tmp_path: Path) -> None:
    auth = nxauth.Authenticator({"state_dir": str(tmp_path)}, entry_points=False)
    try:
        assert auth.describe()["backend_kinds"]["ldap"] == "nxauth.backends.ldap"
    finally:
        auth.close()


@pytest.mark.parametrize("password", ["", " ", "\t \n", "pass\x00word"], ids=["empty", "space", "whitespace", "nul"])
def test_bad_passwords_are_refused_before_any_traffic(password: str) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0.2)
        port = listener.getsockname()[1]
        backend = build({**BASE, "uri": f"ldap://127.0.0.1:{port}", "insecure": True})
        verdict = backend.authenticate(make_attempt("alice", password))
        assert verdict.reason in (Reason.EMPTY_PASSWORD, Reason.INVALID_PASSWORD)
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody connected
        backend.close()


@pytest.mark.parametrize("username", ["alice\x00", "al\nice", "\x7f"], ids=["nul", "newline", "del"])
def test_control_characters_in_usernames_are_refused_before_any_traffic(username: str) -> None:
    backend = build({**BASE, "uri": "ldap://127.0.0.1:9", "insecure": True})
    assert backend.authenticate(make_attempt(username, "pw")).reason is Reason.INVALID_USERNAME
    backend.close()
