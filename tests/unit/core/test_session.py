"""The session: the gate between the stages, the stage-2 flow, attempts,
conversation, throttle and audit, through the public API."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import nxauth
from nxauth import Attempt, AuthenticationFailed, Identity, NotAuthenticated, Reason, SessionState, UsageError, Verdict
from nxauth.testing import RecordingSink
from tests.support.keys import PEER, TransportKey

Build = Callable[..., nxauth.Authenticator]
Granted = Callable[..., nxauth.Session]


class Spy:
    """Counts calls; allows alice/wonderland; asks a code when told to."""

    def __init__(self, *, ask: str | None = None, result: Verdict | None = None, raises: Exception | None = None):
        self.calls = 0
        self.ask = ask
        self.result = result
        self.raises = raises
        self.answers: list[str] = []

    def authenticate(self, attempt: Attempt) -> Verdict:
        self.calls += 1
        if self.raises is not None:
            raise self.raises
        if self.result is not None:
            return self.result
        if self.ask is not None:
            self.answers.append(attempt.ask(self.ask).reveal())
        if attempt.username == "alice" and attempt.password.reveal() == "wonderland":
            return Verdict.allow(groups={"staff"}, attributes={"mail": "alice@example.org"})
        return Verdict.deny(Reason.BAD_PASSWORD)

    def check_account(self, identity: Identity) -> Verdict:
        return Verdict.allow(groups={"listed"})


class Blocking:
    """Allows everyone once ``release`` is set (at most 5 s)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def authenticate(self, attempt: Attempt) -> Verdict:
        self.release.wait(5)
        return Verdict.allow()

    def check_account(self, identity: Identity) -> Verdict:
        return Verdict.allow()


def failed(call: Callable[[], object]) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as info:
        call()
    assert str(info.value) == "authentication failed"
    return info.value


# ------------------------------------------------------------ the gate


def test_login_before_stage_one_is_refused_and_audited(make_auth: Build, sink: RecordingSink) -> None:
    spy = Spy()
    auth = make_auth(backends={"mem": spy})
    session = auth.open_session(peer=PEER)
    exc = failed(lambda: session.login("alice", "wonderland"))
    assert (exc.stage, exc.reason) == (2, Reason.STAGE_ORDER)
    assert spy.calls == 0
    assert sink.outcomes() == [(2, "refused", "stage-order")]
    with pytest.raises(NotAuthenticated):
        _ = session.identity


def test_two_stage_success(
    make_auth: Build, granted: Granted, transport_key: TransportKey, sink: RecordingSink
) -> None:
    auth = make_auth()
    session = granted(auth)
    assert session.state is SessionState.TRANSPORT_OK
    assert session.transport is not None and session.transport.source == "keys"
    with pytest.raises(NotAuthenticated):
        _ = session.identity
    identity = session.login("Alice", "wonderland")
    assert identity.username == "alice"
    assert identity.backend == "mem"
    assert identity.groups == frozenset({"staff"})
    assert identity.peer == nxauth.Peer(*PEER)
    assert identity.transport is session.transport
    assert session.identity is identity
    assert [o[:2] for o in sink.outcomes()] == [(1, "accepted"), (2, "accepted")]
    assert sink.events[0].fingerprint == session.transport.fingerprint


def test_identity_merges_account_stack(make_auth: Build, granted: Granted) -> None:
    spy = Spy()
    auth = make_auth(backends={"mem": spy})
    identity = granted(auth).login("alice", "wonderland")
    assert identity.groups == frozenset({"staff", "listed"})
    assert identity.attributes["mail"] == "alice@example.org"


def test_second_login_after_success_is_refused(make_auth: Build, granted: Granted) -> None:
    session = granted(make_auth())
    session.login("alice", "wonderland")
    assert failed(lambda: session.login("bob", "builder")).reason is Reason.ALREADY_AUTHENTICATED
    assert session.identity.username == "alice"


