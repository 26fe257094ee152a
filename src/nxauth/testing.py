"""Testing kit for nxauth, its built-in backends and third-party plugins.

Loaded by pytest automatically (entry point ``pytest11``), it provides the
fixture ``nxauth_plugin_manager`` (a fresh plugin manager per test), helpers to
build attempts and identities, a recording audit sink, an in-memory backend,
and the backend contract suites :class:`AuthBackendContract` and
:class:`AccountBackendContract` that every backend should pass::

    from nxauth.testing import AuthBackendContract

    class TestMyBackend(AuthBackendContract):
        @pytest.fixture
        def backend(self): return MyBackend(...)
        @pytest.fixture
        def credentials(self): return ("alice", "correct horse")
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import pluggy
import pytest

from nxauth.model import Attempt, AuthEvent, Decision, Identity, Peer, Reason, Secret, Verdict
from nxauth.plugins.hookspecs import hookimpl
from nxauth.plugins.manager import make_plugin_manager as _make_plugin_manager

__all__ = [
    "AccountBackendContract",
    "AuthBackendContract",
    "MemoryBackend",
    "RecordingSink",
    "make_attempt",
    "make_identity",
    "make_plugin_manager",
    "nxauth_plugin_manager",
]

TEST_PEER = Peer("192.0.2.10", 50022)


def make_plugin_manager(*plugins: object, builtins: bool = False, entry_points: bool = False) -> pluggy.PluginManager:
    """A fresh plugin manager holding ``plugins`` (built-ins and entry points
    off by default, so a test sees only what it registers).  Raises the first
    plugin error, if any."""
    pm, errors = _make_plugin_manager(plugins, builtins=builtins, entry_points=entry_points)
    if errors:
        raise errors[0]
    return pm


@pytest.fixture
def nxauth_plugin_manager() -> pluggy.PluginManager:
    """A fresh nxauth plugin manager with no plugins registered."""
    return make_plugin_manager()


def make_attempt(
    username: str,
    password: str | Secret,
    *,
    peer: Peer = TEST_PEER,
    answers: Sequence[str] | None = None,
) -> Attempt:
    """An :class:`Attempt` as the core would build it.  ``answers`` are
    returned, in order, to the backend's ``attempt.ask`` questions; without
    them there is no conversation."""
    conversation = None
    if answers is not None:
        pending = list(answers)

        def conversation(prompt: str, echo: bool) -> str:
            if not pending:
                raise RuntimeError(f"test conversation has no answer left for {prompt!r}")
            return pending.pop(0)

    return Attempt(username, Secret(password), peer=peer, session_id="test", conversation=conversation)


def make_identity(username: str, backend: str = "test", *, groups: Iterable[str] = ()) -> Identity:
    """An :class:`Identity` as the account stack sees it."""
    return Identity(username, backend, TEST_PEER, "test", None, frozenset(groups))


class RecordingSink:
    """An audit sink that keeps every event (register it as a plugin).

    Like nxauth's own sinks it runs in the caller's thread, so the events
    are there when the login returns."""

    __nxauth_inline_sink__ = True

    def __init__(self) -> None:
        self.events: list[AuthEvent] = []
        self._lock = threading.Lock()

    @hookimpl
    def nxauth_auth_event(self, event: AuthEvent) -> None:
        with self._lock:
            self.events.append(event)

    def outcomes(self) -> list[tuple[int, str, str]]:
        return [(e.stage, e.outcome, e.reason.value) for e in self.events]


class MemoryBackend:
    """A trivial in-memory backend (auth and account roles) for tests and
    benchmarks.  Never use it in production: passwords are kept in memory."""

    def __init__(self, users: Mapping[str, str], *, groups: Mapping[str, Iterable[str]] | None = None) -> None:
        self._users = {name: Secret(password) for name, password in users.items()}
        self._groups = {name: frozenset(g) for name, g in (groups or {}).items()}

    audit_details = frozenset({"unknown-user"})

    def authenticate(self, attempt: Attempt) -> Verdict:
        expected = self._users.get(attempt.username)
        if expected is None:
            return Verdict.abstain("unknown-user")
        if not hmac.compare_digest(expected.reveal_bytes(), attempt.password.reveal_bytes()):
            return Verdict.deny(Reason.BAD_PASSWORD)
        return Verdict.allow(groups=self._groups.get(attempt.username, frozenset()))

    def check_account(self, identity: Identity) -> Verdict:
        if identity.username in self._users:
            return Verdict.allow()
        return Verdict.deny(Reason.NOT_LISTED)

    def __repr__(self) -> str:
        return f"MemoryBackend(users={len(self._users)})"


# ------------------------------------------------------------ contract suites

SENTINEL_PASSWORD = "nxauth-Contract-Sentinel-7f3a9c"


@pytest.fixture
def _capture_all_logs() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _assert_no_secret(secret: str, *texts: object) -> None:
    for text in texts:
        assert secret not in str(text), "the secret leaked"
        assert secret not in repr(text), "the secret leaked"


class AuthBackendContract:
    """What every auth backend (``authenticate(attempt) -> Verdict``) must do.

    Provide fixtures ``backend`` (the object) and ``credentials`` (a
    ``(username, password)`` pair it accepts).  Override ``unknown_username``
    if ``"nxauth-no-such-user"`` could exist.
    """

    @pytest.fixture
    def unknown_username(self) -> str:
        return "nxauth-no-such-user"

    def test_contract_accepts_right_password(self, backend: Any, credentials: tuple[str, str]) -> None:
        verdict = backend.authenticate(make_attempt(*credentials))
        assert isinstance(verdict, Verdict)
        assert verdict.decision is Decision.ALLOW

    def test_contract_wrong_password_denies(self, backend: Any, credentials: tuple[str, str]) -> None:
        verdict = backend.authenticate(make_attempt(credentials[0], credentials[1] + "-wrong"))
        assert isinstance(verdict, Verdict)
        assert verdict.decision is Decision.DENY

    def test_contract_unknown_user_abstains_or_denies(self, backend: Any, unknown_username: str) -> None:
        verdict = backend.authenticate(make_attempt(unknown_username, SENTINEL_PASSWORD))
        assert isinstance(verdict, Verdict)
        assert verdict.decision in (Decision.ABSTAIN, Decision.DENY)

    def test_contract_secret_never_leaks(
        self,
        backend: Any,
        credentials: tuple[str, str],
        unknown_username: str,
        _capture_all_logs: list[logging.LogRecord],
    ) -> None:
        seen: list[object] = [backend]
        for username in (credentials[0], unknown_username):
            attempt = make_attempt(username, SENTINEL_PASSWORD)
            try:
                verdict = backend.authenticate(attempt)
            except Exception as exc:  # noqa: BLE001 - an exception must not carry the secret either
                seen.extend([exc, exc.args])
            else:
                seen.extend([verdict, verdict.detail, verdict.attributes])
            seen.append(attempt)
        for record in _capture_all_logs:
            seen.extend([record.getMessage(), record.args, record.exc_text])
        _assert_no_secret(SENTINEL_PASSWORD, *seen)


class AccountBackendContract:
    """What every account backend (``check_account(identity) -> Verdict``) must do.

    Provide fixtures ``backend`` and ``listed_username`` (a user it lets in).
    """

    @pytest.fixture
    def unknown_username(self) -> str:
        return "nxauth-no-such-user"

    def test_contract_listed_user_allowed(self, backend: Any, listed_username: str) -> None:
        verdict = backend.check_account(make_identity(listed_username))
        assert isinstance(verdict, Verdict)
        assert verdict.decision is Decision.ALLOW

    def test_contract_unknown_user_not_allowed(self, backend: Any, unknown_username: str) -> None:
        verdict = backend.check_account(make_identity(unknown_username))
        assert isinstance(verdict, Verdict)
        assert verdict.decision in (Decision.ABSTAIN, Decision.DENY)
