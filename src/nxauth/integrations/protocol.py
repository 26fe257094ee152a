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

The exchange is one function for blocking streams (:func:`run_exchange`,
used by ``nxauth login``) and one for asyncio (:func:`run_exchange_async`,
used by the embedded SSH server); both drive a *dialogue* that knows how to
ask and tell.  Neither ever writes a password anywhere.
"""

from __future__ import annotations

import enum
import os
import select
import time
from collections.abc import Mapping
from typing import Final, Protocol, final

from nxauth.core.session import Session, SessionState
from nxauth.errors import AuthenticationFailed
from nxauth.model import Identity, Reason, Secret

__all__ = [
    "PROTOCOL_VERSION",
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
    "run_exchange",
    "run_exchange_async",
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
    BAD_REQUEST = 400
    FAILED = 401
    TOO_MANY_ATTEMPTS = 403
    TIMED_OUT = 408
    INTERNAL_ERROR = 500
    BYE = 999


#: What the client is told for each closing code: generic, never a reason.
TEXTS: Final[Mapping[Code, str]] = {
    Code.FAILED: "Authentication failed",
    Code.TOO_MANY_ATTEMPTS: "Too many attempts",
    Code.TIMED_OUT: "Login timed out",
    Code.INTERNAL_ERROR: "Internal error",
    Code.BYE: "Bye",
}


class ClientGone(Exception):
    """The client closed its end (or the read failed) before answering."""


class ProtocolViolation(Exception):
    """The client sent something the protocol does not allow (a line over the
    limit, bytes that are not UTF-8).  The text is for the audit trail."""


class LoginTimeout(Exception):
    """The whole exchange took longer than ``login.timeout``."""


def _clean_prompt(text: str) -> str:
    """A prompt from a backend on one line: control characters removed."""
    return "".join(ch if ch.isprintable() else " " for ch in text)[:200].strip() or "Answer:"


def _decode(line: bytes) -> str:
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation("a line that is not UTF-8") from None


# ---------------------------------------------------------------- blocking I/O


@final
class FdLineReader:
    """Reads LF-terminated lines from a file descriptor with a deadline and a
    length limit, without Python's buffering (so ``select`` is truthful and
    nothing the session command should read is swallowed: only whole lines
    up to the last one asked for are consumed)."""

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
        if self._broken:  # the rest of an over-long line is not a new line
            raise ProtocolViolation(f"a line over {self.max_line} bytes")
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                if end > self.max_line:
                    self._wipe()
                    self._broken = True
                    raise ProtocolViolation(f"a line over {self.max_line} bytes")
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > self.max_line:
                self._wipe()
                self._broken = True
                raise ProtocolViolation(f"a line over {self.max_line} bytes")
            if self._eof:
                self._wipe()
                raise ClientGone("end of input")
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LoginTimeout
                ready, _, _ = select.select([self.fd], [], [], remaining)
                if not ready:
                    raise LoginTimeout
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

    def _wipe(self) -> None:
        for index in range(len(self._buffer)):
            self._buffer[index] = 0
        self._buffer.clear()

    def leftover(self) -> bytes:
        """Bytes read past the last line (the session command's input)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


class Dialogue(Protocol):
    """How :func:`run_exchange` talks to the client."""

    def ask(self, code: Code, prompt: str, *, echo: bool, deadline: float | None) -> str:
        """Show ``prompt`` and return the answer.  Raises :class:`ClientGone`,
        :class:`LoginTimeout` or :class:`ProtocolViolation`."""
        ...

    def tell(self, code: Code, text: str) -> None:
        """Show a status line (greeting, success, failure, bye)."""
        ...


@final
class LineDialogue:
    """The line protocol over a pair of file descriptors (``nxauth login``
    without a terminal: a program on the other end)."""

    def __init__(self, reader: FdLineReader, out_fd: int) -> None:
        self.reader = reader
        self.out_fd = out_fd

    def _write(self, code: Code, text: str) -> None:
        data = f"{PREFIX}{int(code)} {text}\n".encode()
        view = memoryview(data)
        try:
            while view:
                written = os.write(self.out_fd, view)
                view = view[written:]
        except OSError as exc:
            raise ClientGone(str(exc)) from None

    def ask(self, code: Code, prompt: str, *, echo: bool, deadline: float | None) -> str:
        self._write(code, prompt)
        return _decode(self.reader.readline(deadline))

    def tell(self, code: Code, text: str) -> None:
        self._write(code, text)


@final
class TerminalDialogue:
    """Plain prompts on a terminal (``ssh -t``): ``login:``, ``Password:``
    with the terminal's echo off, failures as short sentences."""

    PROMPTS: Final = {Code.USER: "login: ", Code.PASSWORD: "Password: "}

    def __init__(self, reader: FdLineReader, out_fd: int) -> None:
        self.reader = reader
        self.out_fd = out_fd

    def _write(self, text: str) -> None:
        try:
            os.write(self.out_fd, text.encode())
        except OSError as exc:
            raise ClientGone(str(exc)) from None

    def ask(self, code: Code, prompt: str, *, echo: bool, deadline: float | None) -> str:
        shown = self.PROMPTS.get(code) or (prompt.rstrip() + " ")
        if echo:
            self._write(shown)
            return _decode(self.reader.readline(deadline))
        import termios

        fd = self.reader.fd
        try:
            saved = termios.tcgetattr(fd)
        except termios.error:
            saved = None
        if saved is not None:
            # echo off before the prompt is shown, and without flushing: a
            # client that types as soon as it sees the prompt is neither
            # echoed nor lost
            quiet = list(saved)
            quiet[3] &= ~(termios.ECHO | termios.ECHONL)
            termios.tcsetattr(fd, termios.TCSANOW, quiet)
        try:
            self._write(shown)
            return _decode(self.reader.readline(deadline))
        finally:
            if saved is not None:
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            self._write("\r\n")

    def tell(self, code: Code, text: str) -> None:
        if code in (Code.GREETING, Code.BYE):
            return
        self._write(f"{text}.\r\n" if code != Code.AUTHENTICATED else "")


def run_exchange(session: Session, dialogue: Dialogue, *, timeout: float | None) -> Identity | None:
    """Stage 2 over ``dialogue``, on a session whose stage 1 succeeded.

    Asks for a username and a password until a login succeeds or the session
    closes; relays the backends' further questions.  Returns the identity, or
    ``None`` when the client did not log in (every case audited; the client
    only saw generic lines).  ``timeout`` bounds the whole exchange.
    """
    from nxauth._version import __version__

    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        dialogue.tell(Code.GREETING, f"nxauth {__version__} protocol {PROTOCOL_VERSION}")
        while True:
            username = dialogue.ask(Code.USER, "User:", echo=True, deadline=deadline)
            password = Secret(dialogue.ask(Code.PASSWORD, "Password:", echo=False, deadline=deadline))

            def conversation(prompt: str, echo: bool) -> Secret:
                code = Code.QUESTION if echo else Code.SECRET_QUESTION
                return Secret(dialogue.ask(code, _clean_prompt(prompt), echo=echo, deadline=deadline))

            try:
                identity = session.login(username, password, conversation=conversation, deadline=deadline)
            except AuthenticationFailed as exc:
                if exc.reason is Reason.LOGIN_TIMEOUT:
                    raise LoginTimeout from None
                if session.state is SessionState.CLOSED:
                    dialogue.tell(Code.TOO_MANY_ATTEMPTS, TEXTS[Code.TOO_MANY_ATTEMPTS])
                    dialogue.tell(Code.BYE, TEXTS[Code.BYE])
                    return None
                dialogue.tell(Code.FAILED, TEXTS[Code.FAILED])
                continue
            dialogue.tell(Code.AUTHENTICATED, f"Authenticated {identity.username}")
            return identity
    except ClientGone as exc:
        session.abort(Reason.CLIENT_GONE, f"client closed the channel ({exc})")
    except LoginTimeout:
        session.abort(Reason.LOGIN_TIMEOUT, f"no login within {timeout:g} s")
        _goodbye(dialogue, Code.TIMED_OUT)
    except ProtocolViolation as exc:
        session.abort(Reason.PROTOCOL_ERROR, str(exc))
        _goodbye(dialogue, Code.BAD_REQUEST, "Bad request")
    return None


def _goodbye(dialogue: Dialogue, code: Code, text: str | None = None) -> None:
    try:
        dialogue.tell(code, text or TEXTS[code])
        dialogue.tell(Code.BYE, TEXTS[Code.BYE])
    except ClientGone:
        pass


# ---------------------------------------------------------------- asyncio


class AsyncDialogue(Protocol):
    """How :func:`run_exchange_async` talks to the client."""

    async def ask(self, code: Code, prompt: str, *, echo: bool) -> str:
        """Show ``prompt`` and return the answer; raises :class:`ClientGone`
        or :class:`ProtocolViolation` (the timeout is the caller's)."""
        ...

    async def tell(self, code: Code, text: str) -> None: ...


async def run_exchange_async(
    session: Session,
    dialogue: AsyncDialogue,
    *,
    timeout: float | None,
) -> Identity | None:
    """:func:`run_exchange` for asyncio: backends run in the authenticator's
    thread pool (``login_async``); their questions come back to the loop."""
    import asyncio

    from nxauth._version import __version__

    # A backend's question runs as its own task (login_async submits it from
    # the worker thread): cancelled with the exchange, so that login returns.
    questions: set[asyncio.Task[object]] = set()
    # the login still running in a worker thread when wait_for gives up
    # fails at this deadline instead of completing unseen
    deadline = None if timeout is None else time.monotonic() + timeout
    # that login, shielded from wait_for's cancellation: its outcome is the
    # session's to decide (an allow just inside the deadline stands)
    in_flight: asyncio.Future[Identity] | None = None

    async def exchange() -> Identity | None:
        await dialogue.tell(Code.GREETING, f"nxauth {__version__} protocol {PROTOCOL_VERSION}")
        while True:
            username = await dialogue.ask(Code.USER, "User:", echo=True)
            password = Secret(await dialogue.ask(Code.PASSWORD, "Password:", echo=False))

            async def conversation(prompt: str, echo: bool) -> Secret:
                code = Code.QUESTION if echo else Code.SECRET_QUESTION
                task = asyncio.current_task()
                assert task is not None
                questions.add(task)
                try:
                    return Secret(await dialogue.ask(code, _clean_prompt(prompt), echo=echo))
                finally:
                    questions.discard(task)

            nonlocal in_flight
            in_flight = asyncio.ensure_future(
                session.login_async(username, password, conversation=conversation, deadline=deadline)
            )
            try:
                identity = await asyncio.shield(in_flight)
            except AuthenticationFailed as exc:
                if exc.reason is Reason.LOGIN_TIMEOUT:
                    raise TimeoutError from None  # the branch below: 408
                if session.state is SessionState.CLOSED:
                    await dialogue.tell(Code.TOO_MANY_ATTEMPTS, TEXTS[Code.TOO_MANY_ATTEMPTS])
                    await dialogue.tell(Code.BYE, TEXTS[Code.BYE])
                    return None
                await dialogue.tell(Code.FAILED, TEXTS[Code.FAILED])
                continue
            return identity  # announced below, once, even if wait_for gave up meanwhile

    async def goodbye(code: Code, text: str | None = None) -> None:
        try:
            await dialogue.tell(code, text or TEXTS[code])
            await dialogue.tell(Code.BYE, TEXTS[Code.BYE])
        except (ClientGone, OSError):
            pass

    identity: Identity | None = None
    try:
        identity = await asyncio.wait_for(exchange(), timeout)
    except ClientGone as exc:
        session.abort(Reason.CLIENT_GONE, f"client closed the channel ({exc})")
    except TimeoutError:
        # a login may still run in a worker thread, holding the session's lock
        # (and waiting for a question's answer): let it end, then abort off
        # the event loop
        for task in list(questions):
            task.cancel()
        if in_flight is not None:
            try:
                identity = await in_flight  # allowed within its deadline, audited as accepted: it stands
            except (Exception, asyncio.CancelledError):  # noqa: BLE001 - denied (audited) or broken: no login
                identity = None
        if identity is None:
            await asyncio.get_running_loop().run_in_executor(
                None, session.abort, Reason.LOGIN_TIMEOUT, f"no login within {timeout:g} s"
            )
            await goodbye(Code.TIMED_OUT)
    except ProtocolViolation as exc:
        session.abort(Reason.PROTOCOL_ERROR, str(exc))
        await goodbye(Code.BAD_REQUEST, "Bad request")
    if identity is None:
        return None
    try:
        await dialogue.tell(Code.AUTHENTICATED, f"Authenticated {identity.username}")
    except ClientGone:
        return None
    return identity


def decode_line(line: bytes) -> str:
    """A client's line as text (a trailing CR dropped); raises
    :class:`ProtocolViolation` for bytes that are not UTF-8."""
    return _decode(line)


def format_line(code: Code, text: str) -> bytes:
    """One status line of the protocol, LF-terminated."""
    return f"{PREFIX}{int(code)} {text}\n".encode()


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
