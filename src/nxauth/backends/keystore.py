"""The ``keystore`` key source: transport keys in the embedded store.

Each key is an authorized_keys line (options and key) in the table
``transport_keys``, indexed on (account, key blob): a stage-1 check is one
indexed read, whatever the number of keys.  A key may carry an expiry; an
expired key is still found, with its expiry as ``expiry-time``, so stage 1
refuses it as expired rather than unknown.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

from nxauth.errors import KeyFormatError
from nxauth.keys.authorized_keys import AuthorizedKey, parse_authorized_key
from nxauth.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from nxauth.plugins.registry import BackendContext, BackendRegistry
    from nxauth.store.protocol import Store

__all__ = ["KeyStore", "KeystoreBackend", "StoredKey"]


@final
@dataclass(frozen=True, slots=True)
class StoredKey:
    """One row of the keystore."""

    id: int
    account: str
    entry: AuthorizedKey
    fingerprint: str
    comment: str
    added: float
    expires: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account": self.account,
            "type": self.entry.key.key_type,
            "fingerprint": self.fingerprint,
            "comment": self.comment,
            "added": self.added,
            "expires": self.expires,
            "options": self.entry.options.as_mapping(),
        }


@functools.lru_cache(maxsize=4096)
def _parse_line(line: str) -> AuthorizedKey | None:
    """Parse a stored line once: entries are immutable, and the keys that log
    in are few compared with the keys stored."""
    return parse_authorized_key(line)


def _with_expiry(entry: AuthorizedKey, expires: float | None) -> AuthorizedKey:
    if expires is None:
        return entry
    current = entry.options.expiry_time
    if current is not None and current <= expires:
        return entry
    return dataclasses.replace(entry, options=dataclasses.replace(entry.options, expiry_time=expires))


@final
class KeyStore:
    """Add, remove, list and look up transport keys in the store."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def add(self, account: str, entry: AuthorizedKey, *, expires: float | None = None) -> StoredKey:
        """Store ``entry`` for ``account``.  The same key with the same options
        for the same account is stored once (the existing row is returned)."""
        line = entry.to_line()
        now = self.clock()
        with self.store.transaction() as tx:
            row = tx.execute(
                "SELECT id FROM transport_keys WHERE account = ? AND lookup = ? AND line = ?",
                (account, entry.key.blob, line),
            ).fetchone()
            if row is not None:
                key_id = int(row[0])
                if expires is not None:
                    tx.execute("UPDATE transport_keys SET expires = ? WHERE id = ?", (expires, key_id))
            else:
                cursor = tx.execute(
                    "INSERT INTO transport_keys (account, lookup, line, fingerprint, comment, added, expires) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (account, entry.key.blob, line, entry.key.fingerprint, entry.key.comment, now, expires),
                )
                key_id = int(cursor.fetchone()[0])
        found = self.get(key_id)
        assert found is not None
        return found

    def _row(self, row: tuple[Any, ...]) -> StoredKey:
        key_id, account, line, fingerprint, comment, added, expires = row
        entry = parse_authorized_key(str(line))
        if entry is None:
            raise KeyFormatError(f"keystore row {key_id} holds no key")
        return StoredKey(int(key_id), str(account), entry, str(fingerprint), str(comment), float(added), expires)

    _COLUMNS = "id, account, line, fingerprint, comment, added, expires"

    def get(self, key_id: int) -> StoredKey | None:
        rows = self.store.execute(f"SELECT {self._COLUMNS} FROM transport_keys WHERE id = ?", (key_id,))  # noqa: S608
        return self._row(rows[0]) if rows else None

    def entries(self, account: str | None = None) -> list[StoredKey]:
        if account is None:
            rows = self.store.execute(f"SELECT {self._COLUMNS} FROM transport_keys ORDER BY id")  # noqa: S608
        else:
            rows = self.store.execute(
                f"SELECT {self._COLUMNS} FROM transport_keys WHERE account = ? ORDER BY id",  # noqa: S608
                (account,),
            )
        return [self._row(row) for row in rows]

    def find(self, account: str, blob: bytes) -> list[AuthorizedKey]:
        """The entries for ``account`` whose key blob is ``blob`` (one indexed read)."""
        rows = self.store.execute(
            "SELECT line, expires FROM transport_keys WHERE account = ? AND lookup = ? ORDER BY id",
            (account, blob),
        )
        found = []
        for line, expires in rows:
            entry = _parse_line(str(line))
            if entry is not None:
                found.append(_with_expiry(entry, expires))
        return found

    def remove(self, selector: str, account: str | None = None) -> int:
        """Remove keys by id or fingerprint (``SHA256:...``); return how many."""
        with self.store.transaction() as tx:
            if selector.isdigit():
                cursor = tx.execute("DELETE FROM transport_keys WHERE id = ?", (int(selector),))
            elif account is None:
                cursor = tx.execute("DELETE FROM transport_keys WHERE fingerprint = ?", (selector,))
            else:
                cursor = tx.execute(
                    "DELETE FROM transport_keys WHERE fingerprint = ? AND account = ?", (selector, account)
                )
            return int(cursor.rowcount)

    def expire_all(self, account: str, when: float, *, keep: Iterable[int] = ()) -> int:
        """Set every key of ``account`` (but ``keep``) to expire at ``when``,
        unless it expires sooner already; return how many changed."""
        kept = set(keep)
        changed = 0
        with self.store.transaction() as tx:
            rows = tx.execute("SELECT id, expires FROM transport_keys WHERE account = ?", (account,)).fetchall()
            for key_id, expires in rows:
                if key_id in kept or (expires is not None and expires <= when):
                    continue
                tx.execute("UPDATE transport_keys SET expires = ? WHERE id = ?", (when, key_id))
                changed += 1
        return changed


@final
class _Lookup:
    __slots__ = ("_account", "_keystore")

    def __init__(self, keystore: KeyStore, account: str) -> None:
        self._keystore = keystore
        self._account = account

    def find(self, blob: bytes) -> list[AuthorizedKey]:
        return self._keystore.find(self._account, blob)

    def __iter__(self) -> Any:
        return iter([stored.entry for stored in self._keystore.entries(self._account)])


@final
class KeystoreBackend:
    """Key source over the keystore; ``authorized_keys(account)`` answers by index."""

    def __init__(self, keystore: KeyStore) -> None:
        self.keystore = keystore

    def authorized_keys(self, account: str) -> _Lookup:
        return _Lookup(self.keystore, account)

    def __repr__(self) -> str:
        return f"KeystoreBackend({self.keystore.store!r})"


def build(context: BackendContext) -> KeystoreBackend:
    return KeystoreBackend(KeyStore(context.store))


@hookimpl
def nxauth_register_backends(registry: BackendRegistry) -> None:
    registry.add("keystore", build)
