"""The password database under load: does the lookup ever cost, does timing
tell who exists, does hashing use every core?

Measures, in one run, on a temporary state directory, through
``session.login`` (stage 1 passed with a real transport key outside the
timer; throttle counting on; audit lines formatted):

1. login latency with the right password, 100 vs 100,000 users in the
   database (target: ratio <= 1.1 — the lookup is never the cost), and the
   user lookup alone;
2. a known user with a wrong password vs an unknown user, medians
   (target: within 5 %);
3. login throughput with 1 and 2 threads (argon2-cffi releases the GIL:
   target ratio >= 1.6 on two cores).

Measurements alternate between the cases they compare, so drift in the
machine's speed cancels out.  The hashing cost is the production default
unless ``--time-cost`` / ``--memory-cost`` say otherwise.

    python benchmarks/bench_passwords.py [--logins 60] [--large 100000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nxauth
from nxauth.backends.hashing import DEFAULT_MEMORY_COST, DEFAULT_TIME_COST
from nxauth.backends.passwords import PasswordsBackend
from nxauth.backends.userdb import ImportEntry, UserDatabase

PASSWORD = "bench-Password-1"
LATENCY_RATIO_TARGET = 1.1
TIMING_DIFFERENCE_TARGET = 0.05
THROUGHPUT_RATIO_TARGET = 1.6


def cpu_idle(seconds: float = 1.0) -> str:
    """How idle the machine's CPUs were over ``seconds`` (Linux), for the report."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:9]]
        return fields[3], sum(fields)

    try:
        idle1, total1 = sample()
        time.sleep(seconds)
        idle2, total2 = sample()
    except OSError:
        return "unknown"
    return f"{100 * (idle2 - idle1) / max(1, total2 - total1):.0f} %"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


