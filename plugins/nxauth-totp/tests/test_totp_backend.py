"""The ``totp`` backend on its own: the nxauth contract, codes, the window,
replay, malformed input, unknown users, options and failures."""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nxauth
import pyotp
import pytest
from nxauth import Attempt, Decision, Reason, Secret, Verdict
from nxauth.testing import AuthBackendContract, make_attempt

from conftest import Answering, Clock, MakeAuth, answering, code_for, enroll
from nxauth_totp import TotpBackend, TotpStore, TotpStoreError
from nxauth_totp.backend import offset_word

# ------------------------------------------------------------ the contract


class CodeAsAnswer:
    """The contract's attempts carry no conversation, and a one-time code is
    asked through one.  This adapter relays the contract's "password" as the
    answer to the backend's question, so the contract checks the code path:
    its right password is the right code, its wrong one a wrong code."""

    def __init__(self, backend: TotpBackend) -> None:
        self.backend = backend

    def authenticate(self, attempt: Attempt) -> Verdict:
        relayed = Attempt(
            attempt.username,
            attempt.password,
            peer=attempt.peer,
            session_id=attempt.session_id,
            conversation=lambda prompt, echo: attempt.password,
        )
        return self.backend.authenticate(relayed)

    def __repr__(self) -> str:
        return f"CodeAsAnswer({self.backend!r})"


class TestTotpContract(AuthBackendContract):
    @pytest.fixture
    def totp(self, backend: TotpBackend) -> TotpBackend:
        return backend

    @pytest.fixture
    def secret(self, totp: TotpBackend) -> Secret:
        return enroll(totp, "alice")

    @pytest.fixture
    def backend(self, totp: TotpBackend, secret: Secret) -> CodeAsAnswer:
        return CodeAsAnswer(totp)

    @pytest.fixture
    def credentials(self, totp: TotpBackend, secret: Secret) -> tuple[str, str]:
        return ("alice", code_for(totp, secret))


# ------------------------------------------------------------ codes


def test_right_code_is_accepted(backend: TotpBackend) -> None:
    secret = enroll(backend, "alice")
    prompts: list[tuple[str, bool]] = []

    def conversation(prompt: str, echo: bool) -> str:
        prompts.append((prompt, echo))
        return code_for(backend, secret)

    attempt = Attempt("alice", Secret("first-factor"), conversation=conversation)
    verdict = backend.authenticate(attempt)
    assert verdict.decision is Decision.ALLOW
    assert prompts == [("Verification code: ", False)]
    assert verdict.detail == "code-offset=0"


def test_wrong_code_is_denied(backend: TotpBackend) -> None:
    secret = enroll(backend, "alice")
    right = code_for(backend, secret)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    verdict = backend.authenticate(answering("alice", wrong))
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.BAD_PASSWORD)
    assert verdict.detail == "wrong-code"


def test_replay_of_the_same_code_is_refused(backend: TotpBackend, clock: Clock) -> None:
    secret = enroll(backend, "alice")
    code = code_for(backend, secret)
    assert backend.authenticate(answering("alice", code)).allowed
    clock.advance(5)  # same step, a few seconds later
    verdict = backend.authenticate(answering("alice", code))
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.BAD_PASSWORD)
    assert verdict.detail.startswith("code-replayed")
    assert code not in verdict.detail


def test_a_code_older_than_the_last_accepted_one_is_refused(backend: TotpBackend) -> None:
    secret = enroll(backend, "alice")
    previous = code_for(backend, secret, -1)
    assert backend.authenticate(answering("alice", code_for(backend, secret))).allowed
    verdict = backend.authenticate(answering("alice", previous))  # still in the window, but before the used step
    assert verdict.reason is Reason.BAD_PASSWORD and verdict.detail.startswith("code-replayed")


def test_the_next_step_after_a_login_is_accepted(backend: TotpBackend, clock: Clock) -> None:
    secret = enroll(backend, "alice")
    assert backend.authenticate(answering("alice", code_for(backend, secret))).allowed
    clock.advance(30)
    assert backend.authenticate(answering("alice", code_for(backend, secret))).allowed


@pytest.mark.parametrize(
    ("window", "offset", "allowed"),
    [
        (1, -1, True),
        (1, 1, True),
        (1, -2, False),
        (1, 2, False),
        (0, 0, True),
        (0, -1, False),
        (0, 1, False),
        (2, -2, True),
        (2, 2, True),
        (2, 3, False),
    ],
    ids=lambda value: str(value),
)
def test_window(make_backend: Callable[..., TotpBackend], window: int, offset: int, allowed: bool) -> None:
    backend = make_backend(window=window)
    secret = enroll(backend, "alice")
    verdict = backend.authenticate(answering("alice", code_for(backend, secret, offset)))
    assert verdict.allowed is allowed
    if allowed:
        assert verdict.detail == offset_word(offset)
    else:
        assert (verdict.reason, verdict.detail) == (Reason.BAD_PASSWORD, "wrong-code")


