"""Issue 17, class 6: a file at the store path that is not an nxauth store is
refused with a StoreError, and not one byte of it changes: no migration, no
switch to WAL, and no -wal, -shm or -journal appears beside it."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nxauth.errors import StoreError
from nxauth.store.sqlite import SCHEMA_VERSION, SqliteStore

SIDECARS = ("-wal", "-shm", "-journal")


def _snapshot(path: Path) -> tuple[str, float, list[str]]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    beside = sorted(p.name for p in path.parent.iterdir() if p != path)
    return digest, os.stat(path).st_mtime, beside


def _assert_refused_untouched(path: Path) -> StoreError:
    before = _snapshot(path)
    with pytest.raises(StoreError) as caught:
        SqliteStore(path)
    assert _snapshot(path) == before
    for side in SIDECARS:
        assert not path.with_name(path.name + side).exists(), side
    assert str(path) in str(caught.value)
    return caught.value


def _other_app_wal(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO photos (name) VALUES ('a.jpg')")
    conn.commit()
    conn.close()


def _other_app_with_id(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("CREATE TABLE users (username TEXT PRIMARY KEY)")
    conn.commit()
    conn.close()


def _other_app_plain(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()


def _other_app_versioned(path: Path) -> None:
    # user_version in nxauth's range, but none of nxauth's tables
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (login TEXT)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def _newer_schema(path: Path) -> None:
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    conn.commit()
    conn.close()


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _text(path: Path) -> None:
    path.write_text("this is somebody's notes file\n" * 50)


CASES: dict[str, Callable[[Path], None]] = {
    "other-app-wal-database": _other_app_wal,
    "other-app-application-id": _other_app_with_id,
    "other-app-plain-database": _other_app_plain,
    "other-app-user-version": _other_app_versioned,
    "newer-schema": _newer_schema,
    "empty-file": _empty,
    "text-file": _text,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_foreign_file_is_refused_byte_for_byte(tmp_path: Path, case: str) -> None:
    path = tmp_path / "nxauth.db"
    CASES[case](path)
    for side in SIDECARS:
        path.with_name(path.name + side).unlink(missing_ok=True)
    os.chmod(path, 0o600)
    _assert_refused_untouched(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.binary(max_size=4096),
        st.binary(min_size=84, max_size=4096).map(lambda b: b"SQLite format 3\0" + b),
    )
)
def test_arbitrary_bytes_are_refused_untouched(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("foreign") / "nxauth.db"
    path.write_bytes(data)
    os.chmod(path, 0o600)
    _assert_refused_untouched(path)


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_special_file_at_the_store_path_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nxauth.db"
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    else:
        path.mkdir(mode=0o700)
    outcome: list[BaseException | None] = []

    def open_store() -> None:
        try:
            SqliteStore(path).close()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=open_store, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive() and kind == "fifo":  # release a reader blocked in open()
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
    assert outcome, "opening the store hung"
    assert isinstance(outcome[0], StoreError), outcome
    assert not [p for p in tmp_path.iterdir() if p != path]


def test_a_store_made_before_application_id_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "nxauth.db"
    store = SqliteStore(path)
    with store.transaction() as tx:
        tx.execute("INSERT INTO users (username, created, changed) VALUES ('alice', 0, 0)")
        tx.execute("PRAGMA application_id = 0")
    store.close()
    reopened = SqliteStore(path)
    try:
        assert reopened.execute("SELECT username FROM users") == [("alice",)]
        assert reopened.execute("PRAGMA application_id")[0][0] == int.from_bytes(b"nxau", "big")
    finally:
        reopened.close()


def test_a_new_store_is_never_seen_half_made(tmp_path: Path) -> None:
    # many processes' worth of threads create the same store at once: each
    # one opens a complete store, none refuses a half-made one
    path = tmp_path / "nxauth.db"
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        try:
            store = SqliteStore(path)
            assert store.schema_version() == SCHEMA_VERSION
            store.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_processes_creating_one_store_all_open_it(tmp_path: Path) -> None:
    # real processes race to create the same store; each opens a complete one
    path = tmp_path / "state" / "nxauth.db"
    script = (
        "import sys, time\n"
        "from nxauth.store.sqlite import SqliteStore, SCHEMA_VERSION\n"
        "start = float(sys.argv[2])\n"
        "while time.time() < start: pass\n"
        "s = SqliteStore(sys.argv[1]); assert s.schema_version() == SCHEMA_VERSION; s.close()\n"
    )
    start = str(time.time() + 1.5)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    children = [
        subprocess.Popen([sys.executable, "-c", script, str(path), start], env=env, stderr=subprocess.PIPE)
        for _ in range(6)
    ]
    failures = []
    for child in children:
        _, err = child.communicate(timeout=120)
        if child.returncode != 0:
            failures.append(err.decode(errors="replace"))
    assert not failures, failures[0]
    assert sorted(p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")) == []
