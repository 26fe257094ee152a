"""The stage-2 exchange has one implementation and two doors: the blocking
``run_exchange`` of ``nxauth login`` (real file descriptors, a socketpair)
and ``run_exchange_async`` of the embedded server (its channel dialogue).
The same scripted client through both sees the same lines and leaves the
same audit trail."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import nxauth
from nxauth.integrations._asyncssh_channel import ChannelIO, ChannelLineDialogue, ChannelTerminalDialogue
from nxauth.integrations.exchange import run_exchange, run_exchange_async
from nxauth.integrations.protocol import (
    Code,
    FdLineReader,
    LineDialogue,
    LoginTimeout,
    TerminalDialogue,
    terminal_prompt,
    terminal_text,
)
from nxauth.testing import MemoryBackend, RecordingSink
from tests.support import ROOT
from tests.support.backends import LateAllow
from tests.support.keys import ListKeySource, TransportKey

MAX_LINE = 8192  # session.max_password_bytes, as both integrations read
GREETING = "NX> 100 nxauth 0.1.0 protocol 1"
USER = "NX> 101 User:"
PASSWORD = "NX> 102 Password:"
WELCOME = "NX> 200 Authenticated alice"
FAILED = "NX> 401 Authentication failed"
BYE = "NX> 999 Bye"
CODE = "NX> 103 Verification code:"


class Question:
    """Asks one more question after the password (``wonderland``)."""

    def __init__(self, prompt: str, *, echo: bool, answer: str) -> None:
        self.prompt, self.echo, self.answer = prompt, echo, answer

    def authenticate(self, attempt: nxauth.Attempt) -> nxauth.Verdict:
        if attempt.password.reveal() != "wonderland":
            return nxauth.Verdict.deny(nxauth.Reason.BAD_PASSWORD)
        if attempt.ask(self.prompt, echo=self.echo).reveal() != self.answer:
            return nxauth.Verdict.deny(nxauth.Reason.BAD_PASSWORD, "wrong answer")
        return nxauth.Verdict.allow()

    def check_account(self, identity: nxauth.Identity) -> nxauth.Verdict:
        return nxauth.Verdict.allow()


class SlowAcceptSink:
    """Takes ``delay`` seconds to record a stage-2 allow."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    @nxauth.hookimpl
    def nxauth_auth_event(self, event: nxauth.AuthEvent) -> None:
        if event.accepted and event.stage == 2:
            time.sleep(self.delay)


@dataclasses.dataclass(frozen=True)
class Case:
    client: bytes  # what the client sends, all of it at once
    closes: bool  # and then it closes its end (or waits for ever)
    lines: list[str]  # what it is shown
    outcomes: list[tuple[int, str, str]]  # the audit trail after stage 1
    attempts: int = 0  # counted against session.max_attempts
    backend: Callable[[], object] = lambda: MemoryBackend({"alice": "wonderland"})
    timeout: float = 10
    slow_accept: float = 0
    later: tuple[float, bytes] = (0, b"")  # after so many seconds, the client sends more
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def logged_in(self) -> bool:
        return bool(self.lines) and self.lines[-1] == WELCOME


