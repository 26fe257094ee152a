"""Protocol strictness (issue 17, class 8) against a hostile LDAP server.

The server below is written here, on 127.0.0.1, with hand-encoded BER: it
answers each request from a script (responses sent ahead for the next
message id, two responses for one request, responses of the wrong type,
entries nobody asked for, bytes after a response) and honestly otherwise
(a simple bind succeeds only with the password ``right``).  Whatever it
sends, no login is allowed on an answer that was not the one the request
asked for, and the connection that carried it is discarded.  Message ids
are random (``Link._take_id``), so an answer "for the next id" guesses wrong
even when it arrives after the next request went out.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nxauth import Reason
from nxauth.config import BackendConfig, Config
from nxauth.plugins.registry import BackendContext
from nxauth.testing import make_attempt
from tests.support.ber import ldap_result, message, read_tlv, tlv

pytest.importorskip("ldap3")

NOD_OID = b"1.3.6.1.4.1.1466.20036"
USER_DN = "uid={username},ou=people,dc=example,dc=org"


def bind_response(msgid: int, code: int, *, trailing: bytes = b"", extra: bytes = b"") -> bytes:
    return message(msgid, tlv(0x61, ldap_result(code, extra)), trailing)


def search_done(msgid: int, code: int = 0) -> bytes:
    return message(msgid, tlv(0x65, ldap_result(code)))


def search_entry(msgid: int, dn: str, **attributes: str) -> bytes:
    attrs = b"".join(
        tlv(0x30, tlv(0x04, name.encode()) + tlv(0x31, tlv(0x04, value.encode()))) for name, value in attributes.items()
    )
    return message(msgid, tlv(0x64, tlv(0x04, dn.encode()) + tlv(0x30, attrs)))


def extended_response(msgid: int, code: int, name: bytes | None = None) -> bytes:
    return message(msgid, tlv(0x78, ldap_result(code, tlv(0x8A, name) if name else b"")))


def notice_of_disconnection() -> bytes:
    return extended_response(0, 52, NOD_OID)


@dataclass
class Request:
    msgid: int
    op: int
    password: bytes = b""
    name: bytes = b""


def parse_request(data: bytes) -> Request:
    _, start, _ = read_tlv(data, 0)
    _, s, e = read_tlv(data, start)
    msgid = int.from_bytes(data[s:e], "big")
    op, s, e = read_tlv(data, e)
    password = name = b""
    if op == 0x60:  # version, name, [0] simple
        _, _, p = read_tlv(data, s)
        _, ns, p = read_tlv(data, p)
        _, ps, pe = read_tlv(data, p)
        password, name = data[ps:pe], data[ns:p]
    return Request(msgid, op, password, name)


# ------------------------------------------------------------ the server

#: A script step: given the request (and its connection's number), the
#: writes to make (each one sendall), or None to answer honestly.
Step = Callable[[Request, int], list[bytes] | None]


def honest(request: Request) -> list[bytes]:
    if request.op == 0x60:
        return [bind_response(request.msgid, 0 if request.password == b"right" else 49)]
    if request.op == 0x63:
        return [
            search_entry(request.msgid, USER_DN.format(username="alice"), cn="Alice", uid="alice"),
            search_done(request.msgid),
        ]
    return []


@dataclass
class Hostile:
    port: int = 0
    steps: list[Step] = field(default_factory=list)
    connections: int = 0
    seen: list[tuple[int, Request]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, *steps: Step) -> None:
        with self.lock:
            self.steps = list(steps)
            self.connections = 0
            self.seen = []

    def serve(self, conn: socket.socket) -> None:
        with self.lock:
            self.connections += 1
            number = self.connections
        buffer = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while len(buffer) >= 2:
                    _, _, end = read_tlv(buffer, 0)
                    if len(buffer) < end:
                        break
                    request, buffer = parse_request(buffer[:end]), buffer[end:]
                    if request.op == 0x42:  # unbind
                        return
                    with self.lock:
                        self.seen.append((number, request))
                        step = self.steps.pop(0) if self.steps else None
                    writes = step(request, number) if step is not None else None
                    for data in honest(request) if writes is None else writes:
                        try:
                            conn.sendall(data)
                        except OSError:
                            return


@pytest.fixture(scope="module")
def server() -> Iterator[Hostile]:
    hostile = Hostile()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    hostile.port = listener.getsockname()[1]

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=hostile.serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield hostile
    listener.close()


def build(server: Hostile, **options: Any) -> Any:
    from nxauth.backends.ldap import build_ldap_backend

    config = {
        "uri": f"ldap://127.0.0.1:{server.port}",
        "insecure": True,
        "user_dn": USER_DN,
        "operation_timeout": 2.0,
        **options,
    }
    config = {key: value for key, value in config.items() if value is not None}
    ctx = BackendContext(BackendConfig("hostile", "ldap", config), root=Config(), store=lambda: None)  # type: ignore[arg-type,return-value]
    return build_ldap_backend(ctx)


def login(backend: Any, password: str = "wrong") -> Any:
    return backend.authenticate(make_attempt("alice", password))


def idle_links(backend: Any) -> int:
    return len(backend._users._idle)


def sends(*writes: Callable[[Request], bytes]) -> Step:
    """A step making one sendall per function, each given the request."""
    return lambda request, _number: [write(request) for write in writes]


def at_once(*parts: Callable[[Request], bytes]) -> Step:
    """A step sending all parts in one write (they arrive together)."""
    return lambda request, _number: [b"".join(part(request) for part in parts)]


# ------------------------------------------------------------ the named cases

SCENARIOS: dict[str, Step] = {
    # a success for the NEXT message id, sent ahead with the real (failed) answer
    "success-ahead-for-next-id": at_once(lambda r: bind_response(r.msgid, 49), lambda r: bind_response(r.msgid + 1, 0)),
    # the same, in a second write: it arrives while the link is idle
    "success-ahead-for-next-id-later": sends(
        lambda r: bind_response(r.msgid, 49), lambda r: bind_response(r.msgid + 1, 0)
    ),
    "two-responses-fail-then-success": at_once(
        lambda r: bind_response(r.msgid, 49), lambda r: bind_response(r.msgid, 0)
    ),
    "two-responses-success-then-fail": at_once(
        lambda r: bind_response(r.msgid, 0), lambda r: bind_response(r.msgid, 49)
    ),
    "wrong-type-search-done": at_once(lambda r: search_done(r.msgid, 0)),
    "wrong-type-extended": at_once(lambda r: extended_response(r.msgid, 0)),
    "entry-then-bind-success": at_once(
        lambda r: search_entry(r.msgid, "uid=admin,dc=example,dc=org"), lambda r: bind_response(r.msgid, 0)
    ),
    "unrelated-entry-after-failed-bind": at_once(
        lambda r: bind_response(r.msgid, 49),
        lambda r: search_entry(r.msgid + 1, "uid=admin,dc=example,dc=org", cn="admin"),
    ),
    "unrelated-entry-after-failed-bind-same-id": at_once(
        lambda r: bind_response(r.msgid, 49),
        lambda r: search_entry(r.msgid, "uid=admin,dc=example,dc=org", cn="admin"),
    ),
    "unsolicited-message-id-0": at_once(
        lambda r: extended_response(0, 0, b"1.2.3.4"), lambda r: bind_response(r.msgid, 0)
    ),
    "trailing-bytes-in-the-message": at_once(lambda r: bind_response(r.msgid, 0, trailing=tlv(0x04, b"x"))),
    "unknown-result-component": at_once(lambda r: bind_response(r.msgid, 0, extra=tlv(0x8A, b"1.2.3"))),
    "response-for-another-id": at_once(lambda r: bind_response(r.msgid + 7, 0)),
}


#: sent in a second write: it may arrive before or after the next request
LATE = {"success-ahead-for-next-id-later"}


@pytest.mark.parametrize("case", list(SCENARIOS), ids=list(SCENARIOS))
def test_no_login_is_allowed_on_an_answer_the_request_did_not_ask_for(server: Hostile, case: str) -> None:
    server.script(SCENARIOS[case])
    backend = build(server)
    try:
        first = login(backend)
        second = login(backend)
        assert not first.allowed
        assert not second.allowed
        details = (first.detail, second.detail)
        if case not in LATE:
            assert "ldap-protocol-violation" in details, details  # fails closed, a typed word, no server text
            # the connection that carried the bad answer was discarded: the
            # second login went out on a connection of its own
            assert server.seen[1][0] != server.seen[0][0]
        # a late one is found when the link goes back to the pool, when it is
        # taken out again, or (its message id being random) when it arrives;
        # whichever: the link is never used again
        assert login(backend, "right").allowed
        assert server.seen[-1][0] != server.seen[0][0]
    finally:
        backend.close()


def test_a_violation_is_not_retried_on_another_connection(server: Hostile) -> None:
    server.script(SCENARIOS["two-responses-success-then-fail"])
    backend = build(server)
    try:
        verdict = login(backend, "right")
        assert not verdict.allowed and verdict.reason is Reason.BACKEND_ERROR
        assert verdict.detail == "ldap-protocol-violation"
        assert len(server.seen) == 1  # the operation failed: no second request anywhere
        assert idle_links(backend) == 0
    finally:
        backend.close()


def test_an_entry_sent_ahead_for_the_next_search_is_refused(server: Hostile) -> None:
    """Bind, then a base search as the user (attributes read): the server
    answers the failed bind and sends an admin entry and a search-done for
    the search it expects next; the next login binds right and searches."""

    def ahead(r: Request, _number: int) -> list[bytes]:
        return [
            bind_response(r.msgid, 49)
            + search_entry(r.msgid + 2, "uid=admin,dc=example,dc=org", cn="Administrator")
            + search_done(r.msgid + 2)
        ]

    server.script(ahead)
    backend = build(server, attributes=["cn"])
    try:
        assert not login(backend).allowed
        verdict = login(backend, "right")
        # allowed only through a fresh connection, with alice's entry, never admin's
        if verdict.allowed:
            assert verdict.attributes == {"cn": "Alice"}
        assert server.seen[-1][0] != server.seen[0][0]
    finally:
        backend.close()


def test_a_notice_of_disconnection_on_an_idle_link_is_a_dead_link_not_a_login(server: Hostile) -> None:
    server.script(sends(lambda r: bind_response(r.msgid, 49), lambda r: notice_of_disconnection()))
    backend = build(server)
    try:
        assert login(backend).detail in ("invalid-credentials", "ldap-protocol-violation")
        assert login(backend, "right").allowed  # on a new connection
        assert server.seen[-1][0] != server.seen[0][0]
    finally:
        backend.close()


# ------------------------------------------------------------ generated answers

MSGIDS = st.sampled_from(["same", "next", "previous", "zero"])
OPS = st.sampled_from(["bind", "search-done", "entry", "reference", "extended", "intermediate", "nod"])


@st.composite
def answers(draw: Any) -> list[tuple[str, str, int, bool]]:
    any_answer = st.tuples(MSGIDS, OPS, st.sampled_from([0, 49, 51]), st.booleans())
    plausible = st.sampled_from([("same", "bind", 0, False), ("same", "bind", 49, False), ("next", "bind", 0, False)])
    return draw(st.lists(st.one_of(plausible, any_answer), min_size=1, max_size=4))


def encode(answer: tuple[str, str, int, bool], msgid: int) -> bytes:
    which, op, code, trailing = answer
    mid = {"same": msgid, "next": msgid + 1, "previous": msgid - 1, "zero": 0}[which]
    extra = tlv(0x04, b"junk") if trailing else b""
    if op == "bind":
        return bind_response(mid, code, trailing=extra)
    if op == "search-done":
        return message(mid, tlv(0x65, ldap_result(code)), extra)
    if op == "entry":
        return search_entry(mid, "uid=other,dc=example,dc=org")
    if op == "reference":
        return message(mid, tlv(0x73, tlv(0x04, b"ldap://other/")), extra)
    if op == "intermediate":
        return message(mid, tlv(0x79, b""), extra)
    if op == "nod":
        return notice_of_disconnection()
    return extended_response(mid, code)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=answers(), warm=st.booleans())
def test_generated_answers_allow_only_the_one_right_response(
    server: Hostile, script: list[tuple[str, str, int, bool]], warm: bool
) -> None:
    """Whatever a server answers to a bind with a wrong password, the login
    is allowed only if the answer is exactly one success for that message id
    and nothing else; a second login (honest server) is then denied."""
    exact = script == [("same", "bind", 0, False)]
    steps: list[Step] = [lambda r, n: None] if warm else []  # warm: the bind runs on a pooled link

    def hostile(r: Request, _number: int) -> list[bytes]:
        return [b"".join(encode(answer, r.msgid) for answer in script)]

    server.script(*steps, hostile)
    backend = build(server, operation_timeout=0.5)
    try:
        if warm:
            assert not login(backend).allowed
        verdict = login(backend)
        assert verdict.allowed == exact, (script, verdict)
        assert not login(backend).allowed  # nothing left over on any pooled link
    finally:
        backend.close()


def test_an_answer_sent_ahead_on_the_service_connection_is_refused(server: Hostile) -> None:
    """Search mode: the service bind is answered with a success and, ahead,
    an entry for the user search it expects next, naming another DN.  The
    login fails on the service bind; no user bind ever goes out (with the
    old code, alice was bound, and allowed, as uid=admin)."""

    def ahead(r: Request, _number: int) -> list[bytes]:
        return [
            bind_response(r.msgid, 0)
            + search_entry(r.msgid + 1, "uid=admin,dc=example,dc=org", cn="admin")
            + search_done(r.msgid + 1)
        ]

    server.script(ahead)
    from nxauth import Secret

    options = {"user_base": "ou=people,dc=example,dc=org", "bind_dn": "cn=svc,dc=example,dc=org"}
    backend = build(server, **options, bind_password=Secret("right"), user_dn=None)
    try:
        verdict = login(backend, "right")
        assert not verdict.allowed
        assert verdict.detail == "ldap-protocol-violation"
        assert all(request.name != b"uid=admin,dc=example,dc=org" for _, request in server.seen)
    finally:
        backend.close()
