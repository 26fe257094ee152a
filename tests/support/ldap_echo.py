"""A hostile LDAP server for the tests: it answers every operation with the
password it was given echoed back, in its diagnostic messages, in a
referral URL and in the attribute values of the entries it returns.

Plain LDAP on 127.0.0.1 (the backend's ``insecure`` option), hand-encoded
BER (RFC 4511): enough of the protocol for ldap3's bind, search and unbind.
Each connection is served by a thread; ``mode`` picks the bind's answer.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.support.ber import integer, message, octets, read_tlv, tlv

__all__ = ["EchoServer", "echo_server"]

# protocolOp tags ([APPLICATION n])
BIND_REQUEST, BIND_RESPONSE, UNBIND = 0x60, 0x61, 0x42
SEARCH_REQUEST, SEARCH_ENTRY, SEARCH_DONE = 0x63, 0x64, 0x65
EXTENDED_REQUEST, EXTENDED_RESPONSE = 0x77, 0x78


def result(op: int, code: int, matched: bytes, message: bytes, referral: bytes | None = None) -> bytes:
    body = integer(code, 0x0A) + octets(matched) + octets(message)
    if referral is not None:
        body += tlv(0xA3, octets(referral))
    return tlv(op, body)


def _read_tlv(data: bytes, at: int) -> tuple[int, bytes, int]:
    """(tag, content, next offset) of the element at ``at``."""
    tag, start, end = read_tlv(data, at)
    return tag, data[start:end], end


def _recv_message(conn: socket.socket) -> bytes | None:
    head = b""
    while len(head) < 2:
        chunk = conn.recv(2 - len(head))
        if not chunk:
            return None
        head += chunk
    extra = head[1] & 0x7F if head[1] & 0x80 else 0
    while len(head) < 2 + extra:
        chunk = conn.recv(2 + extra - len(head))
        if not chunk:
            return None
        head += chunk
    size = int.from_bytes(head[2 : 2 + extra], "big") if extra else head[1]
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            return None
        body += chunk
    return head + body


@dataclass
class EchoServer:
    """``mode``: ``invalid`` (49, AD style, data 52e), ``success`` (0, then
    entries full of the password), ``unwilling`` (53), ``constraint`` (19,
    a password-policy style text), ``referral`` (10, the password in the URL),
    ``other`` (80, other)."""

    mode: str = "invalid"
    port: int = 0
    passwords: list[bytes] = field(default_factory=list)

    def echoes(self, password: bytes) -> bytes:
        text = password
        return (
            b"80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 52e, v4563: "
            + text
            + b" | '"
            + text
            + b"' | "
            + repr(text)[2:-1].encode()
            + b" | "
            + text[:40]
        )

    def _bind_answer(self, password: bytes) -> bytes:
        echo = self.echoes(password)
        if self.mode == "invalid":
            return result(BIND_RESPONSE, 49, b"", echo)
        if self.mode == "success":
            return result(BIND_RESPONSE, 0, password, echo)
        if self.mode == "unwilling":
            return result(BIND_RESPONSE, 53, b"", echo)
        if self.mode == "constraint":
            return result(BIND_RESPONSE, 19, b"", b"Password fails quality checking policy: " + echo)
        if self.mode == "referral":
            return result(BIND_RESPONSE, 10, b"", echo, referral=b"ldap://127.0.0.1/uid=" + password.hex().encode())
        return result(BIND_RESPONSE, 80, password, echo)

    def _entry(self, dn: bytes, password: bytes) -> bytes:
        def attribute(name: bytes, *values: bytes) -> bytes:
            return tlv(0x30, octets(name) + tlv(0x31, b"".join(octets(v) for v in values)))

        attributes = b"".join(
            [
                attribute(b"uid", b"alice"),
                attribute(b"cn", password),
                attribute(b"displayName", self.echoes(password)),
                attribute(b"description", password),
                attribute(b"memberOf", b"cn=" + password + b",dc=example,dc=org"),
            ]
        )
        return tlv(SEARCH_ENTRY, octets(dn) + tlv(0x30, attributes))

    def serve(self, conn: socket.socket) -> None:
        password = b""
        with conn:
            conn.settimeout(10)
            while (data := _recv_message(conn)) is not None:
                _, body, _ = _read_tlv(data, 0)
                _, id_bytes, at = _read_tlv(body, 0)
                message_id = int.from_bytes(id_bytes, "big")
                op, content, _ = _read_tlv(body, at)
                if op == BIND_REQUEST:
                    _, _, at2 = _read_tlv(content, 0)  # version
                    _, _dn, at2 = _read_tlv(content, at2)
                    _, password, _ = _read_tlv(content, at2)  # simple [0]
                    self.passwords.append(password)
                    conn.sendall(message(message_id, self._bind_answer(password)))
                elif op == SEARCH_REQUEST:
                    _, base, _ = _read_tlv(content, 0)
                    reply = message(message_id, self._entry(base or b"uid=alice,dc=example,dc=org", password))
                    reply += message(message_id, result(SEARCH_DONE, 0, b"", self.echoes(password)))
                    conn.sendall(reply)
                elif op == EXTENDED_REQUEST:  # StartTLS and the rest: refused, with the echo
                    conn.sendall(message(message_id, result(EXTENDED_RESPONSE, 2, b"", self.echoes(password))))
                elif op == UNBIND:
                    return
                else:
                    return


@contextlib.contextmanager
def echo_server(mode: str = "invalid") -> Iterator[EchoServer]:
    """An :class:`EchoServer` listening on 127.0.0.1 (a free port) until the block ends."""
    server = EchoServer(mode)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    server.port = listener.getsockname()[1]
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=_serve_quietly, args=(server, conn), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join()
        listener.close()


def _serve_quietly(server: EchoServer, conn: socket.socket) -> None:
    with contextlib.suppress(OSError, IndexError, ValueError):
        server.serve(conn)
