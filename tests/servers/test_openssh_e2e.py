"""Both stages through the system's OpenSSH, with the real ``ssh`` client.

A throwaway sshd on 127.0.0.1 is configured with exactly the block that
``nxauth sshd-config`` prints: keys from ``nxauth authorized-keys`` (a
keystore), ``nxauth login`` forced, forwarding off, ``ExposeAuthInfo yes``.
The transport account is a throwaway system account that owns the state
directory, as a deployment's ``nx`` would.

Every scenario runs twice: with ``nxauth authorized-keys`` deciding
in-process, and with ``sshd-config --daemon`` (the small client asking
``nxauth authorized-keys-daemon``, run as the transport account).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nxauth.cli import EXIT_OK, main
from nxauth.integrations import keyd_client
from tests.support.sshd import KeyDaemon, Sshd, account_cannot_run, free_port, running_sshd, skip_reason

reason = skip_reason()
pytestmark = pytest.mark.skipif(reason is not None, reason=reason or "")

PASSWORD = "correct horse battery staple"


@dataclass
class Deployment:
    sshd: Sshd
    base: Path
    config: Path
    key: Path
    other_key: Path
    audit: Path
    mode: str
    daemon: KeyDaemon | None

    def ssh(
        self,
        *options: str,
        key: Path | None = None,
        stdin: str = "",
        tty: bool = False,
        timeout: float = 30,
        command: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        return self.sshd.ssh(
            key or self.key, *command, options=("-tt" if tty else "-T", *options), input=stdin, timeout=timeout
        )

    def events(self) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines()]

    def mark(self) -> int:
        return len(self.events())

    def since(self, mark: int) -> list[dict[str, Any]]:
        return self.events()[mark:]


def _cli(*argv: str, stdin: str | None = None) -> str:
    """Run the CLI as a subprocess (root) and return its output."""
    result = subprocess.run(
        [sys.executable, "-m", "nxauth", *argv], input=stdin, capture_output=True, text=True, check=False
    )
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module", params=["in-process", "daemon"])
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    mode: str = request.param
    account = f"nxe{secrets.token_hex(3)}"
    # sshd refuses an AuthorizedKeysCommand under a world-writable directory
    # (/tmp, /var/tmp): /var/lib is root's
    base = Path(tempfile.mkdtemp(prefix="nxauth-e2e-", dir="/var/lib"))
    base.chmod(0o755)
    try:
        state = base / "state"
        config = base / "nxauth.toml"
        audit = state / "audit.jsonl"
        config.write_text(
            f'state_dir = "{state}"\n'
            f'[transport]\naccount = "{account}"\n'
            "[session]\nmax_attempts = 3\n"
            '[login]\ncommand = ["/bin/sh", "-c", "echo session for $NXAUTH_USER; env | grep ^NXAUTH_ | sort"]\n'
            "timeout = 20\n"
            f'[audit]\njsonl = "{audit}"\n'
        )
        config.chmod(0o644)
        # sshd wants the command root-owned in a path no one else can write:
        # a wrapper here, whatever the checkout's path
        program = base / "nxauth"
        # the nxauth of the interpreter under test, never whichever is first on PATH
        program.write_text(f'#!/bin/sh\nexec {sys.executable} -m nxauth "$@"\n')
        program.chmod(0o755)
        keys = base / "keys"
        keys.mkdir(mode=0o700)
        _cli("--config", str(config), "keygen", "--out", str(keys / "id_transport"))
        # a key pair nxauth made for another server: not in this keystore
        other = base / "other.toml"
        other.write_text(f'state_dir = "{base / "other-state"}"\n[transport]\naccount = "{account}"\n')
        _cli("--config", str(other), "keygen", "--out", str(keys / "id_other_server"))
        _cli("--config", str(config), "useradd", "alice", "--password-stdin", stdin=PASSWORD + "\n")
        daemon = None
        if mode == "daemon":
            block = _cli("--config", str(config), "sshd-config", "--program", str(program), "--daemon")
            socket_path = state / "authorized-keys.sock"
            client = Path(keyd_client.__file__).with_name("keyd_run.py")
            assert f"-I -S {client} --socket {socket_path} --config {config} %u %t %k" in block
            daemon = KeyDaemon(program, config, account, socket_path)
        else:
            block = _cli("--config", str(config), "sshd-config", "--program", str(program))
            assert f"AuthorizedKeysCommand {program} --config {config} authorized-keys %u %t %k" in block
        with running_sshd(block, account=account) as sshd:
            subprocess.run(["chown", "-R", account, str(state)], check=True)
            cannot = account_cannot_run(account, program)
            if cannot is not None:
                pytest.skip(
                    f"the transport account cannot run this nxauth ({cannot}): the interpreter "
                    "is private (pyenv under /root?); scripts/test-all builds .venv from Debian's /usr/bin/python3"
                )
            if daemon is not None:
                daemon.start()
            try:
                yield Deployment(
                    sshd, base, config, keys / "id_transport", keys / "id_other_server", audit, mode, daemon
                )
            finally:
                if daemon is not None:
                    daemon.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_right_key_and_password_run_the_session_command(deployment: Deployment) -> None:
    mark = deployment.mark()
    result = deployment.ssh(stdin=f"alice\n{PASSWORD}\n")
    assert result.returncode == 0, result.stdout + result.stderr + deployment.sshd.log.read_text()
    lines = result.stdout.splitlines()
    assert lines[0].startswith("NX> 100 nxauth ")
    assert lines[1:4] == ["NX> 101 User:", "NX> 102 Password:", "NX> 200 Authenticated alice"]
    assert lines[4] == "session for alice"
    env = dict(line.split("=", 1) for line in lines[5:] if "=" in line)
    assert env["NXAUTH_USER"] == "alice"
    assert env["NXAUTH_TRANSPORT_ACCOUNT"] == deployment.sshd.account
    assert env["NXAUTH_TRANSPORT_KEY"].startswith("SHA256:")
    assert env["NXAUTH_PEER"].startswith("127.0.0.1 ")
    assert PASSWORD not in result.stdout + result.stderr
    events = deployment.since(mark)
    stage1 = [e for e in events if e["stage"] == 1]
    # sshd asked authorized-keys (query and signed attempt), then login rebuilt the grant
    assert [e["detail"] for e in stage1 if e["outcome"] == "accepted"][-1] == ""
    assert any(e["detail"] == "authorized-keys" for e in stage1)  # sshd gives it no peer address
    assert all(e["outcome"] == "accepted" for e in stage1)
    accepted = [e for e in events if e["stage"] == 2]
    assert [(e["outcome"], e["user"], e["backend"]) for e in accepted] == [("accepted", "alice", "passwords")]
    assert PASSWORD not in deployment.audit.read_text()


def test_unlisted_key_never_reaches_stage_2(deployment: Deployment, tmp_path: Path) -> None:
    stranger = tmp_path / "id_stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    mark = deployment.mark()
    result = deployment.ssh(key=stranger, stdin=f"alice\n{PASSWORD}\n")
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr
    assert "NX>" not in result.stdout
    events = deployment.since(mark)
    assert events and all(e["stage"] == 1 and e["outcome"] == "failed" for e in events)
    assert {e["reason"] for e in events} == {"unknown-key"}


def test_another_servers_key_pair_is_denied(deployment: Deployment) -> None:
    mark = deployment.mark()
    result = deployment.ssh(key=deployment.other_key, stdin=f"alice\n{PASSWORD}\n")
    assert result.returncode == 255
    assert "NX>" not in result.stdout
    assert {(e["stage"], e["reason"]) for e in deployment.since(mark)} == {(1, "unknown-key")}


def test_wrong_password_is_denied_and_audited(deployment: Deployment) -> None:
    mark = deployment.mark()
    result = deployment.ssh(stdin="alice\nnot the password\n")
    assert result.returncode == 1
    assert "NX> 401 Authentication failed" in result.stdout
    assert "session for" not in result.stdout
    stage2 = [e for e in deployment.since(mark) if e["stage"] == 2]
    assert [(e["outcome"], e["reason"], e["user"]) for e in stage2[:1]] == [("failed", "bad-password", "alice")]
    # the client then closed stdin: audited as gone, the generic lines only
    assert "bad-password" not in result.stdout + result.stderr


def test_unknown_user_gets_the_same_answer(deployment: Deployment) -> None:
    mark = deployment.mark()
    result = deployment.ssh(stdin="mallory\nwhatever\n")
    assert result.returncode == 1
    assert "NX> 401 Authentication failed" in result.stdout
    stage2 = [e for e in deployment.since(mark) if e["stage"] == 2 and e["outcome"] == "failed"]
    assert stage2[0]["reason"] == "unknown-user" and stage2[0]["invalid_user"] is True


def test_too_many_attempts_close_the_session(deployment: Deployment) -> None:
    mark = deployment.mark()
    result = deployment.ssh(stdin="alice\nbad1\nalice\nbad2\nalice\nbad3\nalice\n" + PASSWORD + "\n")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines.count("NX> 401 Authentication failed") == 2
    assert lines[-2:] == ["NX> 403 Too many attempts", "NX> 999 Bye"]
    assert "session for" not in result.stdout  # the right password after the limit is never tried
    reasons = [e["reason"] for e in deployment.since(mark) if e["stage"] in (0, 2)]
    assert reasons.count("bad-password") == 3 and "too-many-attempts" in reasons
    assert main(["--config", str(deployment.config), "unlock", "alice"]) == EXIT_OK


@pytest.mark.parametrize("over", [0, 1], ids=["limit", "limit + 1"])
def test_a_line_one_byte_over_the_limit_is_a_bad_request(deployment: Deployment, over: int) -> None:
    """docs/protocol.md, Limits, through sshd and nxauth login: a password
    line of session.max_password_bytes (8192) bytes is read (a wrong
    password: 401); one byte more is 400 and 999, audited protocol-error
    (the old nxauth login read limit + 1 bytes and answered 401)."""
    mark = deployment.mark()
    result = deployment.ssh(stdin="mallory\n" + "p" * (8192 + over) + "\n")
    lines = result.stdout.splitlines()
    stage2 = [(e["outcome"], e["reason"]) for e in deployment.since(mark) if e["stage"] == 2]
    if over:
        assert lines[-3:] == ["NX> 102 Password:", "NX> 400 Bad request", "NX> 999 Bye"]
        assert stage2 == [("refused", "protocol-error")]
    else:
        assert "NX> 401 Authentication failed" in lines
        # read whole, and refused by the password database (it holds at most 4096 bytes)
        assert stage2[0] == ("failed", "invalid-password")
    main(["--config", str(deployment.config), "unlock", "mallory"])


def test_requested_command_is_replaced_by_the_exchange(deployment: Deployment) -> None:
    result = deployment.ssh(command=("/bin/sh", "-c", "'echo pwned'"), stdin="")
    assert "pwned" not in result.stdout
    assert result.stdout.startswith("NX> 100 ")
    assert result.returncode == 1  # no credentials: the client went away


def test_port_forwarding_is_refused(deployment: Deployment) -> None:
    # stdio forwarding (a direct-tcpip channel) to the sshd itself
    direct = deployment.ssh("-W", f"127.0.0.1:{deployment.sshd.port}", stdin="", timeout=20)
    assert direct.returncode == 255
    assert "SSH-2.0" not in direct.stdout
    # remote forwarding (tcpip-forward)
    remote = deployment.ssh(
        "-o", "ExitOnForwardFailure=yes", "-R", f"127.0.0.1:{free_port()}:127.0.0.1:22", stdin="", timeout=20
    )
    assert remote.returncode == 255
    assert "forwarding failed" in remote.stderr.lower() or "administratively prohibited" in remote.stderr.lower()


def test_terminal_prompts_do_not_echo_the_password(deployment: Deployment) -> None:
    import pty
    import select

    argv = deployment.sshd.ssh_argv(deployment.key, options=("-tt",))
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child becomes ssh
        os.execv(argv[0], argv)
    output = b""

    def read_until(marker: bytes, timeout: float = 20) -> None:
        nonlocal output

        deadline = time.monotonic() + timeout
        while marker not in output:
            remaining = deadline - time.monotonic()
            assert remaining > 0, output
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk

    try:
        read_until(b"login: ")
        os.write(fd, b"alice\r")
        read_until(b"Password: ")
        os.write(fd, PASSWORD.encode() + b"\r")
        read_until(b"session for alice")
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
        os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert "PTY allocation request failed" not in text, text
    assert "alice" in text.split("Password:")[0]  # the username is echoed
    assert PASSWORD not in text  # the password is not
    assert "NX>" not in text


def test_authorized_keys_runs_as_the_configured_user(deployment: Deployment) -> None:
    log = deployment.sshd.log.read_text()
    assert f"AuthorizedKeysCommand {deployment.base / 'nxauth'}" not in log or "bad ownership" not in log
    assert "Accepted publickey for " + deployment.sshd.account in log


# ---------------------------------------------------------------- the daemon


only_daemon = pytest.mark.parametrize("deployment", ["daemon"], indirect=True)


def _daemon(deployment: Deployment) -> KeyDaemon:
    assert deployment.daemon is not None
    return deployment.daemon


@only_daemon
def test_daemon_answers_without_starting_nxauth(deployment: Deployment) -> None:
    daemon = _daemon(deployment)
    assert daemon.process is not None and daemon.process.poll() is None
    mark = deployment.mark()
    result = deployment.ssh(stdin=f"alice\n{PASSWORD}\n")
    assert result.returncode == 0, result.stdout + result.stderr + deployment.sshd.log.read_text()
    events = deployment.since(mark)
    stage1 = [e for e in events if e["stage"] == 1 and e["detail"] == "authorized-keys"]
    assert stage1 and {e["outcome"] for e in stage1} == {"accepted"}
    assert "daemon did not answer" not in deployment.sshd.log.read_text()


@only_daemon
def test_a_removed_key_is_refused_at_once(deployment: Deployment, tmp_path: Path) -> None:
    _daemon(deployment)
    extra = tmp_path / "id_extra"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(extra)], check=True)
    line = 'restrict,pty,command="nxauth login" ' + (tmp_path / "id_extra.pub").read_text()
    (tmp_path / "extra.pub").write_text(line)
    account = deployment.sshd.account
    state = str(deployment.config.parent / "state")
    _cli("--config", str(deployment.config), "keys", "add", "--account", account, str(tmp_path / "extra.pub"))
    subprocess.run(["chown", "-R", account, state], check=True)
    result = deployment.ssh(key=extra, stdin=f"alice\n{PASSWORD}\n")
    assert result.returncode == 0, result.stdout + result.stderr
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", str(extra)], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    _cli("--config", str(deployment.config), "keys", "remove", fingerprint)
    subprocess.run(["chown", "-R", account, state], check=True)
    mark = deployment.mark()
    result = deployment.ssh(key=extra, stdin=f"alice\n{PASSWORD}\n")
    assert result.returncode == 255 and "NX>" not in result.stdout
    assert {(e["stage"], e["reason"]) for e in deployment.since(mark)} == {(1, "unknown-key")}


@only_daemon
def test_with_the_daemon_stopped_sshd_still_decides_in_process(deployment: Deployment) -> None:
    daemon = _daemon(deployment)
    daemon.stop()
    try:
        assert not daemon.socket_path.exists()  # SIGTERM removes it
        mark = deployment.mark()
        result = deployment.ssh(stdin=f"alice\n{PASSWORD}\n")
        assert result.returncode == 0, result.stdout + result.stderr + deployment.sshd.log.read_text()
        assert any(e["stage"] == 1 and e["outcome"] == "accepted" for e in deployment.since(mark))
        mark = deployment.mark()
        result = deployment.ssh(key=deployment.other_key, stdin=f"alice\n{PASSWORD}\n")
        assert result.returncode == 255 and "NX>" not in result.stdout
        assert {(e["stage"], e["reason"]) for e in deployment.since(mark)} == {(1, "unknown-key")}
    finally:
        daemon.start()
