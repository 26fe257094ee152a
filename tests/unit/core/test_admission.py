"""The admission gate in front of password hashes (:class:`nxauth.Admission`):
its bound, its order (clean sources first, a source's own waiters behind each
other), its full queue and its time limit; with real threads, and a
hypothesis run of random workloads whose invariants must hold.  Then the
gate in a real login: the password database's hashes go through it, a
refusal is a deny ``overloaded`` that is audited and not counted, and
throttled attempts never reach it."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nxauth
from nxauth import Admission, AuthenticationFailed, Overloaded, Peer, Reason, Secret, UsageError
from nxauth.admission import default_slots, source_key
from nxauth.backends.passwords import PasswordsBackend
from nxauth.core.authenticator import runtime_of
from nxauth.testing import RecordingSink
from tests.conftest import PEER

CHEAP = {"time_cost": 1, "memory_cost": 8192}
PASSWORD = "wonderland-Rabbit-7"
DEFAULT_PEER = Peer(*PEER)


def peer(n: int) -> Peer:
    return Peer(f"192.0.2.{n}", 40000 + n)


class Holder:
    """Holds ``count`` slots of ``gate`` from threads until :meth:`free`."""

    def __init__(self, gate: Admission, count: int) -> None:
        self._go = threading.Event()
        self._held = threading.Barrier(count + 1)
        self.threads = [threading.Thread(target=self._hold, args=(gate,)) for _ in range(count)]
        for thread in self.threads:
            thread.start()
        self._held.wait(5)

    def _hold(self, gate: Admission) -> None:
        with gate.admit(peer(250)):
            self._held.wait(5)
            self._go.wait(10)

    def free(self) -> None:
        self._go.set()
        for thread in self.threads:
            thread.join(5)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.002)


def queue_in_order(
    gate: Admission, peers: list[Peer], order: list[int], *, wait: float = 5.0
) -> list[threading.Thread]:
    """One thread per peer, each queued (in this order) and recording its
    index when admitted; the slot is given back at once."""
    threads = []
    for index, who in enumerate(peers):

        def work(index: int = index, who: Peer = who) -> None:
            with gate.admit(who, wait=wait):
                order.append(index)

        thread = threading.Thread(target=work)
        before = gate.waiting
        thread.start()
        wait_for(lambda before=before: gate.waiting == before + 1)
        threads.append(thread)
    return threads


# ------------------------------------------------------------ the gate alone


def test_defaults_and_bad_arguments() -> None:
    gate = Admission()
    assert gate.slots == default_slots() >= 1
    assert gate.reserve == (max(1, gate.slots // 4) if gate.slots >= 2 else 0)
    assert (gate.max_waiting, gate.wait, gate.running, gate.waiting) == (256, 5.0, 0, 0)
    assert "slots=" in repr(gate)
    for kwargs in ({"slots": -1}, {"slots": True}, {"max_waiting": -1}, {"wait": 0}, {"halflife": float("nan")}):
        with pytest.raises(UsageError):
            Admission(**kwargs)  # type: ignore[arg-type]


def test_no_more_than_slots_run_at_once_with_real_threads() -> None:
    gate = Admission(3, max_waiting=100, wait=10)
    lock = threading.Lock()
    running, peak = 0, 0

    def work(n: int) -> None:
        nonlocal running, peak
        with gate.admit(peer(n % 7)):
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.002)
            with lock:
                running -= 1

    threads = [threading.Thread(target=work, args=(n,)) for n in range(60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert peak == 3
    assert (gate.running, gate.waiting) == (0, 0)


def test_a_clean_source_goes_before_failing_ones() -> None:
    gate = Admission(1, wait=10)
    for n in range(1, 6):
        for _ in range(n):
            gate.penalize(peer(n))
    holder = Holder(gate, 1)
    order: list[int] = []
    # five failing sources queue first, the clean one last: it is served first,
    # then the others by their penalty, least first
    threads = queue_in_order(gate, [peer(5), peer(3), peer(1), peer(4), peer(2), peer(9)], order)
    holder.free()
    for thread in threads:
        thread.join(5)
    assert order == [5, 2, 4, 1, 3, 0]


def test_a_source_with_many_waiters_does_not_starve_one_with_few() -> None:
    gate = Admission(1, wait=10)
    holder = Holder(gate, 1)
    order: list[int] = []
    # one address sends eight attempts at once, then another sends one
    threads = queue_in_order(gate, [peer(1)] * 8 + [peer(2)], order)
    holder.free()
    for thread in threads:
        thread.join(5)
    assert order.index(8) <= 1, order  # the newcomer waits behind at most one of the flood
    assert sorted(order[:2]) == [0, 8]


def test_ties_are_served_in_arrival_order() -> None:
    gate = Admission(1, wait=10)
    holder = Holder(gate, 1)
    order: list[int] = []
    threads = queue_in_order(gate, [peer(n) for n in range(10, 20)], order)
    holder.free()
    for thread in threads:
        thread.join(5)
    assert order == list(range(10))


def test_reserved_slots_are_for_clean_sources_only() -> None:
    gate = Admission(3, reserve=1, wait=10)
    assert (gate.slots, gate.reserve) == (3, 1)
    for n in (1, 2, 3):
        gate.penalize(peer(n), 5)
    holder = Holder(gate, 1)  # peer(250): clean
    entered: list[int] = []
    done = threading.Event()

    def dirty(n: int) -> None:
        with gate.admit(peer(n)):
            entered.append(n)
            done.wait(10)

    first = threading.Thread(target=dirty, args=(1,))
    first.start()
    wait_for(lambda: entered == [1])
    # two of three slots are taken; the third is reserved: a failing source waits for it...
    second = threading.Thread(target=dirty, args=(2,))
    second.start()
    wait_for(lambda: gate.waiting == 1)
    assert gate.running == 2
    # ...and a clean one takes it at once
    with gate.admit(peer(9), wait=0.5):
        assert gate.running == 3
    # the reserved slot freed again is not handed to the failing waiter
    assert (gate.running, gate.waiting) == (2, 1)
    holder.free()  # an open slot: now it is
    wait_for(lambda: entered == [1, 2])
    done.set()
    for thread in (first, second):
        thread.join(5)
    assert (gate.running, gate.waiting) == (0, 0)


def test_one_mistyped_password_leaves_a_source_clean() -> None:
    gate = Admission(2, reserve=1)
    gate.penalize(peer(1))
    holder = Holder(gate, 1)
    with gate.admit(peer(1), wait=0.01):  # the reserved slot
        assert gate.running == 2
    holder.free()


def test_reserve_must_leave_an_open_slot() -> None:
    assert Admission(1).reserve == 0
    assert Admission(2).reserve == 1
    assert Admission(16).reserve == 4
    for bad in (2, -1, True):
        with pytest.raises(UsageError):
            Admission(2, reserve=bad)


def test_full_queue_refuses_a_worse_newcomer_and_drops_the_worst_for_a_better_one() -> None:
    gate = Admission(1, max_waiting=2, wait=10)
    for _ in range(3):
        gate.penalize(peer(1))
    gate.penalize(peer(2))
    holder = Holder(gate, 1)
    results: dict[str, str] = {}

    def waiter(name: str, who: Peer) -> None:
        try:
            with gate.admit(who):
                results[name] = "admitted"
        except Overloaded as exc:
            results[name] = exc.word

    worst = threading.Thread(target=waiter, args=("worst", peer(1)))
    worst.start()
    wait_for(lambda: gate.waiting == 1)
    middle = threading.Thread(target=waiter, args=("middle", peer(2)))
    middle.start()
    wait_for(lambda: gate.waiting == 2)
    # a newcomer worse than every waiter: refused at once, nobody dropped
    gate.penalize(peer(3), 10)
    with pytest.raises(Overloaded) as info, gate.admit(peer(3)):
        pytest.fail("admitted past a full queue")
    assert info.value.word == "queue-full"
    assert str(info.value) == "too busy to check now (queue-full)"
    # a clean newcomer takes the worst waiter's place
    clean = threading.Thread(target=waiter, args=("clean", peer(4)))
    clean.start()
    worst.join(5)
    assert results == {"worst": "queue-full"}
    assert gate.waiting == 2
    holder.free()
    for thread in (middle, clean):
        thread.join(5)
    assert results == {"worst": "queue-full", "middle": "admitted", "clean": "admitted"}
    assert (gate.running, gate.waiting) == (0, 0)


def test_no_queue_refuses_at_once_when_busy() -> None:
    gate = Admission(1, max_waiting=0)
    holder = Holder(gate, 1)
    with pytest.raises(Overloaded) as info, gate.admit(peer(1)):
        pass
    assert info.value.word == "queue-full"
    holder.free()
    with gate.admit(peer(1)):
        assert gate.running == 1


def test_a_waiter_gives_up_after_its_wait_and_leaves_no_trace() -> None:
    gate = Admission(1, wait=0.05)
    holder = Holder(gate, 1)
    start = time.monotonic()
    with pytest.raises(Overloaded) as info, gate.admit(peer(1)):
        pass
    assert info.value.word == "wait-exceeded"
    assert 0.04 <= time.monotonic() - start < 2
    assert gate.waiting == 0
    holder.free()
    assert (gate.running, gate.waiting) == (0, 0)


def test_penalties_decay_by_their_halflife_and_the_book_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    gate = Admission(1, halflife=60, clock=lambda: now[0])
    for _ in range(8):
        gate.penalize(peer(1))
    assert gate.penalty(peer(1)) == 8
    now[0] += 60
    assert gate.penalty(peer(1)) == pytest.approx(4)
    now[0] += 120
    assert gate.penalty(peer(1)) == pytest.approx(1)
    assert gate.penalty(peer(2)) == 0
    monkeypatch.setattr("nxauth.admission.MAX_SOURCES", 10)
    for n in range(100):
        gate.penalize(Peer(f"198.51.100.{n}", 1), 1 + n / 100)
    assert len(gate._book) <= 11
    assert gate.penalty(Peer("198.51.100.99", 1)) > 0, "the worst offenders are the ones kept"


def test_sources_are_the_throttles() -> None:
    assert Admission.source_of(Peer("2001:db8::1", 1)) == Admission.source_of(Peer("2001:db8::ffff", 2))
    assert Admission.source_of(Peer("2001:db8:0:1::1", 1)) != Admission.source_of(Peer("2001:db8::1", 1))
    assert Admission.source_of(Peer("::ffff:192.0.2.1", 1)) == source_key("192.0.2.1") == "addr:192.0.2.1"
    assert Admission.source_of(None) == "host:-"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    slots=st.integers(1, 4),
    reserved=st.integers(0, 3),
    max_waiting=st.integers(0, 6),
    jobs=st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from([0.001, 0.02, 5.0]), st.integers(0, 3)), min_size=1, max_size=24
    ),
)
def test_random_workloads_keep_the_invariants(
    slots: int, reserved: int, max_waiting: int, jobs: list[tuple[int, float, int]]
) -> None:
    """Whatever the mix of sources, waits and penalties: never more than
    ``slots`` at once, every caller either admitted or refused with a word,
    and the gate empty at the end (no slot lost, no waiter left)."""
    gate = Admission(slots, reserve=min(reserved, slots - 1), max_waiting=max_waiting, wait=5)
    lock = threading.Lock()
    state = {"running": 0, "peak": 0}
    outcomes: list[str] = []
    rng = random.Random(len(jobs))

    def job(source: int, wait: float, penalty: int) -> None:
        if penalty:
            gate.penalize(peer(source), penalty)
        try:
            with gate.admit(peer(source), wait=wait):
                with lock:
                    state["running"] += 1
                    state["peak"] = max(state["peak"], state["running"])
                time.sleep(rng.choice((0, 0.001, 0.003)))
                with lock:
                    state["running"] -= 1
            outcome = "admitted"
        except Overloaded as exc:
            outcome = exc.word
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=job, args=spec) for spec in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(outcomes) == len(jobs)
    assert set(outcomes) <= {"admitted", "queue-full", "wait-exceeded"}
    assert state["peak"] <= slots
    assert outcomes.count("admitted") >= 1  # the first comes to an empty gate
    assert (gate.running, gate.waiting, gate._queued) == (0, 0, {})


# ------------------------------------------------------------ in a login


@pytest.fixture
def make_passwords_auth(make_auth: Callable[..., nxauth.Authenticator]) -> Callable[..., nxauth.Authenticator]:
    def build(admission: dict[str, Any], throttle: dict[str, Any] | None = None) -> nxauth.Authenticator:
        auth = make_auth(
            {
                "backends": {"passwords": dict(CHEAP)},
                "auth": [{"use": "passwords"}],
                "account": [{"use": "users"}],
                "admission": admission,
                "throttle": throttle or {"max_user_failures": 3},
            }
        )
        backend = auth.backends["passwords"]
        assert isinstance(backend, PasswordsBackend)
        backend.users.add("alice", password_hash=backend.hasher.hash(Secret(PASSWORD)))
        return auth

    return build


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every hash the password database checks (a spy, the real hash runs)."""
    from nxauth.backends.hashing import PasswordHasher

    calls: list[str] = []
    real_verify, real_dummy = PasswordHasher.verify, PasswordHasher.dummy_verify

    def verify(self: PasswordHasher, password: Secret, stored: str) -> Any:
        calls.append("verify")
        return real_verify(self, password, stored)

    def dummy(self: PasswordHasher, password: Secret) -> None:
        calls.append("dummy")
        real_dummy(self, password)

    monkeypatch.setattr(PasswordHasher, "verify", verify)
    monkeypatch.setattr(PasswordHasher, "dummy_verify", dummy)
    yield calls


