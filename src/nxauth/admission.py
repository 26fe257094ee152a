"""Admission control for expensive work: a bounded number of password
hashes in flight, and a queue in front of them that serves the sources that
have not been failing first.

Why: every wrong password, known user or not, costs one full hash (about
25 ms of a core with the default argon2id parameters; an unknown user costs
a dummy hash, so that timing tells nothing).  Without a bound, a guesser
spread over many addresses, each under the throttle's per-source limit, keeps
every core busy and a legitimate login queues behind all of it.

How, in the spirit of sshd's ``MaxStartups`` and ``PerSourcePenalties``:

- at most ``slots`` pieces of work run at once (default: the cores this
  process may run on);
- beyond that, callers wait in a queue of at most ``max_waiting``; a free
  slot goes to the waiter of the lowest *priority*, ties to the earliest;
- a waiter's priority is its source's *penalty* (a count of its recent
  counted failures, halved every ``halflife`` seconds) plus the number of
  waiters its source has in the queue already: a source that keeps failing,
  or that sends many attempts at once, is served after one that does not —
  it cannot starve it, whether it uses one address or five hundred, as long
  as its addresses are the ones that fail;
- ``reserve`` of the slots are kept for *clean* sources (a penalty below
  :data:`CLEAN_BELOW`: a user who mistyped once stays clean): however many
  failing sources wait, a clean one finds a slot at once or next, and
  cores are left for the rest of the server (its event loop, stage 1);
- a full queue drops its worst waiter for a better newcomer, or refuses the
  newcomer (:class:`Overloaded`, ``queue-full``); a waiter still queued after
  ``wait`` seconds gives up (:class:`Overloaded`, ``wait-exceeded``).  The
  stack turns either into a deny with :attr:`nxauth.Reason.OVERLOADED`,
  audited and not counted by the throttle (no guess was judged).

A source is an IPv4 address or an IPv6 /64 (:func:`source_key`, the
throttle's own keys); a peer that is not an IP address shares one source.
Thread-safe; waiting blocks the calling thread (a worker of the login pool).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import itertools
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Final, final

from nxauth.errors import NxauthError, UsageError

if TYPE_CHECKING:
    import asyncio

    from nxauth.model import Peer

__all__ = ["Admission", "Overloaded", "default_slots", "source_key"]

#: The penalty book's size: past it, the sources with the smallest penalties
#: are forgotten (a forgotten source starts again from nothing, like a new one).
MAX_SOURCES: Final = 65_536
#: The source of a peer that is not an IP address.
NO_SOURCE: Final = "host:-"
#: A source whose penalty is below this is clean: it may use the reserved slots.
CLEAN_BELOW: Final = 2.0


@functools.lru_cache(maxsize=4096)
def source_key(host: str) -> str | None:
    """``addr:198.51.100.7`` for IPv4, ``net:2001:db8::/64`` for IPv6, ``None``
    when the host is not an IP address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"addr:{address.ipv4_mapped}"
        return f"net:{ipaddress.IPv6Network((address, 64), strict=False)}"
    return f"addr:{address}"


