"""Time SSHSIG verification of an Ed25519 signature against the 1 ms target, and fingerprinting.

    python benchmarks/bench_sshsig.py [iterations]

The signature is made by ``ssh-keygen -Y sign`` when OpenSSH is installed,
otherwise built in-process the same way (PROTOCOL.sshsig).  Each figure is
the median of ``iterations`` timed calls (time.perf_counter_ns).
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from nxauth.keys.formats import decode_public_key, parse_public_key
from nxauth.keys.sshsig import parse_sshsig, verify_sshsig

TARGET_US = 1000.0
NAMESPACE = "nxauth"
MESSAGE = b"nxauth-challenge-v1:0123456789abcdef:" + b"x" * 43


def _s(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return len(raw).to_bytes(4, "big") + raw


def make_signature() -> tuple[str, str]:
    """(armored signature, origin)."""
    keygen = shutil.which("ssh-keygen")
    if keygen:
        with tempfile.TemporaryDirectory() as tmp:
            key = Path(tmp) / "id"
            subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
            out = subprocess.run(
                [keygen, "-q", "-Y", "sign", "-n", NAMESPACE, "-f", str(key)],
                input=MESSAGE,
                capture_output=True,
                check=True,
            )
            return out.stdout.decode(), "ssh-keygen -Y sign"
    private = ed25519.Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signed = b"SSHSIG" + _s(NAMESPACE) + _s(b"") + _s("sha512") + _s(hashlib.sha512(MESSAGE).digest())
    sig = _s("ssh-ed25519") + _s(private.sign(signed))
    blob = b"SSHSIG\0\0\0\1" + _s(_s("ssh-ed25519") + _s(raw)) + _s(NAMESPACE) + _s(b"") + _s("sha512") + _s(sig)
    body = base64.b64encode(blob).decode()
    lines = [body[i : i + 76] for i in range(0, len(body), 76)]
    return "\n".join(["-----BEGIN SSH SIGNATURE-----", *lines, "-----END SSH SIGNATURE-----"]), "in-process"


def median_us(func: Callable[[], object], iterations: int) -> float:
    for _ in range(min(200, iterations)):  # warm up
        func()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        func()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000.0


def main() -> int:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    armored, origin = make_signature()
    sig = parse_sshsig(armored)
    if not verify_sshsig(sig, MESSAGE, NAMESPACE):
        print("the benchmark signature does not verify", file=sys.stderr)
        return 1
    key_line = sig.public_key.to_openssh()
    blob = sig.public_key.blob

    def full() -> bool:
        return verify_sshsig(parse_sshsig(armored), MESSAGE, NAMESPACE)

    def fingerprint_fresh() -> str:
        return decode_public_key(blob).fingerprint

    rows = [
        ("parse + verify (armored text -> bool)", median_us(full, iterations)),
        ("verify only (parsed signature)", median_us(lambda: verify_sshsig(sig, MESSAGE, NAMESPACE), iterations)),
        ("parse_sshsig only", median_us(lambda: parse_sshsig(armored), iterations)),
        ("decode_public_key (Ed25519 blob)", median_us(lambda: decode_public_key(blob), iterations)),
        ("parse_public_key (OpenSSH line)", median_us(lambda: parse_public_key(key_line), iterations)),
        ("decode + fingerprint (uncached)", median_us(fingerprint_fresh, iterations)),
        ("fingerprint (cached property)", median_us(lambda: sig.public_key.fingerprint, iterations)),
    ]
    print(
        f"SSHSIG Ed25519 benchmark: {iterations} iterations, signature from {origin}, Python {sys.version.split()[0]}"
    )
    for name, value in rows:
        print(f"  {name:42s} {value:9.1f} us")
    verdict = "OK" if rows[0][1] < TARGET_US else "OVER TARGET"
    print(f"  target: full verification < {TARGET_US:.0f} us -> {verdict} ({rows[0][1] / TARGET_US:.1%} of budget)")
    return 0 if verdict == "OK" else 2


if __name__ == "__main__":
    raise SystemExit(main())
