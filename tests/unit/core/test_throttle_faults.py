"""Fail closed: when the throttle cannot write its store (a write that raises,
a read-only connection, a store locked past its busy timeout), the login is
denied with ``throttle-unavailable``, audited, before the backends or after
them; the right password is never let in past the limit."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

import nxauth
from nxauth import AuthenticationFailed, Reason
from nxauth.core.authenticator import runtime_of
from nxauth.store.sqlite import SqliteStore
from nxauth.testing import RecordingSink

Build = Callable[..., nxauth.Authenticator]
Granted = Callable[..., nxauth.Session]


class FaultyWrites:
    """The real store, whose write transactions raise SQLite's "disk full"
    inside the transaction (so the store rolls back and reports it) when
    ``fails(n)`` says so for the n-th transaction (1-based)."""

    def __init__(self, inner: SqliteStore, fails: Callable[[int], bool]) -> None:
        self.inner = inner
        self.fails = fails
        self.count = 0

    @contextlib.contextmanager
    def transaction(self, *, keys: Sequence[str] = ()) -> Iterator[Any]:
        self.count += 1
        failing = self.fails(self.count)
        with self.inner.transaction(keys=keys) as tx:
            if failing:
                raise sqlite3.OperationalError("database or disk is full")
            yield tx

    def execute(self, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        return self.inner.execute(sql, parameters)


UNAVAILABLE = "throttle-unavailable"
LOCKED_OUT = Reason.LOCKED_OUT.value


def reason_of(call: Callable[[], object]) -> str:
    """The reason's word of a denial, or the username of an accepted login."""
    try:
        identity = call()
    except AuthenticationFailed as exc:
        return exc.reason.value
    assert isinstance(identity, nxauth.Identity)
    return identity.username


def inject(auth: nxauth.Authenticator, fails: Callable[[int], bool]) -> FaultyWrites:
    runtime = runtime_of(auth)
    faulty = FaultyWrites(runtime.store, fails)
    runtime.throttle._store = lambda: faulty  # type: ignore[assignment]
    return faulty


def test_failures_that_cannot_be_recorded_never_let_the_right_password_in(
    make_auth: Build, granted: Granted, sink: RecordingSink
) -> None:
    auth = make_auth({"throttle": {"max_user_failures": 3}})
    inject(auth, lambda n: True)
    for _ in range(5):
        assert reason_of(lambda: granted(auth).login("alice", "nope")) == UNAVAILABLE
    assert reason_of(lambda: granted(auth).login("alice", "wonderland")) == UNAVAILABLE
    assert [e.reason.value for e in sink.events if e.stage == 2] == [UNAVAILABLE] * 6


def test_a_success_that_cannot_be_settled_is_denied_and_audited(
    make_auth: Build, granted: Granted, sink: RecordingSink
) -> None:
    auth = make_auth({"throttle": {"max_user_failures": 3}})
    faulty = inject(auth, lambda n: n == 2)  # the reservation works, the settle fails
    session = granted(auth)
    assert reason_of(lambda: session.login("alice", "wonderland")) == UNAVAILABLE
    assert faulty.count == 2
    assert session.state is nxauth.SessionState.TRANSPORT_OK
    last = [e for e in sink.events if e.stage == 2][-1]
    assert last.reason.value == UNAVAILABLE and last.outcome == "failed"
    assert not [e for e in sink.events if e.stage == 2 and e.outcome == "accepted"]


def test_a_failure_that_cannot_be_settled_stays_counted(make_auth: Build, granted: Granted) -> None:
    auth = make_auth({"throttle": {"max_user_failures": 3}})
    inject(auth, lambda n: n % 2 == 0)  # every settle fails: the reservations stay
    for _ in range(3):
        assert reason_of(lambda: granted(auth).login("alice", "nope")) == UNAVAILABLE
    assert reason_of(lambda: granted(auth).login("alice", "wonderland")) == LOCKED_OUT


def test_a_read_only_store_denies(make_auth: Build, granted: Granted) -> None:
    auth = make_auth({"throttle": {"max_user_failures": 3}})
    runtime_of(auth).store.connection().execute("PRAGMA query_only = ON")  # this thread's connection
    for _ in range(4):
        assert reason_of(lambda: granted(auth).login("alice", "nope")) == UNAVAILABLE
    assert reason_of(lambda: granted(auth).login("alice", "wonderland")) == UNAVAILABLE


def test_a_store_locked_past_its_busy_timeout_denies(make_auth: Build, granted: Granted) -> None:
    auth = make_auth({"throttle": {"max_user_failures": 3}})
    store = runtime_of(auth).store
    store.busy_timeout = 0.2  # for the connections opened from now on (the login's thread)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    results: list[str] = []

    def logins() -> None:
        for _ in range(4):
            results.append(reason_of(lambda: granted(auth).login("alice", "nope")))
        results.append(reason_of(lambda: granted(auth).login("alice", "wonderland")))

    try:
        thread = threading.Thread(target=logins)
        thread.start()
        thread.join(60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert results == [UNAVAILABLE] * 5


@pytest.mark.parametrize("fails", [1, 2])
def test_a_reservation_or_a_release_that_cannot_be_written_denies(
    make_auth: Build, granted: Granted, fails: int
) -> None:
    class Broken:
        def authenticate(self, attempt: nxauth.Attempt) -> nxauth.Verdict:
            raise RuntimeError("backend down")

        def check_account(self, identity: nxauth.Identity) -> nxauth.Verdict:
            return nxauth.Verdict.allow()

    auth = make_auth(backends={"mem": Broken()})
    inject(auth, lambda n: n == fails)
    assert reason_of(lambda: granted(auth).login("alice", "wonderland")) == UNAVAILABLE
