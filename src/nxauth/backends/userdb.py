"""The users table of the embedded store: the password database and the
users database (the allowlist) in one.

A row is a user by canonical name, with an nxauth password hash or none (a
user listed for system authentication only), enabled or disabled, a free
comment, and created/changed timestamps.  Every write is one ``BEGIN
IMMEDIATE`` transaction; hashes are computed before it begins, so the write
lock is held for microseconds.  Names go through the core's
:func:`~nxauth.usernames.normalize_username` and then stricter rules of the
store (:func:`validate_username`), so "Alice" and "alice" (under case
folding), or composed and decomposed "é", are one user.

Import is parse-then-write: :func:`parse_import` checks every line (name,
hash, duplicates) and reports each bad line by number; only a file without
errors is written, in one transaction, so nothing is ever half-imported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, final

from nxauth.errors import NxauthError
from nxauth.store.protocol import Store
from nxauth.usernames import InvalidUsername, normalize_username

if TYPE_CHECKING:
    from nxauth.plugins.registry import BackendContext

__all__ = [
    "MAX_COMMENT_LENGTH",
    "MAX_USERNAME_LENGTH",
    "ImportEntry",
    "ImportFormatError",
    "ImportSummary",
    "NoSuchUser",
    "UserDatabase",
    "UserDatabaseError",
    "UserExists",
    "UserRecord",
    "check_comment",
    "parse_import",
    "user_database",
    "validate_username",
]

MAX_USERNAME_LENGTH: Final = 256
MAX_COMMENT_LENGTH: Final = 256
_REFUSED_IN_NAMES: Final = {"/": "'/'", ":": "':'"}
#: At most this many bad lines are reported by one failed import.
MAX_REPORTED_PROBLEMS: Final = 100

Progress = Callable[[int, int], None]


class UserDatabaseError(NxauthError):
    """Base of the users table's errors (the message names the user)."""


@final
class UserExists(UserDatabaseError):
    """A user of that canonical name is already in the table."""

    def __init__(self, username: str) -> None:
        self.username = username
        super().__init__(f"user {username!r} already exists")


@final
class NoSuchUser(UserDatabaseError, LookupError):
    """No user of that canonical name is in the table."""

    def __init__(self, username: str) -> None:
        self.username = username
        super().__init__(f"no such user {username!r}")


@final
class ImportFormatError(UserDatabaseError, ValueError):
    """Lines of an import that cannot be used; nothing was imported.

    ``problems`` lists ``(line number, message)`` pairs (1-based, at most
    :data:`MAX_REPORTED_PROBLEMS`); ``count`` is how many lines were bad.
    """

    def __init__(self, problems: Sequence[tuple[int, str]], count: int | None = None) -> None:
        self.problems = list(problems)
        self.count = len(self.problems) if count is None else count
        lineno, message = self.problems[0]
        more = f" (and {self.count - 1} more bad line{'s' if self.count > 2 else ''})" if self.count > 1 else ""
        super().__init__(f"line {lineno}: {message}{more}; nothing imported")


@final
@dataclass(frozen=True, slots=True)
class UserRecord:
    """One row of the users table.  The hash is left out of the ``repr``."""

    username: str
    password_hash: str | None = field(repr=False)
    enabled: bool
    comment: str
    created: float
    changed: float

    @property
    def has_password(self) -> bool:
        return self.password_hash is not None


@final
@dataclass(frozen=True, slots=True)
class ImportEntry:
    """One parsed import line: a canonical name and a checked hash (or none)."""

    lineno: int
    username: str
    password_hash: str | None = field(repr=False)


@final
@dataclass(frozen=True, slots=True)
class ImportSummary:
    added: int
    updated: int
    unchanged: int


def validate_username(raw: object, *, case: str = "fold", max_length: int = MAX_USERNAME_LENGTH) -> str:
    """The canonical name for the users table, or :class:`InvalidUsername`.

    The core's rules (:func:`normalize_username`: NFC, case folding, no
    control characters, at most ``max_length`` characters), then the
    store's: no ``/``, ``:`` or white space anywhere, no leading ``-`` (it
    would read as an option on a command line).
    """
    name = normalize_username(raw, case=case, max_length=min(max_length, MAX_USERNAME_LENGTH))
    for char in name:
        if char in _REFUSED_IN_NAMES:
            raise InvalidUsername(
                f"{_REFUSED_IN_NAMES[char]} is not allowed in a username", "username-refused-character"
            )
        if char.isspace():
            raise InvalidUsername(
                f"white space (U+{ord(char):04X}) is not allowed in a username", "username-refused-character"
            )
    if name.startswith("-"):
        raise InvalidUsername("a username cannot begin with '-'", "username-leading-dash")
    return name


