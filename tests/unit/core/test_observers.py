"""Issue 17, class 5: no observer exception and no cancellation changes an outcome.

An ``nxauth_auth_event`` implementation that raises anything (an
``Exception`` or a ``BaseException``: ``asyncio.CancelledError``,
``GeneratorExit``, ``KeyboardInterrupt``, ``SystemExit``) is a failing
sink: the attempt is still counted (``session.max_attempts``, the
throttle), a wrong password is still denied, the other sinks still see the
event.  A ``login_async`` its caller cancelled never leaves the session
authenticated.  On the code before the fix, a ``CancelledError`` from an
observer escaped the login before the attempt was counted (the attempt
limit was gone), and a cancelled ``login_async`` authenticated later.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nxauth
from nxauth.testing import RecordingSink

RAISED: list[type[BaseException]] = [
    asyncio.CancelledError,
    GeneratorExit,
    KeyboardInterrupt,
    SystemExit,
    RuntimeError,
    MemoryError,
]


class Raising:
    """A third-party observer that raises ``kind`` on every event it sees."""

    def __init__(self, kind: type[BaseException], stage: int | None = None) -> None:
        self.kind = kind
        self.stage = stage
        self.seen = 0

    @nxauth.hookimpl
    def nxauth_auth_event(self, event: nxauth.AuthEvent) -> None:
        self.seen += 1
        if self.stage is None or event.stage == self.stage:
            raise self.kind("observer says no")


class Counting:
    """A third-party observer that only counts."""

    def __init__(self) -> None:
        self.events: list[nxauth.AuthEvent] = []
        self.lock = threading.Lock()

    @nxauth.hookimpl
    def nxauth_auth_event(self, event: nxauth.AuthEvent) -> None:
        with self.lock:
            self.events.append(event)


def _wait_for(check: Callable[[], bool], limit: float = 10.0) -> None:
    end = time.monotonic() + limit
    while not check():
        assert time.monotonic() < end, "not reached in time"
        time.sleep(0.005)


@pytest.mark.parametrize("kind", RAISED, ids=lambda k: k.__name__)
def test_a_raising_observer_changes_no_outcome_and_skips_no_count(
    kind: type[BaseException], make_auth: Callable[..., nxauth.Authenticator], granted: Any, sink: RecordingSink
) -> None:
    raising, counting = Raising(kind), Counting()
    auth = make_auth({"session": {"max_attempts": 3}}, plugins=(raising, counting))
    session = granted(auth)
    for attempt in range(1, 4):
        with pytest.raises(nxauth.AuthenticationFailed):
            session.login("alice", "not-the-password")
        assert session.attempts == attempt
    assert session.state is nxauth.SessionState.CLOSED  # the attempt limit holds
    with pytest.raises(nxauth.AuthenticationFailed):
        session.login("alice", "wonderland")  # closed: even the right password
    assert not session.authenticated
    other = granted(auth)
    assert other.login("alice", "wonderland").username == "alice"  # not required: a failing sink is no deny
    _wait_for(lambda: len(counting.events) == len(sink.events))
    assert [e.reason for e in counting.events] == [e.reason for e in sink.events]  # the others saw everything
    assert raising.seen == len(sink.events)


@pytest.mark.parametrize("kind", RAISED, ids=lambda k: k.__name__)
def test_a_raising_observer_denies_the_right_password_when_the_audit_is_required(
    kind: type[BaseException], make_auth: Callable[..., nxauth.Authenticator], granted: Any, sink: RecordingSink
) -> None:
    auth = make_auth({"audit": {"required": True}}, plugins=(Raising(kind, stage=2),))
    session = granted(auth)
    with pytest.raises(nxauth.AuthenticationFailed) as failed:
        session.login("alice", "wonderland")
    assert failed.value.reason is nxauth.Reason.AUDIT_FAILED
    assert not session.authenticated and session.attempts == 1
    assert [e.reason for e in sink.events][-2:] == [nxauth.Reason.OK, nxauth.Reason.AUDIT_FAILED]


class InterruptingHandler(logging.Handler):
    """A host's logging handler on ``nxauth.audit`` that a signal interrupts
    (KeyboardInterrupt raised in the caller's thread, inside nxauth's own sink)."""

    def __init__(self, when: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__()
        self.when = when

    def emit(self, record: logging.LogRecord) -> None:
        if self.when(record):
            raise KeyboardInterrupt


@pytest.fixture
def interrupting() -> Iterator[Callable[[Callable[[logging.LogRecord], bool]], None]]:
    logger = logging.getLogger("nxauth.audit")
    level = logger.level
    logger.setLevel(logging.INFO)  # accepted logins are logged at INFO
    added: list[logging.Handler] = []

    def add(when: Callable[[logging.LogRecord], bool]) -> None:
        handler = InterruptingHandler(when)
        logger.addHandler(handler)
        added.append(handler)

    yield add
    for handler in added:
        logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.mark.parametrize("password", ["wonderland", "not-the-password"])
def test_an_interrupt_inside_an_inline_sink_counts_the_attempt_and_takes_no_identity(
    password: str,
    make_auth: Callable[..., nxauth.Authenticator],
    granted: Any,
    sink: RecordingSink,
    interrupting: Any,
) -> None:
    auth = make_auth({"session": {"max_attempts": 2}})
    session = granted(auth)
    interrupting(lambda record: "password for alice" in record.getMessage())
    for attempt in (1, 2):
        with pytest.raises((KeyboardInterrupt, nxauth.AuthenticationFailed)):
            session.login("alice", password)
        assert session.attempts == attempt
        assert not session.authenticated
    assert session.state is nxauth.SessionState.CLOSED
    assert sink.events[-1].reason is nxauth.Reason.TOO_MANY_ATTEMPTS  # every sink still saw the events


class SlowBackend:
    """Allows alice after ``delay`` seconds (a backend cannot be interrupted)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0

    def authenticate(self, attempt: nxauth.Attempt) -> nxauth.Verdict:
        self.calls += 1
        time.sleep(self.delay)
        if attempt.username == "alice" and attempt.password.reveal() == "wonderland":
            return nxauth.Verdict.allow()
        return nxauth.Verdict.deny(nxauth.Reason.BAD_PASSWORD)

    def check_account(self, identity: nxauth.Identity) -> nxauth.Verdict:
        return nxauth.Verdict.allow()


