"""Looking for a secret in every place nxauth writes to: the forms a secret
takes when it leaks (raw, repr, JSON, escaped for a log line, truncated) and
a capture of every sink (logger records, syslog datagrams, JSON lines, pluggy
tracing, exception text)."""

from __future__ import annotations

import json
import logging
import os
import socket
import traceback
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

from nxauth.usernames import escape_for_log

if TYPE_CHECKING:
    import nxauth

#: Printable and not: quotes, backslashes, Unicode, control characters; up to
#: 300 characters (longer than every cut nxauth makes).
SECRET_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from("\"'\\%{}$`;,= \t\n\r"),
        st.characters(codec="utf-8", exclude_characters="\x00"),
    ),
    min_size=0,
    max_size=300,
)


@dataclass(frozen=True)
class Planted:
    """A secret and the random markers planted in it (one at each end, one
    in the middle): a truncated, escaped or echoed copy still holds one."""

    value: str
    marks: tuple[str, ...]


@st.composite
def secrets(draw: st.DrawFn) -> Planted:
    marks = tuple(draw(st.binary(min_size=8, max_size=8)).hex() for _ in range(3))
    text = draw(SECRET_TEXT)
    middle = len(text) // 2
    return Planted(f"{marks[0]}{text[:middle]}{marks[1]}{text[middle:]}{marks[2]}", marks)


def leaked_forms(secret: str) -> list[str]:
    """How a secret looks once leaked: raw, repr, JSON, log-escaped."""
    forms = [secret, repr(secret), json.dumps(secret), json.dumps(secret, ensure_ascii=False)]
    forms.append(escape_for_log(secret, 10_000))
    forms.append(escape_for_log(secret, 10_000, quoted=True))
    return [form for form in forms if len(form) >= 16]


def assert_no_secret(secret: Planted, texts: Iterable[str]) -> None:
    """No marker and no leaked form of ``secret`` in any of ``texts``."""
    needles = [*secret.marks, *leaked_forms(secret.value)]
    for text in texts:
        for needle in needles:
            assert needle not in text, f"a secret reached a sink: {text[:300]!r}"


class Capture(logging.Handler):
    """Every record of every logger, formatted as a handler would, with its
    traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))
        self.texts.append(repr(record.args))


@contextmanager
def captured_logs() -> Iterator[Capture]:
    root = logging.getLogger()
    handler = Capture()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@contextmanager
def syslog_socket(path: Path) -> Iterator[socket.socket]:
    """A unix datagram socket at ``path`` that a test reads the syslog sink from."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()
        os.unlink(path)


def drain(sock: socket.socket) -> list[str]:
    out: list[str] = []
    while True:
        try:
            out.append(sock.recv(65536).decode("utf-8", "replace"))
        except BlockingIOError:
            return out


def exception_texts(exc: BaseException) -> list[str]:
    """str, repr and the whole formatted traceback (with chained causes)."""
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    for linked in (exc.__cause__, exc.__context__):
        if linked is not None:
            texts.extend([str(linked), repr(linked)])
    return texts


def login_in_every_sink(
    tmp_path: Path,
    config: Mapping[str, Any],
    user: str,
    password: str,
    *,
    conversation: Any = None,
) -> tuple[list[str], list[nxauth.AuthEvent]]:
    """One login (stage 1 with a fresh transport key, then ``user`` and
    ``password``) on an authenticator built from ``config`` (its backends and
    stacks) with every sink on: the log, a syslog socket, JSON Lines, a
    recording plugin.  Returns every text those sinks and the login's
    outcome (the identity's name, or the exception's text) produced, and the
    events."""
    import nxauth
    from nxauth.testing import RecordingSink
    from tests.support.keys import PEER, ListKeySource, TransportKey

    key = TransportKey()
    sink = RecordingSink()
    texts: list[str] = []
    jsonl = tmp_path / "audit.jsonl"
    socket_path = tmp_path / "log.sock"
    with syslog_socket(socket_path) as sock, captured_logs() as logs:
        with nxauth.Authenticator(
            {
                "state_dir": str(tmp_path / "state"),
                "transport": {"key_sources": ["keys"]},
                "throttle": {"enabled": False},
                "audit": {"syslog": True, "syslog_address": str(socket_path), "jsonl": str(jsonl)},
                **config,
            },
            backends={"keys": ListKeySource(key.line)},
            plugins=[sink],
            entry_points=False,
        ) as auth:
            session = auth.open_session(peer=PEER)
            session.check_transport_key("nx", key.line)
            try:
                identity = session.login(user, password, conversation=conversation)
                texts.append(f"{identity.username} {identity.backend}")
            except nxauth.AuthenticationFailed as exc:
                texts.extend(exception_texts(exc))
            texts.append(repr(session))
        texts.extend(logs.texts)
        texts.extend(drain(sock))
    texts.append(jsonl.read_text(encoding="utf-8") if jsonl.exists() else "")
    texts.extend(repr(event) for event in sink.events)
    return texts, sink.events
