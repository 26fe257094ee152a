"""The store contract: every test here runs on the embedded SQLite store and
on PostgreSQL (``any_store``), so the two cannot drift.  Transactions are all
or nothing, writers never lose an update (threads and processes), results
and types are the same, every failure is a ``StoreError``, and the keys,
users and throttle that two authenticators share on one store are one."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nxauth
from nxauth import StoreError
from nxauth.backends.keystore import KeyStore
from nxauth.config import parse_config
from nxauth.keys.authorized_keys import parse_authorized_key
from nxauth.store import open_store
from nxauth.store.postgres import PG_MIGRATIONS, to_pyformat
from nxauth.store.protocol import Store
from nxauth.store.sqlite import MIGRATIONS, SCHEMA_VERSION
from tests.support.keys import ListKeySource, TransportKey


def test_both_stores_have_the_same_schema_versions() -> None:
    assert len(PG_MIGRATIONS) == len(MIGRATIONS) == SCHEMA_VERSION


def test_a_new_store_is_current_and_sound(any_store: Store) -> None:
    assert isinstance(any_store, Store)
    assert any_store.schema_version() == SCHEMA_VERSION
    assert any_store.integrity_check() == "ok"


def test_the_tables_have_the_same_columns(any_store: Store, store_kind: str) -> None:
    def columns(table: str) -> list[str]:
        if store_kind == "sqlite":
            return [str(row[1]) for row in any_store.execute(f"PRAGMA table_info({table})")]
        rows = any_store.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? AND column_name <> 'rowid' ORDER BY ordinal_position",
            (table,),
        )
        return [str(row[0]) for row in rows]

    assert columns("users") == ["username", "password_hash", "enabled", "comment", "created", "changed"]
    assert columns("throttle_failures") == ["key", "at", "token"]
    assert columns("throttle_locks") == ["key", "locked_until", "lockouts", "last_lockout"]
    assert columns("transport_keys") == [
        "id", "account", "lookup", "line", "fingerprint", "comment", "added", "expires",
    ]  # fmt: skip


def test_a_transaction_commits_all_or_nothing(any_store: Store) -> None:
    with any_store.transaction() as tx:
        tx.execute("INSERT INTO throttle_failures (key, at) VALUES (?, ?)", ("a", 1.0))
    with pytest.raises(RuntimeError), any_store.transaction() as tx:
        tx.execute("INSERT INTO throttle_failures (key, at) VALUES (?, ?)", ("b", 2.0))
        raise RuntimeError("the caller failed")
    with pytest.raises(StoreError), any_store.transaction() as tx:
        tx.execute("INSERT INTO throttle_failures (key, at) VALUES (?, ?)", ("c", 3.0))
        tx.execute("INSERT INTO throttle_locks (key) VALUES (?)", ("d",))  # NOT NULL columns missing
    assert any_store.execute("SELECT key, at FROM throttle_failures ORDER BY key") == [("a", 1.0)]


def test_results_types_and_rowcounts_match(any_store: Store) -> None:
    blob = bytes(range(256))
    with any_store.transaction() as tx:
        cursor = tx.execute(
            "INSERT INTO transport_keys (account, lookup, line, fingerprint, comment, added, expires) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            ("nx", blob, "ssh-ed25519 AAAA", "SHA256:x", "ça ☃ '\"?%", 1.5, None),
        )
        key_id = cursor.fetchone()[0]
        assert cursor.fetchone() is None
        assert tx.execute("UPDATE transport_keys SET expires = ? WHERE id = ?", (9.0, key_id)).rowcount == 1
        assert tx.execute("DELETE FROM transport_keys WHERE id = ?", (key_id + 1000,)).rowcount == 0
    rows = any_store.execute("SELECT id, lookup, comment, added, expires FROM transport_keys")
    assert rows == [(key_id, blob, "ça ☃ '\"?%", 1.5, 9.0)]
    assert isinstance(rows[0][0], int) and isinstance(rows[0][1], bytes)
    assert any_store.execute("SELECT count(*) FROM transport_keys WHERE comment LIKE '%?%'") == [(1,)]


def test_a_bad_statement_is_a_store_error(any_store: Store) -> None:
    with pytest.raises(StoreError):
        any_store.execute("SELECT nothing FROM nowhere")
    assert any_store.execute("SELECT count(*) FROM users") == [(0,)]  # the store still works


def test_a_closed_store_raises(any_store: Store) -> None:
    any_store.close()
    with pytest.raises(StoreError, match="closed"):
        any_store.execute("SELECT 1")
    with pytest.raises(StoreError, match="closed"), any_store.transaction():
        pass


def _increment(store: Store, times: int, keys: tuple[str, ...] = ()) -> None:
    for _ in range(times):
        with store.transaction(keys=keys) as tx:
            (value,) = tx.execute("SELECT lockouts FROM throttle_locks WHERE key = 'n'").fetchone()
            tx.execute("UPDATE throttle_locks SET lockouts = ? WHERE key = 'n'", (value + 1,))


def _seed(store: Store) -> None:
    with store.transaction() as tx:
        tx.execute("INSERT INTO throttle_locks (key, locked_until, lockouts, last_lockout) VALUES ('n', 0, 0, 0)")


@pytest.mark.parametrize("keys", [(), ("n",), ("n", "other"), ("other", "n", "n")], ids=["whole", "key", "keys", "dup"])
def test_threads_lose_no_update(any_store: Store, keys: tuple[str, ...]) -> None:
    """Read, then write what was read plus one: serialised writers lose
    nothing, whether they lock the whole store or the key they decide on;
    and a writer of the whole store waits for a writer of a key."""
    _seed(any_store)
    threads = [threading.Thread(target=_increment, args=(any_store, 25, keys)) for _ in range(6)]
    threads += [threading.Thread(target=_increment, args=(any_store, 25)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert any_store.execute("SELECT lockouts FROM throttle_locks WHERE key = 'n'") == [(200,)]


def _child(state: str, section: dict[str, Any]) -> None:
    store = open_store(parse_config({"state_dir": state, "store": section}, source="child"))
    _increment(store, 20)
    store.close()


def test_processes_lose_no_update(any_store: Store, store_section: dict[str, Any], tmp_path: Path) -> None:
    _seed(any_store)
    context = multiprocessing.get_context("spawn")  # no connection of the parent in the children
    children = [context.Process(target=_child, args=(str(tmp_path / "state"), store_section)) for _ in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
        assert child.exitcode == 0
    assert any_store.execute("SELECT lockouts FROM throttle_locks WHERE key = 'n'") == [(80,)]


# ------------------------------------------------------------ two hosts, one store


def _host(state: Path, section: dict[str, Any], sink: object | None = None) -> nxauth.Authenticator:
    return nxauth.Authenticator(
        {"state_dir": str(state), "store": section, "auth": [], "account": []},
        plugins=(sink,) if sink is not None else (),
        entry_points=False,
    )


def test_a_key_revoked_through_one_host_is_refused_by_the_other(
    store_section: dict[str, Any], store_kind: str, tmp_path: Path
) -> None:
    """The keystore has no cache: the other host's next lookup sees the revoke."""
    if store_kind == "sqlite":
        shared = tmp_path / "shared"  # two hosts on one SQLite file: one machine, the same behaviour
        one, two = _host(shared, store_section), _host(shared, store_section)
    else:
        one, two = _host(tmp_path / "one", store_section), _host(tmp_path / "two", store_section)
    key = TransportKey()
    entry = parse_authorized_key(key.line)
    assert entry is not None
    try:
        KeyStore(one.store).add("nx", entry)
        session = two.open_session(peer=("192.0.2.1", 1))
        assert session.check_transport_key("nx", key.line).source == "keystore"
        assert KeyStore(one.store).remove(entry.key.fingerprint) == 1
        with pytest.raises(nxauth.AuthenticationFailed):
            two.open_session(peer=("192.0.2.1", 2)).check_transport_key("nx", key.line)
    finally:
        one.close()
        two.close()


