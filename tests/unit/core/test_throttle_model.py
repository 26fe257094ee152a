"""The lockout model against a small reference model of its rules
(hypothesis: failures and successes of two users from several sources, the
clock advancing), the bounded purge, the all-sources option and the schema
migration of an existing store."""

from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nxauth import ConfigError, Peer
from nxauth.config import ThrottleConfig, parse_config
from nxauth.core.throttle import Lockout, Reservation, Settle, Throttle
from nxauth.store.sqlite import MIGRATIONS, SqliteStore

WINDOW, PAIR, USER, SOURCE, LOCK, MAX_LOCK = 100.0, 2, 4, 5, 10.0, 40.0
SOURCES = ["198.51.100.1", "198.51.100.2", "203.0.113.3", "2001:db8:0:1::1"]
SOURCE_KEYS = ["addr:198.51.100.1", "addr:198.51.100.2", "addr:203.0.113.3", "net:2001:db8:0:1::/64"]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Model:
    """The rules as docs/security.md states them, written again from scratch."""

    failures: dict[str, list[float]] = field(default_factory=dict)
    locks: dict[str, tuple[float, int, float]] = field(default_factory=dict)  # until, lockouts, last

    @staticmethod
    def keys(user: str, source: int) -> list[tuple[str, int]]:
        return [(f"pair:{SOURCE_KEYS[source]} {user}", PAIR), (f"user:{user}", USER), (SOURCE_KEYS[source], SOURCE)]

    def refused(self, user: str, source: int, now: float) -> bool:
        for key, limit in self.keys(user, source):
            if key in self.locks and self.locks[key][0] > now:
                return True
            if len([t for t in self.failures.get(key, []) if t >= now - WINDOW]) >= limit:
                return True
        return False

    def fail(self, user: str, source: int, now: float) -> None:
        for key, limit in self.keys(user, source):
            times = [t for t in self.failures.get(key, []) if t >= now - WINDOW] + [now]
            self.failures[key] = times
            if len(times) >= limit:
                _, lockouts, last = self.locks.get(key, (0.0, 0, -1e18))
                lockouts = lockouts if now - last <= MAX_LOCK + WINDOW else 0
                self.locks[key] = (now + min(LOCK * 2**lockouts, MAX_LOCK), lockouts + 1, now)
                self.failures[key] = []

    def succeed(self, user: str, source: int) -> None:
        for key, _ in self.keys(user, source)[:2]:  # the pair and the user; never the source
            self.failures.pop(key, None)
            self.locks.pop(key, None)


def make(path: Path, clock: Clock, **kw: object) -> Throttle:
    store = SqliteStore(path)
    config = ThrottleConfig(
        **{  # type: ignore[arg-type]
            "window": WINDOW,
            "max_user_failures": PAIR,
            "max_user_failures_all_sources": USER,
            "max_source_failures": SOURCE,
            "lockout": LOCK,
            "max_lockout": MAX_LOCK,
            **kw,
        }
    )
    return Throttle(lambda: store, config, clock=clock)


steps = st.lists(
    st.tuples(
        st.sampled_from(["alice", "bob"]),
        st.integers(0, len(SOURCES) - 1),
        st.booleans(),  # the right password
        st.sampled_from([0.0, 1.0, 5.0, 11.0, 30.0, 101.0]),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_the_throttle_follows_the_model(script: list[tuple[str, int, bool, float]]) -> None:
    clock = Clock()
    model = Model()
    with tempfile.TemporaryDirectory() as directory:
        throttle = make(Path(directory) / "t.db", clock)
        for user, source, right, dt in script:
            clock.now += dt
            peer = Peer(SOURCES[source], 1)
            expected = model.refused(user, source, clock.now)
            taken = throttle.reserve(user, peer)
            assert isinstance(taken, Lockout) == expected, (user, source, model)
            if isinstance(taken, Reservation):
                throttle.settle(taken, Settle.SUCCESS if right else Settle.FAILURE)
                model.succeed(user, source) if right else model.fail(user, source, clock.now)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 30), st.integers(1, 8))
def test_an_attacker_on_one_address_never_locks_the_user_out_elsewhere(guesses: int, spacing: int) -> None:
    """Below the all-sources limit, the user from a clean source always gets in."""
    clock = Clock()
    with tempfile.TemporaryDirectory() as directory:
        throttle = make(Path(directory) / "t.db", clock, max_user_failures_all_sources=10**6, max_source_failures=10**6)
        attacker, user = Peer("203.0.113.66", 1), Peer("198.51.100.1", 1)
        for _ in range(guesses):
            clock.now += spacing
            taken = throttle.reserve("alice", attacker)
            if isinstance(taken, Reservation):
                throttle.settle(taken, Settle.FAILURE)
            assert isinstance(throttle.reserve("alice", attacker), Lockout | Reservation)
        assert isinstance(throttle.reserve("alice", user), Reservation)


