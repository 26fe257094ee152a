"""Failure counting and lockout, per canonical username and per source.

Failures are counted in a sliding window, per username (existing or not) and
per source address (an IPv4 address, or the /64 of an IPv6 address).  When a
key reaches its limit it is locked out for ``lockout`` seconds, doubling with
each further lockout up to ``max_lockout``.  State lives in the embedded store,
so it survives restarts and is shared by every process on the host.  Sources
in an exempt network are neither counted nor locked out.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import final

from nxauth.config import ThrottleConfig
from nxauth.model import Peer
from nxauth.store.protocol import Store

__all__ = ["Lockout", "Throttle", "source_key", "user_key"]


def user_key(username: str) -> str:
    return f"user:{username}"


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


@final
@dataclass(frozen=True, slots=True)
class Lockout:
    """A key that is locked out, and until when (epoch seconds)."""

    key: str
    until: float
    lockouts: int


@final
class Throttle:
    """The throttle of one authenticator, over its store."""

    def __init__(self, store: Callable[[], Store], config: ThrottleConfig, *, clock: Callable[[], float] = time.time):
        self._store = store
        self.config = config
        self.clock = clock

    def exempt(self, peer: Peer) -> bool:
        address = peer.address
        return address is not None and any(address in network for network in self.config.exempt)

    def _keys(self, username: str | None, peer: Peer) -> list[tuple[str, int]]:
        keys: list[tuple[str, int]] = []
        if not self.config.enabled or self.exempt(peer):
            return keys
        if username is not None:
            keys.append((user_key(username), self.config.max_user_failures))
        source = source_key(peer.host)
        if source is not None:
            keys.append((source, self.config.max_source_failures))
        return keys

    def check(self, username: str | None, peer: Peer) -> Lockout | None:
        """The lockout that applies to this user or source now, if any."""
        return self.check_state(username, peer)[0]

    def check_state(self, username: str | None, peer: Peer) -> tuple[Lockout | None, bool]:
        """The lockout in force (if any), and whether the user has failures or
        lockouts on record that a success should clear: one read."""
        keys = self._keys(username, peer)
        if not keys:
            return None, False
        marks = ",".join("?" * len(keys))  # placeholders only: no value is formatted into SQL
        names = [key for key, _ in keys]
        user = user_key(username) if username is not None else ""
        rows = self._store().execute(
            "SELECT key, locked_until, lockouts FROM throttle_locks "  # noqa: S608
            f"WHERE key IN ({marks}) AND locked_until > ? "
            "UNION ALL SELECT 'dirty', EXISTS (SELECT 1 FROM throttle_failures WHERE key = ?) "
            "OR EXISTS (SELECT 1 FROM throttle_locks WHERE key = ?), 0 "
            "ORDER BY 2 DESC",
            (*names, self.clock(), user, user),
        )
        lockout: Lockout | None = None
        dirty = False
        for key, value, lockouts in rows:
            if key == "dirty":
                dirty = bool(value)
            elif lockout is None or float(value) > lockout.until:
                lockout = Lockout(str(key), float(value), int(lockouts))
        return lockout, dirty

    def record_failure(self, username: str | None, peer: Peer) -> Lockout | None:
        """Count one failure; return the lockout it caused, if any."""
        keys = self._keys(username, peer)
        if not keys:
            return None
        now = self.clock()
        cfg = self.config
        caused: Lockout | None = None
        with self._store().transaction() as tx:
            for key, limit in keys:
                tx.execute("DELETE FROM throttle_failures WHERE key = ? AND at < ?", (key, now - cfg.window))
                tx.execute("INSERT INTO throttle_failures (key, at) VALUES (?, ?)", (key, now))
                (count,) = tx.execute("SELECT count(*) FROM throttle_failures WHERE key = ?", (key,)).fetchone()
                if count < limit:
                    continue
                row = tx.execute("SELECT lockouts, last_lockout FROM throttle_locks WHERE key = ?", (key,)).fetchone()
                lockouts = 0
                if row is not None and now - row[1] <= cfg.max_lockout + cfg.window:
                    lockouts = int(row[0])
                duration = min(cfg.lockout * (2 ** min(lockouts, 40)), cfg.max_lockout)
                until = now + duration
                tx.execute(
                    "INSERT INTO throttle_locks (key, locked_until, lockouts, last_lockout) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET locked_until = excluded.locked_until, "
                    "lockouts = excluded.lockouts, last_lockout = excluded.last_lockout",
                    (key, until, lockouts + 1, now),
                )
                tx.execute("DELETE FROM throttle_failures WHERE key = ?", (key,))
                if caused is None or until > caused.until:
                    caused = Lockout(key, until, lockouts + 1)
        return caused

    def record_success(self, username: str, peer: Peer, *, dirty: bool = True) -> None:
        """Forget the user's failures (a source's failures stay: one good
        account must not launder an attacker's address).  ``dirty=False``
        (from :meth:`check_state`) skips the write when there is nothing to forget."""
        if not dirty or not self.config.enabled or self.exempt(peer):
            return
        key = user_key(username)
        with self._store().transaction() as tx:
            tx.execute("DELETE FROM throttle_failures WHERE key = ?", (key,))
            tx.execute("DELETE FROM throttle_locks WHERE key = ?", (key,))

    def unlock(self, key: str) -> int:
        """Forget failures and lockouts of one key; return how many rows went."""
        with self._store().transaction() as tx:
            removed = tx.execute("DELETE FROM throttle_failures WHERE key = ?", (key,)).rowcount
            removed += tx.execute("DELETE FROM throttle_locks WHERE key = ?", (key,)).rowcount
        return int(removed)

    def status(self) -> list[Lockout]:
        """Every lockout in force now."""
        rows = self._store().execute(
            "SELECT key, locked_until, lockouts FROM throttle_locks WHERE locked_until > ? ORDER BY key",
            (self.clock(),),
        )
        return [Lockout(str(k), float(u), int(n)) for k, u, n in rows]
