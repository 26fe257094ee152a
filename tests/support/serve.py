"""``nxauth serve`` as a real subprocess, and the real ssh client to log in."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

SSH = shutil.which("ssh")
NXAUTH = [sys.executable, "-m", "nxauth"]


class Serve:
    """A running ``nxauth serve``: its port from the first line it prints."""

    def __init__(self, config: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [*NXAUTH, "--config", str(config), "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "SERVER_SECRET_LDAP": "hunter2"},  # e.g. for a {env = ...} secret
        )
        assert self.process.stdout is not None
        watchdog = threading.Timer(30, self.process.kill)
        watchdog.start()
        self.banner = self.process.stdout.readline()
        watchdog.cancel()
        match = re.search(r"port (\d+) \(host key (SHA256:\S+)\)", self.banner)
        if match is None:
            self.process.kill()
            _, err = self.process.communicate()
            raise AssertionError(f"nxauth serve did not start: {self.banner!r} {err}")
        self.port = int(match.group(1))
        self.fingerprint = match.group(2)

    def ssh(self, key: Path, input: str, *command: str) -> subprocess.CompletedProcess[str]:
        assert SSH is not None
        return subprocess.run(
            [
                SSH, "-F", "/dev/null", "-i", str(key), "-p", str(self.port),
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "SetEnv=FROM_CLIENT=1",
                "nx@127.0.0.1", *command,
            ],
            input=input, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str, str]:
        self.process.send_signal(signum)
        out, err = self.process.communicate(timeout=30)
        return self.process.returncode, out, err
