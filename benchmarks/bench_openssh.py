"""Logins through the system's sshd with the real ``ssh`` client (root).

Measured in one run, medians over ``--runs`` logins, all forced to run
``/bin/true`` so that only stage 1 differs:

* baseline: sshd with a one-line ``authorized_keys`` file;
* sshd's own scan of a 100,000-line ``authorized_keys`` file (the key last);
* sshd with ``nxauth authorized-keys`` (in-process, a fresh Python each
  time) over a keystore of 100,000 keys;
* sshd with the ``authorized-keys-daemon`` client (``nxauth sshd-config
  --daemon``) over the same keystore (target: ratio to the baseline <= 1.25);
* the floor of any Python ``AuthorizedKeysCommand``: the same interpreter,
  ``-I -S``, running a script that only prints the line and exits
  (a control, not a deployment: sshd runs the command twice per login);
* the whole two-stage login through the daemon: + ``nxauth login``
  (password database, argon2id) + the session command, for reference.

And the cost of one ``AuthorizedKeysCommand`` run (target <= 40 ms), both
ways, run as the transport account like sshd does: the daemon's client, and
``nxauth authorized-keys`` in-process; next to a Python helper that only
imports cryptography, pluggy and passlib (what the issue measured, ~86 ms)
and to ``python -c pass``.

    sudo .venv/bin/python benchmarks/bench_openssh.py [--runs 15] [--keys 100000]

All the sshd set-ups run at once and are timed in turn, round after round,
so that the machine's drift hits each alike.  Prints, never asserts.  Needs
a virtual environment whose interpreter the throwaway transport account can
run (``scripts/test-all`` builds .venv from
Debian's /usr/bin/python3).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.sshd import (
    KeyDaemon,
    Sshd,
    account_cannot_run,
    as_account,
    running_sshd,
    skip_reason,
    throwaway_account,
)

PASSWORD = "bench password 1"
TARGET_RATIO = 1.25
TARGET_MS = 40.0


def interleaved_medians(cases: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median milliseconds of each case over ``runs`` rounds; every round
    times each case once, in turn, so that the machine's drift (a VM's
    neighbours, the page cache) hits every case alike."""
    for function in cases.values():
        function()  # warm the page cache and the servers
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, function in cases.items():
            start = time.perf_counter()
            function()
            samples[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def random_key_lines(count: int, options: str = "") -> list[str]:
    """Ed25519 public keys (any 32 bytes are a well-formed one)."""
    prefix = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"
    return [
        f"{options}ssh-ed25519 {base64.b64encode(prefix + secrets.token_bytes(32)).decode()} k{index}"
        for index in range(count)
    ]


def ssh(sshd: Sshd, key: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    result = sshd.ssh(key, options=("-T",), input=stdin, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"login failed ({result.returncode}): {result.stderr}{sshd.log.read_text()[-2000:]}")
    return result


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="nxauth-bench-", dir="/var/lib"))  # sshd: no world-writable parent
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def nxauth_cli(*argv: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "nxauth", *argv], input=stdin, capture_output=True, text=True, check=True
    )
    return result.stdout


