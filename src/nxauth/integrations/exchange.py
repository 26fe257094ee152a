"""The stage-2 login exchange, once (``docs/protocol.md``).

:func:`run_exchange_async` is the exchange; the embedded SSH server
(:mod:`nxauth.integrations.asyncssh`) runs it on its channel's dialogue.
:func:`run_exchange` is its blocking door, for ``nxauth login``
(:func:`nxauth.integrations.openssh.run_login`): the same coroutine on an
event loop of its own, made and closed by the call, the file-descriptor
dialogue read on that loop (``add_reader``, the descriptor's flags left
alone).  Nothing of it (a thread, the loop, a registered descriptor)
outlives the call, so the session command can be ``exec``'d right after.

Every rule of the exchange is here, once:

* the greeting, then ``User:`` and ``Password:`` until a login succeeds or
  the session closes: ``401`` and ask again; ``403`` and ``999`` when the
  session's attempts ran out;
* a backend's further questions (``103`` secret, ``104`` echoed) are asked
  only while the login that asked runs; the client leaving or breaking the
  protocol while answering one ends the exchange as it would at ``User:``;
* ``login.timeout`` bounds the whole exchange: ``408`` and ``999``.  The
  login running at that moment is waited for, and its outcome is the
  session's (the ``deadline`` of :meth:`Session.login`): an allow after the
  deadline is refused there (audited, not counted), an allow just inside it
  stands;
* a line over the limit or not UTF-8: ``400`` and ``999``; the client gone:
  audited, nothing said;
* a success is announced once, ``200``, the exchange's last line.

Every end is audited by the session (the login's own event, or
:meth:`Session.abort` with the precise reason); the client sees only the
generic lines of :data:`~nxauth.integrations.protocol.TEXTS`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, final

from nxauth._version import __version__
from nxauth.core.session import Session, SessionState
from nxauth.errors import AuthenticationFailed
from nxauth.integrations.protocol import (
    PROTOCOL_VERSION,
    TEXTS,
    AsyncDialogue,
    ClientGone,
    Code,
    Dialogue,
    LineDialogue,
    LoginTimeout,
    ProtocolViolation,
    TerminalDialogue,
)
from nxauth.model import Identity, Reason, Secret

__all__ = ["run_exchange", "run_exchange_async"]


def run_exchange(session: Session, dialogue: Dialogue, *, timeout: float | None) -> Identity | None:
    """Stage 2 over a blocking ``dialogue``, on a session whose stage 1
    succeeded: :func:`run_exchange_async` on an event loop of its own (so
    not from a thread whose event loop is running).

    A :class:`~nxauth.integrations.protocol.LineDialogue` or
    :class:`~nxauth.integrations.protocol.TerminalDialogue` is read on that
    loop; any other dialogue's ``ask`` runs in a worker thread with the
    exchange's deadline, which it must honour (the call returns only once
    that thread has ended).  Returns what :func:`run_exchange_async` returns.
    """
    deadline = _deadline(timeout)
    door: AsyncDialogue
    if isinstance(dialogue, LineDialogue | TerminalDialogue):
        door = _FdDoor(dialogue)
    else:
        door = _ThreadDoor(dialogue, deadline)
    # a loop of its own, never the thread's current one (Runner leaves that
    # alone when given a factory); closing it joins its worker threads.  In
    # the main thread, ^C cancels the exchange (a terminal gets its echo
    # back) and then raises KeyboardInterrupt here.
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        try:
            return runner.run(_Exchange(session, door, timeout, deadline).run())
        except KeyboardInterrupt:
            session.abort(Reason.CLIENT_GONE, "interrupted-sigint")
            raise


async def run_exchange_async(
    session: Session,
    dialogue: AsyncDialogue,
    *,
    timeout: float | None,
    keep_password: Callable[[Secret], None] | None = None,
) -> Identity | None:
    """Stage 2 over ``dialogue``, on a session whose stage 1 succeeded.

    Asks for a username and a password until a login succeeds or the session
    closes, and relays the backends' further questions.  The backends run in
    the authenticator's thread pool (:meth:`Session.login_async`); their
    questions come back to the loop.  Returns the identity, or ``None`` when
    the client did not log in (every case audited; the client only saw
    generic lines).  ``timeout`` (seconds) bounds the whole exchange.
    ``keep_password`` is handed the password of the login that succeeded
    (the server host relaying it to a node): nothing else keeps it.
    """
    exchange = _Exchange(session, dialogue, timeout, _deadline(timeout))
    exchange.keep_password = keep_password
    return await exchange.run()


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _clean_prompt(text: str) -> str:
    """A prompt from a backend on one line: control characters removed."""
    return "".join(ch if ch.isprintable() else " " for ch in text)[:200].strip() or "Answer:"


@final
class _Exchange:
    """One exchange: the login running now and the questions it asked."""

    def __init__(
        self, session: Session, dialogue: AsyncDialogue, timeout: float | None, deadline: float | None
    ) -> None:
        self._session = session
        self._dialogue = dialogue
        self._timeout = timeout
        self._deadline = deadline  # a time.monotonic() value; also the logins' (Session.login's late-allow rule)
        self._login: asyncio.Future[Identity] | None = None  # the last login started, never cancelled here
        self._attempts = 0
        self._asking: int | None = None  # the attempt whose login may ask questions now
        self._questions: set[asyncio.Task[Any]] = set()
        self._broken: ClientGone | ProtocolViolation | LoginTimeout | None = None  # how answering a question failed
        self.keep_password: Callable[[Secret], None] | None = None

    async def run(self) -> Identity | None:
        try:
            try:
                async with asyncio.timeout(None if self._deadline is None else self._deadline - time.monotonic()):
                    identity = await self._until_decided()
            except (TimeoutError, LoginTimeout):
                identity = await self._timed_out()
            if identity is None:
                return None
            await self._dialogue.tell(Code.AUTHENTICATED, f"Authenticated {identity.username}")
            return identity
        except ClientGone:  # its text is the transport's, not for the audit trail
            await self._abort(Reason.CLIENT_GONE, "client-closed-channel")
        except ProtocolViolation as exc:
            await self._abort(Reason.PROTOCOL_ERROR, exc.word)
            await self._goodbye(Code.BAD_REQUEST)
        return None

    async def _until_decided(self) -> Identity | None:
        dialogue = self._dialogue
        await dialogue.tell(Code.GREETING, f"nxauth {__version__} protocol {PROTOCOL_VERSION}")
        while True:
            username = await dialogue.ask(Code.USER, "User:", echo=True)
            password = Secret(await dialogue.ask(Code.PASSWORD, "Password:", echo=False))
            try:
                identity = await self._log_in(username, password)
            except AuthenticationFailed as exc:
                if exc.reason is Reason.LOGIN_TIMEOUT:
                    raise LoginTimeout from None
                if self._session.state is SessionState.CLOSED:
                    await dialogue.tell(Code.TOO_MANY_ATTEMPTS, TEXTS[Code.TOO_MANY_ATTEMPTS])
                    await dialogue.tell(Code.BYE, TEXTS[Code.BYE])
                    return None
                await dialogue.tell(Code.FAILED, TEXTS[Code.FAILED])
                continue
            if self.keep_password is not None:
                self.keep_password(password)
            return identity

    async def _log_in(self, username: str, password: Secret) -> Identity:
        """One login, in the authenticator's pool.  The timeout cancels the
        wait, never the login: its outcome is the session's to decide."""
        self._attempts += 1
        attempt = self._asking = self._attempts

        async def conversation(prompt: str, echo: bool) -> Secret:
            return await self._question(attempt, prompt, echo)

        login = self._login = asyncio.ensure_future(
            self._session.login_async(username, password, conversation=conversation, deadline=self._deadline)
        )
        try:
            await asyncio.wait({login})  # cancelling the wait leaves the login running
        finally:
            await self._end_questions()
        if self._broken is not None:  # the client left or broke the protocol while answering
            if not login.cancelled():
                login.exception()  # the login's outcome (audited) gives way to that
            raise self._broken
        return login.result()

    async def _question(self, attempt: int, prompt: str, echo: bool) -> Secret:
        """A backend's question (run as its own task by ``login_async``)."""
        if attempt != self._asking:  # its login ended (a backend given up on, the timeout): nobody to answer
            raise RuntimeError("the login that asked has ended")
        task = asyncio.current_task()
        assert task is not None
        self._questions.add(task)
        try:
            code = Code.QUESTION if echo else Code.SECRET_QUESTION
            return Secret(await self._dialogue.ask(code, _clean_prompt(prompt), echo=echo))
        except (ClientGone, ProtocolViolation, LoginTimeout) as exc:
            if self._broken is None:
                self._broken = exc
            raise
        finally:
            self._questions.discard(task)

    async def _end_questions(self) -> None:
        """The login ended or the exchange gave up on it: no new question is
        asked, and one still waiting (a backend given up on by its stack) is
        cancelled and waited for, so that it has read nothing more when the
        exchange reads again."""
        self._asking = None
        waiting = set(self._questions)
        for task in waiting:
            task.cancel()
        if waiting:
            await asyncio.wait(waiting)

    async def _timed_out(self) -> Identity | None:
        """The deadline passed.  A login still running is waited for: allowed
        (within its deadline, or Session.login would have refused it), it
        stands; otherwise the session is closed, ``408``."""
        await self._end_questions()
        login = self._login
        if login is not None:
            await asyncio.wait({login})  # not cancelled here; an outside cancellation still ends this wait
            if not login.cancelled() and login.exception() is None and self._broken is None:
                return login.result()
        await self._abort(Reason.LOGIN_TIMEOUT, "no-login-in-time")
        await self._goodbye(Code.TIMED_OUT)
        return None

    async def _abort(self, reason: Reason, detail: str) -> None:
        """Close the session, audited, off the loop (an audit sink may be slow)."""
        await asyncio.get_running_loop().run_in_executor(None, self._session.abort, reason, detail)

    async def _goodbye(self, code: Code) -> None:
        try:
            await self._dialogue.tell(code, TEXTS[code])
            await self._dialogue.tell(Code.BYE, TEXTS[Code.BYE])
        except (ClientGone, OSError):
            pass


@final
class _FdDoor:
    """A file-descriptor dialogue as an :class:`AsyncDialogue`: answers read
    on the loop (``add_reader``), status lines written at once."""

    def __init__(self, dialogue: LineDialogue | TerminalDialogue) -> None:
        self._dialogue = dialogue

    async def ask(self, code: Code, prompt: str, *, echo: bool) -> str:
        return await self._dialogue.ask_async(code, prompt, echo=echo)

    async def tell(self, code: Code, text: str) -> None:
        self._dialogue.tell(code, text)


@final
class _ThreadDoor:
    """Any other blocking dialogue: each answer awaited in a worker thread,
    bounded by the exchange's deadline."""

    def __init__(self, dialogue: Dialogue, deadline: float | None) -> None:
        self._dialogue = dialogue
        self._deadline = deadline

    async def ask(self, code: Code, prompt: str, *, echo: bool) -> str:
        return await asyncio.to_thread(self._dialogue.ask, code, prompt, echo=echo, deadline=self._deadline)

    async def tell(self, code: Code, text: str) -> None:
        self._dialogue.tell(code, text)