class Bench:
    """An authenticator over a fresh state directory holding ``count`` users."""

    def __init__(self, root: Path, count: int, options: dict[str, int], key_line: str) -> None:
        from tests.support.keys import ListKeySource

        self.key_line = key_line
        self.auth = nxauth.Authenticator(
            {
                "state_dir": str(root / f"state-{count}"),
                "transport": {"key_sources": ["keys"]},
                "backends": {"passwords": options},
                "auth": [{"use": "passwords"}],
                "account": [{"use": "users"}],
                # count every failure, lock nobody out
                "throttle": {"max_user_failures": 10**6, "max_source_failures": 10**6},
            },
            backends={"keys": ListKeySource(key_line)},
            entry_points=False,
        )
        backend = self.auth.backends["passwords"]
        assert isinstance(backend, PasswordsBackend)
        self.users: UserDatabase = backend.users
        stored = backend.hasher.hash(nxauth.Secret(PASSWORD))
        self.users.import_entries([ImportEntry(i, f"user{i}", stored) for i in range(count)])
        self.count = count
        self.targets = [f"user{i}" for i in range(0, count, max(1, count // 50))]

    def session(self, port: int = 52100) -> nxauth.Session:
        session = self.auth.open_session(("198.51.100.7", port))
        session.check_transport_key("nx", self.key_line)
        return session

    def login_ms(self, username: str, password: str) -> float:
        session = self.session()
        start = time.perf_counter()
        with contextlib.suppress(nxauth.AuthenticationFailed):
            session.login(username, password)
        return (time.perf_counter() - start) * 1000

    def lookup_us(self, rounds: int = 2000) -> float:
        times = []
        for index in range(rounds):
            name = self.targets[index % len(self.targets)]
            start = time.perf_counter_ns()
            self.users.get(name)
            times.append((time.perf_counter_ns() - start) / 1000)
        return statistics.median(times)

    def throughput(self, threads: int, per_thread: int) -> float:
        sessions = [[self.session(40000 + t) for _ in range(per_thread)] for t in range(threads)]
        start_line = threading.Barrier(threads + 1)

        def work(mine: list[nxauth.Session]) -> None:
            start_line.wait()
            for index, session in enumerate(mine):
                session.login(self.targets[index % len(self.targets)], PASSWORD)

        workers = [threading.Thread(target=work, args=(mine,)) for mine in sessions]
        for worker in workers:
            worker.start()
        start_line.wait()
        start = time.perf_counter()
        for worker in workers:
            worker.join()
        return threads * per_thread / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=60, help="measurements per case (default 60)")
    parser.add_argument("--large", type=int, default=100_000, help="users in the large database")
    parser.add_argument("--small", type=int, default=100, help="users in the small database")
    parser.add_argument("--time-cost", type=int, default=DEFAULT_TIME_COST)
    parser.add_argument("--memory-cost", type=int, default=DEFAULT_MEMORY_COST, help="KiB")
    args = parser.parse_args()

    from tests.support.keys import TransportKey

    audit = logging.getLogger("nxauth.audit")
    audit.addHandler(logging.StreamHandler(io.StringIO()))
    audit.setLevel(logging.INFO)
    audit.propagate = False

    options = {"time_cost": args.time_cost, "memory_cost": args.memory_cost}
    key = TransportKey()
    with tempfile.TemporaryDirectory(prefix="nxauth-bench-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        small = Bench(root, args.small, options, key.line)
        large = Bench(root, args.large, options, key.line)
        setup = time.perf_counter() - started
        hasher = repr(large.auth.backends["passwords"].hasher)  # type: ignore[attr-defined]
        print(f"nxauth password database: {hasher}; {os.cpu_count()} CPUs; Python {platform.python_version()}")
        print(f"setup: {args.small} and {args.large} users in {setup:.1f} s; {args.logins} logins per case")
        print(f"CPU idle before the run: {cpu_idle()} (other work on the machine skews every number)\n")

        for bench in (small, large):  # warm up: caches, dummy hash, first connections
            bench.login_ms(bench.targets[0], PASSWORD)
            bench.login_ms("nobody", PASSWORD)

        # 1. latency, right password, small vs large (alternating)
        latency: dict[int, list[float]] = {small.count: [], large.count: []}
        for index in range(args.logins):
            for bench in (small, large) if index % 2 else (large, small):
                latency[bench.count].append(bench.login_ms(bench.targets[index % len(bench.targets)], PASSWORD))
        small_ms, large_ms = statistics.median(latency[small.count]), statistics.median(latency[large.count])
        ratio = large_ms / small_ms
        print("1. login latency, right password (median)")
        print(f"   {small.count:>7} users: {small_ms:7.2f} ms")
        print(f"   {large.count:>7} users: {large_ms:7.2f} ms")
        print(f"   ratio {ratio:.3f}   (target <= {LATENCY_RATIO_TARGET}: {verdict(ratio <= LATENCY_RATIO_TARGET)})")
        print(f"   user lookup alone: {small.lookup_us():.1f} us vs {large.lookup_us():.1f} us\n")

        # 2. known user + wrong password vs unknown user (alternating), large database
        wrong: list[float] = []
        unknown: list[float] = []
        for index in range(args.logins):
            target = large.targets[index % len(large.targets)]
            pair = [(wrong, target), (unknown, f"nobody{index}")]
            for series, name in pair if index % 2 else reversed(pair):
                series.append(large.login_ms(name, "wrong-" + PASSWORD))
        wrong_ms, unknown_ms = statistics.median(wrong), statistics.median(unknown)
        difference = abs(wrong_ms - unknown_ms) / wrong_ms
        print(f"2. known user with a wrong password vs unknown user ({large.count} users, median)")
        print(f"   wrong password: {wrong_ms:7.2f} ms")
        print(f"   unknown user:   {unknown_ms:7.2f} ms")
        print(
            f"   difference {difference * 100:.1f} %   (target within {TIMING_DIFFERENCE_TARGET * 100:.0f} %: "
            f"{verdict(difference <= TIMING_DIFFERENCE_TARGET)})\n"
        )

        # 3. throughput, 1 and 2 threads, alternating rounds (median of rounds)
        per_thread = max(20, args.logins // 2)
        ones: list[float] = []
        twos: list[float] = []
        for _ in range(3):
            ones.append(large.throughput(1, per_thread))
            twos.append(large.throughput(2, per_thread))
        one, two = statistics.median(ones), statistics.median(twos)
        print(f"3. login throughput, right password (median of 3 rounds of {per_thread} logins per thread)")
        print(f"   1 thread:  {one:6.1f} logins/s")
        print(f"   2 threads: {two:6.1f} logins/s")
        print(
            f"   ratio {two / one:.2f}   (target >= {THROUGHPUT_RATIO_TARGET} on two cores: "
            f"{verdict(two / one >= THROUGHPUT_RATIO_TARGET)})"
        )
        print(f"\nCPU idle after the run: {cpu_idle()}")
        small.auth.close()
        large.auth.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
