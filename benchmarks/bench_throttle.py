"""The throttle under a long attack, and what an attempt costs it.

(1) Size: 1,000,000 failures (``--quick``: 100,000) of many users from many
sources, the clock advancing 0.1 s per failure (a 900 s window holds 9,000
attempts), recorded by the throttle (reserve, then settle as a failure) and,
in the same run, by a copy of the old algorithm (a read to check, a write to
record, expired rows of the keys touched only).  Prints the store's size
(after a WAL checkpoint) and the process's RSS at 1k, 10k, 100k and 1M.

(2) Cost, same-run ratios (medians of interleaved rounds):
    - the throttle's part of an attempt, reservation + settle against the
      old check + record, for a failure and for a success;
    - a locked-out ``session.login`` (through the whole pipeline) against a
      successful one: the µs (target <= 100 µs) and the backend calls (the
      stand-in for hashing: must be 0).

    python benchmarks/bench_throttle.py [--quick] [--failures N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nxauth
from nxauth import Peer
from nxauth.config import ThrottleConfig
from nxauth.core.throttle import Reservation, Settle, Throttle, source_key, user_key
from nxauth.store.sqlite import SqliteStore
from nxauth.testing import MemoryBackend

LOCKED_TARGET_US = 100.0
CHECKPOINTS = (1_000, 10_000, 100_000, 1_000_000)


class OldThrottle:
    """The algorithm before reservations (nxauth a6a7906): ``check_state`` is
    one read, ``record_failure`` one write that purges only its own keys."""

    def __init__(self, store: SqliteStore, config: ThrottleConfig, clock: Callable[[], float]) -> None:
        self.store, self.config, self.clock = store, config, clock

    def _keys(self, username: str, peer: Peer) -> list[tuple[str, int]]:
        keys = [(user_key(username), self.config.max_user_failures)]
        source = source_key(peer.host)
        if source is not None:
            keys.append((source, self.config.max_source_failures))
        return keys

    def check_state(self, username: str, peer: Peer) -> bool:
        names = [key for key, _ in self._keys(username, peer)]
        user = user_key(username)
        rows = self.store.execute(
            "SELECT key, locked_until, lockouts FROM throttle_locks WHERE key IN (?, ?) AND locked_until > ? "
            "UNION ALL SELECT 'dirty', EXISTS (SELECT 1 FROM throttle_failures WHERE key = ?) "
            "OR EXISTS (SELECT 1 FROM throttle_locks WHERE key = ?), 0 ORDER BY 2 DESC",
            (*names, self.clock(), user, user),
        )
        return any(key == "dirty" and value for key, value, _ in rows)

    def record_failure(self, username: str, peer: Peer) -> None:
        now, cfg = self.clock(), self.config
        with self.store.transaction() as tx:
            for key, limit in self._keys(username, peer):
                tx.execute("DELETE FROM throttle_failures WHERE key = ? AND at < ?", (key, now - cfg.window))
                tx.execute("INSERT INTO throttle_failures (key, at) VALUES (?, ?)", (key, now))
                (count,) = tx.execute("SELECT count(*) FROM throttle_failures WHERE key = ?", (key,)).fetchone()
                if count < limit:
                    continue
                row = tx.execute("SELECT lockouts, last_lockout FROM throttle_locks WHERE key = ?", (key,)).fetchone()
                lockouts = int(row[0]) if row is not None and now - row[1] <= cfg.max_lockout + cfg.window else 0
                tx.execute(
                    "INSERT INTO throttle_locks VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                    "locked_until = excluded.locked_until, lockouts = excluded.lockouts, "
                    "last_lockout = excluded.last_lockout",
                    (key, now + min(cfg.lockout * 2**lockouts, cfg.max_lockout), lockouts + 1, now),
                )
                tx.execute("DELETE FROM throttle_failures WHERE key = ?", (key,))


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def size_mib(store: SqliteStore) -> float:
    store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    total = store.path.stat().st_size
    wal = Path(f"{store.path}-wal")
    if wal.exists():
        total += wal.stat().st_size
    return total / 2**20


def peer_of(index: int) -> Peer:
    n = index % 200_000
    return Peer(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", 1)


def size_run(directory: Path, failures: int) -> None:
    config = ThrottleConfig()  # defaults: window 900 s, limits 10 / 100 / 30
    clock_new, clock_old = Clock(), Clock()
    new_store = SqliteStore(directory / "new.db")
    old_store = SqliteStore(directory / "old.db")
    new = Throttle(lambda: new_store, config, clock=clock_new)
    old = OldThrottle(old_store, config, clock_old)
    checkpoints = [c for c in CHECKPOINTS if c <= failures]
    old_limit = min(failures, 100_000)  # the old store only grows: its trend is clear by then
    print(f"(1) {failures:,} failures, clock +0.1 s each, {config.window:.0f} s window, 50,000 users x 200,000 sources")
    print(f"{'failures':>10} | {'new rows':>9} | {'new MiB':>8} | {'old rows':>9} | {'old MiB':>8} | {'RSS MiB':>8}")
    print("-" * 68)
    done = 0
    start = time.perf_counter()
    for checkpoint in checkpoints:
        for index in range(done, checkpoint):
            username, peer = f"user{index % 50_000}", peer_of(index)
            clock_new.now += 0.1
            taken = new.reserve(username, peer)
            if isinstance(taken, Reservation):
                new.settle(taken, Settle.FAILURE)
            if index < old_limit:
                clock_old.now += 0.1
                old.check_state(username, peer)
                old.record_failure(username, peer)
        done = checkpoint
        rows = new_store.execute(
            "SELECT (SELECT count(*) FROM throttle_failures) + (SELECT count(*) FROM throttle_locks)"
        )
        if checkpoint <= old_limit:
            old_rows_text = str(
                old_store.execute(
                    "SELECT (SELECT count(*) FROM throttle_failures) + (SELECT count(*) FROM throttle_locks)"
                )[0][0]
            )
            old_size_text = f"{size_mib(old_store):8.2f}"
        else:
            old_rows_text, old_size_text = "(stopped)", "-"
        print(
            f"{checkpoint:>10,} | {rows[0][0]:>9,} | {size_mib(new_store):8.2f} | {old_rows_text:>9} | "
            f"{old_size_text:>8} | {rss_mib():8.1f}"
        )
    print(f"    ({time.perf_counter() - start:.0f} s)")
    new_store.close()
    old_store.close()


def cost_run(directory: Path, attempts: int, rounds: int) -> None:
    config = ThrottleConfig()
    clock = Clock()
    store = SqliteStore(directory / "cost.db")
    new = Throttle(lambda: store, config, clock=clock)
    old = OldThrottle(store, config, clock)
    results: dict[str, list[float]] = {k: [] for k in ("new-fail", "old-fail", "new-ok", "old-ok")}
    for _ in range(rounds):
        for name, times in results.items():
            start = time.perf_counter_ns()
            for index in range(attempts):
                clock.now += 0.001
                username, peer = f"{name}{index}", peer_of(index % 1000)  # below every limit
                if name in {"new-fail", "new-ok"}:
                    taken = new.reserve(username, peer)
                    assert isinstance(taken, Reservation)
                    new.settle(taken, Settle.FAILURE if name == "new-fail" else Settle.SUCCESS)
                elif name == "old-fail":
                    old.check_state(username, peer)
                    old.record_failure(username, peer)
                else:
                    old.check_state(username, peer)  # a clean success: nothing to clear, no write
            times.append((time.perf_counter_ns() - start) / attempts / 1000)
            with store.transaction() as tx:  # every round starts from clean counts
                tx.execute("DELETE FROM throttle_failures")
                tx.execute("DELETE FROM throttle_locks")
    med = {name: statistics.median(values) for name, values in results.items()}
    print(f"\n(2a) the throttle's part of one attempt ({attempts} x {rounds} rounds, median)")
    print("     write transactions: new 2 (reserve, settle); old 1 on a failure (record), 0 on a clean success")
    print(
        f"     failure: reserve + settle {med['new-fail']:7.1f} us   old check + record {med['old-fail']:7.1f} us"
        f"   ratio {med['new-fail'] / med['old-fail']:.2f}"
    )
    print(
        f"     success: reserve + settle {med['new-ok']:7.1f} us   old check (clean)  {med['old-ok']:7.1f} us"
        f"   ratio {med['new-ok'] / med['old-ok']:.2f}"
    )
    store.close()


class Counting:
    """The in-memory backend, counting its calls (where a real backend hashes)."""

    def __init__(self) -> None:
        self.inner = MemoryBackend({"alice": "wonderland"})
        self.calls = 0

    def authenticate(self, attempt: nxauth.Attempt) -> nxauth.Verdict:
        self.calls += 1
        return self.inner.authenticate(attempt)

    def check_account(self, identity: nxauth.Identity) -> nxauth.Verdict:
        return self.inner.check_account(identity)


def locked_run(directory: Path, logins: int, rounds: int) -> None:
    from tests.support.keys import ListKeySource, TransportKey

    audit = logging.getLogger("nxauth.audit")
    audit.setLevel(logging.INFO)
    audit.addHandler(logging.StreamHandler(io.StringIO()))
    audit.propagate = False
    key, backend = TransportKey(), Counting()
    auth = nxauth.Authenticator(
        {
            "state_dir": str(directory / "auth"),
            "throttle": {"max_user_failures": 3, "lockout": 10**6, "max_lockout": 10**6},
            "transport": {"key_sources": ["keys"]},
            "auth": [{"use": "mem"}],
            "account": [{"use": "mem"}],
        },
        backends={"mem": backend, "keys": ListKeySource(key.line)},
        entry_points=False,
    )
    attacker, user = ("203.0.113.66", 1), ("198.51.100.7", 1)

    def sessions(peer: tuple[str, int]) -> list[nxauth.Session]:
        made = []
        for _ in range(logins):
            session = auth.open_session(peer)
            session.check_transport_key("nx", key.line)
            made.append(session)
        return made

    for session in sessions(attacker)[:3]:
        with contextlib.suppress(nxauth.AuthenticationFailed):
            session.login("alice", "guess")
    locked_times, ok_times, locked_calls = [], [], 0
    for _ in range(rounds):
        batch = sessions(attacker)
        before = backend.calls
        start = time.perf_counter_ns()
        for session in batch:
            try:
                session.login("alice", "wonderland")
                raise SystemExit("a locked-out login was let in")
            except nxauth.AuthenticationFailed:
                pass
        locked_times.append((time.perf_counter_ns() - start) / logins / 1000)
        locked_calls += backend.calls - before
        batch = sessions(user)
        start = time.perf_counter_ns()
        for session in batch:
            session.login("alice", "wonderland")
        ok_times.append((time.perf_counter_ns() - start) / logins / 1000)
    auth.close()
    locked, ok = statistics.median(locked_times), statistics.median(ok_times)
    print(f"\n(2b) session.login, whole pipeline ({logins} x {rounds} rounds, median)")
    verdict = "met" if locked <= LOCKED_TARGET_US else "NOT met"
    print(
        f"     locked-out: {locked:7.1f} us/login (target <= {LOCKED_TARGET_US:.0f} us: {verdict}), "
        f"backend (hash) calls: {locked_calls}"
    )
    print(f"     success:    {ok:7.1f} us/login   ratio locked-out / success {locked / ok:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 failures instead of 1,000,000")
    parser.add_argument("--failures", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    failures = args.failures or (100_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        os.chmod(directory, 0o700)
        cost_run(directory, 2000, args.rounds)
        locked_run(directory, 2000, args.rounds)
        print()
        size_run(directory, failures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
