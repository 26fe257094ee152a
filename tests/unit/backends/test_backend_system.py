"""The ``system`` backend: a system account (NSS) must exist for the user."""

from __future__ import annotations

import pwd
from collections.abc import Callable
from typing import Any

import pytest

import nxauth
from nxauth import AuthenticationFailed, ConfigError, Decision, Reason, Secret
from nxauth.backends.passwords import PasswordsBackend
from nxauth.backends.system import SystemAccountBackend
from nxauth.testing import AccountBackendContract, make_identity

ACCOUNTS = {
    "alice": ("alice", 1000, "/bin/bash"),
    "bob": ("bob", 1001, ""),
    "root": ("root", 0, "/bin/bash"),
    "daemon": ("daemon", 1, "/usr/sbin/nologin"),
    "ftp": ("ftp", 1002, "/bin/false"),
    "guest": ("guest", 1003, "/usr/local/bin/restricted"),
    "carol": ("Carol", 1004, "/bin/sh"),  # NSS answers with another case
    "dave": ("dave2", 1005, "/bin/sh"),  # NSS rewrote the name
}


def fake_getpwnam(name: str) -> pwd.struct_passwd:
    if name not in ACCOUNTS:
        raise KeyError(name)
    pw_name, uid, shell = ACCOUNTS[name]
    return pwd.struct_passwd((pw_name, "x", uid, uid, "", f"/home/{pw_name}", shell))


def make(**kwargs: Any) -> SystemAccountBackend:
    return SystemAccountBackend(getpwnam=fake_getpwnam, **kwargs)


class TestContract(AccountBackendContract):
    @pytest.fixture
    def backend(self) -> SystemAccountBackend:
        return make()

    @pytest.fixture
    def listed_username(self) -> str:
        return "alice"


@pytest.mark.parametrize(
    ("username", "options", "reason", "detail"),
    [
        pytest.param("alice", {}, Reason.OK, "", id="regular"),
        pytest.param("bob", {}, Reason.OK, "", id="empty-shell-is-sh"),
        pytest.param("carol", {}, Reason.OK, "", id="case-folded-match"),
        pytest.param("mallory", {}, Reason.UNKNOWN_USER, "no-system-account", id="no-account"),
        pytest.param("dave", {}, Reason.NAME_MISMATCH, "nss-returned-another-name", id="renamed-by-nss"),
        pytest.param("root", {}, Reason.RESTRICTED, "uid-below-min-uid", id="root-refused-by-default"),
        pytest.param("root", {"min_uid": 0}, Reason.OK, "", id="root-allowed-min-uid-0"),
        pytest.param("alice", {"min_uid": 1001}, Reason.RESTRICTED, "uid-below-min-uid", id="min-uid"),
        pytest.param("daemon", {"min_uid": 0}, Reason.RESTRICTED, "shell-refused", id="nologin"),
        pytest.param("ftp", {}, Reason.RESTRICTED, "shell-refused", id="false"),
        pytest.param("ftp", {"refuse_shells": []}, Reason.OK, "", id="no-refused-shells"),
        pytest.param(
            "guest", {"refuse_shells": ["/usr/local/bin/restricted"]}, Reason.RESTRICTED, "shell-refused", id="by-path"
        ),
        pytest.param("guest", {"refuse_shells": ["/bin/restricted"]}, Reason.OK, "", id="path-must-match-exactly"),
    ],
)
def test_decisions(username: str, options: dict[str, Any], reason: Reason, detail: str) -> None:
    verdict = make(**options).check_account(make_identity(username))
    assert verdict.reason is reason
    assert detail in verdict.detail
    assert verdict.decision is (Decision.ALLOW if reason is Reason.OK else Decision.DENY)


def test_case_preserve_compares_exactly() -> None:
    assert make(case="preserve").check_account(make_identity("carol")).reason is Reason.NAME_MISMATCH


def test_allow_carries_the_account() -> None:
    verdict = make().check_account(make_identity("bob"))
    assert dict(verdict.attributes) == {"uid": 1001, "gid": 1001, "home": "/home/bob", "shell": "/bin/sh"}


# ------------------------------------------------------------ real NSS, through the Authenticator


def have_account(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def system_auth(make_auth: Callable[..., nxauth.Authenticator]) -> Callable[..., nxauth.Authenticator]:
    """Mode (ii) of the original system: the password database, for users
    with a system account."""

    def build(**options: Any) -> nxauth.Authenticator:
        auth = make_auth(
            {
                "backends": {"passwords": {"time_cost": 1, "memory_cost": 8192}, "system": options},
                "auth": [{"use": "passwords"}],
                "account": [{"use": "system"}],
                "throttle": {"enabled": False},
            }
        )
        backend = auth.backends["passwords"]
        assert isinstance(backend, PasswordsBackend)
        for name in ("root", "nobody", "nxauth-no-such-account"):
            if backend.users.get(name) is None:  # a second authenticator shares the state directory
                backend.users.add(name, password_hash=backend.hasher.hash(Secret("pw-" + name)))
        return auth

    return build


@pytest.mark.skipif(not have_account("root"), reason="no root account in NSS")
def test_real_nss_root(
    system_auth: Callable[..., nxauth.Authenticator], granted: Callable[..., nxauth.Session]
) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        granted(system_auth()).login("root", "pw-root")
    assert info.value.reason is Reason.RESTRICTED
    identity = granted(system_auth(min_uid=0)).login("root", "pw-root")
    assert identity.attributes["uid"] == 0
    assert identity.attributes["home"] == pwd.getpwnam("root").pw_dir


@pytest.mark.skipif(not have_account("nobody"), reason="no nobody account in NSS")
def test_real_nss_nologin(
    system_auth: Callable[..., nxauth.Authenticator], granted: Callable[..., nxauth.Session]
) -> None:
    auth = system_auth()
    if pwd.getpwnam("nobody").pw_shell.rsplit("/", 1)[-1] not in ("nologin", "false"):
        pytest.skip("nobody has a login shell here")
    with pytest.raises(AuthenticationFailed) as info:
        granted(auth).login("nobody", "pw-nobody")
    assert info.value.reason is Reason.RESTRICTED


def test_real_nss_no_account(
    system_auth: Callable[..., nxauth.Authenticator], granted: Callable[..., nxauth.Session]
) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        granted(system_auth()).login("nxauth-no-such-account", "pw-nxauth-no-such-account")
    assert info.value.reason is Reason.UNKNOWN_USER


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({"min_uid": -1}, "backends.system.min_uid", "at least 0"),
        ({"refuse_shells": "nologin"}, None, None),
        ({"refuse_shells": [""]}, "backends.system.refuse_shells[0]", "shell name"),
        ({"refuse_shells": ["bin/false"]}, "backends.system.refuse_shells[0]", "absolute path"),
        ({"refuse_shells": [1]}, "backends.system.refuse_shells[0]", "must be a string"),
        ({"shells": []}, "backends.system.shells", "unknown option"),
    ],
)
def test_options(
    make_auth: Callable[..., nxauth.Authenticator], options: dict[str, Any], key: str | None, message: str | None
) -> None:
    mapping = {"backends": {"system": options}, "account": [{"use": "system"}]}
    if key is None:
        backend = make_auth(mapping).backends["system"]
        assert isinstance(backend, SystemAccountBackend)
        assert backend.refuse_shells == {"nologin"}
        return
    with pytest.raises(ConfigError, match=message) as info:
        make_auth(mapping)
    assert info.value.key == key