def test_the_clock_of_the_authenticator_decides(backend: TotpBackend, clock: Clock) -> None:
    secret = enroll(backend, "alice")
    code = code_for(backend, secret)
    clock.advance(90)  # three steps later: out of a window of 1
    assert backend.authenticate(answering("alice", code)).reason is Reason.BAD_PASSWORD


def test_codes_from_an_ordinary_authenticator_app(make_backend: Callable[..., TotpBackend], clock: Clock) -> None:
    """pyotp's own TOTP, as an app would compute it from the provisioning URI."""
    backend = make_backend(digits=8, algorithm="sha256", period=60)
    secret = enroll(backend, "alice")
    app = pyotp.parse_uri(backend.settings.provisioning_uri(secret, "alice"))
    assert isinstance(app, pyotp.TOTP)
    assert (app.digits, app.interval) == (8, 60)
    assert backend.authenticate(answering("alice", app.at(clock()))).allowed


def test_rfc6238_test_vector(make_backend: Callable[..., TotpBackend], clock: Clock) -> None:
    """RFC 6238 appendix B: SHA1, T = 59 s, 8 digits -> 94287082."""
    backend = make_backend(digits=8)
    secret = Secret(base64.b32encode(b"12345678901234567890").decode())
    backend.store.enroll("rfc", secret, 0.0)
    clock.now = 59.0
    assert backend.authenticate(answering("rfc", "94287082")).allowed


# ------------------------------------------------------------ what the client sends


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "12345",
        "1234567",
        "12a456",
        "12 456",
        "+12345",
        "-12345",
        "١٢٣٤٥٦",  # Arabic-Indic digits: str.isdigit() says yes
        "１２３４５６",  # fullwidth digits
        "123456\x00",
        "9" * 100_000,
    ],
    ids=["empty", "short", "long", "letter", "space", "plus", "minus", "arabic", "fullwidth", "nul", "huge"],
)
def test_malformed_codes_are_denied_without_exception(backend: TotpBackend, answer: str) -> None:
    enroll(backend, "alice")
    verdict = backend.authenticate(answering("alice", answer))
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.INVALID_PASSWORD)
    assert verdict.detail == "code-not-digits"


def test_surrounding_white_space_is_ignored(backend: TotpBackend) -> None:
    secret = enroll(backend, "alice")
    assert backend.authenticate(answering("alice", f" {code_for(backend, secret)}\n")).allowed


def test_a_secret_object_answer_is_accepted(backend: TotpBackend) -> None:
    secret = enroll(backend, "alice")
    attempt = Attempt("alice", Secret("pw"), conversation=lambda prompt, echo: Secret(code_for(backend, secret)))
    assert backend.authenticate(attempt).allowed


def test_no_conversation_denies(backend: TotpBackend) -> None:
    enroll(backend, "alice")
    verdict = backend.authenticate(make_attempt("alice", "first-factor"))
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.CONVERSATION_UNAVAILABLE)


@pytest.mark.parametrize(
    "callback",
    [lambda prompt, echo: 1 / 0, lambda prompt, echo: None, lambda prompt, echo: 123456],
    ids=["raises", "none", "int"],
)
def test_failing_conversation_denies(backend: TotpBackend, callback: Callable[[str, bool], Any]) -> None:
    enroll(backend, "alice")
    verdict = backend.authenticate(Attempt("alice", Secret("pw"), conversation=callback))
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.CONVERSATION_FAILED)


def test_custom_prompt(make_backend: Callable[..., TotpBackend]) -> None:
    backend = make_backend(prompt="Code from your phone: ")
    conversation = Answering("")
    backend.authenticate(Attempt("alice", Secret("pw"), conversation=conversation))
    assert conversation.prompts == ["Code from your phone: "]


# ------------------------------------------------------------ unknown users


def test_unenrolled_user_is_denied(backend: TotpBackend) -> None:
    verdict = backend.authenticate(answering("mallory", "123456"))
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.UNKNOWN_USER)
    assert verdict.detail == "not-enrolled"