CASES = {
    "success": Case(b"alice\nwonderland\n", False, [GREETING, USER, PASSWORD, WELCOME], [(2, "accepted", "ok")]),
    "wrong password, then success": Case(
        b"alice\nguess\nalice\nwonderland\n",
        False,
        [GREETING, USER, PASSWORD, FAILED, USER, PASSWORD, WELCOME],
        [(2, "failed", "bad-password"), (2, "accepted", "ok")],
        attempts=1,
    ),
    "too many attempts": Case(
        b"alice\nx1\nalice\nx2\nbob\nx3\nalice\nwonderland\n",
        False,
        [GREETING, USER, PASSWORD, FAILED, USER, PASSWORD, FAILED, USER, PASSWORD, "NX> 403 Too many attempts", BYE],
        [
            (2, "failed", "bad-password"),
            (2, "failed", "bad-password"),
            (2, "failed", "no-decision"),
            (0, "refused", "too-many-attempts"),
        ],
        attempts=3,
    ),
    "timeout": Case(
        b"", False, [GREETING, USER, "NX> 408 Login timed out", BYE], [(2, "refused", "login-timeout")], timeout=0.3
    ),
    "client gone": Case(b"alice\n", True, [GREETING, USER, PASSWORD], [(2, "refused", "client-gone")]),
    "over-long line": Case(
        b"alice\n" + b"p" * (MAX_LINE + 10) + b"\nalice\n",
        False,
        [GREETING, USER, PASSWORD, "NX> 400 Bad request", BYE],
        [(2, "refused", "protocol-error")],
    ),
    "not UTF-8": Case(
        b"al\xffice\n", False, [GREETING, USER, "NX> 400 Bad request", BYE], [(2, "refused", "protocol-error")]
    ),
    "secret question": Case(
        b"alice\nwonderland\n123456\n",
        False,
        [GREETING, USER, PASSWORD, CODE, WELCOME],
        [(2, "accepted", "ok")],
        backend=lambda: Question("Verification code:", echo=False, answer="123456"),
    ),
    "echoed question": Case(
        b"alice\nwonderland\nblue\n",
        False,
        [GREETING, USER, PASSWORD, "NX> 104 Favourite colour?", WELCOME],
        [(2, "accepted", "ok")],
        backend=lambda: Question("Favourite\tcolour?\n", echo=True, answer="blue"),
    ),
    "wrong answer to a question": Case(
        b"alice\nwonderland\n000000\n",
        True,
        [GREETING, USER, PASSWORD, CODE, FAILED, USER],
        [(2, "failed", "bad-password"), (2, "refused", "client-gone")],
        attempts=1,
        backend=lambda: Question("Verification code:", echo=False, answer="123456"),
    ),
    "client gone while a question waits": Case(
        b"alice\nwonderland\n",
        True,
        [GREETING, USER, PASSWORD, CODE],
        [(2, "failed", "conversation-failed"), (2, "refused", "client-gone")],
        attempts=1,
        backend=lambda: Question("Verification code:", echo=False, answer="123456"),
    ),
    "over-long answer to a question": Case(
        b"alice\nwonderland\n" + b"9" * (MAX_LINE + 10) + b"\nalice\n",
        False,
        [GREETING, USER, PASSWORD, CODE, "NX> 400 Bad request", BYE],
        [(2, "failed", "conversation-failed"), (2, "refused", "protocol-error")],
        attempts=1,
        backend=lambda: Question("Verification code:", echo=False, answer="123456"),
    ),
    "timeout while a question waits": Case(
        b"alice\nwonderland\n",
        False,
        [GREETING, USER, PASSWORD, CODE, "NX> 408 Login timed out", BYE],
        [(2, "failed", "conversation-failed"), (2, "refused", "login-timeout")],
        attempts=1,
        backend=lambda: Question("Verification code:", echo=False, answer="123456"),
        timeout=0.3,
    ),
    "a backend given up on while its question waits": Case(
        b"alice\nwonderland\n",
        False,
        [GREETING, USER, PASSWORD, CODE, FAILED, USER, PASSWORD, CODE, WELCOME],
        [(2, "failed", "timeout"), (2, "accepted", "ok")],
        attempts=1,
        backend=lambda: Question("Verification code:", echo=False, answer="123456"),
        config={"backends": {"backend": {"timeout": 0.3}}},  # its question is dropped, unanswered, with it
        later=(0.8, b"alice\nwonderland\n123456\n"),
    ),
    "allow just inside the deadline stands": Case(
        b"alice\npw\n",
        False,
        [GREETING, USER, PASSWORD, WELCOME],  # one 200, no 408
        [(2, "accepted", "ok")],
        backend=lambda: LateAllow(0.1),
        timeout=0.3,
        slow_accept=0.4,  # the allow is recorded after the deadline: it stands all the same
    ),
    "late allow is refused": Case(
        b"alice\npw\n",
        False,
        [GREETING, USER, PASSWORD, "NX> 408 Login timed out", BYE],
        [(2, "failed", "login-timeout"), (2, "refused", "login-timeout")],
        attempts=0,  # not counted: the password was right
        backend=lambda: LateAllow(0.6),
        timeout=0.3,
    ),
}


@dataclasses.dataclass
class Seen:
    identity: nxauth.Identity | None
    lines: list[str]
    events: list[tuple[Any, ...]]
    attempts: int
    state: nxauth.SessionState


Door = Callable[[nxauth.Session, Case], tuple[nxauth.Identity | None, bytes]]


def blocking_door(session: nxauth.Session, case: Case) -> tuple[nxauth.Identity | None, bytes]:
    """``nxauth login``'s: run_exchange over a socketpair's file descriptor."""
    server, client = socket.socketpair()
    with server, client:
        client.sendall(case.client)

        def send_later() -> None:
            client.sendall(case.later[1])
            if case.closes:
                client.shutdown(socket.SHUT_WR)

        later = threading.Timer(case.later[0], send_later)
        later.start()
        fd = server.fileno()
        identity = run_exchange(session, LineDialogue(FdLineReader(fd, max_line=MAX_LINE), fd), timeout=case.timeout)
        later.join()
        assert os.get_blocking(fd)  # the flags the session command inherits are untouched
        server.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := client.recv(65536):
            out += chunk
    return identity, out


