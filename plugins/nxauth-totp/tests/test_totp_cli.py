"""The ``nxauth-totp`` command: enroll, list, remove, through its function
and through the installed console script; the configuration is found as
``nxauth`` finds it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nxauth
import pyotp
import pytest

from conftest import START, Clock, answering
from nxauth_totp import TotpBackend, TotpStore
from nxauth_totp.cli import load_settings, main

SCRIPT = Path(sys.executable).with_name("nxauth-totp")


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A configuration file, also named by ``$NXAUTH_CONFIG`` (so no test
    reads the machine's /etc/nxauth/nxauth.toml)."""
    path = tmp_path / "etc" / "nxauth.toml"
    path.parent.mkdir()
    path.write_text('state_dir = "../state"\n')
    monkeypatch.setenv("NXAUTH_CONFIG", str(path))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def enrolled_secret(out: str) -> str:
    uri = next(line.split(None, 1)[1] for line in out.splitlines() if line.startswith("uri:"))
    app = pyotp.parse_uri(uri)
    assert isinstance(app, pyotp.TOTP)
    return app.secret


def login_with(secret: str, username: str, database: Path) -> nxauth.Verdict:
    """What the server would say to ``username`` typing the code ``secret`` shows now."""
    _, settings = load_settings(None)
    backend = TotpBackend(TotpStore(database), settings, clock=Clock(START))
    try:
        code = pyotp.TOTP(secret).at(START)
        return backend.authenticate(answering(username, code))
    finally:
        backend.close()


# ------------------------------------------------------------ through main()


