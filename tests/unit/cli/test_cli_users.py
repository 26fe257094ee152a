"""``nxauth useradd|userdel|passwd|userenable|userdisable|userlist|import``."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from passlib import hash as passlib_hash

from nxauth import Secret
from nxauth.backends.hashing import PasswordHasher
from nxauth.backends.userdb import UserDatabase
from nxauth.cli import main
from nxauth.store.sqlite import SqliteStore

CHEAP_TOML = "[backends.passwords]\ntime_cost = 1\nmemory_cost = 8192\n"
PASSWORD = "Correct-Horse-42"
hasher = PasswordHasher(time_cost=1, memory_cost=8192)


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = out
        self.err = err

    def __repr__(self) -> str:
        return f"Result({self.code}, out={self.out!r}, err={self.err!r})"


class FakeTerminal(io.TextIOWrapper):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "nxauth.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n{CHEAP_TOML}')
    return path


@pytest.fixture
def run(config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    def run_cli(*argv: str, stdin: bytes = b"", tty: bool = False, config_path: Path | None = None) -> Result:
        wrapper = FakeTerminal if tty else io.TextIOWrapper
        monkeypatch.setattr(sys, "stdin", wrapper(io.BytesIO(stdin), encoding="utf-8"))
        code = main(["--config", str(config_path or config), *argv])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run_cli


@pytest.fixture
def db(tmp_path: Path) -> Iterator[UserDatabase]:
    store = SqliteStore(tmp_path / "state" / "nxauth.db")
    yield UserDatabase(store)
    store.close()


def verifies(db: UserDatabase, name: str, password: str) -> bool:
    record = db.require(name)
    return record.password_hash is not None and hasher.verify(Secret(password), record.password_hash).matched


def answers(monkeypatch: pytest.MonkeyPatch, *replies: str) -> list[str]:
    prompts: list[str] = []
    pending = list(replies)

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        if not pending:
            raise EOFError
        return pending.pop(0)

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    return prompts


# ------------------------------------------------------------ useradd


def test_useradd_password_stdin(run: Callable[..., Result], db: UserDatabase) -> None:
    result = run("useradd", "Alice", "--password-stdin", "--comment", "ticket 7", stdin=f"{PASSWORD}\n".encode())
    assert result.code == 0, result
    assert result.out == "added user alice (canonical form of Alice) (enabled, with nxauth password)\n"
    assert verifies(db, "alice", PASSWORD)
    record = db.require("alice")
    assert record.comment == "ticket 7"
    assert (record.password_hash or "").startswith("$argon2id$v=19$m=8192,t=1,p=1$")
    assert PASSWORD not in result.out + result.err


@pytest.mark.parametrize(
    ("stdin", "password"),
    [
        pytest.param(b"pw with spaces \n", "pw with spaces ", id="newline"),
        pytest.param(b"crlf\r\n", "crlf", id="crlf"),
        pytest.param(b"no-newline", "no-newline", id="eof"),
        pytest.param(b"first\nsecond\n", "first", id="first-line-only"),
        pytest.param("päss€\n".encode(), "päss€", id="utf8"),
        pytest.param(b"k" * 4096 + b"\n", "k" * 4096, id="4KiB"),
    ],
)
def test_password_stdin_lines(run: Callable[..., Result], db: UserDatabase, stdin: bytes, password: str) -> None:
    assert run("useradd", "alice", "--password-stdin", stdin=stdin).code == 0
    assert verifies(db, "alice", password)


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        pytest.param(b"\n", "empty password (use --no-password", id="empty"),
        pytest.param(b"", "empty password", id="nothing"),
        pytest.param(b"k" * 4097 + b"\n", "longer than 4096 bytes", id="4097"),
        pytest.param(b"x" * (1 << 20), "longer than 4096 bytes", id="1MiB"),
        pytest.param(b"\xff\xfe\n", "not valid UTF-8", id="not-utf8"),
        pytest.param(b"a\x00b\n", "NUL", id="nul"),
    ],
)
def test_password_stdin_refusals(run: Callable[..., Result], db: UserDatabase, stdin: bytes, message: str) -> None:
    start = time.perf_counter()
    result = run("useradd", "alice", "--password-stdin", stdin=stdin)
    assert time.perf_counter() - start < 0.5
    assert result.code == 1, result
    assert message in result.err
    assert result.err.count("\n") == 1
    assert db.get("alice") is None


def test_useradd_prompts_twice_on_a_terminal(
    run: Callable[..., Result], db: UserDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = answers(monkeypatch, PASSWORD, PASSWORD)
    result = run("useradd", "alice", tty=True)
    assert result.code == 0, result
    assert prompts == ["New nxauth password for alice: ", "Retype the new password: "]
    assert verifies(db, "alice", PASSWORD)


@pytest.mark.parametrize(
    ("replies", "message"),
    [
        pytest.param((PASSWORD, PASSWORD + "x"), "do not match", id="mismatch"),
        pytest.param(("", ""), "empty password", id="empty"),
        pytest.param((PASSWORD,), "no password given", id="eof"),
    ],
)
def test_useradd_prompt_refusals(
    run: Callable[..., Result],
    db: UserDatabase,
    monkeypatch: pytest.MonkeyPatch,
    replies: tuple[str, ...],
    message: str,
) -> None:
    answers(monkeypatch, *replies)
    result = run("useradd", "alice", tty=True)
    assert result.code == 1
    assert message in result.err
    assert "nothing changed" in result.err
    assert db.get("alice") is None


def test_useradd_without_terminal_needs_a_flag(run: Callable[..., Result], db: UserDatabase) -> None:
    result = run("useradd", "alice")
    assert result.code == 2
    assert "--password-stdin" in result.err
    assert db.get("alice") is None


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(("useradd", "alice", "--password", PASSWORD), id="option"),
        pytest.param(("useradd", "alice", PASSWORD), id="positional"),
        pytest.param(("passwd", "alice", f"--password={PASSWORD}"), id="passwd-option"),
        pytest.param(("useradd", "alice", "--password-stdin", "--no-password"), id="two-sources"),
    ],
)
def test_password_never_from_the_command_line(
    run: Callable[..., Result], db: UserDatabase, argv: tuple[str, ...]
) -> None:
    assert run(*argv, stdin=b"x\n").code == 2
    assert db.get("alice") is None


def test_useradd_no_password_disabled(run: Callable[..., Result], db: UserDatabase) -> None:
    result = run("useradd", "bob", "--no-password", "--disabled")
    assert result.out == "added user bob (disabled, no nxauth password)\n"
    record = db.require("bob")
    assert (record.has_password, record.enabled) == (False, False)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param("alice", "ALICE", id="case"),
        pytest.param(unicodedata.normalize("NFC", "josé"), unicodedata.normalize("NFD", "josé"), id="nfc-nfd"),
    ],
)
def test_useradd_same_canonical_name(run: Callable[..., Result], db: UserDatabase, first: str, second: str) -> None:
    assert run("useradd", first, "--no-password").code == 0
    result = run("useradd", second, "--no-password")
    assert result.code == 1
    assert "already exists" in result.err
    assert db.count() == 1


@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param("a\x00b", "control", id="nul"),
        pytest.param("a\x01b", "control", id="control"),
        pytest.param("a/b", "'/'", id="slash"),
        pytest.param("a:b", "':'", id="colon"),
        pytest.param("a b", "white space", id="space"),
        pytest.param("a\u2003b", "compatibility form", id="em-space"),
        pytest.param("x" * 257, "longer than 256", id="long"),
        pytest.param("", "empty", id="empty"),
    ],
)
def test_useradd_invalid_names(run: Callable[..., Result], db: UserDatabase, name: str, message: str) -> None:
    result = run("useradd", name, "--no-password")
    assert result.code == 2, result
    assert message in result.err
    assert result.err.startswith("nxauth: invalid username")
    assert result.err.count("\n") == 1
    assert db.count() == 0


def test_useradd_bad_comment(run: Callable[..., Result], db: UserDatabase) -> None:
    result = run("useradd", "alice", "--no-password", "--comment", "two\nlines")
    assert (result.code, db.count()) == (2, 0)
    assert "control characters" in result.err


# ------------------------------------------------------------ other commands


def test_userdel(run: Callable[..., Result], db: UserDatabase) -> None:
    run("useradd", "alice", "--no-password")
    assert run("userdel", "Alice").out == "removed user alice (canonical form of Alice)\n"
    assert db.get("alice") is None
    result = run("userdel", "alice")
    assert (result.code, result.err) == (1, "nxauth: no such user alice\n")


def test_passwd(run: Callable[..., Result], db: UserDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    run("useradd", "alice", "--password-stdin", stdin=b"old password\n")
    result = run("passwd", "alice", "--password-stdin", stdin=b"new password\n")
    assert result.out == "changed the nxauth password of alice\n"
    assert verifies(db, "alice", "new password")
    assert not verifies(db, "alice", "old password")
    answers(monkeypatch, "third", "third")
    assert run("passwd", "alice", tty=True).code == 0
    assert verifies(db, "alice", "third")
    assert run("passwd", "alice", "--no-password").out == "removed the nxauth password of alice\n"
    assert not db.require("alice").has_password


def test_passwd_unknown_user_asks_nothing(
    run: Callable[..., Result], db: UserDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = answers(monkeypatch, "x", "x")
    result = run("passwd", "nobody", tty=True)
    assert (result.code, result.err, prompts) == (1, "nxauth: no such user nobody\n", [])


def test_enable_disable(run: Callable[..., Result], db: UserDatabase) -> None:
    run("useradd", "alice", "--no-password")
    assert run("userdisable", "alice").out == "user alice disabled\n"
    assert run("userdisable", "alice").out == "user alice was already disabled\n"
    assert not db.require("alice").enabled
    assert run("userenable", "ALICE").out == "user alice (canonical form of ALICE) enabled\n"
    assert db.require("alice").enabled
    assert run("userenable", "nobody").code == 1
    assert run("userdisable", "nobody").code == 1


def test_userlist_table_and_json(run: Callable[..., Result], db: UserDatabase) -> None:
    assert run("userlist").out == "no users (an empty users database denies everyone)\n"
    assert json.loads(run("userlist", "--json").out) == []
    run("useradd", "alice", "--password-stdin", stdin=b"pw\n")
    run("useradd", "a-much-longer-username", "--no-password", "--disabled", "--comment", "system only")
    db.add("carol", password_hash=passlib_hash.sha512_crypt.using(rounds=1000).hash("x"))
    db.add("dave", password_hash="$apr1$not$supported")
    lines = run("userlist").out.splitlines()
    assert lines[0].split() == ["USER", "STATUS", "PASSWORD", "CREATED", "CHANGED", "COMMENT"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["a-much-longer-username", "disabled", "none"],
        ["alice", "enabled", "argon2id"],
        ["carol", "enabled", "sha512_crypt"],
        ["dave", "enabled", "unusable"],
    ]
    columns = {
        line.index(word)
        for line, word in zip(lines, ["STATUS", "disabled", "enabled", "enabled", "enabled"], strict=True)
    }
    assert len(columns) == 1, "columns are aligned"
    assert lines[1].endswith("  system only")
    rows = json.loads(run("userlist", "--json").out)
    assert rows[0] == {
        "username": "a-much-longer-username",
        "enabled": False,
        "password": None,
        "created": rows[0]["created"],
        "changed": rows[0]["changed"],
        "comment": "system only",
    }
    assert rows[0]["created"].endswith("Z")
    assert all("hash" not in json.dumps(row) for row in rows)
    assert "$argon2id$" not in run("userlist", "--json").out


# ------------------------------------------------------------ import


def htpasswd(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "users.htpasswd"
    path.write_text(text)
    return path


def test_import_htpasswd(run: Callable[..., Result], db: UserDatabase, tmp_path: Path) -> None:
    argon = hasher.hash(Secret("pw-erin"))
    text = (
        "# from apache\n"
        f"alice:{passlib_hash.bcrypt.using(rounds=4, ident='2y').hash('pw-alice')}\n"
        f"Bob:{passlib_hash.sha512_crypt.using(rounds=1000).hash('pw-bob')}\n"
        f"carol:{passlib_hash.sha256_crypt.using(rounds=1000).hash('pw-carol')}\n"
        "dave\n"
        f"erin:{argon}\n"
    )
    result = run("import", str(htpasswd(tmp_path, text)))
    assert result.code == 0, result
    assert result.out.endswith(": 5 added, 0 updated, 0 unchanged\n")
    assert result.err == ""
    for name in ("alice", "bob", "carol", "erin"):
        assert verifies(db, name, f"pw-{name}")
    assert not db.require("dave").has_password


def test_import_bad_line_imports_nothing(run: Callable[..., Result], db: UserDatabase, tmp_path: Path) -> None:
    good = passlib_hash.bcrypt.using(rounds=4).hash("x")
    path = htpasswd(tmp_path, f"alice:{good}\nbob:{good}\nthis line is wrong\ncarol:$apr1$x$y\nALICE:{good}\n")
    result = run("import", str(path))
    assert result.code == 1
    assert result.err.splitlines() == [
        f"{path}:3: invalid username: white space (U+0020) is not allowed in a username",
        f"{path}:4: user 'carol': unknown hash format (supported: argon2, bcrypt, sha512_crypt, sha256_crypt)",
        f"{path}:5: user 'alice' already appears on line 1",
        f"nxauth: {path}: 3 bad lines; nothing imported",
    ]
    assert db.count() == 0


def test_import_existing_users(run: Callable[..., Result], db: UserDatabase, tmp_path: Path) -> None:
    db.add("alice", password_hash=hasher.hash(Secret("old")))
    new = hasher.hash(Secret("new"))
    path = htpasswd(tmp_path, f"bob\nalice:{new}\n")
    result = run("import", str(path))
    assert result.code == 1
    assert f"{path}:2: user 'alice' already exists" in result.err
    assert db.get("bob") is None
    assert verifies(db, "alice", "old")
    result = run("import", "--update", str(path))
    assert result.out.endswith(": 1 added, 1 updated, 0 unchanged\n")
    assert verifies(db, "alice", "new")


def test_import_dry_run_and_stdin(run: Callable[..., Result], db: UserDatabase) -> None:
    text = b"alice\nbob\n"
    assert (
        run("import", "--dry-run", "-", stdin=text).out == "<stdin>: 2 users, no bad line (dry run: nothing imported)\n"
    )
    assert db.count() == 0
    assert run("import", "-", stdin=text).out == "<stdin>: 2 added, 0 updated, 0 unchanged\n"
    assert db.count() == 2


def test_import_missing_file(run: Callable[..., Result], tmp_path: Path) -> None:
    result = run("import", str(tmp_path / "absent"))
    assert result.code == 5
    assert "absent" in result.err


@pytest.mark.parametrize("tty", [True, False], ids=["terminal", "pipe"])
def test_import_progress_bar_only_on_a_terminal(
    run: Callable[..., Result], db: UserDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tty: bool
) -> None:
    stored = hasher.hash(Secret("x"))
    path = htpasswd(tmp_path, "".join(f"user{i}:{stored}\n" for i in range(3000)))
    stderr = FakeTerminal(io.BytesIO(), encoding="utf-8") if tty else io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr(sys, "stderr", stderr)
    result = run("import", str(path))
    assert result.code == 0
    stderr.flush()
    written = stderr.buffer.getvalue().decode()  # type: ignore[attr-defined]
    if tty:
        assert "\rchecking  [##########" in written
        assert "\rwriting   [##############################] 100% 3000/3000" in written
        assert written.endswith("\n")
    else:
        assert written == ""
    assert db.count() == 3000


# ------------------------------------------------------------ configuration and store problems


def test_hashing_parameters_of_a_named_instance(run: Callable[..., Result], db: UserDatabase, tmp_path: Path) -> None:
    path = tmp_path / "named.toml"
    path.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        '[backends.local]\nkind = "passwords"\ntime_cost = 2\nmemory_cost = 9216\n'
        '[backends.other]\nkind = "passwords"\ntime_cost = 1\nmemory_cost = 8192\n'
        '[[auth]]\nuse = "local"\n'
    )
    assert run("useradd", "alice", "--password-stdin", stdin=b"pw\n", config_path=path).code == 0
    assert (db.require("alice").password_hash or "").startswith("$argon2id$v=19$m=9216,t=2,p=1$")


def test_bad_passwords_option_is_a_config_error(run: Callable[..., Result], tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n[backends.passwords]\ntime_cost = 0\n')
    result = run("userlist", config_path=path)
    assert result.code == 3
    assert "backends.passwords.time_cost" in result.err


def test_works_when_another_backend_cannot_be_built(
    run: Callable[..., Result], db: UserDatabase, tmp_path: Path
) -> None:
    path = tmp_path / "other.toml"
    path.write_text(
        f'state_dir = "{tmp_path / "state"}"\n{CHEAP_TOML}'
        '[backends.corp]\nkind = "no-such-kind"\n[[auth]]\nuse = "corp"\n[[auth]]\nuse = "passwords"\n'
    )
    assert run("useradd", "alice", "--no-password", config_path=path).code == 0


def _state_file(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "nxauth.db"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    return path


def test_corrupt_store(run: Callable[..., Result], tmp_path: Path) -> None:
    path = _state_file(tmp_path)
    garbage = b"this is not a database" * 200
    path.write_bytes(garbage)
    path.chmod(0o600)
    for argv in (("userlist",), ("useradd", "alice", "--no-password")):
        result = run(*argv)
        assert result.code == 4
        assert str(path) in result.err
        assert result.err.count("\n") == 1
    assert path.read_bytes() == garbage


def test_newer_schema(run: Callable[..., Result], tmp_path: Path) -> None:
    path = _state_file(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    path.chmod(0o600)
    before = path.read_bytes()
    result = run("userlist")
    assert result.code == 4
    assert str(path) in result.err
    assert "newer" in result.err
    assert path.read_bytes() == before


def test_store_not_a_file(run: Callable[..., Result], tmp_path: Path) -> None:
    _state_file(tmp_path).mkdir()
    result = run("userlist")
    assert result.code == 4
    assert "not a regular file" in result.err


def test_unreadable_store(run: Callable[..., Result], tmp_path: Path, config: Path) -> None:
    run("useradd", "alice", "--no-password")
    path = tmp_path / "state" / "nxauth.db"
    before = path.read_bytes()
    path.chmod(0)
    command = [sys.executable, "-m", "nxauth", "--config", str(config), "userlist"]
    if os.geteuid() == 0:
        # root reads any file: run the command without the capabilities that let it
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is needed to test an unreadable store as root")
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 4, result.stderr
    assert str(path) in result.stderr and "not readable" in result.stderr
    path.chmod(0o600)
    assert path.read_bytes() == before


# ------------------------------------------------------------ a real process


def test_real_process_password_stdin(config: Path, tmp_path: Path, db: UserDatabase) -> None:
    command = [sys.executable, "-m", "nxauth.cli", "--config", str(config)]
    done = subprocess.run(
        [*command, "useradd", "alice", "--password-stdin"], input=b"from a pipe\n", capture_output=True, check=False
    )
    assert done.returncode == 0, done
    assert verifies(db, "alice", "from a pipe")
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "passwd", "alice", "--password-stdin"], input=b"y" * (1 << 20), capture_output=True, check=False
    )
    assert done.returncode == 1
    assert b"longer than 4096 bytes" in done.stderr
    assert time.perf_counter() - start < 5
    assert verifies(db, "alice", "from a pipe")
