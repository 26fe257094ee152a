"""A throwaway OpenSSH sshd on 127.0.0.1 for tests (needs root).

After ``../shared/recipes``: a work directory whose every path component is
root-owned 0755 (sshd's StrictModes), an Ed25519 host key, a private
``sshd_config`` (no PAM, no passwords, only the throwaway account), the
privilege-separation directory, and an account created with password field
``*`` (sshd refuses ``!``-locked accounts) and removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def skip_reason() -> str | None:
    """Why an sshd test cannot run here, or None."""
    if os.geteuid() != 0:
        return "sshd tests need root (a throwaway account and sshd's privilege separation)"
    for binary in (SSHD, shutil.which("ssh"), shutil.which("ssh-keygen"), shutil.which("useradd")):
        if binary is None or not os.path.exists(binary):
            return "openssh-server / openssh-client / useradd are not installed"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Sshd:
    work: Path
    port: int
    account: str
    log: Path

    def ssh_argv(self, key: Path, *command: str, options: Sequence[str] = ()) -> list[str]:
        """The real ssh client's command line against this server as the
        account; ``options`` go before the destination, ``command`` after."""
        ssh = shutil.which("ssh")
        assert ssh is not None
        return [
            ssh, "-F", "/dev/null", "-i", str(key), "-p", str(self.port),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            *options, f"{self.account}@127.0.0.1", *command,
        ]  # fmt: skip

    def ssh(
        self,
        key: Path,
        *command: str,
        options: Sequence[str] = (),
        input: str | None = None,
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real ssh client against this server as the account."""
        return subprocess.run(
            self.ssh_argv(key, *command, options=options),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            check=False,
        )


def as_account(account: str) -> list[str]:
    """The command prefix that runs what follows as ``account``, as sshd runs
    an ``AuthorizedKeysCommand`` (no supplementary groups)."""
    return ["setpriv", "--reuid", account, "--regid", "nogroup", "--clear-groups"]


def account_cannot_run(account: str, program: Path) -> str | None:
    """Why ``account`` cannot run ``program --version`` (an interpreter kept
    where the account cannot reach, such as pyenv under /root), or None."""
    probe = subprocess.run(
        [*as_account(account), str(program), "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    return None if probe.returncode == 0 else probe.stderr.strip()[:200] or f"exit {probe.returncode}"


class KeyDaemon:
    """``nxauth authorized-keys-daemon`` run as ``account`` (as a deployment
    runs it as ``nx``); its log goes to ``keyd.log`` beside the state
    directory: a pipe nobody reads would fill up and stop it.  A context
    manager, or :meth:`start`/:meth:`stop`."""

    def __init__(self, program: Path, config: Path, account: str, socket_path: Path) -> None:
        self.argv = [*as_account(account), str(program), "--config", str(config), "authorized-keys-daemon"]
        self.socket_path = socket_path
        self.log = socket_path.parent.parent / "keyd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 30
        while not self.socket_path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"authorized-keys-daemon did not start: {self.log.read_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def __enter__(self) -> KeyDaemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def throwaway_account(account: str, home: Path) -> Iterator[str]:
    """A system account with password field ``*`` (sshd refuses ``!``-locked
    accounts), removed afterwards."""
    subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/bin/sh", "-p", "*", account], check=True)
    try:
        yield account
    finally:
        subprocess.run(["userdel", account], check=False, capture_output=True)


@contextlib.contextmanager
def running_sshd(extra_config: str, *, account: str | None = None, create_account: bool = True) -> Iterator[Sshd]:
    """Start sshd with ``extra_config`` appended (use ``{work}`` for the work
    directory); yield it; stop it and remove the account (unless
    ``create_account`` is false: the caller's, see :func:`throwaway_account`)
    and the directory."""
    account = account or f"nxt{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix="nxauth-sshd-", dir="/var/tmp"))
    work.chmod(0o755)
    process: subprocess.Popen[bytes] | None = None
    accounts = contextlib.ExitStack()
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "host_ed25519")], check=True)
        port = free_port()
        log = work / "sshd.log"
        config = work / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {work / 'host_ed25519'}\nPidFile {work / 'sshd.pid'}\n"
            "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            f"AllowUsers {account}\nUseDNS no\nLogLevel VERBOSE\n" + extra_config.format(work=work)
        )
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        if create_account:
            accounts.enter_context(throwaway_account(account, work))
        check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"sshd -t refused the config: {check.stderr}")
        process = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(log)])
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"sshd did not start: {log.read_text() if log.exists() else ''}")
            time.sleep(0.02)
        yield Sshd(work, port, account, log)
    finally:
        if process is not None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
            if process.poll() is None:
                process.kill()
        accounts.close()
        shutil.rmtree(work, ignore_errors=True)
