"""Stage 2 over a byte stream: nxauth's line protocol (``docs/protocol.md``).

After stage 1 (the SSH layer proved the transport key), the server and the
client exchange numbered status lines, modelled on NX's ``NX> 1xx`` lines::

    NX> 100 nxauth 0.1.0 protocol 1
    NX> 101 User:
    alice
    NX> 102 Password:
    s3cret
    NX> 200 Authenticated alice
    ... the session command owns the channel from here ...

A denial is ``NX> 401 Authentication failed`` and the server asks again
until the session's attempts run out (``NX> 403``); every close ends with
``NX> 999 Bye``.  On a terminal the same exchange is shown as plain prompts
(``login:``, ``Password:``) with the echo off for secrets.

This module is the wire format (:class:`Code`, :data:`TEXTS`,
:func:`format_line`, :func:`decode_line`, :class:`FdLineReader`), the
terminal's rules (:func:`terminal_prompt`, :func:`terminal_text`), the two
*dialogue* protocols (how an exchange asks and tells) and the dialogues over
file descriptors of ``nxauth login``.  The exchange itself, once, is
:mod:`nxauth.integrations.exchange`.  Nothing here ever writes a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import select
import time
from collections.abc import Iterator, Mapping
from typing import Any, Final, NoReturn, Protocol, final

from nxauth.model import Identity

__all__ = [
    "PREFIX",
    "PROTOCOL_VERSION",
    "TERMINAL_PROMPTS",
    "TEXTS",
    "AsyncDialogue",
    "ClientGone",
    "Code",
    "Dialogue",
    "FdLineReader",
    "LineDialogue",
    "LoginTimeout",
    "ProtocolViolation",
    "TerminalDialogue",
    "decode_line",
    "format_line",
    "identity_environment",
    "line_too_long",
    "terminal_prompt",
    "terminal_text",
]

PROTOCOL_VERSION: Final = 1
PREFIX: Final = "NX> "


class Code(enum.IntEnum):
    """The status codes of the line protocol."""

    GREETING = 100
    USER = 101
    PASSWORD = 102
    SECRET_QUESTION = 103  # a backend's further question, answer not echoed (one-time code)
    QUESTION = 104  # a backend's further question, answer echoed
    AUTHENTICATED = 200
    NODES = 210  # the server host of a cluster: the nodes the user may reach (docs/deploy-cluster.md)
    NODE = 211  # ... and which one (an empty answer: stay)
    BAD_REQUEST = 400
    FAILED = 401
    TOO_MANY_ATTEMPTS = 403
    TIMED_OUT = 408
    NODE_REFUSED = 411  # the node could not be reached, or refused the login
    INTERNAL_ERROR = 500
    BYE = 999


#: What the client is told for each closing code: generic, never a reason.
TEXTS: Final[Mapping[Code, str]] = {
    Code.BAD_REQUEST: "Bad request",
    Code.FAILED: "Authentication failed",
    Code.TOO_MANY_ATTEMPTS: "Too many attempts",
    Code.TIMED_OUT: "Login timed out",
    Code.NODE_REFUSED: "Node refused",
    Code.INTERNAL_ERROR: "Internal error",
    Code.BYE: "Bye",
}


class ClientGone(Exception):
    """The client closed its end (or the read failed) before answering."""


class ProtocolViolation(Exception):
    """The client sent something the protocol does not allow (a line over the
    limit, bytes that are not UTF-8).  ``word`` (``line-too-long``,
    ``line-not-utf8``) is what the audit trail records; the text is for logs."""

    def __init__(self, message: str, word: str = "line-too-long") -> None:
        super().__init__(message)
        self.word = word


class LoginTimeout(Exception):
    """The whole exchange took longer than ``login.timeout``."""


def decode_line(line: bytes) -> str:
    """A client's line as text (a trailing CR dropped); raises
    :class:`ProtocolViolation` for bytes that are not UTF-8."""
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation("a line that is not UTF-8", "line-not-utf8") from None


def line_too_long(line: bytes | bytearray, limit: int) -> bool:
    """Whether a client's line (without its LF, or the part of it read so
    far) holds more than ``limit`` bytes, a CR before the LF not counted
    (``docs/protocol.md``: a line of ``limit`` bytes is read, one of
    ``limit + 1`` is a ``400``)."""
    return len(line) > limit and (len(line) > limit + 1 or line[-1] != 0x0D)


def format_line(code: Code, text: str) -> bytes:
    """One status line of the protocol, LF-terminated."""
    return f"{PREFIX}{int(code)} {text}\n".encode()


# ---------------------------------------------------------------- on a terminal

#: The prompts a terminal shows for the exchange's own questions.
TERMINAL_PROMPTS: Final[Mapping[Code, str]] = {Code.USER: "login: ", Code.PASSWORD: "Password: "}


def terminal_prompt(code: Code, prompt: str) -> str:
    """What a terminal shows for a question: ``login: ``, ``Password: ``, or
    a backend's own prompt followed by one space."""
    return TERMINAL_PROMPTS.get(code) or (prompt.rstrip() + " ")