class Channel:
    """The two streams of an asyncssh server process that ChannelIO uses."""

    def __init__(self, data: bytes, closes: bool, later: tuple[float, bytes] = (0, b"")) -> None:
        self.stdin = asyncio.StreamReader()
        self.stdin.feed_data(data)
        asyncio.get_running_loop().call_later(later[0], self.send_later, later[1], closes)
        self.stdout = self
        self.written = bytearray()

    def send_later(self, data: bytes, closes: bool) -> None:
        self.stdin.feed_data(data)
        if closes:
            self.stdin.feed_eof()

    def write(self, data: bytes) -> None:
        self.written += data

    async def drain(self) -> None:
        pass


def asyncio_door(session: nxauth.Session, case: Case) -> tuple[nxauth.Identity | None, bytes]:
    """The embedded server's: run_exchange_async over its channel dialogue."""

    async def run() -> tuple[nxauth.Identity | None, bytes]:
        channel = Channel(case.client, case.closes, case.later)
        dialogue = ChannelLineDialogue(ChannelIO(channel, MAX_LINE))  # type: ignore[arg-type]
        identity = await run_exchange_async(session, dialogue, timeout=case.timeout)
        return identity, bytes(channel.written)

    return asyncio.run(run())


def through(door: Door, case: Case, tmp_path: Path, transport_key: TransportKey) -> Seen:
    sink = RecordingSink()
    plugins: list[object] = [sink]
    if case.slow_accept:
        plugins.append(SlowAcceptSink(case.slow_accept))
    with nxauth.Authenticator(
        {
            "state_dir": str(tmp_path / door.__name__),
            "session": {"max_attempts": 3},
            "transport": {"key_sources": ["keys"]},
            "auth": [{"use": "backend"}],
            "account": [{"use": "backend"}],
            # a slow sink on purpose: let it run to its end
            **({"audit": {"sink_timeout": 5.0}} if case.slow_accept else {}),
            **case.config,
        },
        backends={"keys": ListKeySource(transport_key.line), "backend": case.backend()},
        plugins=plugins,
        entry_points=False,
    ) as auth:
        session = auth.open_session(peer=("198.51.100.7", 52100))
        session.check_transport_key("nx", transport_key.line)
        identity, out = door(session, case)
    events = [
        tuple(
            re.sub(r"\d+\.\d+ s\b", "N s", value) if name == "detail" else value  # measured durations
            for name, value in dataclasses.asdict(event).items()
            if name not in ("session_id", "time")
        )
        for event in sink.events
    ]
    assert sink.events[0].stage == 1 and sink.events[0].accepted
    return Seen(identity, out.decode().splitlines(), events, session.attempts, session.state)


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_both_doors_show_and_audit_the_same(case: Case, tmp_path: Path, transport_key: TransportKey) -> None:
    blocking = through(blocking_door, case, tmp_path, transport_key)
    asynchronous = through(asyncio_door, case, tmp_path, transport_key)
    for seen in (blocking, asynchronous):
        assert seen.lines == case.lines
        assert [(stage, outcome, reason.value) for stage, outcome, reason, *_ in seen.events[1:]] == case.outcomes
        assert seen.attempts == case.attempts
        assert (seen.identity is not None) is case.logged_in
        if case.logged_in:
            assert seen.identity is not None and seen.identity.username == "alice"
            assert seen.state is nxauth.SessionState.AUTHENTICATED
        else:
            assert seen.state is nxauth.SessionState.CLOSED
    assert blocking.lines == asynchronous.lines
    assert blocking.events == asynchronous.events
    for seen in (blocking, asynchronous):  # no answer of the client's reaches the trail
        assert not [e for e in seen.events if any("wonderland" in str(v) or "123456" in str(v) for v in e)]


# ---------------------------------------------------------------- the blocking door


