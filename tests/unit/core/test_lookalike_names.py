"""One account, one name (issue 17, class 3), through the whole pipeline.

A third-party backend that matches names as loosely as a directory does
(NFKC, case folding, spaces collapsed and trimmed, format characters
ignored), nxauth's own password database and the users allowlist: whatever
look-alike is typed, the identity is the stored name or nothing, a name a
backend reports is checked in both stacks, and a lockout of the user holds
against every look-alike, which never reaches the backend while the user is
locked out.
"""

from __future__ import annotations

import hmac
import itertools
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nxauth
from nxauth import AuthenticationFailed, Reason, Secret, Verdict
from nxauth.backends.passwords import PasswordsBackend
from tests.support.lookalikes import FIXED, lookalikes

PASSWORD = "wonderland-Rabbit-7"
STORED = ("alice", "kirk", "strasse", "ingrid", "åsa", "zoë", "smith j")
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
LOCKING = {"max_user_failures": 3, "max_source_failures": 10**6, "window": 86400, "lockout": 3600, "max_lockout": 3600}


def directory_fold(name: str) -> str:
    """How a directory compares names: roughly slapd's caseIgnoreMatch."""
    folded = unicodedata.normalize("NFKC", name.replace("\u0130", "i")).casefold()
    folded = "".join(c for c in folded if unicodedata.category(c) != "Cf")
    return " ".join(folded.split())


class LooseDirectory:
    """An auth and account backend matching names as a directory does;
    ``report``: whether its allows report the stored name."""

    audit_details = frozenset({"no-such-user"})

    def __init__(self, report: bool) -> None:
        self.report = report
        self.users = {directory_fold(name): name for name in STORED}
        self.asked: list[str] = []

    def authenticate(self, attempt: nxauth.Attempt) -> Verdict:
        self.asked.append(attempt.username)
        stored = self.users.get(directory_fold(attempt.username))
        if stored is None:
            return Verdict.deny(Reason.UNKNOWN_USER, "no-such-user")
        if not hmac.compare_digest(attempt.password.reveal_bytes(), PASSWORD.encode()):
            return Verdict.deny(Reason.BAD_PASSWORD)
        return Verdict.allow(username=stored if self.report else None)

    def check_account(self, identity: nxauth.Identity) -> Verdict:
        stored = self.users.get(directory_fold(identity.username))
        if stored is None:
            return Verdict.deny(Reason.NOT_LISTED, "no-such-user")
        return Verdict.allow(username=stored if self.report else None)


def login(session: nxauth.Session, username: str, password: str = PASSWORD) -> nxauth.Identity | Reason:
    try:
        return session.login(username, password)
    except AuthenticationFailed as exc:
        return exc.reason


Granted = Callable[..., nxauth.Session]
_FRESH = itertools.count()


@pytest.fixture
def fresh(tmp_path: Path) -> Callable[[], dict[str, str]]:
    """A new state directory (store, throttle) for each hypothesis example."""
    return lambda: {"state_dir": str(tmp_path / f"state{next(_FRESH)}")}


@pytest.mark.parametrize("report", [True, False], ids=["reports", "silent"])
@SETTINGS
@given(data=st.data())
def test_a_loose_backend_grants_the_stored_name_or_nothing(
    make_auth: Callable[..., nxauth.Authenticator],
    granted: Granted,
    fresh: Callable[[], dict[str, str]],
    report: bool,
    data: st.DataObject,
) -> None:
    auth = make_auth(
        {"auth": [{"use": "dir"}], "account": [{"use": "dir"}], "throttle": {"enabled": False}, **fresh()},
        backends={"dir": LooseDirectory(report)},
    )
    stored = data.draw(st.sampled_from(STORED))
    typed = data.draw(st.one_of(lookalikes(stored), st.sampled_from(FIXED)))
    granted_as = login(granted(auth), typed)
    auth.close()
    if isinstance(granted_as, nxauth.Identity):
        assert granted_as.username == nxauth.normalize_username(typed)
        assert granted_as.username in STORED, (typed, granted_as.username)


@pytest.mark.parametrize("stack", ["auth", "account"])
def test_a_name_reported_by_either_stack_must_be_the_canonical_name(
    make_auth: Callable[..., nxauth.Authenticator], granted: Granted, stack: str
) -> None:
    class Renaming:
        def authenticate(self, attempt: nxauth.Attempt) -> Verdict:
            return Verdict.allow(username="bob" if stack == "auth" else None)

        def check_account(self, identity: nxauth.Identity) -> Verdict:
            return Verdict.allow(username="bob" if stack == "account" else None)

    auth = make_auth({"auth": [{"use": "ren"}], "account": [{"use": "ren"}]}, backends={"ren": Renaming()})
    assert login(granted(auth), "alice") is Reason.NAME_MISMATCH


