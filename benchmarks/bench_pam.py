"""A login through nxauth's pipeline with the ``pam`` backend against the same
python-pam call made directly: same PAM stack, same run.

Stacks: pam_matrix through pam_wrapper (no root needed) and, when run as
root, pam_unix with a throwaway system user (removed afterwards).  Both sides
load the same ``libpam_wrapper.so`` with the same service directory.

- direct: ``pam.authenticate(user, password, service=...)`` (python-pam 2.1:
  pam_authenticate, pam_acct_mgmt, pam_setcred on one handle);
- nxauth: ``session.login(user, password)`` (stage 2; stage 1 with a
  transport key is done before the clock starts) on an authenticator whose auth
  and account stacks are both ``pam`` (pam_authenticate and pam_acct_mgmt on
  one handle; the account role reuses that result), then the NSS lookup of
  the final name, with the throttle on (SQLite store) and the audit logger
  formatting every line.

The two sides alternate login by login; each login is timed on its own and
the medians are compared.  Target: ratio <= 1.05 for pam_unix.

    python benchmarks/bench_pam.py [--logins 2000] [--unix-logins 150]
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nxauth

TARGET_UNIX = 1.05
PEER = ("198.51.100.7", 52100)


def measure(
    label: str, state: Path, library: str, *, service: str, user: str, password: str, logins: int
) -> tuple[float, float]:
    import pam as python_pam

    from tests.support.keys import ListKeySource, TransportKey

    key = TransportKey()
    auth = nxauth.Authenticator(
        {
            "state_dir": str(state / service),
            "transport": {"key_sources": ["keys"]},
            "backends": {"pam": {"kind": "pam", "service": service, "library": library}},
            "auth": [{"use": "pam"}],
            "account": [{"use": "pam"}],
        },
        backends={"keys": ListKeySource(key.line)},
        entry_points=False,
    )

    def granted() -> nxauth.Session:  # stage 1, not timed
        session = auth.open_session(PEER)
        session.check_transport_key("nx", key.line)
        return session

    def direct() -> None:
        if not python_pam.authenticate(user, password, service=service):
            raise SystemExit(f"{label}: the direct python-pam login failed")

    def through_nxauth(session: nxauth.Session | None) -> None:
        assert session is not None
        session.login(user, password)

    def direct_call(session: nxauth.Session | None) -> None:
        direct()

    for _ in range(5):  # warm up: libraries, caches, the store
        direct()
        through_nxauth(granted())
    times: dict[Callable[[nxauth.Session | None], None], list[int]] = {direct_call: [], through_nxauth: []}
    for index in range(logins):
        order = (direct_call, through_nxauth) if index % 2 == 0 else (through_nxauth, direct_call)
        for call in order:
            session = granted() if call is through_nxauth else None
            start = time.perf_counter_ns()
            call(session)
            times[call].append(time.perf_counter_ns() - start)
    auth.close()
    return statistics.median(times[direct_call]) / 1000, statistics.median(times[through_nxauth]) / 1000


def report(label: str, logins: int, direct: float, pipeline: float, target: float | None) -> None:
    ratio = pipeline / direct
    verdict = "" if target is None else f"   (target <= {target:.2f}: {'met' if ratio <= target else 'NOT met'})"
    print(f"{label}  ({logins} logins each side, medians)")
    print(f"  python-pam direct:   {direct:10.1f} us/login")
    print(f"  through nxauth:      {pipeline:10.1f} us/login   (+{pipeline - direct:.1f} us)")
    print(f"  ratio:               {ratio:10.3f}{verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=2000, help="pam_matrix logins per side")
    parser.add_argument("--unix-logins", type=int, default=150, help="pam_unix logins per side (root only)")
    args = parser.parse_args()

    from tests.support.pam import (
        PamWrapper,
        Services,
        missing_pam_unix,
        missing_pam_wrapper,
        nss_users,
        point_python_pam_at,
        system_user,
    )

    reason = missing_pam_wrapper()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    audit = logging.getLogger("nxauth.audit")
    audit.setLevel(logging.INFO)
    audit.addHandler(logging.StreamHandler(io.StringIO()))
    audit.propagate = False

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        wrapper = PamWrapper(root / "pam")
        library = wrapper.activate()
        point_python_pam_at(library)
        (name,) = nss_users(1)
        wrapper.set_users({name: "matrix-Pw1"})
        direct, pipeline = measure(
            "pam_matrix", root, library, service=Services.MATRIX, user=name, password="matrix-Pw1", logins=args.logins
        )
        report("pam_matrix via pam_wrapper", args.logins, direct, pipeline, None)

        reason = missing_pam_unix()
        if reason is not None:
            print(f"pam_unix: skipped ({reason})")
            return 0
        with system_user("unix-Bench-Pw1") as user:
            direct, pipeline = measure(
                "pam_unix",
                root,
                library,
                service=Services.UNIX,
                user=user,
                password="unix-Bench-Pw1",
                logins=args.unix_logins,
            )
        report("pam_unix via pam_wrapper (throwaway user, yescrypt)", args.unix_logins, direct, pipeline, TARGET_UNIX)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
