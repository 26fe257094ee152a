"""The gate in front of ``login_async``'s threads (``session.workers``): a
login waiting for a thread holds none, clean sources go first, a wait that
runs out is an audited ``overloaded`` refusal that nothing counts, and a
cancelled wait leaves no trace.  Real logins, real threads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

import nxauth
from nxauth import AuthenticationFailed, Outcome, Reason
from nxauth.core.authenticator import runtime_of
from nxauth.testing import MemoryBackend, RecordingSink
from tests.unit.core.test_admission import Holder, wait_for


@pytest.fixture
def gated(make_auth: Callable[..., nxauth.Authenticator]) -> Callable[..., nxauth.Authenticator]:
    def build(workers: int = 1, wait: float = 10.0) -> nxauth.Authenticator:
        return make_auth(
            {"session": {"workers": workers}, "admission": {"wait": wait}, "throttle": {"enabled": False}},
            backends=None,
        )

    return build


def test_the_gate_has_the_workers_and_shares_the_penalties(gated: Callable[..., nxauth.Authenticator]) -> None:
    runtime = runtime_of(gated(workers=8))
    assert (runtime.login_gate.slots, runtime.login_gate.reserve) == (8, 2)
    runtime.admission.penalize(nxauth.Peer("192.0.2.1", 1), 3)
    assert runtime.login_gate.penalty(nxauth.Peer("192.0.2.1", 2)) == pytest.approx(3, rel=0.01)
    assert runtime.executor()._max_workers == 16  # half of it for stage 1, never taken by logins


def test_a_clean_login_overtakes_failing_ones_and_waiting_costs_no_thread(
    gated: Callable[..., nxauth.Authenticator], granted: Callable[..., nxauth.Session]
) -> None:
    auth = gated(workers=1)
    runtime = runtime_of(auth)
    gate = runtime.login_gate
    for n in range(200):
        runtime.admission.penalize(nxauth.Peer(f"192.0.2.{n % 250}", 1), 5)
    guessers = [granted(auth, (f"192.0.2.{n % 250}", 2000 + n)) for n in range(200)]
    alice = granted(auth, ("203.0.113.9", 2222))
    holder = Holder(gate, 1)
    order: list[str] = []

    async def run() -> None:
        async def guess(session: nxauth.Session) -> None:
            with pytest.raises(AuthenticationFailed):
                await session.login_async("mallory", "guess")
            order.append("guess")

        async def login() -> None:
            await alice.login_async("alice", "wonderland")
            order.append("alice")

        threads = threading.active_count()
        tasks = [asyncio.create_task(guess(session)) for session in guessers]
        while gate.waiting < len(guessers):
            await asyncio.sleep(0.01)
        assert threading.active_count() <= threads + 1, "200 waiting logins hold threads"
        tasks.append(asyncio.create_task(login()))
        while gate.waiting < len(guessers) + 1:
            await asyncio.sleep(0.01)
        await asyncio.get_running_loop().run_in_executor(None, holder.free)
        await asyncio.gather(*tasks)

    asyncio.run(run())
    assert order[0] == "alice"
    assert len(order) == 201
    assert (gate.running, gate.waiting) == (0, 0)


def test_a_wait_that_runs_out_is_an_audited_refusal_nothing_counts(
    gated: Callable[..., nxauth.Authenticator], granted: Callable[..., nxauth.Session], sink: RecordingSink
) -> None:
    auth = gated(workers=1, wait=0.05)
    gate = runtime_of(auth).login_gate
    session = granted(auth)
    holder = Holder(gate, 1)
    for _ in range(10):  # more than max_attempts (6): none is counted
        with pytest.raises(AuthenticationFailed) as info:
            asyncio.run(session.login_async("Alice", "wonderland"))
        assert info.value.reason is Reason.OVERLOADED
        event = sink.events[-1]
        assert (event.stage, event.outcome, event.reason, event.detail, event.username) == (
            2,
            Outcome.REFUSED,
            Reason.OVERLOADED,
            "workers-wait-exceeded",
            "alice",
        )
    holder.free()
    assert asyncio.run(session.login_async("alice", "wonderland")).username == "alice"


def test_a_cancelled_wait_leaves_the_queue_and_a_granted_one_gives_the_slot_back(
    gated: Callable[..., nxauth.Authenticator], granted: Callable[..., nxauth.Session]
) -> None:
    auth = gated(workers=1)
    gate = runtime_of(auth).login_gate

    async def run() -> None:
        holder = Holder(gate, 1)
        task = asyncio.create_task(granted(auth).login_async("alice", "wonderland"))
        while gate.waiting < 1:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (gate.running, gate.waiting) == (1, 0)
        await asyncio.get_running_loop().run_in_executor(None, holder.free)
        assert gate.running == 0

    asyncio.run(run())
    assert granted(auth).login("alice", "wonderland").username == "alice"


def test_stage_1_calls_run_while_every_login_thread_is_busy(
    make_auth: Callable[..., nxauth.Authenticator], granted: Callable[..., nxauth.Session]
) -> None:
    release = threading.Event()

    class Slow:
        def __init__(self) -> None:
            self.inner = MemoryBackend({"alice": "wonderland"})

        def authenticate(self, attempt: nxauth.Attempt) -> Any:
            release.wait(10)
            return self.inner.authenticate(attempt)

        def check_account(self, identity: nxauth.Identity) -> Any:
            return self.inner.check_account(identity)

    auth = make_auth({"session": {"workers": 2}, "throttle": {"enabled": False}}, backends={"mem": Slow()})
    runtime = runtime_of(auth)

    async def run() -> None:
        logins = [asyncio.create_task(granted(auth).login_async("alice", "wonderland")) for _ in range(5)]
        while runtime.login_gate.running < 2:
            await asyncio.sleep(0.005)
        # both login threads are in the backend: a stage-1 call still runs at once
        assert await asyncio.wait_for(asyncio.wrap_future(runtime.executor().submit(lambda: 42)), 2) == 42
        release.set()
        assert all(identity.username == "alice" for identity in await asyncio.gather(*logins))

    asyncio.run(run())
    wait_for(lambda: runtime.login_gate.running == 0)
