"""The blocking door of the stage-2 exchange, the one ``nxauth login`` runs.

Each exchange: a fresh session (stage 1 from an in-memory key source), a
socketpair whose client end has sent ``alice\\npw\\n`` ahead, the
exchange over a ``LineDialogue`` against the in-memory backend, then the
client's lines checked (``NX> 200`` last).  What is timed is the
``run_exchange`` call alone, so the numbers are the exchange's own cost
(plus the session's bookkeeping and audit), not a backend's.

Per source tree, in fresh interpreters (``--rounds`` of them, the trees
taking turns so that the machine's drift hits each alike):

* ``first``: the first exchange of the interpreter, what one
  ``nxauth login`` pays (thread pool, first event loop, ...);
* ``warm``: the next ``--runs`` exchanges in the same interpreter;
* ``process``: the interpreter's whole life: start-up, imports, the
  authenticator, ``--runs + 1`` exchanges, exit (``--runs 0``: about what
  one ``nxauth login`` costs, less its configuration file and audit set-up).

    .venv/bin/python benchmarks/bench_exchange.py [--runs 200] [--rounds 5] \\
        [--tree new=src] [--tree old=/work/base/src]

Any tree with ``nxauth`` in it will do (``run_exchange`` is looked up in
``nxauth.integrations.exchange``, then in ``nxauth.integrations.protocol``,
where it lived before).  Prints, never asserts.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def worker(runs: int) -> None:
    """One interpreter's measurements, printed as one JSON line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    import nxauth
    from nxauth.integrations.protocol import FdLineReader, LineDialogue
    from nxauth.testing import MemoryBackend

    try:
        from nxauth.integrations.exchange import run_exchange
    except ImportError:  # the tree before the exchange had a module of its own
        from nxauth.integrations.protocol import run_exchange  # type: ignore[attr-defined,no-redef]
    try:
        from nxauth.keys.authorized_keys import parse_authorized_key
    except ImportError:
        from nxauth.authorized_keys import parse_authorized_key  # type: ignore[import-not-found,no-redef]

    raw = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    blob = b"\0\0\0\x0bssh-ed25519" + len(raw).to_bytes(4, "big") + raw
    line = f"ssh-ed25519 {base64.b64encode(blob).decode()} bench"

    class Keys:
        def authorized_keys(self, account: str) -> list[Any]:
            return [parse_authorized_key(line)]

    memory = MemoryBackend({"alice": "pw"})
    with tempfile.TemporaryDirectory() as state:
        auth = nxauth.Authenticator.from_mapping(
            {
                "state_dir": state,
                "transport": {"key_sources": ["keys"]},
                "auth": [{"use": "memory"}],
                "account": [{"use": "memory"}],
            },
            backends={"keys": Keys(), "memory": memory},
        )

        def one() -> float:
            session = auth.open_session(peer=("198.51.100.7", 52100))
            session.check_transport_key("nx", line)
            server, client = socket.socketpair()
            with server, client:
                client.sendall(b"alice\npw\n")
                fd = server.fileno()
                dialogue = LineDialogue(FdLineReader(fd, max_line=8193), fd)
                started = time.perf_counter()
                identity = run_exchange(session, dialogue, timeout=120)
                elapsed = time.perf_counter() - started
                server.shutdown(socket.SHUT_WR)
                out = b""
                while chunk := client.recv(65536):
                    out += chunk
            if identity is None or not out.endswith(b"NX> 200 Authenticated alice\n"):
                raise SystemExit(f"the exchange did not log in: {out!r}")
            return elapsed

        with auth:
            first = one()
            warm = [one() for _ in range(runs)]
    print(json.dumps({"first": first, "warm": warm, "module": run_exchange.__module__, "file": nxauth.__file__}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="warm exchanges per interpreter")
    parser.add_argument("--rounds", type=int, default=5, help="interpreters per tree")
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH of a tree's src/ (repeatable)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.runs)
        return
    trees = [item.split("=", 1) for item in args.tree] or [
        ["this", str(Path(__file__).resolve().parent.parent / "src")]
    ]
    results: dict[str, dict[str, list[float]]] = {name: {"first": [], "warm": [], "process": []} for name, _ in trees}
    sources: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as caches:
        # byte-code cached for every tree alike, outside the trees; one
        # untimed interpreter per tree fills its cache
        envs = {
            name: {
                **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
                "PYTHONPATH": str(Path(path).resolve()),
                "PYTHONPYCACHEPREFIX": str(Path(caches, name)),
            }
            for name, path in trees
        }
        command = [sys.executable, __file__, "--worker", "--runs", str(args.runs)]
        for env in envs.values():
            subprocess.run(command, env=env, capture_output=True, check=True)
        for _ in range(args.rounds):
            for name, _path in trees:
                started = time.perf_counter()
                done = subprocess.run(command, env=envs[name], capture_output=True, text=True, check=True)
                results[name]["process"].append(time.perf_counter() - started)
                measured = json.loads(done.stdout.splitlines()[-1])
                results[name]["first"].append(measured["first"])
                results[name]["warm"].extend(measured["warm"])
                sources[name] = f"{measured['module']}.run_exchange from {Path(measured['file']).parent}"
    for name, source in sources.items():
        print(f"{name}: {source}")
    print(f"{args.rounds} interpreters per tree, {args.runs} warm exchanges each; milliseconds")
    print(f"{'tree':<8} {'first (median)':>15} {'warm median':>12} {'warm p90':>9} {'process (median)':>17}")
    for name, data in results.items():
        warm = sorted(data["warm"]) or [float("nan")]
        p90 = warm[int(len(warm) * 0.9)]
        print(
            f"{name:<8} {statistics.median(data['first']) * 1e3:>15.2f} {statistics.median(warm) * 1e3:>12.3f}"
            f" {p90 * 1e3:>9.3f} {statistics.median(data['process']) * 1e3:>17.0f}"
        )


if __name__ == "__main__":
    main()