def test_failures_on_two_hosts_spend_one_budget(store_section: dict[str, Any], tmp_path: Path) -> None:
    """Three guesses through one host and three through the other lock the
    user out on both: the limit is for the cluster, not per host."""
    key = TransportKey()

    def host(name: str) -> nxauth.Authenticator:
        state = tmp_path / name if store_section else tmp_path / "shared"
        return nxauth.Authenticator(
            {
                "state_dir": str(state),
                "store": store_section,
                "throttle": {"max_user_failures": 3, "max_source_failures": 1000},
                "transport": {"key_sources": ["keys"]},
                "auth": [{"use": "mem"}],
                "account": [{"use": "mem"}],
            },
            backends={"keys": ListKeySource(key.line), "mem": nxauth.testing.MemoryBackend({"alice": "wonderland"})},
            entry_points=False,
        )

    hosts = [host("one"), host("two")]
    try:
        reasons = []
        for attempt in range(6):
            session = hosts[attempt % 2].open_session(peer=("198.51.100.9", 1000 + attempt))
            session.check_transport_key("nx", key.line)
            with pytest.raises(nxauth.AuthenticationFailed) as failed:
                session.login("alice", f"guess{attempt}")
            reasons.append(failed.value.reason.value)
        assert reasons.count("bad-password") == 3
        for auth in hosts:
            session = auth.open_session(peer=("198.51.100.9", 2000))
            session.check_transport_key("nx", key.line)
            with pytest.raises(nxauth.AuthenticationFailed) as failed:
                session.login("alice", "wonderland")
            assert failed.value.reason.value == "locked-out"
    finally:
        for auth in hosts:
            auth.close()


