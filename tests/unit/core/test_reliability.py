"""Reliability of the users table under real processes: concurrent writers
while logins run, ``kill -9`` in the middle of ``passwd``, damaged files.

The writers and the killed processes are real subprocesses running the real
CLI (``nxauth.cli.main``), on the same SQLite file as the logins.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from passlib import hash as passlib_hash

import nxauth
from nxauth import AuthenticationFailed, Reason, Secret
from nxauth.backends.hashing import PasswordHasher
from nxauth.backends.userdb import ImportEntry, UserDatabase
from nxauth.cli import main
from nxauth.store.sqlite import SqliteStore

CHEAP = {"time_cost": 1, "memory_cost": 8192}
hasher = PasswordHasher(**CHEAP)

# A writer: OPS commands of the real CLI in one process (the parser is built
# once; each command loads the configuration and opens the store as a fresh
# `nxauth` process would), half useradd, half passwd of the users it owns
# (u<j> with j % 2 == its number).  Exits 1 on any failure.
WRITER = r"""
import io, sys
from nxauth.cli import build_parser

config, number, ops, users = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
owned = [j for j in range(users) if j % 2 == number]
parser = build_parser()

def run(argv, stdin=b""):
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    args = parser.parse_args(["--config", config, *argv])
    try:
        code = args.handler(args)
    except Exception as exc:
        print(f"FAILED {argv[0]} {argv[1]}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1)
    if code != 0:
        print(f"FAILED {argv[0]} {argv[1]}: exit {code}", file=sys.stderr, flush=True)
        raise SystemExit(1)

for i in range(ops // 2):
    run(["useradd", f"p{number}-{i}", "--no-password"])
    j = owned[i % len(owned)]
    run(["passwd", f"u{j}", "--password-stdin"], f"new-{j}-{i // len(owned)}\n".encode())
"""

# Changes the victim's password back and forth until killed: through the CLI
# (hashing included), or in a tight loop of transactions (no hashing).
VICTIM = r"""
import io, sys
mode, config, state = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "cli":
    from nxauth.cli import main
    # one passwd before "ready" (to the password it already has): the kills
    # then land in the middle of passwd, not in the first call's imports
    import contextlib
    sys.stdin = io.TextIOWrapper(io.BytesIO(b"pw-A\n"), encoding="utf-8")
    with contextlib.redirect_stdout(io.StringIO()):
        if main(["--config", config, "passwd", "victim", "--password-stdin"]) != 0:
            raise SystemExit(1)
    print("ready", flush=True)
    i = 0
    while True:
        sys.stdin = io.TextIOWrapper(io.BytesIO(b"pw-A\n" if i % 2 else b"pw-B\n"), encoding="utf-8")
        if main(["--config", config, "passwd", "victim", "--password-stdin"]) != 0:
            raise SystemExit(1)
        i += 1
else:
    from nxauth import Secret
    from nxauth.backends.hashing import PasswordHasher
    from nxauth.store.sqlite import SqliteStore
    from nxauth.backends.userdb import UserDatabase
    hasher = PasswordHasher(time_cost=1, memory_cost=8192)
    hashes = [hasher.hash(Secret("pw-A")), hasher.hash(Secret("pw-B"))]
    db = UserDatabase(SqliteStore(state + "/nxauth.db"))
    print("ready", flush=True)
    i = 0
    while True:
        db.set_password("victim", hashes[i % 2])
        i += 1
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "nxauth.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n[backends.passwords]\ntime_cost = 1\nmemory_cost = 8192\n')
    return path


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


def verifies(stored: str | None, password: str) -> bool:
    return stored is not None and hasher.verify(Secret(password), stored).matched


# ------------------------------------------------------------ concurrent writers and logins


@pytest.mark.slow
def test_two_writer_processes_while_four_threads_log_in(
    tmp_path: Path,
    config_file: Path,
    make_auth: Callable[..., nxauth.Authenticator],
    granted: Callable[..., nxauth.Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    users, ops = 250, 500
    auth = make_auth(
        {
            "backends": {"passwords": dict(CHEAP)},
            "auth": [{"use": "passwords"}],
            "account": [{"use": "users"}],
            # every failure is a write transaction, and nobody is locked out
            "throttle": {"max_user_failures": 10**6, "max_source_failures": 10**6},
        }
    )
    db: UserDatabase = auth.backends["users"].users  # type: ignore[attr-defined]
    db.import_entries(
        [ImportEntry(j, f"u{j}", passlib_hash.bcrypt.using(rounds=4).hash(f"old-{j}")) for j in range(users)]
    )

    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(config_file), str(number), str(ops), str(users)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=child_env(),
        )
        for number in (0, 1)
    ]
    stop = threading.Event()
    results: Counter[str] = Counter()
    lock = threading.Lock()

    def log_in(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            j = rng.randrange(users)
            try:
                granted(auth, peer=(f"192.0.2.{seed + 1}", 40000 + j)).login(f"u{j}", f"old-{j}")
                outcome = "ok"
            except AuthenticationFailed as exc:
                outcome = exc.reason.value
            except Exception as exc:  # anything else reaching a user is a failure of this test
                outcome = f"raised {type(exc).__name__}: {exc}"
            with lock:
                results[outcome] += 1
            stop.wait(0.01)  # steady login traffic that leaves the writers some CPU on two cores

    threads = [threading.Thread(target=log_in, args=(seed,)) for seed in range(4)]
    with caplog.at_level(logging.WARNING):
        for thread in threads:
            thread.start()
        try:
            errors = [writer.communicate(timeout=240)[1].decode() for writer in writers]
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            for writer in writers:
                if writer.poll() is None:
                    writer.kill()
                    writer.wait()

    assert [writer.returncode for writer in writers] == [0, 0], errors
    assert errors == ["", ""]
    assert set(results) <= {"ok", Reason.BAD_PASSWORD.value}, results
    assert results["ok"] + results[Reason.BAD_PASSWORD.value] > 20, results
    assert "locked" not in caplog.text
    assert "throttle: cannot" not in caplog.text

    # No lost update: every insert is there, and every user's hash is the last
    # one its writer set, whatever the logins upgraded meanwhile.
    rows = {record.username: record for record in db.list_users()}
    assert all(f"p{number}-{i}" in rows for number in (0, 1) for i in range(ops // 2))
    rounds = (ops // 2 + users // 2 - 1) // (users // 2)
    for j in range(users):
        last = f"new-{j}-{rounds - 1}"
        assert verifies(rows[f"u{j}"].password_hash, last), f"u{j} lost its last passwd"
    assert db.store.integrity_check() == "ok"


# ------------------------------------------------------------ kill -9 in the middle of passwd


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["cli", "tight"])
def test_kill_9_in_the_middle_of_passwd(tmp_path: Path, config_file: Path, mode: str) -> None:
    """Either the old or the new password works afterwards, never neither,
    and the file passes PRAGMA integrity_check, after each of many kills."""
    state = tmp_path / "state"
    store = SqliteStore(state / "nxauth.db")
    UserDatabase(store).add("victim", password_hash=hasher.hash(Secret("pw-A")))
    store.close()
    rng = random.Random(f"kill-{mode}")
    seen: set[str] = set()
    kills = 8
    for _ in range(kills):
        child = subprocess.Popen(
            [sys.executable, "-c", VICTIM, mode, str(config_file), str(state)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(),
        )
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n", child.stderr.read() if child.stderr else b""
        try:
            child.wait(timeout=rng.uniform(0.01, 0.2))
        except subprocess.TimeoutExpired:
            os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else b""
        child.stdout.close()
        if child.stderr:
            child.stderr.close()

        store = SqliteStore(state / "nxauth.db")  # opened afresh: recovers the WAL
        try:
            assert store.integrity_check() == "ok"
            stored = UserDatabase(store).require("victim").password_hash
            assert stored is not None
            assert verifies(stored, "pw-A") or verifies(stored, "pw-B"), "neither password works"
            seen.add(stored)
        finally:
            store.close()
    assert len(seen) > 1, "the children were killed before changing anything"


# ------------------------------------------------------------ damaged files


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _populated(tmp_path: Path, count: int = 5000) -> Path:
    path = tmp_path / "state" / "nxauth.db"
    store = SqliteStore(path)
    UserDatabase(store).import_entries([ImportEntry(i, f"user{i}", None) for i in range(count)])
    store.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return path


@pytest.mark.parametrize("keep", [0.5, 0.01], ids=["half", "first-pages"])
def test_truncated_file_is_refused_and_left_alone(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str], keep: float
) -> None:
    path = _populated(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: max(4096, int(len(data) * keep) // 4096 * 4096)])
    before = _digest(path)
    for argv in (["userlist"], ["useradd", "alice", "--no-password"]):
        assert main(["--config", str(config_file), *argv]) == 4
        err = capsys.readouterr().err
        assert str(path) in err
        assert err.count("\n") == 1
    assert _digest(path) == before


def test_damaged_page_is_an_error_naming_the_file(tmp_path: Path, config_file: Path) -> None:
    path = _populated(tmp_path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2 // 4096 * 4096
    data[middle : middle + 4096] = b"\xa5" * 4096
    path.write_bytes(bytes(data))
    store = SqliteStore(path)
    try:
        with pytest.raises(nxauth.StoreError, match=str(path)):
            UserDatabase(store).list_users()
        with pytest.raises(nxauth.StoreError, match="malformed"):
            store.integrity_check()
    finally:
        store.close()
