"""The embedded store: one SQLite file for users, passwords, keys and throttle.

WAL journal, a busy timeout, ``BEGIN IMMEDIATE`` transactions, the schema
version in ``PRAGMA user_version``, ``PRAGMA application_id`` "nxau"; a new
file is built complete, mode 0600, in a temporary file and linked into
place.  One connection per thread (and per process after a fork).  A file
that is empty, corrupt, another application's, of a newer schema, or
unreadable raises :class:`StoreError` naming it, and not a byte of it
changes (nor does a ``-wal``, ``-shm`` or ``-journal`` appear beside it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final, final

from nxauth.errors import StoreError
from nxauth.files import PRIVATE_MODE, make_dirs

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

log = logging.getLogger("nxauth.store")

#: Each migration brings the schema from version ``index`` to ``index + 1``.
MIGRATIONS: Final[tuple[str, ...]] = (
    # 0 -> 1: throttle, users (both databases), transport keys
    """
    CREATE TABLE throttle_failures (
        key TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX throttle_failures_key_at ON throttle_failures (key, at);
    CREATE TABLE throttle_locks (
        key TEXT PRIMARY KEY,
        locked_until REAL NOT NULL,
        lockouts INTEGER NOT NULL,
        last_lockout REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE users (
        username TEXT PRIMARY KEY,
        password_hash TEXT,
        enabled INTEGER NOT NULL DEFAULT 1,
        comment TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL,
        changed REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE transport_keys (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL,
        lookup BLOB NOT NULL,
        line TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        comment TEXT NOT NULL DEFAULT '',
        added REAL NOT NULL,
        expires REAL
    );
    CREATE INDEX transport_keys_lookup ON transport_keys (account, lookup);
    CREATE INDEX transport_keys_fingerprint ON transport_keys (fingerprint);
    """,
    # 1 -> 2: throttle reservations (a failure row with the token of the attempt
    # in flight), and the time indexes of the bounded purge
    """
    ALTER TABLE throttle_failures ADD COLUMN token INTEGER;
    CREATE INDEX throttle_failures_token ON throttle_failures (token) WHERE token IS NOT NULL;
    CREATE INDEX throttle_failures_at ON throttle_failures (at);
    CREATE INDEX throttle_locks_last ON throttle_locks (last_lockout);
    """,
    # 2 -> 3: a cluster's nodes, users' grants to them, per-node passwords,
    # second-factor replay state, the audit table
    """
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        host_key TEXT NOT NULL,
        added REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE grants (
        username TEXT NOT NULL,
        node TEXT NOT NULL REFERENCES nodes (name) ON DELETE CASCADE,
        granted REAL NOT NULL,
        PRIMARY KEY (username, node)
    ) WITHOUT ROWID;
    CREATE TABLE node_passwords (
        node TEXT NOT NULL,
        username TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        changed REAL NOT NULL,
        PRIMARY KEY (node, username)
    ) WITHOUT ROWID;
    CREATE TABLE replay (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        counter INTEGER NOT NULL,
        expires REAL NOT NULL,
        PRIMARY KEY (namespace, key)
    ) WITHOUT ROWID;
    CREATE INDEX replay_expires ON replay (expires);
    CREATE TABLE audit_events (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        host TEXT NOT NULL,
        event TEXT NOT NULL
    );
    CREATE INDEX audit_events_at ON audit_events (at);
    """,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)
#: ``PRAGMA application_id`` of an nxauth store: b"nxau".  A file with another
#: nonzero id is another application's database and is refused untouched.
APPLICATION_ID: Final = int.from_bytes(b"nxau", "big")
#: The tables every nxauth store has had since schema 1 (how a store made
#: before ``application_id`` was set is told from a foreign database).
STORE_TABLES: Final = frozenset({"throttle_failures", "throttle_locks", "users", "transport_keys"})
#: Every table of the current schema (both stores).
TABLES: Final = STORE_TABLES | {"nodes", "grants", "node_passwords", "replay", "audit_events"}
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_NOCTTY: Final = getattr(os, "O_NOCTTY", 0)
_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)
BUSY_TIMEOUT: Final = 30.0


@final
class SqliteStore:
    """The SQLite store at ``path`` (created, with its directory, on first open)."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        #: held while a connection is used: close() waits for it (closing a
        #: connection another thread is using crashes the interpreter)
        self._guards: dict[int, threading.Lock] = {}
        self._pid = os.getpid()
        self._closed = False
        self._open_first()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    # ------------------------------------------------------------ opening

    def _error(self, message: str) -> StoreError:
        return StoreError(f"{self.path}: {message}")

    def _create_file(self) -> None:
        """A new store, built complete in a 0600 temporary file beside the
        path and hard-linked into place: a file at the path is never a
        half-made nxauth store, so an empty or foreign file can be refused."""
        directory = self.path.parent
        try:
            make_dirs(directory)
        except OSError as exc:
            raise self._error(f"cannot create directory {directory}: {exc.strerror}") from None
        temporary = self.path.with_name(f".{self.path.name}.{os.urandom(6).hex()}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC | _NOFOLLOW, PRIVATE_MODE)
            try:
                os.fchmod(fd, PRIVATE_MODE)
            finally:
                os.close(fd)
            conn = sqlite3.connect(temporary, isolation_level=None)
            try:
                self._migrate(conn)
            finally:
                conn.close()
            with contextlib.suppress(FileExistsError):  # created concurrently: checked like any file
                os.link(temporary, self.path)
        except (OSError, sqlite3.Error) as exc:
            raise self._error(f"cannot create: {getattr(exc, 'strerror', None) or type(exc).__name__}") from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temporary)

    def _header(self) -> bytes:
        """The first 100 bytes (the SQLite header), read without following
        into a FIFO or device and without writing anything."""
        try:
            fd = os.open(self.path, os.O_RDONLY | _NONBLOCK | _NOCTTY | _CLOEXEC)
        except OSError as exc:
            raise self._error(f"cannot open: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise self._error("not a regular file")
            if info.st_mode & 0o077:
                log.warning(
                    "%s is readable by group or others (mode %o); it should be 0600", self.path, info.st_mode & 0o777
                )
            return os.pread(fd, 100, 0)
        except OSError as exc:
            raise self._error(f"cannot read: {exc.strerror}") from None
        finally:
            os.close(fd)

    def _probe(self) -> tuple[int, set[str]]:
        """``user_version`` and table names, read on a read-only connection.
        Without a ``-wal`` beside the file the connection is ``immutable``:
        SQLite then creates no ``-wal``, ``-shm`` or ``-journal`` either."""
        wal = self.path.with_name(self.path.name + "-wal").exists()
        query = "mode=ro" if wal else "mode=ro&immutable=1"
        uri = f"{self.path.absolute().as_uri()}?{query}"
        try:
            probe = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._error(f"cannot open ({type(exc).__name__})") from None
        try:
            version = int(probe.execute("PRAGMA user_version").fetchone()[0])
            tables = {str(row[0]) for row in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise self._error(f"not a usable database ({type(exc).__name__})") from None
        finally:
            probe.close()
        return version, tables

    def _open_first(self) -> None:
        if not os.path.lexists(self.path):
            self._create_file()
        if not os.access(self.path, os.R_OK | os.W_OK):
            raise self._error("not readable and writable by this user")
        # Decide from the header and a read-only probe, before anything writes
        # to the file (switching to WAL rewrites the header): a refused file
        # stays as it was, byte for byte, with nothing created beside it.
        header = self._header()
        if not header:
            raise self._error("is an empty file, not an nxauth store (nxauth never leaves one); remove it")
        if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
            raise self._error("is not an SQLite database, so not an nxauth store; refused untouched")
        application_id = int.from_bytes(header[68:72], "big")
        if application_id not in (0, APPLICATION_ID):
            raise self._error(
                f"is another application's SQLite database (application_id {application_id:#x}); refused untouched"
            )
        version, tables = self._probe()
        if version > SCHEMA_VERSION:
            raise self._error(
                f"schema version {version} is newer than this nxauth understands ({SCHEMA_VERSION}); upgrade nxauth"
            )
        if application_id == 0 and not (version >= 1 and tables >= STORE_TABLES):
            # a store of nxauth before application_id has version >= 1 and its tables
            raise self._error("is an SQLite database that is not an nxauth store; refused untouched")
        conn = self._connect()
        if version < SCHEMA_VERSION or application_id == 0:
            self._migrate(conn)

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._error(f"cannot open ({exc})") from None
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.005
        while True:
            try:
                # switching to WAL takes a lock the busy handler does not wait
                # for: another process opening the file at the same moment
                # answers "locked", so wait here as for any other writer
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
                break
            except sqlite3.OperationalError as exc:
                if ("locked" in str(exc) or "busy" in str(exc)) and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 0.2)
                    continue
                conn.close()
                raise self._error(f"not a usable database ({exc})") from None
            except sqlite3.DatabaseError as exc:
                conn.close()
                raise self._error(f"not a usable database ({exc})") from None
        with self._lock:
            self._connections.append(conn)
            self._guards[id(conn)] = threading.Lock()
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with self._transaction(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise self._error(f"schema version {version} is newer than this nxauth understands")
            for index in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[index].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                log.info("%s: schema %d -> %d", self.path, index, index + 1)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")

    # ------------------------------------------------------------ use

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; use :meth:`transaction` to write)."""
        if self._closed:
            raise self._error("store is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = self._connect()
        return conn

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.005
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise self._error(f"cannot begin a transaction ({exc})") from None
                if time.monotonic() > deadline:
                    raise self._error("database stayed busy; try again") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise self._error(f"commit failed ({exc})") from None

    @contextlib.contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, guarded against :meth:`close` while in use."""
        conn = self.connection()
        guard = self._guards.get(id(conn))
        if guard is None:
            raise self._error("store is closed")
        with guard:
            if self._closed:
                raise self._error("store is closed")
            yield conn

    @contextlib.contextmanager
    def transaction(self, *, keys: Sequence[str] = ()) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): commit on success,
        rollback on any exception.  Waits out other writers up to the busy
        timeout, then raises :class:`StoreError`.  ``keys`` change nothing:
        SQLite's writers always run one at a time."""
        with self._using() as conn:
            try:
                with self._transaction(conn) as tx:
                    yield tx
            except sqlite3.DatabaseError as exc:
                raise self._error(f"database error ({exc})") from None

    def execute(self, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one read statement and return all rows."""
        with self._using() as conn:
            try:
                return conn.execute(sql, parameters).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self._error(f"database error ({exc})") from None

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"`` when the file is sound."""
        rows = self.execute("PRAGMA integrity_check")
        return "\n".join(str(row[0]) for row in rows)

    def schema_version(self) -> int:
        return int(self.execute("PRAGMA user_version")[0][0])

    def close(self) -> None:
        """Close every connection this store opened, each once no thread uses
        it (waiting at most the busy timeout; one still in use then is left
        to the process's end); later calls raise :class:`StoreError`."""
        self._closed = True
        with self._lock:
            connections, self._connections = self._connections, []
            guards = {key: self._guards.pop(key) for key in list(self._guards)}
        deadline = time.monotonic() + self.busy_timeout
        for conn in connections:
            guard = guards.get(id(conn))
            if guard is not None and not guard.acquire(timeout=max(0.0, deadline - time.monotonic())):
                log.warning("%s: a connection still in use at close is left open", self.path)
                continue
            try:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            finally:
                if guard is not None:
                    guard.release()
