"""What only the PostgreSQL store has to answer for, against the real server
of the test session: a schema that is not nxauth's (or is newer) is refused
untouched; the server stopped means denied logins with an audited reason,
started again means logins work without a restart; a restart in the middle
of a load loses no committed write; the password is in no message, no repr
and no log record."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nxauth
from nxauth import StoreError
from nxauth.config import parse_config
from nxauth.model import Secret
from nxauth.store import open_store
from nxauth.store.postgres import PG_MIGRATIONS, PostgresStore
from nxauth.store.sqlite import SCHEMA_VERSION
from nxauth.testing import RecordingSink
from tests.support.postgres import Cluster


@pytest.fixture
def schema(pg_cluster: Cluster) -> str:
    return pg_cluster.new_schema()


@pytest.fixture
def running(pg_cluster: Cluster) -> Iterator[Cluster]:
    """The cluster, started again after a test that stops it."""
    yield pg_cluster
    if not pg_cluster.running:
        pg_cluster.resume()


def store_of(cluster: Cluster, schema: str, **options: Any) -> PostgresStore:
    return PostgresStore(cluster.url, password=Secret(cluster.password), schema=schema, **options)


def snapshot(cluster: Cluster, schema: str) -> list[tuple[Any, ...]]:
    """Every table of ``schema`` with its rows, as the superuser sees them."""
    with cluster.superuser("nxauth") as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", (schema,)
            ).fetchall()
        ]
        return [(table, conn.execute(f"SELECT * FROM {schema}.{table} ORDER BY 1").fetchall()) for table in tables]


# ------------------------------------------------------------ refused untouched


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("CREATE TABLE {s}.invoices (id int); INSERT INTO {s}.invoices VALUES (1)", "not nxauth's"),
        ("CREATE TABLE {s}.users (username text)", "not nxauth's"),
        (
            "CREATE TABLE {s}.nxauth_meta (name text PRIMARY KEY, value text NOT NULL);"
            "INSERT INTO {s}.nxauth_meta VALUES ('application', 'other'), ('schema', '1')",
            "another application",
        ),
        (
            "CREATE TABLE {s}.nxauth_meta (name text PRIMARY KEY, value text NOT NULL);"
            "INSERT INTO {s}.nxauth_meta VALUES ('application', 'nxauth'), ('schema', '99')",
            "newer than this nxauth",
        ),
        (
            "CREATE TABLE {s}.nxauth_meta (name text PRIMARY KEY, value text NOT NULL);"
            "INSERT INTO {s}.nxauth_meta VALUES ('application', 'nxauth'), ('schema', 'x')",
            "no valid schema version",
        ),
    ],
)
def test_a_schema_that_is_not_nxauths_is_refused_untouched(
    pg_cluster: Cluster, schema: str, setup: str, message: str
) -> None:
    with pg_cluster.superuser("nxauth") as conn:
        conn.execute("SET ROLE nxauth")  # the tables belong to the store's own role: only the check refuses them
        conn.execute(setup.format(s=schema))
    before = snapshot(pg_cluster, schema)
    with pytest.raises(StoreError, match=message):
        store_of(pg_cluster, schema)
    assert snapshot(pg_cluster, schema) == before


def test_a_missing_schema_is_refused(pg_cluster: Cluster) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        store_of(pg_cluster, "no_such_schema")


def test_an_older_schema_is_migrated_keeping_its_rows(pg_cluster: Cluster, schema: str) -> None:
    with pg_cluster.superuser("nxauth") as conn:
        conn.execute(f"SET search_path = {schema}; SET ROLE nxauth")
        conn.execute("CREATE TABLE nxauth_meta (name text PRIMARY KEY, value text NOT NULL)")
        conn.execute("INSERT INTO nxauth_meta VALUES ('application', 'nxauth'), ('schema', '1')")
        for statement in PG_MIGRATIONS[0].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO throttle_failures (key, at) VALUES ('user:alice', 5.0)")
    store = store_of(pg_cluster, schema)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.execute("SELECT key, at, token FROM throttle_failures") == [("user:alice", 5.0, None)]
    finally:
        store.close()


def test_two_processes_creating_one_schema_at_once_both_open_it(pg_cluster: Cluster, schema: str) -> None:
    """The first open creates the tables under the write lock: a second one
    racing it waits, then finds nxauth's schema."""
    errors: list[BaseException] = []
    stores: list[PostgresStore] = []
    barrier = threading.Barrier(6)

    def open_one() -> None:
        barrier.wait()
        try:
            stores.append(store_of(pg_cluster, schema))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for store in stores:
        store.close()
    assert not errors
    assert len(stores) == 6


# ------------------------------------------------------------ the password


