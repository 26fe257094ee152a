"""One account, one name (issue 17, class 3) against the session's real slapd.

slapd's ``caseIgnoreMatch`` finds ``uid=alice`` for ``ALICE``, fullwidth
letters, mathematical and circled letters, ``al\u0130ce``, ``alice `` and, for
``smith, j``, ``smith,  j`` and ``smith,\\u3000j``.  Whatever look-alike of a
stored name is typed with that user's password, nxauth grants no identity
but the stored name, and a lockout of the user holds against every
look-alike; in search mode no look-alike gets a password tried against the
user's entry while the user is locked out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nxauth
from nxauth import AuthenticationFailed, Reason, Secret
from nxauth.testing import RecordingSink
from tests.support.keys import ListKeySource, TransportKey
from tests.support.lookalikes import FIXED, lookalikes
from tests.support.slapd import PASSWORDS, PEOPLE, SERVICE_DN, SERVICE_PASSWORD, Slapd, TlsFiles, slapd_missing

pytest.importorskip("ldap3")
pytestmark = pytest.mark.skipif(slapd_missing() is not None, reason=f"slapd is not usable: {slapd_missing()}")

STORED = ("alice", "bob", "carol", "zoë", "smith, j", "o'hara")
PEER = ("198.51.100.7", 40000)
KEY = TransportKey("lookalikes")
SEARCH = {"user_base": PEOPLE, "bind_dn": SERVICE_DN, "bind_password": Secret(SERVICE_PASSWORD)}
DIRECT = {"user_dn": "uid={username},ou=people,dc=example,dc=org"}
DIRECT_WITH_SERVICE = {**DIRECT, "bind_dn": SERVICE_DN, "bind_password": Secret(SERVICE_PASSWORD)}
MODES = {"search": SEARCH, "dn": DIRECT, "dn+service": DIRECT_WITH_SERVICE}
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def build(
    directory: Slapd, tls: TlsFiles, state: Path, options: dict[str, Any], **more: Any
) -> tuple[nxauth.Authenticator, RecordingSink]:
    sink = RecordingSink()
    config: dict[str, Any] = {
        "state_dir": str(state),
        "transport": {"key_sources": ["keys"]},
        "backends": {"corp": {"kind": "ldap", "uri": directory.ldaps_uri, "ca_file": str(tls.ca_cert), **options}},
        "auth": [{"use": "corp"}],
        "account": [{"use": "corp"}],
        **more,
    }
    auth = nxauth.Authenticator(config, backends={"keys": ListKeySource(KEY.line)}, plugins=(sink,), entry_points=False)
    return auth, sink


def login(auth: nxauth.Authenticator, username: str, password: str) -> nxauth.Identity | Reason:
    """The identity granted, or the reason of the denial."""
    session = auth.open_session(peer=PEER)
    session.check_transport_key("nx", KEY.line)
    try:
        return session.login(username, password)
    except AuthenticationFailed as exc:
        return exc.reason


@pytest.fixture(scope="module", params=sorted(MODES))
def open_auth(
    request: pytest.FixtureRequest, directory: Slapd, tls: TlsFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[nxauth.Authenticator]:
    auth, _ = build(directory, tls, tmp_path_factory.mktemp("state"), MODES[request.param], throttle={"enabled": False})
    yield auth
    auth.close()


def test_the_stored_names_log_in(open_auth: nxauth.Authenticator) -> None:
    for name in STORED:
        granted = login(open_auth, name, PASSWORDS[name])
        assert isinstance(granted, nxauth.Identity), (name, granted)
        assert granted.username == name


@pytest.mark.parametrize("lookalike", FIXED)
def test_fixed_lookalikes_of_alice_never_get_another_name(open_auth: nxauth.Authenticator, lookalike: str) -> None:
    granted = login(open_auth, lookalike, PASSWORDS["alice"])
    if isinstance(granted, nxauth.Identity):
        assert granted.username == "alice"
        assert nxauth.normalize_username(lookalike) == "alice"


@SETTINGS
@given(data=st.data())
def test_a_lookalike_gets_the_stored_name_or_nothing(open_auth: nxauth.Authenticator, data: st.DataObject) -> None:
    stored = data.draw(st.sampled_from(STORED))
    typed = data.draw(lookalikes(stored))
    granted = login(open_auth, typed, PASSWORDS[stored])
    if isinstance(granted, nxauth.Identity):
        # only a name whose canonical form is the stored name logs in, and as the stored name
        assert granted.username == stored, (typed, granted.username)
        assert nxauth.normalize_username(typed) == stored


# ------------------------------------------------------------ the lockout holds


@pytest.fixture(
    scope="module",
    params=[("search", "fold"), ("search", "preserve"), ("dn", "fold"), ("dn+service", "preserve")],
    ids=str,
)
def locked_alice(
    request: pytest.FixtureRequest, directory: Slapd, tls: TlsFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[nxauth.Authenticator, str]]:
    """An authenticator on which alice is locked out from PEER (three wrong
    passwords; the source itself is never locked out)."""
    mode, case = request.param
    auth, _ = build(
        directory,
        tls,
        tmp_path_factory.mktemp("state"),
        MODES[mode],
        usernames={"case": case},
        throttle={
            "max_user_failures": 3,
            "max_source_failures": 10**6,
            "window": 86400,
            "lockout": 3600,
            "max_lockout": 3600,
        },
    )
    for _ in range(3):
        assert login(auth, "alice", "wrong password") is Reason.BAD_PASSWORD
    assert login(auth, "alice", PASSWORDS["alice"]) is Reason.LOCKED_OUT
    yield auth, mode
    auth.close()


@pytest.mark.parametrize("lookalike", FIXED)
def test_fixed_lookalikes_do_not_dodge_the_lockout(
    locked_alice: tuple[nxauth.Authenticator, str], lookalike: str
) -> None:
    auth, _ = locked_alice
    assert not isinstance(login(auth, lookalike, PASSWORDS["alice"]), nxauth.Identity)


@SETTINGS
@given(typed=lookalikes("alice"))
def test_no_lookalike_logs_in_while_alice_is_locked_out(
    locked_alice: tuple[nxauth.Authenticator, str], typed: str
) -> None:
    auth, _ = locked_alice
    granted = login(auth, typed, PASSWORDS["alice"])
    assert not isinstance(granted, nxauth.Identity), (typed, granted.username)


@SETTINGS
@given(typed=st.one_of(st.sampled_from(FIXED), lookalikes("alice")))
def test_no_lookalike_has_a_password_tried_while_alice_is_locked_out(
    locked_alice: tuple[nxauth.Authenticator, str], typed: str
) -> None:
    """A wrong password under a look-alike that the directory matches to
    alice would be a guess at alice's password that her lockout did not stop.
    With a service account the entry is read before any bind: no bind is tried.
    A direct bind without a service account has no entry to read first (the
    bind is the lookup, docs/security.md): there the guess is still refused."""
    auth, mode = locked_alice
    outcome = login(auth, typed, "a wrong guess")
    assert not isinstance(outcome, nxauth.Identity), typed
    if mode != "dn":
        assert outcome is not Reason.BAD_PASSWORD, typed