class ScriptedBlocking:
    """A host's own blocking :class:`~nxauth.integrations.protocol.Dialogue`."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.told: list[tuple[int, str]] = []
        self.threads: set[str] = set()

    def ask(self, code: Code, prompt: str, *, echo: bool, deadline: float | None) -> str:
        self.threads.add(threading.current_thread().name)
        if not self.answers:
            assert deadline is not None
            time.sleep(max(0.0, deadline - time.monotonic()))
            raise LoginTimeout
        return self.answers.pop(0)

    def tell(self, code: Code, text: str) -> None:
        self.told.append((int(code), text))


@pytest.fixture
def granted_session(make_auth: Callable[..., nxauth.Authenticator], granted: Any) -> Iterator[nxauth.Session]:
    yield granted(make_auth())


def test_a_blocking_dialogue_of_the_hosts_own(granted_session: nxauth.Session, sink: RecordingSink) -> None:
    """Any other Dialogue is asked in a worker thread with the exchange's
    deadline; the call returns only once that thread is gone."""
    before = set(threading.enumerate())
    dialogue = ScriptedBlocking("alice", "wonderland")
    identity = run_exchange(granted_session, dialogue, timeout=5)
    assert identity is not None and identity.username == "alice"
    assert dialogue.told[-1] == (200, "Authenticated alice")
    assert threading.current_thread().name not in dialogue.threads
    left = [t for t in set(threading.enumerate()) - before if not t.name.startswith("nxauth")]
    assert left == []  # the exchange's own thread has ended; the authenticator's pool is its own


def test_a_blocking_dialogue_that_times_out(granted_session: nxauth.Session, sink: RecordingSink) -> None:
    dialogue = ScriptedBlocking("alice")
    started = time.monotonic()
    assert run_exchange(granted_session, dialogue, timeout=0.3) is None
    assert 0.25 < time.monotonic() - started < 3
    assert dialogue.told[-2:] == [(408, "Login timed out"), (999, "Bye")]
    assert sink.outcomes()[-1] == (2, "refused", "login-timeout")


def test_no_loop_is_left_behind(granted_session: nxauth.Session) -> None:
    """The blocking door's loop is its own: closed by the call, and the
    thread's current event loop (if any) is left as it was."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        read, write = os.pipe()
        os.write(write, b"alice\nwonderland\n")
        out_r, out_w = os.pipe()
        assert run_exchange(granted_session, LineDialogue(FdLineReader(read, max_line=MAX_LINE), out_w), timeout=5)
        assert asyncio.get_event_loop() is loop
        assert not loop.is_closed()
        for fd in (read, write, out_r, out_w):
            os.close(fd)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_login_execs_the_session_command_with_the_rest_of_stdin(tmp_path: Path, transport_key: TransportKey) -> None:
    """``nxauth login`` for real, in its own process: after the exchange it
    ``exec``s the session command, which reads what the client sent after
    ``200`` from the same (still blocking) stdin."""
    user_auth = tmp_path / "user_auth"
    user_auth.write_text(f"publickey {transport_key.line}\n")
    session_command = [
        sys.executable,
        "-c",
        "import os, sys; print('blocking', os.get_blocking(0)); print('read', sys.stdin.readline().strip())",
    ]
    program = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
