"""The enrolment database: one SQLite file of TOTP secrets, apart from nxauth's store.

Created with mode 0600 from its first byte (``O_CREAT | O_EXCL``), in a
directory created 0700; a file that group or others can read is refused, as
sshd refuses a private key with loose permissions.  WAL journal and a busy
timeout, so the logins of a server and the ``nxauth-totp`` command can use
the file at the same time; every write is one statement or one
``BEGIN IMMEDIATE`` transaction, so a killed process leaves it consistent.

Replay protection lives here: :meth:`TotpStore.claim_step` records the time
step of an accepted code with one conditional ``UPDATE`` that succeeds only
when the step is later than the last one accepted, so two logins racing with
the same code cannot both win, whichever process they run in.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

import nxauth

__all__ = ["SCHEMA_VERSION", "AlreadyEnrolledError", "EnrolledUser", "Enrolment", "TotpStore", "TotpStoreError"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS totp_users (
    username TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    last_step INTEGER NOT NULL DEFAULT -1,
    enrolled REAL NOT NULL,
    last_used REAL
) WITHOUT ROWID
"""
SCHEMA_VERSION: Final = 1
BUSY_TIMEOUT: Final = 30.0


class TotpStoreError(nxauth.BackendError):
    """The enrolment database is unusable (unreadable, loose permissions,
    corrupt, of a newer schema).  The message names the file and never holds
    a secret."""


@final
class AlreadyEnrolledError(TotpStoreError):
    """``enroll`` without ``force`` for a user who is already enrolled."""


@final
@dataclass(frozen=True, slots=True)
class Enrolment:
    """One user's enrolment, as the backend reads it.  ``secret`` is a
    :class:`nxauth.Secret` (redacted ``repr``); ``last_step`` is the time step
    of the last accepted code (-1: none yet)."""

    username: str
    secret: nxauth.Secret
    last_step: int


@final
@dataclass(frozen=True, slots=True)
class EnrolledUser:
    """One line of ``nxauth-totp list``: no secret in it."""

    username: str
    enrolled: float
    last_used: float | None


