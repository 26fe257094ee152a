"""Failure counting and lockout: per (user, source) pair, per user across
every source, and per source.

Failures are counted in a sliding window under three keys (see the
"Lockout model" of docs/security.md):

* ``pair:<source> <user>``: the user from one source (an IPv4 address, or
  the /64 of an IPv6 address), limit ``max_user_failures``;
* ``user:<user>``: the user from every source together, limit
  ``max_user_failures_all_sources`` (a guesser rotating addresses);
* ``addr:...`` / ``net:...``: the source, whatever the user, limit
  ``max_source_failures``.

When a key reaches its limit it is locked out for ``lockout`` seconds,
doubling with each further lockout up to ``max_lockout``.

An attempt first *reserves* (:meth:`Throttle.reserve`, one write
transaction): it is refused when a key is locked, or when the key's failures
and the reservations in flight already reach its limit; otherwise one row per
key is written that counts as a failure until it is settled.  After the
backends, :meth:`Throttle.settle` (one write transaction) turns it into a
failure (which may lock), or, on a success, removes it and clears the user's
failures.  A reservation never settled (a crash, a killed connection) stays a
failure until it leaves the window: fail closed.  Only rows of the window
count; every ``SWEEP_EVERY`` reservations a bounded sweep, a transaction of
its own, deletes expired rows of any key (so the store stops growing).

The transactions of an attempt name their keys (``transaction(keys=...)``):
on PostgreSQL, attempts on other users and sources run side by side, while
two on one key still run one after the other.

State lives in the embedded store, so it survives restarts and is shared by
every process on the host.  Sources in an exempt network are neither counted
nor locked out.
"""

from __future__ import annotations

import enum
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, final

from nxauth.admission import NO_SOURCE, source_key
from nxauth.config import ThrottleConfig
from nxauth.errors import StoreError
from nxauth.model import Peer
from nxauth.store.protocol import Store, Transaction

__all__ = ["Lockout", "Reservation", "Settle", "Throttle", "pair_key", "source_key", "user_key"]

log = logging.getLogger("nxauth")

#: A bounded sweep of expired rows (any key) runs once every this many reservations.
SWEEP_EVERY: Final = 16
#: The most rows of each table one sweep deletes.
SWEEP_ROWS: Final = 256


def user_key(username: str) -> str:
    return f"user:{username}"


def pair_key(username: str, source: str | None) -> str:
    """``pair:addr:198.51.100.7 alice``: a source key has no space, so the
    first space ends it whatever the username holds."""
    return f"pair:{source or NO_SOURCE} {username}"


@final
@dataclass(frozen=True, slots=True)
class Lockout:
    """A key that is locked out, and until when (epoch seconds)."""

    key: str
    until: float
    lockouts: int


class Settle(enum.Enum):
    """How an attempt ended, for :meth:`Throttle.settle`."""

    FAILURE = "failure"  # counted (a wrong guess)
    SUCCESS = "success"  # the reservation goes, the user's failures are forgotten
    RELEASE = "release"  # not counted (a backend error, a timeout): the reservation goes


@final
@dataclass(frozen=True, slots=True)
class Reservation:
    """One attempt's place in the counts, taken before the backends run."""

    token: int
    keys: tuple[tuple[str, int], ...]
    username: str | None