@pytest.mark.parametrize("reported", ["ALICE", "Alice"])
def test_a_reported_name_with_the_same_canonical_form_is_the_same_user(
    make_auth: Callable[..., nxauth.Authenticator], granted: Granted, reported: str
) -> None:
    class Upper:
        def authenticate(self, attempt: nxauth.Attempt) -> Verdict:
            return Verdict.allow(username=reported)

        def check_account(self, identity: nxauth.Identity) -> Verdict:
            return Verdict.allow(username=reported)

    auth = make_auth({"auth": [{"use": "up"}], "account": [{"use": "up"}]}, backends={"up": Upper()})
    granted_as = login(granted(auth), "alice")
    assert isinstance(granted_as, nxauth.Identity) and granted_as.username == "alice"


@pytest.mark.parametrize("reported", ["\uff41lice", "alice\u200b", "al ice", "alice ", "\U0001d41alice"])
def test_a_reported_name_that_cannot_be_canonical_never_matches(
    make_auth: Callable[..., nxauth.Authenticator], granted: Granted, reported: str
) -> None:
    class Odd:
        def authenticate(self, attempt: nxauth.Attempt) -> Verdict:
            return Verdict.allow(username=reported)

        def check_account(self, identity: nxauth.Identity) -> Verdict:
            return Verdict.allow()

    auth = make_auth({"auth": [{"use": "odd"}], "account": [{"use": "odd"}]}, backends={"odd": Odd()})
    assert login(granted(auth), "alice") is Reason.NAME_MISMATCH


# ------------------------------------------------------------ the lockout holds


@pytest.mark.parametrize("report", [True, False], ids=["reports", "silent"])
@SETTINGS
@given(typed=st.one_of(st.sampled_from(FIXED), lookalikes("alice")))
def test_a_lockout_of_alice_holds_against_every_lookalike(
    make_auth: Callable[..., nxauth.Authenticator],
    granted: Granted,
    fresh: Callable[[], dict[str, str]],
    report: bool,
    typed: str,
) -> None:
    backend = LooseDirectory(report)
    auth = make_auth(
        {"auth": [{"use": "dir"}], "account": [{"use": "dir"}], "throttle": LOCKING, **fresh()},
        backends={"dir": backend},
    )
    for _ in range(3):
        assert login(granted(auth), "alice", "wrong") is Reason.BAD_PASSWORD
    assert login(granted(auth), "alice") is Reason.LOCKED_OUT
    backend.asked.clear()
    granted_as = login(granted(auth), typed)
    assert not isinstance(granted_as, nxauth.Identity), (typed, granted_as.username)
    # the look-alike never reached the backend that takes it for alice: no guess got past her lockout
    assert not any(directory_fold(name) == "alice" for name in backend.asked), (typed, backend.asked)
    auth.close()


# ------------------------------------------------------------ the password database and the allowlist


def add_user(auth: nxauth.Authenticator, name: str, password: str | None) -> None:
    backend = auth.backends["passwords"]
    assert isinstance(backend, PasswordsBackend)
    backend.users.add(name, password_hash=None if password is None else backend.hasher.hash(Secret(password)))


CHEAP = {"time_cost": 1, "memory_cost": 8192}


@pytest.fixture
def database(
    make_auth: Callable[..., nxauth.Authenticator], fresh: Callable[[], dict[str, str]]
) -> Callable[..., nxauth.Authenticator]:
    def build(**more: Any) -> nxauth.Authenticator:
        auth = make_auth(
            {"backends": {"passwords": dict(CHEAP)}, "auth": [{"use": "passwords"}], "account": [{"use": "users"}]}
            | fresh()
            | more
        )
        for name in ("alice", "kirk", "strasse", "ingrid", "zoë"):
            add_user(auth, name, PASSWORD)
        return auth

    return build


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_password_database_grants_the_stored_name_or_nothing(
    database: Callable[..., nxauth.Authenticator], granted: Granted, data: st.DataObject
) -> None:
    auth = database(throttle={"enabled": False})
    stored = data.draw(st.sampled_from(("alice", "kirk", "strasse", "ingrid", "zoë")))
    typed = data.draw(lookalikes(stored))
    granted_as = login(granted(auth), typed)
    if isinstance(granted_as, nxauth.Identity):
        assert granted_as.username == stored == nxauth.normalize_username(typed)
    auth.close()


def test_the_password_database_lockout_holds_against_lookalikes(
    database: Callable[..., nxauth.Authenticator], granted: Granted
) -> None:
    auth = database(throttle=LOCKING)
    for _ in range(3):
        login(granted(auth), "alice", "wrong")
    for typed in ("alice", "ALICE", "Alice", *FIXED):
        assert not isinstance(login(granted(auth), typed), nxauth.Identity), typed


@pytest.mark.parametrize("typed", ["ｓtrasse", "straße", "STRASSE", "ſtrasse", "\u212airk", "KIRK"])
def test_folded_forms_are_the_one_stored_user_or_refused(
    database: Callable[..., nxauth.Authenticator], granted: Granted, typed: str
) -> None:
    auth = database(throttle={"enabled": False})
    granted_as = login(granted(auth), typed)
    if isinstance(granted_as, nxauth.Identity):
        assert granted_as.username in ("strasse", "kirk")
    else:
        assert granted_as is Reason.INVALID_USERNAME, typed
