"""The embedded SSH server (integrations/asyncssh.py) with the real OpenSSH
client and with asyncssh's client: stage 1 is SSH public-key authentication
for the transport account only, the session channel runs the stage-2
exchange whatever is asked, the host's handler runs only after stage 2."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest

import nxauth
from nxauth.integrations.asyncssh import NxauthServer, ensure_host_key, start_server
from nxauth.integrations.asyncssh_client import connect_client
from nxauth.testing import RecordingSink
from tests.support.keys import ListKeySource, LoopThread, TransportKey

SSH = shutil.which("ssh")
needs_ssh = pytest.mark.skipif(SSH is None, reason="the OpenSSH client (ssh) is not installed")


@dataclass
class Running:
    server: NxauthServer
    auth: nxauth.Authenticator
    sink: RecordingSink
    key: Path
    loop: LoopThread
    identities: list[nxauth.Identity] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    def ssh(
        self,
        *command: str,
        key: Path | None = None,
        user: str = "nx",
        input: str | bytes = b"",
        options: tuple[str, ...] = (),
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[bytes]:
        """The real ssh client, as in tests/servers/sshd.py."""
        assert SSH is not None
        data = input.encode() if isinstance(input, str) else input
        result = subprocess.run(
            [
                SSH, "-F", "/dev/null", "-i", str(key or self.key), "-p", str(self.port),
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", *options,
                f"{user}@127.0.0.1", *command,
            ],
            input=data,
            capture_output=True,
            timeout=timeout,
            check=False,
        )  # fmt: skip
        self.settle()
        return result

    def popen(self, *args: str, key: Path | None = None) -> subprocess.Popen[bytes]:
        assert SSH is not None
        return subprocess.Popen(
            [
                SSH, "-F", "/dev/null", "-i", str(key or self.key), "-p", str(self.port),
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", *args, "nx@127.0.0.1",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip

    def settle(self, timeout: float = 10) -> None:
        """Wait until the server has finished every connection (and so
        emitted every event of it)."""
        deadline = time.monotonic() + timeout
        while self.server.connections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not self.server.connections, "the server did not finish its connections"

    def events(self, stage: int | None = None) -> list[tuple[int, str, str]]:
        return [o for o in self.sink.outcomes() if stage is None or o[0] == stage]


def read_all(client: subprocess.Popen[bytes], timeout: float = 20) -> bytes:
    """The client's output until it exits, its stdin left open (killed
    after ``timeout``: a hung server fails the test instead of hanging it)."""
    assert client.stdout is not None
    watchdog = threading.Timer(timeout, client.kill)
    watchdog.start()
    try:
        out = client.stdout.read()
        client.wait(timeout)
    finally:
        watchdog.cancel()
        client.kill()
        client.communicate()
    return out


def write_key(path: Path, key: TransportKey) -> Path:
    path.write_bytes(key.private_openssh())
    path.chmod(0o600)
    return path


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def host_key(tmp_path: Path) -> Path:
    return ensure_host_key(tmp_path / "host" / "ssh_host_ed25519_key")


@pytest.fixture
def embedded(
    make_auth: Callable[..., nxauth.Authenticator],
    transport_key: TransportKey,
    sink: RecordingSink,
    loop_thread: LoopThread,
    host_key: Path,
    tmp_path: Path,
) -> Iterator[Callable[..., Running]]:
    """Start the embedded server on 127.0.0.1 with the conftest authenticator
    (key source holding ``transport_key``; alice/wonderland, bob/builder)."""
    started: list[Running] = []
    key_path = write_key(tmp_path / "transport_key", transport_key)

    def start(
        mapping: Mapping[str, Any] | None = None,
        *,
        auth: nxauth.Authenticator | None = None,
        handler: Callable[..., Any] | None = None,
        login_timeout: float | None = 20,
        **options: Any,
    ) -> Running:
        authenticator = auth or make_auth(mapping)
        identities: list[nxauth.Identity] = []

        async def greet(identity: nxauth.Identity, process: Any) -> int:
            identities.append(identity)
            groups = ",".join(sorted(identity.groups))
            process.stdout.write(f"hello {identity.username} groups={groups}\n".encode())
            return 0

        server = loop_thread.run(
            start_server(authenticator, handler or greet, host_keys=[host_key], login_timeout=login_timeout, **options)
        )
        running = Running(server, authenticator, sink, key_path, loop_thread, identities)
        started.append(running)
        return running

    yield start
    for running in started:
        loop_thread.run(stop(running.server))


async def stop(server: NxauthServer) -> None:
    """On the server's loop: asyncio is not thread-safe."""
    server.close()
    await server.wait_closed()


# ---------------------------------------------------------------- the real ssh client