@final
class Throttle:
    """The throttle of one authenticator, over its store."""

    def __init__(self, store: Callable[[], Store], config: ThrottleConfig, *, clock: Callable[[], float] = time.time):
        self._store = store
        self.config = config
        self.clock = clock
        self._reservations = itertools.count(1)

    def exempt(self, peer: Peer) -> bool:
        address = peer.address
        return address is not None and any(address in network for network in self.config.exempt)

    def _keys(self, username: str | None, peer: Peer) -> tuple[tuple[str, int], ...]:
        cfg = self.config
        if not cfg.enabled or self.exempt(peer):
            return ()
        source = source_key(peer.host)
        keys: list[tuple[str, int]] = []
        if username is not None:
            keys.append((pair_key(username, source), cfg.max_user_failures))
            keys.append((user_key(username), max(cfg.max_user_failures_all_sources, cfg.max_user_failures)))
        if source is not None:
            keys.append((source, cfg.max_source_failures))
        return tuple(keys)

    # ------------------------------------------------------------ reading

    def check(self, username: str | None, peer: Peer) -> Lockout | None:
        """The lockout that applies to this user from this source now, if any
        (one read; :meth:`reserve` is the check an attempt relies on)."""
        keys = self._keys(username, peer)
        if not keys:
            return None
        marks = ",".join("?" * len(keys))  # placeholders only: no value is formatted into SQL
        rows = self._store().execute(
            f"SELECT key, locked_until, lockouts FROM throttle_locks WHERE key IN ({marks}) AND locked_until > ?",  # noqa: S608
            (*(key for key, _ in keys), self.clock()),
        )
        return _latest(Lockout(str(k), float(u), int(n)) for k, u, n in rows)

    # ------------------------------------------------------------ an attempt

    def reserve(self, username: str | None, peer: Peer) -> Reservation | Lockout | None:
        """Check and reserve in one write transaction.  A :class:`Lockout`
        when a key is locked or full (its failures and reservations in flight
        reach its limit); ``None`` when nothing is counted (disabled, exempt);
        else the :class:`Reservation` to :meth:`settle`.  Raises
        :class:`nxauth.StoreError` when the store cannot be written: the
        caller denies."""
        keys = self._keys(username, peer)
        if not keys:
            return None
        now = self.clock()
        since = now - self.config.window
        token = secrets.randbits(62) + 1
        names = [key for key, _ in keys]
        marks = ",".join("?" * len(keys))  # placeholders only: no value is formatted into SQL
        sweep = False
        with self._store().transaction(keys=names) as tx:
            # failures and reservations of the window (older rows are the sweep's to delete)
            rows = tx.execute(
                f"SELECT key, locked_until, lockouts FROM throttle_locks WHERE key IN ({marks}) AND locked_until > ? "  # noqa: S608
                f"UNION ALL SELECT key, NULL, count(*) FROM throttle_failures WHERE key IN ({marks}) AND at >= ? "
                "GROUP BY key",
                (*names, now, *names, since),
            ).fetchall()
            limits = dict(keys)
            refused: Lockout | None = None
            for key, until, number in rows:
                if until is not None:  # locked
                    refused = _latest((refused, Lockout(key, float(until), int(number))))
                elif number >= limits[key]:  # full of failures and attempts in flight: wait for them
                    refused = _latest((refused, Lockout(key, now, 0)))
            if refused is not None:
                return refused
            tx.execute(
                "INSERT INTO throttle_failures (key, at, token) VALUES " + ",".join(["(?, ?, ?)"] * len(keys)),  # noqa: S608
                [value for key in names for value in (key, now, token)],
            )
            sweep = next(self._reservations) % SWEEP_EVERY == 0
        if sweep:  # after, in a transaction of its own (it touches every key); housekeeping: no outcome hangs on it
            try:
                self.sweep()
            except StoreError as exc:
                log.warning("throttle: sweep failed: %s", exc)
        return Reservation(token, keys, username)

    def settle(self, reservation: Reservation, result: Settle) -> Lockout | None:
        """After the backends, one write transaction.  A failure stays counted
        (and may lock; the lockout it caused is returned); a success removes
        the reservation and forgets the user's failures and lockouts, from
        this source and across sources (a source's own count stays: one good
        account must not launder an attacker's address); a release only
        removes the reservation."""
        now = self.clock()
        token = reservation.token
        with self._store().transaction(keys=[key for key, _ in reservation.keys]) as tx:
            if result is Settle.FAILURE:
                # the reservation becomes a failure (of the attempt's start)
                settled = tx.execute("UPDATE throttle_failures SET token = NULL WHERE token = ?", (token,)).rowcount
                if settled == len(reservation.keys):
                    return self._lock(tx, reservation.keys, now)
                # a purge took it (an attempt longer than the window): counted as of now
                tx.execute("DELETE FROM throttle_failures WHERE token = ?", (token,))
                return self._fail(tx, reservation.keys, now)
            cleared = [key for key, _ in reservation.keys if key.startswith(("pair:", "user:"))]
            if result is Settle.SUCCESS and cleared:
                marks = ",".join("?" * len(cleared))
                # the reservation, and the user's failures; others' reservations in flight stay
                tx.execute(
                    f"DELETE FROM throttle_failures WHERE token = ? OR (key IN ({marks}) AND token IS NULL)",  # noqa: S608
                    (token, *cleared),
                )
                tx.execute(f"DELETE FROM throttle_locks WHERE key IN ({marks})", cleared)  # noqa: S608
            else:
                tx.execute("DELETE FROM throttle_failures WHERE token = ?", (token,))
        return None

    def try_settle(self, reservation: Reservation | None, result: Settle) -> bool:
        """:meth:`settle`, logged; ``False`` when the store failed (the
        reservation then stays a failure, and the caller denies)."""
        if reservation is None:
            return True
        try:
            lockout = self.settle(reservation, result)
        except StoreError as exc:
            log.error("throttle: cannot settle: %s", exc)
            return False
        if lockout is not None:
            log.warning("throttle: %s locked out until %.0f", lockout.key, lockout.until)
        return True

    def record_failure(self, username: str | None, peer: Peer) -> Lockout | None:
        """Count one failure without a reservation (an attempt refused before
        any backend, an invalid username); return the lockout it caused."""
        keys = self._keys(username, peer)
        if not keys:
            return None
        with self._store().transaction(keys=[key for key, _ in keys]) as tx:
            return self._fail(tx, keys, self.clock())

    def record_success(self, username: str, peer: Peer) -> None:
        """Forget the user's failures from this source and across sources."""
        keys = self._keys(username, peer)
        if keys:
            self.settle(Reservation(0, keys, username), Settle.SUCCESS)

    def _fail(self, tx: Transaction, keys: Sequence[tuple[str, int]], now: float) -> Lockout | None:
        names = [key for key, _ in keys]
        _purge(tx, names, now - self.config.window)
        tx.execute(
            "INSERT INTO throttle_failures (key, at) VALUES " + ",".join(["(?, ?)"] * len(names)),  # noqa: S608
            [value for key in names for value in (key, now)],
        )
        return self._lock(tx, keys, now)

    def _lock(self, tx: Transaction, keys: Sequence[tuple[str, int]], now: float) -> Lockout | None:
        """Lock out every key whose count reached its limit; the longest lockout caused."""
        cfg = self.config
        limits = dict(keys)
        marks = ",".join("?" * len(keys))
        counts = tx.execute(
            f"SELECT key, count(*) FROM throttle_failures WHERE key IN ({marks}) AND at >= ? GROUP BY key",  # noqa: S608
            (*limits, now - cfg.window),
        ).fetchall()
        caused: Lockout | None = None
        for key, count in counts:
            if count < limits[key]:
                continue
            row = tx.execute("SELECT lockouts, last_lockout FROM throttle_locks WHERE key = ?", (key,)).fetchone()
            lockouts = 0
            if row is not None and now - row[1] <= cfg.max_lockout + cfg.window:
                lockouts = int(row[0])
            until = now + min(cfg.lockout * (2 ** min(lockouts, 40)), cfg.max_lockout)
            tx.execute(
                "INSERT INTO throttle_locks (key, locked_until, lockouts, last_lockout) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET locked_until = excluded.locked_until, "
                "lockouts = excluded.lockouts, last_lockout = excluded.last_lockout",
                (key, until, lockouts + 1, now),
            )
            # settled failures start again; reservations in flight stay counted
            tx.execute("DELETE FROM throttle_failures WHERE key = ? AND token IS NULL", (key,))
            caused = _latest((caused, Lockout(key, until, lockouts + 1)))
        return caused

    def _sweep(self, tx: Transaction, now: float) -> None:
        """Delete at most ``SWEEP_ROWS`` expired rows of each table, any key
        (by the time indexes): bounded work, and a store that stops growing."""
        cfg = self.config
        tx.execute(
            "DELETE FROM throttle_failures WHERE rowid IN (SELECT rowid FROM throttle_failures WHERE at < ? LIMIT ?)",
            (now - cfg.window, SWEEP_ROWS),
        )
        tx.execute(
            "DELETE FROM throttle_locks WHERE key IN "
            "(SELECT key FROM throttle_locks WHERE last_lockout < ? AND locked_until < ? LIMIT ?)",
            (now - cfg.max_lockout - cfg.window, now, SWEEP_ROWS),
        )

    def sweep(self) -> None:
        """One bounded sweep now (the reservations run one every ``SWEEP_EVERY``)."""
        with self._store().transaction() as tx:
            self._sweep(tx, self.clock())

    # ------------------------------------------------------------ admin

    def unlock(self, key: str) -> int:
        """Forget failures and lockouts of one key; return how many rows went.
        A user's key also lifts the user's pairs with every source."""
        with self._store().transaction() as tx:
            removed = tx.execute("DELETE FROM throttle_failures WHERE key = ?", (key,)).rowcount
            removed += tx.execute("DELETE FROM throttle_locks WHERE key = ?", (key,)).rowcount
            if key.startswith("user:"):
                username = key.removeprefix("user:")
                for table in ("throttle_failures", "throttle_locks"):
                    # "pair:SOURCE USER", a source has no space; compared here, in SQL both stores speak
                    pairs = {
                        str(row[0])
                        for row in tx.execute(f"SELECT key FROM {table} WHERE key LIKE 'pair:%'").fetchall()  # noqa: S608
                    }
                    for pair in sorted(p for p in pairs if p.partition(" ")[2] == username):
                        removed += tx.execute(f"DELETE FROM {table} WHERE key = ?", (pair,)).rowcount  # noqa: S608
        return int(removed)

    def status(self) -> list[Lockout]:
        """Every lockout in force now."""
        rows = self._store().execute(
            "SELECT key, locked_until, lockouts FROM throttle_locks WHERE locked_until > ? ORDER BY key",
            (self.clock(),),
        )
        return [Lockout(str(k), float(u), int(n)) for k, u, n in rows]


def _latest(locks: Iterable[Lockout | None]) -> Lockout | None:
    best: Lockout | None = None
    for lock in locks:
        if lock is not None and (best is None or lock.until > best.until):
            best = lock
    return best


def _purge(tx: Transaction, names: Sequence[str], since: float) -> None:
    """Expired failures of the keys an attempt touches."""
    marks = ",".join("?" * len(names))
    tx.execute(f"DELETE FROM throttle_failures WHERE key IN ({marks}) AND at < ?", (*names, since))  # noqa: S608