def test_the_configuration_builds_the_gate_every_backend_shares(
    make_passwords_auth: Callable[..., nxauth.Authenticator],
) -> None:
    auth = make_passwords_auth({"hashes": 3, "reserve": 2, "queue": 7, "wait": 1.5, "penalty_halflife": 30})
    gate = runtime_of(auth).admission
    assert (gate.slots, gate.reserve, gate.max_waiting, gate.wait, gate.halflife) == (3, 2, 7, 1.5, 30)
    assert auth.backends["passwords"].admission is gate  # type: ignore[attr-defined]


def test_a_reserve_the_cores_cannot_leave_open_is_a_config_error(
    make_passwords_auth: Callable[..., nxauth.Authenticator],
) -> None:
    with pytest.raises(nxauth.ConfigError) as info:
        make_passwords_auth({"hashes": 2, "reserve": 2})
    assert "admission.reserve" in str(info.value)


def test_a_refused_login_is_denied_overloaded_audited_and_not_counted(
    make_passwords_auth: Callable[..., nxauth.Authenticator],
    granted: Callable[..., nxauth.Session],
    sink: RecordingSink,
    hashes: list[str],
) -> None:
    auth = make_passwords_auth({"hashes": 1, "queue": 0}, {"max_user_failures": 1})
    gate = runtime_of(auth).admission
    holder = Holder(gate, 1)
    for word in ("queue-full",) * 3:  # past the throttle's limit of 1: none of these is a guess
        session = granted(auth)
        with pytest.raises(AuthenticationFailed) as info:
            session.login("alice", PASSWORD)
        assert info.value.reason is Reason.OVERLOADED
        assert str(info.value) == "authentication failed"
        event = sink.events[-1]
        assert (event.stage, event.reason, event.backend, event.detail) == (
            2,
            Reason.OVERLOADED,
            "passwords",
            f"admission-{word}",
        )
    assert hashes == []
    assert gate.penalty(DEFAULT_PEER) == 0, "an overloaded deny is not the source's failure"
    holder.free()
    assert granted(auth).login("alice", PASSWORD).username == "alice"  # not locked out: nothing was counted
    assert hashes == ["verify"]


