"""docs/protocol.md, Rules, Limits: "A line may hold at most
``session.max_password_bytes`` bytes (8192 by default). A longer line, or one
that is not UTF-8, is a protocol error: ``400``, then the server closes and
audits ``protocol-error``."  And Lines: "A CR before the LF is ignored."

Through the real entry point of ``nxauth login``, ``run_login`` (the
blocking door on real file descriptors, stage 1 from ``SSH_USER_AUTH``);
the embedded server with the real ssh client is
tests/servers/test_asyncssh_server.py.  The old code read lines of up to
``limit + 1`` bytes, so a password one byte over the limit was denied as a
wrong password (``401``) and the client was asked again."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nxauth
from nxauth.integrations.openssh import run_login
from nxauth.integrations.protocol import ClientGone, FdLineReader, ProtocolViolation
from nxauth.testing import RecordingSink
from tests.support.keys import TransportKey

LIMIT = 64  # session.max_password_bytes: its minimum, so that lines stay small
BAD = ["NX> 102 Password:", "NX> 400 Bad request", "NX> 999 Bye"]
DENIED = ["NX> 102 Password:", "NX> 401 Authentication failed", "NX> 101 User:"]


def login_over_fds(auth: nxauth.Authenticator, user_auth: Path, client: bytes) -> list[str]:
    """``nxauth login`` (run_login) on a socketpair: the client sends
    ``client`` and closes its end."""
    server, peer = socket.socketpair()
    with server, peer:
        sender = threading.Thread(target=lambda: (peer.sendall(client), peer.shutdown(socket.SHUT_WR)))
        sender.start()
        status = run_login(
            auth,
            account="nx",
            environ={"SSH_USER_AUTH": str(user_auth), "SSH_CONNECTION": "198.51.100.7 52100 192.0.2.1 22"},
            stdin_fd=server.fileno(),
            stdout_fd=server.fileno(),
            terminal=False,
        )
        sender.join()
        server.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := peer.recv(65536):
            out += chunk
    assert status in (0, 1)
    return out.decode().splitlines()


def password_line(size: int, *, char: str = "p", newline: bytes = b"\n") -> bytes:
    """A password line of ``size`` bytes (``char`` may be multi-byte: the line
    is filled with ``p`` and ends with as many whole ``char`` as fit)."""
    width = len(char.encode())
    body = "p" * (size % width) + char * (size // width)
    assert len(body.encode()) == size
    return body.encode() + newline


SIZES = {
    "limit - 1": (LIMIT - 1, DENIED),
    "limit": (LIMIT, DENIED),
    "limit + 1": (LIMIT + 1, BAD),
    "limit + 2": (LIMIT + 2, BAD),
}


@pytest.fixture
def user_auth(tmp_path: Path, transport_key: TransportKey) -> Path:
    path = tmp_path / "user_auth"
    path.write_text(f"publickey {transport_key.line}\n")
    return path


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"], ids=["LF", "CR LF"])
@pytest.mark.parametrize("char", ["p", "é", "€", "😀"], ids=["ascii", "2-byte", "3-byte", "4-byte"])
@pytest.mark.parametrize("case", list(SIZES), ids=list(SIZES))
def test_a_line_over_the_limit_by_one_byte_is_a_bad_request(
    make_auth: Callable[..., nxauth.Authenticator],
    sink: RecordingSink,
    transport_key: TransportKey,
    user_auth: Path,
    ending: bytes,
    char: str,
    case: str,
) -> None:
    """protocol.md, Limits: ``limit`` bytes is a line (a wrong password:
    ``401``, asked again); ``limit + 1`` is ``400``, closed, audited
    ``protocol-error``; a CR before the LF does not count; a multi-byte
    character straddling the limit makes the line too long, not cut."""
    size, expected = SIZES[case]
    auth = make_auth({"session": {"max_password_bytes": LIMIT}})
    client = b"alice\n" + password_line(size, char=char, newline=ending)
    lines = login_over_fds(auth, user_auth, client)
    assert lines[2:5] == expected
    stage2 = [(o, r) for s, o, r in sink.outcomes() if s == 2]
    if expected is BAD:
        assert lines[-1] == "NX> 999 Bye" and len(lines) == 5
        assert stage2 == [("refused", "protocol-error")]
    else:
        assert stage2[0] == ("failed", "bad-password")  # read whole, and checked as a password


@pytest.mark.parametrize("size", [LIMIT, LIMIT + 1])
def test_the_line_without_its_newline(
    make_auth: Callable[..., nxauth.Authenticator],
    sink: RecordingSink,
    transport_key: TransportKey,
    user_auth: Path,
    size: int,
) -> None:
    """A line that never ends: within the limit the client is gone
    (``client-gone``); over it, ``400`` as soon as the limit is passed."""
    auth = make_auth({"session": {"max_password_bytes": LIMIT}})
    client = b"alice\n" + password_line(size, newline=b"")
    lines = login_over_fds(auth, user_auth, client)
    stage2 = [(o, r) for s, o, r in sink.outcomes() if s == 2]
    if size > LIMIT:
        assert lines[2:] == BAD
        assert stage2 == [("refused", "protocol-error")]
    else:
        assert lines[2:] == ["NX> 102 Password:"]
        assert stage2 == [("refused", "client-gone")]


def test_the_right_password_of_exactly_the_limit_logs_in(
    make_auth: Callable[..., nxauth.Authenticator], sink: RecordingSink, user_auth: Path
) -> None:
    from nxauth.testing import MemoryBackend

    password = "€" * (LIMIT // 3) + "p" * (LIMIT % 3)
    assert len(password.encode()) == LIMIT
    auth = make_auth({"session": {"max_password_bytes": LIMIT}}, backends={"mem": MemoryBackend({"alice": password})})
    lines = login_over_fds(auth, user_auth, b"alice\n" + password.encode() + b"\r\n")
    assert lines[-1] == "NX> 200 Authenticated alice"


# ---------------------------------------------------------------- the reader, against a reference


def reference(stream: bytes, limit: int) -> list[bytes | str]:
    """What the docs say a reader yields: each line (LF-ended, one CR before
    the LF dropped by the decoder, so kept here) while it holds at most
    ``limit`` bytes without that CR; then ``too-long``, or ``gone`` at the end."""
    out: list[bytes | str] = []
    while True:
        end = stream.find(b"\n")
        line = stream if end < 0 else stream[:end]
        content = line[:-1] if line.endswith(b"\r") and end >= 0 else line
        if len(content) > limit and not (end < 0 and len(line) == limit + 1 and line.endswith(b"\r")):
            return [*out, "too-long"]
        if end < 0:
            return [*out, "gone"]
        out.append(line)
        stream = stream[end + 1 :]


def read_all(stream: bytes, limit: int) -> list[bytes | str]:
    left, right = socket.socketpair()
    with left, right:
        sender = threading.Thread(target=lambda: (right.sendall(stream), right.shutdown(socket.SHUT_WR)))
        sender.start()
        reader = FdLineReader(left.fileno(), max_line=limit)
        out: list[bytes | str] = []
        try:
            while True:
                out.append(reader.readline(None))
        except ProtocolViolation:
            out.append("too-long")
        except ClientGone:
            out.append("gone")
        sender.join()
    return out


LINES = st.lists(
    st.tuples(st.integers(0, 12), st.sampled_from([b"\n", b"\r\n", b"\r", b""])).map(lambda t: b"x" * t[0] + t[1]),
    max_size=6,
).map(b"".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=LINES, limit=st.integers(1, 10))
def test_the_reader_against_the_documented_rule(stream: bytes, limit: int) -> None:
    assert read_all(stream, limit) == reference(stream, limit)
