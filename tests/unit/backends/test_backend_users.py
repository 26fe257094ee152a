"""The ``users`` backend: the users database as an allowlist behind any auth
backend."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import nxauth
from nxauth import AuthenticationFailed, Decision, Reason
from nxauth.backends.userdb import UserDatabase
from nxauth.backends.users import UsersBackend
from nxauth.store.protocol import Store
from nxauth.testing import AccountBackendContract, RecordingSink, make_identity


@pytest.fixture
def users(any_store: Store) -> UserDatabase:
    """On the SQLite store and on PostgreSQL."""
    return UserDatabase(any_store)


@pytest.fixture
def backend(users: UserDatabase) -> UsersBackend:
    users.add("alice")
    return UsersBackend(users)


class TestContract(AccountBackendContract):
    @pytest.fixture
    def listed_username(self) -> str:
        return "alice"


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param("listed", (Decision.ALLOW, Reason.OK), id="listed"),
        pytest.param("listed-with-password", (Decision.ALLOW, Reason.OK), id="listed-with-password"),
        pytest.param("disabled", (Decision.DENY, Reason.DISABLED), id="disabled"),
        pytest.param("absent", (Decision.DENY, Reason.NOT_LISTED), id="not-listed"),
    ],
)
def test_decisions(users: UserDatabase, setup: str, expected: tuple[Decision, Reason]) -> None:
    if setup == "listed":
        users.add("bob")
    elif setup == "listed-with-password":
        users.add("bob", password_hash="$2b$04$abcdefghijklmnopqrstuuX4hBmZq4eZmYFJ7V7QJRkm8sPAgkWLi")
    elif setup == "disabled":
        users.add("bob", enabled=False)
    verdict = UsersBackend(users).check_account(make_identity("bob"))
    assert (verdict.decision, verdict.reason) == expected


def test_empty_allowlist_denies_everyone(users: UserDatabase) -> None:
    backend = UsersBackend(users)
    for name in ("alice", "root", "nx"):
        assert backend.check_account(make_identity(name)).reason is Reason.NOT_LISTED


def test_name_that_could_never_be_listed(backend: UsersBackend) -> None:
    assert backend.check_account(make_identity("alice:x")).reason is Reason.NOT_LISTED


def test_repr(backend: UsersBackend) -> None:
    assert repr(backend) == "UsersBackend(name='users')"


# ------------------------------------------------------------ behind another auth backend


@pytest.fixture
def allowlist_auth(make_auth: Callable[..., nxauth.Authenticator]) -> nxauth.Authenticator:
    """The conftest's in-memory backend ``mem`` (alice/wonderland,
    bob/builder) stands in for PAM or LDAP; ``users`` is the allowlist."""
    return make_auth({"auth": [{"use": "mem"}], "account": [{"use": "users"}], "throttle": {"enabled": False}})


def table(auth: nxauth.Authenticator) -> UserDatabase:
    backend = auth.backends["users"]
    assert isinstance(backend, UsersBackend)
    return backend.users


def test_authenticated_and_listed_passes(
    allowlist_auth: nxauth.Authenticator, granted: Callable[..., nxauth.Session], sink: RecordingSink
) -> None:
    table(allowlist_auth).add("Alice")
    identity = granted(allowlist_auth).login("alice", "wonderland")
    assert (identity.username, identity.backend) == ("alice", "mem")
    assert identity.groups == {"staff"}


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        pytest.param("nobody-listed", Reason.NOT_LISTED, id="empty-allowlist"),
        pytest.param("other-listed", Reason.NOT_LISTED, id="not-listed"),
        pytest.param("disabled", Reason.DISABLED, id="disabled"),
    ],
)
def test_authenticated_but_not_allowed(
    allowlist_auth: nxauth.Authenticator,
    granted: Callable[..., nxauth.Session],
    sink: RecordingSink,
    setup: str,
    reason: Reason,
) -> None:
    db = table(allowlist_auth)
    if setup == "other-listed":
        db.add("alice")
    elif setup == "disabled":
        db.add("bob", enabled=False)
    with pytest.raises(AuthenticationFailed) as info:
        granted(allowlist_auth).login("bob", "builder")
    assert (info.value.stage, info.value.reason) == (2, reason)
    event = sink.events[-1]
    assert (event.outcome, event.backend, event.reason) == ("failed", "users", reason)


def test_listing_never_lets_a_wrong_password_in(
    allowlist_auth: nxauth.Authenticator, granted: Callable[..., nxauth.Session]
) -> None:
    table(allowlist_auth).add("bob")
    with pytest.raises(AuthenticationFailed) as info:
        granted(allowlist_auth).login("bob", "wrong")
    assert info.value.reason is Reason.BAD_PASSWORD


def test_users_has_no_options(make_auth: Callable[..., nxauth.Authenticator]) -> None:
    with pytest.raises(nxauth.ConfigError, match="unknown option"):
        make_auth({"backends": {"users": {"strict": True}}, "account": [{"use": "users"}]})