def fill_keystore(config: Path, count: int, real_line: str) -> None:
    import nxauth
    from nxauth.keys.authorized_keys import parse_authorized_key

    auth = nxauth.Authenticator.from_file(config, entry_points=False)
    now = time.time()
    rows = []
    lines = random_key_lines(count - 1, 'restrict,command="nxauth login" ')
    for line in [*lines, 'restrict,command="nxauth login" ' + real_line]:
        entry = parse_authorized_key(line)
        assert entry is not None
        rows.append((auth.config.transport.account, entry.key.blob, entry.to_line(), entry.key.fingerprint, "", now))
    with auth.store.transaction() as tx:
        tx.executemany(
            "INSERT INTO transport_keys (account, lookup, line, fingerprint, comment, added) VALUES (?,?,?,?,?,?)",
            rows,
        )
    auth.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args()
    reason = skip_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: byte-code cached
    program_path = shutil.which("nxauth", path=str(Path(sys.executable).parent))
    if program_path is None:
        print("skipped: no nxauth command next to this interpreter")
        return 0
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(__file__).resolve().parent.parent / "src")])

    with workdir() as base:
        account = f"nxb{secrets.token_hex(3)}"
        keys = base / "keys"
        keys.mkdir(mode=0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "id")], check=True)
        public = (keys / "id.pub").read_text().strip()
        state = base / "state"
        config = base / "nxauth.toml"
        config.write_text(
            f'state_dir = "{state}"\n[transport]\naccount = "{account}"\n'
            '[login]\ncommand = ["/bin/true"]\n[audit]\nlog = false\n'
            f'jsonl = "{state / "audit.jsonl"}"\n'
        )
        config.chmod(0o644)
        program = base / "nxauth"
        program.write_text(f'#!/bin/sh\nexec {program_path} "$@"\n')
        program.chmod(0o755)
        print(f"filling a keystore with {args.keys:,} keys ...", flush=True)
        fill_keystore(config, args.keys, public)
        nxauth_cli("--config", str(config), "useradd", "bench", "--password-stdin", stdin=PASSWORD + "\n")
        big = base / "authorized_keys_big"
        big.write_text("\n".join([*random_key_lines(args.keys - 1), public]) + "\n")
        one = base / "authorized_keys_one"
        one.write_text(public + "\n")
        for path in (big, one):
            path.chmod(0o644)

        block = nxauth_cli("--config", str(config), "sshd-config", "--program", str(program))
        daemon_block = nxauth_cli("--config", str(config), "sshd-config", "--program", str(program), "--daemon")
        forced = f"ForceCommand {program} --config {config} login"
        socket_path = state / "authorized-keys.sock"
        key_type, key_text = public.split()[:2]
        daemon_command = next(
            line.split(None, 1)[1] for line in daemon_block.splitlines() if "AuthorizedKeysCommand " in line
        )
        client = [
            *daemon_command.replace("%u", account).replace("%t", key_type).replace("%k", key_text).split()
        ]  # no spaces in these paths
        in_process = [str(program), "--config", str(config), "authorized-keys", account, key_type, key_text]
        floor = base / "floor.py"
        stored = 'restrict,command="nxauth login" ' + public
        floor.write_text(f"import posix\nposix.write(1, {(stored + chr(10)).encode()!r})\nposix._exit(0)\n")
        floor.chmod(0o644)
        interpreter = daemon_command.split()[0]
        floor_block = daemon_block.replace(daemon_command, f"{interpreter} -I -S {floor} %u %t %k")
        runs = max(args.runs, 20)

        def run(command: list[str], expect: str | None = None) -> Callable[[], object]:
            def once() -> None:
                result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
                if expect is not None and expect not in result.stdout:
                    raise RuntimeError(f"{command[:4]}...: no key line printed: {result.stderr}")

            return once

        in_process_name = f"sshd + nxauth authorized-keys in-process, keystore of {args.keys:,}"
        daemon_name = f"sshd + authorized-keys-daemon client, keystore of {args.keys:,}"
        floor_name = "control: sshd + a python -I -S command that only prints the line"
        setups = {
            "baseline: sshd, 1-line authorized_keys": (
                f"Match User {account}\n    AuthorizedKeysFile {one}\n    ForceCommand /bin/true\n",
                "",
            ),
            f"sshd, {args.keys:,}-line authorized_keys": (
                f"Match User {account}\n    AuthorizedKeysFile {big}\n    ForceCommand /bin/true\n",
                "",
            ),
            in_process_name: (block.replace(forced, "ForceCommand /bin/true"), ""),
            daemon_name: (daemon_block.replace(forced, "ForceCommand /bin/true"), ""),
            floor_name: (floor_block.replace(forced, "ForceCommand /bin/true"), ""),
            "whole two-stage login through the daemon (+ nxauth login, argon2id, session command)": (
                daemon_block,
                f"bench\n{PASSWORD}\n",
            ),
        }
        with contextlib.ExitStack() as stack:
            stack.enter_context(throwaway_account(account, base))
            subprocess.run(["chown", "-R", account, str(state)], check=True)
            cannot = account_cannot_run(account, program)
            if cannot is not None:
                print(f"skipped: the transport account cannot run nxauth: {cannot}")
                return 0
            stack.enter_context(KeyDaemon(program, config, account, socket_path))
            logins: dict[str, Callable[[], object]] = {}
            for name, (extra, stdin) in setups.items():
                sshd = stack.enter_context(running_sshd(extra, account=account, create_account=False))
                logins[name] = lambda sshd=sshd, stdin=stdin: ssh(sshd, keys / "id", stdin)
            print(f"timing {len(logins)} sshd set-ups in turn, {args.runs} rounds ...", flush=True)
            results = interleaved_medians(logins, args.runs)
            helper = "import cryptography.hazmat.primitives.asymmetric.ed25519, pluggy, passlib"
            single = interleaved_medians(
                {
                    "client": run([*as_account(account), *client], key_text),
                    "in-process": run([*as_account(account), *in_process], key_text),
                    "bare": run([*as_account(account), sys.executable, "-c", "pass"]),
                    "bare -I -S": run([*as_account(account), sys.executable, "-I", "-S", "-c", "pass"]),
                    "helper": run([*as_account(account), sys.executable, "-c", helper]),
                },
                runs,
            )

    baseline = next(iter(results.values()))
    print()
    for name, value in results.items():
        print(f"{name:<86} {value:8.1f} ms  ratio {value / baseline:5.2f}")
    print(
        f"\nauthorized-keys-daemon vs one-line file: ratio {results[daemon_name] / baseline:.2f} "
        f"(target <= {TARGET_RATIO}); in-process nxauth authorized-keys: {results[in_process_name] / baseline:.2f}; "
        f"the floor of a Python command: {results[floor_name] / baseline:.2f}"
    )
    print(
        f"one AuthorizedKeysCommand run as the account: daemon client {single['client']:.1f} ms "
        f"(target <= {TARGET_MS:.0f} ms); in-process nxauth authorized-keys {single['in-process']:.1f} ms; "
        f"python -c pass {single['bare']:.1f} ms, with -I -S {single['bare -I -S']:.1f} ms; "
        f"a helper importing cryptography+pluggy+passlib {single['helper']:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
