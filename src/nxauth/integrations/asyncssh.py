"""The embedded SSH server (deployment shape 2, ``nxauth serve``), on asyncssh.

A host program runs it with its own session handler::

    async def hello(identity: nxauth.Identity, process: asyncssh.SSHServerProcess[bytes]) -> int:
        process.stdout.write(f"hello {identity.username}\\n".encode())
        return 0

    server = await start_server(authenticator, hello, host_keys=[ensure_host_key(path)], port=4022)

Each SSH connection has one nxauth :class:`~nxauth.Session`.  SSH public-key
authentication *is* stage 1: only the transport account (``nx``) can log in,
only with a key that a key source allows; passwords, keyboard-interactive,
host-based and GSSAPI authentication are off.  The connection may then open
one session channel, and whatever the client asks to run there (a shell, a
command, a subsystem is refused) the channel runs the stage-2 exchange of
:mod:`nxauth.integrations.protocol`.  The handler is called only after
stage 2 succeeded, with the :class:`~nxauth.Identity`.  No port, socket, X11
or agent forwarding, no SFTP or SCP, no second channel, ever.

Stage 1 is committed (and audited as accepted) only once the client has
proven its key: asyncssh asks :meth:`validate_public_key` both for the
client's unsigned query and for the signed request, before it checks the
signature, so the decision there is a dry run (cached per key) and the
session takes the key when authentication completed.  A refused key is
audited at once.

This module, its private helper ``_asyncssh_channel`` and ``asyncssh_client``
are the only ones that import asyncssh (the ``ssh`` extra); ``ensure_host_key``
lives in :mod:`nxauth.integrations.hostkey` and is re-exported here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, final

import asyncssh

from nxauth.core.authenticator import runtime_of
from nxauth.core.session import SessionState
from nxauth.errors import AuthenticationFailed, UsageError
from nxauth.integrations._asyncssh_channel import ChannelIO, ChannelLineDialogue, ChannelTerminalDialogue
from nxauth.integrations.exchange import run_exchange_async
from nxauth.integrations.hostkey import ensure_host_key
from nxauth.integrations.session_command import INHERITED_ENV, SessionHandler, command_handler, session_environment
from nxauth.integrations.startups import Startups, Ticket
from nxauth.model import Identity, Reason, Secret

if TYPE_CHECKING:
    from nxauth.core.authenticator import Authenticator
    from nxauth.core.session import Session
    from nxauth.integrations.relay import Relay

__all__ = [
    "INHERITED_ENV",
    "NxauthServer",
    "SessionHandler",
    "command_handler",
    "ensure_host_key",
    "session_environment",
    "start_server",
]

log = logging.getLogger("nxauth")


#: asyncssh options a host may tune.  Anything that could open another way
#: in (authorized_client_keys, password_auth, forwarding, factories, ...) is
#: not among them.
TUNABLE_OPTIONS: Final = frozenset(
    {
        "backlog",
        "compression_algs",
        "encryption_algs",
        "family",
        "keepalive_count_max",
        "keepalive_interval",
        "kex_algs",
        "mac_algs",
        "max_pktsize",
        "passphrase",
        "rekey_bytes",
        "rekey_seconds",
        "reuse_address",
        "reuse_port",
        "send_server_host_keys",
        "server_host_certs",
        "server_version",
        "signature_algs",
        "tcp_keepalive",
        "window",
    }
)
EXIT_DENIED: Final = 1
EXIT_HANDLER_FAILED: Final = 1


# ---------------------------------------------------------------- one connection


class _ExchangeProcess(asyncssh.SSHServerProcess[bytes]):
    """The session channel: a shell or any command runs the exchange (the
    command is ignored, as with a forced command); subsystems are refused; a
    terminal only when the transport key's options allow one (``no-pty``, or
    ``restrict`` without ``pty``, refuse it, as sshd does)."""

    def __init__(self, run: Callable[[asyncssh.SSHServerProcess[bytes]], Awaitable[None]], *, pty: bool) -> None:
        super().__init__(run, None, 3, False)
        self._pty = pty

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        return self._pty and super().pty_requested(term_type, term_size, term_modes)

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        return False


class _Connection(asyncssh.SSHServer):
    """The asyncssh callbacks of one connection: stage 1 and the gates."""

    def __init__(self, server: NxauthServer) -> None:
        self._server = server
        self._auth = server.authenticator
        self._conn: asyncssh.SSHServerConnection | None = None
        self._session: Session | None = None
        self._answers: dict[tuple[str, bytes], bool] = {}
        self._candidate: tuple[str, bytes] | None = None
        self._channel_opened = False
        self._channel_task: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._grace: asyncio.TimerHandle | None = None  # server.login_grace_time
        self._grace_exceeded = False
        self._ticket: Ticket | None = None  # its place among the unauthenticated connections
        # stage-1 calls running in a worker thread: the connection's end waits for them
        self._stage1: list[concurrent.futures.Future[bool]] = []
        loop = asyncio.get_running_loop()
        self._granted: asyncio.Future[bool] = loop.create_future()  # stage 1 committed after the proof
        self.closed: asyncio.Future[None] = loop.create_future()

    # ------------------------------------------------------------ lifecycle

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else None
        self._server._connections.add(self)
        ticket = self._server.startups.admit(host)
        if isinstance(ticket, str):  # a pre-authentication limit (startups.py): no session, no event
            conn.abort()
            return
        self._ticket = ticket
        self._grace = asyncio.get_running_loop().call_later(self._server.startups.config.login_grace_time, self._late)
        try:
            self._session = self._auth.open_session((str(peer[0]), int(peer[1])))
        except (UsageError, TypeError, IndexError, ValueError):
            self._session = self._auth.open_session(None)

    def _late(self) -> None:
        """``server.login_grace_time`` ran out before stage 2 succeeded."""
        self._grace_exceeded = True
        session = self._session
        if session is not None and not session.authenticated:
            asyncio.get_running_loop().run_in_executor(
                None, session.abort, Reason.LOGIN_TIMEOUT, "login-grace-exceeded"
            )
        self._close()

    def authenticated(self) -> None:
        """Stage 2 succeeded: the connection leaves the startups' counts."""
        if self._grace is not None:
            self._grace.cancel()
        if self._ticket is not None:
            self._ticket.leave()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._grace is not None:
            self._grace.cancel()
        if self._ticket is not None and not self._ticket.left:
            self._ticket.leave()  # ended unauthenticated: its source's penalty grows (sshd's PerSourcePenalties)
            cfg = self._server.startups.config
            session = self._session
            if session is not None:  # (always: a ticket comes with a session)
                failed = session.attempts > 0
                grace = self._grace_exceeded
                seconds = cfg.penalty_authfail if failed else cfg.penalty_grace if grace else cfg.penalty_noauth
                self._server.startups.penalise(session.peer, seconds)  # the peer as the throttle sees it
        if self._channel_task is not None and not self._channel_task.done():
            self._channel_task.cancel()
        session = self._session
        if session is None:
            self._done()
            return
        tried = bool(self._answers) or bool(self._stage1)
        pending = tuple(f for f in self._stage1 if not f.done())
        # off the event loop: a login running in a worker thread holds the session's lock
        future = asyncio.get_running_loop().run_in_executor(None, _finish_session, session, tried, pending)
        future.add_done_callback(lambda _: self._done())

    def _done(self) -> None:
        self._server._connections.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def _hang_up(self) -> None:
        if self._conn is not None:
            self._conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "Too many authentication failures")

    # ------------------------------------------------------------ stage 1

    def begin_auth(self, username: str) -> bool:
        return True  # authentication is always required

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return False  # certificates are not a way in (nor a way around the key sources)

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """May ``key`` open the transport for ``username``?  Called for the
        client's query and again for its signed request (asyncssh checks the
        signature afterwards): the first call decides, the answer is cached
        per (username, key).  Nothing is granted here; a refusal is audited."""
        session = self._session
        if session is None:
            return False
        if _closed(session):  # too many failures: like sshd, hang up
            asyncio.get_running_loop().call_soon(self._hang_up)
            return False
        blob = bytes(key.public_data)
        answer = self._answers.get((username, blob))
        if answer is None:
            answer = await self._in_worker(_probe, session, username, blob)
            self._answers[(username, blob)] = answer
            if _closed(session):
                asyncio.get_running_loop().call_soon(self._hang_up)
        if answer:
            self._candidate = (username, blob)
        return answer

    async def auth_completed(self) -> None:
        """The client proved its key: now the session takes it (audited as
        accepted).  If the key was revoked meanwhile, hang up."""
        session, candidate = self._session, self._candidate
        granted = False
        if session is not None and candidate is not None:
            granted = await self._in_worker(_commit, session, *candidate)
        if not self._granted.done():
            self._granted.set_result(granted)
        if not granted:
            self._close()
            return
        if not self._channel_opened:
            self._timer = asyncio.get_running_loop().call_later(self._server.login_timeout, self._no_channel)

    async def _in_worker(self, call: Callable[[Session, str, bytes], bool], session: Session, *args: Any) -> bool:
        """``call`` in the runtime's pool.  It is kept until it returns, so
        the connection's end (which may come first: a client can hang up as
        soon as asyncssh sent its success) audits after it, not beside it."""
        work = runtime_of(self._auth).executor().submit(call, session, *args)
        self._stage1.append(work)
        return await asyncio.wrap_future(work)

    def _no_channel(self) -> None:
        session = self._session
        if session is not None and not self._channel_opened:
            asyncio.get_running_loop().run_in_executor(None, session.abort, Reason.LOGIN_TIMEOUT, "no-session-channel")
            self._close()

    # ------------------------------------------------------------ channels

    def session_requested(self) -> Awaitable[asyncssh.SSHServerSession[bytes]] | bool:
        """One session channel per connection, after stage 1, before stage 2.
        (The client may open it while :meth:`auth_completed` still commits
        stage 1: the channel waits for that.)"""
        if self._session is None or self._channel_opened or self._session.authenticated:
            return False
        self._channel_opened = True
        if self._timer is not None:
            self._timer.cancel()
        return self._open_channel(self._session)

    async def _open_channel(self, session: Session) -> asyncssh.SSHServerSession[bytes]:
        granted = await self._granted  # stage 1 may still be committing
        grant = session.transport
        if not granted or session.state is not SessionState.TRANSPORT_OK or grant is None:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "Session refused")
        return _ExchangeProcess(self._run_channel, pty="no-pty" not in grant.restrictions)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        return False  # ssh -L, -D

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False  # ssh -R

    def unix_connection_requested(self, dest_path: str) -> bool:
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        return False

    def tun_requested(self, unit: int | None) -> bool:
        return False

    def tap_requested(self, unit: int | None) -> bool:
        return False

    async def _run_channel(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        self._channel_task = asyncio.current_task()
        session = self._session
        assert session is not None
        server = self._server
        io = ChannelIO(process, server.authenticator.config.session.max_password_bytes)
        dialogue = ChannelTerminalDialogue(io) if process.term_type else ChannelLineDialogue(io)
        status = EXIT_DENIED
        kept: list[Secret] = []  # the password, for a relay to a node only
        try:
            identity = await run_exchange_async(
                session, dialogue, timeout=server.login_timeout, keep_password=kept.append if server.relay else None
            )
            if identity is not None:
                self.authenticated()
                relayed = None
                if server.relay is not None:
                    relayed = await server.relay.run(identity, kept[0] if kept else None, dialogue, process)
                    kept.clear()
                status = relayed if relayed is not None else await _call_handler(server.handler, identity, process)
        finally:
            with contextlib.suppress(Exception):
                process.exit(status)
                await asyncio.wait_for(process.wait_closed(), 10)
            self._close()


def _closed(session: Session) -> bool:
    return session.state is SessionState.CLOSED


def _finish_session(session: Session, tried: bool, pending: Sequence[concurrent.futures.Future[bool]] = ()) -> None:
    """The connection is gone: once the stage-1 calls still running have
    returned, a client that started stage 1 but did not finish stage 2 is
    audited as gone; the session is closed."""
    concurrent.futures.wait(pending)
    if session.state is SessionState.TRANSPORT_OK:
        session.abort(Reason.CLIENT_GONE, "closed-before-stage-2")
    elif session.state is SessionState.NEW and tried:
        session.abort(Reason.CLIENT_GONE, "closed-without-transport-grant")
    session.close()


def _probe(session: Session, username: str, blob: bytes) -> bool:
    """Stage 1 before the client proved its key: a refusal is audited and
    counted by the session, an allow grants nothing yet."""
    try:
        session.check_transport_key(username, blob, can_verify_user=False, probe=True)
    except AuthenticationFailed:
        return False
    return True


def _commit(session: Session, username: str, blob: bytes) -> bool:
    """The client proved its key: stage 1 again (the key sources may have
    changed their mind), audited, and taken by the session.  asyncssh checks
    a security key's touch but does not hand over the signature's flags, so
    ``verify-required`` cannot be enforced here: such a key is refused."""
    try:
        session.check_transport_key(username, blob, can_verify_user=False)
    except AuthenticationFailed:
        return False
    return True


async def _call_handler(handler: SessionHandler, identity: Identity, process: asyncssh.SSHServerProcess[bytes]) -> int:
    try:
        result = await handler(identity, process)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the host's handler failing ends its channel, not the server
        log.error("session handler for %s failed: %s", identity.username, type(exc).__name__)
        log.debug("session handler traceback", exc_info=True)
        return EXIT_HANDLER_FAILED
    if result is None:
        return 0
    if isinstance(result, bool) or not isinstance(result, int):
        log.error("session handler returned %s, not an exit status", type(result).__name__)
        return EXIT_HANDLER_FAILED
    return result


# ---------------------------------------------------------------- the server


@final
class NxauthServer:
    """A running embedded server (from :func:`start_server`)."""

    def __init__(
        self, authenticator: Authenticator, handler: SessionHandler, login_timeout: float, relay: Relay | None = None
    ) -> None:
        self.authenticator = authenticator
        self.handler = handler
        self.login_timeout = login_timeout
        self.relay = relay  # logging in through this host to a node of the cluster
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[_Connection] = set()
        config = authenticator.config
        #: the limits before stage 2 succeeds (sshd's MaxStartups, PerSourcePenalties, ...)
        self.startups = Startups(config.server, exempt=runtime_of(authenticator).throttle.exempt)

    def __repr__(self) -> str:
        return f"NxauthServer(addresses={self.addresses!r}, connections={len(self._connections)})"

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) pairs listened on."""
        if self._acceptor is None:
            return []
        return [(str(a[0]), int(a[1])) for a in self._acceptor.get_addresses()]

    @property
    def port(self) -> int:
        """The port listened on (the one picked when ``port=0`` was asked)."""
        ports = {port for _, port in self.addresses}
        return ports.pop() if len(ports) == 1 else 0

    @property
    def connections(self) -> int:
        """Connections not yet closed (their sessions not yet finished)."""
        return len(self._connections)

    def close(self) -> None:
        """Stop listening and close every connection (their sessions are
        aborted as ``client-gone`` when stage 2 had not succeeded)."""
        if self._acceptor is not None:
            self._acceptor.close()
        for connection in list(self._connections):
            connection._close()

    async def wait_closed(self) -> None:
        """Wait until the listener and every connection are closed."""
        if self._acceptor is not None:
            await self._acceptor.wait_closed()
        while self._connections:
            await asyncio.gather(*(c.closed for c in list(self._connections)))

    async def __aenter__(self) -> NxauthServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


async def start_server(
    authenticator: Authenticator,
    handler: SessionHandler,
    *,
    host_keys: Sequence[str | os.PathLike[str] | asyncssh.SSHKey],
    host: str | Sequence[str] = "127.0.0.1",
    port: int = 0,
    login_timeout: float | None = None,
    relay: Relay | None = None,
    **asyncssh_options: Any,
) -> NxauthServer:
    """Start the embedded server on ``host`` (one address or several) and
    ``port`` (0: a free one, see :attr:`NxauthServer.port`).

    ``handler(identity, process)`` is awaited after stage 2 succeeded; the
    process is the channel in bytes (``process.stdin``, ``process.stdout``,
    ``process.stderr``, ``process.term_type``); its return value is the exit
    status.  ``login_timeout`` (default ``login.timeout``) bounds SSH
    authentication, the wait for a session channel, and the exchange, each.
    ``relay`` (:class:`~nxauth.integrations.relay.Relay`) offers a user
    granted nodes of the cluster to log in through this host to one of them.
    ``asyncssh_options`` may only tune :data:`TUNABLE_OPTIONS`.
    """
    if not callable(handler):
        raise UsageError("handler must be an async callable handler(identity, process)")
    if isinstance(host_keys, str | bytes | os.PathLike) or not host_keys:
        raise UsageError("host_keys must be a non-empty sequence of host keys (paths or asyncssh keys)")
    refused = sorted(set(asyncssh_options) - TUNABLE_OPTIONS)
    if refused:
        raise UsageError(f"asyncssh option {refused[0]!r} cannot be set on the nxauth server")
    timeout = authenticator.config.login.timeout if login_timeout is None else float(login_timeout)
    if not timeout > 0:
        raise UsageError("login_timeout must be positive")
    server = NxauthServer(authenticator, handler, timeout, relay)
    server._acceptor = await asyncssh.create_server(
        lambda: _Connection(server),
        list(host) if not isinstance(host, str) else host,
        port,
        server_host_keys=list(host_keys),
        config=None,
        authorized_client_keys=None,
        known_client_hosts=None,
        trust_client_host=False,
        x509_trusted_certs=None,
        public_key_auth=True,
        password_auth=False,
        kbdint_auth=False,
        host_based_auth=False,
        gss_host=None,
        gss_kex=False,
        gss_auth=False,
        allow_pty=True,
        line_editor=False,
        x11_forwarding=False,
        agent_forwarding=False,
        process_factory=None,
        session_factory=None,
        sftp_factory=None,
        allow_scp=False,
        encoding=None,
        login_timeout=timeout,
        **asyncssh_options,
    )
    return server
