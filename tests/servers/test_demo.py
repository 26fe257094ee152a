"""``nxauth demo``, the README's first command: real logins through the
embedded SSH server, with OpenSSH's ssh (or asyncssh's client without it)."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nxauth.cli.demo_run import run_demo

#: the console script of the interpreter under test, never whichever ``nxauth`` is first on PATH
SCRIPT = str(Path(sys.executable).parent / "nxauth")


def check_output(out: str) -> None:
    assert out.count("[ok  ]") == 4, out
    assert "FAIL" not in out
    assert "1. right key, right password" in out and "hello demo from nxauth" in out
    assert "2. right key, wrong password  denied at stage 2 (NX> 401 Authentication failed" in out
    assert "3. right key, unknown user    denied at stage 2" in out
    assert "4. unlisted key               refused at stage 1" in out and "never reached stage 2" in out
    assert "Accepted publickey for nx from 127.0.0.1" in out
    assert "Accepted password for demo from 127.0.0.1" in out
    assert "Failed password for demo" in out and "reason=bad-password" in out
    assert "Failed password for invalid user nobody" in out and "reason=unknown-user" in out
    assert "Failed publickey for nx" in out and "reason=unknown-key" in out
    assert "the password never appears: yes" in out
    assert "demo: every case ended as it should" in out


@pytest.mark.skipif(shutil.which("ssh") is None, reason="the OpenSSH client (ssh) is not installed")
def test_demo_runs_every_case_with_openssh() -> None:
    result = subprocess.run([SCRIPT, "demo"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    check_output(result.stdout)
    assert "client         OpenSSH ssh (" in result.stdout
    assert "Permission denied (publickey)" in result.stdout


def test_demo_falls_back_to_asyncssh_without_ssh(tmp_path: Path) -> None:
    """A PATH without ssh: the demo says so and uses asyncssh's client."""
    empty = tmp_path / "bin"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "nxauth", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": str(empty), "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    check_output(result.stdout)
    assert "asyncssh's SSH client (OpenSSH ssh is not installed)" in result.stdout


@pytest.mark.parametrize("client", ["auto", "asyncssh"])
def test_demo_in_process(client: str, tmp_path: Path) -> None:
    if client == "auto" and shutil.which("ssh") is None:
        pytest.skip("the OpenSSH client (ssh) is not installed")
    out = io.StringIO()
    assert run_demo(out, state_dir=tmp_path / "state", client=client) is True
    check_output(out.getvalue())
    assert (tmp_path / "state" / "transport_ed25519").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state" / "ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600


def test_demo_refuses_an_unknown_client() -> None:
    with pytest.raises(ValueError, match="client"):
        run_demo(io.StringIO(), client="telnet")
