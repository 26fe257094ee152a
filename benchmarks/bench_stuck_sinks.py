"""What a stuck audit sink costs a login (issue 17, class 7).

In one run, the same login (stage 1 with the transport key, then stage 2
against an in-memory backend) is timed with:

- ``baseline``: a syslog socket that is read, and a quick observer;
- ``unread syslog``: the syslog socket's queue full, nobody reading;
- ``stuck observer``: a third-party ``nxauth_auth_event`` implementation
  that never returns;
- ``slow observer``: one that takes 5 ms per event (under the budget).

Prints the median and p99 per login and the ratio to the baseline, and the
added delay in milliseconds (the target: a few milliseconds, never a hang).

    python benchmarks/bench_stuck_sinks.py [--logins 200]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nxauth
from nxauth.testing import MemoryBackend


class Quick:
    @nxauth.hookimpl
    def nxauth_auth_event(self, event: nxauth.AuthEvent) -> None:
        pass


class Stuck:
    def __init__(self) -> None:
        self.release = threading.Event()

    @nxauth.hookimpl
    def nxauth_auth_event(self, event: nxauth.AuthEvent) -> None:
        self.release.wait()


class Slow:
    @nxauth.hookimpl
    def nxauth_auth_event(self, event: nxauth.AuthEvent) -> None:
        time.sleep(0.005)


@contextlib.contextmanager
def syslog(directory: str, *, read: bool) -> Iterator[str]:
    address = str(Path(directory) / f"log-{read}.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)
    stop = threading.Event()

    def reader() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                server.recv(65536)

    thread = threading.Thread(target=reader, daemon=True) if read else None
    if thread is not None:
        thread.start()
    try:
        yield address
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        server.close()


def run(name: str, logins: int, plugins: list[object], syslog_read: bool) -> list[float]:
    from tests.support.keys import ListKeySource, TransportKey

    key = TransportKey()
    with tempfile.TemporaryDirectory() as state, syslog(state, read=syslog_read) as address:
        auth = nxauth.Authenticator(
            {
                "state_dir": state,
                "transport": {"key_sources": ["keys"]},
                "auth": [{"use": "mem"}],
                "account": [{"use": "mem"}],
                "throttle": {"enabled": False},
                "audit": {"log": False, "syslog": True, "syslog_address": address},
            },
            backends={"mem": MemoryBackend({"alice": "wonderland"}), "keys": ListKeySource(key.line)},
            plugins=plugins,
            entry_points=False,
        )
        times: list[float] = []
        try:
            for i in range(logins):
                start = time.perf_counter()
                session = auth.open_session(peer=("198.51.100.7", 40000 + i % 20000))
                session.check_transport_key("nx", key.line)
                session.login("alice", "wonderland")
                times.append(time.perf_counter() - start)
                session.close()
        finally:
            for plugin in plugins:
                if isinstance(plugin, Stuck):
                    plugin.release.set()
            auth.close()
    return times


def p99(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.99) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=200)
    args = parser.parse_args()
    cases: list[tuple[str, list[object], bool]] = [
        ("baseline", [Quick()], True),
        ("unread syslog", [Quick()], False),
        ("stuck observer", [Stuck()], True),
        ("slow observer (5 ms)", [Slow()], True),
    ]
    results: dict[str, list[float]] = {}
    for name, plugins, read in cases:
        results[name] = run(name, args.logins, plugins, read)
    base: Any = results["baseline"]
    base_median, base_p99 = statistics.median(base), p99(base)
    print(f"{args.logins} logins each (stage 1 + stage 2, 2 events per login)")
    print(f"{'case':24} {'median ms':>10} {'p99 ms':>9} {'x median':>9} {'x p99':>7} {'+ms median':>11}")
    for name, times in results.items():
        median, high = statistics.median(times), p99(times)
        print(
            f"{name:24} {median * 1e3:10.3f} {high * 1e3:9.3f} {median / base_median:9.2f} "
            f"{high / base_p99:7.2f} {(median - base_median) * 1e3:11.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