def test_a_cancelled_login_async_never_authenticates(
    make_auth: Callable[..., nxauth.Authenticator], granted: Any, sink: RecordingSink
) -> None:
    backend = SlowBackend(0.3)
    auth = make_auth({"auth": [{"use": "slow"}], "account": [{"use": "slow"}]}, backends={"slow": backend})
    session = granted(auth)

    async def main() -> None:
        task = asyncio.ensure_future(session.login_async("alice", "wonderland"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    _wait_for(lambda: any(e.reason is nxauth.Reason.CANCELLED for e in sink.events))
    time.sleep(0.05)
    assert not session.authenticated
    with pytest.raises(nxauth.NotAuthenticated):
        _ = session.identity
    assert session.attempts == 1
    assert backend.calls == 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delay=st.floats(min_value=0.0, max_value=0.03), cancel_after=st.floats(min_value=0.0, max_value=0.04))
def test_a_login_async_cancelled_at_any_moment_leaves_no_identity_behind(
    make_auth: Callable[..., nxauth.Authenticator], granted: Any, delay: float, cancel_after: float
) -> None:
    """Whenever the cancellation lands (before the backend, while it runs,
    just as the login commits, after it), the caller that saw
    ``CancelledError`` left no authenticated session behind."""
    auth = make_auth(
        {"auth": [{"use": "slow"}], "account": [{"use": "slow"}], "throttle": {"enabled": False}},
        backends={"slow": SlowBackend(delay)},
    )
    session = granted(auth)

    async def main() -> bool:
        task = asyncio.ensure_future(session.login_async("alice", "wonderland"))
        await asyncio.sleep(cancel_after)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    cancelled = asyncio.run(main())
    if cancelled:
        _wait_for(lambda: session.state is not nxauth.SessionState.TRANSPORT_OK or not _running(session))
        time.sleep(delay + 0.02)  # the login in the pool has ended
        assert not session.authenticated
    else:
        assert session.authenticated and session.identity.username == "alice"


def _running(session: nxauth.Session) -> bool:
    return session.attempts == 0


class AsksCode:
    """A second factor that asks the client for a code."""

    def authenticate(self, attempt: nxauth.Attempt) -> nxauth.Verdict:
        attempt.ask("Code: ", False)
        return nxauth.Verdict.allow()

    def check_account(self, identity: nxauth.Identity) -> nxauth.Verdict:
        return nxauth.Verdict.allow()


@pytest.mark.parametrize("with_deadline", [False, True])
def test_an_abandoned_login_async_gives_its_thread_back(
    make_auth: Callable[..., nxauth.Authenticator], granted: Callable[..., nxauth.Session], with_deadline: bool
) -> None:
    """Two logins whose conversation never answers, abandoned by their
    callers (wait_for), with a pool of two threads: a third login still runs
    (an outside review found the pool held for good)."""
    auth = make_auth(
        {"session": {"workers": 2}, "auth": [{"use": "mem"}, {"use": "otp"}], "throttle": {"enabled": False}},
        backends={"otp": AsksCode()},
    )

    async def main() -> str:
        never = asyncio.Event()

        async def stuck(prompt: str, echo: bool) -> str:
            await never.wait()
            return "123"

        async def answers(prompt: str, echo: bool) -> str:
            return "123"

        for _ in range(2):
            deadline = time.monotonic() + 0.3 if with_deadline else None
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(
                    granted(auth).login_async("alice", "wonderland", conversation=stuck, deadline=deadline), 0.3
                )
        identity = await asyncio.wait_for(granted(auth).login_async("bob", "builder", conversation=answers), 10)
        return identity.username

    assert asyncio.run(main()) == "bob"
