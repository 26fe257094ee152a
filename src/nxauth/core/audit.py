"""Built-in audit sinks: a logger with sshd-style lines, syslog, JSON Lines,
and the store's audit table (shared by a cluster on PostgreSQL).

Each sink is a plugin implementing ``nxauth_auth_event`` and
``nxauth_admin_event``.  Lines are stable
enough to grep: user input is cut to 100 characters and escaped, and no line
ever holds a password (an :class:`nxauth.AuthEvent` has none to give).
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, final

from nxauth.codes import Outcome
from nxauth.files import PRIVATE_MODE, open_append
from nxauth.model import AdminEvent, AuthEvent
from nxauth.plugins.hookspecs import hookimpl
from nxauth.usernames import escape_for_log

if TYPE_CHECKING:
    from collections.abc import Callable

    from nxauth.config import AuditConfig
    from nxauth.store.protocol import Store

__all__ = ["JsonLinesSink", "LoggingSink", "StoreSink", "SyslogSink", "admin_record", "format_admin", "format_event"]

AUDIT_LOGGER = "nxauth.audit"
#: After a syslog send timed out, how long sends do not wait (seconds).
STUCK_SECONDS = 1.0


def format_event(event: AuthEvent) -> str:
    """One sshd-style line::

    Accepted password for alice from 198.51.100.7 port 52100 via passwords [session=3f2a]
    Failed password for invalid user bob from 198.51.100.7 port 52100 [reason=unknown-user session=3f2a]
    """
    verb = {Outcome.ACCEPTED: "Accepted", Outcome.FAILED: "Failed"}.get(event.outcome, "Refused")
    who = escape_for_log(event.username) if event.username else '""'
    invalid = "invalid user " if event.invalid_user else ""
    line = f"{verb} {event.method} for {invalid}{who} from {event.peer.host} port {event.peer.port}"
    if event.fingerprint:
        line += f": {event.fingerprint}"
    if event.backend and event.accepted:
        line += f" via {event.backend}"
    tags = [] if event.accepted else [f"reason={event.reason.value}"]
    if event.backend and not event.accepted:
        tags.append(f"backend={event.backend}")
    tags.append(f"session={event.session_id}")
    if event.detail:
        tags.append(f'detail="{escape_for_log(event.detail, 300, quoted=True)}"')
    return f"{line} [{' '.join(tags)}]"


def event_record(event: AuthEvent) -> dict[str, Any]:
    """The event as a JSON-ready mapping (user input truncated to 100 characters)."""
    return {
        "time": datetime.datetime.fromtimestamp(event.time, datetime.UTC).isoformat(timespec="milliseconds"),
        "stage": event.stage,
        "outcome": event.outcome,
        "reason": event.reason.value,
        "method": event.method,
        "user": event.username[:100],
        "invalid_user": event.invalid_user,
        "host": event.peer.host,
        "port": event.peer.port,
        "session": event.session_id,
        "backend": event.backend,
        "fingerprint": event.fingerprint,
        "detail": event.detail[:300],
    }


def format_admin(event: AdminEvent) -> str:
    """One line: ``Admin grant by root: user=alice node=node1``."""
    tags = [
        f"{name}={escape_for_log(value)}" for name, value in (("user", event.username), ("node", event.node)) if value
    ]
    return f"Admin {event.action} by {escape_for_log(event.actor)}" + (f": {' '.join(tags)}" if tags else "")


def admin_record(event: AdminEvent) -> dict[str, Any]:
    """The admin event as a JSON-ready mapping (``"kind": "admin"`` tells it from a login's)."""
    return {
        "time": datetime.datetime.fromtimestamp(event.time, datetime.UTC).isoformat(timespec="milliseconds"),
        "kind": "admin",
        "action": event.action.value,
        "actor": event.actor[:100],
        "user": event.username[:100],
        "node": event.node,
        "target": event.target[:200],
    }


@final
class LoggingSink:
    """Writes each event to the ``nxauth.audit`` logger: accepted at INFO,
    failed and refused at WARNING."""

    __nxauth_inline_sink__ = True

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(AUDIT_LOGGER)

    @hookimpl
    def nxauth_auth_event(self, event: AuthEvent) -> None:
        level = logging.INFO if event.accepted else logging.WARNING
        logger = self.logger
        if logger.isEnabledFor(level):
            # makeRecord + handle: the same record logger.log would make, without
            # walking the stack for the caller (a cost on every login)
            record = logger.makeRecord(logger.name, level, __file__, 0, "%s", (format_event(event),), None)
            logger.handle(record)

    @hookimpl
    def nxauth_admin_event(self, event: AdminEvent) -> None:
        self.logger.info("%s", format_admin(event))


def _strict_syslog_handler(address: str, sink: SyslogSink) -> logging.Handler:
    """A SysLogHandler (authpriv) that raises instead of printing a traceback
    to stderr, so a failing syslog is seen (and, with ``audit.required``,
    denies), and whose socket sends with the sink's current timeout (see
    :class:`SyslogSink`).  ``logging.handlers`` is imported here: it is not cheap."""
    import logging.handlers

    class StrictSysLogHandler(logging.handlers.SysLogHandler):
        def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
            raise  # noqa: PLE0704 - called from inside emit's except block

        def _connect_unixsocket(self, address: Any) -> None:
            # as the standard library's, but the sink's timeout applies to the
            # connect too: a stream socket whose listener accepts nothing
            # (its backlog full) would otherwise block the login for good
            import socket

            kinds = [self.socktype] if self.socktype is not None else [socket.SOCK_DGRAM, socket.SOCK_STREAM]
            for index, kind in enumerate(kinds):
                sock = self.socket = socket.socket(socket.AF_UNIX, kind)  # kept even when closed, as there
                sock.settimeout(sink.send_timeout())
                try:
                    sock.connect(address)
                except OSError:
                    sock.close()
                    if index == len(kinds) - 1:
                        raise
                    continue
                self.socktype = kind
                return

        def emit(self, record: logging.LogRecord) -> None:
            sock = getattr(self, "socket", None)
            if sock is not None and self.unixsocket:
                sock.settimeout(sink.send_timeout())
            super().emit(record)

    handler = StrictSysLogHandler(address=address, facility=logging.handlers.SysLogHandler.LOG_AUTHPRIV)
    handler.ident = f"nxauth[{os.getpid()}]: "
    return handler


@final
class SyslogSink:
    """Sends each event to syslog with the authpriv facility, like sshd.

    A send waits at most ``timeout`` seconds for room in the socket (a
    syslog that reads nothing fills it), then fails: the sink reports the
    event as failing instead of blocking the login.  After a send that
    timed out the socket is *stuck*: for :data:`STUCK_SECONDS` sends do not
    wait at all (they succeed if there is room, fail at once if not), so a
    dead syslog costs each login nothing but the failed send.  Python's
    ``SysLogHandler`` retries a failed send once on a new socket."""

    __nxauth_inline_sink__ = True

    def __init__(self, address: str = "/dev/log", *, timeout: float = 0.005) -> None:
        self.address = address
        self.timeout = timeout
        self._stuck_until = 0.0
        self._handler: logging.Handler | None = None
        self._lock = threading.Lock()

    def send_timeout(self) -> float:
        """The timeout of the next send: 0 while the socket is stuck."""
        return 0.0 if time.monotonic() < self._stuck_until else self.timeout

    def _get(self) -> logging.Handler:
        with self._lock:
            if self._handler is None:
                self._handler = _strict_syslog_handler(self.address, self)
            return self._handler

    @hookimpl
    def nxauth_auth_event(self, event: AuthEvent) -> None:
        self._send(logging.INFO if event.accepted else logging.WARNING, format_event(event))

    @hookimpl
    def nxauth_admin_event(self, event: AdminEvent) -> None:
        self._send(logging.INFO, format_admin(event))

    def _send(self, level: int, line: str) -> None:
        handler = self._get()
        record = logging.LogRecord(AUDIT_LOGGER, level, __file__, 0, "%s", (line,), None)
        try:
            handler.emit(record)
        except (TimeoutError, BlockingIOError):
            self._stuck_until = time.monotonic() + STUCK_SECONDS
            raise
        self._stuck_until = 0.0

    def close(self) -> None:
        with self._lock:
            if self._handler is not None:
                self._handler.close()
                self._handler = None


@final
class JsonLinesSink:
    """Appends each event as one JSON line to a file created with mode 0600."""

    __nxauth_inline_sink__ = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _open(self) -> int:
        if self._fd is None:
            self._fd = open_append(self.path, PRIVATE_MODE)  # 0600, parents 0700, whatever the umask
        return self._fd

    @hookimpl
    def nxauth_auth_event(self, event: AuthEvent) -> None:
        import json  # here: the commands sshd runs load it only when this sink is configured

        self._write(json.dumps(event_record(event), ensure_ascii=True, separators=(",", ":")))

    @hookimpl
    def nxauth_admin_event(self, event: AdminEvent) -> None:
        import json

        self._write(json.dumps(admin_record(event), ensure_ascii=True, separators=(",", ":")))

    def _write(self, text: str) -> None:
        line = (text + "\n").encode("ascii")
        with self._lock:
            fd = self._open()
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write to {self.path}")

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


@final
class StoreSink:
    """Adds each event, as its JSON record, to the store's ``audit_events``
    table with the host's name: on PostgreSQL, one audit trail for the whole
    cluster.  The hook only queues the row (bounded, in the caller's thread);
    a writer thread inserts what is queued, many rows per transaction, so
    the database costs a login no round trip.  A full queue (the database
    is down or slower than the logins) fails the event for this sink: it is
    logged, and with ``audit.required`` the login is denied."""

    __nxauth_inline_sink__ = True

    #: Rows waiting at most; beyond, events fail for this sink.
    QUEUE_ROWS = 10_000
    #: Rows per insert transaction at most.
    BATCH_ROWS = 500

    def __init__(self, store: Callable[[], Store], host: str | None = None) -> None:
        import queue
        import socket

        self._store = store
        self.host = host or socket.gethostname()
        self._queue: queue.Queue[tuple[float, str] | None] = queue.Queue(maxsize=self.QUEUE_ROWS)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: events the writer could not insert (each also logged)
        self.failed = 0

    def _put(self, when: float, record: dict[str, Any]) -> None:
        import json

        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._write, name="nxauth-audit-table", daemon=True)
                self._thread.start()
        self._queue.put_nowait((when, json.dumps(record, ensure_ascii=True, separators=(",", ":"))))  # Full: fails

    def _write(self) -> None:
        import queue

        while True:
            item = self._queue.get()
            rows: list[tuple[float, str]] = []
            stop = item is None
            if item is not None:
                rows.append(item)
            while not stop and len(rows) < self.BATCH_ROWS:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                else:
                    rows.append(item)
            if rows:
                self._insert(rows)
            for _ in range(len(rows) + (1 if stop else 0)):
                self._queue.task_done()
            if stop:
                return

    def _insert(self, rows: list[tuple[float, str]]) -> None:
        from nxauth.errors import StoreError

        values = ",".join(["(?, ?, ?)"] * len(rows))
        flat = [value for when, text in rows for value in (when, self.host, text)]
        try:
            with self._store().transaction(keys=("audit",)) as tx:
                tx.execute(f"INSERT INTO audit_events (at, host, event) VALUES {values}", flat)  # noqa: S608
        except StoreError as exc:
            self.failed += len(rows)
            logging.getLogger("nxauth").error("audit table: %d events not written: %s", len(rows), exc)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (waiting at most ``timeout`` seconds), then stop the writer."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
                break
            except Exception:  # noqa: BLE001 - queue.Full: the writer is stuck; it is a daemon
                return
        thread.join(max(0.0, deadline - time.monotonic()))

    @hookimpl
    def nxauth_auth_event(self, event: AuthEvent) -> None:
        self._put(event.time, event_record(event))

    @hookimpl
    def nxauth_admin_event(self, event: AdminEvent) -> None:
        self._put(event.time, admin_record(event))


def sinks_from_config(audit: AuditConfig) -> list[tuple[object, str]]:
    """The built-in sinks ``[audit]`` asks for, with their plugin names."""
    sinks: list[tuple[object, str]] = []
    if audit.log:
        sinks.append((LoggingSink(), "nxauth.audit.log"))
    if audit.syslog:
        # a few ms at most: SysLogHandler tries a failed send twice, then the socket is stuck
        sinks.append((SyslogSink(audit.syslog_address, timeout=min(audit.sink_timeout, 0.005)), "nxauth.audit.syslog"))
    if audit.jsonl is not None:
        sinks.append((JsonLinesSink(audit.jsonl), "nxauth.audit.jsonl"))
    return sinks
