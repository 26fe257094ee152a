"""``nxauth check`` and ``nxauth unlock`` through main(), with exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nxauth.cli import EXIT_CONFIG, EXIT_OK, EXIT_STORE, EXIT_USAGE, main


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "nxauth.toml"
    path.write_text(
        f"""
state_dir = "{tmp_path / "state"}"
auth = []
account = []
[transport]
key_sources = []
[throttle]
max_user_failures = 1
"""
    )
    return path


def test_check_prints_pipeline(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config), "check"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "auth stack:" in out and "(empty: denies everyone)" in out
    assert str(config) in out


def test_check_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config), "check", "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["transport_account"] == "nx"
    assert data["auth"] == [] and data["key_sources"] == []


def test_config_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[auth]]\nuse = "pam"\ncontrol = "sometimes"\n')
    assert main(["--config", str(bad), "check"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{bad}: auth[0].control: must be one of required, requisite, sufficient, optional, got 'sometimes'" in err
    assert "Traceback" not in err


def test_env_variable_selects_config(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NXAUTH_CONFIG", str(config))
    assert main(["check"]) == EXIT_OK


def test_store_error_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "nxauth.db").write_bytes(b"garbage" * 200)
    path = tmp_path / "c.toml"
    path.write_text(f'state_dir = "{state}"\nauth = []\naccount = []\n[transport]\nkey_sources = []\n')
    assert main(["--config", str(path), "unlock", "--list"]) == EXIT_STORE
    assert "nxauth.db" in capsys.readouterr().err


def test_unlock(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nxauth import Authenticator, Peer
    from nxauth.core.authenticator import runtime_of

    auth = Authenticator.from_file(config)
    runtime_of(auth).throttle.record_failure("alice", Peer("198.51.100.7", 1))
    auth.close()
    assert main(["--config", str(config), "unlock", "--list", "--json"]) == EXIT_OK
    assert [row["key"] for row in json.loads(capsys.readouterr().out)] == ["pair:addr:198.51.100.7 alice"]
    assert main(["--config", str(config), "unlock", "ALICE"]) == EXIT_OK
    assert "unlocked ALICE" in capsys.readouterr().out
    assert main(["--config", str(config), "unlock", "--list", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == []
    assert main(["--config", str(config), "unlock"]) == EXIT_USAGE


def test_usage_errors() -> None:
    assert main(["no-such-command"]) == EXIT_USAGE
    assert main([]) == EXIT_USAGE


def test_console_script_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "nxauth.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("nxauth ")
