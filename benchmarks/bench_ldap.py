"""LDAP logins per second: nxauth's ldap backend against the usual pattern.

    .venv/bin/python benchmarks/bench_ldap.py [--seconds 3] [--threads 8] [--users 1000] [--tls]

Starts its own slapd (tests/servers/slapd.py) on 127.0.0.1 with ``--users``
people, then measures, sequentially and with ``--threads`` threads, for
``--seconds`` each:

* ``usual pattern``: what most Python LDAP authenticators do per login with
  ldap3: a new connection, a service-account bind, a search for the user,
  a bind as the user, unbind.  (Server object made once, without the schema
  fetch, so it is not handicapped by that trap.)
* ``ldap3 bind, reused connection``: a reference point: ``rebind`` on one
  open ldap3 connection per thread (what a direct bind costs through ldap3).
* ``nxauth direct bind`` and ``nxauth search-then-bind``:
  ``LdapBackend.authenticate`` built from a config as the Authenticator
  builds it (pooled connections, ppolicy control on).

Every login must succeed (the users rotate; a failure is counted and
reported).  The usual pattern runs first: its new connection per login
leaves a socket in TIME_WAIT each time, and the TIME_WAIT count is printed
after every run; nxauth reuses its connections.  Ratios compare against the
usual pattern measured in the same run at the same concurrency.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import ldap3  # noqa: E402

import nxauth  # noqa: E402
from nxauth import Attempt, Secret  # noqa: E402
from tests.support.slapd import (  # noqa: E402
    PEOPLE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    Slapd,
    directory_ldif,
    make_tls_files,
    slapd_missing,
)

PASSWORD = "bulk-pw"


def time_wait_sockets() -> int:
    """Sockets in TIME_WAIT on this host (IPv4 and IPv6)."""
    count = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as handle:
                next(handle)
                count += sum(1 for line in handle if line.split()[3] == "06")
        except OSError:
            pass
    return count


def measure(make_login: Callable[[], Callable[[int], bool]], threads: int, seconds: float) -> tuple[float, int]:
    """Logins per second over ``seconds`` with ``threads`` threads (each
    with its own login function), and the number of failed logins."""
    counts = [0] * threads
    failures = [0] * threads
    start_gate = threading.Barrier(threads + 1)
    stop = threading.Event()

    def worker(index: int) -> None:
        login = make_login()
        login(index)  # warm up: connections opened before the clock starts
        start_gate.wait()
        n = index * 7919
        while not stop.is_set():
            if not login(n):
                failures[index] += 1
            counts[index] += 1
            n += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    start_gate.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in workers:
        thread.join()
    elapsed = time.perf_counter() - began
    return sum(counts) / elapsed, sum(failures)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--tls", action="store_true", help="LDAPS for every variant (default: plain LDAP on loopback)")
    args = parser.parse_args()
    missing = slapd_missing()
    if missing:
        print(f"cannot run: {missing}")
        return 2

    with tempfile.TemporaryDirectory(prefix="nxauth-bench-ldap-") as tmp:
        directory = Path(tmp)
        tls = make_tls_files(directory / "tls") if args.tls else None
        server = Slapd(directory / "slapd", ldif=directory_ldif(bulk_users=args.users, bulk_password=PASSWORD), tls=tls)
        server.start()
        try:
            return run(server, tls, args)
        finally:
            server.stop()


def run(server: Slapd, tls: Any, args: argparse.Namespace) -> int:
    users = [f"user{i:05d}" for i in range(args.users)]
    host, port = "127.0.0.1", (server.ldaps_port if tls else server.ldap_port)
    if tls:
        l3tls = ldap3.Tls(validate=2, ca_certs_file=str(tls.ca_cert))  # ssl.CERT_REQUIRED
        l3server = ldap3.Server(host, port=port, use_ssl=True, tls=l3tls, get_info=ldap3.NONE, connect_timeout=5)
    else:
        l3server = ldap3.Server(host, port=port, get_info=ldap3.NONE, connect_timeout=5)

    def usual() -> Callable[[int], bool]:
        def login(n: int) -> bool:
            conn = ldap3.Connection(l3server, user=SERVICE_DN, password=SERVICE_PASSWORD, receive_timeout=5)
            try:
                if not conn.bind():
                    return False
                uid = users[n % len(users)]
                conn.search(PEOPLE, f"(uid={ldap3.utils.conv.escape_filter_chars(uid)})", attributes=["uid"])
                if len(conn.entries) != 1:
                    return False
                return bool(conn.rebind(user=conn.entries[0].entry_dn, password=PASSWORD))
            finally:
                conn.unbind()

        return login

    def ldap3_reused() -> Callable[[int], bool]:
        conn = ldap3.Connection(l3server, receive_timeout=5)
        conn.open(read_server_info=False)

        def login(n: int) -> bool:
            return bool(conn.rebind(user=f"uid={users[n % len(users)]},{PEOPLE}", password=PASSWORD))

        return login

    common: dict[str, Any] = {"kind": "ldap", "uri": f"{'ldaps' if tls else 'ldap'}://{host}:{port}"}
    if tls:
        common["ca_file"] = str(tls.ca_cert)
    else:
        common["insecure"] = True
    auth = nxauth.Authenticator(
        {
            "state_dir": tempfile.mkdtemp(prefix="nxauth-bench-state-"),
            "backends": {
                "direct": {**common, "user_dn": f"uid={{username}},{PEOPLE}"},
                "search": {
                    **common,
                    "user_base": PEOPLE,
                    "bind_dn": SERVICE_DN,
                    "bind_password": Secret(SERVICE_PASSWORD),
                },
            },
            "auth": [{"use": "direct"}],
            "account": [{"use": "search"}],
        },
        entry_points=False,
    )
    secret = Secret(PASSWORD)

    def nxauth_login(name: str) -> Callable[[], Callable[[int], bool]]:
        backend = auth.backends[name]

        def make() -> Callable[[int], bool]:
            def login(n: int) -> bool:
                return bool(backend.authenticate(Attempt(users[n % len(users)], secret)).allowed)  # type: ignore[attr-defined]

            return login

        return make

    variants: list[tuple[str, Callable[[], Callable[[int], bool]]]] = [
        ("usual pattern (ldap3, new connection per login)", usual),
        ("ldap3 bind on a reused connection (reference)", ldap3_reused),
        ("nxauth direct bind", nxauth_login("direct")),
        ("nxauth search-then-bind", nxauth_login("search")),
    ]
    print(f"slapd {server.ldaps_uri if tls else server.ldap_uri}, {len(users)} users, {args.seconds:g} s per run")
    print(f"{'':50} {'sequential':>12} {f'{args.threads} threads':>12}   TIME_WAIT after")
    results: dict[str, tuple[float, float]] = {}
    failed = 0
    try:
        for label, make in variants:
            rates = []
            waits = []
            for threads in (1, args.threads):
                rate, failures = measure(make, threads, args.seconds)
                failed += failures
                if failures:
                    print(f"  !! {label}: {failures} failed logins with {threads} thread(s)")
                rates.append(rate)
                waits.append(time_wait_sockets())
            results[label] = (rates[0], rates[1])
            print(f"{label:50} {rates[0]:>10.0f}/s {rates[1]:>10.0f}/s   {waits[0]}, {waits[1]}")
    finally:
        auth.close()
    base = results[variants[0][0]]
    print()
    print(f"ratios against the usual pattern          {'sequential':>12} {f'{args.threads} threads':>12}   target")
    for label, target in (("nxauth direct bind", 5.0), ("nxauth search-then-bind", 2.5)):
        seq, par = results[label]
        ok = "ok" if min(seq / base[0], par / base[1]) >= target else "MISSED"
        print(f"{label:42} {seq / base[0]:>11.1f}x {par / base[1]:>11.1f}x   >= {target:g}x {ok}")
    if failed:
        print(f"{failed} logins failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