def test_a_login_waits_its_turn_then_succeeds(
    make_passwords_auth: Callable[..., nxauth.Authenticator], granted: Callable[..., nxauth.Session]
) -> None:
    auth = make_passwords_auth({"hashes": 1, "wait": 10})
    gate = runtime_of(auth).admission
    holder = Holder(gate, 1)
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(granted(auth).login("alice", PASSWORD).username))
    thread.start()
    wait_for(lambda: gate.waiting == 1)
    assert result == []
    holder.free()
    thread.join(5)
    assert result == ["alice"]


def test_wait_exceeded_in_a_login(
    make_passwords_auth: Callable[..., nxauth.Authenticator],
    granted: Callable[..., nxauth.Session],
    sink: RecordingSink,
) -> None:
    auth = make_passwords_auth({"hashes": 1, "wait": 0.05})
    holder = Holder(runtime_of(auth).admission, 1)
    with pytest.raises(AuthenticationFailed):
        granted(auth).login("mallory", "guess")
    holder.free()
    assert (sink.events[-1].reason, sink.events[-1].detail) == (Reason.OVERLOADED, "admission-wait-exceeded")


def test_wrong_guesses_penalize_their_source_and_locked_attempts_never_hash(
    make_passwords_auth: Callable[..., nxauth.Authenticator],
    granted: Callable[..., nxauth.Session],
    sink: RecordingSink,
    hashes: list[str],
) -> None:
    auth = make_passwords_auth({"hashes": 1}, {"max_user_failures": 3})
    gate = runtime_of(auth).admission
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            granted(auth).login("alice", "wrong")
    assert hashes == ["verify"] * 3
    assert gate.penalty(DEFAULT_PEER) == pytest.approx(3, rel=0.01)
    for _ in range(20):  # locked out now: refused before the backends, no hash
        with pytest.raises(AuthenticationFailed) as info:
            granted(auth).login("alice", PASSWORD)
        assert info.value.reason is Reason.LOCKED_OUT
    assert hashes == ["verify"] * 3
    assert gate.penalty(DEFAULT_PEER) > 20
    with pytest.raises(AuthenticationFailed):
        granted(auth).login("bad\x00name", "guess")
    assert hashes == ["verify"] * 3
    assert sink.events[-1].reason is Reason.INVALID_USERNAME


