"""nxauth.backends.userdb: the users table, canonical names, import."""

from __future__ import annotations

import sqlite3
import unicodedata
from pathlib import Path

import pytest

from nxauth import InvalidUsername
from nxauth.backends.userdb import (
    ImportEntry,
    ImportFormatError,
    ImportSummary,
    NoSuchUser,
    UserDatabase,
    UserDatabaseError,
    UserExists,
    UserRecord,
    parse_import,
    validate_username,
)
from nxauth.store.protocol import Store
from nxauth.store.sqlite import SqliteStore

HASH_A = "$2b$04$abcdefghijklmnopqrstuuX4hBmZq4eZmYFJ7V7QJRkm8sPAgkWLi"
HASH_B = "$6$rounds=1000$saltsalt$" + "B" * 86


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(any_store: Store) -> Store:
    """Every test here runs on the SQLite store and on PostgreSQL."""
    return any_store


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(store: Store, clock: Clock) -> UserDatabase:
    return UserDatabase(store, clock=clock)


def fake_check_hash(stored: str) -> str:
    if not stored.startswith("$"):
        raise ValueError("unknown hash format")
    return "fake"


# ------------------------------------------------------------ names

COMPOSED = unicodedata.normalize("NFC", "josé")
DECOMPOSED = unicodedata.normalize("NFD", "josé")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("a\x00b", "control", id="nul"),
        pytest.param("a\x1bb", "control", id="escape"),
        pytest.param("a\x7fb", "control", id="del"),
        pytest.param("a\u202eb", "control", id="bidi-override"),
        pytest.param("a/b", "'/'", id="slash"),
        pytest.param("a:b", "':'", id="colon"),
        pytest.param("a b", "white space", id="space"),
        pytest.param("a\tb", "control", id="tab"),
        pytest.param("a\u00a0b", "compatibility form", id="nbsp"),
        pytest.param("a\u3000b", "compatibility form", id="ideographic-space"),
        pytest.param(" alice", "leading or trailing", id="leading-space"),
        pytest.param("alice\n", "leading or trailing", id="trailing-newline"),
        pytest.param("x" * 257, "longer than 256", id="257-chars"),
        pytest.param("-rf", "begin with '-'", id="option-like"),
        pytest.param(42, "str", id="not-a-str"),
    ],
)
def test_invalid_usernames_refused(raw: object, message: str, db: UserDatabase) -> None:
    with pytest.raises(InvalidUsername, match=message):
        validate_username(raw)
    if isinstance(raw, str):
        with pytest.raises(InvalidUsername):
            db.add(raw)
        assert db.get(raw) is None
    assert db.count() == 0


def test_256_characters_accepted(db: UserDatabase) -> None:
    name = "x" * 256
    assert db.add(name).username == name
    assert db.get(name) is not None


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param("Alice", "alice", id="case"),
        pytest.param("ALICE", "aLiCe", id="case-both"),
        pytest.param(COMPOSED, DECOMPOSED, id="nfc-nfd"),
        pytest.param("STRASSE", "straße", id="casefold-sharp-s"),
    ],
)
def test_one_canonical_name_one_user(first: str, second: str, db: UserDatabase) -> None:
    added = db.add(first)
    with pytest.raises(UserExists):
        db.add(second)
    assert db.count() == 1
    record = db.get(second)
    assert record is not None
    assert record.username == added.username


def test_case_preserve_keeps_names_apart(store: Store) -> None:
    db = UserDatabase(store, case="preserve")
    db.add("Alice")
    db.add("alice")
    assert [r.username for r in db.list_users()] == ["Alice", "alice"]
    db.add(COMPOSED)
    with pytest.raises(UserExists):
        db.add(DECOMPOSED)  # NFC still applies


# ------------------------------------------------------------ rows


def test_add_get_list(db: UserDatabase, clock: Clock) -> None:
    record = db.add("Bob", password_hash=HASH_A, comment="from HR ticket 42")
    assert record == UserRecord("bob", HASH_A, True, "from HR ticket 42", clock.now, clock.now)
    assert db.get("BOB") == record
    db.add("alice")
    assert [r.username for r in db.list_users()] == ["alice", "bob"]
    alice = db.require("alice")
    assert not alice.has_password
    assert record.has_password
    assert HASH_A not in repr(record)


