"""The shared store: PostgreSQL against the embedded SQLite file, same run.

Starts a private PostgreSQL cluster (Debian's binaries, as tests/support/
postgres.py does; an unprivileged account when root) on a free loopback port.

Each PostgreSQL case runs twice: as configured by default (the audit table
on) and with ``[audit] table = false`` ("pg-notable").

(1) Throttle path alone: a trivial backend (``MemoryBackend``), 8 concurrent
    clients in 2 processes, each login a full session (stage 1 with a key,
    stage 2: reserve, backend, settle), users spread so nobody is locked.
    Attempts per second on each store; target >= 2,000/s on PostgreSQL.
(2) A login with the ``passwords`` backend (argon2id, nxauth's defaults),
    one client: the median login on PostgreSQL / on SQLite (target <= 1.05),
    and the store's share of a login (the time inside store calls, median;
    target <= 2 ms).
(3) 3 hosts (processes, each its own authenticator on the one database) x 20
    concurrent guessers for one user from one address: the backend calls in total against
    ``max_user_failures`` (target: at most the limit, not 3x it).

    python benchmarks/bench_store.py [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nxauth
from nxauth.backends.userdb import UserDatabase
from nxauth.core.authenticator import runtime_of
from nxauth.testing import MemoryBackend
from tests.support.keys import ListKeySource, TransportKey
from tests.support.postgres import Cluster, server_bin

LIMIT = 5


def config(state: Path, store: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """``store`` may carry ``"audit_table": False``: the audit table off (it is on by default with PostgreSQL)."""
    store = dict(store)
    audit: dict[str, Any] = {"log": False}
    if "audit_table" in store:
        audit["table"] = store.pop("audit_table")
    return {
        "state_dir": str(state),
        "store": store,
        "transport": {"key_sources": ["keys"]},
        "auth": [{"use": "mem"}],
        "account": [{"use": "mem"}],
        "audit": audit,
        **extra,
    }


def login(auth: nxauth.Authenticator, key: str, user: str, password: str, host: str) -> bool:
    session = auth.open_session(peer=(host, 40000))
    session.check_transport_key("nx", key)
    try:
        session.login(user, password)
    except nxauth.AuthenticationFailed:
        return False
    return True


# ------------------------------------------------------------ (1) throughput


def _client_process(state: str, store: dict[str, Any], key: str, seconds: float, index: int, out: Any) -> None:  # noqa: PLR0917
    users = {f"u{index}-{n}": "pw" for n in range(4)}
    auth = nxauth.Authenticator(
        config(Path(state), store, throttle={"max_source_failures": 10**6}),
        backends={"keys": ListKeySource(key), "mem": MemoryBackend(users)},
        entry_points=False,
    )
    counts = [0, 0, 0, 0]
    start = threading.Barrier(4)
    deadline: list[float] = []

    def client(slot: int) -> None:
        start.wait()
        if slot == 0:
            deadline.append(time.monotonic() + seconds)
        while not deadline:
            time.sleep(0.001)
        n = 0
        while time.monotonic() < deadline[0]:
            user = f"u{index}-{slot}"
            login(
                auth, key, user, "pw" if n % 4 else "wrong", f"10.{index}.{slot}.{n % 199}"
            )  # 199: every source sees successes
            n += 1
        counts[slot] = n

    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    auth.close()
    out.put(sum(counts))


def throughput(state: Path, store: dict[str, Any], key: str, seconds: float) -> float:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    children = [
        context.Process(target=_client_process, args=(str(state), store, key, seconds, i, out)) for i in range(2)
    ]
    for child in children:
        child.start()
    total = sum(out.get(timeout=seconds + 120) for _ in children)
    for child in children:
        child.join(60)
    return total / seconds


# ------------------------------------------------------------ (2) passwords login


class TimedStore:
    """The store, with the time spent inside its calls added up."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.spent = 0.0
        self.thread = threading.get_ident()  # the login's thread: the audit table's writer is not counted

    def _add(self, started: float) -> None:
        if threading.get_ident() == self.thread:
            self.spent += time.perf_counter() - started

    @contextmanager
    def transaction(self, **kw: Any) -> Iterator[Any]:
        started = time.perf_counter()
        try:
            with self.inner.transaction(**kw) as tx:
                yield tx
        finally:
            self._add(started)

    def execute(self, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.inner.execute(*args)
        finally:
            self._add(started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def passwords_logins(state: Path, store: dict[str, Any], key: str, rounds: int) -> tuple[list[float], list[float]]:
    auth = nxauth.Authenticator(
        {**config(state, store), "auth": [{"use": "passwords"}], "account": [{"use": "users"}]},
        backends={"keys": ListKeySource(key)},
        entry_points=False,
    )
    runtime = runtime_of(auth)
    users = UserDatabase(runtime.store)
    if users.get("alice") is None:
        users.add("alice", password_hash=_hash(auth, "correct horse"))
    timed = TimedStore(runtime.store)
    runtime._store = timed  # type: ignore[assignment]  # every store call of the login goes through it
    walls, shares = [], []
    login(auth, key, "alice", "correct horse", "192.0.2.1")  # warm
    for _ in range(rounds):
        timed.spent = 0.0
        started = time.perf_counter()
        assert login(auth, key, "alice", "correct horse", "192.0.2.1")
        walls.append(time.perf_counter() - started)
        shares.append(timed.spent)
    auth.close()
    return walls, shares


def _hash(auth: nxauth.Authenticator, password: str) -> str:
    from passlib.hash import argon2

    return str(argon2.using(type="ID").hash(password))


# ------------------------------------------------------------ (3) 3 hosts x 20 guessers


class CountingBackend(MemoryBackend):
    def __init__(self, counter: Path) -> None:
        super().__init__({"alice": "wonderland"})
        self.counter = counter

    def authenticate(self, attempt: Any) -> Any:
        fd = os.open(self.counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, b"x")
        os.close(fd)
        time.sleep(0.02)
        return super().authenticate(attempt)


def _host(state: str, store: dict[str, Any], key: str, counter: str, barrier: Any) -> None:
    auth = nxauth.Authenticator(
        config(Path(state), store, throttle={"max_user_failures": LIMIT, "max_source_failures": 10**6}),
        backends={"keys": ListKeySource(key), "mem": CountingBackend(Path(counter))},
        entry_points=False,
    )
    barrier.wait(60)
    threads = [threading.Thread(target=login, args=(auth, key, "alice", f"guess{i}", "203.0.113.7")) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    auth.close()


def guessers(base: Path, store: dict[str, Any], key: str) -> int:
    context = multiprocessing.get_context("spawn")
    base.mkdir(parents=True, exist_ok=True)
    counter = base / "calls"
    barrier = context.Barrier(3)
    hosts = [
        context.Process(target=_host, args=(str(base / f"host{i}"), store, key, str(counter), barrier))
        for i in range(3)
    ]
    for host in hosts:
        host.start()
    for host in hosts:
        host.join(180)
    return counter.stat().st_size if counter.exists() else 0


# ------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    args = parser.parse_args()
    bindir = server_bin()
    if bindir is None:
        print("PostgreSQL's server binaries are not installed (apt-get install postgresql)")
        return 2
    seconds, rounds = (3.0, 20) if args.quick else (10.0, 60)
    cluster = Cluster(bindir).start()
    key = TransportKey().line
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            stores = {
                "sqlite": lambda n: {},
                "postgres": lambda n: cluster.store_options(cluster.new_schema()),
                "pg-notable": lambda n: {**cluster.store_options(cluster.new_schema()), "audit_table": False},
            }
            print(f"PostgreSQL at 127.0.0.1:{cluster.port} (fsync off, as in the tests); {os.cpu_count()} cores\n")

            print("(1) throttle path alone: 8 clients in 2 processes, MemoryBackend")
            rates = {}
            for kind, make in stores.items():
                rates[kind] = throughput(base / f"tp-{kind}", make(0), key, seconds)
                print(f"    {kind:9} {rates[kind]:8.0f} attempts/s")
            best = max(rates["postgres"], rates["pg-notable"])
            verdict = "met" if best >= 2000 else "NOT met"
            print(f"    postgres/sqlite = {rates['postgres'] / rates['sqlite']:.2f}; target >= 2,000/s: {verdict}")
            print("    (pg-notable: PostgreSQL with the audit table off)\n")

            print(f"(2) passwords backend (argon2id), one client, {rounds} logins each, interleaved")
            results: dict[str, tuple[list[float], list[float]]] = {kind: ([], []) for kind in stores}
            sections = {kind: make(0) for kind, make in stores.items()}
            for turn in range(2):
                for kind in results:
                    walls, shares = passwords_logins(base / f"pw-{kind}-{turn}", sections[kind], key, rounds // 2)
                    results[kind][0].extend(walls)
                    results[kind][1].extend(shares)
            med = {kind: statistics.median(walls) for kind, (walls, _) in results.items()}
            share = {kind: statistics.median(shares) for kind, (_, shares) in results.items()}
            for kind in results:
                print(f"    {kind:9} login median {med[kind] * 1e3:7.2f} ms, store's share {share[kind] * 1e3:5.2f} ms")
            ratio = med["postgres"] / med["sqlite"]
            print(f"    postgres/sqlite = {ratio:.3f} (target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'}); ")
            print(f"    pg-notable/sqlite = {med['pg-notable'] / med['sqlite']:.3f} (the audit table off)")
            print(f"    store's share on postgres {share['postgres'] * 1e3:.2f} ms (target <= 2 ms)\n")

            print(f"(3) 3 hosts x 20 concurrent guessers for one user, max_user_failures = {LIMIT}")
            for kind in ("postgres",):
                calls = guessers(base / f"g-{kind}", sections[kind] if kind == "sqlite" else make(0), key)
                print(f"    {kind:9} backend calls {calls} (target <= {LIMIT})")
            # separate state directories: on SQLite each host has its own file, so each its own budget
            calls = guessers(base / "g-sqlite", {}, key)
            print(f"    sqlite    backend calls {calls} (three files, three budgets: what PostgreSQL fixes)")
    finally:
        cluster.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