def test_attempt_limit_closes_the_session(make_auth: Build, granted: Granted, sink: RecordingSink) -> None:
    auth = make_auth({"session": {"max_attempts": 3}, "throttle": {"enabled": False}})
    session = granted(auth)
    for _ in range(3):
        assert failed(lambda: session.login("alice", "nope")).reason is Reason.BAD_PASSWORD
    assert session.state is SessionState.CLOSED
    # even the right password is refused now
    assert failed(lambda: session.login("alice", "wonderland")).reason is Reason.SESSION_CLOSED
    assert failed(lambda: session.check_transport_key("nx", "x")).reason is Reason.SESSION_CLOSED
    assert (0, "refused", "too-many-attempts") in sink.outcomes()
    with pytest.raises(NotAuthenticated):
        _ = session.identity


def test_default_attempt_limit_is_six(make_auth: Build, granted: Granted) -> None:
    session = granted(make_auth({"throttle": {"enabled": False}}))
    for _ in range(6):
        failed(lambda: session.login("alice", "nope"))
    assert session.state is SessionState.CLOSED


def test_close(make_auth: Build, granted: Granted) -> None:
    session = granted(make_auth())
    session.close()
    assert failed(lambda: session.login("alice", "wonderland")).reason is Reason.SESSION_CLOSED


# ------------------------------------------------------------ stage-2 flow


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        pytest.param("", Reason.EMPTY_PASSWORD, id="empty"),
        pytest.param("a\x00b", Reason.INVALID_PASSWORD, id="nul"),
        pytest.param("x" * (1 << 20), Reason.INVALID_PASSWORD, id="1MiB"),
        pytest.param("\u00e9" * 4097, Reason.INVALID_PASSWORD, id="over-8KiB-in-utf8"),
    ],
)
def test_bad_passwords_never_reach_a_backend(make_auth: Build, granted: Granted, password: str, reason: Reason) -> None:
    spy = Spy()
    session = granted(make_auth(backends={"mem": spy}))
    assert failed(lambda: session.login("alice", password)).reason is reason
    assert spy.calls == 0


def test_4kib_password_reaches_the_backend(make_auth: Build, granted: Granted) -> None:
    spy = Spy()
    session = granted(make_auth(backends={"mem": spy}))
    failed(lambda: session.login("alice", "p" * 4096))
    assert spy.calls == 1


@pytest.mark.parametrize("username", ["", "al\x00ice", " alice", "alice\n", "x" * 300])
def test_invalid_usernames_are_refused_before_backends(
    make_auth: Build, granted: Granted, sink: RecordingSink, username: str
) -> None:
    spy = Spy()
    session = granted(make_auth(backends={"mem": spy}))
    assert failed(lambda: session.login(username, "wonderland")).reason is Reason.INVALID_USERNAME
    assert spy.calls == 0
    event = sink.events[-1]
    assert event.invalid_user and len(event.username) <= 100


def test_wrong_types_are_usage_errors(make_auth: Build, granted: Granted) -> None:
    session = granted(make_auth())
    with pytest.raises(UsageError):
        session.login("alice", b"wonderland")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        session.login("alice", "x", conversation="not callable")  # type: ignore[arg-type]
    assert failed(lambda: session.login(42, "wonderland")).reason is Reason.INVALID_USERNAME  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        make_auth().open_session(peer="198.51.100.7")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        nxauth.Authenticator(42)  # type: ignore[arg-type]


def test_backend_exception_is_a_deny_and_leaks_nothing(
    make_auth: Build, granted: Granted, sink: RecordingSink, caplog: pytest.LogCaptureFixture
) -> None:
    spy = Spy(raises=RuntimeError("directory unreachable"))
    session = granted(make_auth(backends={"mem": spy}))
    with caplog.at_level(logging.DEBUG):
        exc = failed(lambda: session.login("alice", "Sup3r-Secret-Value"))
    assert exc.reason is Reason.BACKEND_ERROR
    assert "Sup3r-Secret-Value" not in caplog.text
    assert all("Sup3r-Secret-Value" not in repr(e) for e in sink.events)


def test_unknown_user_is_audited_as_invalid(make_auth: Build, granted: Granted, sink: RecordingSink) -> None:
    session = granted(make_auth())
    exc = failed(lambda: session.login("mallory", "whatever"))
    assert exc.reason is Reason.NO_DECISION  # the memory backend abstains for users it does not know
    assert sink.events[-1].invalid_user


