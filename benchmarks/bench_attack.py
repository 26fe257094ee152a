"""A legitimate user's login latency while ``nxauth serve`` is under a
password-guessing attack, on the embedded defaults (keystore, password
database with argon2id), measured in one run:

* quiet: one user (alice, from 127.0.0.1) logs in every ``--interval``
  seconds, nobody else connects: the baseline;
* attack: the same, while ``--attackers`` processes guess as fast as they
  can from ``--sources`` loopback addresses (127.1.x.y), each with
  ``--concurrency`` connections at a time, every connection trying wrong
  passwords until the server closes it, for unknown users and for known
  ones (bob, carol; alice is not attacked, her address is clean);
* attack, no penalties: the same attack with ``[server] penalties = false``
  (sshd's PerSourcePenalties off: the failing sources keep connecting, the
  admission gate alone keeps alice's logins fast);
* attack, neither: penalties off and ``[admission] reserve = 0`` too (every
  hash slot open to the failing sources);
* with ``--before SRC``, the same attack against an older nxauth (the
  ``src/`` of another checkout, e.g. a ``git worktree`` of the commit
  before the admission gate), for a before/after in the same run.

Each phase runs its own ``nxauth serve`` process on a fresh state
directory. A login is timed from the TCP connect to ``NX> 200``. Prints the
p50 and p99 of each phase and their ratios to the quiet phase's, how many of
alice's logins failed, and how many guesses the attackers made and what
they were told; never asserts.

    .venv/bin/python benchmarks/bench_attack.py [--seconds 20] [--attackers 8] [--sources 500] [--before SRC]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nxauth
from nxauth.backends.hashing import PasswordHasher
from nxauth.backends.keystore import KeyStore
from nxauth.backends.userdb import UserDatabase
from nxauth.keys.authorized_keys import AuthorizedKey, KeyOptions
from nxauth.keys.formats import parse_public_key
from tests.support.keys import TransportKey

PASSWORD = "alice's right password 1"
LOGIN_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(state: Path, key: TransportKey) -> None:
    auth = nxauth.Authenticator({"state_dir": str(state), "audit": {"log": False}})
    KeyStore(auth.store).add("nx", AuthorizedKey(parse_public_key(key.line), KeyOptions(restrict=True)))
    users = UserDatabase(auth.store)
    hasher = PasswordHasher()
    for name in ("alice", "bob", "carol"):
        users.add(name, password_hash=hasher.hash(nxauth.Secret(PASSWORD if name == "alice" else f"{name}-pw-77")))
    auth.close()


def start_serve(
    work: Path, name: str, key: TransportKey, settings: dict[str, Any], source: str | None
) -> tuple[subprocess.Popen[bytes], int]:
    state = work / name
    prepare(state, key)
    port = free_port()
    tables: dict[str, dict[str, Any]] = {"server": {"listen": '["127.0.0.1"]', "port": port}, "audit": {"log": "false"}}
    for dotted, value in settings.items():
        table, _, name = dotted.partition(".")
        tables.setdefault(table, {})[name] = value
    lines = [f'state_dir = "{state}"']
    for table, values in tables.items():
        lines += [f"[{table}]", *(f"{k} = {v}" for k, v in values.items())]
    config = work / f"{name}.toml"
    config.write_text("\n".join(lines) + "\n")
    env = dict(os.environ)
    if source is not None:  # an older nxauth: it is given no key it may not know
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (source, env.get("PYTHONPATH"))))
    process = subprocess.Popen(
        [sys.executable, "-m", "nxauth", "--config", str(config), "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("nxauth serve did not start")


async def attempt(port: int, key: asyncssh.SSHKey, source: str, user_of: Any, password_of: Any) -> tuple[float, str]:
    """One connection: stage 1, then passwords until the server says
    something else than ``401`` (or succeeds).  Returns the time to the first
    answer and the last code."""
    start = time.perf_counter()
    conn = await asyncssh.connect(
        "127.0.0.1", port, local_addr=(source, 0), username="nx", client_keys=[key], known_hosts=None,
        agent_path=None, config=None, password_auth=False, kbdint_auth=False, gss_auth=False, gss_kex=False,
    )  # fmt: skip
    last = "gone"
    first: float | None = None
    try:
        process = await conn.create_process(encoding=None)
        while True:
            raw = await process.stdout.readline()
            if not raw:
                break
            code = raw[4:7].decode("ascii", "replace")
            if code == "101":
                process.stdin.write(user_of().encode() + b"\n")
            elif code == "102":
                process.stdin.write(password_of().encode() + b"\n")
            elif code == "100":
                continue
            elif code == "401":
                first = first or time.perf_counter() - start
                last = code
                continue
            else:
                last = code
                break
    finally:
        conn.close()
    return (first or time.perf_counter() - start), last


def attacker(port: int, private: bytes, sources: list[str], concurrency: int, stop: Any, results: Any) -> None:  # noqa: PLR0917
    key = asyncssh.import_private_key(private)
    rng = random.Random(os.getpid())
    told: Counter[str] = Counter()
    guesses = 0

    def user() -> str:
        return rng.choice(("bob", "carol", f"nobody{rng.randrange(10**6)}"))

    def password() -> str:
        nonlocal guesses
        guesses += 1
        return f"guess-{rng.randrange(10**9)}"

    async def worker() -> None:
        while not stop.is_set():
            try:
                _, last = await asyncio.wait_for(attempt(port, key, rng.choice(sources), user, password), 60)
            except (OSError, asyncssh.Error, TimeoutError):
                last = "error"
            told[last] += 1

    async def main() -> None:
        await asyncio.gather(*(worker() for _ in range(concurrency)))

    asyncio.run(main())
    results.put((guesses, dict(told)))


async def legitimate(port: int, key: asyncssh.SSHKey, seconds: float, interval: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    failures = 0

    async def one() -> None:
        nonlocal failures
        outcome: list[str] = []

        async def login() -> float:
            start = time.perf_counter()
            conn = await asyncssh.connect(
                "127.0.0.1", port, local_addr=("127.0.0.1", 0), username="nx", client_keys=[key], known_hosts=None,
                agent_path=None, config=None, password_auth=False, kbdint_auth=False, gss_auth=False, gss_kex=False,
            )  # fmt: skip
            try:
                process = await conn.create_process(encoding=None)
                while True:
                    raw = await process.stdout.readline()
                    code = raw[4:7].decode("ascii", "replace")
                    if code == "101":
                        process.stdin.write(b"alice\n")
                    elif code == "102":
                        process.stdin.write(PASSWORD.encode() + b"\n")
                    elif code == "100":
                        continue
                    else:
                        outcome.append(code)
                        return time.perf_counter() - start
            finally:
                conn.close()

        try:
            elapsed = await asyncio.wait_for(login(), LOGIN_TIMEOUT)
        except (OSError, asyncssh.Error, TimeoutError):
            failures += 1
            return
        if outcome == ["200"]:
            latencies.append(elapsed)
        else:
            failures += 1

    tasks = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        tasks.append(asyncio.create_task(one()))
        await asyncio.sleep(interval)
    await asyncio.gather(*tasks)
    return latencies, failures


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def phase(
    work: Path,
    name: str,
    key: TransportKey,
    args: argparse.Namespace,
    *,
    attack: bool,
    settings: dict[str, Any],
    source: str | None,
) -> dict[str, Any]:
    server, port = start_serve(work, name, key, settings, source)
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    results = context.Queue()
    sources = [f"127.1.{n // 250}.{n % 250 + 1}" for n in range(args.sources)]
    attackers = []
    try:
        if attack:
            private = key.private_openssh()
            attackers = [
                context.Process(
                    target=attacker, args=(port, private, sources[i :: args.attackers], args.concurrency, stop, results)
                )
                for i in range(args.attackers)
            ]
            for process in attackers:
                process.start()
            time.sleep(args.warmup)
        client_key = asyncssh.import_private_key(key.private_openssh())
        latencies, failures = asyncio.run(legitimate(port, client_key, args.seconds, args.interval))
        stop.set()
        guesses, told = 0, Counter[str]()
        for _ in attackers:
            count, codes = results.get(timeout=120)
            guesses += count
            told.update(codes)
        for process in attackers:
            process.join(30)
    finally:
        stop.set()
        for process in attackers:
            if process.is_alive():
                process.kill()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    return {"latencies": latencies, "failures": failures, "guesses": guesses, "told": dict(told)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase's measurement")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between alice's logins")
    parser.add_argument("--attackers", type=int, default=8, help="attacker processes")
    parser.add_argument("--sources", type=int, default=500, help="loopback addresses the attackers use")
    parser.add_argument("--concurrency", type=int, default=4, help="connections at a time per attacker")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of attack before alice starts")
    parser.add_argument(
        "--before",
        metavar="SRC",
        help="also run the attack against the nxauth in SRC (the src/ of an older checkout, put first on PYTHONPATH)",
    )
    args = parser.parse_args()
    key = TransportKey("bench")
    rows = []
    with tempfile.TemporaryDirectory(prefix="nxauth-attack-") as tmp:
        work = Path(tmp)
        phases: list[tuple[str, bool, dict[str, Any], str | None]] = [
            ("quiet", False, {}, None),
            ("attack", True, {}, None),
            ("attack, no penalties", True, {"server.penalties": "false"}, None),
            ("attack, neither", True, {"server.penalties": "false", "admission.reserve": 0}, None),
        ]
        if args.before:
            phases.append(("attack, before", True, {}, args.before))
        for name, attack, settings, source in phases:
            result = phase(
                work, name.replace(", ", "-").replace(" ", "-"), key, args, attack=attack, settings=settings,
                source=source,
            )  # fmt: skip
            rows.append((name, result))
            print(f"  {name}: done", file=sys.stderr, flush=True)
    print(
        f"alice logs in every {args.interval:g} s for {args.seconds:g} s; attack: {args.attackers} processes x "
        f"{args.concurrency} connections from {args.sources} loopback sources; CPUs: {os.cpu_count()}\n"
    )
    quiet = rows[0][1]["latencies"]
    base50, base99 = statistics.median(quiet), p99(quiet)
    print(
        f"  {'phase':<18} {'logins':>6} {'failed':>6} {'p50 ms':>8} {'p99 ms':>8} {'p50 x':>6} {'p99 x':>6}  attackers' guesses, answers"
    )
    for name, result in rows:
        values = result["latencies"]
        if not values:
            print(f"  {name:<18} {0:>6} {result['failures']:>6}  (no login succeeded)")
            continue
        p50, p = statistics.median(values), p99(values)
        told = ", ".join(f"{code} x{count}" for code, count in sorted(result["told"].items()))
        print(
            f"  {name:<18} {len(values):>6} {result['failures']:>6} {p50 * 1000:8.1f} {p * 1000:8.1f} "
            f"{p50 / base50:6.2f} {p / base99:6.2f}  {result['guesses']} ({told})"
        )
    print(f"\nload average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