@needs_ssh
def test_right_key_right_password_runs_the_handler(embedded: Callable[..., Running]) -> None:
    srv = embedded()
    result = srv.ssh(input="alice\nwonderland\n")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert out.startswith("NX> 100 nxauth ")
    assert "NX> 101 User:\nNX> 102 Password:\nNX> 200 Authenticated alice\nhello alice groups=staff\n" in out
    assert [i.username for i in srv.identities] == ["alice"]
    identity = srv.identities[0]
    assert identity.peer.host == "127.0.0.1" and identity.transport is not None
    assert identity.transport.account == "nx" and identity.transport.source == "keys"
    # the query and the signed request: one stage-1 decision, audited once, after the proof
    assert srv.events() == [(1, "accepted", "ok"), (2, "accepted", "ok")]
    assert "wonderland" not in repr(srv.sink.events)


@needs_ssh
def test_unlisted_key_never_reaches_stage_2(embedded: Callable[..., Running], tmp_path: Path) -> None:
    srv = embedded()
    stranger = write_key(tmp_path / "stranger", TransportKey("stranger"))
    result = srv.ssh(key=stranger, input="alice\nwonderland\n")
    assert result.returncode == 255
    assert b"Permission denied (publickey)" in result.stderr
    assert b"NX>" not in result.stdout
    assert (1, "failed", "unknown-key") in srv.events()
    assert srv.events(2) == [] and not srv.identities
    assert all(e.outcome != "accepted" for e in srv.sink.events)


@needs_ssh
def test_wrong_password_is_denied_and_audited(embedded: Callable[..., Running]) -> None:
    srv = embedded()
    result = srv.ssh(input="alice\nnot-the-password\n")
    out = result.stdout.decode()
    assert result.returncode == 1
    assert "NX> 401 Authentication failed\nNX> 101 User:\n" in out
    assert "NX> 200" not in out and "hello" not in out
    assert srv.events(2) == [(2, "failed", "bad-password"), (2, "refused", "client-gone")]
    assert not srv.identities
    assert "not-the-password" not in repr(srv.sink.events)


@needs_ssh
def test_unknown_user_is_denied_like_a_wrong_password(embedded: Callable[..., Running]) -> None:
    srv = embedded()
    result = srv.ssh(input="mallory\nwonderland\n")
    assert result.returncode == 1
    assert "NX> 401 Authentication failed\n" in result.stdout.decode()
    failed = [e for e in srv.sink.events if e.stage == 2 and e.outcome == "failed"]
    assert [e.reason.value for e in failed] == ["no-decision"] and failed[0].invalid_user


@needs_ssh
def test_another_servers_key_pair_is_refused(
    embedded: Callable[..., Running],
    make_auth: Callable[..., nxauth.Authenticator],
    tmp_path: Path,
) -> None:
    """Each server has its own key pair: server B's key does not open server A."""
    key_b = TransportKey("server-b")
    srv_a = embedded()
    auth_b = make_auth({"state_dir": str(tmp_path / "state-b")}, backends={"keys": ListKeySource(key_b.line)})
    srv_b = embedded(auth=auth_b)
    path_b = write_key(tmp_path / "key_b", key_b)
    assert srv_b.ssh(key=path_b, input="alice\nwonderland\n").returncode == 0
    assert srv_a.ssh(key=path_b, input="alice\nwonderland\n").returncode == 255
    assert srv_b.ssh(key=srv_a.key, input="alice\nwonderland\n").returncode == 255
    assert srv_a.ssh(input="alice\nwonderland\n").returncode == 0


@needs_ssh
def test_wrong_ssh_username_is_refused(embedded: Callable[..., Running]) -> None:
    srv = embedded()
    result = srv.ssh(user="alice", input="alice\nwonderland\n")
    assert result.returncode == 255 and b"Permission denied" in result.stderr
    failed = [e for e in srv.sink.events if e.outcome == "failed"]
    assert failed and all(e.reason.value == "wrong-account" and e.invalid_user for e in failed)
    assert failed[0].username == "alice" and srv.events(2) == []


@needs_ssh
def test_a_requested_command_does_not_run(embedded: Callable[..., Running], tmp_path: Path) -> None:
    srv = embedded()
    marker = tmp_path / "pwned"
    result = srv.ssh("/bin/sh", "-c", f"'echo pwned; touch {marker}'", input="alice\nwonderland\n")
    out = result.stdout.decode()
    assert result.returncode == 0
    assert out.startswith("NX> 100 ") and "hello alice" in out
    assert "pwned" not in out and not marker.exists()