def check_comment(comment: str) -> str:
    """Return ``comment`` if it can be stored (printable, at most
    :data:`MAX_COMMENT_LENGTH` characters), else raise :class:`UserDatabaseError`."""
    if not isinstance(comment, str):
        raise UserDatabaseError("a comment is a str")
    if len(comment) > MAX_COMMENT_LENGTH:
        raise UserDatabaseError(f"comment longer than {MAX_COMMENT_LENGTH} characters")
    if not comment.isprintable():
        raise UserDatabaseError("control characters are not allowed in a comment")
    return comment


def parse_import(
    lines: Iterable[str | bytes],
    *,
    canonical: Callable[[str], str],
    check_hash: Callable[[str], object],
    progress: Progress | None = None,
    total: int = 0,
) -> list[ImportEntry]:
    """Parse an htpasswd file or ``user:hash`` lines (pure: no I/O).

    Blank lines and lines starting with ``#`` are skipped; a line with a
    bare name lists the user without a password.  ``canonical`` validates a
    name (raising :class:`InvalidUsername`), ``check_hash`` a hash (raising
    ``ValueError``).  Raises :class:`ImportFormatError` listing every bad line:
    undecodable, malformed, invalid name or hash, or a name that appears
    twice (after normalization).
    """
    entries: list[ImportEntry] = []
    seen: dict[str, int] = {}
    problems: list[tuple[int, str]] = []
    bad = 0

    def problem(lineno: int, message: str) -> None:
        nonlocal bad
        bad += 1
        if len(problems) < MAX_REPORTED_PROBLEMS:
            problems.append((lineno, message))

    for lineno, raw in enumerate(lines, 1):
        if progress is not None and lineno % 1000 == 0:
            progress(lineno, total)
        if isinstance(raw, bytes):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                problem(lineno, "not valid UTF-8")
                continue
        else:
            line = raw
        line = line.removesuffix("\n").removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name_text, colon, hash_text = line.partition(":")
        if colon and not hash_text:
            problem(lineno, "empty hash after ':' (write the bare name to list a user without a password)")
            continue
        if ":" in hash_text:
            problem(lineno, "more than one ':' (expected user:hash)")
            continue
        try:
            name = canonical(name_text)
        except InvalidUsername as exc:
            problem(lineno, f"invalid username: {exc}")
            continue
        password_hash: str | None = None
        if colon:
            try:
                check_hash(hash_text)
            except ValueError as exc:
                problem(lineno, f"user {name!r}: {exc}")
                continue
            password_hash = hash_text
        first = seen.setdefault(name, lineno)
        if first != lineno:
            problem(lineno, f"user {name!r} already appears on line {first}")
            continue
        entries.append(ImportEntry(lineno, name, password_hash))
    if problems:
        raise ImportFormatError(problems, bad)
    return entries


def _record(row: tuple[object, ...]) -> UserRecord:
    username, password_hash, enabled, comment, created, changed = row
    return UserRecord(
        str(username),
        None if password_hash is None else str(password_hash),
        bool(enabled),
        str(comment),
        float(created),  # type: ignore[arg-type]
        float(changed),  # type: ignore[arg-type]
    )


_COLUMNS: Final = "username, password_hash, enabled, comment, created, changed"


