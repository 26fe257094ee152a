"""The SQLite store: creation mode, schema version, refusal of bad files."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from nxauth import StoreError
from nxauth.store.sqlite import SCHEMA_VERSION, SqliteStore


def test_created_0600_with_wal_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "nxauth.db"
    store = SqliteStore(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert store.schema_version() == SCHEMA_VERSION
    assert store.execute("PRAGMA journal_mode")[0][0] == "wal"
    assert store.integrity_check() == "ok"
    store.close()
    # reopening changes nothing
    assert SqliteStore(path).schema_version() == SCHEMA_VERSION


def test_corrupt_file_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "nxauth.db"
    junk = b"this is not sqlite" * 100
    path.write_bytes(junk)
    os.chmod(path, 0o600)
    with pytest.raises(StoreError, match=str(path)):
        SqliteStore(path)
    assert path.read_bytes() == junk


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nxauth.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    os.chmod(path, 0o600)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer"):
        SqliteStore(path)
    assert path.read_bytes() == before


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nxauth.db"
    SqliteStore(path).close()
    before = path.read_bytes()
    os.chmod(path, 0)
    code = (
        "from nxauth.store.sqlite import SqliteStore\n"
        "from nxauth.errors import StoreError\n"
        "try:\n"
        f"    SqliteStore({str(path)!r})\n"
        "except StoreError as exc:\n"
        "    print(exc)\n"
    )
    command = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        # root reads any file: drop the capabilities that let it
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is needed to test an unreadable file as root")
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert str(path) in result.stdout and "not readable" in result.stdout
    os.chmod(path, 0o600)
    assert path.read_bytes() == before


def test_directory_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "nxauth.db").mkdir()
    with pytest.raises(StoreError, match="not a regular file"):
        SqliteStore(tmp_path / "nxauth.db")


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.execute("INSERT INTO throttle_failures (key, at) VALUES ('k', 1)")
        raise RuntimeError("boom")
    assert store.execute("SELECT count(*) FROM throttle_failures")[0][0] == 0


def test_concurrent_writers_from_threads(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")

    def work(n: int) -> None:
        for i in range(100):
            with store.transaction() as tx:
                tx.execute("INSERT INTO throttle_failures (key, at) VALUES (?, ?)", (f"k{n}", i))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.execute("SELECT count(*) FROM throttle_failures")[0][0] == 400
    assert store.integrity_check() == "ok"


CLOSE_WHILE_IN_USE = """
import sys, tempfile, threading, time
import nxauth
from nxauth import Reason
from tests.support.keys import ListKeySource, TransportKey

key = TransportKey()

class Deny:
    def authenticate(self, attempt): return nxauth.Verdict.deny(Reason.BAD_PASSWORD)
    def check_account(self, identity): return nxauth.Verdict.allow()

limits = {"max_user_failures": 10**6, "max_source_failures": 10**6, "max_user_failures_all_sources": 10**6}
auth = nxauth.Authenticator({"state_dir": tempfile.mkdtemp(), "transport": {"key_sources": ["keys"]},
    "throttle": limits, "auth": [{"use": "d"}], "account": [{"use": "d"}], "audit": {"log": False}},
    backends={"keys": ListKeySource(key.line), "d": Deny()}, entry_points=False)
stop = False
def loop(i):
    while not stop:
        try:
            session = auth.open_session(peer=(f"198.51.100.{i}", 1))
            session.check_transport_key("nx", key.line)
            session.login(f"user{i}", "x")
        except Exception:
            pass
threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(8)]
for t in threads: t.start()
time.sleep(0.3)
auth.close()
time.sleep(0.3)
stop = True
for t in threads: t.join(5)
print("survived")
"""


def test_closing_while_other_threads_use_the_store_does_not_crash(tmp_path: Path) -> None:
    """Authenticator.close() with logins running in eight threads (a server
    shutting down): an outside review got a segmentation fault every time,
    from connections closed under running statements.  Run in a child: a
    crash must not take the test runner with it."""
    root = Path(__file__).resolve().parents[3]
    for _ in range(3):
        result = subprocess.run(
            [sys.executable, "-c", CLOSE_WHILE_IN_USE], capture_output=True, text=True, timeout=120, cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert "survived" in result.stdout