def default_reserve(slots: int) -> int:
    """The slots kept for clean sources by default: a quarter, at least one
    when there are two or more."""
    return max(1, slots // 4) if slots >= 2 else 0


def default_slots() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


@final
class Overloaded(NxauthError):
    """Expensive work refused for now by an :class:`Admission` gate.

    ``word`` says why: ``queue-full`` (no room to wait, or a better waiter
    took the place) or ``wait-exceeded`` (no slot came free in time).  Not a
    judgement of the password: the stack denies with ``Reason.OVERLOADED``,
    which the throttle does not count."""

    __module__ = "nxauth"

    def __init__(self, word: str) -> None:
        super().__init__(f"too busy to check now ({word})")
        self.word = word


@final
class _Book:
    """Sources' penalties (decayed counts of failures), shared by the gates of
    one authenticator.  Its own lock: a gate reads it under the gate's lock."""

    __slots__ = ("_clock", "_entries", "_lock", "halflife")

    def __init__(self, halflife: float, clock: Callable[[], float]) -> None:
        self.halflife = halflife
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, float]] = {}  # source -> (score, when)

    def __len__(self) -> int:
        return len(self._entries)

    def penalty(self, source: str) -> float:
        with self._lock:
            return self._decayed(source, self._clock())

    def _decayed(self, source: str, now: float) -> float:
        entry = self._entries.get(source)
        if entry is None:
            return 0.0
        score, when = entry
        return float(score * 0.5 ** (max(0.0, now - when) / self.halflife))

    def add(self, source: str, weight: float) -> None:
        with self._lock:
            now = self._clock()
            self._entries[source] = (self._decayed(source, now) + weight, now)
            if len(self._entries) > MAX_SOURCES:
                ranked = sorted(self._entries, key=lambda key: self._decayed(key, now))
                for key in ranked[: len(ranked) // 2]:  # forget the half with the smallest penalties
                    del self._entries[key]


@final
class _Waiter:
    __slots__ = ("clean", "event", "future", "granted", "loop", "priority", "refused", "seq", "source")

    def __init__(self, source: str, priority: float, seq: int, *, clean: bool) -> None:
        self.source = source
        self.clean = clean
        self.priority = priority
        self.seq = seq
        self.event = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None  # an async waiter's loop and future
        self.future: asyncio.Future[None] | None = None
        self.granted = False
        self.refused = False

    def wake(self) -> None:
        """Granted or refused (the caller holds the gate's lock): tell the waiter."""
        self.event.set()
        if self.loop is not None and self.future is not None:
            with contextlib.suppress(RuntimeError):  # a loop closed meanwhile: nobody waits any more
                self.loop.call_soon_threadsafe(_resolve, self.future)

    def rank(self) -> tuple[float, int]:
        return (self.priority, self.seq)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@final
class Admission:
    """A bounded, source-fair gate for expensive work (see the module docstring).

    ``slots``: how many run at once (0: :func:`default_slots`);
    ``reserve``: how many of them only clean sources may take (``None``:
    :func:`default_reserve`; at most ``slots - 1``);
    ``max_waiting``: how many may wait (0: none, a busy gate refuses at once);
    ``wait``: seconds a caller may wait; ``halflife``: seconds after which a
    source's penalty is halved.  ``shares``: another gate whose penalties
    this one reads and writes (its ``halflife`` and ``clock`` then apply).  Use :meth:`admit` around the work and
    :meth:`penalize` when a source's attempt failed.
    """

    __module__ = "nxauth"

    def __init__(
        self,
        slots: int = 0,
        *,
        reserve: int | None = None,
        max_waiting: int = 256,
        wait: float = 5.0,
        halflife: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        shares: Admission | None = None,
    ) -> None:
        for name, value, low, high in (("slots", slots, 0, 4096), ("max_waiting", max_waiting, 0, 65_536)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise UsageError(f"{name} must be an integer between {low} and {high}")
        for name, number in (("wait", wait), ("halflife", halflife)):
            if isinstance(number, bool) or not isinstance(number, int | float) or not number > 0:
                raise UsageError(f"{name} must be a positive number of seconds")
        self.slots = slots or default_slots()
        if reserve is None:
            reserve = default_reserve(self.slots)
        elif isinstance(reserve, bool) or not isinstance(reserve, int) or not 0 <= reserve < self.slots:
            raise UsageError(f"reserve must be an integer from 0 to slots - 1 ({self.slots - 1})")
        self.reserve = reserve
        #: slots that sources which are not clean may take together
        self._open = self.slots - reserve
        self.max_waiting = max_waiting
        self.wait = float(wait)
        self._lock = threading.Lock()
        self._running = 0
        self._waiters: dict[int, _Waiter] = {}
        self._queued: dict[str, int] = {}  # source -> waiters of that source
        self._book: _Book = shares._book if shares is not None else _Book(float(halflife), clock)
        self.halflife = self._book.halflife
        self._seq = itertools.count()

    def __repr__(self) -> str:
        return (
            f"Admission(slots={self.slots}, reserve={self.reserve}, max_waiting={self.max_waiting}, wait={self.wait:g})"
        )

    # ------------------------------------------------------------ state

    @property
    def running(self) -> int:
        """Pieces of work admitted and not yet finished."""
        return self._running

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot."""
        return len(self._waiters)

    @staticmethod
    def source_of(peer: Peer | None) -> str:
        """The source ``peer`` counts as (its throttle source key)."""
        if peer is None:
            return NO_SOURCE
        return source_key(peer.host) or NO_SOURCE

    def penalty(self, peer: Peer | None) -> float:
        """The source's current penalty (its decayed count of failures)."""
        return self._book.penalty(self.source_of(peer))

    def penalize(self, peer: Peer | None, weight: float = 1.0) -> None:
        """Record a failure of ``peer``'s source: its later work waits behind
        the work of sources that do not fail."""
        self._book.add(self.source_of(peer), weight)

    # ------------------------------------------------------------ the gate

    @contextlib.contextmanager
    def admit(self, peer: Peer | None, *, wait: float | None = None) -> Iterator[None]:
        """Hold one slot for the ``with`` block, waiting for it if need be
        (at most ``wait`` seconds, by default the gate's).  Raises
        :class:`Overloaded` when refused."""
        self._acquire(self.source_of(peer), self.wait if wait is None else wait)
        try:
            yield
        finally:
            self._release()

    @contextlib.asynccontextmanager
    async def admit_async(self, peer: Peer | None, *, wait: float | None = None) -> AsyncIterator[None]:
        """:meth:`admit` for a coroutine: the wait holds no thread.  A
        cancelled wait leaves the queue (or gives back the slot it got)."""
        await self._acquire_async(self.source_of(peer), self.wait if wait is None else wait)
        try:
            yield
        finally:
            self._release()

    def _enqueue(self, source: str) -> _Waiter | None:
        """Under the lock: ``None`` when admitted at once, else the queued
        waiter (or :class:`Overloaded` when there is no room)."""
        penalty = self._book.penalty(source)
        clean = penalty < CLEAN_BELOW
        # Below its limit, nobody of its kind waits (a clean waiter only while
        # every slot is taken, another only while the open ones are): taking
        # the slot passes nobody.
        if self._running < (self.slots if clean else self._open):
            self._running += 1
            return None
        priority = penalty + self._queued.get(source, 0)
        waiter = _Waiter(source, priority, next(self._seq), clean=clean)
        if len(self._waiters) >= self.max_waiting:
            worst = max(self._waiters.values(), key=_Waiter.rank, default=None)
            if worst is None or worst.priority <= priority:
                raise Overloaded("queue-full")
            self._unqueue(worst)
            worst.refused = True
            worst.wake()
        self._waiters[waiter.seq] = waiter
        self._queued[source] = self._queued.get(source, 0) + 1
        return waiter

    def _settle(self, waiter: _Waiter) -> None:
        """After the wait: return admitted, or leave and raise."""
        with self._lock:
            if waiter.granted:
                return
            if not waiter.refused:
                self._unqueue(waiter)
        raise Overloaded("queue-full" if waiter.refused else "wait-exceeded")

    def _acquire(self, source: str, wait: float) -> None:
        with self._lock:
            waiter = self._enqueue(source)
        if waiter is not None:
            waiter.event.wait(wait)
            self._settle(waiter)

    async def _acquire_async(self, source: str, wait: float) -> None:
        import asyncio  # here: the throttle's source keys come from this module, on sshd's lean path

        loop = asyncio.get_running_loop()
        with self._lock:
            waiter = self._enqueue(source)
            if waiter is None:
                return
            waiter.loop, waiter.future = loop, loop.create_future()  # before the lock goes: no wake is missed
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), wait)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            with self._lock:
                granted = waiter.granted
                if not granted and not waiter.refused:
                    self._unqueue(waiter)
            if granted:
                self._release()
            raise
        self._settle(waiter)

    def _unqueue(self, waiter: _Waiter) -> None:
        del self._waiters[waiter.seq]
        left = self._queued[waiter.source] - 1
        if left:
            self._queued[waiter.source] = left
        else:
            del self._queued[waiter.source]

    def _release(self) -> None:
        with self._lock:
            best = min(self._waiters.values(), key=_Waiter.rank, default=None)
            if best is not None and not best.clean and self._running - 1 >= self._open:
                # the slot freed is a reserved one: only a clean waiter may have it
                best = min((w for w in self._waiters.values() if w.clean), key=_Waiter.rank, default=None)
            if best is None:
                self._running -= 1
                return
            self._unqueue(best)
            best.granted = True  # the slot passes on: running stays
            best.wake()
