"""The embedded server's limits before stage 2 (integrations/startups.py),
after sshd's MaxStartups, PerSourceMaxStartups, PerSourcePenalties and
LoginGraceTime: the counts and penalties alone (a fake clock and chance,
hypothesis for the counts), then against the real server over real TCP
connections from several loopback addresses, with asyncssh's client."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nxauth
from nxauth import Peer
from nxauth.config import ServerConfig, ThrottleConfig
from nxauth.core.throttle import Throttle
from nxauth.integrations.startups import Startups, Ticket
from tests.servers.test_asyncssh_server import Running, embedded, host_key, loop_thread  # noqa: F401
from tests.support.keys import TransportKey


def limits(**kwargs: Any) -> ServerConfig:
    base: dict[str, Any] = {"max_startups": (1000, 100, 1000), "per_source_max_startups": 0}
    base.update(kwargs)
    return ServerConfig(**base)


# ------------------------------------------------------------ the counts alone


def test_random_early_drop_between_start_and_full() -> None:
    chances = [0.0]
    startups = Startups(limits(max_startups=(2, 50, 4)), chance=lambda: chances[0])
    for n in (9, 10, 11):  # failing sources: the random early drop applies to them
        startups.penalise(Peer(f"192.0.2.{n}", 1), 1)
    held = [startups.admit(f"192.0.2.{n}") for n in range(2)]
    assert all(isinstance(t, Ticket) for t in held)
    # 2 open: a drop with probability 50%
    chances[0] = 0.49
    assert startups.admit("192.0.2.9") == "max-startups"
    chances[0] = 0.51
    held.append(startups.admit("192.0.2.9"))
    assert isinstance(held[-1], Ticket)
    # 3 open: 75%
    chances[0] = 0.74
    assert startups.admit("192.0.2.10") == "max-startups"
    chances[0] = 0.76
    held.append(startups.admit("192.0.2.10"))
    # 4 open = full: always
    chances[0] = 0.999
    assert startups.admit("192.0.2.11") == "max-startups"
    assert startups.unauthenticated == 4
    assert startups.dropped["max-startups"] == 3
    for ticket in held:
        assert isinstance(ticket, Ticket)
        ticket.leave()
        ticket.leave()  # once only
    assert startups.unauthenticated == 0


def test_a_clean_source_is_dropped_at_full_only() -> None:
    now = [100.0]
    startups = Startups(limits(max_startups=(2, 100, 4)), chance=lambda: 0.0, clock=lambda: now[0])
    held = [startups.admit("192.0.2.1"), startups.admit("192.0.2.2")]
    assert isinstance(startups.admit("192.0.2.3"), Ticket), "clean: past start, below full"
    startups.penalise(Peer("192.0.2.4", 1), 1)
    assert startups.admit("192.0.2.4") == "max-startups", "a penalty: not clean"
    now[0] += 2  # the penalty ran down
    assert isinstance(startups.admit("192.0.2.4"), Ticket)
    assert startups.admit("192.0.2.5") == "max-startups", "full"
    assert len(held) == 2 and startups.unauthenticated == 4


def test_per_source_limit_counts_an_ipv6_64_as_one_source() -> None:
    startups = Startups(limits(per_source_max_startups=2))
    a = [startups.admit("2001:db8::1"), startups.admit("2001:db8::2")]
    assert startups.admit("2001:db8::ffff") == "per-source-max-startups"
    assert isinstance(startups.admit("2001:db8:0:1::1"), Ticket)
    assert isinstance(startups.admit("192.0.2.1"), Ticket)
    a[0].leave()  # type: ignore[union-attr]
    assert isinstance(startups.admit("2001:db8::3"), Ticket)


def test_penalties_add_up_to_the_cap_block_above_min_and_run_down() -> None:
    now = [100.0]
    startups = Startups(limits(penalty_min=15, penalty_max=60), clock=lambda: now[0])
    for _ in range(3):
        startups.penalise(Peer("192.0.2.7", 1), 5)
    assert startups.penalty("192.0.2.7") == 15
    assert isinstance(startups.admit("192.0.2.7"), Ticket), "at min, not above it: still admitted"
    startups.penalise(Peer("192.0.2.7", 1), 5)
    assert startups.admit("192.0.2.7") == "penalised"
    assert isinstance(startups.admit("192.0.2.8"), Ticket), "another source is not concerned"
    for _ in range(100):
        startups.penalise(Peer("192.0.2.7", 1), 5)
    assert startups.penalty("192.0.2.7") == 60
    now[0] += 44
    assert startups.admit("192.0.2.7") == "penalised"
    now[0] += 2  # 14 s left
    assert isinstance(startups.admit("192.0.2.7"), Ticket)
    assert startups.dropped["penalised"] == 2


def test_exempt_peers_and_disabled_penalties_are_never_penalised() -> None:
    throttle = Throttle(lambda: None, ThrottleConfig(exempt=(ipaddress.ip_network("10.0.0.0/8"),)))  # type: ignore[arg-type,return-value]
    startups = Startups(limits(), exempt=throttle.exempt)  # the server's: the throttle's own check
    startups.penalise(Peer.coerce(("10.1.2.3", 1)), 600)
    startups.penalise(Peer.coerce(("::ffff:10.1.2.4", 1)), 600)  # IPv4-mapped: the same address
    assert startups.penalty("10.1.2.3") == startups.penalty("10.1.2.4") == 0
    startups.penalise(Peer("192.0.2.1", 1), 600)
    assert startups.penalty("192.0.2.1") > 0
    off = Startups(limits(penalties=False))
    off.penalise(Peer("192.0.2.1", 1), 600)
    assert isinstance(off.admit("192.0.2.1"), Ticket)


def test_drops_are_logged_at_most_once_a_second(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    startups = Startups(limits(per_source_max_startups=1), clock=lambda: now[0])
    startups.admit("192.0.2.1")
    with caplog.at_level(logging.WARNING, logger="nxauth.server"):
        for _ in range(500):
            startups.admit("192.0.2.1")
        now[0] += 1.5
        startups.admit("192.0.2.1")
    lines = [r.getMessage() for r in caplog.records if r.name == "nxauth.server"]
    assert len(lines) == 2  # the first drop, then the rest a second later
    assert lines[0].startswith("dropped 1 connection(s) before the handshake (last: per-source-max-startups")
    assert lines[1].startswith("dropped 500 connection(s) before the handshake")


def test_the_penalty_book_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nxauth.integrations.startups.MAX_PENALISED", 100)
    startups = Startups(limits())
    for n in range(1000):
        startups.penalise(Peer(f"198.51.{n // 250}.{n % 250}", 1), 10 + n)
    assert len(startups._penalised) <= 101
    assert startups.penalty("198.51.3.249") > 0, "the longest penalties are the ones kept"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), max_size=60), st.integers(1, 6), st.integers(0, 3))
def test_counts_always_match_the_tickets_out(ops: list[tuple[bool, int]], total: int, per_source: int) -> None:
    startups = Startups(limits(max_startups=(total, 100, total), per_source_max_startups=per_source))
    out: list[Ticket] = []
    for admit, n in ops:
        if admit or not out:
            ticket = startups.admit(f"192.0.2.{n}")
            if isinstance(ticket, Ticket):
                out.append(ticket)
        else:
            out.pop(n % len(out)).leave()
        assert startups.unauthenticated == len(out) <= total
        per: dict[str, int] = {}
        for ticket in out:
            per[ticket.source] = per.get(ticket.source, 0) + 1
        assert startups._per_source == per
        assert not per_source or all(count <= per_source for count in per.values())


# ------------------------------------------------------------ the real server


def banner(port: int, source: str = "127.0.0.1", timeout: float = 5.0) -> tuple[socket.socket, bytes]:
    """A raw TCP connection from ``source``: what the server sends first
    (``b""`` when it closed the connection before its banner)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    try:
        data = sock.recv(64)
    except (ConnectionResetError, TimeoutError):
        data = b""
    return sock, data


