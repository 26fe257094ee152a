"""The stage-2 exchange on an asyncssh server channel: the
:class:`~nxauth.integrations.protocol.AsyncDialogue` of the embedded server
(line protocol without a terminal, prompts and a small line discipline with
one).  Private to :mod:`nxauth.integrations.asyncssh`."""

from __future__ import annotations

import asyncio
from typing import final

import asyncssh

from nxauth.integrations.protocol import (
    ClientGone,
    Code,
    ProtocolViolation,
    decode_line,
    format_line,
    line_too_long,
    terminal_prompt,
    terminal_text,
)

__all__ = ["ChannelIO", "ChannelLineDialogue", "ChannelTerminalDialogue"]


class ChannelIO:
    """Lines from a channel's stdin (a byte limit, no over-read) and writes to its stdout."""

    def __init__(self, process: asyncssh.SSHServerProcess[bytes], max_line: int) -> None:
        self.process = process
        self.max_line = max_line

    async def write(self, data: bytes) -> None:
        try:
            self.process.stdout.write(data)
            await self.process.stdout.drain()
        except (OSError, asyncssh.Error) as exc:
            raise ClientGone(str(exc) or type(exc).__name__) from None

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; out-of-band events other than a window
        change end the exchange."""
        while True:
            try:
                data = await self.process.stdin.read(size)
            except asyncssh.TerminalSizeChanged:
                continue
            except (asyncssh.BreakReceived, asyncssh.SignalReceived) as exc:
                raise ClientGone(f"client sent {type(exc).__name__}") from None
            except (OSError, asyncssh.Error) as exc:
                raise ClientGone(str(exc) or type(exc).__name__) from None
            if not data:
                raise ClientGone("end of input")
            return data

    async def readline(self) -> bytes:
        """One LF-terminated line without the LF.  Reads nothing past it (the
        rest is the session handler's); asyncssh's channel window bounds
        what is buffered while the line is incomplete."""
        pending = b""
        while True:
            try:
                data = await self.process.stdin.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                # end of input, a full buffer, or an out-of-band event next
                if not exc.partial:
                    raise ClientGone("end of input") from None
                pending += exc.partial
                if line_too_long(pending, self.max_line):
                    raise ProtocolViolation(f"a line over {self.max_line} bytes") from None
                continue
            except asyncssh.TerminalSizeChanged:
                continue
            except (asyncssh.BreakReceived, asyncssh.SignalReceived) as exc:
                raise ClientGone(f"client sent {type(exc).__name__}") from None
            except (OSError, asyncssh.Error) as exc:
                raise ClientGone(str(exc) or type(exc).__name__) from None
            line = pending + data[:-1]
            if line_too_long(line, self.max_line):
                raise ProtocolViolation(f"a line over {self.max_line} bytes")
            return line


@final
class ChannelLineDialogue:
    """The line protocol (``NX> 101 User:``) on a channel without a terminal."""

    def __init__(self, io: ChannelIO) -> None:
        self._io = io

    async def ask(self, code: Code, prompt: str, *, echo: bool) -> str:
        await self._io.write(format_line(code, prompt))
        return decode_line(await self._io.readline())

    async def tell(self, code: Code, text: str) -> None:
        await self._io.write(format_line(code, text))


@final
class ChannelTerminalDialogue:
    """Plain prompts on the client's terminal (``ssh -t``), the terminal
    rules of :func:`~nxauth.integrations.protocol.terminal_prompt` and
    :func:`~nxauth.integrations.protocol.terminal_text`.  The channel is a
    raw byte stream, so this is the line discipline too: echo (off for
    secrets), backspace, ^U, Enter as CR or LF, ^C and ^D end the exchange."""

    def __init__(self, io: ChannelIO) -> None:
        self._io = io
        self._after_cr = False

    async def ask(self, code: Code, prompt: str, *, echo: bool) -> str:
        await self._io.write(terminal_prompt(code, prompt).encode())
        return decode_line(await self._read_line(echo))

    async def tell(self, code: Code, text: str) -> None:
        shown = terminal_text(code, text)
        if shown:
            await self._io.write(shown.encode())

    async def _read_line(self, echo: bool) -> bytes:
        line = bytearray()
        escape = 0  # 1: after ESC, 2: inside a CSI/SS3 sequence
        while True:
            byte = (await self._io.read(1))[0]  # one at a time: nothing past the line is consumed
            after_cr, self._after_cr = self._after_cr, False
            if escape:
                escape = 2 if escape == 1 and byte in b"[O" else (2 if escape == 2 and not 0x40 <= byte <= 0x7E else 0)
                continue
            if byte in b"\r\n":
                if byte == 0x0A and after_cr:  # CR LF is one Enter
                    continue
                self._after_cr = byte == 0x0D
                await self._io.write(b"\r\n")
                return bytes(line)
            if byte == 0x03:
                raise ClientGone("interrupted (^C)")
            if byte == 0x04:
                if not line:
                    raise ClientGone("end of input (^D)")
                continue
            if byte in (0x7F, 0x08):
                if line:
                    while line and line[-1] & 0xC0 == 0x80:  # a whole UTF-8 character
                        line.pop()
                    if line:
                        line.pop()
                    if echo:
                        await self._io.write(b"\b \b")
                continue
            if byte == 0x15:
                if echo and line:
                    count = len(line.decode("utf-8", "replace"))
                    await self._io.write(b"\b \b" * count)
                line.clear()
                continue
            if byte == 0x1B:
                escape = 1
                continue
            if byte < 0x20:
                continue
            line.append(byte)
            if len(line) > self._io.max_line:
                raise ProtocolViolation(f"a line over {self._io.max_line} bytes")
            if echo:
                await self._io.write(bytes((byte,)))
