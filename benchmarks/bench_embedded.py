"""Login latency through the embedded SSH server, end to end with the real
OpenSSH ``ssh`` client: from starting ``ssh`` to its exit after the session
handler's output, medians over ``--runs`` logins, measured in one run:

* baseline: a plain asyncssh server, public-key authentication from an
  ``authorized_keys`` list, a process that prints one line (no nxauth);
* nxauth, stage 2 against an in-memory backend (the cost of nxauth: stage 1
  through the keystore, the line exchange, the audit trail);
* nxauth on the embedded defaults: keystore and password database (argon2id),
  what ``nxauth serve`` does out of the box.

Same host key, same client key, same ``ssh`` options for all three.

    .venv/bin/python benchmarks/bench_embedded.py [--runs 25]

Prints, never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nxauth
from nxauth.integrations.asyncssh import ensure_host_key, start_server
from nxauth.testing import MemoryBackend
from tests.support.keys import ListKeySource, TransportKey

T = TypeVar("T")
PASSWORD = "bench password 1"


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)


def ssh_login(ssh: str, key: Path, port: int, data: bytes) -> bytes:
    result = subprocess.run(
        [
            ssh, "-F", "/dev/null", "-T", "-i", str(key), "-p", str(port),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "nx@127.0.0.1",
        ],
        input=data, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    if result.returncode != 0 or b"hello alice" not in result.stdout:
        raise RuntimeError(f"login failed ({result.returncode}): {result.stdout!r} {result.stderr!r}")
    return result.stdout


def median_ms(ssh: str, key: Path, port: int, data: bytes, runs: int) -> tuple[float, float]:
    ssh_login(ssh, key, port, data)  # warm up
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        ssh_login(ssh, key, port, data)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), min(samples)


async def hello(identity: nxauth.Identity, process: Any) -> int:
    process.stdout.write(f"hello {identity.username}\n".encode())
    return 0


async def plain_hello(process: asyncssh.SSHServerProcess[bytes]) -> None:
    process.stdout.write(b"hello alice\n")
    process.exit(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=25)
    args = parser.parse_args()
    ssh = shutil.which("ssh")
    if ssh is None:
        print("skipped: the OpenSSH client (ssh) is not installed")
        return 0
    loop = LoopThread()
    with tempfile.TemporaryDirectory(prefix="nxauth-bench-") as tmp:
        work = Path(tmp)
        key = TransportKey("bench")
        key_path = work / "client_key"
        key_path.write_bytes(key.private_openssh())
        key_path.chmod(0o600)
        host_key = ensure_host_key(work / "ssh_host_ed25519_key")

        async def plain_server() -> asyncssh.SSHAcceptor:
            return await asyncssh.create_server(
                asyncssh.SSHServer, "127.0.0.1", 0, server_host_keys=[str(host_key)],
                authorized_client_keys=asyncssh.import_authorized_keys(key.line + "\n"),
                process_factory=plain_hello, encoding=None, config=None, gss_host=None,
            )  # fmt: skip

        memory = nxauth.Authenticator(
            {
                "state_dir": str(work / "memory"),
                "transport": {"key_sources": ["keys"]},
                "auth": [{"use": "mem"}],
                "account": [{"use": "mem"}],
                "audit": {"log": False},
            },
            backends={"keys": ListKeySource(key.line), "mem": MemoryBackend({"alice": PASSWORD})},
            entry_points=False,
        )
        defaults = nxauth.Authenticator({"state_dir": str(work / "defaults"), "audit": {"log": False}})
        from nxauth.backends.hashing import PasswordHasher
        from nxauth.backends.keystore import KeyStore
        from nxauth.backends.userdb import UserDatabase
        from nxauth.keys.authorized_keys import AuthorizedKey, KeyOptions
        from nxauth.keys.formats import parse_public_key

        KeyStore(defaults.store).add("nx", AuthorizedKey(parse_public_key(key.line), KeyOptions(restrict=True)))
        UserDatabase(defaults.store).add("alice", password_hash=PasswordHasher().hash(nxauth.Secret(PASSWORD)))

        plain = loop.run(plain_server())
        servers = [loop.run(start_server(auth, hello, host_keys=[host_key])) for auth in (memory, defaults)]
        login = f"alice\n{PASSWORD}\n".encode()
        rows = [
            ("baseline: asyncssh, public key only, no nxauth", plain.get_port(), b""),
            ("nxauth embedded: in-memory key source + memory backend", servers[0].port, login),
            ("nxauth embedded defaults: keystore + password database (argon2id)", servers[1].port, login),
        ]
        print(f"{ssh} ({subprocess.run([ssh, '-V'], capture_output=True, text=True, check=False).stderr.strip()})")
        print(f"median over {args.runs} logins, from starting ssh to its exit after the handler's output\n")
        results = []
        for name, port, data in rows:
            median, fastest = median_ms(ssh, key_path, port, data, args.runs)
            results.append(median)
            ratio = median / results[0]
            print(f"  {name:<68} {median:7.1f} ms (min {fastest:6.1f})  ratio {ratio:5.2f}", flush=True)
        print(f"\nCPUs: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")

        async def stop() -> None:  # on the servers' loop
            for server in servers:
                server.close()
                await server.wait_closed()
            plain.close()

        loop.run(stop())
        memory.close()
        defaults.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
