"""The embedded server's limits before stage 2 succeeds, after sshd's.

Every client holds the transport key, so stage 1 proves little: a
connection counts as *unauthenticated* from its TCP accept until stage 2
succeeds (or it ends).  Before the SSH handshake, a new connection is
dropped when:

- ``server.max_startups`` (sshd's ``MaxStartups start:rate:full``): with
  ``full`` unauthenticated connections, always; with ``start`` or more, with
  probability ``rate``% rising linearly to 100% at ``full`` (random early
  drop: a flood cannot tell which of its connections will be kept) — unlike
  sshd, only when its source is not *clean*: a source without a penalty is
  dropped at ``full`` only (and by its own limit, below), so that a flood
  from failing sources does not drop the users at random;
- ``server.per_source_max_startups`` (sshd's ``PerSourceMaxStartups``): its
  source already has that many unauthenticated connections;
- ``server.penalties`` (sshd's ``PerSourcePenalties``): its source is
  penalised.  A connection that ends unauthenticated adds to its source's
  penalty: ``penalty_authfail`` seconds when it failed an attempt (either
  stage), ``penalty_grace`` when ``server.login_grace_time`` ran out,
  ``penalty_noauth`` when it tried nothing; penalties add up to at most
  ``penalty_max``, and a source is refused while its penalty exceeds
  ``penalty_min``, until it has run down.  ``throttle.exempt`` networks are
  never penalised.

A source is an IPv4 address or an IPv6 /64 (the throttle's keys).  Drops are
not audit events (an event per dropped connection would be the flood's
amplifier): they are counted, and logged at most once a second with the
count (logger ``nxauth.server``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Final, final

from nxauth.admission import NO_SOURCE, Admission, source_key
from nxauth.config import ServerConfig
from nxauth.model import Peer

__all__ = ["Startups", "Ticket"]

log = logging.getLogger("nxauth.server")

#: The penalty book's size (sshd's max-sources4/6): past it, expired
#: entries go first, then the ones that expire soonest.
MAX_PENALISED: Final = 65_536


@final
class Ticket:
    """One admitted connection's place in the counts; :meth:`leave` once it
    authenticated or ended (idempotent)."""

    __slots__ = ("_left", "_startups", "source")

    def __init__(self, startups: Startups, source: str) -> None:
        self._startups = startups
        self.source = source
        self._left = False

    @property
    def left(self) -> bool:
        return self._left

    def leave(self) -> None:
        if not self._left:
            self._left = True
            self._startups._leave(self.source)


@final
class Startups:
    """The counts and penalties of one running server.  Thread-safe."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        exempt: Callable[[Peer], bool] = lambda peer: False,
        clock: Callable[[], float] = time.monotonic,
        chance: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self._exempt = exempt  # the throttle's: Throttle.exempt
        self._clock = clock
        self._chance = chance
        self._lock = threading.Lock()
        self._total = 0
        self._per_source: dict[str, int] = {}
        self._penalised: dict[str, float] = {}  # source -> when its penalty has run down
        self.dropped: dict[str, int] = {"max-startups": 0, "per-source-max-startups": 0, "penalised": 0}
        self._logged_at = 0.0
        self._unlogged = 0

    @property
    def unauthenticated(self) -> int:
        """Connections admitted that have not authenticated nor ended."""
        return self._total

    def admit(self, host: str | None) -> Ticket | str:
        """A :class:`Ticket` for a new connection from ``host``, or the word
        of the limit that drops it."""
        source = _source(host)
        cfg = self.config
        with self._lock:
            now = self._clock()
            word = None
            until = self._penalised.get(source)
            if cfg.penalties and until is not None and until - now > cfg.penalty_min:
                word = "penalised"
            elif cfg.per_source_max_startups and self._per_source.get(source, 0) >= cfg.per_source_max_startups:
                word = "per-source-max-startups"
            elif self._over_max_startups(clean=until is None or until <= now):
                word = "max-startups"
            if word is None:
                self._total += 1
                self._per_source[source] = self._per_source.get(source, 0) + 1
                return Ticket(self, source)
            self.dropped[word] += 1
            self._unlogged += 1
            if now - self._logged_at >= 1.0:
                log.warning(
                    "dropped %d connection(s) before the handshake (last: %s, %s)", self._unlogged, word, source
                )
                self._logged_at, self._unlogged = now, 0
            return word

    def _over_max_startups(self, *, clean: bool) -> bool:
        start, rate, full = self.config.max_startups
        if self._total >= full:
            return True
        if self._total < start or clean:  # a clean source is dropped at full only
            return False
        # sshd's random early drop: rate% at start, rising linearly to 100% at full
        span = full - start
        chance = (rate + (100 - rate) * (self._total - start) / span) / 100 if span else 1.0
        return self._chance() < chance

    def _leave(self, source: str) -> None:
        with self._lock:
            self._total -= 1
            left = self._per_source[source] - 1
            if left:
                self._per_source[source] = left
            else:
                del self._per_source[source]

    def penalise(self, peer: Peer, seconds: float) -> None:
        """Add ``seconds`` to ``peer``'s source's penalty (capped at ``penalty_max``)."""
        cfg = self.config
        if not cfg.penalties or seconds <= 0 or self._exempt(peer):
            return
        source = Admission.source_of(peer)
        with self._lock:
            now = self._clock()
            until = max(self._penalised.get(source, now), now) + seconds
            self._penalised[source] = min(until, now + cfg.penalty_max)
            if len(self._penalised) > MAX_PENALISED:
                self._forget(now)

    def penalty(self, host: str | None) -> float:
        """Seconds of penalty the source has left."""
        source = _source(host)
        with self._lock:
            return max(0.0, self._penalised.get(source, 0.0) - self._clock())

    def _forget(self, now: float) -> None:
        for source in [s for s, until in self._penalised.items() if until <= now]:
            del self._penalised[source]
        if len(self._penalised) > MAX_PENALISED:
            soonest = sorted(self._penalised, key=self._penalised.__getitem__)
            for source in soonest[: len(soonest) - MAX_PENALISED // 2]:
                del self._penalised[source]


def _source(host: str | None) -> str:
    """The source of a connection's address (the throttle's key)."""
    return (source_key(host) if host else None) or NO_SOURCE
