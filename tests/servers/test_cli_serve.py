"""``nxauth serve`` as a real subprocess, logged into with the real ssh client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.serve import NXAUTH, SSH, Serve

pytestmark = pytest.mark.skipif(SSH is None, reason="the OpenSSH client (ssh) is not installed")

COMMAND = (
    "import os, sys; print('user=' + os.environ['NXAUTH_USER']); "
    "print('transport=' + os.environ['NXAUTH_TRANSPORT_ACCOUNT']); print('input=' + sys.stdin.read().strip()); "
    "print('leaked=' + ','.join(k for k in os.environ if k.startswith('SERVER_SECRET') or k == 'FROM_CLIENT'))"
)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A configuration with a session command, a transport key from
    ``nxauth keygen`` and alice in the password database."""
    config = tmp_path / "nxauth.toml"
    config.write_text(
        'state_dir = "state"\n[audit]\nlog = true\n[login]\n'
        f"command = [{sys.executable!r}, '-c', {COMMAND!r}]\ntimeout = 20\n"
    )
    key = tmp_path / "client_key"
    base = [*NXAUTH, "--config", str(config)]
    subprocess.run([*base, "keygen", "--out", str(key)], check=True, capture_output=True, timeout=60)
    subprocess.run(
        [*base, "useradd", "alice", "--password-stdin"],
        input="correct horse\n",
        text=True,
        check=True,
        capture_output=True,
        timeout=60,
    )
    yield config, key


def test_serve_runs_the_session_command_after_a_two_stage_login(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, key = setup
    host_key = tmp_path / "state" / "ssh_host_ed25519_key"
    assert not host_key.exists()
    serve = Serve(config)
    try:
        assert host_key.stat().st_mode & 0o777 == 0o600
        assert host_key.parent.stat().st_mode & 0o777 == 0o700
        result = serve.ssh(key, "alice\ncorrect horse\nsome input\n", "/bin/sh", "-c", "'echo pwned'")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[:4] == ["NX> 100 nxauth 0.1.0 protocol 1", "NX> 101 User:", "NX> 102 Password:",
                             "NX> 200 Authenticated alice"]  # fmt: skip
        assert lines[4:] == ["user=alice", "transport=nx", "input=some input", "leaked="]
        denied = serve.ssh(key, "alice\nwrong\n")
        assert denied.returncode == 1 and "NX> 401 Authentication failed" in denied.stdout
    finally:
        status, out, err = serve.stop()
    assert status == 0 and "nxauth serve: stopped" in out
    assert "Accepted password for alice" in err and "reason=bad-password" in err
    assert "correct horse" not in err and "wrong" not in err.replace("wrong-", "")

    first = host_key.read_bytes()
    again = Serve(config)  # the host key is reused, not regenerated
    try:
        assert again.fingerprint == serve.fingerprint
        assert host_key.read_bytes() == first
    finally:
        status, _, _ = again.stop(signal.SIGINT)
    assert status == 0


def test_serve_without_a_command_exits_0_after_the_login(setup: tuple[Path, Path]) -> None:
    config, key = setup
    config.write_text('state_dir = "state"\n')
    serve = Serve(config)
    try:
        result = serve.ssh(key, "alice\ncorrect horse\n")
    finally:
        serve.stop()
    assert result.returncode == 0
    assert result.stdout.endswith("NX> 200 Authenticated alice\n")


def test_serve_kills_the_session_command_when_stopped(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, key = setup
    pidfile = tmp_path / "pid"
    script = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); print('ready', flush=True); time.sleep(60)"
    config.write_text(f"state_dir = \"state\"\n[login]\ncommand = [{sys.executable!r}, '-c', {script!r}]\n")
    serve = Serve(config)
    assert SSH is not None
    client = subprocess.Popen(
        [SSH, "-F", "/dev/null", "-i", str(key), "-p", str(serve.port), "-o", "BatchMode=yes",
         "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", "nx@127.0.0.1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert client.stdin is not None and client.stdout is not None
    client.stdin.write("alice\ncorrect horse\n")
    client.stdin.flush()
    try:
        while (line := client.stdout.readline()) and line != "ready\n":
            pass
        assert line == "ready\n"
        pid = int(pidfile.read_text())
        status, _, _ = serve.stop()
        assert status == 0
        client.wait(30)
    finally:
        client.kill()
        client.communicate()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_serve_refuses_a_host_key_others_can_read(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, _ = setup
    host_key = tmp_path / "state" / "ssh_host_ed25519_key"
    host_key.parent.mkdir(mode=0o700, exist_ok=True)
    host_key.write_text("not even a key\n")
    host_key.chmod(0o644)
    result = subprocess.run(
        [*NXAUTH, "--config", str(config), "serve", "--port", "0"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3
    assert "accessible by others" in result.stderr and "chmod 600" in result.stderr
    assert host_key.read_text() == "not even a key\n"  # never overwritten


def test_serve_rejects_a_bad_port(setup: tuple[Path, Path]) -> None:
    config, _ = setup
    result = subprocess.run(
        [*NXAUTH, "--config", str(config), "serve", "--port", "70000"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "--port" in result.stderr
