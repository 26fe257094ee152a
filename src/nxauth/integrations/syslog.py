"""Syslog over a local UNIX socket for the commands sshd runs
(``nxauth authorized-keys`` for every key offered, ``nxauth login``).

:class:`SyslogHandler` sends what :class:`logging.handlers.SysLogHandler`
sends to a UNIX socket (the same bytes: ``<PRI>``, the ident, the message,
a NUL), connects the same way (a datagram socket, else a stream one; a
daemon not listening yet is not an error) and reconnects once when a send
fails (the daemon restarted).  It is written on the built-in ``_socket``
module: ``logging.handlers`` imports ``socket``, ``pickle`` and ``queue``,
about 20 million instructions, 7% of a run of ``nxauth authorized-keys``.
Only the UNIX-socket case is here; the audit trail's own syslog sink
(``[audit] syslog``, any address) keeps the standard handler.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Final, final

try:
    import _socket as _sock  # built in: socket's enums cost more than the whole send
except ImportError:  # pragma: no cover - an interpreter without it
    import socket as _sock  # type: ignore[no-redef]

__all__ = ["LOG_AUTHPRIV", "SyslogHandler"]

#: ``LOG_AUTHPRIV``, the facility of sshd's own messages.
LOG_AUTHPRIV: Final = 10

#: A record's level name -> syslog priority, as ``SysLogHandler.priority_map``
#: maps them (any other level: ``warning``).
_PRIORITIES: Final = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}
_WARNING: Final = 4


@final
class SyslogHandler(logging.Handler):
    """A :class:`logging.Handler` that writes to the syslog socket at
    ``address`` (``/dev/log``); ``ident`` is prepended to every message.
    Errors go to :meth:`logging.Handler.handleError`, as the standard
    handler's do: a log record never stops the command."""

    def __init__(self, address: str, facility: int = LOG_AUTHPRIV, ident: str = "") -> None:
        super().__init__()
        self.address = address
        self.facility = facility
        self.ident = ident
        self.socktype: int | None = None  # fixed by the first connection that works
        self.socket: _sock.socket | None = None
        with contextlib.suppress(OSError):  # as openlog(3): the daemon may listen by the first record
            self._connect()

    def _connect(self) -> _sock.socket:
        """A connected socket (datagram, else stream, unless one already
        worked), kept as :attr:`socket`; the last failure raises."""
        kinds = (self.socktype,) if self.socktype is not None else (_sock.SOCK_DGRAM, _sock.SOCK_STREAM)
        for index, kind in enumerate(kinds, 1):
            sock = _sock.socket(_sock.AF_UNIX, kind)
            try:
                sock.connect(self.address)
            except OSError:
                sock.close()
                if index == len(kinds):
                    raise
                continue
            self.socket, self.socktype = sock, kind
            return sock
        raise OSError(f"no socket type for {self.address}")  # not reached: the last failure raised

    def emit(self, record: logging.LogRecord) -> None:
        try:
            priority = (self.facility << 3) | _PRIORITIES.get(record.levelname, _WARNING)
            data = b"<%d>" % priority + (self.ident + self.format(record) + "\000").encode("utf-8")
            sock = self.socket or self._connect()
            try:
                sock.send(data)
            except OSError:  # the daemon restarted: once more on a new connection
                sock.close()
                self.socket = None
                self._connect().send(data)
        except Exception:  # noqa: BLE001 - logging's contract: report, never raise
            self.handleError(record)

    def close(self) -> None:
        self.acquire()
        try:
            sock, self.socket = self.socket, None
            if sock is not None:
                sock.close()
            super().close()
        finally:
            self.release()
