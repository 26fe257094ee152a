"""Replay state for second factors, in the store an authenticator owns.

A one-time code (a TOTP time step, an HOTP counter, a push token's serial)
must be accepted once: :meth:`ReplayGuard.claim` succeeds for a counter only
if it is above the last one claimed for the key, in one conditional write,
so two hosts of a cluster on PostgreSQL (or two processes on SQLite) that
race with the same code cannot both accept it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Final, final

from nxauth.errors import UsageError
from nxauth.store.protocol import Store

__all__ = ["ReplayGuard"]

#: Every this many claims, expired rows of the namespace are deleted (at most PURGE_ROWS).
PURGE_EVERY: Final = 64
PURGE_ROWS: Final = 256


@final
class ReplayGuard:
    """Replay state under ``namespace`` (a plugin's own name, say
    ``"totp"``) in ``store`` (or a callable that opens it, such as
    ``lambda: context.store`` in a backend factory).

    Counters are integers that only go up for a key (a user, a device);
    state of a key is kept ``ttl`` seconds after its last claim: choose a
    ``ttl`` longer than a code stays valid (for TOTP, the accepted window),
    or an old code could be taken again once its state expired."""

    def __init__(
        self, store: Store | Callable[[], Store], namespace: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        if not namespace or len(namespace) > 64 or not namespace.isprintable():
            raise UsageError("ReplayGuard namespace: 1 to 64 printable characters")
        self._store = store
        self.namespace = namespace
        self.clock = clock
        self._claims = itertools.count(1)

    def __repr__(self) -> str:
        return f"ReplayGuard({self.namespace!r})"

    @property
    def store(self) -> Store:
        """The store the state is kept in (opened now if it was given as a callable)."""
        return self._store if isinstance(self._store, Store) else self._store()

    def claim(self, key: str, counter: int, *, ttl: float) -> bool:
        """Take ``counter`` for ``key``: True if it is above every counter
        claimed for ``key`` before (the code is fresh), False if not (a
        replay).  Raises :class:`nxauth.StoreError` when the store cannot be
        written: the caller denies."""
        if isinstance(counter, bool) or not isinstance(counter, int) or not 0 <= counter < 2**63:
            raise UsageError("ReplayGuard.claim: counter is an integer from 0 to 2**63 - 1")
        if not ttl > 0:
            raise UsageError("ReplayGuard.claim: ttl is a positive number of seconds")
        now = self.clock()
        with self.store.transaction(keys=(f"replay:{self.namespace}:{key}",)) as tx:
            cursor = tx.execute(
                "INSERT INTO replay (namespace, key, counter, expires) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET counter = excluded.counter, expires = excluded.expires "
                "WHERE replay.counter < excluded.counter OR replay.expires < ?",
                (self.namespace, key, counter, now + ttl, now),
            )
            claimed = cursor.rowcount == 1
        if next(self._claims) % PURGE_EVERY == 0:
            self.purge()
        return claimed

    def last(self, key: str) -> int | None:
        """The last counter claimed for ``key`` (None: none, or expired)."""
        rows = self.store.execute(
            "SELECT counter FROM replay WHERE namespace = ? AND key = ? AND expires >= ?",
            (self.namespace, key, self.clock()),
        )
        return int(rows[0][0]) if rows else None

    def forget(self, key: str) -> None:
        """Drop the state of ``key`` (its secret was reset: old counters are void)."""
        with self.store.transaction(keys=(f"replay:{self.namespace}:{key}",)) as tx:
            tx.execute("DELETE FROM replay WHERE namespace = ? AND key = ?", (self.namespace, key))

    def purge(self) -> None:
        """Delete at most ``PURGE_ROWS`` expired rows of the namespace."""
        with self.store.transaction() as tx:
            tx.execute(
                "DELETE FROM replay WHERE namespace = ? AND key IN "
                "(SELECT key FROM replay WHERE namespace = ? AND expires < ? LIMIT ?)",
                (self.namespace, self.namespace, self.clock(), PURGE_ROWS),
            )
