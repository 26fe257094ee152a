"""The enrolment database: file modes, refusals, replay records, and
concurrent writers (threads and processes)."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxauth_totp import AlreadyEnrolledError, TotpStore, TotpStoreError, new_secret


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TotpStore]:
    opened = TotpStore(tmp_path / "state" / "totp.db")
    yield opened
    opened.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------ files


def test_file_is_created_0600_in_a_0700_directory(store: TotpStore) -> None:
    store.enroll("alice", new_secret(), 1.0)
    assert mode(store.path) == 0o600
    assert mode(store.path.parent) == 0o700
    # the WAL files SQLite makes beside it (while a connection is open) take the same mode
    for suffix in ("-wal", "-shm"):
        companion = store.path.with_name(store.path.name + suffix)
        assert companion.exists()
        assert mode(companion) == 0o600


def test_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = TotpStore(tmp_path / "totp.db")
        store.users()
        store.close()
    finally:
        os.umask(old)
    assert mode(tmp_path / "totp.db") == 0o600


def test_nothing_is_created_before_first_use(tmp_path: Path) -> None:
    store = TotpStore(tmp_path / "state" / "totp.db")
    assert not (tmp_path / "state").exists()
    store.close()


@pytest.mark.parametrize("loose", [0o640, 0o604, 0o666])
def test_loose_permissions_are_refused(tmp_path: Path, loose: int) -> None:
    path = tmp_path / "totp.db"
    TotpStore(path).users()
    path.chmod(loose)
    with pytest.raises(TotpStoreError, match="chmod 600"):
        TotpStore(path).lookup("alice")


def test_a_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "real.db"
    TotpStore(target).users()
    link = tmp_path / "totp.db"
    link.symlink_to(target)
    with pytest.raises(TotpStoreError, match="not a regular file"):
        TotpStore(link).users()


def test_garbage_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "totp.db"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"this is not a database, and it is long enough to have a header" * 4)
    os.close(fd)
    before = path.read_bytes()
    with pytest.raises(TotpStoreError, match="not a usable database"):
        TotpStore(path).users()
    assert path.read_bytes() == before


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "totp.db"
    TotpStore(path).users()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(TotpStoreError, match="newer"):
        TotpStore(path).users()


def test_closed_store_raises(store: TotpStore) -> None:
    store.close()
    with pytest.raises(TotpStoreError, match="closed"):
        store.users()


# ------------------------------------------------------------ enrolments


def test_enroll_lookup_remove(store: TotpStore) -> None:
    secret = new_secret()
    assert store.enroll("alice", secret, 100.0) is False
    enrolment = store.lookup("alice")
    assert enrolment is not None and enrolment.secret == secret and enrolment.last_step == -1
    assert [(u.username, u.enrolled, u.last_used) for u in store.users()] == [("alice", 100.0, None)]
    assert store.remove("alice") is True
    assert store.remove("alice") is False
    assert store.lookup("alice") is None


def test_enroll_refuses_to_overwrite_without_force(store: TotpStore) -> None:
    first, second = new_secret(), new_secret()
    store.enroll("alice", first, 1.0)
    with pytest.raises(AlreadyEnrolledError):
        store.enroll("alice", second, 2.0)
    enrolment = store.lookup("alice")
    assert enrolment is not None and enrolment.secret == first


def test_force_replaces_and_resets_the_replay_record(store: TotpStore) -> None:
    first, second = new_secret(), new_secret()
    store.enroll("alice", first, 1.0)
    assert store.claim_step("alice", first, 500, 2.0)
    assert store.enroll("alice", second, 3.0, force=True) is True
    enrolment = store.lookup("alice")
    assert enrolment is not None and enrolment.secret == second and enrolment.last_step == -1


def test_claim_step_only_moves_forward(store: TotpStore) -> None:
    secret = new_secret()
    store.enroll("alice", secret, 1.0)
    assert store.claim_step("alice", secret, 10, 2.0)
    assert not store.claim_step("alice", secret, 10, 3.0)
    assert not store.claim_step("alice", secret, 9, 3.0)
    assert store.claim_step("alice", secret, 11, 4.0)
    assert [u.last_used for u in store.users()] == [4.0]


def test_claim_step_fails_after_re_enrolment_or_removal(store: TotpStore) -> None:
    old = new_secret()
    store.enroll("alice", old, 1.0)
    store.enroll("alice", new_secret(), 2.0, force=True)
    assert not store.claim_step("alice", old, 10, 3.0)
    store.remove("alice")
    assert not store.claim_step("alice", old, 11, 3.0)


def test_enrolment_repr_is_redacted(store: TotpStore) -> None:
    secret = new_secret()
    store.enroll("alice", secret, 1.0)
    assert secret.reveal() not in repr(store.lookup("alice"))


# ------------------------------------------------------------ concurrency


def test_threads_with_their_own_stores_do_not_corrupt_it(tmp_path: Path) -> None:
    """Logins (claims) and enrolments (replace, remove) at once, each thread
    with its own store object, as separate processes would have."""
    path = tmp_path / "totp.db"
    secret = new_secret()
    TotpStore(path).enroll("alice", secret, 0.0)
    errors: list[BaseException] = []
    claimed: list[int] = []
    lock = threading.Lock()

    def logins() -> None:
        own = TotpStore(path)
        try:
            for step in range(200):
                if own.claim_step("alice", secret, step, float(step)):
                    with lock:
                        claimed.append(step)
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.close()

    def enrolments(index: int) -> None:
        own = TotpStore(path)
        try:
            for round_ in range(50):
                name = f"user{index}-{round_ % 5}"
                own.enroll(name, new_secret(), float(round_), force=True)
                if round_ % 3 == 0:
                    own.remove(name)
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=logins) for _ in range(4)]
    threads += [threading.Thread(target=enrolments, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(claimed) == sorted(set(claimed))  # no step was claimed twice
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


WORKER = """
import sys
from nxauth import Secret
from nxauth_totp import TotpStore
store = TotpStore(sys.argv[1])
secret = Secret(sys.stdin.readline().strip())  # not in argv: ps shows argv
won = [step for step in range(300) if store.claim_step("alice", secret, step, float(step))]
print(" ".join(map(str, won)))
"""


def test_processes_racing_for_steps_never_win_the_same_one(tmp_path: Path) -> None:
    path = tmp_path / "totp.db"
    secret = new_secret()
    TotpStore(path).enroll("alice", secret, 0.0)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    won: list[int] = []
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write(secret.reveal() + "\n")
        worker.stdin.close()
    for worker in workers:
        assert worker.stdout is not None
        out = worker.stdout.read()
        assert worker.wait(timeout=120) == 0
        won.extend(int(step) for step in out.split())
    assert len(won) == len(set(won))
    assert max(won) == 299


def test_missing_parents_are_0700_whatever_the_umask(tmp_path: Path) -> None:
    """``mkdir(parents=True)`` gives the mode to the last directory only: an
    outside review got 0777 parents under umask 000, then swapped in a
    database of its own."""
    old = os.umask(0)
    try:
        store = TotpStore(tmp_path / "d1" / "d2" / "totp.db")
        store.enroll("alice", new_secret(), 0.0)
        store.close()
    finally:
        os.umask(old)
    assert mode(tmp_path / "d1") == 0o700 and mode(tmp_path / "d1" / "d2") == 0o700
    assert mode(tmp_path / "d1" / "d2" / "totp.db") == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file of another account needs root")
def test_a_database_of_another_account_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "totp.db"
    store = TotpStore(path)
    store.enroll("alice", new_secret(), 0.0)
    store.close()
    os.chown(path, 65534, 65534)  # nobody: a planted database with a secret it knows
    with pytest.raises(TotpStoreError, match="belongs to uid 65534"):
        TotpStore(path).lookup("alice")


def test_a_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    store = TotpStore(directory / "totp.db")
    store.enroll("alice", new_secret(), 0.0)
    store.close()
    directory.chmod(0o777)
    with pytest.raises(TotpStoreError, match="may be written by group or others"):
        TotpStore(directory / "totp.db").lookup("alice")
