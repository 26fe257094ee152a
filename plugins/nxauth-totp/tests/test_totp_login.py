"""A full two-stage login with the installed distribution: stage 1 with a
transport key in nxauth's keystore, stage 2 with the ``passwords`` backend
and ``totp`` stacked ``required``, the code supplied through the
conversation callback of ``session.login``.

Users, passwords and keys are set up with the ``nxauth`` command and the user
is enrolled with ``nxauth-totp``, as an administrator would; the plugin is
found through its entry point, as a server finds it."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nxauth
import pyotp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from nxauth import AuthenticationFailed, Reason
from nxauth.testing import RecordingSink

from conftest import Answering, Clock
from nxauth_totp import TotpBackend

PEER = ("198.51.100.7", 52100)
PASSWORD = "correct horse battery staple"


def nxauth_command(config: Path, *argv: str, stdin: str = "") -> None:
    """Run the ``nxauth`` command (the core's, not this plugin's)."""
    done = subprocess.run(
        [sys.executable, "-m", "nxauth", "--config", str(config), *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


class Server:
    """The state directory of one test server, set up by the administrator's commands."""

    def __init__(self, root: Path) -> None:
        self.state_dir = root / "state"
        self.config_file = root / "nxauth.toml"
        self.config_file.write_text(f'state_dir = "{self.state_dir}"\n')
        key = ed25519.Ed25519PrivateKey.generate()
        self.public_key = (
            key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        )
        (root / "transport.pub").write_text(self.public_key + " transport@test\n")
        nxauth_command(self.config_file, "keys", "add", str(root / "transport.pub"))
        nxauth_command(self.config_file, "useradd", "alice", "--password-stdin", stdin=PASSWORD + "\n")
        nxauth_command(self.config_file, "useradd", "bob", "--password-stdin", stdin=PASSWORD + "\n")
        enrolled = subprocess.run(
            [sys.executable, "-m", "nxauth_totp", "--config", str(self.config_file), "enroll", "alice", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert enrolled.returncode == 0, enrolled.stderr
        self.secret = json.loads(enrolled.stdout)["secret"]
        self.app = pyotp.TOTP(self.secret)

    def copy(self, root: Path) -> Server:
        """The same server in a fresh state directory (every test starts from
        the just-installed state, without paying for the commands again)."""
        shutil.copytree(self.state_dir, root / "state")
        clone = copy.copy(self)
        clone.state_dir = root / "state"
        return clone

    def mapping(self, password_control: str = "required") -> dict[str, Any]:
        return {
            "state_dir": str(self.state_dir),
            "auth": [
                {"use": "passwords", "control": password_control},
                {"use": "totp", "control": "required"},
            ],
            "account": [{"use": "users", "control": "required"}],
        }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Server:
    return Server(tmp_path_factory.mktemp("installed"))


@pytest.fixture
def server(installed: Server, tmp_path: Path) -> Server:
    return installed.copy(tmp_path)


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def make_auth(server: Server, clock: Clock, sink: RecordingSink) -> Iterator[Callable[..., nxauth.Authenticator]]:
    made: list[nxauth.Authenticator] = []

    def build(password_control: str = "required") -> nxauth.Authenticator:
        # default entry_points: nxauth finds the installed nxauth-totp by itself
        auth = nxauth.Authenticator.from_mapping(server.mapping(password_control), plugins=[sink], clock=clock)
        made.append(auth)
        return auth

    yield build
    for auth in made:
        auth.close()


def granted(auth: nxauth.Authenticator, server: Server) -> nxauth.Session:
    session = auth.open_session(peer=PEER)
    session.check_transport_key("nx", server.public_key)
    return session


def reason_of(call: Callable[[], object]) -> Reason:
    with pytest.raises(AuthenticationFailed) as info:
        call()
    assert str(info.value) == "authentication failed"  # all a client is told
    return info.value.reason


def test_the_plugin_was_found_through_its_entry_point(make_auth: Callable[..., nxauth.Authenticator]) -> None:
    auth = make_auth()
    assert auth.describe()["backend_kinds"]["totp"] == "totp"  # the entry point's name
    assert isinstance(auth.backends["totp"], TotpBackend)
    assert auth.plugin_errors == ()


@pytest.mark.parametrize("password_control", ["required", "requisite"])
def test_password_and_code_log_in(
    make_auth: Callable[..., nxauth.Authenticator],
    server: Server,
    clock: Clock,
    sink: RecordingSink,
    password_control: str,
) -> None:
    session = granted(make_auth(password_control), server)
    questions: list[tuple[str, bool]] = []

    def conversation(prompt: str, echo: bool) -> str:
        questions.append((prompt, echo))
        return server.app.at(clock())

    identity = session.login("alice", PASSWORD, conversation=conversation)
    assert identity.username == "alice" and session.identity == identity
    assert questions == [("Verification code: ", False)]
    assert sink.outcomes()[-1] == (2, "accepted", "ok")


def test_wrong_code_fails(
    make_auth: Callable[..., nxauth.Authenticator], server: Server, clock: Clock, sink: RecordingSink
) -> None:
    session = granted(make_auth(), server)
    wrong = f"{(int(server.app.at(clock())) + 1) % 1_000_000:06d}"
    assert reason_of(lambda: session.login("alice", PASSWORD, conversation=lambda p, e: wrong)) is Reason.BAD_PASSWORD
    event = sink.events[-1]
    assert (event.backend, event.detail) == ("totp", "wrong-code")
    assert not session.authenticated


def test_wrong_password_fails_even_with_the_right_code(
    make_auth: Callable[..., nxauth.Authenticator], server: Server, clock: Clock, sink: RecordingSink
) -> None:
    session = granted(make_auth(), server)
    code = server.app.at(clock())
    assert reason_of(lambda: session.login("alice", "wrong", conversation=lambda p, e: code)) is Reason.BAD_PASSWORD
    assert sink.events[-1].backend == "passwords"


def test_a_code_is_good_for_one_login_only(
    make_auth: Callable[..., nxauth.Authenticator], server: Server, clock: Clock, sink: RecordingSink
) -> None:
    auth = make_auth()
    code = server.app.at(clock())
    granted(auth, server).login("alice", PASSWORD, conversation=lambda p, e: code)
    clock.advance(10)
    second = granted(auth, server)
    assert reason_of(lambda: second.login("alice", PASSWORD, conversation=lambda p, e: code)) is Reason.BAD_PASSWORD
    event = sink.events[-1]
    assert event.backend == "totp" and "replayed" in event.detail
    clock.advance(30)
    granted(auth, server).login("alice", PASSWORD, conversation=lambda p, e: server.app.at(clock()))


def test_the_window_follows_the_authenticator_clock(
    make_auth: Callable[..., nxauth.Authenticator], server: Server, clock: Clock
) -> None:
    auth = make_auth()
    late = server.app.at(clock() - 30)  # the previous step: a phone clock a little behind
    granted(auth, server).login("alice", PASSWORD, conversation=lambda p, e: late)
    stale = server.app.at(clock() + 30 - 120)  # four steps before the next one: outside the window
    clock.advance(30)
    session = granted(auth, server)
    assert reason_of(lambda: session.login("alice", PASSWORD, conversation=lambda p, e: stale)) is Reason.BAD_PASSWORD


def test_no_conversation_fails(make_auth: Callable[..., nxauth.Authenticator], server: Server) -> None:
    session = granted(make_auth(), server)
    assert reason_of(lambda: session.login("alice", PASSWORD)) is Reason.CONVERSATION_UNAVAILABLE


def test_unenrolled_user_cannot_log_in_with_the_password_alone(
    make_auth: Callable[..., nxauth.Authenticator], server: Server, sink: RecordingSink
) -> None:
    session = granted(make_auth(), server)
    conversation = Answering("123456")
    reason = reason_of(lambda: session.login("bob", PASSWORD, conversation=conversation))
    assert reason is Reason.UNKNOWN_USER
    assert conversation.prompts == ["Verification code: "]  # asked all the same: the question does not reveal enrolment
    assert (sink.events[-1].backend, sink.events[-1].detail) == ("totp", "not-enrolled")


def test_a_sufficient_password_skips_the_code(make_auth: Callable[..., nxauth.Authenticator], server: Server) -> None:
    """Why the README says ``required``: a ``sufficient`` entry that succeeds
    ends the stack, and the code is never asked."""
    session = granted(make_auth("sufficient"), server)
    conversation = Answering("")
    session.login("alice", PASSWORD, conversation=conversation)
    assert conversation.prompts == []


def test_a_raising_backend_is_a_denial(
    make_auth: Callable[..., nxauth.Authenticator], server: Server, clock: Clock
) -> None:
    auth = make_auth()
    backend = auth.backends["totp"]
    assert isinstance(backend, TotpBackend)
    code = server.app.at(clock())

    def broken_clock() -> float:
        raise RuntimeError("no time")

    backend.clock = broken_clock
    session = granted(auth, server)
    assert reason_of(lambda: session.login("alice", PASSWORD, conversation=lambda p, e: code)) is Reason.BACKEND_ERROR


def test_login_async_with_an_async_conversation(
    make_auth: Callable[..., nxauth.Authenticator], server: Server, clock: Clock
) -> None:
    session = granted(make_auth(), server)

    async def conversation(prompt: str, echo: bool) -> str:
        await asyncio.sleep(0)
        return server.app.at(clock())

    identity = asyncio.run(session.login_async("alice", PASSWORD, conversation=conversation))
    assert identity.username == "alice"


def test_no_code_secret_or_password_in_the_audit_trail_or_logs(
    make_auth: Callable[..., nxauth.Authenticator],
    server: Server,
    clock: Clock,
    sink: RecordingSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    auth = make_auth()
    code = server.app.at(clock())
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    with caplog.at_level(logging.DEBUG):
        for username, answer in (("alice", wrong), ("alice", code), ("alice", code), ("bob", code)):
            session = granted(auth, server)
            with contextlib.suppress(AuthenticationFailed):
                session.login(username, PASSWORD, conversation=Answering(answer))
    texts = [repr(event) for event in sink.events] + [record.getMessage() for record in caplog.records]
    assert len(sink.events) >= 8
    for text in texts:
        for value in (code, wrong, server.secret, PASSWORD):
            assert value not in text
