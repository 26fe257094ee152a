"""The cold start of ``nxauth authorized-keys`` (no key daemon): the
process sshd starts for every key a client offers.

Measured in one run, round after round, every command once a round in
turn (so that the machine's drift hits each alike); medians of CPU time
(user + system, the kernel's accounting of the finished child) and of wall
time, and the median of the per-round ratios:

* ``nxauth authorized-keys`` over a keystore holding the key (the
  ``nxauth`` script beside the interpreter, as sshd runs it; ``-m nxauth``
  when there is none), with the default audit;
* the yardstick: the same interpreter, ``-I -c pass`` (the issue's
  ``python3 -I -c pass``; use a real interpreter, not a pyenv shim, whose
  shell wrapper costs more than Python);
* a floor: the same interpreter importing only the standard modules that
  any Python implementation of this job needs (``tomllib`` for the
  configuration, ``sqlite3`` for the keystore, ``hashlib`` for the
  fingerprint the audit event carries, ``logging`` for syslog);
* with ``--base PATH`` (a checkout of older nxauth, e.g. the tree before the
  refactor): the same launcher and interpreter with ``PATH/src`` first on
  ``PYTHONPATH``, over a keystore that code created.

    .venv/bin/python benchmarks/bench_cold_start.py [--runs 41] [--base /work/base]

Prints, never asserts (target: authorized-keys <= 2.5x ``-I -c pass``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.keys import TransportKey

TARGET_RATIO = 2.5
FLOOR_IMPORTS = "import tomllib, sqlite3, hashlib, logging"


def environment(pythonpath: str | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "NXAUTH_"))}
    if pythonpath:  # everything else as sshd would run it: no PYTHON* variables, bytecode cached
        env["PYTHONPATH"] = pythonpath
    return env


def deploy(root: Path, key: TransportKey, command: Sequence[str], env: dict[str, str]) -> Path:
    """A configuration with a state directory and the key in its keystore,
    written by the code that ``command`` runs."""
    root.mkdir(mode=0o700)
    config = root / "nxauth.toml"
    config.write_text(f'state_dir = "{root / "state"}"\n')
    public = root / "key.pub"
    public.write_text(key.line + "\n")
    subprocess.run(
        [*command, "--config", str(config), "keys", "add", str(public)], env=env, check=True, capture_output=True
    )
    return config


def run_once(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float, int]:
    """CPU seconds (user + system) and wall seconds of one run, and its status."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, wall, child.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=41, help="rounds (default: 41)")
    parser.add_argument("--base", type=Path, help="a checkout of older nxauth to compare with (its src/ is used)")
    args = parser.parse_args()

    python = sys.executable
    script = Path(python).with_name("nxauth")
    # the console script sshd runs (run by the interpreter, so that --base can
    # run the same launcher over older code on PYTHONPATH); -m without one
    nxauth = [python, str(script)] if script.exists() else [python, "-m", "nxauth"]
    key = TransportKey("bench@nxauth")
    key_type, key_text = key.line.split()[:2]
    with tempfile.TemporaryDirectory(prefix="nxauth-cold-") as tmp:
        env = environment()
        config = deploy(Path(tmp) / "main", key, nxauth, env)
        cases: dict[str, tuple[list[str], dict[str, str]]] = {
            "python -I -c pass": ([python, "-I", "-c", "pass"], env),
            "floor (stdlib it needs)": ([python, "-I", "-c", FLOOR_IMPORTS], env),
            "nxauth authorized-keys": (
                [*nxauth, "--config", str(config), "authorized-keys", "nx", key_type, key_text],
                env,
            ),
        }
        if args.base is not None:
            base_env = environment(str(args.base.resolve() / "src"))
            base_command = nxauth  # the same launcher: PYTHONPATH puts the older code first
            base_config = deploy(Path(tmp) / "base", key, base_command, base_env)
            cases["before (--base)"] = (
                [*base_command, "--config", str(base_config), "authorized-keys", "nx", key_type, key_text],
                base_env,
            )
        for name, (argv, case_env) in cases.items():  # warm: bytecode written, page cache filled
            if name.startswith(("nxauth", "before")):
                printed = subprocess.run(argv, env=case_env, capture_output=True, text=True, check=True).stdout
                if key_text not in printed:
                    raise SystemExit(f"{name}: the key was not accepted: {printed!r}")
            else:
                run_once(argv, case_env)

        cpu: dict[str, list[float]] = {name: [] for name in cases}
        wall: dict[str, list[float]] = {name: [] for name in cases}
        names = list(cases)
        for round_number in range(args.runs):
            shift = round_number % len(names)  # every order in turn: no case always follows the same one
            for name in names[shift:] + names[:shift]:
                seconds, elapsed, status = run_once(*cases[name])
                if status != 0:
                    raise SystemExit(f"{name} exited {status}")
                cpu[name].append(seconds)
                wall[name].append(elapsed)

    yardstick = "python -I -c pass"

    def ratio(samples: dict[str, list[float]], name: str, versus: str) -> float:
        """The median of the per-round ratios."""
        return statistics.median(a / b for a, b in zip(samples[name], samples[versus], strict=True))

    print(f"{python}, {args.runs} rounds; medians")
    print(f"{'':26} {'cpu ms':>8} {'wall ms':>8} {'cpu/pass':>9} {'wall/pass':>9}")
    for name in names:
        print(
            f"{name:26} {statistics.median(cpu[name]) * 1000:8.1f} {statistics.median(wall[name]) * 1000:8.1f}"
            f" {ratio(cpu, name, yardstick):9.2f} {ratio(wall, name, yardstick):9.2f}"
        )
    ours = "nxauth authorized-keys"
    print(f"\nauthorized-keys / python -I -c pass: {ratio(wall, ours, yardstick):.2f} (target <= {TARGET_RATIO})")
    print(f"floor / python -I -c pass: {ratio(wall, 'floor (stdlib it needs)', yardstick):.2f}")
    if args.base is not None:
        before = "before (--base)"
        print(
            f"authorized-keys / before: {ratio(wall, ours, before):.2f} wall, {ratio(cpu, ours, before):.2f} cpu"
            " (target <= 1.0)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
