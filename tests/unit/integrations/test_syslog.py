"""``SyslogHandler``, the syslog of the commands sshd runs: byte for byte what
``logging.handlers.SysLogHandler`` sends to a UNIX socket, over datagram and
stream sockets, across a daemon's restart and a daemon that starts late; and
``configure_service_logging`` with it imports neither ``socket`` nor
``logging.handlers``.

Real sockets in a private directory play the syslog daemon."""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nxauth.integrations.syslog import LOG_AUTHPRIV, SyslogHandler

IDENT = "nxauth[4242]: "
LEVELS = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL, 25, 5]


@pytest.fixture
def directory() -> Iterator[Path]:
    """A short path: a UNIX socket's name is at most 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="nxsl-", dir="/tmp") as name:
        yield Path(name)


def daemon(path: Path, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, kind)
    server.bind(str(path))
    if kind == socket.SOCK_STREAM:
        server.listen()
    server.settimeout(5)
    return server


def standard(path: Path) -> logging.Handler:
    handler = logging.handlers.SysLogHandler(address=str(path), facility=logging.handlers.SysLogHandler.LOG_AUTHPRIV)
    handler.ident = IDENT
    return handler


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("nxauth.audit", level, __file__, 1, "%s", (message,), None)


def send(handler: logging.Handler, item: logging.LogRecord) -> None:
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.handle(item)


@settings(max_examples=60, deadline=None)
@given(level=st.sampled_from(LEVELS), message=st.text(max_size=300))
def test_datagrams_are_the_standard_handlers(level: int, message: str) -> None:
    with tempfile.TemporaryDirectory(prefix="nxsl-", dir="/tmp") as name:
        path = Path(name) / "log"
        server = daemon(path)
        ours, theirs = SyslogHandler(str(path), LOG_AUTHPRIV, ident=IDENT), standard(path)
        try:
            send(theirs, record(level, message))
            expected = server.recv(65536)
            send(ours, record(level, message))
            assert server.recv(65536) == expected
        finally:
            ours.close()
            theirs.close()
            server.close()


def test_a_stream_socket_is_used_when_datagrams_are_refused(directory: Path) -> None:
    path = directory / "log"
    server = daemon(path, socket.SOCK_STREAM)
    received = []
    for handler in (standard(path), SyslogHandler(str(path), LOG_AUTHPRIV, ident=IDENT)):
        connection, _ = server.accept()
        with connection:
            send(handler, record(logging.INFO, "accepted ü %s"))
            handler.close()
            received.append(connection.recv(65536))
    server.close()
    assert received[0] == received[1] == "<86>nxauth[4242]: accepted ü %s\0".encode()


def test_a_restarted_daemon_gets_the_next_record(directory: Path) -> None:
    path = directory / "log"
    server = daemon(path)
    handler = SyslogHandler(str(path), LOG_AUTHPRIV, ident=IDENT)
    send(handler, record(logging.INFO, "one"))
    assert server.recv(100) == b"<86>nxauth[4242]: one\0"
    assert handler.socket is not None
    assert not os.get_inheritable(handler.socket.fileno())  # nxauth login execs the session command
    server.close()
    path.unlink()
    server = daemon(path)  # a new socket at the same name: the old connection is dead
    send(handler, record(logging.WARNING, "two"))
    assert server.recv(100) == b"<84>nxauth[4242]: two\0"
    handler.close()
    server.close()


def test_a_daemon_that_starts_late_gets_the_first_record(directory: Path) -> None:
    path = directory / "log"
    handler = SyslogHandler(str(path), LOG_AUTHPRIV, ident=IDENT)  # nobody listens: not an error
    server = daemon(path)
    send(handler, record(logging.ERROR, "late"))
    assert server.recv(100) == b"<83>nxauth[4242]: late\0"
    handler.close()
    server.close()


def test_no_daemon_is_reported_never_raised(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    errors: list[logging.LogRecord] = []
    handler = SyslogHandler(str(directory / "absent"), LOG_AUTHPRIV)
    monkeypatch.setattr(handler, "handleError", errors.append)
    send(handler, record(logging.INFO, "lost"))  # returns: a log record never stops the command
    assert [item.getMessage() for item in errors] == ["lost"]
    handler.close()


def test_service_logging_reaches_syslog_without_the_standard_handlers_imports(directory: Path) -> None:
    """What ``nxauth authorized-keys`` and ``nxauth login`` set up when
    ``/dev/log`` exists, run in a fresh interpreter."""
    path = directory / "log"
    server = daemon(path)
    probe = (
        "import logging, sys\n"
        "from nxauth.config import Config\n"
        "from nxauth.integrations.openssh import configure_service_logging\n"
        f"configure_service_logging(Config(), syslog_address={str(path)!r})\n"
        "logging.getLogger('nxauth.audit').info('stage 1 %s', 'accepted')\n"
        "logging.getLogger('nxauth').debug('not at INFO')\n"
        "print(sorted({'socket', 'logging.handlers', 'pickle', 'queue'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    assert result.stderr == ""
    pid = server.recv(200)
    assert pid.startswith(b"<86>nxauth[") and pid.endswith(b"]: stage 1 accepted\0")
    server.setblocking(False)
    with pytest.raises(BlockingIOError):
        server.recv(200)  # the DEBUG record was not sent
    server.close()
    assert os.path.exists(path)