def test_empty_auth_stack_denies_everyone(make_auth: Build, granted: Granted) -> None:
    session = granted(make_auth({"auth": []}))
    assert failed(lambda: session.login("alice", "wonderland")).reason is Reason.NO_DECISION


def test_account_stack_denial(make_auth: Build, granted: Granted) -> None:
    class Nobody:
        def check_account(self, identity: Identity) -> Verdict:
            return Verdict.deny(Reason.NOT_LISTED)

    session = granted(make_auth({"account": [{"use": "nobody"}]}, backends={"nobody": Nobody()}))
    assert failed(lambda: session.login("alice", "wonderland")).reason is Reason.NOT_LISTED


def test_name_rewritten_by_backend_must_stay_canonical(make_auth: Build, granted: Granted) -> None:
    spy = Spy(result=Verdict.allow(username="root"))
    session = granted(make_auth(backends={"mem": spy}))
    assert failed(lambda: session.login("alice", "wonderland")).reason is Reason.NAME_MISMATCH
    same = Spy(result=Verdict.allow(username="ALICE"))
    assert granted(make_auth(backends={"mem": same})).login("alice", "x").username == "alice"


def test_backend_timeout_denies(make_auth: Build, granted: Granted) -> None:
    release = threading.Event()

    class Slow:
        def authenticate(self, attempt: Attempt) -> Verdict:
            release.wait(5)
            return Verdict.allow()

    auth = make_auth({"backends": {"slow": {"timeout": 0.1}}, "auth": [{"use": "slow"}]}, backends={"slow": Slow()})
    try:
        assert failed(lambda: granted(auth).login("alice", "wonderland")).reason is Reason.TIMEOUT
    finally:
        release.set()


def test_a_login_past_its_deadline_asks_no_backend(make_auth: Build, granted: Granted, sink: RecordingSink) -> None:
    spy = Spy()
    session = granted(make_auth(backends={"mem": spy}))
    exc = failed(lambda: session.login("alice", "wonderland", deadline=time.monotonic() - 0.001))
    assert (exc.stage, exc.reason) == (2, Reason.LOGIN_TIMEOUT)
    assert spy.calls == 0
    assert sink.outcomes()[-1] == (2, "refused", "login-timeout")
    assert session.login("alice", "wonderland", deadline=time.monotonic() + 60).username == "alice"


def test_an_answer_after_the_deadline_is_not_honoured(make_auth: Build, granted: Granted, sink: RecordingSink) -> None:
    """A host that told its client "timed out" must not see the login
    complete behind its back: the late allow is audited as a failure, and not
    counted against the user (the password was right)."""

    class Late:
        def authenticate(self, attempt: Attempt) -> Verdict:
            time.sleep(0.3)
            return Verdict.allow()

        def check_account(self, identity: Identity) -> Verdict:
            return Verdict.allow()

    auth = make_auth({"throttle": {"max_user_failures": 1}, "session": {"max_attempts": 1}}, backends={"mem": Late()})
    session = granted(auth)
    exc = failed(lambda: session.login("alice", "wonderland", deadline=time.monotonic() + 0.05))
    assert exc.reason is Reason.LOGIN_TIMEOUT
    assert session.state is SessionState.TRANSPORT_OK  # closing it is the host's call (Session.abort)
    assert (0, "refused", "too-many-attempts") not in sink.outcomes()  # not an attempt of the user's
    event = sink.events[-1]
    assert (event.outcome, event.reason, event.backend) == ("failed", Reason.LOGIN_TIMEOUT, "mem")
    assert event.detail == "allowed-after-deadline"
    assert not [e for e in sink.events if e.accepted and e.stage == 2]
    assert session.login("alice", "wonderland").username == "alice"  # not locked out by it


