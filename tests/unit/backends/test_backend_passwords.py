"""The ``passwords`` backend: unit, contract, and end to end through the
Authenticator with a real stage 1 (the conftest's transport key)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from passlib import hash as passlib_hash

import nxauth
from nxauth import AuthenticationFailed, ConfigError, Decision, Reason, Secret
from nxauth.backends.hashing import PasswordHasher
from nxauth.backends.passwords import PasswordsBackend
from nxauth.backends.userdb import UserDatabase
from nxauth.store.protocol import Store
from nxauth.testing import AuthBackendContract, RecordingSink, make_attempt

CHEAP = {"time_cost": 1, "memory_cost": 8192}
PASSWORD = "wonderland-Rabbit-7"


@pytest.fixture
def store(any_store: Store) -> Store:
    """Every test here runs on the SQLite store and on PostgreSQL."""
    return any_store


@pytest.fixture
def hasher() -> PasswordHasher:
    return PasswordHasher(**CHEAP)


@pytest.fixture
def users(store: Store) -> UserDatabase:
    return UserDatabase(store)


@pytest.fixture
def backend(users: UserDatabase, hasher: PasswordHasher) -> PasswordsBackend:
    users.add("alice", password_hash=hasher.hash(Secret(PASSWORD)))
    return PasswordsBackend(users, hasher)


class TestContract(AuthBackendContract):
    @pytest.fixture
    def credentials(self) -> tuple[str, str]:
        return ("alice", PASSWORD)


# ------------------------------------------------------------ decisions


def test_right_password_allows(backend: PasswordsBackend) -> None:
    assert backend.authenticate(make_attempt("alice", PASSWORD)) == nxauth.Verdict.allow(username="alice")


def test_wrong_password(backend: PasswordsBackend) -> None:
    verdict = backend.authenticate(make_attempt("alice", PASSWORD + "!"))
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.BAD_PASSWORD)


def test_unknown_user_denied_after_dummy_verify(backend: PasswordsBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = backend.hasher.dummy_verify
    monkeypatch.setattr(backend.hasher, "dummy_verify", lambda password: (calls.append("dummy"), real(password)))
    verdict = backend.authenticate(make_attempt("mallory", PASSWORD))
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.UNKNOWN_USER)
    assert verdict.detail == "not-in-password-database"
    assert calls == ["dummy"]


def test_name_that_could_never_be_stored_is_unknown(backend: PasswordsBackend) -> None:
    # The core accepts '/' in a name; the store never holds one.
    verdict = backend.authenticate(make_attempt("a/b", PASSWORD))
    assert verdict.reason is Reason.UNKNOWN_USER


def test_listed_without_password_is_unknown_to_the_password_database(
    backend: PasswordsBackend, users: UserDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    users.add("bob")
    calls: list[str] = []
    monkeypatch.setattr(backend.hasher, "dummy_verify", lambda password: calls.append("dummy"))
    verdict = backend.authenticate(make_attempt("bob", PASSWORD))
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.UNKNOWN_USER)
    assert verdict.detail == "no-nxauth-password"
    assert calls == ["dummy"]


@pytest.mark.parametrize(
    ("password", "matched"), [(PASSWORD, "disabled-password-matched"), ("wrong", "disabled-password-wrong")]
)
def test_disabled_user_denied_after_the_verify(
    backend: PasswordsBackend, users: UserDatabase, password: str, matched: str
) -> None:
    users.disable("alice")
    verdict = backend.authenticate(make_attempt("alice", password))
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.DISABLED)
    assert verdict.detail == matched


@pytest.mark.parametrize(
    ("password", "detail"),
    [("x" * 4097, "password-refused"), ("x" * (1 << 20), "password-refused"), ("a\x00b", "password-refused")],
)
def test_unstorable_passwords_refused_before_lookup(
    backend: PasswordsBackend, monkeypatch: pytest.MonkeyPatch, password: str, detail: str
) -> None:
    def no_lookup(name: str) -> None:
        raise AssertionError("looked up")

    monkeypatch.setattr(backend.users, "get", no_lookup)
    start = time.perf_counter()
    verdict = backend.authenticate(make_attempt("alice", password))
    assert time.perf_counter() - start < 0.01
    assert verdict.reason is Reason.INVALID_PASSWORD
    assert verdict.detail == detail


def test_bcrypt_over_72_bytes_denied_with_detail(backend: PasswordsBackend, users: UserDatabase) -> None:
    prefix = "p" * 72
    users.add("carol", password_hash=passlib_hash.bcrypt.using(rounds=4).hash(prefix))
    verdict = backend.authenticate(make_attempt("carol", prefix + "-and-more"))
    assert verdict.reason is Reason.BAD_PASSWORD
    assert verdict.detail == "bcrypt-password-too-long"
    assert backend.authenticate(make_attempt("carol", prefix)).allowed


def test_unusable_stored_hash_denies(backend: PasswordsBackend, users: UserDatabase) -> None:
    users.add("dave", password_hash="$apr1$legacy$0123456789abcdefghijkl")
    verdict = backend.authenticate(make_attempt("dave", PASSWORD))
    assert verdict.reason is Reason.BAD_PASSWORD
    assert verdict.detail == "stored-hash-unusable"


@pytest.mark.parametrize(
    "make_hash",
    [
        pytest.param(lambda p: passlib_hash.bcrypt.using(rounds=4).hash(p), id="bcrypt"),
        pytest.param(lambda p: passlib_hash.sha512_crypt.using(rounds=1000).hash(p), id="sha512_crypt"),
        pytest.param(lambda p: passlib_hash.sha256_crypt.using(rounds=1000).hash(p), id="sha256_crypt"),
    ],
)
def test_legacy_hash_upgraded_on_login(
    backend: PasswordsBackend, users: UserDatabase, make_hash: Callable[[str], str]
) -> None:
    old = make_hash(PASSWORD)
    users.add("erin", password_hash=old)
    changed = users.require("erin").changed
    assert not backend.authenticate(make_attempt("erin", "wrong")).allowed
    assert users.require("erin").password_hash == old  # no upgrade on a failure
    assert backend.authenticate(make_attempt("erin", PASSWORD)).allowed
    record = users.require("erin")
    assert record.password_hash is not None
    assert record.password_hash.startswith("$argon2id$v=19$m=8192,t=1,p=1$")
    assert record.changed == changed
    assert backend.authenticate(make_attempt("erin", PASSWORD)).allowed


def test_upgrade_never_overwrites_a_concurrent_passwd(
    backend: PasswordsBackend, users: UserDatabase, hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    users.add("frank", password_hash=passlib_hash.sha256_crypt.using(rounds=1000).hash(PASSWORD))
    newer = hasher.hash(Secret("the new password"))
    real_verify = hasher.verify

    def verify_then_passwd(password: Secret, stored: str) -> Any:
        result = real_verify(password, stored)
        users.set_password("frank", newer)  # an admin's passwd lands between verify and upgrade
        return result

    monkeypatch.setattr(hasher, "verify", verify_then_passwd)
    assert backend.authenticate(make_attempt("frank", PASSWORD)).allowed
    assert users.require("frank").password_hash == newer


def test_upgrade_failure_does_not_deny(
    backend: PasswordsBackend, users: UserDatabase, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    users.add("gina", password_hash=passlib_hash.sha256_crypt.using(rounds=1000).hash(PASSWORD))

    def broken(*args: object) -> bool:
        raise nxauth.StoreError("nxauth.db: database stayed busy; try again")

    monkeypatch.setattr(users, "replace_hash", broken)
    with caplog.at_level(logging.WARNING):
        assert backend.authenticate(make_attempt("gina", PASSWORD)).allowed
    assert "cannot upgrade the hash of gina" in caplog.text


def test_store_failure_raises_for_the_stack(backend: PasswordsBackend, store: Store) -> None:
    store.close()
    with pytest.raises(nxauth.StoreError):
        backend.authenticate(make_attempt("alice", PASSWORD))


def test_repr(backend: PasswordsBackend) -> None:
    assert repr(backend) == "PasswordsBackend(name='passwords', PasswordHasher(argon2id t=1 m=8192KiB p=1))"


# ------------------------------------------------------------ end to end


@pytest.fixture
def passwords_auth(make_auth: Callable[..., nxauth.Authenticator]) -> nxauth.Authenticator:
    return make_auth(
        {
            "backends": {"passwords": dict(CHEAP)},
            "auth": [{"use": "passwords"}],
            "account": [{"use": "users"}],
            "throttle": {"enabled": False},
        }
    )


def add_user(auth: nxauth.Authenticator, name: str, password: str | None, **kwargs: Any) -> None:
    backend = auth.backends["passwords"]
    assert isinstance(backend, PasswordsBackend)
    stored = None if password is None else backend.hasher.hash(Secret(password))
    backend.users.add(name, password_hash=stored, **kwargs)


def test_e2e_login(
    passwords_auth: nxauth.Authenticator, granted: Callable[..., nxauth.Session], sink: RecordingSink
) -> None:
    add_user(passwords_auth, "alice", PASSWORD)
    session = granted(passwords_auth)
    identity = session.login("ALICE", PASSWORD)
    assert (identity.username, identity.backend) == ("alice", "passwords")
    assert session.identity is identity
    assert sink.events[-1].accepted


@pytest.mark.parametrize(
    ("setup", "username", "password", "reason", "invalid_user"),
    [
        pytest.param(None, "alice", "wrong", Reason.BAD_PASSWORD, False, id="wrong-password"),
        pytest.param(None, "mallory", PASSWORD, Reason.UNKNOWN_USER, True, id="unknown-user"),
        pytest.param("no-password", "bob", PASSWORD, Reason.UNKNOWN_USER, True, id="listed-without-password"),
        pytest.param("disable", "alice", PASSWORD, Reason.DISABLED, False, id="disabled"),
        pytest.param(None, "alice", "", Reason.EMPTY_PASSWORD, False, id="empty-password"),
        pytest.param(None, "alice", "x" * 5000, Reason.INVALID_PASSWORD, False, id="5000-bytes"),
        pytest.param(None, "alice", "x" * (1 << 20), Reason.INVALID_PASSWORD, False, id="1MiB"),
        pytest.param(None, "al/ice", PASSWORD, Reason.UNKNOWN_USER, True, id="slash-in-name"),
        pytest.param(None, "al\x00ice", PASSWORD, Reason.INVALID_USERNAME, True, id="nul-in-name"),
    ],
)
def test_e2e_denials(
    passwords_auth: nxauth.Authenticator,
    granted: Callable[..., nxauth.Session],
    sink: RecordingSink,
    setup: str | None,
    username: str,
    password: str,
    reason: Reason,
    invalid_user: bool,
) -> None:
    add_user(passwords_auth, "alice", PASSWORD)
    db = passwords_auth.backends["users"].users  # type: ignore[attr-defined]
    if setup == "no-password":
        add_user(passwords_auth, "bob", None)
    elif setup == "disable":
        db.disable("alice")
    session = granted(passwords_auth)
    start = time.perf_counter()
    with pytest.raises(AuthenticationFailed) as info:
        session.login(username, password)
    elapsed = time.perf_counter() - start
    assert str(info.value) == "authentication failed"
    assert (info.value.stage, info.value.reason) == (2, reason)
    event = sink.events[-1]
    assert (event.reason, event.invalid_user) == (reason, invalid_user)
    if len(password) > 4096:
        assert elapsed < 0.05, "a huge password must be refused before hashing"
    assert not session.authenticated


def test_e2e_4kib_password(passwords_auth: nxauth.Authenticator, granted: Callable[..., nxauth.Session]) -> None:
    password = "k" * 4096
    add_user(passwords_auth, "alice", password)
    assert granted(passwords_auth).login("alice", password).username == "alice"


def test_e2e_legacy_upgrade(passwords_auth: nxauth.Authenticator, granted: Callable[..., nxauth.Session]) -> None:
    db: UserDatabase = passwords_auth.backends["users"].users  # type: ignore[attr-defined]
    db.add("henry", password_hash=passlib_hash.sha512_crypt.using(rounds=1000).hash(PASSWORD))
    granted(passwords_auth).login("henry", PASSWORD)
    assert (db.require("henry").password_hash or "").startswith("$argon2id$")
    granted(passwords_auth).login("henry", PASSWORD)


def test_e2e_secret_never_leaks(
    passwords_auth: nxauth.Authenticator,
    granted: Callable[..., nxauth.Session],
    sink: RecordingSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "Sentinel-Password-0xC0FFEE"
    add_user(passwords_auth, "alice", secret)
    passwords_auth.backends["users"].users.add(  # type: ignore[attr-defined]
        "ivan", password_hash=passlib_hash.sha256_crypt.using(rounds=1000).hash(secret)
    )
    with caplog.at_level(logging.DEBUG):
        for name, password in (("alice", secret), ("ivan", secret), ("alice", secret + "x"), ("nobody", secret)):
            try:
                granted(passwords_auth).login(name, password)
            except AuthenticationFailed as exc:
                assert secret not in repr(exc)
    assert secret not in caplog.text
    for event in sink.events:
        assert secret not in repr(event)
    for backend in passwords_auth.backends.values():
        assert secret not in repr(backend)


def test_implicit_instances_with_no_options_work(
    tmp_path: Path, granted: Callable[..., nxauth.Session], make_auth: Callable[..., nxauth.Authenticator]
) -> None:
    """The embedded default's stacks (passwords, users), no [backends] table."""
    auth = make_auth({"auth": [{"use": "passwords"}], "account": [{"use": "users"}]})
    backend = auth.backends["passwords"]
    assert isinstance(backend, PasswordsBackend)
    assert repr(backend.hasher) == "PasswordHasher(argon2id t=2 m=19456KiB p=1)"
    assert auth.describe()["account"][0]["kind"] == "users"
    add_user(auth, "alice", PASSWORD)
    assert granted(auth).login("alice", PASSWORD).backend == "passwords"


def test_empty_database_denies_everyone(
    passwords_auth: nxauth.Authenticator, granted: Callable[..., nxauth.Session]
) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        granted(passwords_auth).login("alice", PASSWORD)
    assert info.value.reason is Reason.UNKNOWN_USER


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({"time_cost": 0}, "backends.pw.time_cost", "at least 1"),
        ({"memory_cost": 512}, "backends.pw.memory_cost", "at least 1024"),
        ({"memory_cost": "big"}, "backends.pw.memory_cost", "integer"),
        ({"parallelism": 65}, "backends.pw.parallelism", "at most 64"),
        ({"rounds": 3}, "backends.pw.rounds", "unknown option"),
    ],
)
def test_bad_options(
    make_auth: Callable[..., nxauth.Authenticator], options: dict[str, Any], key: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        make_auth({"backends": {"pw": {"kind": "passwords", **options}}, "auth": [{"use": "pw"}]})
    assert info.value.key == key
