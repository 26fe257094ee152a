"""The lockout model and the purge through the public API (the session and a
clock): one address attacking does not lock the user out elsewhere, rotating
addresses stops at the all-sources limit, and a long attack leaves a store of
bounded size; on the SQLite store and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import nxauth
from nxauth import AuthenticationFailed
from nxauth.core.authenticator import runtime_of
from nxauth.testing import MemoryBackend

Build = Callable[..., nxauth.Authenticator]
Granted = Callable[..., nxauth.Session]
pytestmark = pytest.mark.usefixtures("store_kind")


def outcome(session: nxauth.Session, username: str, password: str) -> str:
    try:
        return session.login(username, password).username
    except AuthenticationFailed as exc:
        return exc.reason.value


def test_one_address_attacking_does_not_lock_the_user_out_elsewhere(make_auth: Build, granted: Granted) -> None:
    auth = make_auth({"throttle": {"max_user_failures": 3}})
    attacker, user = ("203.0.113.66", 50000), ("198.51.100.1", 50000)
    for _ in range(10):
        assert outcome(granted(auth, attacker), "alice", "guess") in {"bad-password", "locked-out"}
    assert outcome(granted(auth, attacker), "alice", "wonderland") == "locked-out"
    assert outcome(granted(auth, user), "alice", "wonderland") == "alice"


def test_rotating_addresses_stop_at_the_all_sources_limit(make_auth: Build, granted: Granted) -> None:
    auth = make_auth({"throttle": {"max_user_failures": 3, "max_user_failures_all_sources": 6}})
    answers = [outcome(granted(auth, (f"203.0.113.{i}", 1)), "alice", "guess") for i in range(10)]
    assert answers == ["bad-password"] * 6 + ["locked-out"] * 4
    assert outcome(granted(auth, ("198.51.100.1", 1)), "alice", "wonderland") == "locked-out"


def test_a_long_attack_leaves_a_bounded_store(make_auth: Build, granted: Granted) -> None:
    now = [1_800_000_000.0]
    auth = make_auth(
        {"throttle": {"window": 60, "max_user_failures": 3, "max_source_failures": 5, "max_lockout": 120}},
        clock=lambda: now[0],
    )
    store = runtime_of(auth).store
    counts = []
    for index in range(1500):
        now[0] += 1.0
        outcome(granted(auth, (f"10.0.{index % 200}.{index // 200}", 1)), f"user{index % 97}", "guess")
        if index % 300 == 299:
            counts.append(
                store.execute("SELECT count(*) FROM throttle_failures")[0][0]
                + store.execute("SELECT count(*) FROM throttle_locks")[0][0]
            )
    # 60 s of attempts in the window (3 rows each) and locks of 120 + 60 s: a few hundred rows, not growing
    assert max(counts) <= 3 * 60 + 3 * 180 + 200, counts


def test_a_user_named_like_an_address_can_be_unlocked(make_auth: Build, granted: Granted) -> None:
    """``10.0.0.1`` is a valid username; ``unlock(..., user=True)`` lifts its
    lockout (an outside review found it could not be: it was taken as the address)."""
    auth = make_auth({"throttle": {"max_user_failures": 3}}, backends={"mem": MemoryBackend({"10.0.0.1": "pw"})})
    for _ in range(4):
        outcome(granted(auth), "10.0.0.1", "guess")
    assert outcome(granted(auth), "10.0.0.1", "pw") == "locked-out"
    assert auth.unlock("10.0.0.1") == 0  # the address 10.0.0.1: nothing of it
    assert auth.unlock("10.0.0.1", user=True) > 0
    assert outcome(granted(auth), "10.0.0.1", "pw") == "10.0.0.1"