def test_add_disabled(db: UserDatabase) -> None:
    assert not db.add("carol", enabled=False).enabled
    assert not db.require("carol").enabled


def test_remove(db: UserDatabase) -> None:
    db.add("alice")
    db.remove("ALICE")
    assert db.get("alice") is None
    with pytest.raises(NoSuchUser, match="no such user 'alice'"):
        db.remove("alice")


def test_set_password_moves_changed_only(db: UserDatabase, clock: Clock) -> None:
    db.add("alice")
    clock.now += 60
    db.set_password("Alice", HASH_A)
    record = db.require("alice")
    assert record.password_hash == HASH_A
    assert record.changed == record.created + 60
    db.set_password("alice", None)
    assert not db.require("alice").has_password
    with pytest.raises(NoSuchUser):
        db.set_password("nobody", HASH_A)


def test_enable_disable(db: UserDatabase, clock: Clock) -> None:
    db.add("alice")
    clock.now += 1
    assert db.disable("alice") is True
    assert db.disable("alice") is False
    assert not db.require("alice").enabled
    assert db.enable("Alice") is True
    assert db.enable("alice") is False
    assert db.require("alice").enabled
    with pytest.raises(NoSuchUser):
        db.enable("nobody")
    with pytest.raises(NoSuchUser):
        db.disable("nobody")


def test_comment(db: UserDatabase) -> None:
    db.add("alice")
    db.set_comment("alice", "on leave")
    assert db.require("alice").comment == "on leave"
    for bad in ("line\nbreak", "x" * 257):
        with pytest.raises(UserDatabaseError):
            db.set_comment("alice", bad)
        with pytest.raises(UserDatabaseError):
            db.add("bob", comment=bad)
    assert db.get("bob") is None


def test_replace_hash_is_conditional(db: UserDatabase, clock: Clock) -> None:
    db.add("alice", password_hash=HASH_A)
    clock.now += 5
    assert db.replace_hash("alice", HASH_A, HASH_B) is True
    record = db.require("alice")
    assert record.password_hash == HASH_B
    assert record.changed == record.created  # a rehash is no administrative change
    # The password changed meanwhile: the stale upgrade must not overwrite it.
    db.set_password("alice", "$newer$")
    assert db.replace_hash("alice", HASH_B, HASH_A) is False
    assert db.require("alice").password_hash == "$newer$"
    assert db.replace_hash("nobody", HASH_A, HASH_B) is False


def test_require_unknown(db: UserDatabase) -> None:
    with pytest.raises(NoSuchUser):
        db.require("nobody")
    with pytest.raises(InvalidUsername):
        db.require("no/body")


def test_lazy_store(tmp_path: Path) -> None:
    opened: list[Store] = []

    def open_store() -> Store:
        if not opened:
            opened.append(SqliteStore(tmp_path / "lazy.db"))
        return opened[0]

    db = UserDatabase(open_store)
    assert "lazy" in repr(db)
    assert not (tmp_path / "lazy.db").exists()
    db.add("alice")
    assert db.count() == 1
    opened[0].close()


# ------------------------------------------------------------ import


def parse(text: str) -> list[ImportEntry]:
    return parse_import(text.splitlines(keepends=True), canonical=validate_username, check_hash=fake_check_hash)


def test_parse_htpasswd() -> None:
    entries = parse(f"# exported\n\nAlice:{HASH_A}\r\nbob:{HASH_B}\ncarol\n")
    assert entries == [
        ImportEntry(3, "alice", HASH_A),
        ImportEntry(4, "bob", HASH_B),
        ImportEntry(5, "carol", None),
    ]
    assert HASH_A not in repr(entries[0])


