"""Stage-1 cost against the number of stored keys.

For 10, 10,000 and 100,000 transport keys, in the keystore and in an
authorized_keys file, measures one stage-1 check (key-source lookup and the
key policy; signature verification excluded: the SSH layer or SSHSIG does
that), the same through stage 1's owner (``Stage1.decide``: the key
sources in order, the policy, the grant; what every entry point runs) and
the whole ``session.check_transport_key`` call (session, parsing, audit
event).  Also measures, in the same run, a linear scan of the same
authorized_keys file, which is what sshd does.  Prints medians and the ratio
100,000/10 (target <= 1.5; median per check target <= 20 us).

    python benchmarks/bench_stage1.py [--sizes 10,10000,100000]
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import nxauth
from nxauth.core.authenticator import runtime_of
from nxauth.core.stage1 import Stage1
from nxauth.keys.authorized_keys import parse_authorized_key
from nxauth.keys.formats import PublicKey, parse_public_key
from nxauth.keys.policy import KeyPolicy, evaluate_key, lookup_blob

TARGET_RATIO = 1.5
TARGET_US = 20.0


def key_lines(count: int) -> list[str]:
    lines = []
    for index in range(count):
        raw = (
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
        blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + raw
        lines.append(f'restrict,command="nxauth login" ssh-ed25519 {base64.b64encode(blob).decode()} key{index}')
    return lines


def median_us(function, repeat: int) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        function()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(samples)


def interleaved_medians_us(
    functions: dict[int, Callable[[], object]], repeat: int, chunk: int = 25
) -> dict[int, float]:
    """The median of ``repeat`` calls of each function, measured in turns of
    ``chunk`` calls per size, so that a burst of load on a shared machine
    hits every size alike instead of skewing the ratio."""
    samples: dict[int, list[float]] = {size: [] for size in functions}
    for _ in range(max(1, repeat // chunk)):
        for size, function in functions.items():
            bucket = samples[size]
            for _ in range(chunk):
                start = time.perf_counter_ns()
                function()
                bucket.append((time.perf_counter_ns() - start) / 1000)
    return {size: statistics.median(bucket) for size, bucket in samples.items()}


def build(state: Path, lines: list[str]) -> tuple[nxauth.Authenticator, nxauth.Authenticator, Path]:
    keystore_auth = nxauth.Authenticator(
        {"state_dir": str(state / "ks"), "auth": [], "account": []}, entry_points=False
    )
    now = time.time()
    rows = []
    for line in lines:
        entry = parse_authorized_key(line)
        assert entry is not None
        rows.append(("nx", entry.key.blob, entry.to_line(), entry.key.fingerprint, entry.key.comment, now))
    with keystore_auth.store.transaction() as tx:
        tx.executemany(
            "INSERT INTO transport_keys (account, lookup, line, fingerprint, comment, added) VALUES (?,?,?,?,?,?)",
            rows,
        )
    path = state / f"authorized_keys_{len(lines)}"
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    file_auth = nxauth.Authenticator(
        {
            "state_dir": str(state / "file"),
            "transport": {"key_sources": ["file"]},
            "backends": {"file": {"kind": "authorized_keys", "path": str(path)}},
            "auth": [],
            "account": [],
        },
        entry_points=False,
    )
    return keystore_auth, file_auth, path


def linear_scan(path: Path, blob: bytes) -> bool:
    """What sshd does: read every line, decode each key, compare."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            entry = parse_authorized_key(line)
            if entry is not None and entry.key.blob == blob:
                return True
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,10000,100000")
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    logging.getLogger("nxauth").setLevel(logging.WARNING)
    all_lines = key_lines(max(sizes))
    results: dict[str, dict[int, float]] = {
        "keystore": {},
        "file": {},
        "keystore-owner": {},
        "file-owner": {},
        "keystore-call": {},
        "file-call": {},
        "scan": {},
    }
    policy = KeyPolicy()
    peer = nxauth.Peer("198.51.100.7", 52100)
    with tempfile.TemporaryDirectory() as tmp:
        built = {}
        for size in sizes:
            lines = all_lines[:size]
            keystore_auth, file_auth, path = build(Path(tmp) / str(size), lines)
            probe_line = lines[size // 2][lines[size // 2].index("ssh-ed25519 ") :]
            built[size] = (keystore_auth, file_auth, path, probe_line)
        for name in ("keystore", "file"):
            checks: dict[int, Callable[[], object]] = {}
            decides: dict[int, Callable[[], object]] = {}
            calls: dict[int, Callable[[], object]] = {}
            for size, (keystore_auth, file_auth, _path, probe_line) in built.items():
                auth = keystore_auth if name == "keystore" else file_auth
                source = auth.backends["keystore"] if name == "keystore" else next(iter(auth.backends.values()))
                key = parse_public_key(probe_line)
                blob = lookup_blob(key)

                def check(source: object = source, key: PublicKey = key, blob: bytes = blob) -> None:
                    found = source.authorized_keys("nx").find(blob)  # type: ignore[attr-defined]
                    decision = evaluate_key(policy, key, found, account="nx", peer_host=peer.host, now=time.time())
                    assert decision.allowed

                owner = runtime_of(auth).stage1

                def decide(owner: Stage1 = owner, key: PublicKey = key) -> None:
                    assert owner.decide("nx", key, peer=peer).allowed

                def call(auth: nxauth.Authenticator = auth, line: str = probe_line) -> None:
                    auth.open_session(("198.51.100.7", 52100)).check_transport_key("nx", line)

                for function in (check, decide, call):
                    function()
                checks[size], decides[size], calls[size] = check, decide, call
            results[name] = interleaved_medians_us(checks, args.repeat)
            results[f"{name}-owner"] = interleaved_medians_us(decides, args.repeat)
            results[f"{name}-call"] = interleaved_medians_us(calls, args.repeat)
        for size, (keystore_auth, file_auth, path, probe_line) in built.items():
            blob = lookup_blob(parse_public_key(probe_line))
            results["scan"][size] = median_us(lambda: linear_scan(path, blob), 3 if size > 1000 else 50)
            keystore_auth.close()
            file_auth.close()

    print(f"{'':24}" + "".join(f"{size:>14,}" for size in sizes) + f"{'ratio':>10}")
    labels = {
        "keystore": "keystore check (us)",
        "file": "file check (us)",
        "keystore-owner": "keystore Stage1 (us)",
        "file-owner": "file Stage1 (us)",
        "keystore-call": "keystore full call (us)",
        "file-call": "file full call (us)",
        "scan": "linear scan, sshd (us)",
    }
    for name, label in labels.items():
        row = results[name]
        ratio = row[sizes[-1]] / row[sizes[0]]
        print(f"{label:24}" + "".join(f"{row[size]:>14.1f}" for size in sizes) + f"{ratio:>10.2f}")
    for name in ("keystore", "file", "keystore-owner", "file-owner"):
        row = results[name]
        ratio = row[sizes[-1]] / row[sizes[0]]
        worst = max(row.values())
        line = (
            f"{name}: ratio {sizes[-1]}/{sizes[0]} = {ratio:.2f} (target <= {TARGET_RATIO}: "
            f"{'met' if ratio <= TARGET_RATIO else 'NOT met'})"
        )
        if name in ("keystore", "file"):  # the per-check target is the lookup and the policy's
            line += f"; median per check {worst:.1f} us (target <= {TARGET_US:.0f}: "
            line += f"{'met' if worst <= TARGET_US else 'NOT met'})"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