import nxauth
from tests.support.keys import ListKeySource
from nxauth.integrations.openssh import run_login
from nxauth.testing import MemoryBackend
auth = nxauth.Authenticator(
    {{"state_dir": {str(tmp_path / "state")!r}, "transport": {{"key_sources": ["keys"]}},
      "auth": [{{"use": "mem"}}], "account": [{{"use": "mem"}}], "login": {{"command": {session_command!r}}}}},
    backends={{"keys": ListKeySource({transport_key.line!r}), "mem": MemoryBackend({{"alice": "wonderland"}})}},
    entry_points=False,
)
sys.exit(run_login(auth, account="nx", environ={{"SSH_USER_AUTH": {str(user_auth)!r}}}, terminal=False))
"""
    with subprocess.Popen(
        [sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(b"alice\n")
        child.stdin.flush()
        lines = [child.stdout.readline() for _ in range(3)]
        child.stdin.write(b"wonderland\n")
        child.stdin.flush()
        lines.append(child.stdout.readline())
        child.stdin.write(b"session data\n")  # after 200: the session command's
        child.stdin.close()
        rest = child.stdout.read().decode()
        error = child.stderr.read() if child.stderr else b""
    assert child.returncode == 0, error.decode()
    assert [line.decode() for line in lines] == [f"{line}\n" for line in (GREETING, USER, PASSWORD, WELCOME)]
    assert rest == "blocking True\nread session data\n"


@pytest.mark.parametrize("source", ["regular file", "/dev/null"])
def test_stdin_that_the_loop_cannot_watch(
    source: str, granted_session: nxauth.Session, sink: RecordingSink, tmp_path: Path
) -> None:
    """``nxauth login < file``: epoll refuses regular files (and they never
    block), so the fd dialogue reads them directly."""
    path = tmp_path / "answers"
    path.write_bytes(b"alice\nwonderland\n")
    read = os.open(path if source == "regular file" else os.devnull, os.O_RDONLY)
    out_r, out_w = os.pipe()
    try:
        identity = run_exchange(granted_session, LineDialogue(FdLineReader(read, max_line=MAX_LINE), out_w), timeout=5)
    finally:
        os.close(read)
        os.close(out_w)
    lines = os.read(out_r, 65536).decode().splitlines()
    os.close(out_r)
    if source == "regular file":
        assert identity is not None and lines == [GREETING, USER, PASSWORD, WELCOME]
    else:
        assert identity is None and lines == [GREETING, USER]
        assert sink.outcomes()[-1] == (2, "refused", "client-gone")


def test_interrupted_on_a_terminal(granted_session: nxauth.Session, sink: RecordingSink) -> None:
    """^C at the password prompt (SIGINT, as the terminal sends it): the
    exchange is cancelled, the terminal's echo comes back, the session is
    closed and audited, and KeyboardInterrupt reaches the caller."""
    import pty
    import signal
    import termios

    controller, terminal = pty.openpty()
    seen: list[bool] = []

    def client() -> None:
        output = b""
        while b"Password: " not in output:
            output += os.read(controller, 4096)
            if output.endswith(b"login: "):
                os.write(controller, b"alice\n")
        time.sleep(0.2)
        seen.append(bool(termios.tcgetattr(terminal)[3] & termios.ECHO))
        os.kill(os.getpid(), signal.SIGINT)

    helper = threading.Thread(target=client)
    helper.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_exchange(
                granted_session, TerminalDialogue(FdLineReader(terminal, max_line=MAX_LINE), terminal), timeout=10
            )
        helper.join(5)
        assert seen == [False]  # the password was being typed with the echo off
        assert termios.tcgetattr(terminal)[3] & termios.ECHO  # and it is back on
    finally:
        os.close(terminal)
        os.close(controller)
    assert granted_session.state is nxauth.SessionState.CLOSED
    assert sink.outcomes()[-1] == (2, "refused", "client-gone")
    assert sink.events[-1].detail == "interrupted-sigint"


# ---------------------------------------------------------------- the terminal rules


def test_both_terminal_dialogues_follow_the_same_rules() -> None:
    """What a terminal shows is defined once (terminal_prompt, terminal_text):
    the fd dialogue of ``nxauth login -t`` and the channel dialogue of the
    embedded server write the same bytes for every status line and prompt."""
    assert terminal_prompt(Code.USER, "User:") == "login: "
    assert terminal_prompt(Code.PASSWORD, "Password:") == "Password: "
    assert terminal_prompt(Code.SECRET_QUESTION, "Verification code:  ") == "Verification code: "
    assert terminal_text(Code.FAILED, "Authentication failed") == "Authentication failed.\r\n"
    assert [terminal_text(code, "x") for code in (Code.GREETING, Code.AUTHENTICATED, Code.BYE)] == ["", "", ""]

    told = [(Code.GREETING, "nxauth"), (Code.FAILED, "Authentication failed"), (Code.TIMED_OUT, "Login timed out")]
    told += [(Code.AUTHENTICATED, "Authenticated alice"), (Code.BYE, "Bye")]
    asked = [(Code.USER, "User:"), (Code.QUESTION, "Favourite colour?")]
    read, write = os.pipe()
    out_r, out_w = os.pipe()
    os.write(write, b"alice\nblue\n")
    fd_dialogue = TerminalDialogue(FdLineReader(read, max_line=MAX_LINE), out_w)
    for code, text in told:
        fd_dialogue.tell(code, text)
    for code, prompt in asked:
        fd_dialogue.ask(code, prompt, echo=True, deadline=None)
    os.close(out_w)
    fd_shown = os.read(out_r, 65536)
    for fd in (read, write, out_r):
        os.close(fd)

    async def channel_shows() -> bytes:
        channel = Channel(b"alice\rblue\r", closes=True)
        dialogue = ChannelTerminalDialogue(ChannelIO(channel, MAX_LINE))  # type: ignore[arg-type]
        for code, text in told:
            await dialogue.tell(code, text)
        for code, prompt in asked:
            await dialogue.ask(code, prompt, echo=True)
        return bytes(channel.written)

    # the channel is its own line discipline: it echoes what is typed, where a terminal's kernel would
    assert asyncio.run(channel_shows()) == fd_shown.replace(b"login: ", b"login: alice\r\n").replace(
        b"colour? ", b"colour? blue\r\n"
    )
    assert fd_shown == b"Authentication failed.\r\nLogin timed out.\r\nlogin: Favourite colour? "
