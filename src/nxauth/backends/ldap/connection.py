"""Connections to the directory: servers with failover, TLS that verifies,
deadlines on every wait, and pools of reusable connections.

* A :class:`Link` is one LDAP connection.  ldap3 opens it (TCP with a
  connect timeout, LDAPS or StartTLS through :class:`VerifiedTls`); then
  requests are framed by :mod:`._ldap_wire` and written to its socket.  A
  link is used by one thread at a time (whoever checked it out of a pool).
* :class:`ServerSet` orders the servers (first available, or round robin)
  and skips a server that failed for ``retry_after`` seconds.
* :class:`Pool` keeps idle links.  :meth:`Pool.run` checks one out, runs a
  function on it, and puts it back only if the function returned: a link
  that raised, timed out or broke is closed.  A connection that cannot be
  opened, or a pooled one found dead, is retried on the next server; a
  timeout is not retried, so a hung server delays a login by at most its
  deadline; nor is a :class:`ProtocolViolation` (see :meth:`Link.exchange`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import secrets
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar, final
from urllib.parse import urlsplit

import ldap3

from nxauth.backends.ldap import wire
from nxauth.errors import BackendError

__all__ = [
    "LdapTimeout",
    "Link",
    "LinkError",
    "Pool",
    "ProtocolViolation",
    "SearchResult",
    "ServerSet",
    "ServerSpec",
    "VerifiedTls",
    "make_ssl_context",
    "parse_uri",
]

log = logging.getLogger("nxauth.backends.ldap")

T = TypeVar("T")

#: Result codes after which another server may do better.
UNAVAILABLE_CODES: Final = frozenset({51, 52})  # busy, unavailable


class LinkError(BackendError):
    """A connection could not be opened or used (refused, reset, TLS failure)."""


class ProtocolViolation(LinkError):
    """The server sent what no request asked for (another message id or operation, a second
    response, trailing bytes, an unsolicited message, malformed BER): the link is discarded and
    the operation fails, never retried (the answer cannot be trusted)."""


class LdapTimeout(BackendError):
    """The directory did not answer within the deadline."""


@final
@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One server: where, and how TLS is done (``ldaps``, ``starttls`` or ``none``)."""

    uri: str
    host: str
    port: int
    tls: str

    def __str__(self) -> str:
        return self.uri