def test_login_async_passes_its_deadline_on(make_auth: Build, granted: Granted, sink: RecordingSink) -> None:
    """asyncio.wait_for gives up on the caller's side; with the same deadline
    the login still running in its worker thread fails instead of completing."""
    blocking = Blocking()
    release = blocking.release
    session = granted(make_auth(backends={"mem": blocking}))

    async def main() -> None:
        deadline = time.monotonic() + 0.05
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(session.login_async("alice", "x", deadline=deadline), 0.05)
        release.set()
        await asyncio.get_running_loop().run_in_executor(
            None, session.abort, Reason.LOGIN_TIMEOUT, "test"
        )  # waits for the login's lock

    asyncio.run(main())
    assert sink.outcomes()[-2:] == [(2, "failed", "login-timeout"), (2, "refused", "login-timeout")]
    assert session.state is SessionState.CLOSED


@pytest.mark.parametrize("deadline", [True, "soon", [1.0]])
def test_a_deadline_must_be_a_number(make_auth: Build, granted: Granted, deadline: Any) -> None:
    session = granted(make_auth())
    with pytest.raises(UsageError, match="deadline"):
        session.login("alice", "wonderland", deadline=deadline)


# ------------------------------------------------------------ conversation


def test_conversation_relays_questions(make_auth: Build, granted: Granted) -> None:
    spy = Spy(ask="Verification code: ")
    session = granted(make_auth(backends={"mem": spy}))
    prompts: list[tuple[str, bool]] = []

    def conversation(prompt: str, echo: bool) -> str:
        prompts.append((prompt, echo))
        return "123456"

    session.login("alice", "wonderland", conversation=conversation)
    assert prompts == [("Verification code: ", False)]
    assert spy.answers == ["123456"]


def test_question_without_conversation_denies(make_auth: Build, granted: Granted) -> None:
    session = granted(make_auth(backends={"mem": Spy(ask="Code: ")}))
    assert failed(lambda: session.login("alice", "wonderland")).reason is Reason.CONVERSATION_UNAVAILABLE


def test_login_async_with_async_conversation(make_auth: Build, granted: Granted) -> None:
    spy = Spy(ask="Code: ")
    session = granted(make_auth(backends={"mem": spy}))
    loop_thread: list[int] = []

    async def conversation(prompt: str, echo: bool) -> str:
        loop_thread.append(threading.get_ident())
        await asyncio.sleep(0)
        return "654321"

    async def main() -> nxauth.Identity:
        caller = threading.get_ident()
        identity = await session.login_async("alice", "wonderland", conversation=conversation)
        assert loop_thread == [caller]  # the coroutine ran on the event loop
        return identity

    assert asyncio.run(main()).username == "alice"
    assert spy.answers == ["654321"]


def test_login_async_does_not_block_the_loop(make_auth: Build, granted: Granted) -> None:
    blocking = Blocking()
    release = blocking.release
    session = granted(make_auth(backends={"mem": blocking}))

    async def main() -> str:
        task = asyncio.create_task(session.login_async("alice", "x"))
        await asyncio.sleep(0.05)
        assert not task.done()  # the loop is free while the backend blocks
        release.set()
        return (await task).username

    assert asyncio.run(main()) == "alice"


# ------------------------------------------------------------ throttle and audit


def test_lockout_stops_before_backends_and_unlock_lifts_it(make_auth: Build, granted: Granted) -> None:
    spy = Spy()
    auth = make_auth({"throttle": {"max_user_failures": 3}}, backends={"mem": spy})
    for _ in range(3):
        failed(lambda: granted(auth).login("alice", "nope"))
    calls = spy.calls
    exc = failed(lambda: granted(auth).login("ALICE", "wonderland"))
    assert exc.reason is Reason.LOCKED_OUT
    assert spy.calls == calls
    assert auth.unlock("Alice") >= 1
    assert granted(auth).login("alice", "wonderland").username == "alice"


def test_failing_sink_does_not_allow_and_required_audit_denies(make_auth: Build, granted: Granted) -> None:
    class Broken:
        @nxauth.hookimpl
        def nxauth_auth_event(self, event: nxauth.AuthEvent) -> None:
            raise OSError("disk full")

    relaxed = make_auth(plugins=(Broken(),))
    assert granted(relaxed).login("alice", "wonderland").username == "alice"
    failed(lambda: granted(relaxed).login("alice", "bad"))
    strict = make_auth({"audit": {"required": True}}, plugins=(Broken(),))
    session = strict.open_session(peer=PEER)
    assert failed(lambda: session.check_transport_key("nx", session_key_line(strict))).reason is Reason.AUDIT_FAILED