def settle_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


def test_per_source_max_startups_drops_before_the_banner(embedded: Callable[..., Running]) -> None:  # noqa: F811
    srv = embedded({"server": {"per_source_max_startups": 2}})
    held = [banner(srv.port) for _ in range(2)]
    assert all(data.startswith(b"SSH-2.0-") for _, data in held)
    sock, data = banner(srv.port)
    assert data == b"", "a third connection from the source got the banner"
    sock.close()
    other, data = banner(srv.port, "127.0.0.2")
    assert data.startswith(b"SSH-2.0-")
    assert srv.server.startups.dropped["per-source-max-startups"] == 1
    assert not [e for e in srv.sink.events if e.detail != "closed-without-transport-grant"], "a drop is no event"
    for s, _ in (*held, (other, b"")):
        s.close()
    settle_until(lambda: srv.server.startups.unauthenticated == 0)
    sock, data = banner(srv.port)
    assert data.startswith(b"SSH-2.0-"), "the connections that ended left the count"
    sock.close()


def test_max_startups_counts_every_source(embedded: Callable[..., Running]) -> None:  # noqa: F811
    srv = embedded({"server": {"max_startups": 3}})
    held = [banner(srv.port, f"127.0.0.{n}") for n in range(1, 4)]
    assert all(data.startswith(b"SSH-2.0-") for _, data in held)
    sock, data = banner(srv.port, "127.0.0.9")
    assert data == b""
    for s, _ in (*held, (sock, b"")):
        s.close()


