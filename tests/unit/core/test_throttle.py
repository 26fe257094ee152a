"""Throttle: sliding window, growing lockout, exempt networks, persistence;
each on the SQLite store and on PostgreSQL (``any_store``)."""

from __future__ import annotations

import ipaddress

import pytest

from nxauth import Peer
from nxauth.config import ThrottleConfig
from nxauth.core.throttle import Throttle, source_key
from nxauth.store.protocol import Store


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(store: Store, clock: Clock, **kw: object) -> Throttle:
    config = ThrottleConfig(**{"max_user_failures": 3, "max_source_failures": 5, "window": 100.0, **kw})  # type: ignore[arg-type]
    return Throttle(lambda: store, config, clock=clock)


PEER = Peer("198.51.100.7", 1)


def test_source_keys() -> None:
    assert source_key("198.51.100.7") == "addr:198.51.100.7"
    assert source_key("2001:db8:1:2:3:4:5:6") == "net:2001:db8:1:2::/64"
    assert source_key("::ffff:10.0.0.1") == "addr:10.0.0.1"
    assert source_key("UNKNOWN") is None


def test_pair_lockout_after_limit_and_growth(any_store: Store, clock: Clock) -> None:
    throttle = make(any_store, clock, lockout=10.0, max_lockout=35.0)
    assert throttle.record_failure("alice", PEER) is None
    assert throttle.record_failure("alice", PEER) is None
    lock = throttle.record_failure("alice", PEER)
    assert lock is not None and lock.key == "pair:addr:198.51.100.7 alice" and lock.until == clock.now + 10
    assert throttle.check("alice", PEER) is not None
    assert throttle.check("alice", Peer("203.0.113.9", 1)) is None  # the user from elsewhere still works
    clock.now += 11
    assert throttle.check("alice", PEER) is None
    for _ in range(3):
        lock = throttle.record_failure("alice", PEER)
    assert lock is not None and lock.until == clock.now + 20  # doubled
    clock.now += 21
    for _ in range(3):
        lock = throttle.record_failure("alice", PEER)
    assert lock is not None and lock.until == clock.now + 35  # capped


def test_user_lockout_across_sources(any_store: Store, clock: Clock) -> None:
    throttle = make(any_store, clock, max_user_failures_all_sources=6, max_source_failures=100)
    for index in range(6):
        lock = throttle.record_failure("alice", Peer(f"203.0.113.{index}", 1))
    assert lock is not None and lock.key == "user:alice"
    assert throttle.check("alice", Peer("192.0.2.1", 1)) is not None  # from every source


def test_sliding_window_forgets_old_failures(any_store: Store, clock: Clock) -> None:
    throttle = make(any_store, clock)
    throttle.record_failure("bob", PEER)
    throttle.record_failure("bob", PEER)
    clock.now += 101
    assert throttle.record_failure("bob", PEER) is None


def test_source_lockout_covers_every_username(any_store: Store, clock: Clock) -> None:
    throttle = make(any_store, clock)
    for index in range(5):
        throttle.record_failure(f"user{index}", PEER)
    lock = throttle.check("somebody-else", PEER)
    assert lock is not None and lock.key == "addr:198.51.100.7"


def test_ipv6_counts_per_64(any_store: Store, clock: Clock) -> None:
    throttle = make(any_store, clock)
    for index in range(5):
        throttle.record_failure(f"u{index}", Peer(f"2001:db8:0:1::{index + 1}", 1))
    assert throttle.check("x", Peer("2001:db8:0:1::ffff", 1)) is not None
    assert throttle.check("x", Peer("2001:db8:0:2::1", 1)) is None


def test_success_clears_user_but_not_source(any_store: Store, clock: Clock) -> None:
    throttle = make(any_store, clock)
    throttle.record_failure("alice", PEER)
    throttle.record_failure("alice", PEER)
    throttle.record_success("alice", PEER)
    assert throttle.record_failure("alice", PEER) is None  # counting starts again
    assert throttle._store().execute("SELECT count(*) FROM throttle_failures WHERE key='addr:198.51.100.7'")[0][0] == 3


def test_exempt_networks_are_not_counted(any_store: Store, clock: Clock) -> None:
    throttle = make(any_store, clock, exempt=(ipaddress.ip_network("198.51.100.0/24"),))
    for _ in range(10):
        assert throttle.record_failure("alice", PEER) is None
    assert throttle.check("alice", PEER) is None


def test_state_survives_restart_and_unlock(any_store: Store, clock: Clock) -> None:
    throttle = make(any_store, clock)
    for _ in range(3):
        throttle.record_failure("alice", PEER)
    again = make(any_store, clock)
    assert again.check("alice", PEER) is not None
    assert [lock.key for lock in again.status()] == ["pair:addr:198.51.100.7 alice"]
    assert again.unlock("user:alice") >= 1  # a user's key lifts its pairs too
    assert again.check("alice", PEER) is None


def test_disabled_throttle_counts_nothing(any_store: Store, clock: Clock) -> None:
    throttle = make(any_store, clock, enabled=False)
    for _ in range(10):
        assert throttle.record_failure("alice", PEER) is None
    assert throttle.check("alice", PEER) is None
