"""``nxauth serve``'s session command: after stage 2, the configured command
(no shell) with the channel as its standard input, output and error."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Final

import asyncssh

from nxauth.errors import UsageError
from nxauth.integrations.protocol import identity_environment
from nxauth.model import Identity

__all__ = ["INHERITED_ENV", "SessionHandler", "client_input", "command_handler", "session_environment"]

#: ``handler(identity, process)``: runs after stage 2 succeeded; returns the exit status (``None``: 0).
SessionHandler = Callable[[Identity, "asyncssh.SSHServerProcess[bytes]"], Awaitable[int | None]]


#: What the session command inherits from the server's environment (as sshd,
#: never the whole of it: it may hold the secrets of the configuration).
INHERITED_ENV: Final = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ")


def session_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's variables in :data:`INHERITED_ENV` and ``LC_*`` (from
    ``base``, by default the process's environment)."""
    source = os.environ if base is None else base
    return {k: v for k, v in source.items() if k in INHERITED_ENV or k.startswith("LC_")}


def command_handler(argv: Sequence[str], *, base_env: Mapping[str, str] | None = None) -> SessionHandler:
    """A session handler that runs ``argv`` (no shell) with the channel as
    its standard input, output and error, in the environment
    :func:`session_environment` (``TERM`` too when the client asked for a
    terminal) plus :func:`~nxauth.integrations.protocol.identity_environment`'s
    ``NXAUTH_*`` variables; the client's own environment requests are ignored.
    The exit status is the command's (128 + N when killed by signal N).  The
    command is killed when the connection goes away."""
    if not argv or not all(isinstance(a, str) and a for a in argv):
        raise UsageError("argv must be a non-empty sequence of non-empty strings")
    command = tuple(argv)

    async def run(identity: Identity, process: asyncssh.SSHServerProcess[bytes]) -> int:
        base = session_environment(base_env)
        if process.term_type:
            base["TERM"] = process.term_type
        env = identity_environment(identity, base)
        child = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        assert child.stdin is not None and child.stdout is not None and child.stderr is not None
        feeding = asyncio.ensure_future(_feed(process, child.stdin))
        try:
            await asyncio.gather(_pump(child.stdout, process.stdout), _pump(child.stderr, process.stderr))
            status = await child.wait()
        finally:
            feeding.cancel()
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                await child.wait()
        return status if status >= 0 else 128 - status

    return run


async def client_input(process: asyncssh.SSHServerProcess[bytes]) -> AsyncIterator[bytes]:
    """The client's input on the channel, chunk by chunk, until its end (a
    terminal resize is skipped; a break, a signal or a broken channel ends it)."""
    with contextlib.suppress(OSError, asyncssh.Error, asyncssh.BreakReceived, asyncssh.SignalReceived):
        while True:
            try:
                data = await process.stdin.read(65536)
            except asyncssh.TerminalSizeChanged:
                continue
            if not data:
                return
            yield data


async def _feed(process: asyncssh.SSHServerProcess[bytes], stdin: asyncio.StreamWriter) -> None:
    try:
        async for data in client_input(process):
            stdin.write(data)
            await stdin.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            stdin.close()


async def _pump(source: asyncio.StreamReader, sink: asyncssh.SSHWriter[bytes]) -> None:
    while chunk := await source.read(65536):
        try:
            sink.write(chunk)
            await sink.drain()
        except (OSError, asyncssh.Error):
            return  # the client is gone; the command is killed when the channel closes
