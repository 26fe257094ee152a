"""The Active Directory preset against a fake domain controller that speaks
LDAP on a real socket and answers failed binds exactly as AD does
(``80090308: LdapErr: DSID-..., comment: AcceptSecurityContext error, data
775, v4563``).  Requests are decoded by a small BER reader of its own
(independent of nxauth's codec; pyasn1 cannot decode ldap3's nested filter
definitions) and recorded, so the tests also see the bind names and the
transitive-membership filter that were sent."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nxauth
from nxauth import AuthenticationFailed, Decision, Reason, Verdict
from nxauth.testing import RecordingSink, make_attempt, make_identity
from tests.support.keys import ListKeySource, TransportKey
from tests.support.ldap import build_backend

pytest.importorskip("ldap3")

DOMAIN = "corp.example.com"
BASE = "DC=corp,DC=example,DC=com"
USERS = f"OU=Staff,{BASE}"
GROUPS_BASE = f"OU=Groups,{BASE}"
PASSWORD = "Correct-Horse-1"
AD_ERROR = "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data {}, v4563\x00"
SUBCODES = ["525", "52e", "530", "531", "532", "533", "701", "773", "775"]
EXPECTED = {
    "525": Reason.UNKNOWN_USER,
    "52e": Reason.BAD_PASSWORD,
    "530": Reason.RESTRICTED,
    "531": Reason.RESTRICTED,
    "532": Reason.PASSWORD_EXPIRED,
    "533": Reason.DISABLED,
    "701": Reason.ACCOUNT_EXPIRED,
    "773": Reason.PASSWORD_EXPIRED,
    "775": Reason.ACCOUNT_LOCKED,
}


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + content


def integer(value: int, tag: int = 0x02) -> bytes:
    return tlv(tag, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def message(msgid: int, op: bytes) -> bytes:
    return tlv(0x30, integer(msgid) + op)


def ldap_result(tag: int, code: int, text: str = "") -> bytes:
    return tlv(tag, integer(code, 0x0A) + tlv(0x04, b"") + tlv(0x04, text.encode()))


def entry(dn: str, attributes: dict[str, list[str]]) -> bytes:
    attrs = b"".join(
        tlv(0x30, tlv(0x04, name.encode()) + tlv(0x31, b"".join(tlv(0x04, v.encode()) for v in values)))
        for name, values in attributes.items()
    )
    return tlv(0x64, tlv(0x04, dn.encode()) + tlv(0x30, attrs))


class FakeDomainController(socketserver.ThreadingTCPServer):
    """Accounts: ``sAMAccountName -> sub-code`` (None: the password
    :data:`PASSWORD` is accepted).  ``state`` overrides an account's
    userAccountControl/pwdLastSet/accountExpires."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.accounts: dict[str, str | None] = {"jdoe": None, "ghost": None, **{f"user{c}": c for c in SUBCODES}}
        self.state: dict[str, dict[str, list[str]]] = {"ghost": {"userAccountControl": ["514"]}}
        self.binds: list[str] = []
        self.filters: list[str] = []
        self.lock = threading.Lock()

    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self.server_address[1]}"

    def account_of(self, bind_name: str) -> str | None:
        name = bind_name
        if name.lower().endswith("@" + DOMAIN):
            name = name[: -len(DOMAIN) - 1]
        elif name.upper().startswith("CORP\\"):
            name = name[5:]
        elif name.upper().startswith("CN="):
            name = name[3:].split(",", 1)[0]
        return name.lower() if name.lower() in self.accounts else None

    def user_entry(self, name: str) -> bytes:
        attributes = {
            "sAMAccountName": [name],
            "userPrincipalName": [f"{name}@{DOMAIN}"],
            "userAccountControl": ["512"],
            "accountExpires": ["9223372036854775807"],
            "pwdLastSet": ["133000000000000000"],
            "memberOf": [f"CN=Direct,{GROUPS_BASE}"],
            "mail": [f"{name}@{DOMAIN}"],
        }
        attributes.update(self.state.get(name, {}))
        return entry(f"CN={name},{USERS}", attributes)


def read_tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end): a test-side BER reader, independent of nxauth's."""
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        count = first & 0x7F
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    else:
        length = first
    return tag, pos, pos + length


def children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        item = read_tlv(data, start)
        out.append(item)
        start = item[2]
    return out