def test_a_success_clears_the_pair_and_the_user_but_not_the_source(tmp_path: Path) -> None:
    clock = Clock()
    throttle = make(
        tmp_path / "t.db", clock, max_user_failures=5, max_user_failures_all_sources=10, max_source_failures=3
    )
    peer = Peer(SOURCES[0], 1)
    for user in ("mallory", "mallory"):
        taken = throttle.reserve(user, peer)
        assert isinstance(taken, Reservation)
        throttle.settle(taken, Settle.FAILURE)
    taken = throttle.reserve("mallory", peer)  # the attacker's own account, right password
    assert isinstance(taken, Reservation)
    throttle.settle(taken, Settle.SUCCESS)
    rows = dict(throttle._store().execute("SELECT key, count(*) FROM throttle_failures GROUP BY key"))
    assert rows == {"addr:198.51.100.1": 2}  # the address is not laundered


def test_expired_rows_are_purged_and_the_store_stays_bounded(tmp_path: Path) -> None:
    clock = Clock()
    throttle = make(
        tmp_path / "t.db", clock, max_user_failures=1, max_user_failures_all_sources=2, max_source_failures=2
    )
    store = throttle._store()
    sizes = []
    for index in range(3000):
        clock.now += 1.0
        peer = Peer(f"10.{index // 250 % 250}.{index % 250}.1", 1)
        taken = throttle.reserve(f"user{index}", peer)
        assert isinstance(taken, Reservation)
        throttle.settle(taken, Settle.FAILURE)
        if index % 500 == 499:
            failures = store.execute("SELECT count(*) FROM throttle_failures")[0][0]
            locks = store.execute("SELECT count(*) FROM throttle_locks")[0][0]
            sizes.append((failures, locks))
    # in the window: 100 s of attempts, 2 rows each at most; locks live max_lockout + window
    for failures, locks in sizes:
        assert failures <= 2 * 100 + 2 * 64
        assert locks <= 1 * (MAX_LOCK + WINDOW + 1) + 64
    assert sizes[-1] == sizes[-2] or abs(sizes[-1][0] - sizes[-2][0]) < 100


def test_the_all_sources_limit_defaults_to_ten_times_and_is_validated() -> None:
    assert parse_config({"throttle": {"max_user_failures": 4}}).throttle.max_user_failures_all_sources == 40
    assert parse_config({}).throttle.max_user_failures_all_sources == 100
    assert (
        parse_config({"throttle": {"max_user_failures_all_sources": 25}}).throttle.max_user_failures_all_sources == 25
    )
    with pytest.raises(ConfigError, match=r"throttle\.max_user_failures_all_sources"):
        parse_config({"throttle": {"max_user_failures": 5, "max_user_failures_all_sources": 4}})


def test_an_old_version_store_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(MIGRATIONS[0])
    conn.execute("INSERT INTO throttle_failures (key, at) VALUES ('addr:198.51.100.1', 999990)")
    conn.execute("INSERT INTO throttle_locks VALUES ('user:alice', 1000050, 1, 999990)")
    conn.execute("INSERT INTO users (username, password_hash, created, changed) VALUES ('alice', NULL, 1, 1)")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    store = SqliteStore(path)
    assert store.schema_version() == len(MIGRATIONS)
    columns = {row[1] for row in store.execute("PRAGMA table_info(throttle_failures)")}
    assert columns == {"key", "at", "token"}
    indexes = {row[0] for row in store.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"throttle_failures_token", "throttle_failures_at", "throttle_locks_last"} <= indexes
    assert store.execute("SELECT username FROM users") == [("alice",)]
    clock = Clock()
    throttle = Throttle(lambda: store, ThrottleConfig(), clock=clock)
    lock = throttle.reserve("alice", Peer("192.0.2.1", 1))  # the old per-user lock is kept, across sources
    assert isinstance(lock, Lockout) and lock.key == "user:alice"
    assert isinstance(throttle.reserve("bob", Peer("198.51.100.1", 1)), Reservation)
    store.close()
    assert SqliteStore(path).schema_version() == len(MIGRATIONS)  # opened again: nothing left to migrate