@needs_ssh
def test_a_command_before_stage_2_gets_the_exchange_not_a_shell(embedded: Callable[..., Running]) -> None:
    srv = embedded()
    result = srv.ssh("id", input="")
    assert result.returncode == 1
    assert result.stdout.decode() == "NX> 100 nxauth 0.1.0 protocol 1\nNX> 101 User:\n"
    assert srv.events(2) == [(2, "refused", "client-gone")]


@needs_ssh
@pytest.mark.parametrize("subsystem", ["sftp", "netconf"])
def test_subsystems_are_refused(embedded: Callable[..., Running], subsystem: str) -> None:
    srv = embedded()
    result = srv.ssh("-s", subsystem, input="alice\nwonderland\n")
    assert result.returncode == 255 and b"NX>" not in result.stdout
    assert not srv.identities


@needs_ssh
def test_sftp_client_is_refused(embedded: Callable[..., Running]) -> None:
    sftp = shutil.which("sftp")
    if sftp is None:
        pytest.skip("sftp is not installed")
    srv = embedded()
    result = subprocess.run(
        [sftp, "-F", "/dev/null", "-i", str(srv.key), "-P", str(srv.port), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "nx@127.0.0.1"],
        input=b"ls\n", capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode != 0 and not srv.identities


@needs_ssh
def test_remote_port_forwarding_is_refused(embedded: Callable[..., Running]) -> None:
    srv = embedded()
    result = srv.ssh("-N", options=("-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9"))
    assert result.returncode == 255
    assert b"remote port forwarding failed" in result.stderr
    assert srv.events(2) == [(2, "refused", "client-gone")]


@needs_ssh
def test_client_gone_while_stage_1_commits_is_audited_after_the_commit(
    embedded: Callable[..., Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncssh sends its success before nxauth has taken the key: a client
    that hangs up at once (ssh -N -R refused) must not race the commit.  The
    connection's end waits for it: stage 1 accepted, then stage 2 gone,
    every time (the commit is slowed here to make the race certain)."""
    import nxauth.integrations.asyncssh as embedded_module

    real = embedded_module._commit

    def slow_commit(session: Any, username: str, blob: bytes) -> bool:
        time.sleep(0.5)
        return real(session, username, blob)

    monkeypatch.setattr(embedded_module, "_commit", slow_commit)
    srv = embedded()
    result = srv.ssh("-N", options=("-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9"))
    assert result.returncode == 255
    assert srv.events() == [(1, "accepted", "ok"), (2, "refused", "client-gone")]


@needs_ssh
@pytest.mark.parametrize("how", ["-L", "-D"])
def test_local_and_dynamic_forwarding_are_refused(embedded: Callable[..., Running], how: str) -> None:
    """ssh opens a direct-tcpip channel per local connection: refused, and the
    target never sees a connection."""
    srv = embedded()
    with socket.socket() as target, socket.socket() as spare:
        target.bind(("127.0.0.1", 0))
        target.listen()
        target.settimeout(0.5)
        spare.bind(("127.0.0.1", 0))
        local = spare.getsockname()[1]
        spare.close()
        spec = f"{local}:127.0.0.1:{target.getsockname()[1]}" if how == "-L" else str(local)
        client = srv.popen("-N", "-o", "ExitOnForwardFailure=yes", how, spec)
        try:
            deadline = time.monotonic() + 10
            while True:  # wait for ssh's local listener
                try:
                    conn = socket.create_connection(("127.0.0.1", local), timeout=5)
                    break
                except ConnectionRefusedError:
                    assert time.monotonic() < deadline and client.poll() is None, "ssh did not listen"
                    time.sleep(0.02)
            with conn:
                if how == "-D":  # SOCKS5: no auth, then CONNECT to the target
                    conn.sendall(b"\x05\x01\x00")
                    assert conn.recv(2) == b"\x05\x00"
                    conn.sendall(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + target.getsockname()[1].to_bytes(2, "big"))
                    reply = conn.recv(10)
                    assert reply == b"" or reply[1] != 0
                else:
                    conn.settimeout(5)
                    assert conn.recv(100) == b""  # closed at once, nothing forwarded
            with pytest.raises(TimeoutError):
                target.accept()
        finally:
            client.terminate()
            client.communicate(timeout=10)
    srv.settle()
    assert srv.events(2) == [(2, "refused", "client-gone")] and not srv.identities


@needs_ssh
def test_no_channel_after_stage_1_is_cut_at_the_login_timeout(embedded: Callable[..., Running]) -> None:
    srv = embedded(login_timeout=0.5)
    started = time.monotonic()
    result = srv.ssh("-N", timeout=20)
    assert result.returncode == 255
    assert time.monotonic() - started < 10
    refused = [e for e in srv.sink.events if e.outcome == "refused"]
    assert [(e.stage, e.reason.value) for e in refused] == [(2, "login-timeout")]
    assert refused[0].detail == "no-session-channel"


@needs_ssh
def test_too_many_attempts_closes_the_session(embedded: Callable[..., Running]) -> None:
    srv = embedded({"session": {"max_attempts": 3}})
    result = srv.ssh(input="alice\nx1\nalice\nx2\nalice\nx3\nalice\nwonderland\n")
    out = result.stdout.decode()
    assert result.returncode == 1
    assert out.count("NX> 401 Authentication failed") == 2
    assert out.endswith("NX> 403 Too many attempts\nNX> 999 Bye\n")
    assert (0, "refused", "too-many-attempts") in srv.events() and not srv.identities


@needs_ssh
def test_an_overlong_line_is_a_bad_request(embedded: Callable[..., Running]) -> None:
    srv = embedded({"session": {"max_password_bytes": 64}})
    result = srv.ssh(input="alice\n" + "p" * 200 + "\n")
    out = result.stdout.decode()
    assert result.returncode == 1
    assert out.endswith("NX> 102 Password:\nNX> 400 Bad request\nNX> 999 Bye\n")
    assert srv.events(2) == [(2, "refused", "protocol-error")]


@needs_ssh
@pytest.mark.parametrize("ending", ["\n", "\r\n"], ids=["LF", "CR LF"])
@pytest.mark.parametrize("char", ["p", "\u20ac"], ids=["ascii", "3-byte"])
@pytest.mark.parametrize("over", [-1, 0, 1], ids=["limit - 1", "limit", "limit + 1"])
def test_a_line_one_byte_over_the_limit_is_a_bad_request(
    embedded: Callable[..., Running], over: int, char: str, ending: str
) -> None:
    """docs/protocol.md, Limits: a line of at most max_password_bytes bytes
    (a CR before the LF not counted) is read; one byte more is ``400``, not a
    wrong password asked again (the old server read limit + 1 bytes)."""
    srv = embedded({"session": {"max_password_bytes": 64}})
    width = len(char.encode())
    size = 64 + over
    password = "p" * (size % width) + char * (size // width)
    assert len(password.encode()) == size
    result = srv.ssh(input="alice\n" + password + ending)
    out = result.stdout.decode()
    if over > 0:
        assert out.endswith("NX> 102 Password:\nNX> 400 Bad request\nNX> 999 Bye\n")
        assert srv.events(2) == [(2, "refused", "protocol-error")]
    else:
        assert "NX> 102 Password:\nNX> 401 Authentication failed\nNX> 101 User:\n" in out
        assert srv.events(2)[0] == (2, "failed", "bad-password")


@needs_ssh
def test_a_line_that_is_not_utf8_is_a_bad_request(embedded: Callable[..., Running]) -> None:
    srv = embedded()
    result = srv.ssh(input=b"al\xffice\nwonderland\n")
    assert result.returncode == 1 and result.stdout.endswith(b"NX> 400 Bad request\nNX> 999 Bye\n")
    assert srv.events(2) == [(2, "refused", "protocol-error")]


@needs_ssh
def test_login_timeout_is_408(embedded: Callable[..., Running]) -> None:
    srv = embedded(login_timeout=0.5)
    client = srv.popen()
    out = read_all(client)  # stdin stays open: the client just waits
    assert client.returncode == 1
    assert out.endswith(b"NX> 101 User:\nNX> 408 Login timed out\nNX> 999 Bye\n")
    srv.settle()
    assert srv.events(2) == [(2, "refused", "login-timeout")]


@needs_ssh
def test_pty_mode_prompts_like_a_terminal(embedded: Callable[..., Running]) -> None:
    srv = embedded()
    result = srv.ssh(options=("-tt",), input="alice\rwonderland\r")
    out = result.stdout.decode()
    assert result.returncode == 0, out
    assert "login: alice\r\nPassword: \r\n" in out
    assert "wonderland" not in out and "NX>" not in out
    assert "hello alice" in out


@needs_ssh
@pytest.mark.parametrize(
    ("options", "terminal"),
    [("restrict", False), ("no-pty", False), ("pty,restrict", False), ("restrict,pty", True)],
)
def test_the_keys_pty_permission_is_applied(
    embedded: Callable[..., Running],
    make_auth: Callable[..., nxauth.Authenticator],
    transport_key: TransportKey,
    options: str,
    terminal: bool,
) -> None:
    """As sshd does: ``no-pty``, or ``restrict`` not followed by ``pty``,
    refuses a terminal (``ssh -t`` then gives up, as it does with sshd); the
    key still logs in without one, over the line protocol."""
    auth = make_auth(backends={"keys": ListKeySource(f"{options} {transport_key.line}")})
    srv = embedded(auth=auth)
    result = srv.ssh(options=("-tt",), input="alice\rwonderland\r")
    out, err = result.stdout.decode(), result.stderr.decode()
    if terminal:
        assert result.returncode == 0, out + err
        assert "login: alice\r\nPassword: \r\n" in out and "NX>" not in out
        assert "hello alice" in out
        return
    assert result.returncode == 255
    assert "PTY allocation request failed" in err
    assert "hello" not in out
    srv.settle()
    assert not [e for e in srv.sink.events if e.stage == 2 and e.accepted]
    result = srv.ssh(input="alice\nwonderland\n")
    assert result.returncode == 0
    assert "NX> 101 User:" in result.stdout.decode() and "hello alice" in result.stdout.decode()


@needs_ssh
def test_pty_mode_line_editing(embedded: Callable[..., Running]) -> None:
    srv = embedded()
    # backspaces, ^U, an arrow key, CR LF as one Enter
    result = srv.ssh(options=("-tt",), input="alixx\x7f\x7fce\x1b[A\r\nxyz\x15wonderland\r")
    assert result.returncode == 0, result.stdout
    assert [i.username for i in srv.identities] == ["alice"]


@needs_ssh
def test_pty_mode_ctrl_c_ends_the_exchange(embedded: Callable[..., Running]) -> None:
    srv = embedded()
    result = srv.ssh(options=("-tt",), input="ali\x03")
    assert result.returncode == 1 and not srv.identities
    refused = [e for e in srv.sink.events if e.outcome == "refused"]
    assert [(e.reason.value, e.detail) for e in refused] == [("client-gone", "client-closed-channel")]


class OneTimeCode:
    """A backend that asks a one-time code after the password (Attempt.ask)."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def authenticate(self, attempt: nxauth.Attempt) -> nxauth.Verdict:
        if attempt.username != "carol":
            return nxauth.Verdict.abstain()
        if attempt.password.reveal() != "pw":
            return nxauth.Verdict.deny(nxauth.Reason.BAD_PASSWORD)
        self.prompts.append("Verification code:")
        code = attempt.ask("Verification code:", echo=False)
        if code.reveal() != "123456":
            return nxauth.Verdict.deny(nxauth.Reason.BAD_PASSWORD, "wrong code")
        return nxauth.Verdict.allow()

    def check_account(self, identity: nxauth.Identity) -> nxauth.Verdict:
        return nxauth.Verdict.allow()


@pytest.fixture
def otp_auth(tmp_path: Path, transport_key: TransportKey, sink: RecordingSink) -> Iterator[nxauth.Authenticator]:
    auth = nxauth.Authenticator.from_mapping(
        {
            "state_dir": str(tmp_path / "otp-state"),
            "transport": {"key_sources": ["keys"]},
            "auth": [{"use": "otp"}],
            "account": [{"use": "otp"}],
        },
        backends={"keys": ListKeySource(transport_key.line), "otp": OneTimeCode()},
        plugins=[sink],
        entry_points=False,
    )
    yield auth
    auth.close()


@needs_ssh
def test_a_backends_question_is_relayed_as_nx_103(
    embedded: Callable[..., Running], otp_auth: nxauth.Authenticator
) -> None:
    srv = embedded(auth=otp_auth)
    result = srv.ssh(input="carol\npw\n123456\n")
    out = result.stdout.decode()
    assert result.returncode == 0, out
    assert "NX> 102 Password:\nNX> 103 Verification code:\nNX> 200 Authenticated carol\n" in out
    assert srv.events(2) == [(2, "accepted", "ok")]


@needs_ssh
def test_a_wrong_code_is_denied(embedded: Callable[..., Running], otp_auth: nxauth.Authenticator) -> None:
    srv = embedded(auth=otp_auth)
    result = srv.ssh(input="carol\npw\n000000\n")
    assert result.returncode == 1 and "NX> 401" in result.stdout.decode()
    assert (2, "failed", "bad-password") in srv.events()


@needs_ssh
def test_timeout_while_a_question_waits_leaves_the_server_responsive(
    embedded: Callable[..., Running], otp_auth: nxauth.Authenticator
) -> None:
    """The login runs in a worker thread holding the session's lock while it
    waits for the answer: the timeout must not block the event loop on it."""
    srv = embedded(auth=otp_auth, login_timeout=1)
    client = srv.popen()
    assert client.stdin is not None
    client.stdin.write(b"carol\npw\n")
    client.stdin.flush()  # and never answers the code
    out = read_all(client)
    assert client.returncode == 1
    assert out.endswith(b"NX> 103 Verification code:\nNX> 408 Login timed out\nNX> 999 Bye\n")
    result = srv.ssh(input="carol\npw\n123456\n")  # the server still answers
    assert result.returncode == 0
    reasons = [(e.stage, e.outcome, e.reason.value) for e in srv.sink.events if e.stage == 2]
    assert reasons[:2] == [(2, "failed", "conversation-failed"), (2, "refused", "login-timeout")]
    assert reasons[-1] == (2, "accepted", "ok")


@needs_ssh
def test_exit_status_and_stdin_of_the_handler(embedded: Callable[..., Running]) -> None:
    """What the client sends after the password is the handler's, unread by the exchange."""

    async def echo(identity: nxauth.Identity, process: Any) -> int:
        data = await process.stdin.read()
        process.stdout.write(b"got " + data)
        return 7

    srv = embedded(handler=echo)
    result = srv.ssh(input="alice\nwonderland\nsome input\nmore\n")
    assert result.returncode == 7
    assert result.stdout.endswith(b"NX> 200 Authenticated alice\ngot some input\nmore\n")


@needs_ssh
def test_a_failing_handler_ends_the_channel_not_the_server(embedded: Callable[..., Running]) -> None:
    async def broken(identity: nxauth.Identity, process: Any) -> int:
        raise RuntimeError("boom")

    srv = embedded(handler=broken)
    assert srv.ssh(input="alice\nwonderland\n").returncode == 1
    assert srv.ssh(input="alice\nwonderland\n").returncode == 1  # still serving


@needs_ssh
def test_client_gone_after_stage_1_is_audited(embedded: Callable[..., Running]) -> None:
    srv = embedded()
    client = srv.popen("-N")
    deadline = time.monotonic() + 10
    while not srv.events(1) and time.monotonic() < deadline:
        time.sleep(0.01)
    client.terminate()
    client.communicate(timeout=10)
    srv.settle()
    refused = [e for e in srv.sink.events if e.outcome == "refused"]
    assert [(e.stage, e.reason.value, e.detail) for e in refused] == [(2, "client-gone", "closed-before-stage-2")]


# ---------------------------------------------------------------- asyncssh's client


def test_asyncssh_client_logs_in(embedded: Callable[..., Running], host_key: Path) -> None:
    srv = embedded()
    host_line = host_key.with_name(host_key.name + ".pub").read_text()

    async def login() -> tuple[bytes, int]:
        client = await connect_client("127.0.0.1", srv.port, client_key=srv.key, host_key=host_line)
        lines = b""
        for answer in (b"alice\n", b"wonderland\n"):
            while not (line := await client.readline()).startswith((b"NX> 101", b"NX> 102")):
                lines += line
            lines += line
            await client.write(answer)
        client.close_input()
        while line := await client.readline():
            lines += line
        return lines, await client.wait()

    out, status = srv.loop.run(login())
    assert status == 0 and out.endswith(b"NX> 200 Authenticated alice\nhello alice groups=staff\n")


def test_asyncssh_client_with_an_unlisted_key_is_refused(embedded: Callable[..., Running], tmp_path: Path) -> None:
    srv = embedded()
    stranger = write_key(tmp_path / "stranger", TransportKey("stranger"))
    with pytest.raises(PermissionError):
        srv.loop.run(connect_client("127.0.0.1", srv.port, client_key=stranger, host_key=None))
    srv.settle()
    assert (1, "failed", "unknown-key") in srv.events() and srv.events(2) == []


def test_a_checked_host_key_must_match(embedded: Callable[..., Running]) -> None:
    srv = embedded()
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    with pytest.raises(ConnectionError):
        srv.loop.run(connect_client("127.0.0.1", srv.port, client_key=srv.key, host_key=other))


def test_a_second_key_after_a_refused_one_is_decided_once_each(
    embedded: Callable[..., Running], tmp_path: Path, transport_key: TransportKey
) -> None:
    srv = embedded()
    stranger = asyncssh.import_private_key(TransportKey("stranger").private_openssh())
    right = asyncssh.import_private_key(transport_key.private_openssh())

    async def login() -> None:
        async with asyncssh.connect(
            "127.0.0.1", srv.port, username="nx", client_keys=[stranger, right], known_hosts=None,
            agent_path=None, config=None,
        ) as conn:  # fmt: skip
            assert conn is not None

    srv.loop.run(login())
    srv.settle()
    assert srv.events(1) == [(1, "failed", "unknown-key"), (1, "accepted", "ok")]


def test_password_and_keyboard_interactive_are_off(embedded: Callable[..., Running]) -> None:
    srv = embedded()

    async def try_password() -> None:
        await asyncssh.connect(
            "127.0.0.1", srv.port, username="nx", password="anything", client_keys=None, known_hosts=None,
            agent_path=None, config=None,
        )  # fmt: skip

    with pytest.raises(asyncssh.PermissionDenied):
        srv.loop.run(try_password())
    srv.settle()
    assert srv.events(2) == []


def test_too_many_stage_1_failures_hang_up(embedded: Callable[..., Running]) -> None:
    srv = embedded({"session": {"max_attempts": 2}})
    strangers = [asyncssh.import_private_key(TransportKey(f"s{i}").private_openssh()) for i in range(4)]

    async def login() -> None:
        await asyncssh.connect(
            "127.0.0.1", srv.port, username="nx", client_keys=strangers, known_hosts=None, agent_path=None,
            config=None,
        )  # fmt: skip

    with pytest.raises(asyncssh.DisconnectError, match="Too many authentication failures"):
        srv.loop.run(login())
    srv.settle()
    assert srv.events(1)[:2] == [(1, "failed", "unknown-key"), (1, "failed", "unknown-key")]
    assert (0, "refused", "too-many-attempts") in srv.events()
    assert len([e for e in srv.events(1) if e[1] == "failed"]) == 2


def test_forwarding_and_second_channels_through_asyncssh(embedded: Callable[..., Running]) -> None:
    srv = embedded()

    async def attempt() -> list[str]:
        refused = []
        async with asyncssh.connect(
            "127.0.0.1", srv.port, username="nx", client_keys=[srv.key], known_hosts=None, agent_path=None,
            config=None,
        ) as conn:  # fmt: skip
            try:
                await conn.create_connection(asyncssh.SSHTCPSession, "127.0.0.1", 22)
            except asyncssh.ChannelOpenError:
                refused.append("direct-tcpip")
            try:
                await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 22)
            except asyncssh.ChannelListenError:
                refused.append("tcpip-forward")
            try:
                await conn.create_unix_connection(asyncssh.SSHUNIXSession, "/run/docker.sock")
            except asyncssh.ChannelOpenError:
                refused.append("direct-streamlocal")
            first = await conn.create_process(encoding=None)
            try:
                await conn.create_process(encoding=None)
            except asyncssh.ChannelOpenError:
                refused.append("second session")
            first.close()
        return refused

    assert srv.loop.run(attempt()) == ["direct-tcpip", "tcpip-forward", "direct-streamlocal", "second session"]
    srv.settle()
    assert not srv.identities


def test_agent_and_x11_requests_are_refused(embedded: Callable[..., Running]) -> None:
    srv = embedded()

    async def attempt() -> tuple[bool, bool]:
        async with asyncssh.connect(
            "127.0.0.1", srv.port, username="nx", client_keys=[srv.key], known_hosts=None, agent_path=None,
            config=None,
        ) as conn:  # fmt: skip
            chan, _ = await conn.create_session(asyncssh.SSHClientSession, encoding=None)
            agent = await chan._make_request(b"auth-agent-req@openssh.com")
            x11 = await chan._make_request(
                b"x11-req", asyncssh.packet.Boolean(False), asyncssh.packet.String(b"MIT-MAGIC-COOKIE-1"),
                asyncssh.packet.String(b"00" * 16), asyncssh.packet.UInt32(0),
            )  # fmt: skip
            chan.close()
        return agent, x11

    assert srv.loop.run(attempt()) == (False, False)


# ---------------------------------------------------------------- the API


def test_start_server_refuses_options_that_open_another_way_in(
    make_auth: Callable[..., nxauth.Authenticator], loop_thread: LoopThread, host_key: Path
) -> None:
    auth = make_auth()

    async def handler(identity: nxauth.Identity, process: Any) -> int:
        return 0

    for option in ("authorized_client_keys", "password_auth", "agent_forwarding", "sftp_factory", "process_factory"):
        with pytest.raises(nxauth.UsageError, match=option):
            loop_thread.run(start_server(auth, handler, host_keys=[host_key], **{option: None}))
    with pytest.raises(nxauth.UsageError):
        loop_thread.run(start_server(auth, handler, host_keys=[]))
    with pytest.raises(nxauth.UsageError):
        loop_thread.run(start_server(auth, handler, host_keys=[host_key], login_timeout=0))


def test_server_as_context_manager_closes_connections(
    embedded: Callable[..., Running], loop_thread: LoopThread
) -> None:
    srv = embedded()

    async def hold() -> None:
        conn = await asyncssh.connect(
            "127.0.0.1", srv.port, username="nx", client_keys=[srv.key], known_hosts=None, agent_path=None,
            config=None,
        )  # fmt: skip
        assert srv.server.connections == 1
        # the client hears "success" before the server has committed stage 1
        # in a worker thread: closing in between is a stage-1 client-gone
        for _ in range(200):
            if (1, "accepted", "ok") in srv.events(1):
                break
            await asyncio.sleep(0.01)
        assert (1, "accepted", "ok") in srv.events(1)
        async with srv.server:
            pass
        await asyncio.wait_for(conn.wait_closed(), 10)

    loop_thread.run(hold())
    assert srv.server.connections == 0
    assert srv.events(2) == [(2, "refused", "client-gone")]


def test_ensure_host_key(tmp_path: Path) -> None:
    path = tmp_path / "new" / "ssh_host_ed25519_key"
    assert ensure_host_key(path) == path
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    public = path.with_name(path.name + ".pub").read_text()
    assert public.startswith("ssh-ed25519 ")
    before = path.read_bytes()
    ensure_host_key(path)
    assert path.read_bytes() == before  # never regenerated
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
    path.chmod(0o640)
    with pytest.raises(nxauth.ConfigError, match="accessible by others"):
        ensure_host_key(path)
    path.unlink()
    path.mkdir()
    with pytest.raises(nxauth.ConfigError, match="not a regular file"):
        ensure_host_key(path)


@pytest.mark.parametrize("fmt", ["openssh", "pkcs1-pem"])
def test_ensure_host_key_derives_a_missing_pub(tmp_path: Path, fmt: str) -> None:
    """An administrator's own key (an RSA key in PEM too) is used as it is."""
    key = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
    path = tmp_path / "ssh_host_rsa_key"
    path.write_bytes(key.export_private_key(fmt))
    path.chmod(0o600)
    ensure_host_key(path)
    assert path.with_name(path.name + ".pub").read_text().split()[:2] == key.export_public_key().decode().split()[:2]
    garbage = tmp_path / "garbage_key"
    garbage.write_text("not a key\n")
    garbage.chmod(0o600)
    with pytest.raises(nxauth.ConfigError, match="cannot be read"):
        ensure_host_key(garbage)


def test_ensure_host_key_concurrent_first_start_keeps_one_key(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ssh_host_ed25519_key"
    threads = [threading.Thread(target=ensure_host_key, args=(path,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    key = asyncssh.read_private_key(path)
    assert path.with_name(path.name + ".pub").read_text().split()[1] == key.export_public_key().decode().split()[1]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".pub"]


def test_the_core_does_not_import_asyncssh() -> None:
    """asyncssh is the ssh extra: importing nxauth (and its CLI) must not need
    it; building the CLI's parser (every command does) does not load asyncio."""
    code = (
        "import sys, nxauth, nxauth.cli, nxauth.cli.serve, nxauth.cli.demo; nxauth.cli.build_parser(); "
        "assert 'asyncio' not in sys.modules, 'asyncio imported'; "
        "import nxauth.cli.demo_run, nxauth.integrations.protocol, nxauth.integrations.hostkey; "
        "assert 'asyncssh' not in sys.modules, 'asyncssh imported'"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    result = subprocess.run([os.sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr


def test_verify_required_security_key_is_refused_fail_closed(tmp_path: Path) -> None:
    """asyncssh does not hand over a security key's signature flags, so the
    embedded server cannot enforce ``verify-required``: it refuses such a key
    (audited) instead of accepting it without user verification."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from nxauth.integrations.asyncssh import _probe
    from nxauth.testing import RecordingSink

    def s(data: bytes | str) -> bytes:
        raw = data.encode() if isinstance(data, str) else data
        return len(raw).to_bytes(4, "big") + raw

    raw = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    blob = s("sk-ssh-ed25519@openssh.com") + s(raw) + s("ssh:")
    line = f"sk-ssh-ed25519@openssh.com {base64.b64encode(blob).decode()}"
    sink = RecordingSink()
    results = {}
    for options in ("verify-required ", ""):
        keys = tmp_path / f"keys{len(options)}"
        keys.write_text(options + line + "\n")
        keys.chmod(0o600)
        auth = nxauth.Authenticator.from_mapping(
            {
                "state_dir": str(tmp_path / "state"),
                "transport": {"key_sources": ["file"]},
                "backends": {"file": {"kind": "authorized_keys", "path": str(keys)}},
            },
            plugins=[sink],
        )
        session = auth.open_session(("127.0.0.1", 5000))
        results[options] = _probe(session, "nx", blob)  # what validate_public_key runs
        assert session.transport is None  # a dry run grants nothing either way
        auth.close()
    assert results == {"verify-required ": False, "": True}
    refused = [e for e in sink.events if e.outcome == "failed"]
    assert [e.reason for e in refused] == [nxauth.Reason.KEY_TYPE_REFUSED]
    assert "verify-required" in refused[0].detail
