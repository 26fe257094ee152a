"""Overhead of nxauth's stage-2 pipeline around a trivial backend.

Measures, in one run, (a) calling an in-memory backend's ``authenticate`` and
``check_account`` directly, and (b) ``session.login`` through the whole
pipeline (username normalization, throttle read from the SQLite store,
empty-password check, auth and account stacks, audit to a logger that
formats every line).  Prints the overhead per login in microseconds against
the target of 100 µs on the success path.

    python benchmarks/bench_pipeline.py [--logins 5000]
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nxauth
from nxauth.testing import MemoryBackend, make_identity

TARGET_US = 100.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from tests.support.keys import ListKeySource, TransportKey

    audit = logging.getLogger("nxauth.audit")
    audit.setLevel(logging.INFO)
    audit.addHandler(logging.StreamHandler(io.StringIO()))
    audit.propagate = False

    key = TransportKey()
    backend = MemoryBackend({"alice": "wonderland"})
    with tempfile.TemporaryDirectory() as state:
        auth = nxauth.Authenticator(
            {
                "state_dir": state,
                "transport": {"key_sources": ["keys"]},
                "auth": [{"use": "mem"}],
                "account": [{"use": "mem"}],
            },
            backends={"mem": backend, "keys": ListKeySource(key.line)},
            entry_points=False,
        )
        attempt = nxauth.Attempt("alice", nxauth.Secret("wonderland"))
        identity = make_identity("alice")

        direct_rounds: list[float] = []
        pipeline_rounds: list[float] = []
        for _ in range(args.rounds):
            start = time.perf_counter_ns()
            for _ in range(args.logins):
                backend.authenticate(attempt)
                backend.check_account(identity)
            direct_rounds.append((time.perf_counter_ns() - start) / args.logins / 1000)

            sessions = []
            for _ in range(args.logins):
                session = auth.open_session(("198.51.100.7", 52100))
                session.check_transport_key("nx", key.line)
                sessions.append(session)
            start = time.perf_counter_ns()
            for session in sessions:
                session.login("alice", "wonderland")
            pipeline_rounds.append((time.perf_counter_ns() - start) / args.logins / 1000)
        auth.close()

    direct = statistics.median(direct_rounds)
    pipeline = statistics.median(pipeline_rounds)
    overhead = pipeline - direct
    print(f"logins per round:      {args.logins} x {args.rounds} rounds (median of rounds)")
    print(f"backend called direct: {direct:8.2f} us/login")
    print(f"through nxauth:        {pipeline:8.2f} us/login")
    print(
        f"overhead:              {overhead:8.2f} us/login   (target <= {TARGET_US:.0f} us: "
        f"{'met' if overhead <= TARGET_US else 'NOT met'})"
    )
    print(f"ratio:                 {pipeline / direct:8.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
