"""Several servers, dead and hung ones, against real slapd processes: a
server stopped mid-run (logins continue through the next), a server frozen
with SIGSTOP (the login is denied within the timeout, nothing hangs), a
hang during the TLS handshake (the next server answers within the same
login), dead servers retried after their delay, round robin, referrals."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nxauth import Decision, Reason, Secret, Verdict
from nxauth.backends.ldap.connection import ServerSet, ServerSpec
from nxauth.testing import make_attempt, make_identity
from tests.support.ldap import build_backend
from tests.support.slapd import (
    PASSWORDS,
    PEOPLE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    Slapd,
    TlsFiles,
    directory_ldif,
    remote_ldif,
    slapd_missing,
)

pytest.importorskip("ldap3")
pytestmark = pytest.mark.skipif(slapd_missing() is not None, reason=f"slapd is not usable: {slapd_missing()}")

SEARCH = {"user_base": PEOPLE, "bind_dn": SERVICE_DN, "bind_password": Secret(SERVICE_PASSWORD)}


@pytest.fixture
def pair(tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles) -> Iterator[tuple[Slapd, Slapd]]:
    """Two servers with the same directory (fresh for each test: they get stopped)."""
    first = Slapd(tmp_path_factory.mktemp("first"), ldif=directory_ldif(), tls=tls)
    second = Slapd(tmp_path_factory.mktemp("second"), ldif=directory_ldif(), tls=tls)
    try:
        first.start()
        second.start()
        yield first, second
    finally:
        first.stop()
        second.stop()


@pytest.fixture
def backends() -> Iterator[list[Any]]:
    built: list[Any] = []
    yield built
    for backend in built:
        backend.close()


def make(built: list[Any], **options: Any) -> Any:
    backend = build_backend(options)
    built.append(backend)
    return backend


def login(backend: Any, username: str = "alice") -> tuple[Verdict, float]:
    start = time.monotonic()
    verdict = backend.authenticate(make_attempt(username, PASSWORDS[username]))
    return verdict, time.monotonic() - start


def test_logins_continue_when_the_first_server_stops(pair: tuple[Slapd, Slapd], backends: list[Any]) -> None:
    first, second = pair
    backend = make(backends, uri=[first.ldap_uri, second.ldap_uri], insecure=True, pool_size=4, **SEARCH)
    results: list[Verdict] = []
    lock = threading.Lock()
    done = threading.Event()

    def worker() -> None:
        while not done.is_set():
            verdict, _ = login(backend, "bob")
            with lock:
                results.append(verdict)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 20
        while len(results) < 200 and time.monotonic() < deadline:
            time.sleep(0.005)
        first.stop()  # mid-run
        stopped_at = len(results)
        while len(results) < stopped_at + 300 and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        done.set()
        for thread in threads:
            thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    failures = [v for v in results if not v.allowed]
    assert len(results) >= stopped_at + 300
    assert failures == [], failures[:3]
    assert backend._servers.is_dead(backend.settings.servers[0])


@pytest.mark.parametrize("warm", [True, False], ids=["pooled-connection", "new-connection"])
def test_a_hung_server_denies_within_the_timeout(pair: tuple[Slapd, Slapd], backends: list[Any], warm: bool) -> None:
    first, _ = pair
    backend = make(backends, uri=first.ldap_uri, insecure=True, operation_timeout=0.5, retry_dead_after=0.1, **SEARCH)
    if warm:
        assert login(backend)[0].allowed
    first.pause()
    outcomes: list[tuple[Verdict, float]] = []

    def worker() -> None:
        outcomes.append(login(backend))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5)
        assert not any(thread.is_alive() for thread in threads), "a login hangs"
    finally:
        first.resume()
    assert len(outcomes) == 4
    for verdict, elapsed in outcomes:
        assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.TIMEOUT)
        assert elapsed < 0.5 + 0.4
    time.sleep(0.15)
    assert login(backend)[0].allowed  # the server is back and tried again


@pytest.mark.parametrize("warm", [True, False], ids=["pooled-connection", "new-connection"])
def test_a_hung_first_server_then_the_second_answers(
    pair: tuple[Slapd, Slapd], backends: list[Any], warm: bool
) -> None:
    first, second = pair
    backend = make(backends, uri=[first.ldap_uri, second.ldap_uri], insecure=True, operation_timeout=0.5, **SEARCH)
    if warm:
        assert login(backend)[0].allowed  # pooled connections to the first server
    first.pause()
    try:
        verdict, elapsed = login(backend)
        assert (verdict.reason, elapsed < 0.9) == (Reason.TIMEOUT, True)
        for _ in range(5):
            verdict, elapsed = login(backend)
            assert verdict.allowed
            assert elapsed < 0.3
    finally:
        first.resume()


def test_a_hang_in_the_tls_handshake_fails_over_within_the_login(
    pair: tuple[Slapd, Slapd], tls: TlsFiles, backends: list[Any]
) -> None:
    first, second = pair
    backend = make(
        backends,
        uri=[first.ldaps_uri, second.ldaps_uri],
        ca_file=str(tls.ca_cert),
        connect_timeout=0.3,
        operation_timeout=3,
        **SEARCH,
    )
    first.pause()
    try:
        verdict, elapsed = login(backend)
    finally:
        first.resume()
    assert verdict.allowed
    assert 0.25 < elapsed < 1.5


def test_a_dead_server_is_retried_after_the_delay(pair: tuple[Slapd, Slapd], backends: list[Any]) -> None:
    first, second = pair
    backend = make(
        backends,
        uri=[first.ldap_uri, second.ldap_uri],
        insecure=True,
        retry_dead_after=0.3,
        **SEARCH,
    )
    specs = backend.settings.servers
    first.stop()
    assert login(backend)[0].allowed  # through the second
    assert backend._servers.order() == [specs[1], specs[0]]
    time.sleep(0.35)
    assert backend._servers.order() == list(specs)
    first.start()
    second.stop()
    assert login(backend)[0].allowed  # through the first again
    assert backend.check_account(make_identity("alice")).allowed


def test_every_server_down_is_a_backend_error(
    pair: tuple[Slapd, Slapd], backends: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    first, second = pair
    backend = make(backends, uri=[first.ldap_uri, second.ldap_uri], insecure=True, **SEARCH)
    first.stop()
    second.stop()
    verdict, elapsed = login(backend)
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.BACKEND_ERROR)
    assert verdict.detail == "ldap-error"
    assert "no ldap server available" in caplog.text
    assert elapsed < 1


def test_round_robin_order() -> None:
    specs = [ServerSpec(f"ldap://s{i}:389", f"s{i}", 389, "none") for i in range(3)]
    now = [0.0]
    servers = ServerSet(specs, selection="round_robin", retry_after=10, clock=lambda: now[0])
    assert [servers.order()[0] for _ in range(4)] == [specs[0], specs[1], specs[2], specs[0]]
    servers.mark_dead(specs[2], "test")
    orders = [servers.order() for _ in range(3)]
    assert all(order[-1] == specs[2] for order in orders)  # dead ones last
    now[0] = 11.0
    assert specs[2] in [servers.order()[0] for _ in range(3)]
    first = ServerSet(specs, selection="first")
    assert [first.order()[0] for _ in range(3)] == [specs[0]] * 3


def test_round_robin_spreads_new_connections(pair: tuple[Slapd, Slapd], backends: list[Any]) -> None:
    first, second = pair
    backend = make(
        backends, uri=[first.ldap_uri, second.ldap_uri], insecure=True, server_selection="round_robin", **SEARCH
    )
    barrier = threading.Barrier(4)
    links: list[Any] = []

    def hold() -> None:
        def work(link: Any) -> None:
            links.append(link.spec)
            barrier.wait(5)  # four connections open at once

        deadline = time.monotonic() + 5
        backend._users.run(work, deadline)

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert set(links) == set(backend.settings.servers)


# ------------------------------------------------------------ referrals


@pytest.fixture
def referring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """A server whose ou=remote,ou=people refers to a second server holding remoteuser."""
    remote = Slapd(tmp_path_factory.mktemp("remote"), ldif=remote_ldif())
    remote.start()
    try:
        referral = f"{remote.ldap_uri}/ou=remote,ou=people,dc=example,dc=org"
        with Slapd(tmp_path_factory.mktemp("main"), ldif=directory_ldif(referral=referral)) as main:
            yield main
    finally:
        remote.stop()


@pytest.mark.parametrize(("referrals", "reason"), [(False, Reason.UNKNOWN_USER), (True, Reason.OK)])
def test_referrals_are_followed_only_when_enabled(
    referring: Slapd, backends: list[Any], referrals: bool, reason: Reason
) -> None:
    backend = make(backends, uri=referring.ldap_uri, insecure=True, referrals=referrals, **SEARCH)
    assert backend.check_account(make_identity("remoteuser")).reason is reason
    assert backend.check_account(make_identity("alice")).allowed