@final
class TotpStore:
    """The enrolment database at ``path``.  Opened on first use; thread-safe
    (one connection per thread, and per process after a fork)."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._ready = False
        self._closed = False

    def __repr__(self) -> str:
        return f"TotpStore({str(self.path)!r})"

    # ------------------------------------------------------------ opening

    def _error(self, message: str) -> TotpStoreError:
        return TotpStoreError(f"{self.path}: {message}")

    def _make_parents(self) -> None:
        """Every missing directory up to the file's, each 0700 whatever the
        umask (``mkdir(parents=True)`` gives the mode to the last one only)."""
        missing: list[Path] = []
        directory = self.path.parent
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for directory in reversed(missing):
            try:
                directory.mkdir(mode=0o700)
            except FileExistsError:
                continue  # made meanwhile: checked below like any existing directory
            except OSError as exc:
                raise self._error(f"cannot create directory {directory}: {exc.strerror}") from None
            os.chmod(directory, 0o700)

    def _create(self) -> None:
        self._make_parents()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except FileExistsError:
            return  # another process created it first: checked below like any existing file
        except OSError as exc:
            raise self._error(f"cannot create: {exc.strerror}") from None
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)

    def _check_owner(self, info: os.stat_result, what: str) -> None:
        """Secrets are trusted only from this user's (or root's) files: another
        account's file, or a directory others may write, could be a planted one."""
        if info.st_uid not in (os.geteuid(), 0):
            raise self._error(f"{what} belongs to uid {info.st_uid}, not to this user or root; refused")

    def _check_file(self) -> None:
        try:
            info = self.path.lstat()
        except FileNotFoundError:
            self._create()
            info = self.path.lstat()
        except OSError as exc:
            raise self._error(f"cannot stat: {exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):
            raise self._error("not a regular file")
        self._check_owner(info, "the file")
        try:
            parent = self.path.parent.stat()
        except OSError as exc:
            raise self._error(f"cannot stat its directory: {exc.strerror}") from None
        self._check_owner(parent, "its directory")
        if parent.st_mode & 0o022:
            raise self._error(
                f"its directory {self.path.parent} may be written by group or others (mode "
                f"{parent.st_mode & 0o777:o}): its files could be replaced; chmod go-w it"
            )
        if info.st_mode & 0o077:
            raise self._error(
                f"group or others have access (mode {info.st_mode & 0o777:o}); it holds secrets: chmod 600 it"
            )

    def _open(self) -> None:
        """Check the file and bring its schema up to date, once per store."""
        with self._lock:
            if self._ready:
                return
            self._check_file()
            conn = self._connect()
            try:
                with self._write(conn):
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                    if version > SCHEMA_VERSION:
                        raise self._error(
                            f"schema version {version} is newer than this nxauth-totp understands ({SCHEMA_VERSION})"
                        )
                    if version < SCHEMA_VERSION:
                        conn.execute(SCHEMA)
                        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
            except sqlite3.DatabaseError as exc:
                raise self._error(f"not a usable database ({exc})") from None
            self._ready = True

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._error(f"cannot open ({exc})") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._error(f"not a usable database ({exc})") from None
        self._connections.append(conn)
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise self._error("closed")
        if not self._ready:
            self._open()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            with self._lock:
                conn = self._connect()
        return conn

    @contextlib.contextmanager
    def _write(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        conn.execute("BEGIN IMMEDIATE")  # waits for other writers up to the busy timeout
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._error(f"database error ({exc})") from None

    # ------------------------------------------------------------ use

    def lookup(self, username: str) -> Enrolment | None:
        """The enrolment of ``username``, or ``None``."""
        with self._errors():
            row = (
                self._connection()
                .execute("SELECT secret, last_step FROM totp_users WHERE username = ?", (username,))
                .fetchone()
            )
        if row is None:
            return None
        return Enrolment(username, nxauth.Secret(row[0]), int(row[1]))

    def claim_step(self, username: str, secret: nxauth.Secret, step: int, now: float) -> bool:
        """Record ``step`` as the last accepted time step of ``username``,
        atomically, if it is later than the one recorded and the user is still
        enrolled with ``secret``.  False: the step (or a later one) was already
        used, or the enrolment changed meanwhile."""
        with self._errors():
            cursor = self._connection().execute(
                "UPDATE totp_users SET last_step = ?, last_used = ? "
                "WHERE username = ? AND secret = ? AND last_step < ?",
                (step, now, username, secret.reveal(), step),
            )
        return cursor.rowcount == 1

    def enroll(self, username: str, secret: nxauth.Secret, now: float, *, force: bool = False) -> bool:
        """Store ``secret`` for ``username``.  Raises :class:`AlreadyEnrolledError`
        if the user is enrolled, unless ``force`` (then the old secret is
        replaced and its replay record reset).  Returns True if it replaced one."""
        with self._errors():
            conn = self._connection()
            with self._write(conn):
                exists = conn.execute("SELECT 1 FROM totp_users WHERE username = ?", (username,)).fetchone()
                if exists is not None and not force:
                    raise AlreadyEnrolledError(f"{username} is already enrolled")
                conn.execute(
                    "INSERT INTO totp_users (username, secret, last_step, enrolled, last_used) "
                    "VALUES (?, ?, -1, ?, NULL) "
                    "ON CONFLICT (username) DO UPDATE SET "
                    "secret = excluded.secret, last_step = -1, enrolled = excluded.enrolled, last_used = NULL",
                    (username, secret.reveal(), now),
                )
        return exists is not None

    def remove(self, username: str) -> bool:
        """Forget ``username``'s enrolment; False if there was none."""
        with self._errors():
            cursor = self._connection().execute("DELETE FROM totp_users WHERE username = ?", (username,))
        return cursor.rowcount == 1

    def users(self) -> list[EnrolledUser]:
        """Every enrolled user, by name (without the secrets)."""
        with self._errors():
            rows = (
                self._connection()
                .execute("SELECT username, enrolled, last_used FROM totp_users ORDER BY username")
                .fetchall()
            )
        return [EnrolledUser(str(name), float(enrolled), last) for name, enrolled, last in rows]

    def close(self) -> None:
        """Close every connection this store opened."""
        self._closed = True
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()