# ------------------------------------------------------------ placeholders


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(
            st.just("?"),
            st.text(alphabet="ab %_", min_size=1, max_size=4),
            st.text(alphabet="a?% '", max_size=5).map(lambda t: "'" + t.replace("'", "''") + "'"),
        ),
        max_size=12,
    )
)
def test_placeholders_outside_literals_become_pyformat(parts: list[str]) -> None:
    sql = "".join(parts)
    converted = to_pyformat(sql)
    # every ? outside quotes is %s, every % is doubled, nothing else changes
    expected = []
    quote = False
    for char in sql:
        if char == "'":
            quote = not quote
        if char == "?" and not quote:
            expected.append("%s")
        elif char == "%":
            expected.append("%%")
        else:
            expected.append(char)
    assert converted == "".join(expected)


# ------------------------------------------------------------ replay state


def test_a_counter_is_claimed_once_and_only_upwards(any_store: Store) -> None:
    now = [1000.0]
    guard = nxauth.ReplayGuard(any_store, "totp", clock=lambda: now[0])
    other = nxauth.ReplayGuard(any_store, "hotp", clock=lambda: now[0])
    assert guard.claim("alice", 57, ttl=90) is True
    assert guard.claim("alice", 57, ttl=90) is False  # the same code again: a replay
    assert guard.claim("alice", 56, ttl=90) is False  # an older one
    assert other.claim("alice", 57, ttl=90) is True  # another namespace, its own state
    assert guard.claim("bob", 57, ttl=90) is True  # another key
    assert guard.claim("alice", 58, ttl=90) is True
    assert guard.last("alice") == 58
    now[0] += 91  # past its ttl: forgotten
    assert guard.last("alice") is None
    guard.forget("bob")
    assert guard.last("bob") is None
    with pytest.raises(nxauth.UsageError):
        guard.claim("alice", -1, ttl=90)
    with pytest.raises(nxauth.UsageError):
        guard.claim("alice", True, ttl=90)


def test_racing_claims_of_one_code_accept_it_once(any_store: Store, store_section: dict[str, Any]) -> None:
    """Eight threads, each with its own guard (on PostgreSQL: hosts of a
    cluster), present the same code at once: one wins."""
    guards = [nxauth.ReplayGuard(any_store, "totp") for _ in range(8)]
    barrier = threading.Barrier(len(guards))
    results: list[bool] = []
    lock = threading.Lock()

    def race(guard: nxauth.ReplayGuard) -> None:
        barrier.wait()
        won = guard.claim("alice", 12345, ttl=90)
        with lock:
            results.append(won)

    threads = [threading.Thread(target=race, args=(g,)) for g in guards]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [False] * 7 + [True]


# ------------------------------------------------------------ the audit table


def test_login_events_reach_the_store_audit_table(make_auth: Any, granted: Any, store_kind: str) -> None:
    """``audit.table``: each event is a row with the host's name and the
    event's JSON record (no secret: the password is not in any row)."""
    import json
    import time

    auth = make_auth({"audit": {"table": True}})
    session = granted(auth)
    assert session.login("alice", "wonderland").username == "alice"
    with pytest.raises(nxauth.AuthenticationFailed):
        granted(auth).login("bob", "not-the-builder")
    store = auth.store
    deadline = time.monotonic() + 10
    rows: list[Any] = []
    while time.monotonic() < deadline:  # the sink runs in its own thread
        rows = store.execute("SELECT host, event FROM audit_events ORDER BY id")
        if len(rows) >= 4:
            break
        time.sleep(0.02)
    records = [json.loads(event) for _, event in rows]
    assert [(r["stage"], r["outcome"], r["user"]) for r in records] == [
        (1, "accepted", "nx"), (2, "accepted", "alice"), (1, "accepted", "nx"), (2, "failed", "bob"),
    ]  # fmt: skip
    assert all(host for host, _ in rows)
    assert not any("wonderland" in event or "not-the-builder" in event for _, event in rows)