@final
class UserDatabase:
    """The users table over a :class:`nxauth.Store` (or a callable
    that opens it on first use).

    ``case`` and ``max_length`` are the configuration's ``usernames``
    settings, so names are canonical exactly as the session makes them.
    Writers raise :class:`UserExists`, :class:`NoSuchUser`,
    :class:`InvalidUsername` or :class:`~nxauth.StoreError`.
    """

    def __init__(
        self,
        store: Store | Callable[[], Store],
        *,
        case: str = "fold",
        max_length: int = MAX_USERNAME_LENGTH,
        clock: Callable[[], float] = time.time,
        node: str | None = None,
    ) -> None:
        self._store = store
        self.case = case
        self.max_length = max_length
        self.clock = clock
        #: This host's node name in a cluster (``[store] node``): its own
        #: password of a user, where one is set, wins over the user's default.
        self.node = node

    def __repr__(self) -> str:
        return f"UserDatabase({self.store!r})" if isinstance(self._store, Store) else "UserDatabase(<lazy store>)"

    @property
    def store(self) -> Store:
        return self._store if isinstance(self._store, Store) else self._store()

    def canonical(self, name: object) -> str:
        """The canonical name, or :class:`InvalidUsername`."""
        return validate_username(name, case=self.case, max_length=self.max_length)

    # ------------------------------------------------------------ reading

    def get(self, name: str) -> UserRecord | None:
        """The user's row, or ``None`` (also for a name that could never be
        stored).  One primary-key lookup."""
        try:
            username = self.canonical(name)
        except InvalidUsername:
            return None
        if self.node is None:
            rows = self.store.execute(f"SELECT {_COLUMNS} FROM users WHERE username = ?", (username,))  # noqa: S608
        else:
            rows = self.store.execute(
                "SELECT u.username, COALESCE(n.password_hash, u.password_hash), u.enabled, u.comment, u.created, "
                "u.changed FROM users u LEFT JOIN node_passwords n ON n.node = ? AND n.username = u.username "
                "WHERE u.username = ?",
                (self.node, username),
            )
        return _record(rows[0]) if rows else None

    def node_passwords(self, name: str) -> list[str]:
        """The nodes on which the user has a password of its own."""
        rows = self.store.execute(
            "SELECT node FROM node_passwords WHERE username = ? ORDER BY node", (self.canonical(name),)
        )
        return [str(row[0]) for row in rows]

    def require(self, name: str) -> UserRecord:
        """Like :meth:`get`, but raises :class:`NoSuchUser` (or
        :class:`InvalidUsername` for a name that could never be stored)."""
        username = self.canonical(name)
        record = self.get(username)
        if record is None:
            raise NoSuchUser(username)
        return record

    def list_users(self) -> list[UserRecord]:
        """Every user, by canonical name."""
        rows = self.store.execute(f"SELECT {_COLUMNS} FROM users ORDER BY username")  # noqa: S608
        return [_record(row) for row in rows]

    def count(self) -> int:
        return int(self.store.execute("SELECT count(*) FROM users")[0][0])

    # ------------------------------------------------------------ writing

    def add(
        self, name: str, *, password_hash: str | None = None, enabled: bool = True, comment: str = ""
    ) -> UserRecord:
        """Add a user (with a hash, or none: listed for system authentication)."""
        username = self.canonical(name)
        check_comment(comment)
        now = self.clock()
        with self.store.transaction() as tx:
            cursor = tx.execute(
                f"INSERT INTO users ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (username) DO NOTHING",  # noqa: S608
                (username, password_hash, int(enabled), comment, now, now),
            )
            if cursor.rowcount != 1:
                raise UserExists(username)
        return UserRecord(username, password_hash, enabled, comment, now, now)

    def remove(self, name: str) -> None:
        username = self.canonical(name)
        with self.store.transaction() as tx:
            if tx.execute("DELETE FROM users WHERE username = ?", (username,)).rowcount != 1:
                raise NoSuchUser(username)
            tx.execute("DELETE FROM node_passwords WHERE username = ?", (username,))
            tx.execute("DELETE FROM grants WHERE username = ?", (username,))

    def _update(self, name: str, assignments: str, values: tuple[object, ...]) -> None:
        username = self.canonical(name)
        with self.store.transaction() as tx:
            cursor = tx.execute(
                f"UPDATE users SET {assignments}, changed = ? WHERE username = ?",  # noqa: S608 - fixed column names
                (*values, self.clock(), username),
            )
            if cursor.rowcount != 1:
                raise NoSuchUser(username)

    def set_password(self, name: str, password_hash: str | None, *, node: str | None = None) -> None:
        """Set the user's hash (``None``: no nxauth password any more); with
        ``node``, the user's own password on that node (``None``: the node
        uses the user's default again)."""
        if node is None:
            self._update(name, "password_hash = ?", (password_hash,))
            return
        username = self.canonical(name)
        now = self.clock()
        with self.store.transaction() as tx:
            if tx.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone() is None:
                raise NoSuchUser(username)
            if password_hash is None:
                tx.execute("DELETE FROM node_passwords WHERE node = ? AND username = ?", (node, username))
            else:
                tx.execute(
                    "INSERT INTO node_passwords (node, username, password_hash, changed) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (node, username) DO UPDATE SET password_hash = excluded.password_hash, "
                    "changed = excluded.changed",
                    (node, username, password_hash, now),
                )
            tx.execute("UPDATE users SET changed = ? WHERE username = ?", (now, username))

    def set_enabled(self, name: str, enabled: bool) -> bool:
        """Enable or disable; return False if it already was so."""
        username = self.canonical(name)
        with self.store.transaction() as tx:
            cursor = tx.execute(
                "UPDATE users SET enabled = ?, changed = ? WHERE username = ? AND enabled != ?",
                (int(enabled), self.clock(), username, int(enabled)),
            )
            if cursor.rowcount == 1:
                return True
            if tx.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone() is None:
                raise NoSuchUser(username)
            return False

    def enable(self, name: str) -> bool:
        return self.set_enabled(name, True)

    def disable(self, name: str) -> bool:
        return self.set_enabled(name, False)

    def set_comment(self, name: str, comment: str) -> None:
        self._update(name, "comment = ?", (check_comment(comment),))

    def replace_hash(self, name: str, old_hash: str, new_hash: str) -> bool:
        """Upgrade a hash after a successful login, only if it is still
        ``old_hash``: a password changed meanwhile is never overwritten.
        Returns True if the row was updated.  ``changed`` is left alone (a
        rehash is not an administrative change)."""
        username = self.canonical(name)
        with self.store.transaction() as tx:
            if self.node is not None:  # the node's own password, if that is the one that matched
                cursor = tx.execute(
                    "UPDATE node_passwords SET password_hash = ? WHERE node = ? AND username = ? AND password_hash = ?",
                    (new_hash, self.node, username, old_hash),
                )
                if cursor.rowcount == 1:
                    return True
                own = tx.execute(
                    "SELECT 1 FROM node_passwords WHERE node = ? AND username = ?", (self.node, username)
                ).fetchone()
                if own is not None:
                    return False  # the node's password changed meanwhile: the default was not the one used
            cursor = tx.execute(
                "UPDATE users SET password_hash = ? WHERE username = ? AND password_hash = ?",
                (new_hash, username, old_hash),
            )
            return cursor.rowcount == 1

    def import_entries(
        self, entries: Sequence[ImportEntry], *, update: bool = False, progress: Progress | None = None
    ) -> ImportSummary:
        """Write parsed entries in one transaction: all or nothing.

        A user already in the table is an error (every such line is
        reported, nothing is written) unless ``update``: then its hash is
        replaced (a bare-name line leaves an existing user as it is).
        """
        now = self.clock()
        added = updated = unchanged = 0
        conflicts: list[tuple[int, str]] = []
        total = len(entries)
        with self.store.transaction() as tx:
            for index, entry in enumerate(entries, 1):
                if progress is not None and index % 1000 == 0:
                    progress(index, total)
                cursor = tx.execute(
                    f"INSERT INTO users ({_COLUMNS}) VALUES (?, ?, 1, '', ?, ?) "  # noqa: S608
                    "ON CONFLICT (username) DO NOTHING",
                    (entry.username, entry.password_hash, now, now),
                )
                if cursor.rowcount == 1:
                    added += 1
                elif not update:
                    conflicts.append((entry.lineno, f"user {entry.username!r} already exists (import with update)"))
                elif entry.password_hash is None:
                    unchanged += 1
                else:
                    tx.execute(
                        "UPDATE users SET password_hash = ?, changed = ? WHERE username = ?",
                        (entry.password_hash, now, entry.username),
                    )
                    updated += 1
            if conflicts:
                raise ImportFormatError(conflicts[:MAX_REPORTED_PROBLEMS], len(conflicts))
        if progress is not None:
            progress(total, total)
        return ImportSummary(added, updated, unchanged)


def user_database(context: BackendContext) -> UserDatabase:
    """The users table of a backend's authenticator: its store (opened on
    first use) and its username rules."""
    usernames = context.config.usernames
    return UserDatabase(
        lambda: context.store, case=usernames.case, max_length=usernames.max_length, node=context.config.store.node
    )