def test_the_password_is_in_no_message_repr_or_log_record(
    pg_cluster: Cluster, schema: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng'\"\\pässwörd" + "x" * 200
    texts: list[str] = []
    for password in (wrong, pg_cluster.password):
        try:
            store = store_of(pg_cluster, schema, connect_timeout=1.0)
        except StoreError as exc:
            texts += [str(exc), repr(exc)]
        else:
            texts.append(repr(store))
            with pytest.raises(StoreError) as failed:
                store.execute("SELECT * FROM no_such_table WHERE x = ?", (password,))
            texts += [str(failed.value), repr(failed.value)]
            store.close()
        with pytest.raises(StoreError) as failed:
            PostgresStore(pg_cluster.url, password=Secret(wrong), schema=schema, connect_timeout=1.0)
        texts += [str(failed.value), repr(failed.value)]
    with pytest.raises(StoreError) as failed:
        PostgresStore(f"postgresql://nxauth:{wrong}@127.0.0.1:{pg_cluster.port}/nxauth")
    texts.append(str(failed.value))
    config = parse_config({"store": pg_cluster.store_options(schema)}, source="t")
    texts += [repr(config), repr(config.store)]
    texts += [record.getMessage() for record in caplog.records]
    for text in texts:
        for secret in (wrong, pg_cluster.password, wrong[:12], pg_cluster.password[4:16]):
            assert secret not in text


def test_a_url_holding_a_password_is_refused_without_repeating_it() -> None:
    for url in (
        "postgresql://nx:s3cr3t-pw@db/nxauth",
        "postgresql://nx@db/nxauth?password=s3cr3t-pw",
        "postgresql://nx@db/nxauth?sslmode=verify-full&sslpassword=s3cr3t-pw",  # the client key's passphrase
        "postgresql://nx@db/nxauth?PASSWORD=s3cr3t-pw",
    ):
        with pytest.raises(nxauth.ConfigError) as failed:
            parse_config({"store": {"url": url}}, source="t")
        assert "s3cr3t-pw" not in str(failed.value)
        with pytest.raises(StoreError) as refused:
            PostgresStore(url)
        assert "s3cr3t-pw" not in str(refused.value)


# ------------------------------------------------------------ down, up, restarts


def test_server_down_denies_with_a_reason_and_up_again_allows(
    running: Cluster, schema: str, make_auth: Any, granted: Any, sink: RecordingSink
) -> None:
    section = {**running.store_options(schema), "connect_timeout": 1.0}
    auth = make_auth({"store": section})
    assert granted(auth).login("alice", "wonderland").username == "alice"
    running.stop()
    started = time.monotonic()
    with pytest.raises(nxauth.AuthenticationFailed) as failed:
        granted(auth).login("alice", "wonderland")
    assert time.monotonic() - started < 10  # within the login timeout, not hanging on the server
    assert failed.value.reason is nxauth.Reason.THROTTLE_UNAVAILABLE
    assert sink.outcomes()[-1] == (2, "failed", "throttle-unavailable")
    running.resume()
    assert granted(auth).login("alice", "wonderland").username == "alice"  # the same authenticator


def test_a_restart_in_the_middle_of_a_load_loses_no_committed_write(running: Cluster, schema: str) -> None:
    """Writers in threads record every transaction that returned; the server
    is killed (immediate stop: a crash) and started again while they write;
    every recorded row is there afterwards, and the writers go on."""
    store = store_of(running, schema, connect_timeout=2.0)
    committed: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def write(worker: int) -> None:
        for n in range(100_000):
            if stop.is_set():
                return
            key = f"w{worker}-{n}"
            try:
                with store.transaction() as tx:
                    tx.execute("INSERT INTO throttle_failures (key, at) VALUES (?, ?)", (key, float(n)))
            except StoreError:
                time.sleep(0.05)
                continue
            with lock:
                committed.append(key)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        running.stop("immediate")
        running.resume()
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    try:
        stored = {str(row[0]) for row in store.execute("SELECT key FROM throttle_failures")}
        assert committed and set(committed) <= stored
        after = len(committed)
        assert after > 0
        with store.transaction() as tx:  # and it works on, without a new store
            tx.execute("INSERT INTO throttle_failures (key, at) VALUES ('after', 0)")
    finally:
        store.close()


def test_open_store_reads_the_password_reference(pg_cluster: Cluster, schema: str, tmp_path: Path) -> None:
    config = parse_config({"store": pg_cluster.store_options(schema)}, source="t")
    store = open_store(config)
    try:
        assert store.schema_version() == SCHEMA_VERSION
    finally:
        store.close()
    missing = parse_config({"store": {**pg_cluster.store_options(schema), "password": {"env": "NO_SUCH_VAR_X"}}})
    with pytest.raises(StoreError, match="NO_SUCH_VAR_X"):
        open_store(missing)


def test_transactions_on_other_keys_run_side_by_side(pg_cluster: Cluster, schema: str) -> None:
    """A transaction on key "a" left open does not hold up one on "b"; one on
    "a", or one without keys (the whole store), waits for it."""
    store = store_of(pg_cluster, schema, busy_timeout=0.5)
    opened, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.transaction(keys=["user:a"]) as tx:
            tx.execute("INSERT INTO throttle_failures (key, at) VALUES ('user:a', 1)")
            opened.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert opened.wait(30)
        with store.transaction(keys=["user:b", "addr:192.0.2.1"]) as tx:
            tx.execute("INSERT INTO throttle_failures (key, at) VALUES ('user:b', 1)")
        for keys in (["user:a"], ["addr:192.0.2.1", "user:a"], []):
            with pytest.raises(StoreError, match="busy"), store.transaction(keys=keys) as tx:
                tx.execute("INSERT INTO throttle_failures (key, at) VALUES ('x', 1)")
    finally:
        release.set()
        holder.join(30)
    try:
        assert sorted(r[0] for r in store.execute("SELECT key FROM throttle_failures")) == ["user:a", "user:b"]
    finally:
        store.close()