def test_unenrolled_user_costs_the_same_comparisons(backend: TotpBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Timing: the code is compared against a dummy secret for every step of
    the window, exactly as for an enrolled user."""
    secret = enroll(backend, "alice")
    calls: list[int] = []
    original = pyotp.TOTP.generate_otp

    def counting(self: pyotp.TOTP, step: int) -> str:
        calls.append(step)
        return original(self, step)

    monkeypatch.setattr(pyotp.TOTP, "generate_otp", counting)
    wrong = f"{(int(code_for(backend, secret)) + 1) % 1_000_000:06d}"
    calls.clear()
    backend.authenticate(answering("alice", wrong))
    enrolled = list(calls)
    calls.clear()
    backend.authenticate(answering("mallory", wrong))
    assert calls == enrolled and len(enrolled) == 3


def test_the_question_is_asked_before_the_user_is_looked_up(backend: TotpBackend) -> None:
    conversation = Answering("000000")
    backend.authenticate(Attempt("mallory", Secret("pw"), conversation=conversation))
    assert conversation.prompts == ["Verification code: "]


# ------------------------------------------------------------ concurrency


def test_concurrent_logins_with_one_code_accept_exactly_one(backend: TotpBackend) -> None:
    secret = enroll(backend, "alice")
    code = code_for(backend, secret)
    start = threading.Barrier(8)
    verdicts: list[Verdict] = []
    lock = threading.Lock()

    def login() -> None:
        start.wait()
        verdict = backend.authenticate(answering("alice", code))
        with lock:
            verdicts.append(verdict)

    threads = [threading.Thread(target=login) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(v.allowed for v in verdicts) == 1
    assert all(v.detail.startswith("code-replayed") for v in verdicts if not v.allowed)


# ------------------------------------------------------------ failing closed


def test_unusable_database_denies_as_backend_error(
    make_backend: Callable[..., TotpBackend], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    backend = make_backend(database=str(directory))
    verdict = backend.authenticate(answering("alice", "123456"))
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.BACKEND_ERROR)
    assert verdict.detail == "enrolment-database-failed"
    assert "not a regular file" in caplog.text


def test_loose_permissions_deny_as_backend_error(backend: TotpBackend, caplog: pytest.LogCaptureFixture) -> None:
    secret = enroll(backend, "alice")
    backend.store.close()
    backend.settings.database.chmod(0o644)
    fresh = TotpBackend(TotpStore(backend.settings.database), backend.settings, clock=backend.clock)
    verdict = fresh.authenticate(answering("alice", code_for(backend, secret)))
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.BACKEND_ERROR)
    assert verdict.detail == "enrolment-database-failed"
    assert "chmod 600" in caplog.text
    with pytest.raises(TotpStoreError):
        fresh.store.lookup("alice")


def test_corrupt_stored_secret_denies(backend: TotpBackend) -> None:
    backend.store.enroll("alice", Secret("not base32 at all!"), 0.0)
    verdict = backend.authenticate(answering("alice", "123456"))
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.BACKEND_ERROR)
    assert "not base32" not in verdict.detail


@pytest.mark.parametrize("now", [float("nan"), float("inf"), -1.0])
def test_unusable_clock_denies(backend: TotpBackend, clock: Clock, now: float) -> None:
    secret = enroll(backend, "alice")
    code = code_for(backend, secret)
    clock.now = now
    verdict = backend.authenticate(answering("alice", code))
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.BACKEND_ERROR)


# ------------------------------------------------------------ options


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({"digits": 5}, "digits", "at least 6"),
        ({"digits": 9}, "digits", "at most 8"),
        ({"digits": "6"}, "digits", "must be an integer"),
        ({"period": 0}, "period", "at least 10"),
        ({"period": 300}, "period", "at most 120"),
        ({"window": -1}, "window", "at least 0"),
        ({"window": 11}, "window", "at most 10"),
        ({"algorithm": "md5"}, "algorithm", "must be one of"),
        ({"issuer": "Example: Corp"}, "issuer", "without ':'"),
        ({"issuer": ""}, "issuer", "1 to 64"),
        ({"prompt": ""}, "prompt", "1 to 200"),
        ({"database": ""}, "database", "must be a path"),
        ({"windw": 2}, "windw", "unknown option"),
    ],
    ids=lambda value: str(value),
)
def test_option_errors_name_the_key(make_auth: MakeAuth, options: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(nxauth.ConfigError, match=message) as info:
        make_auth(**options)
    assert info.value.key == f"backends.totp.{key}"


def test_options_are_applied(make_backend: Callable[..., TotpBackend], tmp_path: Path) -> None:
    backend = make_backend(
        digits=8, period=60, window=2, algorithm="sha512", issuer="Example Corp", database=str(tmp_path / "x.db")
    )
    s = backend.settings
    assert (s.digits, s.period, s.window, s.algorithm, s.issuer) == (8, 60, 2, "sha512", "Example Corp")
    assert s.database == tmp_path / "x.db"
    uri = s.provisioning_uri(Secret(pyotp.random_base32()), "alice")
    assert uri.startswith("otpauth://totp/Example%20Corp:alice?")
    assert "digits=8" in uri and "period=60" in uri and "algorithm=SHA512" in uri


def test_default_database_is_in_the_state_dir(backend: TotpBackend, state_dir: Path) -> None:
    assert backend.settings.database == state_dir / "totp.db"


# ------------------------------------------------------------ secrets never show


def test_reprs_hold_no_secret(backend: TotpBackend) -> None:
    secret = enroll(backend, "alice")
    enrolment = backend.store.lookup("alice")
    for thing in (backend, backend.store, backend.settings, enrolment):
        assert secret.reveal() not in repr(thing)
        assert secret.reveal() not in str(thing)


def test_codes_and_secrets_stay_out_of_verdicts_and_logs(
    backend: TotpBackend, caplog: pytest.LogCaptureFixture
) -> None:
    secret = enroll(backend, "alice")
    right = code_for(backend, secret)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    seen: list[object] = []
    with caplog.at_level(logging.DEBUG):
        for username, code in (("alice", wrong), ("alice", right), ("alice", right), ("bob", right)):
            verdict = backend.authenticate(answering(username, code))
            seen.extend([verdict, verdict.detail])
    seen.extend(record.getMessage() for record in caplog.records)
    for text in map(str, seen):
        for value in (right, wrong, secret.reveal()):
            assert value not in text