def test_a_clean_login_overtakes_a_flood_of_failing_ones(
    make_passwords_auth: Callable[..., nxauth.Authenticator], granted: Callable[..., nxauth.Session]
) -> None:
    """Real logins on real threads: sixteen guessers from sixteen failing
    addresses queue for one hash slot; alice, from a clean address, comes
    last and is served next."""
    auth = make_passwords_auth({"hashes": 1, "wait": 30}, {"enabled": False})
    gate = runtime_of(auth).admission
    for n in range(16):
        gate.penalize(peer(n))
    holder = Holder(gate, 1)
    order: list[str] = []
    lock = threading.Lock()

    def guess(n: int) -> None:
        with pytest.raises(AuthenticationFailed):
            granted(auth, (f"192.0.2.{n}", 2222)).login(f"user{n}", "guess")
        with lock:
            order.append(f"guess{n}")

    def alice() -> None:
        granted(auth, ("203.0.113.5", 2222)).login("alice", PASSWORD)
        with lock:
            order.append("alice")

    threads = []
    for n in range(16):
        threads.append(threading.Thread(target=guess, args=(n,)))
        threads[-1].start()
        wait_for(lambda n=n: gate.waiting == n + 1)
    threads.append(threading.Thread(target=alice))
    threads[-1].start()
    wait_for(lambda: gate.waiting == 17)
    holder.free()
    for thread in threads:
        thread.join(30)
    assert order[0] == "alice", order
    assert len(order) == 17
