"""``nxauth useradd|userdel|passwd|userenable|userdisable|userlist|import``:
the users table, in the spirit of ``nxserver --useradd``.

A password is never accepted on the command line: it comes from the
terminal (asked twice, not echoed) or, with ``--password-stdin``, from the
first line of standard input.  These commands build only what they need
from the configuration (the store, the username rules and the ``passwords``
instance's hashing parameters), so they work even when another backend,
say LDAP, cannot be built on this host.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hmac
import io
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, Final

from nxauth.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, CommandError, audited, print_json
from nxauth.config import BackendConfig, Config, default_config_path, load_config
from nxauth.files import read_small
from nxauth.model import Secret
from nxauth.plugins.registry import BackendContext
from nxauth.store import open_store
from nxauth.store.protocol import Store
from nxauth.usernames import InvalidUsername, escape_for_log

# hashing and userdb are imported by the commands that use them: building
# the parser (on every nxauth command, sshd's included) stays cheap.
if TYPE_CHECKING:
    from nxauth.backends.hashing import PasswordHasher
    from nxauth.backends.userdb import ImportFormatError, UserDatabase, UserRecord

#: Files with at least this many lines get a progress bar (on a terminal).
PROGRESS_MIN_LINES: Final = 2000
#: The largest import file read (a FIFO, device or directory is refused at once).
IMPORT_LIMIT: Final = 256 * 1024 * 1024


def register(subparsers: Any) -> None:
    def command(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text, description=handler.__doc__)
        parser.set_defaults(handler=handler)
        return parser

    def password_source(parser: argparse.ArgumentParser, none_help: str) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--password-stdin", action="store_true", help="read the password from the first line of stdin"
        )
        group.add_argument("--no-password", action="store_true", help=none_help)

    useradd = command("useradd", cmd_useradd, "add a user to the users database")
    useradd.add_argument("user")
    password_source(useradd, "no nxauth password: listed for system authentication only")
    useradd.add_argument("--disabled", action="store_true", help="add the user disabled")
    useradd.add_argument("--comment", default="", help="a free comment (printable, at most 256 characters)")

    userdel = command("userdel", cmd_userdel, "remove a user")
    userdel.add_argument("user")

    passwd = command("passwd", cmd_passwd, "set or remove a user's nxauth password")
    passwd.add_argument("user")
    passwd.add_argument("--node", help="the user's own password on this node of the cluster (docs/deploy-cluster.md)")
    password_source(passwd, "remove the nxauth password (the user stays listed; with --node: the node's own)")

    for name, handler, verb in (("userenable", cmd_userenable, "enable"), ("userdisable", cmd_userdisable, "disable")):
        command(name, handler, f"{verb} a user").add_argument("user")

    userlist = command("userlist", cmd_userlist, "list the users")
    userlist.add_argument("--json", action="store_true", help="print as JSON")

    importer = command("import", cmd_import, "import users from an htpasswd file or user:hash lines")
    importer.add_argument("file", help="the file ('-': standard input)")
    importer.add_argument("--update", action="store_true", help="replace the hash of users already listed")
    importer.add_argument("--dry-run", action="store_true", help="check the file, write nothing")


# ------------------------------------------------------------ the users table of the configuration


class _Table:
    """The users table of the configuration and the hasher of its ``passwords`` instance."""

    __slots__ = ("config", "db", "hasher")

    def __init__(self, db: UserDatabase, hasher: PasswordHasher, config: Config) -> None:
        self.db = db
        self.hasher = hasher
        self.config = config

    def audited(self, action: str, username: str = "", node: str = "", target: str = "") -> None:
        """The change is committed: record it with the acting account."""
        audited(self.config, self.db.store, action, username=username, node=node, target=target)


def _load_config(args: argparse.Namespace) -> Config:
    path = args.config or default_config_path()
    return load_config(path) if path is not None else Config()


def _passwords_instance(config: Config) -> BackendConfig:
    """The ``passwords`` instance whose hashing parameters apply: the first
    one in the auth stack, else the first declared, else the implicit one."""
    implicit = BackendConfig("passwords", "passwords", implicit=True)
    for entry in config.auth:
        backend = config.backends.get(entry.use)
        if backend is None and entry.use == "passwords":
            return implicit
        if backend is not None and backend.kind == "passwords":
            return backend
    declared = [b for b in config.backends.values() if b.kind == "passwords"]
    return declared[0] if declared else implicit


@contextlib.contextmanager
def _open_table(args: argparse.Namespace) -> Iterator[_Table]:
    from nxauth.backends.passwords import hasher_from_options
    from nxauth.backends.userdb import user_database

    config = _load_config(args)
    instance = _passwords_instance(config)
    store: Store | None = None

    def the_store() -> Store:
        nonlocal store
        if store is None:
            store = open_store(config)
        return store

    context = BackendContext(instance, root=config, store=the_store)
    hasher = hasher_from_options(context)
    context.options.check_unused()
    try:
        yield _Table(user_database(context), hasher, config)
    finally:
        if store is not None:
            store.close()


def _canonical(table: _Table, raw: str) -> str:
    try:
        return table.db.canonical(raw)
    except InvalidUsername as exc:
        raise CommandError(f'invalid username "{escape_for_log(raw, quoted=True)}": {exc}', EXIT_USAGE) from None


def _named(name: str, raw: str) -> str:
    return name if name == raw else f"{name} (canonical form of {escape_for_log(raw)})"


# ------------------------------------------------------------ passwords


def _password_from_stdin() -> Secret:
    """The first line of stdin, its line ending stripped; a line longer than
    the limit is refused after reading just past the limit."""
    from nxauth.backends.hashing import MAX_PASSWORD_BYTES

    limit = MAX_PASSWORD_BYTES + 3
    stream = getattr(sys.stdin, "buffer", None)
    if stream is not None:
        raw: bytes = stream.readline(limit)
    else:
        raw = sys.stdin.readline(limit).encode("utf-8", "surrogateescape")
    line = raw.removesuffix(b"\n").removesuffix(b"\r")
    if len(line) > MAX_PASSWORD_BYTES:
        raise CommandError(f"password longer than {MAX_PASSWORD_BYTES} bytes; nothing changed")
    try:
        return Secret(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise CommandError("the password is not valid UTF-8; nothing changed") from None


def _password_from_tty(username: str) -> Secret:
    import getpass

    if not sys.stdin.isatty():
        raise CommandError("no terminal to ask for the password: use --password-stdin (or --no-password)", EXIT_USAGE)
    try:
        first = Secret(getpass.getpass(f"New nxauth password for {username}: "))
        second = Secret(getpass.getpass("Retype the new password: "))
    except EOFError:
        raise CommandError("no password given; nothing changed") from None
    if not hmac.compare_digest(
        first.reveal().encode("utf-8", "surrogatepass"), second.reveal().encode("utf-8", "surrogatepass")
    ):
        raise CommandError("the passwords do not match; nothing changed")
    return first


def _new_hash(args: argparse.Namespace, table: _Table, username: str) -> str | None:
    """The hash to store: ``None`` with ``--no-password``.  Hashed here,
    before any transaction begins."""
    from nxauth.backends.hashing import password_refusal

    if args.no_password:
        return None
    password = _password_from_stdin() if args.password_stdin else _password_from_tty(username)
    problem = password_refusal(password)
    if problem is not None:
        hint = " (use --no-password for a user without one)" if password.is_empty() else ""
        raise CommandError(f"{problem}{hint}; nothing changed")
    return table.hasher.hash(password)


# ------------------------------------------------------------ commands


def cmd_useradd(args: argparse.Namespace) -> int:
    """Add a user to the users database (the allowlist and the password
    database).  The password is asked on the terminal, read from stdin
    with --password-stdin, or not set with --no-password (the user is then
    listed for system authentication only)."""
    from nxauth.backends.userdb import UserDatabaseError, UserExists, check_comment

    try:
        check_comment(args.comment)
    except UserDatabaseError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    with _open_table(args) as table:
        name = _canonical(table, args.user)
        if table.db.get(name) is not None:
            raise CommandError(f"user {name} already exists")
        password_hash = _new_hash(args, table, name)
        try:
            table.db.add(name, password_hash=password_hash, enabled=not args.disabled, comment=args.comment)
        except UserExists:
            raise CommandError(f"user {name} already exists") from None
        table.audited("user-add", name)
    state = "disabled" if args.disabled else "enabled"
    print(f"added user {_named(name, args.user)} ({state}, {'with' if password_hash else 'no'} nxauth password)")
    return EXIT_OK


def cmd_userdel(args: argparse.Namespace) -> int:
    """Remove a user from the users database."""
    from nxauth.backends.userdb import NoSuchUser

    with _open_table(args) as table:
        name = _canonical(table, args.user)
        try:
            table.db.remove(name)
        except NoSuchUser:
            raise CommandError(f"no such user {name}") from None
        table.audited("user-remove", name)
    print(f"removed user {_named(name, args.user)}")
    return EXIT_OK


def cmd_passwd(args: argparse.Namespace) -> int:
    """Set a user's nxauth password (asked on the terminal, or read from
    stdin with --password-stdin), or remove it with --no-password."""
    from nxauth.backends.userdb import NoSuchUser

    with _open_table(args) as table:
        name = _canonical(table, args.user)
        if table.db.get(name) is None:
            raise CommandError(f"no such user {name}")
        node = _known_node(table, args.node)
        password_hash = _new_hash(args, table, name)
        try:
            table.db.set_password(name, password_hash, node=node)
        except NoSuchUser:
            raise CommandError(f"no such user {name}") from None
        table.audited("password-set" if password_hash else "password-remove", name, node or "")
    where = f" on node {node}" if node else ""
    print(f"{'changed' if password_hash else 'removed'} the nxauth password of {_named(name, args.user)}{where}")
    return EXIT_OK


def _known_node(table: _Table, node: str | None) -> str | None:
    """``node`` if it is a registered node (a typo must not create a password nobody uses)."""
    if node is None:
        return None
    from nxauth.core.cluster import ClusterError, NodeRegistry

    try:
        known = NodeRegistry(table.db.store).get(node)
    except ClusterError as exc:
        raise CommandError(f"--node: {exc}", EXIT_USAGE) from None
    if known is None:
        raise CommandError(f"no node {node!r} (nxauth node list); nothing changed", EXIT_USAGE)
    return node


def _set_enabled(args: argparse.Namespace, enabled: bool) -> int:
    from nxauth.backends.userdb import NoSuchUser

    word = "enabled" if enabled else "disabled"
    with _open_table(args) as table:
        name = _canonical(table, args.user)
        try:
            changed = table.db.set_enabled(name, enabled)
        except NoSuchUser:
            raise CommandError(f"no such user {name}") from None
        if changed:
            table.audited("user-enable" if enabled else "user-disable", name)
    print(f"user {_named(name, args.user)} {word}" if changed else f"user {name} was already {word}")
    return EXIT_OK


def cmd_userenable(args: argparse.Namespace) -> int:
    """Enable a user."""
    return _set_enabled(args, True)


def cmd_userdisable(args: argparse.Namespace) -> int:
    """Disable a user: every login is denied until it is enabled again."""
    return _set_enabled(args, False)


def _timestamp(value: float) -> str:
    return datetime.datetime.fromtimestamp(value, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(record: UserRecord, hasher: PasswordHasher) -> dict[str, Any]:
    scheme = hasher.scheme_of(record.password_hash)
    if record.password_hash is not None and scheme is None:
        scheme = "unusable"
    return {
        "username": record.username,
        "enabled": record.enabled,
        "password": scheme,
        "created": _timestamp(record.created),
        "changed": _timestamp(record.changed),
        "comment": record.comment,
    }


def cmd_userlist(args: argparse.Namespace) -> int:
    """List the users: name, enabled, the scheme of the nxauth password (or
    none), created and changed times (UTC), comment."""
    with _open_table(args) as table:
        rows = [_row(record, table.hasher) for record in table.db.list_users()]
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        print("no users (an empty users database denies everyone)")
        return EXIT_OK
    header = ("USER", "STATUS", "PASSWORD", "CREATED", "CHANGED", "COMMENT")
    lines = [header] + [
        (
            escape_for_log(row["username"], 256),
            "enabled" if row["enabled"] else "disabled",
            row["password"] or "none",
            row["created"],
            row["changed"],
            escape_for_log(row["comment"], 256, quoted=True),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = sys.stdout
    for line in lines:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)))
        out.write(f"  {line[-1]}".rstrip() + "\n")
    return EXIT_OK


class _ProgressBar:
    """A one-line progress bar on stderr (only made when stderr is a terminal)."""

    def __init__(self, stream: IO[str], width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.phase = ""

    def __call__(self, done: int, total: int) -> None:
        total = max(total, 1)
        filled = self.width * min(done, total) // total
        self.stream.write(
            f"\r{self.phase:<9} [{'#' * filled}{'.' * (self.width - filled)}] {100 * done // total:3d}% {done}/{total}"
        )
        self.stream.flush()

    def end(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _report(label: str, exc: ImportFormatError) -> CommandError:
    for lineno, message in exc.problems:
        print(f"{label}:{lineno}: {message}", file=sys.stderr)
    if exc.count > len(exc.problems):
        print(f"{label}: ... and {exc.count - len(exc.problems)} more", file=sys.stderr)
    plural = "s" if exc.count != 1 else ""
    return CommandError(f"{label}: {exc.count} bad line{plural}; nothing imported")


def cmd_import(args: argparse.Namespace) -> int:
    """Import users from an htpasswd file or ``user:hash`` lines (argon2,
    bcrypt, sha512_crypt, sha256_crypt; a bare name lists a user without a
    password).  Every line is checked first: a bad line is reported with
    its number and nothing is imported.  The import is one transaction.
    Legacy hashes are upgraded to argon2id at each user's next login."""
    from nxauth.backends.userdb import ImportFormatError, parse_import

    label = "<stdin>" if args.file == "-" else args.file
    if args.file == "-":
        lines = sys.stdin.buffer.readlines()
    else:
        try:
            lines = io.BytesIO(read_small(args.file, limit=IMPORT_LIMIT)).readlines()
        except OSError as exc:
            raise CommandError(f"{args.file}: cannot read: {exc.strerror}", EXIT_ERROR) from None
    bar = _ProgressBar(sys.stderr) if len(lines) >= PROGRESS_MIN_LINES and sys.stderr.isatty() else None
    with _open_table(args) as table:
        try:
            if bar is not None:
                bar.phase = "checking"
            try:
                entries = parse_import(
                    lines,
                    canonical=table.db.canonical,
                    check_hash=table.hasher.check_hash,
                    progress=bar,
                    total=len(lines),
                )
                if args.dry_run:
                    print(f"{label}: {len(entries)} users, no bad line (dry run: nothing imported)")
                    return EXIT_OK
                if bar is not None:
                    bar.phase = "writing"
                summary = table.db.import_entries(entries, update=args.update, progress=bar)
            finally:
                if bar is not None:
                    bar.end()
        except ImportFormatError as exc:
            raise _report(label, exc) from None
        table.audited("import", target=f"{summary.added} added, {summary.updated} updated")
    print(f"{label}: {summary.added} added, {summary.updated} updated, {summary.unchanged} unchanged")
    return EXIT_OK
