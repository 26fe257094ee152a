"""Issue 17, class 7: a stuck sink does not stop the logins.

A syslog socket nobody reads (its queue full: the kernel blocks the
sender), and a third-party observer that never returns.  The logins go on
(each one delayed by a bounded time, measured in
``benchmarks/bench_stuck_sinks.py``), the stuck sink is reported as
failing, a required audit denies, the other sinks see every event, and an
observer that catches up gets the events it missed.  On the code before the
fix every login blocked forever: these tests run the logins in a thread and
give up on it after a generous limit, so they fail there instead of hanging.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import nxauth
from nxauth.testing import RecordingSink
from tests.support.keys import ListKeySource, TransportKey

HANG = 30.0  # seconds: far beyond any bounded delay, only there so a hang fails instead of stalling


@pytest.fixture
def unread_syslog(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A syslog socket that nobody reads: after ``net.unix.max_dgram_qlen``
    datagrams (10 by default) the sender blocks."""
    address = str(tmp_path / "log.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)
    yield address, server
    server.close()


def _in_thread(work: Callable[[], Any]) -> Any:
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(("ok", work()))
        except BaseException as exc:
            box.append(("raised", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), "the logins hung behind a stuck sink"
    kind, value = box[0]
    if kind == "raised":
        raise value
    return value


def _logins(auth: nxauth.Authenticator, key: str, count: int, password: str = "wonderland") -> list[str]:
    outcomes = []
    for i in range(count):
        session = auth.open_session(peer=("198.51.100.7", 40000 + i))
        try:
            session.check_transport_key("nx", key)
            session.login("alice", password)
            outcomes.append("ok")
        except nxauth.AuthenticationFailed as exc:
            outcomes.append(exc.reason.value)
        finally:
            session.close()
    return outcomes


def test_an_unread_syslog_does_not_stop_the_logins(
    unread_syslog: tuple[str, socket.socket],
    make_auth: Callable[..., nxauth.Authenticator],
    transport_key: Any,
    sink: RecordingSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    address, _ = unread_syslog
    auth = make_auth({"audit": {"syslog": True, "syslog_address": address}})
    with caplog.at_level(logging.ERROR, logger="nxauth"):
        outcomes = _in_thread(lambda: _logins(auth, transport_key.line, 30))
    assert outcomes == ["ok"] * 30  # not required: a failing sink is no deny
    assert len(sink.events) == 60  # the other sinks saw every event
    failing = [r for r in caplog.records if "audit sink nxauth.audit.syslog failed" in r.getMessage()]
    assert failing, "the stuck syslog is reported as failing"


def test_an_unread_syslog_denies_when_the_audit_is_required(
    unread_syslog: tuple[str, socket.socket],
    make_auth: Callable[..., nxauth.Authenticator],
    transport_key: Any,
) -> None:
    address, _ = unread_syslog
    auth = make_auth({"audit": {"syslog": True, "syslog_address": address, "required": True}})
    outcomes = _in_thread(lambda: _logins(auth, transport_key.line, 30))
    assert "ok" in outcomes[:4]  # room in the socket at first
    assert outcomes[-10:] == ["audit-failed"] * 10  # then nobody gets in unrecorded


def test_a_syslog_read_again_works_again(
    unread_syslog: tuple[str, socket.socket],
    make_auth: Callable[..., nxauth.Authenticator],
    transport_key: Any,
) -> None:
    address, server = unread_syslog
    auth = make_auth({"audit": {"syslog": True, "syslog_address": address, "required": True}})
    assert _in_thread(lambda: _logins(auth, transport_key.line, 20))[-1] == "audit-failed"
    server.setblocking(False)
    while True:  # the syslog daemon catches up
        try:
            server.recv(65536)
        except BlockingIOError:
            break
    time.sleep(1.1)  # the socket's stuck period (audit.STUCK_SECONDS) ends
    assert _in_thread(lambda: _logins(auth, transport_key.line, 2)) == ["ok", "ok"]


class Stuck:
    """A third-party observer that blocks on its first event until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.events: list[nxauth.AuthEvent] = []

    @nxauth.hookimpl
    def nxauth_auth_event(self, event: nxauth.AuthEvent) -> None:
        self.release.wait()
        self.events.append(event)


class Counting:
    def __init__(self) -> None:
        self.events: list[nxauth.AuthEvent] = []

    @nxauth.hookimpl
    def nxauth_auth_event(self, event: nxauth.AuthEvent) -> None:
        self.events.append(event)


def test_a_stuck_observer_does_not_stop_the_logins_nor_the_other_observers(
    make_auth: Callable[..., nxauth.Authenticator],
    transport_key: Any,
    sink: RecordingSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stuck, counting = Stuck(), Counting()
    auth = make_auth({"audit": {"sink_timeout": 0.02}}, plugins=(stuck, counting))
    try:
        with caplog.at_level(logging.ERROR, logger="nxauth"):
            outcomes = _in_thread(lambda: _logins(auth, transport_key.line, 20))
        assert outcomes == ["ok"] * 20
        assert len(sink.events) == 40
        end = time.monotonic() + HANG
        while len(counting.events) < 40 and time.monotonic() < end:
            time.sleep(0.01)
        assert len(counting.events) == 40  # its own thread: the stuck one holds it back in nothing
        messages = [r.getMessage() for r in caplog.records]
        assert any("Stuck" in m and ("did not finish" in m or "is stuck" in m) for m in messages)
    finally:
        stuck.release.set()
    end = time.monotonic() + HANG
    while len(stuck.events) < 40 and time.monotonic() < end:
        time.sleep(0.01)
    assert [e.session_id for e in stuck.events] == [e.session_id for e in sink.events]  # none lost, in order


def test_a_stuck_observer_denies_when_the_audit_is_required(
    make_auth: Callable[..., nxauth.Authenticator], transport_key: Any
) -> None:
    stuck = Stuck()
    auth = make_auth({"audit": {"sink_timeout": 0.02, "required": True}}, plugins=(stuck,))
    try:
        session = auth.open_session(peer=("198.51.100.7", 40000))
        with pytest.raises(nxauth.AuthenticationFailed) as failed:
            _in_thread(lambda: session.check_transport_key("nx", transport_key.line))
        assert failed.value.reason is nxauth.Reason.AUDIT_FAILED
        assert _in_thread(lambda: _logins(auth, transport_key.line, 5)) == ["audit-failed"] * 5
    finally:
        stuck.release.set()


def test_a_stream_syslog_socket_that_accepts_nothing_never_blocks_a_login(tmp_path: Path) -> None:
    """syslog-ng's unix-stream socket with a listener that accepts nothing:
    once a send timed out, the handler connects again, and that connect is
    bounded by the sink's timeout too (an outside review found it unbounded:
    every login then hung)."""
    import socket
    import threading
    import time

    path = str(tmp_path / "log.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)  # never accepts, never reads
    key = TransportKey()

    class Deny:
        def authenticate(self, attempt: object) -> nxauth.Verdict:
            return nxauth.Verdict.deny(nxauth.Reason.BAD_PASSWORD)

        def check_account(self, identity: object) -> nxauth.Verdict:
            return nxauth.Verdict.allow()

    auth = nxauth.Authenticator(
        {
            "state_dir": str(tmp_path / "state"),
            "transport": {"key_sources": ["keys"]},
            "throttle": {"enabled": False},
            "audit": {"syslog": True, "syslog_address": path, "log": False},
            "auth": [{"use": "d"}],
            "account": [{"use": "d"}],
        },
        backends={"keys": ListKeySource(key.line), "d": Deny()},
        entry_points=False,
    )
    times: list[float] = []

    def run() -> None:
        for _ in range(300):
            session = auth.open_session(peer=("198.51.100.7", 1))
            started = time.monotonic()
            session.check_transport_key("nx", key.line)
            with contextlib.suppress(nxauth.AuthenticationFailed):
                session.login("alice", "x" * 200)
            times.append(time.monotonic() - started)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    try:
        assert not worker.is_alive(), f"a login hung after {len(times)} logins"
        assert len(times) == 300
    finally:
        auth.close()
        listener.close()
