"""One account, one name (issue 17, class 3) through real PAM (pam_matrix
and pam_set_items through pam_wrapper).

The ``nxauth-rename`` service stands for a PAM stack that takes a look-alike
for the real user (sssd and pam_ldap with a case- or width-insensitive
directory): pam_matrix accepts the look-alike, then pam_set_items sets
``PAM_USER`` to the real user's name.  The identity is the name PAM ends
with only when that is the canonical form of the name typed; and while the
user is locked out, no look-alike that a directory would join to the user's
name reaches PAM.
"""

from __future__ import annotations

import itertools
import os
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nxauth
from nxauth import AuthenticationFailed, Reason
from nxauth.testing import RecordingSink
from tests.support import pam as pam_servers
from tests.support.keys import ListKeySource, TransportKey
from tests.support.lookalikes import FIXED, lookalikes
from tests.support.pam import PamWrapper, Services, nss_users

pam_wrapper = pam_servers.pam_wrapper

KEY = TransportKey("lookalikes-pam")
PEER = ("198.51.100.7", 40000)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
LOCKING = {"max_user_failures": 3, "max_source_failures": 10**6, "window": 86400, "lockout": 3600, "max_lockout": 3600}
_FRESH = itertools.count()


def password_of(name: str) -> str:
    return f"pw-{name}-Matrix"


def directory_fold(name: str) -> str:
    folded = unicodedata.normalize("NFKC", name.replace("\u0130", "i")).casefold()
    return " ".join("".join(c for c in folded if unicodedata.category(c) != "Cf").split())


@pytest.fixture(scope="module")
def user() -> str:
    """A user that exists in NSS here (the backend looks PAM's final name up)."""
    return nss_users(2)[1]


@pytest.fixture
def pam_user_env(user: str) -> Iterator[None]:
    os.environb[b"PAM_USER"] = user.encode()
    yield
    os.environb.pop(b"PAM_USER", None)


@pytest.fixture
def build(pam_wrapper: PamWrapper, tmp_path: Path) -> Iterator[Callable[..., nxauth.Authenticator]]:
    made: list[nxauth.Authenticator] = []

    def make(service: str, **more: object) -> nxauth.Authenticator:
        auth = nxauth.Authenticator(
            {
                "state_dir": str(tmp_path / f"state{next(_FRESH)}"),
                "transport": {"key_sources": ["keys"]},
                "backends": {"pam": {"kind": "pam", "service": service, "library": pam_wrapper.library}},
                "auth": [{"use": "pam"}],
                "account": [{"use": "pam"}],
                **more,
            },
            backends={"keys": ListKeySource(KEY.line)},
            plugins=(RecordingSink(),),
            entry_points=False,
        )
        made.append(auth)
        return auth

    yield make
    for auth in made:
        auth.close()


def login(auth: nxauth.Authenticator, username: str, password: str) -> nxauth.Identity | Reason:
    session = auth.open_session(peer=PEER)
    session.check_transport_key("nx", KEY.line)
    try:
        return session.login(username, password)
    except AuthenticationFailed as exc:
        return exc.reason


@SETTINGS
@given(data=st.data())
def test_a_renaming_stack_grants_the_stored_name_or_nothing(
    pam_wrapper: PamWrapper,
    build: Callable[..., nxauth.Authenticator],
    user: str,
    pam_user_env: None,
    data: st.DataObject,
) -> None:
    typed = data.draw(st.one_of(lookalikes(user), st.sampled_from(FIXED)))
    pam_wrapper.set_users({typed: password_of(user), user: password_of(user)}, services=[Services.RENAME])
    granted = login(build(Services.RENAME, throttle={"enabled": False}), typed, password_of(user))
    if isinstance(granted, nxauth.Identity):
        assert granted.username == user == nxauth.normalize_username(typed), typed


@SETTINGS
@given(data=st.data())
def test_lookalikes_do_not_reach_pam_while_the_user_is_locked_out(
    pam_wrapper: PamWrapper,
    build: Callable[..., nxauth.Authenticator],
    user: str,
    pam_user_env: None,
    data: st.DataObject,
) -> None:
    typed = data.draw(lookalikes(user))
    pam_wrapper.set_users({user: password_of(user)}, services=[Services.RENAME])
    auth = build(Services.RENAME, throttle=LOCKING)
    for _ in range(3):
        assert login(auth, user, "wrong") is Reason.BAD_PASSWORD
    assert login(auth, user, password_of(user)) is Reason.LOCKED_OUT
    pam_wrapper.set_users({typed: password_of(user), user: password_of(user)}, services=[Services.RENAME])
    granted = login(auth, typed, password_of(user))
    assert not isinstance(granted, nxauth.Identity), typed
    if directory_fold(typed) == user:
        # a name that a directory joins to the user's: refused or locked out, PAM never asked
        assert granted in (Reason.LOCKED_OUT, Reason.INVALID_USERNAME), (typed, granted)