def session_key_line(auth: nxauth.Authenticator) -> str:
    source: Any = auth.backends["keys"]
    return str(source.lines[0])


def test_audit_lines_are_sshd_style(
    make_auth: Build, granted: Granted, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    jsonl = tmp_path / "audit.jsonl"
    auth = make_auth({"audit": {"jsonl": str(jsonl)}})
    with caplog.at_level(logging.INFO, logger="nxauth.audit"):
        granted(auth).login("alice", "wonderland")
        failed(lambda: granted(auth).login("mallory\nAccepted", "secret-pw"))
    lines = [r.getMessage() for r in caplog.records if r.name == "nxauth.audit"]
    assert lines[0].startswith("Accepted publickey for nx from 198.51.100.7 port 52100: SHA256:")
    assert lines[1].startswith("Accepted password for alice from 198.51.100.7 port 52100 via mem [session=")
    assert lines[3].startswith("Failed password for invalid user mallory\\x0aAccepted from 198.51.100.7 port 52100")
    assert "secret-pw" not in caplog.text
    records = jsonl.read_text().splitlines()
    assert len(records) == 4 and '"outcome":"accepted"' in records[1]
    assert "secret-pw" not in jsonl.read_text()
    assert (jsonl.stat().st_mode & 0o777) == 0o600


# ------------------------------------------------------------ stage 1 routing


def test_stage_one_refusals(make_auth: Build, sink: RecordingSink) -> None:
    auth = make_auth()
    other = TransportKey()
    assert (
        failed(lambda: auth.open_session(PEER).check_transport_key("root", other.line)).reason is Reason.WRONG_ACCOUNT
    )
    assert failed(lambda: auth.open_session(PEER).check_transport_key("nx", other.line)).reason is Reason.UNKNOWN_KEY
    assert failed(lambda: auth.open_session(PEER).check_transport_key("nx", "ssh-ed25519 AAAA")).reason is (
        Reason.KEY_FORMAT
    )
    assert [o[0] for o in sink.outcomes()] == [1, 1, 1]


def test_stage_one_from_option(make_auth: Build, transport_key: TransportKey) -> None:
    from tests.support.keys import ListKeySource

    source = ListKeySource(f'from="10.0.0.0/8" {transport_key.line}')
    auth = make_auth(backends={"keys": source})
    exc = failed(lambda: auth.open_session(PEER).check_transport_key("nx", transport_key.line))
    assert exc.reason is Reason.SOURCE_REFUSED
    assert auth.open_session(("10.1.2.3", 22)).check_transport_key("nx", transport_key.line).account == "nx"


def test_failing_key_source_is_skipped(make_auth: Build, transport_key: TransportKey) -> None:
    from tests.support.keys import ListKeySource

    class Broken:
        def authorized_keys(self, account: str) -> list[Any]:
            raise OSError("nfs gone")

    auth = make_auth(
        {"transport": {"key_sources": ["broken", "keys"]}},
        backends={"broken": Broken(), "keys": ListKeySource(transport_key.line)},
    )
    assert auth.open_session(PEER).check_transport_key("nx", transport_key.line).source == "keys"
    only_broken = make_auth({"transport": {"key_sources": ["broken"]}}, backends={"broken": Broken()})
    exc = failed(lambda: only_broken.open_session(PEER).check_transport_key("nx", transport_key.line))
    assert exc.reason is Reason.BACKEND_ERROR


# ------------------------------------------------------------ stage 1 without SSH (SSHSIG)

ssh_keygen = shutil.which("ssh-keygen")
needs_ssh_keygen = pytest.mark.skipif(ssh_keygen is None, reason="ssh-keygen (openssh-client) is not installed")


def sign(tmp_path: Path, key: TransportKey, message: str, namespace: str = "nxauth") -> str:
    private = tmp_path / "id_ed25519"
    if not private.exists():
        private.write_bytes(key.private_openssh())
        private.chmod(0o600)
    assert ssh_keygen is not None
    result = subprocess.run(
        [ssh_keygen, "-Y", "sign", "-q", "-n", namespace, "-f", str(private)],
        input=message.encode(),
        capture_output=True,
        check=True,
    )
    return result.stdout.decode()


@needs_ssh_keygen
def test_sshsig_challenge(make_auth: Build, transport_key: TransportKey, tmp_path: Path) -> None:
    auth = make_auth()
    session = auth.open_session(PEER)
    nonce = session.challenge()
    grant = session.check_transport_signature("nx", sign(tmp_path, transport_key, nonce))
    assert grant.method == "sshsig"
    assert session.login("alice", "wonderland").username == "alice"


@needs_ssh_keygen
def test_sshsig_replay_expiry_namespace_and_other_session(
    make_auth: Build, transport_key: TransportKey, tmp_path: Path
) -> None:
    now = [1_900_000_000.0]
    auth = make_auth({"throttle": {"enabled": False}}, clock=lambda: now[0])
    first = auth.open_session(PEER)
    nonce = first.challenge()
    signature = sign(tmp_path, transport_key, nonce)
    # another session never issued that nonce
    second = auth.open_session(PEER)
    second.challenge()
    assert failed(lambda: second.check_transport_signature("nx", signature)).reason is Reason.BAD_SIGNATURE
    # wrong namespace
    third = auth.open_session(PEER)
    wrong = sign(tmp_path, transport_key, third.challenge(), namespace="git")
    assert failed(lambda: third.check_transport_signature("nx", wrong)).reason is Reason.CHALLENGE_INVALID
    # expired
    now[0] += 61
    assert failed(lambda: first.check_transport_signature("nx", signature)).reason is Reason.CHALLENGE_INVALID
    # replayed: a fresh session, a good signature, used twice
    fourth = auth.open_session(PEER)
    good = sign(tmp_path, transport_key, fourth.challenge())
    fifth = auth.open_session(PEER)
    fifth.challenge()
    assert failed(lambda: fifth.check_transport_signature("nx", good)).reason is Reason.BAD_SIGNATURE
    fourth.check_transport_signature("nx", good)
    assert failed(lambda: fourth.check_transport_signature("nx", good)).reason is Reason.STAGE_ORDER
    garbage = auth.open_session(PEER)
    garbage.challenge()
    assert failed(lambda: garbage.check_transport_signature("nx", "not a signature")).reason is Reason.KEY_FORMAT


def test_failing_conversation_callback_denies(make_auth: Build, granted: Granted) -> None:
    session = granted(make_auth(backends={"mem": Spy(ask="Code: ")}))

    def broken(prompt: str, echo: bool) -> str:
        raise RuntimeError("terminal went away")

    assert (
        failed(lambda: session.login("alice", "wonderland", conversation=broken)).reason is Reason.CONVERSATION_FAILED
    )
    other = granted(make_auth(backends={"mem": Spy(ask="Code: ")}))
    assert failed(lambda: other.login("alice", "wonderland", conversation=lambda p, e: 42)).reason is (
        Reason.CONVERSATION_FAILED
    )


def test_backend_messages_reach_the_accepted_event(make_auth: Build, granted: Granted, sink: RecordingSink) -> None:
    class Chatty:
        def authenticate(self, attempt: Attempt) -> Verdict:
            attempt.info("Your password expires in 3 days")
            return Verdict.allow()

    session = granted(make_auth({"auth": [{"use": "chatty"}]}, backends={"chatty": Chatty()}))
    session.login("alice", "wonderland")
    # counted; the text is the backend's own and never reaches the audit trail
    assert sink.events[-1].detail == "backend-messages=1"


def test_a_backend_that_echoes_the_password_leaves_no_trace(
    make_auth: Build, granted: Granted, sink: RecordingSink
) -> None:
    class Careless:
        def authenticate(self, attempt: Attempt) -> Verdict:
            raise ValueError(f"bad credentials {attempt.username}:{attempt.password.reveal()}")

    session = granted(make_auth({"auth": [{"use": "careless"}]}, backends={"careless": Careless()}))
    failed(lambda: session.login("alice", "Echoed-Secret-42"))
    assert sink.events[-1].detail == "backend-raised"  # the exception's text is never kept