def terminal_text(code: Code, text: str) -> str:
    """What a terminal shows for a status line: a short sentence for a
    failure, nothing for the greeting, a success or the goodbye."""
    if code in (Code.GREETING, Code.AUTHENTICATED, Code.BYE):
        return ""
    return f"{text}.\r\n"


# ---------------------------------------------------------------- the dialogue protocols


class Dialogue(Protocol):
    """How the blocking door of the exchange talks to the client
    (:func:`nxauth.integrations.exchange.run_exchange`)."""

    def ask(self, code: Code, prompt: str, *, echo: bool, deadline: float | None) -> str:
        """Show ``prompt`` and return the answer.  Raises :class:`ClientGone`,
        :class:`LoginTimeout` (past ``deadline``, a :func:`time.monotonic`
        value: a dialogue must not block beyond it) or
        :class:`ProtocolViolation`."""
        ...

    def tell(self, code: Code, text: str) -> None:
        """Show a status line (greeting, success, failure, bye)."""
        ...


class AsyncDialogue(Protocol):
    """How the exchange talks to the client
    (:func:`nxauth.integrations.exchange.run_exchange_async`)."""

    async def ask(self, code: Code, prompt: str, *, echo: bool) -> str:
        """Show ``prompt`` and return the answer; raises :class:`ClientGone`
        or :class:`ProtocolViolation` (the timeout is the exchange's: it
        cancels the call, which then must have read nothing more)."""
        ...

    async def tell(self, code: Code, text: str) -> None:
        """Show a status line (greeting, success, failure, bye)."""
        ...


# ---------------------------------------------------------------- file descriptors