def filter_text(data: bytes, tag: int, start: int, end: int) -> str:
    """A decoded search filter in RFC 4515 form (values shown unescaped)."""
    if tag in (0xA0, 0xA1):
        inner = "".join(filter_text(data, *child) for child in children(data, start, end))
        return f"({'&' if tag == 0xA0 else '|'}{inner})"
    if tag == 0xA2:
        return f"(!{filter_text(data, *read_tlv(data, start))})"
    if tag == 0x87:
        return f"({data[start:end].decode()}=*)"
    parts = [data[s:e].decode() for _, s, e in children(data, start, end)]
    if tag == 0xA9:
        return f"({parts[1]}:{parts[0]}:={parts[2]})"
    operator = {0xA3: "=", 0xA5: ">=", 0xA6: "<=", 0xA8: "~="}[tag]
    return f"({parts[0]}{operator}{parts[1]})"


class _Handler(socketserver.BaseRequestHandler):
    server: FakeDomainController

    def handle(self) -> None:
        sock: socket.socket = self.request
        buffer = b""
        bound: str | None = None
        while True:
            while len(buffer) < 2 or len(buffer) < read_tlv(buffer, 0)[2]:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            _, start, end = read_tlv(buffer, 0)
            request, buffer = buffer[:end], buffer[end:]
            parts = children(request, start, end)
            msgid = int.from_bytes(request[parts[0][1] : parts[0][2]], "big")
            kind, op_start, op_end = parts[1]
            if kind == 0x42:  # unbind
                return
            fields = children(request, op_start, op_end)
            if kind == 0x60:  # bind: version, name, [0] simple password
                name = request[fields[1][1] : fields[1][2]].decode()
                password = request[fields[2][1] : fields[2][2]].decode()
                with self.server.lock:
                    self.server.binds.append(name)
                account = self.server.account_of(name)
                code = self.server.accounts.get(account) if account else "525"
                if account and code is None and password != PASSWORD:
                    code = "52e"
                if code is None:
                    bound = account
                    sock.sendall(message(msgid, ldap_result(0x61, 0)))
                else:
                    bound = None
                    sock.sendall(message(msgid, ldap_result(0x61, 49, AD_ERROR.format(code))))
            elif kind == 0x63:  # search: base scope deref size time typesOnly filter attributes
                text = filter_text(request, *fields[6])
                with self.server.lock:
                    self.server.filters.append(text)
                out = b""
                if "1.2.840.113556.1.4.1941" in text:
                    for cn in ("Direct", "Parent", "Grandparent"):
                        out += message(msgid, entry(f"CN={cn},{GROUPS_BASE}", {"cn": [cn]}))
                elif bound is not None:
                    who = next((a for a in self.server.accounts if f"={a})" in text.lower()), None)
                    if who is not None:
                        out += message(msgid, self.server.user_entry(who))
                out += message(msgid, ldap_result(0x65, 0))
                sock.sendall(out)
            else:
                sock.sendall(message(msgid, ldap_result(0x78, 2, "unsupported")))


@pytest.fixture
def dc() -> Iterator[FakeDomainController]:
    server = FakeDomainController()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def backends() -> Iterator[list[Any]]:
    built: list[Any] = []
    yield built
    for backend in built:
        backend.close()


def make(dc: FakeDomainController, built: list[Any], **options: Any) -> Any:
    base = {"uri": dc.uri, "insecure": True, "implementation": "activedirectory", "user_base": USERS}
    backend = build_backend({**base, **options})
    built.append(backend)
    return backend


def verdict_of(backend: Any, username: str, password: str = PASSWORD) -> Verdict:
    verdict = backend.authenticate(make_attempt(username, password))
    assert isinstance(verdict, Verdict)
    return verdict


@pytest.mark.parametrize("code", SUBCODES)
@pytest.mark.parametrize("form", ["upn", "downlevel"])
def test_bind_subcodes_map_to_reasons(dc: FakeDomainController, backends: list[Any], code: str, form: str) -> None:
    options = {"upn_suffix": DOMAIN} if form == "upn" else {"netbios_domain": "CORP"}
    verdict = verdict_of(make(dc, backends, **options), f"user{code}")
    assert (verdict.decision, verdict.reason) == (Decision.DENY, EXPECTED[code])
    assert verdict.detail == f"ad-data={code}"
    expected_name = f"user{code}@{DOMAIN}" if form == "upn" else f"CORP\\user{code}"
    assert dc.binds[-1] == expected_name


