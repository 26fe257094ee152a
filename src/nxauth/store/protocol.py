"""The store's interface: what the core, the built-in backends and plugins may
ask of the store an :class:`nxauth.Authenticator` owns.

Statements are SQL in the store's own dialect, with ``?`` placeholders (the
embedded store is SQLite).  A transaction commits when its block ends and
rolls back on any exception; every failure is a :class:`nxauth.StoreError`,
and callers deny when the store cannot be read or written.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

__all__ = ["Cursor", "Store", "Transaction"]


class Cursor(Protocol):
    """The result of one statement inside a transaction."""

    @property
    def rowcount(self) -> int:
        """Rows changed by the statement (``-1`` when unknown)."""
        ...

    @property
    def lastrowid(self) -> int | None:
        """The row id of the row an ``INSERT`` added."""
        ...

    def fetchone(self) -> Any:
        """The next row as a tuple, or ``None``."""
        ...

    def fetchall(self) -> list[Any]:
        """The remaining rows, as tuples."""
        ...


class Transaction(Protocol):
    """A write transaction's connection: statements run in it, all or nothing."""

    def execute(self, sql: str, parameters: Sequence[object] = ..., /) -> Cursor:
        """Run one statement in the transaction."""
        ...


@runtime_checkable
class Store(Protocol):
    """Where nxauth keeps state: users and password hashes, transport keys,
    throttle counters (the embedded SQLite file by default)."""

    def transaction(self, *, keys: Sequence[str] = ()) -> AbstractContextManager[Transaction]:
        """A write transaction: ``with store.transaction() as tx: tx.execute(...)``.
        It waits out other writers up to the store's busy timeout, then
        raises :class:`nxauth.StoreError`.

        Without ``keys`` it runs alone, as if no other writer existed.  With
        ``keys`` (the names of every row the transaction reads to decide and
        writes), it runs alone with respect to other transactions on any of
        those keys and to transactions without keys; a store may run it
        beside transactions on other keys (PostgreSQL does: an advisory lock
        per key; SQLite's writers always run one at a time)."""
        ...

    def execute(self, sql: str, parameters: tuple[object, ...] = ...) -> list[tuple[Any, ...]]:
        """Run one read statement and return all its rows."""
        ...

    def schema_version(self) -> int:
        """The schema version of the data (a newer one than nxauth knows is refused on open)."""
        ...

    def integrity_check(self) -> str:
        """``"ok"`` when the data is sound, else what is wrong."""
        ...

    def close(self) -> None:
        """Release every connection; later calls raise :class:`nxauth.StoreError`."""
        ...