@pytest.mark.parametrize(
    ("text", "lineno", "message"),
    [
        pytest.param(f"alice:{HASH_A}\nbob:\n", 2, "empty hash", id="empty-hash"),
        pytest.param("alice:$1:2\n", 1, "more than one ':'", id="three-fields"),
        pytest.param("a b:$x\n", 1, "invalid username", id="space-in-name"),
        pytest.param(":$x\n", 1, "invalid username: empty", id="empty-name"),
        pytest.param("alice:plaintext\n", 1, "unknown hash format", id="bad-hash"),
        pytest.param(f"alice:{HASH_A}\nALICE:{HASH_B}\n", 2, "already appears on line 1", id="dup-case"),
        pytest.param(f"{COMPOSED}:$x\n{DECOMPOSED}:$y\n", 2, "already appears on line 1", id="dup-nfd"),
    ],
)
def test_parse_errors_name_the_line(text: str, lineno: int, message: str) -> None:
    with pytest.raises(ImportFormatError, match=message) as info:
        parse(text)
    assert info.value.problems[0][0] == lineno
    assert str(info.value).startswith(f"line {lineno}: ")
    assert "nothing imported" in str(info.value)


def test_parse_reports_every_bad_line_but_caps_the_list() -> None:
    lines = [b"good:$x\n"] + [b"bad line %d\n" % i for i in range(150)] + [b"\xff\xfe:$x\n"]
    with pytest.raises(ImportFormatError) as info:
        parse_import(lines, canonical=validate_username, check_hash=fake_check_hash)
    assert info.value.count == 151
    assert len(info.value.problems) == 100
    assert "and 150 more bad lines" in str(info.value)


def test_parse_undecodable_bytes() -> None:
    with pytest.raises(ImportFormatError, match="line 2: not valid UTF-8"):
        parse_import([b"a:$x\n", b"\xff:$y\n"], canonical=validate_username, check_hash=fake_check_hash)


def test_parse_progress() -> None:
    seen: list[tuple[int, int]] = []
    lines = [f"user{i}:$x\n" for i in range(2500)]
    parse_import(
        lines,
        canonical=validate_username,
        check_hash=fake_check_hash,
        progress=lambda d, t: seen.append((d, t)),
        total=2500,
    )
    assert seen == [(1000, 2500), (2000, 2500)]


def test_import_all_or_nothing(db: UserDatabase) -> None:
    db.add("carol", password_hash=HASH_A)
    entries = parse(f"alice:{HASH_A}\nbob\ncarol:{HASH_B}\n")
    with pytest.raises(ImportFormatError, match="line 3: user 'carol' already exists") as info:
        db.import_entries(entries)
    assert info.value.count == 1
    assert db.count() == 1  # alice and bob were rolled back
    assert db.require("carol").password_hash == HASH_A


def test_import_update(db: UserDatabase) -> None:
    db.add("carol", password_hash=HASH_A)
    db.add("dave", password_hash=HASH_A)
    summary = db.import_entries(parse(f"alice:{HASH_A}\nbob\ncarol:{HASH_B}\ndave\n"), update=True)
    assert summary == ImportSummary(added=2, updated=1, unchanged=1)
    assert db.require("carol").password_hash == HASH_B
    assert db.require("dave").password_hash == HASH_A
    assert not db.require("bob").has_password


def test_import_many_with_progress(db: UserDatabase) -> None:
    seen: list[int] = []
    entries = [ImportEntry(i, f"user{i}", HASH_A) for i in range(1, 3001)]
    summary = db.import_entries(entries, progress=lambda done, total: seen.append(done))
    assert summary.added == 3000
    assert seen == [1000, 2000, 3000, 3000]
    assert db.count() == 3000


def test_store_errors_propagate(tmp_path: Path) -> None:
    path = tmp_path / "nxauth.db"
    store = SqliteStore(path)
    db = UserDatabase(store)
    db.add("alice")
    store.close()
    with pytest.raises(Exception, match="closed"):
        db.get("alice")


def test_schema_is_the_cores(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "nxauth.db")
    columns = [row[1] for row in store.execute("PRAGMA table_info(users)")]
    assert columns == ["username", "password_hash", "enabled", "comment", "created", "changed"]
    with pytest.raises(sqlite3.Error):
        store.connection().execute("INSERT INTO users (username) VALUES ('x')")  # created/changed are required