def parse_uri(uri: str, *, insecure: bool) -> ServerSpec:
    """``ldaps://host[:636]`` or ``ldap://host[:389]`` (StartTLS unless
    ``insecure``).  Raises ValueError naming what is wrong."""
    parts = urlsplit(uri.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("ldap", "ldaps"):
        raise ValueError(f"{uri!r}: the scheme must be ldap:// or ldaps://")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{uri!r}: a server URI is scheme://host[:port] only")
    host = parts.hostname
    if not host:
        raise ValueError(f"{uri!r}: no host")
    try:
        port = parts.port or (636 if scheme == "ldaps" else 389)
    except ValueError:
        raise ValueError(f"{uri!r}: bad port") from None
    tls = "ldaps" if scheme == "ldaps" else ("none" if insecure else "starttls")
    shown = f"{scheme}://{host if ':' not in host else '[' + host + ']'}:{port}"
    return ServerSpec(shown, host, port, tls)


def make_ssl_context(
    *,
    ca_file: str | None = None,
    ca_dir: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> ssl.SSLContext:
    """A client context: certificate and host name verified, TLS 1.2 or newer,
    the CA file/directory given or else the system store."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file, capath=ca_dir)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if client_cert is not None:
        context.load_cert_chain(client_cert, keyfile=client_key)
    return context


class VerifiedTls(ldap3.Tls):  # type: ignore[misc]  # ldap3 has no type information
    """ldap3's Tls with our :class:`ssl.SSLContext`: the handshake itself
    checks the chain and the host name (ldap3's own context turns
    ``check_hostname`` off and matches names afterwards)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self.context = context

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self.context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=connection.server.host,
        )


@final
@dataclass(frozen=True, slots=True)
class SearchResult:
    entries: tuple[wire.Entry, ...]
    references: tuple[str, ...]
    result: wire.Result


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise LdapTimeout("deadline passed")
    return left


class Link:
    """One open LDAP connection (see the module docstring)."""

    def __init__(self, spec: ServerSpec, connection: Any) -> None:
        self.spec = spec
        self._connection = connection
        self._sock: socket.socket = connection.socket
        self._buffer = bytearray()
        self._last_id = 0
        self.opened_at = time.monotonic()
        self.broken = False
        #: a connection of the user-bind pool: searches only after this
        #: checkout's own successful bind (never on another user's bind)
        self.bind_first = False
        self.bound_in_checkout = False

    def __repr__(self) -> str:
        return f"Link({self.spec.uri}, broken={self.broken})"

    # -------------------------------------------------------- opening

    @classmethod
    def open(cls, spec: ServerSpec, tls: VerifiedTls | None, *, connect_timeout: float, deadline: float) -> Link:
        """Connect (and do TLS) within ``min(connect_timeout, deadline)``."""
        limit = min(connect_timeout, _remaining(deadline))
        try:
            server = ldap3.Server(
                spec.host,
                port=spec.port,
                use_ssl=spec.tls == "ldaps",
                tls=tls if spec.tls != "none" else None,
                get_info=ldap3.NONE,
                connect_timeout=limit,
            )
            connection = ldap3.Connection(
                server,
                client_strategy=ldap3.SYNC,
                auto_bind=ldap3.AUTO_BIND_NONE,
                auto_referrals=False,
                check_names=False,
                raise_exceptions=True,
                read_only=True,
            )
            connection.open(read_server_info=False)
            # One write per request: Nagle's algorithm would only hold a
            # request back until the last TLS handshake segment is ACKed
            # (a delayed ACK: ~40 ms on every new connection).
            connection.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if spec.tls == "starttls":
                connection.socket.settimeout(limit)
                connection.start_tls(read_server_info=False)
        except Exception as exc:  # noqa: BLE001 - ldap3 raises many types; all mean "not connected"
            if _is_timeout(exc):
                raise LinkError(f"{spec}: no answer within {limit:.3g}s while connecting") from None
            raise LinkError(f"{spec}: cannot connect: {_describe(exc)}") from None
        return cls(spec, connection)

    # -------------------------------------------------------- I/O

    def _take_id(self) -> int:
        """A random message id in 1..2**31-1, never the previous one: a response sent ahead cannot guess it."""
        self._last_id = (self._last_id + secrets.randbelow(0x7FFFFFFE)) % 0x7FFFFFFF + 1
        return self._last_id

    def _read_message(self, deadline: float) -> wire.Message:
        buffer = self._buffer
        while True:
            size = wire.message_length(buffer)
            if size is not None and len(buffer) >= size:
                data = bytes(buffer[:size])
                del buffer[:size]
                return wire.decode_message(data)
            self._sock.settimeout(_remaining(deadline))
            chunk = self._sock.recv(65536)
            if not chunk:
                raise LinkError(f"{self.spec}: connection closed by the server")
            buffer += chunk

    def _check_idle(self) -> None:
        """Nothing may arrive between two exchanges: a server that closed the
        link or said goodbye is a LinkError, anything else a ProtocolViolation."""
        sock, chunk = self._sock, b"?"
        if self._buffer or (isinstance(sock, ssl.SSLSocket) and sock.pending()) or select.select([sock], [], [], 0)[0]:
            sock.settimeout(0.0)
            with contextlib.suppress(ssl.SSLWantReadError, BlockingIOError):  # TLS records without data
                self._buffer += (chunk := sock.recv(65536))
        if not chunk:
            raise LinkError(f"{self.spec}: connection closed by the server")
        size = wire.message_length(self._buffer)
        if (
            size is not None
            and len(self._buffer) >= size
            and wire.is_notice_of_disconnection(wire.decode_message(bytes(self._buffer[:size])))
        ):
            raise LinkError(f"{self.spec}: the server ended the session (notice of disconnection)")
        if self._buffer:
            raise ProtocolViolation(f"{self.spec}: data received with no request outstanding")

    def idle_clean(self) -> bool:
        """Whether the link may go back to the pool (nothing arrived unasked)."""
        try:
            if not self.broken:
                self._check_idle()
        except (OSError, ValueError, LinkError):
            self.broken = True
        return not self.broken

    def exchange(
        self,
        build: Callable[[int], bytes],
        deadline: float,
        final: int = wire.OP_BIND_RESPONSE,
        partial: frozenset[int] = frozenset(),
    ) -> list[wire.Message]:
        """Send the request ``build(msgid)`` and read until its final response
        (op ``final``, after any number of ``partial`` ones).  Every message
        must carry ``msgid`` and one of these ops, and nothing may follow the
        final one; anything else is a :class:`ProtocolViolation`."""
        if self.broken:
            raise LinkError(f"{self.spec}: connection already failed")
        msgid = self._take_id()
        try:
            self._check_idle()
            self._sock.settimeout(_remaining(deadline))
            self._sock.sendall(build(msgid))
            out = []
            while True:
                message = self._read_message(deadline)
                if wire.is_notice_of_disconnection(message):
                    raise LinkError(f"{self.spec}: the server ended the session (notice of disconnection)")
                if message.msgid != msgid:
                    raise ProtocolViolation(f"{self.spec}: response to message {message.msgid}, expected {msgid}")
                out.append(message)
                if message.op == final:
                    if self._buffer:
                        raise ProtocolViolation(f"{self.spec}: data after the response to message {msgid}")
                    return out
                if message.op not in partial:
                    raise ProtocolViolation(f"{self.spec}: response of type 0x{message.op:02x} to message {msgid}")
        except (LdapTimeout, TimeoutError):
            self.broken = True
            raise LdapTimeout(f"{self.spec}: no answer within the deadline") from None
        except LinkError:
            self.broken = True
            raise
        except wire.WireError as exc:
            self.broken = True
            raise ProtocolViolation(f"{self.spec}: {exc}") from None
        except OSError as exc:
            self.broken = True
            raise LinkError(f"{self.spec}: {_describe(exc)}") from None

    def bind(
        self,
        name: str,
        password: bytes,
        deadline: float,
        controls: Sequence[tuple[str, bool, bytes | None]] = (),
    ) -> wire.Result:
        """A simple bind; the result as the server gave it (codes 51/52 raise)."""
        encoded = name.encode("utf-8")
        messages = self.exchange(lambda msgid: wire.bind_request(msgid, encoded, password, controls), deadline)
        result = _result(self, messages[-1])
        if result.code in UNAVAILABLE_CODES:
            raise LinkError(f"{self.spec}: bind refused with {result.describe()}")
        self.bound_in_checkout = result.ok
        return result

    def search(
        self,
        base: str,
        scope: int,
        filter_ber: bytes,
        attributes: Sequence[str],
        deadline: float,
        *,
        size_limit: int = 0,
    ) -> SearchResult:
        """Search; entries, references and the final result (codes 51/52 raise)."""
        if self.bind_first and not self.bound_in_checkout:
            raise RuntimeError("a user-bind connection must be bound in this checkout before a search")
        encoded = base.encode("utf-8")
        time_limit = max(1, int(deadline - time.monotonic() + 0.999))
        messages = self.exchange(
            lambda msgid: wire.search_request(
                msgid, encoded, scope, filter_ber, attributes, size_limit=size_limit, time_limit=time_limit
            ),
            deadline,
            wire.OP_SEARCH_DONE,
            frozenset({wire.OP_SEARCH_ENTRY, wire.OP_SEARCH_REFERENCE}),
        )
        entries = []
        references: list[str] = []
        try:
            for message in messages[:-1]:
                if message.op == wire.OP_SEARCH_ENTRY:
                    entries.append(wire.decode_entry(message))
                else:
                    references.extend(wire.decode_reference(message))
        except wire.WireError as exc:
            self.broken = True
            raise ProtocolViolation(f"{self.spec}: {exc}") from None
        result = _result(self, messages[-1])
        if result.code in UNAVAILABLE_CODES:
            raise LinkError(f"{self.spec}: search refused with {result.describe()}")
        return SearchResult(tuple(entries), tuple(references), result)

    def close(self) -> None:
        """Unbind (best effort, never blocking) and close the socket."""
        self.broken = True
        sock = self._sock
        try:
            sock.settimeout(0.0)
            sock.send(wire.unbind_request(self._take_id()))
        except (OSError, ValueError):
            pass
        with contextlib.suppress(Exception):  # closing must never raise
            self._connection.strategy.close()
        with contextlib.suppress(OSError):
            sock.close()


def _result(link: Link, message: wire.Message) -> wire.Result:
    try:
        return wire.decode_result(message)
    except wire.WireError as exc:
        link.broken = True
        raise ProtocolViolation(f"{link.spec}: {exc}") from None


def _is_timeout(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError | socket.timeout):
            return True
        if "timed out" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ")
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


# ------------------------------------------------------------ servers and pools


class ServerSet:
    """The configured servers, in the order to try them."""

    def __init__(
        self,
        specs: Sequence[ServerSpec],
        *,
        selection: str = "first",
        retry_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not specs:
            raise ValueError("no servers")
        self.specs = tuple(specs)
        self.selection = selection
        self.retry_after = retry_after
        self._clock = clock
        self._dead_until: dict[ServerSpec, float] = {}
        self._next = 0
        self._lock = threading.Lock()

    def order(self) -> list[ServerSpec]:
        """Servers to try: the live ones (rotated for round robin), then the
        ones marked dead, soonest to be retried first (a last resort)."""
        now = self._clock()
        with self._lock:
            specs = list(self.specs)
            if self.selection == "round_robin":
                start = self._next % len(specs)
                self._next += 1
                specs = specs[start:] + specs[:start]
            live = [s for s in specs if self._dead_until.get(s, 0.0) <= now]
            dead = sorted((s for s in specs if self._dead_until.get(s, 0.0) > now), key=self._dead_until.__getitem__)
        return live + dead

    def mark_dead(self, spec: ServerSpec, why: str) -> None:
        with self._lock:
            already = self._dead_until.get(spec, 0.0) > self._clock()
            self._dead_until[spec] = self._clock() + self.retry_after
        if not already:
            log.warning("ldap server %s marked down for %gs: %s", spec, self.retry_after, why)

    def mark_alive(self, spec: ServerSpec) -> None:
        if spec in self._dead_until:
            with self._lock:
                if self._dead_until.pop(spec, None) is not None:
                    log.info("ldap server %s is back", spec)

    def is_dead(self, spec: ServerSpec) -> bool:
        return self._dead_until.get(spec, 0.0) > self._clock()


class Pool:
    """Idle links to the servers, for one purpose (service searches, or user
    binds).  ``prepare(link, deadline)`` runs on every new link (the service
    bind).  With ``bind_first``, a link refuses to search until it was bound
    successfully in the current checkout.  At most ``size`` links are kept
    idle; none older than ``lifetime`` seconds is reused."""

    def __init__(
        self,
        name: str,
        servers: ServerSet,
        tls: VerifiedTls | None,
        *,
        connect_timeout: float,
        size: int,
        lifetime: float,
        prepare: Callable[[Link, float], None] | None = None,
        bind_first: bool = False,
    ) -> None:
        self.name = name
        self.servers = servers
        self._tls = tls
        self._connect_timeout = connect_timeout
        self._size = size
        self._lifetime = lifetime
        self._prepare = prepare
        self._bind_first = bind_first
        self._idle: collections.deque[Link] = collections.deque()
        self._lock = threading.Lock()
        self._closed = False
        self.opened = 0

    def __repr__(self) -> str:
        return f"Pool({self.name}, idle={len(self._idle)})"

    def _take_idle(self) -> Link | None:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    return None
                link = self._idle.pop()
            # a server marked down (by any pool sharing the ServerSet) is not
            # used through its old connections either
            if now - link.opened_at < self._lifetime and not link.broken and not self.servers.is_dead(link.spec):
                return link
            link.close()

    def _give_back(self, link: Link) -> None:
        link.bound_in_checkout = False
        if link.idle_clean() and not self._closed and time.monotonic() - link.opened_at < self._lifetime:
            with self._lock:
                if len(self._idle) < self._size:
                    self._idle.append(link)
                    return
        link.close()

    def _flush(self, spec: ServerSpec) -> None:
        with self._lock:
            doomed = [link for link in self._idle if link.spec == spec]
            for link in doomed:
                self._idle.remove(link)
        for link in doomed:
            link.close()

    def _open(self, deadline: float, exclude: set[ServerSpec]) -> Link:
        errors = []
        for spec in self.servers.order():
            if spec in exclude:
                continue
            exclude.add(spec)
            try:
                link = Link.open(spec, self._tls, connect_timeout=self._connect_timeout, deadline=deadline)
            except LinkError as exc:
                self.servers.mark_dead(spec, str(exc))
                errors.append(str(exc))
                continue
            try:
                if self._prepare is not None:
                    self._prepare(link, deadline)
            except (LinkError, LdapTimeout) as exc:
                link.close()
                self.servers.mark_dead(spec, str(exc))
                if isinstance(exc, LdapTimeout | ProtocolViolation):  # deadline spent / answers untrusted
                    raise
                errors.append(str(exc))
                continue
            except BaseException:
                link.close()
                raise
            self.servers.mark_alive(spec)
            self.opened += 1
            link.bind_first = self._bind_first
            return link
        raise LinkError("no ldap server available: " + ("; ".join(errors) if errors else "all tried"))

    def run(self, work: Callable[[Link], T], deadline: float) -> T:
        """Run ``work(link)`` on a pooled or new link (see the module docstring)."""
        exclude: set[ServerSpec] = set()
        attempts = len(self.servers.specs) + 2
        while True:
            attempts -= 1
            link = self._take_idle()
            fresh = link is None
            if link is None:
                link = self._open(deadline, exclude)
            try:
                result = work(link)
            except (LdapTimeout, ProtocolViolation) as exc:  # not retried (a violation: answers untrusted)
                link.close()
                self.servers.mark_dead(link.spec, str(exc))
                self._flush(link.spec)
                raise
            except LinkError as exc:
                link.close()
                self._flush(link.spec)
                if fresh:
                    self.servers.mark_dead(link.spec, str(exc))
                    exclude.add(link.spec)
                if attempts <= 0:
                    raise
                log.info("ldap %s: retrying after %s", self.name, exc)
                continue
            except BackendError:  # a decision about the data: the connection is fine
                self._give_back(link)
                raise
            except BaseException:
                link.close()
                raise
            self._give_back(link)
            return result

    def close(self) -> None:
        self._closed = True
        with self._lock:
            idle = list(self._idle)
            self._idle.clear()
        for link in idle:
            link.close()