def login(port: int, key: TransportKey, source: str, answers: tuple[str, ...]) -> list[str]:
    """One connection with asyncssh's client from ``source``: the transport
    key, then ``answers`` to the server's prompts; the codes it was sent."""

    async def run() -> list[str]:
        conn = await asyncssh.connect(
            "127.0.0.1", port, local_addr=(source, 0), username="nx",
            client_keys=[asyncssh.import_private_key(key.private_openssh())], known_hosts=None, agent_path=None,
            config=None, password_auth=False, kbdint_auth=False, gss_auth=False, gss_kex=False,
        )  # fmt: skip
        codes: list[str] = []
        given = list(answers)
        async with conn:
            process = await conn.create_process(encoding=None)
            while raw := await process.stdout.readline():
                code = raw[4:7].decode()
                codes.append(code)
                if code in ("101", "102"):
                    process.stdin.write((given.pop(0) if given else "x").encode() + b"\n")
                elif code not in ("100", "401"):
                    break
        return codes

    return asyncio.run(asyncio.wait_for(run(), 30))


def test_a_source_that_keeps_failing_is_dropped_and_a_clean_one_is_not(
    embedded: Callable[..., Running],  # noqa: F811
    transport_key: TransportKey,
) -> None:
    srv = embedded({"server": {"penalty_authfail": 10, "penalty_min": 15}})
    for _ in range(2):  # six wrong passwords each, then 403: 10 s of penalty per connection
        assert login(srv.port, transport_key, "127.0.0.5", ("mallory", "guess") * 6)[-1] == "403"
    settle_until(lambda: srv.server.startups.penalty("127.0.0.5") > 15)
    sock, data = banner(srv.port, "127.0.0.5")
    assert data == b""
    sock.close()
    assert srv.server.startups.dropped["penalised"] == 1
    assert login(srv.port, transport_key, "127.0.0.6", ("alice", "wonderland"))[-1] == "200"
    assert srv.server.startups.penalty("127.0.0.6") == 0, "a connection that passed stage 2 adds no penalty"


def test_a_connection_that_passed_stage_2_leaves_the_count(
    embedded: Callable[..., Running],  # noqa: F811
    transport_key: TransportKey,
) -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def hold(identity: nxauth.Identity, process: Any) -> int:
        started.append(identity.username)
        await asyncio.wait_for(release.wait(), 20)
        return 0

    srv = embedded({"server": {"per_source_max_startups": 1}}, handler=hold)
    loop = srv.loop
    import threading

    done: list[list[str]] = []
    thread = threading.Thread(
        target=lambda: done.append(login(srv.port, transport_key, "127.0.0.7", ("alice", "wonderland")))
    )
    thread.start()
    settle_until(lambda: started == ["alice"])
    assert srv.server.startups.unauthenticated == 0
    sock, data = banner(srv.port, "127.0.0.7")  # the session runs; the source may connect again
    assert data.startswith(b"SSH-2.0-")
    sock.close()
    loop.run(_set(release))
    thread.join(20)
    assert done and done[0][-1] == "200"


async def _set(event: asyncio.Event) -> None:
    event.set()


def test_login_grace_time_closes_an_idle_connection_and_audits_it(
    embedded: Callable[..., Running],  # noqa: F811
) -> None:
    srv = embedded({"server": {"login_grace_time": 1}})
    sock, data = banner(srv.port, "127.0.0.8")
    assert data.startswith(b"SSH-2.0-")
    start = time.monotonic()
    sock.settimeout(10)
    while True:  # the server's key exchange offer, then the close
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
    assert 0.8 < time.monotonic() - start < 5
    sock.close()
    srv.settle()
    events = [(e.reason, e.detail) for e in srv.sink.events]
    assert events == [(nxauth.Reason.LOGIN_TIMEOUT, "login-grace-exceeded")]
    assert srv.server.startups.penalty("127.0.0.8") > 5, "penalty_grace (10 s)"


def test_the_configuration_reaches_the_server(embedded: Callable[..., Running], tmp_path: Path) -> None:  # noqa: F811
    srv = embedded({"server": {"max_startups": "5:40:50", "per_source_max_startups": 0, "penalties": False}})
    cfg = srv.server.startups.config
    assert (cfg.max_startups, cfg.per_source_max_startups, cfg.penalties) == ((5, 40, 50), 0, False)


def test_a_login_that_ends_after_the_grace_time_runs_no_session(
    embedded: Callable[..., Running],  # noqa: F811
    make_auth: Callable[..., nxauth.Authenticator],
    transport_key: TransportKey,
) -> None:
    """sshd's grace alarm ends the connection, whatever the login does after:
    a right password whose check ends past the grace time starts no session
    (the closed connection cancels the login, which takes its identity back)."""
    from nxauth.testing import MemoryBackend

    class Slow:
        inner = MemoryBackend({"alice": "wonderland"})

        def authenticate(self, attempt: nxauth.Attempt) -> nxauth.Verdict:
            time.sleep(1.5)
            return self.inner.authenticate(attempt)

        def check_account(self, identity: nxauth.Identity) -> nxauth.Verdict:
            return self.inner.check_account(identity)

    auth = make_auth({"server": {"login_grace_time": 1}}, backends={"mem": Slow()})
    srv = embedded(auth=auth)
    with contextlib.suppress(OSError, asyncssh.Error):  # what the client sees depends on the race
        login(srv.port, transport_key, "127.0.0.9", ("alice", "wonderland"))
    srv.settle()
    assert srv.identities == [], "the handler ran past the grace time"
