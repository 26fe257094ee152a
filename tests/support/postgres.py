"""A private PostgreSQL cluster for the tests: Debian's server binaries,
``initdb`` and ``pg_ctl`` run as an unprivileged account when the tests run
as root (PostgreSQL refuses root), in a temporary directory, on a free
loopback port, password (SCRAM) authentication for everyone.

``Cluster.start()`` makes the cluster, a role ``nxauth`` with a random
password (in ``password_file``, mode 0600) and a database ``nxauth`` it
owns; ``new_schema()`` gives each test a schema of its own, so the tests
share one server and never each other's tables."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def server_bin() -> Path | None:
    """The directory of Debian's ``initdb``/``pg_ctl`` (``/usr/lib/postgresql/N/bin``), or one on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    bindir: Path
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nxauth-pg-")))
    port: int = field(default_factory=_free_port)
    superuser_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    password: str = field(default_factory=lambda: "pw'\\\"" + secrets.token_urlsafe(18))  # quotes: escaped everywhere
    running: bool = False

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def password_file(self) -> Path:
        return self.base / "nxauth.secret"

    @property
    def url(self) -> str:
        """The connection string nxauth is given (no password: that is a secret reference)."""
        return f"postgresql://nxauth@127.0.0.1:{self.port}/nxauth"

    # ------------------------------------------------------------ the server

    def _account(self) -> dict[str, Any]:
        """How to run the server binaries: as ``postgres`` (or ``nobody``) when root."""
        if os.geteuid() != 0:
            return {}
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)
                return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        raise RuntimeError("no unprivileged account to run PostgreSQL as")

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {"PATH": f"{self.bindir}:/usr/bin:/bin", "LC_ALL": "C", "HOME": str(self.base)}
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.base,
            env=env,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
            **self._account(),
        )

    def start(self) -> Cluster:
        account = self._account()
        pwfile = self.base / "superuser.pw"
        pwfile.write_text(self.superuser_password + "\n")
        if account:
            os.chown(self.base, account["user"], account["group"])
            os.chown(pwfile, account["user"], account["group"])
        pwfile.chmod(0o600)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256",
            f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.base}'\nfsync = off\nfull_page_writes = off\n"
                "max_connections = 200\nshared_buffers = 32MB\nlog_min_messages = warning\n"
            )
        self.resume()
        self.password_file.write_text(self.password + "\n")
        self.password_file.chmod(0o600)
        with self.superuser() as conn:
            conn.execute(f"CREATE ROLE nxauth LOGIN PASSWORD '{self.password.replace(chr(39), chr(39) * 2)}'")
            conn.execute("CREATE DATABASE nxauth OWNER nxauth")
        return self

    def resume(self) -> None:
        """``pg_ctl start`` (waits until the server accepts connections)."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "server.log"), "-w", "-t", "60", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (or ``immediate``: a crash, recovered at the next start)."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)
            self.running = False

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    # ------------------------------------------------------------ connections

    @contextlib.contextmanager
    def superuser(self, dbname: str = "postgres") -> Any:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg.connect(
                    host="127.0.0.1", port=self.port, user="postgres", password=self.superuser_password,
                    dbname=dbname, autocommit=True, connect_timeout=5,
                )  # fmt: skip
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        try:
            yield conn
        finally:
            conn.close()

    def new_schema(self) -> str:
        """A new empty schema owned by ``nxauth``, for one test."""
        name = "t_" + secrets.token_hex(6)
        with self.superuser("nxauth") as conn:
            conn.execute(f"CREATE SCHEMA {name} AUTHORIZATION nxauth")
        return name

    def store_options(self, schema: str) -> dict[str, Any]:
        """The ``[store]`` table of a configuration for ``schema``."""
        return {"url": self.url, "password": {"file": str(self.password_file)}, "schema": schema}
