"""The client's end of the stage-2 exchange over asyncssh's SSH client:
what ``nxauth demo`` uses when OpenSSH's ``ssh`` is not installed, and a
helper for hosts' tests.  Needs the ``ssh`` extra."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any, final

import asyncssh

__all__ = ["ClientChannel", "HostKeyMismatch", "connect_client"]


class HostKeyMismatch(ConnectionError):
    """The server's host key is not the pinned one."""


@final
class ClientChannel:
    """The client's end of the exchange over asyncssh's client: the same
    shape as an ``ssh`` subprocess (lines in, lines out, an exit status)."""

    def __init__(self, conn: asyncssh.SSHClientConnection, process: asyncssh.SSHClientProcess[bytes]) -> None:
        self._conn = conn
        self._process = process

    async def readline(self) -> bytes:
        """One line with its LF (``b""`` at the end of the output)."""
        try:
            return await self._process.stdout.readline()
        except (OSError, asyncssh.Error):
            return b""

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the output (``b""`` at its end)."""
        try:
            return await self._process.stdout.read(size)
        except (OSError, asyncssh.Error):
            return b""

    async def write(self, data: bytes) -> None:
        self._process.stdin.write(data)
        await self._process.stdin.drain()

    def close_input(self) -> None:
        with contextlib.suppress(OSError, asyncssh.Error):
            self._process.stdin.write_eof()

    async def close(self) -> None:
        """End the connection now (a node that failed: nothing more to wait for)."""
        with contextlib.suppress(OSError, asyncssh.Error, TimeoutError):
            self._conn.close()
            await asyncio.wait_for(self._conn.wait_closed(), 5)

    async def wait(self) -> int:
        """The exit status (255 when the connection ended without one)."""
        try:
            await self._process.wait_closed()
        finally:
            self._conn.close()
            await self._conn.wait_closed()
        status = self._process.exit_status
        return 255 if status is None or status < 0 else status


async def connect_client(
    host: str,
    port: int,
    *,
    client_key: str | os.PathLike[str],
    host_key: str | None,
    account: str = "nx",
    timeout: float = 30.0,
) -> ClientChannel:
    """Connect as ``account`` with the private key file ``client_key`` and
    open a session channel.  ``host_key`` is the server's public key line
    (``None``: not checked, for tests only).  Raises :class:`PermissionError`
    when the server refused the key, :class:`ConnectionError` when it could
    not be reached."""
    known: Any = None
    if host_key is not None:
        known = ([asyncssh.import_public_key(host_key)], [], [])
    try:
        conn = await asyncssh.connect(
            host,
            port,
            username=account,
            client_keys=[os.fspath(client_key)],
            known_hosts=known,
            agent_path=None,
            config=None,
            password=None,
            kbdint_auth=False,
            password_auth=False,
            gss_auth=False,
            gss_kex=False,
            agent_forwarding=False,
            connect_timeout=timeout,
        )
    except asyncssh.PermissionDenied:
        raise PermissionError(f"{account}@{host}: Permission denied (publickey)") from None
    except asyncssh.HostKeyNotVerifiable:
        raise HostKeyMismatch(f"{host} port {port}: the host key is not the pinned one") from None
    except (OSError, asyncssh.Error) as exc:
        raise ConnectionError(f"{host} port {port}: {exc}") from None
    try:
        process = await conn.create_process(encoding=None)
    except (OSError, asyncssh.Error) as exc:
        conn.close()
        raise ConnectionError(f"{host} port {port}: {exc}") from None
    return ClientChannel(conn, process)