@final
class FdLineReader:
    """Reads LF-terminated lines from a file descriptor with a length limit,
    without Python's buffering (so readiness is truthful and nothing the
    session command should read is swallowed: only whole lines up to the
    last one asked for are consumed).

    Blocking (:meth:`readline`, with a deadline) or on the running event
    loop (:meth:`readline_async`); the descriptor's flags are never changed
    (it is inherited by the session command): both wait until it is
    readable, then read once."""

    def __init__(self, fd: int, *, max_line: int) -> None:
        self.fd = fd
        self.max_line = max_line
        self._buffer = bytearray()
        self._eof = False
        self._broken = False

    def readline(self, deadline: float | None) -> bytes:
        """One line without its LF.  Raises :class:`ClientGone` at end of
        input, :class:`LoginTimeout` past ``deadline`` (``time.monotonic``),
        :class:`ProtocolViolation` for a line longer than ``max_line``."""
        while (line := self._next_line()) is None:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LoginTimeout
                ready, _, _ = select.select([self.fd], [], [], remaining)
                if not ready:
                    raise LoginTimeout
            self._fill()
        return line

    async def readline_async(self) -> bytes:
        """:meth:`readline` on the running event loop (``loop.add_reader``).
        The timeout is the caller's: cancelled while it waits, it has read
        nothing."""
        while (line := self._next_line()) is None:
            await self._readable()
            self._fill()
        return line

    def _next_line(self) -> bytes | None:
        """The next whole line from the buffer, or ``None`` when more input is needed."""
        if self._broken:  # the rest of an over-long line is not a new line
            raise ProtocolViolation(f"a line over {self.max_line} bytes")
        end = self._buffer.find(b"\n")
        if end >= 0:
            if line_too_long(self._buffer[:end], self.max_line):
                self._break()
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            return line
        if line_too_long(self._buffer, self.max_line):
            self._break()
        if self._eof:
            self._wipe()
            raise ClientGone("end of input")
        return None

    def _break(self) -> NoReturn:
        self._wipe()
        self._broken = True
        raise ProtocolViolation(f"a line over {self.max_line} bytes")

    def _fill(self) -> None:
        try:
            # one byte at a time would be slow; 4096 may read past the last
            # line the exchange needs, which the session command would miss:
            # a client sends the next line only after the next prompt.
            chunk = os.read(self.fd, 4096)
        except OSError as exc:
            raise ClientGone(str(exc)) from None
        if not chunk:
            self._eof = True
        self._buffer += chunk

    async def _readable(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        try:
            loop.add_reader(self.fd, wake)
        except PermissionError:
            return  # a regular file or /dev/null: epoll refuses it, and reading it never blocks
        except (OSError, ValueError) as exc:
            raise ClientGone(str(exc) or type(exc).__name__) from None
        try:
            await ready
        finally:
            loop.remove_reader(self.fd)

    def _wipe(self) -> None:
        for index in range(len(self._buffer)):
            self._buffer[index] = 0
        self._buffer.clear()

    def leftover(self) -> bytes:
        """Bytes read past the last line (the session command's input)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except OSError as exc:
        raise ClientGone(str(exc)) from None


@final
class LineDialogue:
    """The line protocol over a pair of file descriptors (``nxauth login``
    without a terminal: a program on the other end).  A :class:`Dialogue`;
    :meth:`ask_async` is the exchange's way in (writes stay blocking)."""

    def __init__(self, reader: FdLineReader, out_fd: int) -> None:
        self.reader = reader
        self.out_fd = out_fd

    def ask(self, code: Code, prompt: str, *, echo: bool, deadline: float | None) -> str:
        _write_all(self.out_fd, format_line(code, prompt))
        return decode_line(self.reader.readline(deadline))

    async def ask_async(self, code: Code, prompt: str, *, echo: bool) -> str:
        _write_all(self.out_fd, format_line(code, prompt))
        return decode_line(await self.reader.readline_async())

    def tell(self, code: Code, text: str) -> None:
        _write_all(self.out_fd, format_line(code, text))


@final
class TerminalDialogue:
    """Plain prompts on a terminal (``ssh -t``, :func:`terminal_prompt`):
    the terminal's own line discipline edits the answer, its echo is off
    for secrets; status lines as :func:`terminal_text`."""

    def __init__(self, reader: FdLineReader, out_fd: int) -> None:
        self.reader = reader
        self.out_fd = out_fd

    def ask(self, code: Code, prompt: str, *, echo: bool, deadline: float | None) -> str:
        with self._prompted(code, prompt, echo):
            return decode_line(self.reader.readline(deadline))

    async def ask_async(self, code: Code, prompt: str, *, echo: bool) -> str:
        with self._prompted(code, prompt, echo):
            return decode_line(await self.reader.readline_async())

    def tell(self, code: Code, text: str) -> None:
        shown = terminal_text(code, text)
        if shown:
            _write_all(self.out_fd, shown.encode())

    @contextlib.contextmanager
    def _prompted(self, code: Code, prompt: str, echo: bool) -> Iterator[None]:
        """The prompt shown, the echo off around a secret answer and back on after."""
        shown = terminal_prompt(code, prompt).encode()
        if echo:
            _write_all(self.out_fd, shown)
            yield
            return
        import termios

        fd = self.reader.fd
        try:
            saved = termios.tcgetattr(fd)
        except termios.error:
            saved = None  # not a terminal after all: nothing to switch
        if saved is not None:
            # echo off before the prompt is shown, and without flushing: a
            # client that types as soon as it sees the prompt is neither
            # echoed nor lost
            quiet = list(saved)
            quiet[3] &= ~(termios.ECHO | termios.ECHONL)
            try:
                termios.tcsetattr(fd, termios.TCSANOW, quiet)
            except termios.error as exc:
                raise ClientGone(f"terminal: {exc}") from None
        try:
            _write_all(self.out_fd, shown)
            yield
        except BaseException:  # timed out, cancelled, gone: the echo comes back all the same
            with contextlib.suppress(termios.error, ClientGone):
                self._restore(fd, saved)
            raise
        try:
            self._restore(fd, saved)
        except termios.error as exc:
            raise ClientGone(f"terminal: {exc}") from None

    def _restore(self, fd: int, saved: list[Any] | None) -> None:
        import termios

        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        _write_all(self.out_fd, b"\r\n")  # the Enter that was not echoed


# ---------------------------------------------------------------- after success


def identity_environment(identity: Identity, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the session command: ``base`` (the process's own
    environment by default) without any inherited ``NXAUTH_*`` variable, plus
    ``NXAUTH_USER``, ``NXAUTH_GROUPS`` (one per line), ``NXAUTH_BACKEND``,
    ``NXAUTH_SESSION``, ``NXAUTH_PEER`` (``host port``) and, after stage 1
    over SSH, ``NXAUTH_TRANSPORT_ACCOUNT``, ``NXAUTH_TRANSPORT_KEY`` (the key's
    fingerprint) and ``NXAUTH_TRANSPORT_SOURCE``."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("NXAUTH_")}
    env["NXAUTH_USER"] = identity.username
    env["NXAUTH_GROUPS"] = "\n".join(sorted(g.replace("\n", " ") for g in identity.groups))
    env["NXAUTH_BACKEND"] = identity.backend
    env["NXAUTH_SESSION"] = identity.session_id
    env["NXAUTH_PEER"] = f"{identity.peer.host} {identity.peer.port}"
    grant = identity.transport
    if grant is not None:
        env["NXAUTH_TRANSPORT_ACCOUNT"] = grant.account
        env["NXAUTH_TRANSPORT_KEY"] = grant.fingerprint
        env["NXAUTH_TRANSPORT_SOURCE"] = grant.source
    return env
