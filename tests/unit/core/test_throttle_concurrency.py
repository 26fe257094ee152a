"""The throttle under concurrent guesses: real threads and real processes on
one store file, a backend that counts its calls (a shared file for the
processes) and takes a little time; on the SQLite file and on PostgreSQL
(the cluster's case: every process of every host on one database).  The backend is asked at most the limit's
number of times in the window, and an attempt whose process dies in the
backend stays counted."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import nxauth
from nxauth import Attempt, AuthenticationFailed, Identity, Reason, Verdict
from nxauth.core.authenticator import runtime_of
from tests.support.keys import ListKeySource, TransportKey

SESSIONS = 50
LIMIT = 3


@pytest.fixture
def store(store_section: dict[str, Any]) -> dict[str, Any]:
    """The ``[store]`` table: every test here runs on SQLite and on PostgreSQL."""
    return store_section


class CountingBackend:
    """Allows alice/wonderland; counts every call, in memory and (when given)
    by appending one byte to a file shared by processes; sleeps a little."""

    def __init__(self, counter: Path | None = None, *, delay: float = 0.02, die: bool = False) -> None:
        self.calls = 0
        self._lock = threading.Lock()
        self.counter = counter
        self.delay = delay
        self.die = die

    def authenticate(self, attempt: Attempt) -> Verdict:
        with self._lock:
            self.calls += 1
        if self.counter is not None:
            fd = os.open(self.counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(fd, b"x")
            os.close(fd)
        if self.die:
            os._exit(0)  # the process dies with the attempt in flight
        time.sleep(self.delay)
        if attempt.username == "alice" and attempt.password.reveal() == "wonderland":
            return Verdict.allow()
        return Verdict.deny(Reason.BAD_PASSWORD)

    def check_account(self, identity: Identity) -> Verdict:
        return Verdict.allow()


def build(
    state: Path, key_line: str, backend: object, throttle: dict[str, Any], store: dict[str, Any]
) -> nxauth.Authenticator:
    return nxauth.Authenticator(
        {
            "state_dir": str(state),
            "store": store,
            "throttle": throttle,
            "transport": {"key_sources": ["keys"]},
            "auth": [{"use": "mem"}],
            "account": [{"use": "mem"}],
        },
        backends={"keys": ListKeySource(key_line), "mem": backend},
        entry_points=False,
    )


def attempt(auth: nxauth.Authenticator, key_line: str, username: str, password: str, host: str) -> str:
    session = auth.open_session(peer=(host, 40000))
    session.check_transport_key("nx", key_line)
    try:
        return session.login(username, password).username
    except AuthenticationFailed as exc:
        return exc.reason.value


def run_threads(count: int, target: Callable[[int], str]) -> list[str]:
    barrier = threading.Barrier(count)
    results: list[str] = [""] * count

    def run(index: int) -> None:
        barrier.wait()
        results[index] = target(index)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_threads_one_user_backend_called_at_most_the_limit(tmp_path: Path, store: dict[str, Any]) -> None:
    key = TransportKey()
    backend = CountingBackend()
    auth = build(tmp_path, key.line, backend, {"max_user_failures": LIMIT, "max_source_failures": 1000}, store)
    try:
        results = run_threads(SESSIONS, lambda i: attempt(auth, key.line, "alice", f"guess{i}", "198.51.100.7"))
    finally:
        auth.close()
    assert backend.calls <= LIMIT
    assert results.count("bad-password") == backend.calls
    assert set(results) <= {"bad-password", "locked-out"}


def test_threads_rotating_sources_stop_at_the_all_sources_limit(tmp_path: Path, store: dict[str, Any]) -> None:
    key = TransportKey()
    backend = CountingBackend()
    throttle = {"max_user_failures": LIMIT, "max_user_failures_all_sources": 5, "max_source_failures": 1000}
    auth = build(tmp_path, key.line, backend, throttle, store)
    try:
        run_threads(SESSIONS, lambda i: attempt(auth, key.line, "alice", f"guess{i}", f"203.0.113.{i}"))
    finally:
        auth.close()
    assert backend.calls <= 5


def test_threads_one_source_many_users_backend_called_at_most_the_source_limit(
    tmp_path: Path, store: dict[str, Any]
) -> None:
    key = TransportKey()
    backend = CountingBackend()
    auth = build(tmp_path, key.line, backend, {"max_user_failures": LIMIT, "max_source_failures": 4}, store)
    try:
        results = run_threads(SESSIONS, lambda i: attempt(auth, key.line, f"user{i}", "guess", "198.51.100.7"))
    finally:
        auth.close()
    assert backend.calls <= 4
    assert set(results) <= {"unknown-user", "bad-password", "locked-out"}


def _child(
    state: str, key_line: str, counter: str, barrier: Any, index: int, die: bool, results: Any, store: dict[str, Any]
) -> None:
    backend = CountingBackend(Path(counter), delay=0.05, die=die)
    auth = build(Path(state), key_line, backend, {"max_user_failures": LIMIT, "max_source_failures": 1000}, store)
    barrier.wait(60)
    results.put(attempt(auth, key_line, "alice", f"guess{index}", "198.51.100.7"))
    auth.close()


def _processes(
    tmp_path: Path, key: TransportKey, count: int, *, die: bool, store: dict[str, Any]
) -> tuple[int, list[str]]:
    context = multiprocessing.get_context("fork")
    counter = tmp_path / "calls"
    barrier = context.Barrier(count)
    results = context.Queue()
    children = [
        context.Process(target=_child, args=(str(tmp_path), key.line, str(counter), barrier, i, die, results, store))
        for i in range(count)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
        assert child.exitcode == 0
    answers = [] if die else [results.get(timeout=10) for _ in children]
    calls = counter.stat().st_size if counter.exists() else 0
    return calls, answers


def test_processes_one_store_file_backend_called_at_most_the_limit(tmp_path: Path, store: dict[str, Any]) -> None:
    key = TransportKey()
    build(tmp_path, key.line, CountingBackend(), {}, store).close()  # the store exists before the children race
    calls, answers = _processes(tmp_path, key, SESSIONS, die=False, store=store)
    assert 1 <= calls <= LIMIT
    assert answers.count("bad-password") == calls
    assert set(answers) <= {"bad-password", "locked-out"}


def test_an_attempt_whose_process_dies_in_the_backend_stays_counted(tmp_path: Path, store: dict[str, Any]) -> None:
    """An attacker who kills its connection mid-attempt gets no free guesses:
    the reservation of a process that died is a failure until the window ends."""
    key = TransportKey()
    build(tmp_path, key.line, CountingBackend(), {}, store).close()
    for _ in range(LIMIT):
        calls, _ = _processes(tmp_path, key, 1, die=True, store=store)
    assert calls == LIMIT
    backend = CountingBackend()
    auth = build(tmp_path, key.line, backend, {"max_user_failures": LIMIT, "max_source_failures": 1000}, store)
    try:
        assert attempt(auth, key.line, "alice", "wonderland", "198.51.100.7") == "locked-out"
        assert backend.calls == 0
        # from a source that has not failed, alice still gets in
        assert attempt(auth, key.line, "alice", "wonderland", "192.0.2.10") == "alice"
    finally:
        auth.close()


@pytest.mark.parametrize("outcome", ["bad-password", "alice"])
def test_a_settled_attempt_leaves_no_reservation(tmp_path: Path, outcome: str, store: dict[str, Any]) -> None:
    key = TransportKey()
    auth = build(tmp_path, key.line, CountingBackend(), {"max_user_failures": LIMIT}, store)
    try:
        password = "wonderland" if outcome == "alice" else "nope"
        assert attempt(auth, key.line, "alice", password, "198.51.100.7") == outcome
        store = runtime_of(auth).store
        assert store.execute("SELECT count(*) FROM throttle_failures WHERE token IS NOT NULL")[0][0] == 0
    finally:
        auth.close()