def test_enroll_prints_the_uri_and_secret_once_and_the_server_accepts_them(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    code, out, err = run(capsys, "enroll", "Alice")
    assert code == 0 and err == ""
    assert out.startswith("enrolled alice: 6 digits every 30 s, sha1")  # the canonical (case-folded) name
    secret = enrolled_secret(out)
    assert f"secret: {secret}" in out
    assert "otpauth://totp/nxauth:alice?secret=" in out
    database = tmp_path / "state" / "totp.db"
    assert database.exists()
    assert login_with(secret, "alice", database).allowed


def test_enroll_refuses_to_overwrite_without_force(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    first = enrolled_secret(run(capsys, "enroll", "alice")[1])
    code, out, err = run(capsys, "enroll", "alice")
    assert code == 1 and out == ""
    assert "already enrolled" in err and "--force" in err
    database = tmp_path / "state" / "totp.db"
    assert login_with(first, "alice", database).allowed  # unchanged
    code, out, _ = run(capsys, "enroll", "alice", "--force")
    assert code == 0 and out.startswith("re-enrolled alice")
    second = enrolled_secret(out)
    assert second != first
    assert login_with(first, "alice", database).reason is nxauth.Reason.BAD_PASSWORD
    assert login_with(second, "alice", database).allowed


def test_list_and_remove(capsys: pytest.CaptureFixture[str], config_file: Path) -> None:
    secrets = [enrolled_secret(run(capsys, "enroll", name)[1]) for name in ("bob", "alice")]
    code, out, _ = run(capsys, "list")
    assert code == 0
    assert [line.split("\t")[0] for line in out.splitlines()] == ["alice", "bob"]
    assert "last used never" in out
    code, out, _ = run(capsys, "list", "--json")
    rows = json.loads(out)
    assert [row["user"] for row in rows] == ["alice", "bob"]
    assert all(secret not in out for secret in secrets)
    assert run(capsys, "remove", "ALICE")[:2] == (0, "removed alice\n")
    code, _, err = run(capsys, "remove", "alice")
    assert code == 1 and "not enrolled" in err
    assert [row["user"] for row in json.loads(run(capsys, "list", "--json")[1])] == ["bob"]


def test_enroll_json(capsys: pytest.CaptureFixture[str], config_file: Path) -> None:
    code, out, _ = run(capsys, "enroll", "alice", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["user"] == "alice" and data["replaced"] is False
    assert data["secret"] in data["uri"]


def test_options_of_the_configured_instance_go_into_the_uri(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    config_file.write_text(
        'state_dir = "../state"\n'
        '[backends.otp]\nkind = "totp"\ndigits = 8\nperiod = 60\nissuer = "Example Corp"\ndatabase = "otp.db"\n'
        '[[auth]]\nuse = "passwords"\n[[auth]]\nuse = "otp"\n'
    )
    code, out, _ = run(capsys, "enroll", "alice")
    assert code == 0
    assert "8 digits every 60 s" in out
    assert "otpauth://totp/Example%20Corp:alice?" in out and "digits=8" in out and "period=60" in out
    assert (config_file.parent / "otp.db").exists()  # relative to the configuration file, as the server reads it


def test_config_option_and_state_dir_override(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text(f'state_dir = "{tmp_path / "from-config"}"\n')
    assert run(capsys, "--config", str(other), "enroll", "alice")[0] == 0
    assert (tmp_path / "from-config" / "totp.db").exists()
    assert run(capsys, "--config", str(other), "--state-dir", str(tmp_path / "flag"), "enroll", "bob")[0] == 0
    assert (tmp_path / "flag" / "totp.db").exists()
    _, out, _ = run(capsys, "--config", str(other), "list")
    assert out.split("\t")[0] == "alice"


def test_backend_option_selects_the_instance(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    config_file.write_text(
        'state_dir = "../state"\n'
        '[backends.staff]\nkind = "totp"\ndatabase = "staff.db"\n'
        '[backends.guests]\nkind = "totp"\ndatabase = "guests.db"\n'
        '[backends.pw]\nkind = "passwords"\n'
    )
    assert run(capsys, "--backend", "guests", "enroll", "alice")[0] == 0
    assert (config_file.parent / "guests.db").exists() and not (config_file.parent / "staff.db").exists()
    assert run(capsys, "enroll", "alice")[0] == 0  # no stack entry: the first declared instance
    assert (config_file.parent / "staff.db").exists()
    code, _, err = run(capsys, "--backend", "pw", "list")
    assert code == 3 and "not 'totp'" in err
    code, _, err = run(capsys, "--backend", "nope", "list")
    assert code == 3 and "no [backends.nope]" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("state_dir = [\n", "invalid TOML"),
        ('[backends.totp]\nwindw = 2\n[[auth]]\nuse = "totp"\n', "backends.totp.windw: unknown option"),
        ('[backends.totp]\ndigits = 12\n[[auth]]\nuse = "totp"\n', "backends.totp.digits: must be at most 8"),
    ],
    ids=["toml", "unknown-option", "bad-digits"],
)
def test_configuration_errors_exit_3(
    capsys: pytest.CaptureFixture[str], config_file: Path, text: str, message: str
) -> None:
    config_file.write_text(text)
    code, out, err = run(capsys, "list")
    assert code == 3 and out == ""
    assert message in err


def test_invalid_username_exits_2(capsys: pytest.CaptureFixture[str], config_file: Path) -> None:
    code, _, err = run(capsys, "enroll", " alice")
    assert code == 2 and "invalid username" in err


def test_unusable_database_exits_4(capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path) -> None:
    assert run(capsys, "enroll", "alice")[0] == 0
    (tmp_path / "state" / "totp.db").chmod(0o644)
    code, _, err = run(capsys, "list")
    assert code == 4 and "chmod 600" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["enroll"]) == 2
    assert main(["frobnicate"]) == 2
    capsys.readouterr()


# ------------------------------------------------------------ the installed console script


def script(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *argv], capture_output=True, text=True, env=env, timeout=60, check=False)


def test_console_script_round_trip(config_file: Path, tmp_path: Path) -> None:
    assert SCRIPT.exists(), "the nxauth-totp console script is not installed beside this Python"
    env = {**os.environ, "NXAUTH_CONFIG": str(config_file)}
    enrolled = script("enroll", "carol", env=env)
    assert enrolled.returncode == 0, enrolled.stderr
    secret = enrolled_secret(enrolled.stdout)
    database = tmp_path / "state" / "totp.db"
    assert oct(database.stat().st_mode & 0o777) == oct(0o600)
    assert login_with(secret, "carol", database).allowed
    listed = script("list", env=env)
    assert listed.returncode == 0 and listed.stdout.startswith("carol\t")
    assert secret not in listed.stdout + listed.stderr
    assert script("enroll", "carol", env=env).returncode == 1
    assert script("remove", "carol", env=env).returncode == 0
    assert script("list", env=env).stdout == ""
    module = subprocess.run(
        [sys.executable, "-m", "nxauth_totp", "list"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert module.returncode == 0 and module.stdout == ""
