"""The stage-2 line protocol and ``nxauth login``'s flow, over real pipes and
a real pseudo-terminal (no sshd: tests/test_openssh_e2e.py has that)."""

from __future__ import annotations

import os
import pty
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest

import nxauth
from nxauth.integrations.exchange import run_exchange_async
from nxauth.integrations.openssh import peer_from_connection, run_login, transport_keys_from_user_auth
from nxauth.integrations.protocol import (
    ClientGone,
    Code,
    FdLineReader,
    LoginTimeout,
    ProtocolViolation,
    identity_environment,
)
from nxauth.keys.formats import parse_public_key
from nxauth.testing import RecordingSink
from tests.support.backends import LateAllow
from tests.support.keys import ListKeySource, TransportKey

PASSWORD = "s3cret-Pa55"


class Exec(Exception):
    def __init__(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.argv = list(argv)
        self.env = dict(env)


def fake_exec(argv: Sequence[str], env: Mapping[str, str]) -> NoReturn:
    raise Exec(argv, env)


@pytest.fixture
def login_auth(tmp_path: Path, sink: RecordingSink, transport_key: TransportKey) -> Iterator[nxauth.Authenticator]:
    auth = nxauth.Authenticator.from_mapping(
        {
            "state_dir": str(tmp_path / "state"),
            "session": {"max_attempts": 3},
            "login": {"command": ["/bin/echo", "session"], "timeout": 5},
            "transport": {"key_sources": ["keys"]},
        },
        backends={"keys": ListKeySource(transport_key.line)},
        plugins=[sink],
    )
    from nxauth.backends.hashing import PasswordHasher
    from nxauth.backends.userdb import UserDatabase

    UserDatabase(auth.store).add("alice", password_hash=PasswordHasher().hash(nxauth.Secret(PASSWORD)))
    with auth:
        yield auth


def converse(
    auth: nxauth.Authenticator,
    client_input: bytes,
    *,
    user_auth: str | None,
    environ: Mapping[str, str] | None = None,
    account: str = "nx",
) -> tuple[int | Exec, str]:
    """Run ``run_login`` with pipes: the client's input written up front."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    os.write(in_w, client_input)
    os.close(in_w)
    env = dict(environ or {"SSH_CONNECTION": "198.51.100.7 52100 192.0.2.1 22"})
    if user_auth is not None:
        env["SSH_USER_AUTH"] = user_auth
    result: int | Exec
    try:
        result = run_login(
            auth, account=account, environ=env, stdin_fd=in_r, stdout_fd=out_w, terminal=False, execute=fake_exec
        )
    except Exec as done:
        result = done
    finally:
        os.close(out_w)
        os.close(in_r)
    chunks = []
    while chunk := os.read(out_r, 65536):
        chunks.append(chunk)
    os.close(out_r)
    return result, b"".join(chunks).decode()


def user_auth_file(tmp_path: Path, key: TransportKey) -> str:
    path = tmp_path / "user_auth"
    path.write_text(f"publickey {key.line}\n")
    return str(path)


def test_login_then_session_command_with_identity_environment(
    login_auth: nxauth.Authenticator, tmp_path: Path, transport_key: TransportKey, sink: RecordingSink
) -> None:
    result, out = converse(
        login_auth, f"alice\n{PASSWORD}\n".encode(), user_auth=user_auth_file(tmp_path, transport_key)
    )
    assert isinstance(result, Exec)
    assert result.argv == ["/bin/echo", "session"]
    assert result.env["NXAUTH_USER"] == "alice"
    assert result.env["NXAUTH_PEER"] == "198.51.100.7 52100"
    assert result.env["NXAUTH_TRANSPORT_KEY"] == parse_public_key(transport_key.line).fingerprint
    assert out.splitlines()[1:] == ["NX> 101 User:", "NX> 102 Password:", "NX> 200 Authenticated alice"]
    assert PASSWORD not in out
    assert [(e.stage, e.outcome) for e in sink.events] == [(1, "accepted"), (2, "accepted")]
    assert sink.events[0].peer == nxauth.Peer("198.51.100.7", 52100)


def test_inherited_nxauth_variables_are_replaced(
    login_auth: nxauth.Authenticator, tmp_path: Path, transport_key: TransportKey
) -> None:
    environ = {"SSH_CONNECTION": "198.51.100.7 1 192.0.2.1 22", "NXAUTH_USER": "root", "NXAUTH_ADMIN": "1"}
    result, _ = converse(
        login_auth, f"alice\n{PASSWORD}\n".encode(), user_auth=user_auth_file(tmp_path, transport_key), environ=environ
    )
    assert isinstance(result, Exec)
    assert result.env["NXAUTH_USER"] == "alice"
    assert "NXAUTH_ADMIN" not in result.env


def test_failures_then_too_many_attempts(
    login_auth: nxauth.Authenticator, tmp_path: Path, transport_key: TransportKey, sink: RecordingSink
) -> None:
    client = b"alice\nx1\nalice\nx2\nbob\nx3\nalice\n" + PASSWORD.encode() + b"\n"
    result, out = converse(login_auth, client, user_auth=user_auth_file(tmp_path, transport_key))
    assert result == 1
    lines = out.splitlines()
    assert lines.count("NX> 401 Authentication failed") == 2
    assert lines[-2:] == ["NX> 403 Too many attempts", "NX> 999 Bye"]
    reasons = [e.reason.value for e in sink.events if e.stage == 2]
    assert reasons == ["bad-password", "bad-password", "unknown-user"]


def test_no_user_auth_is_an_internal_error_not_a_login(login_auth: nxauth.Authenticator, sink: RecordingSink) -> None:
    result, out = converse(login_auth, f"alice\n{PASSWORD}\n".encode(), user_auth=None)
    assert result == 5
    assert out.splitlines() == ["NX> 500 Internal error", "NX> 999 Bye"]
    assert [(e.stage, e.outcome, e.reason) for e in sink.events] == [(1, "refused", nxauth.Reason.STAGE_ORDER)]
    assert sink.events[0].detail == "no-key-in-ssh-user-auth"


def test_key_removed_since_sshd_accepted_it(
    login_auth: nxauth.Authenticator, tmp_path: Path, sink: RecordingSink
) -> None:
    stranger = TransportKey(comment="stranger")
    result, out = converse(login_auth, f"alice\n{PASSWORD}\n".encode(), user_auth=user_auth_file(tmp_path, stranger))
    assert result == 1
    assert out.splitlines() == ["NX> 401 Authentication failed", "NX> 999 Bye"]
    assert [e.reason for e in sink.events] == [nxauth.Reason.UNKNOWN_KEY]


def test_wrong_unix_account_is_refused_at_stage_1(
    login_auth: nxauth.Authenticator, tmp_path: Path, transport_key: TransportKey, sink: RecordingSink
) -> None:
    result, _ = converse(
        login_auth, f"alice\n{PASSWORD}\n".encode(), user_auth=user_auth_file(tmp_path, transport_key), account="www"
    )
    assert result == 1
    assert sink.events[0].reason is nxauth.Reason.WRONG_ACCOUNT


def test_client_gone_is_audited(
    login_auth: nxauth.Authenticator, tmp_path: Path, transport_key: TransportKey, sink: RecordingSink
) -> None:
    result, out = converse(login_auth, b"alice\n", user_auth=user_auth_file(tmp_path, transport_key))
    assert result == 1
    assert "NX> 102 Password:" in out
    assert sink.events[-1].reason is nxauth.Reason.CLIENT_GONE


def test_over_long_line_is_a_protocol_error(
    login_auth: nxauth.Authenticator, tmp_path: Path, transport_key: TransportKey, sink: RecordingSink
) -> None:
    too_long = b"alice\n" + b"p" * (login_auth.config.session.max_password_bytes + 10) + b"\nalice\n"
    result, out = converse(login_auth, too_long, user_auth=user_auth_file(tmp_path, transport_key))
    assert result == 1
    assert out.splitlines()[-2:] == ["NX> 400 Bad request", "NX> 999 Bye"]
    assert sink.events[-1].reason is nxauth.Reason.PROTOCOL_ERROR
    assert all(e.stage != 2 or e.outcome != "accepted" for e in sink.events)


def test_not_utf8_is_a_protocol_error(
    login_auth: nxauth.Authenticator, tmp_path: Path, transport_key: TransportKey, sink: RecordingSink
) -> None:
    result, out = converse(login_auth, b"al\xffice\n", user_auth=user_auth_file(tmp_path, transport_key))
    assert result == 1 and "NX> 400 Bad request" in out
    assert sink.events[-1].reason is nxauth.Reason.PROTOCOL_ERROR


def test_login_timeout(tmp_path: Path, transport_key: TransportKey, sink: RecordingSink) -> None:
    auth = nxauth.Authenticator.from_mapping(
        {
            "state_dir": str(tmp_path / "state"),
            "login": {"timeout": 1},
            "transport": {"key_sources": ["keys"]},
        },
        backends={"keys": ListKeySource(transport_key.line)},
        plugins=[sink],
    )
    in_r, in_w = os.pipe()  # the client never writes, never closes
    out_r, out_w = os.pipe()
    started = time.monotonic()
    status = run_login(
        auth,
        account="nx",
        environ={"SSH_USER_AUTH": user_auth_file(tmp_path, transport_key)},
        stdin_fd=in_r,
        stdout_fd=out_w,
        terminal=False,
        execute=fake_exec,
    )
    elapsed = time.monotonic() - started
    for fd in (in_w, out_w, in_r):
        os.close(fd)
    out = os.read(out_r, 65536).decode()
    os.close(out_r)
    auth.close()
    assert status == 1
    assert 0.9 < elapsed < 5
    assert out.splitlines()[-2:] == ["NX> 408 Login timed out", "NX> 999 Bye"]
    assert sink.events[-1].reason is nxauth.Reason.LOGIN_TIMEOUT


class ScriptedDialogue:
    """An :class:`AsyncDialogue` that answers from a list and records what it was told."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.told: list[tuple[int, str]] = []

    async def ask(self, code: Code, prompt: str, *, echo: bool) -> str:
        return self.answers.pop(0)

    async def tell(self, code: Code, text: str) -> None:
        self.told.append((int(code), text))


def test_a_backend_answering_after_the_login_timeout_is_not_honoured(
    tmp_path: Path, transport_key: TransportKey, sink: RecordingSink
) -> None:
    """``login.timeout`` bounds the whole exchange, backends included: a late
    allow is a timeout for the client and for the audit trail, and the
    session command does not run."""
    with nxauth.Authenticator.from_mapping(
        {
            "state_dir": str(tmp_path / "state"),
            "login": {"command": ["/bin/echo", "session"], "timeout": 1},  # its minimum
            "transport": {"key_sources": ["keys"]},
            "auth": [{"use": "late"}],
            "account": [{"use": "late"}],
        },
        backends={"late": LateAllow(1.3), "keys": ListKeySource(transport_key.line)},
        plugins=[sink],
    ) as auth:
        result, out = converse(auth, b"alice\npw\n", user_auth=user_auth_file(tmp_path, transport_key))
    assert result == 1  # no Exec: the session command never ran
    assert out.splitlines()[-2:] == ["NX> 408 Login timed out", "NX> 999 Bye"]
    assert "Authenticated" not in out
    assert sink.outcomes()[-2:] == [(2, "failed", "login-timeout"), (2, "refused", "login-timeout")]
    assert not [e for e in sink.events if e.stage == 2 and e.accepted]


def test_async_exchange_does_not_let_a_late_login_complete(
    tmp_path: Path, transport_key: TransportKey, sink: RecordingSink
) -> None:
    """asyncio's exchange gives up at the timeout while the backend still
    runs in a worker thread; that login then fails instead of completing."""
    import asyncio

    with nxauth.Authenticator.from_mapping(
        {
            "state_dir": str(tmp_path / "state"),
            "transport": {"key_sources": ["keys"]},
            "auth": [{"use": "late"}],
            "account": [{"use": "late"}],
        },
        backends={"late": LateAllow(0.6), "keys": ListKeySource(transport_key.line)},
        plugins=[sink],
    ) as auth:
        session = auth.open_session(peer=("198.51.100.7", 52100))
        session.check_transport_key("nx", transport_key.line)
        dialogue = ScriptedDialogue("alice", "pw")
        assert asyncio.run(run_exchange_async(session, dialogue, timeout=0.3)) is None
    assert dialogue.told[-2:] == [(408, "Login timed out"), (999, "Bye")]
    assert sink.outcomes()[-2:] == [(2, "failed", "login-timeout"), (2, "refused", "login-timeout")]
    assert not [e for e in sink.events if e.stage == 2 and e.accepted]


def test_async_exchange_keeps_a_login_allowed_just_inside_its_deadline(
    tmp_path: Path, transport_key: TransportKey, sink: RecordingSink
) -> None:
    """The backend allows in time, but recording it (a slow audit sink) ends
    after wait_for gave up: the login was accepted and audited, so the client
    is told so, not 408 on an authenticated session."""
    import asyncio

    class SlowSink:
        @nxauth.hookimpl
        def nxauth_auth_event(self, event: nxauth.AuthEvent) -> None:
            if event.accepted and event.stage == 2:
                time.sleep(0.4)

    with nxauth.Authenticator.from_mapping(
        {
            "state_dir": str(tmp_path / "state"),
            "transport": {"key_sources": ["keys"]},
            "auth": [{"use": "late"}],
            "account": [{"use": "late"}],
            "audit": {"sink_timeout": 5.0},  # a slow sink on purpose: let it run to its end
        },
        backends={"late": LateAllow(0.1), "keys": ListKeySource(transport_key.line)},
        plugins=[sink, SlowSink()],
    ) as auth:
        session = auth.open_session(peer=("198.51.100.7", 52100))
        session.check_transport_key("nx", transport_key.line)
        dialogue = ScriptedDialogue("alice", "pw")
        identity = asyncio.run(run_exchange_async(session, dialogue, timeout=0.3))
    assert identity is not None and identity.username == "alice"
    assert session.state is nxauth.SessionState.AUTHENTICATED
    assert dialogue.told[-1] == (200, "Authenticated alice")
    assert 408 not in [code for code, _ in dialogue.told]
    assert sink.outcomes()[-1] == (2, "accepted", "ok")


class OneTimeCode:
    """A backend that asks a second question through the conversation."""

    def authenticate(self, attempt: nxauth.Attempt) -> nxauth.Verdict:
        code = attempt.ask("Verification code:", echo=False)
        if code.reveal() == "123456":
            return nxauth.Verdict.allow(username=attempt.username)
        return nxauth.Verdict.deny(nxauth.Reason.BAD_PASSWORD, "wrong code")

    def check_account(self, identity: nxauth.Identity) -> nxauth.Verdict:
        return nxauth.Verdict.allow()


def test_conversation_prompts_are_relayed(tmp_path: Path, transport_key: TransportKey, sink: RecordingSink) -> None:
    with nxauth.Authenticator.from_mapping(
        {
            "state_dir": str(tmp_path / "state"),
            "transport": {"key_sources": ["keys"]},
            "auth": [{"use": "otp"}],
            "account": [{"use": "otp"}],
        },
        backends={"otp": OneTimeCode(), "keys": ListKeySource(transport_key.line)},
        plugins=[sink],
    ) as auth:
        result, out = converse(auth, b"alice\npw\n123456\n", user_auth=user_auth_file(tmp_path, transport_key))
    assert result == 0  # no [login] command: nothing to run, exit 0
    assert out.splitlines()[1:] == [
        "NX> 101 User:",
        "NX> 102 Password:",
        "NX> 103 Verification code:",
        "NX> 200 Authenticated alice",
    ]


def test_terminal_dialogue_turns_echo_off_for_secrets(
    login_auth: nxauth.Authenticator, tmp_path: Path, transport_key: TransportKey
) -> None:
    import termios

    controller, terminal = pty.openpty()
    echo_states: list[bool] = []
    result: dict[str, Any] = {}

    def server() -> None:
        try:
            result["status"] = run_login(
                login_auth,
                account="nx",
                environ={"SSH_USER_AUTH": user_auth_file(tmp_path, transport_key)},
                stdin_fd=terminal,
                stdout_fd=terminal,
                execute=fake_exec,
            )
        except Exec as done:
            result["exec"] = done

    thread = threading.Thread(target=server)
    thread.start()
    output = b""

    def read_until(marker: bytes) -> None:
        nonlocal output
        deadline = time.monotonic() + 10
        while marker not in output and time.monotonic() < deadline:
            output += os.read(controller, 4096)

    read_until(b"login: ")
    echo_states.append(bool(termios.tcgetattr(terminal)[3] & termios.ECHO))
    os.write(controller, b"alice\n")
    read_until(b"Password: ")
    time.sleep(0.2)  # the echo is switched off right after the prompt
    echo_states.append(bool(termios.tcgetattr(terminal)[3] & termios.ECHO))
    os.write(controller, PASSWORD.encode() + b"\n")
    thread.join(10)
    os.close(terminal)
    try:
        while chunk := os.read(controller, 4096):
            output += chunk
    except OSError:
        pass
    os.close(controller)
    assert echo_states == [True, False]
    assert isinstance(result.get("exec"), Exec)
    assert PASSWORD.encode() not in output
    assert b"NX>" not in output


def test_fd_line_reader_limits(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.write(write, b"one\r\ntwo\n" + b"x" * 20)
    os.close(write)
    reader = FdLineReader(read, max_line=10)
    assert reader.readline(None) == b"one\r"
    assert reader.readline(None) == b"two"
    with pytest.raises(ProtocolViolation):
        reader.readline(None)
    with pytest.raises(ProtocolViolation):  # the rest of the long line is not a new line
        reader.readline(None)
    os.close(read)
    read, write = os.pipe()
    reader = FdLineReader(read, max_line=10)
    with pytest.raises(LoginTimeout):
        reader.readline(time.monotonic() + 0.05)
    os.close(write)
    with pytest.raises(ClientGone):
        reader.readline(None)
    os.close(read)


def test_user_auth_and_connection_parsing(tmp_path: Path, transport_key: TransportKey) -> None:
    path = tmp_path / "info"
    path.write_text(f"password\npublickey {transport_key.line} extra\nkeyboard-interactive\n")
    key_type, key_text = transport_key.line.split()[:2]
    assert transport_keys_from_user_auth(str(path)) == [f"{key_type} {key_text}"]
    assert transport_keys_from_user_auth(str(tmp_path / "missing")) == []
    assert transport_keys_from_user_auth(None) == []
    assert peer_from_connection("198.51.100.7 52100 192.0.2.1 22") == nxauth.Peer("198.51.100.7", 52100)
    assert peer_from_connection("::ffff:198.51.100.7 1 ::1 22") == nxauth.Peer("198.51.100.7", 1)
    for junk in (None, "", "nonsense", "host-name 22 x y", "1.2.3.4 port"):
        assert peer_from_connection(junk).host == "UNKNOWN"


def test_identity_environment_lists_groups_one_per_line() -> None:
    identity = nxauth.Identity(
        username="alice",
        backend="ldap",
        peer=nxauth.Peer("198.51.100.7", 1),
        session_id="abc",
        transport=None,
        groups=frozenset({"Domain Users", "admins"}),
    )
    env = identity_environment(identity, {"PATH": "/bin", "NXAUTH_GROUPS": "forged"})
    assert env["NXAUTH_GROUPS"] == "Domain Users\nadmins"
    assert env["PATH"] == "/bin"
    assert "NXAUTH_TRANSPORT_KEY" not in env