def test_right_password_allows_and_reads_the_entry(dc: FakeDomainController, backends: list[Any]) -> None:
    backend = make(dc, backends, upn_suffix=DOMAIN, attributes=["mail"])
    verdict = verdict_of(backend, "jdoe")
    assert verdict.allowed
    assert verdict.groups == {"Direct"}  # memberOf, the AD default
    assert verdict.attributes["mail"] == f"jdoe@{DOMAIN}"
    assert verdict_of(backend, "jdoe", "wrong").reason is Reason.BAD_PASSWORD


def test_a_disabled_account_that_still_binds_is_denied(dc: FakeDomainController, backends: list[Any]) -> None:
    verdict = verdict_of(make(dc, backends, upn_suffix=DOMAIN), "ghost")
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.DISABLED)


@pytest.mark.parametrize("username", ["jdoe@other.example", "OTHER\\jdoe", "j*", "jdoe,cn=x"])
def test_logon_names_with_forbidden_characters_are_refused(
    dc: FakeDomainController, backends: list[Any], username: str
) -> None:
    verdict = verdict_of(make(dc, backends, upn_suffix=DOMAIN), username)
    assert verdict.reason is Reason.INVALID_USERNAME
    assert dc.binds == []


def test_nested_groups_use_the_transitive_matching_rule(dc: FakeDomainController, backends: list[Any]) -> None:
    backend = make(
        dc, backends, upn_suffix=DOMAIN, group_base=GROUPS_BASE, nested_groups=True, require_groups=["grandparent"]
    )
    verdict = verdict_of(backend, "jdoe")
    assert verdict.allowed
    assert verdict.groups == {"Direct", "Parent", "Grandparent"}
    rule = f"(member:1.2.840.113556.1.4.1941:=CN=jdoe,{USERS})"
    assert any(rule in text and "(objectClass=group)" in text for text in dc.filters), dc.filters


@pytest.mark.parametrize("form", [{"upn_suffix": DOMAIN}, {"netbios_domain": "CORP"}], ids=["upn", "downlevel"])
def test_logon_name_modes_need_user_base_to_read_the_stored_name(dc: FakeDomainController, form: Any) -> None:
    # without user_base the entry, and so the name AD stores for the account, cannot be read back
    with pytest.raises(nxauth.ConfigError, match="user_base"):
        build_backend({"uri": dc.uri, "insecure": True, "implementation": "activedirectory", **form})


def test_account_role_with_a_service_account(dc: FakeDomainController, backends: list[Any]) -> None:
    dc.accounts["nxauth"] = None
    backend = make(dc, backends, bind_dn=f"CN=nxauth,{USERS}", bind_password=nxauth.Secret(PASSWORD))
    assert backend.check_account(make_identity("jdoe")).allowed
    assert backend.check_account(make_identity("ghost")).reason is Reason.DISABLED
    assert "(sAMAccountName=jdoe)" in dc.filters[0]


def test_the_client_sees_only_the_generic_message(dc: FakeDomainController, tmp_path: Path) -> None:
    """773 and 532 are only reported when the password was right: the audit
    trail gets the precise reason, the client the generic failure."""
    key = TransportKey()
    sink = RecordingSink()
    config = {
        "state_dir": str(tmp_path / "state"),
        "transport": {"key_sources": ["keys"]},
        "backends": {
            "ad": {
                "kind": "ldap",
                "implementation": "activedirectory",
                "uri": dc.uri,
                "insecure": True,
                "upn_suffix": DOMAIN,
                "user_base": USERS,
            }
        },
        "auth": [{"use": "ad"}],
        "account": [],
        "throttle": {"enabled": False},
    }
    auth = nxauth.Authenticator(config, backends={"keys": ListKeySource(key.line)}, plugins=(sink,), entry_points=False)
    try:
        for code in ("773", "532", "775", "52e"):
            session = auth.open_session(peer=("198.51.100.20", 5000))
            session.check_transport_key("nx", key.line)
            with pytest.raises(AuthenticationFailed) as info:
                session.login(f"user{code}", PASSWORD)
            assert str(info.value) == "authentication failed"
            assert code not in str(info.value) and code not in repr(info.value.args)
            event = sink.events[-1]
            assert (event.outcome, event.reason) == ("failed", EXPECTED[code])
            assert event.detail == f"ad-data={code}"
    finally:
        auth.close()
