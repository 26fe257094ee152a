"""Bad input at every public entry point: a typed nxauth error, never another
exception, never an allow."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nxauth
from nxauth import NxauthError
from nxauth.config import parse_config

anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(anything)
def test_parse_config_raises_only_config_errors(data: Any) -> None:
    with contextlib.suppress(nxauth.ConfigError):
        parse_config(data if isinstance(data, dict) else {"x": data})


@SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(["auth", "account", "transport", "session", "throttle", "backends", "audit", "usernames"]),
        anything,
        max_size=4,
    )
)
def test_authenticator_from_junk_mapping(tmp_path: Path, data: dict[str, Any]) -> None:
    with contextlib.suppress(NxauthError):
        nxauth.Authenticator({**data, "state_dir": str(tmp_path)}, entry_points=False).close()


@SETTINGS
@given(username=anything, password=anything)
def test_login_with_junk(
    make_auth: Callable[..., nxauth.Authenticator], granted: Callable[..., nxauth.Session], username: Any, password: Any
) -> None:
    session = granted(make_auth({"throttle": {"enabled": False}}))
    try:
        identity = session.login(username, password)
    except NxauthError:
        return
    # only the real credentials may get in
    assert (identity.username, password) in {("alice", "wonderland"), ("bob", "builder")}


@SETTINGS
@given(account=anything, key=anything, signature=anything)
def test_stage_one_with_junk(
    make_auth: Callable[..., nxauth.Authenticator], account: Any, key: Any, signature: Any
) -> None:
    auth = make_auth()
    with pytest.raises(NxauthError):
        auth.open_session(("198.51.100.7", 1)).check_transport_key(account, key)
    session = auth.open_session(("198.51.100.7", 1))
    session.challenge()
    with pytest.raises(NxauthError):
        session.check_transport_signature(account, signature)


@SETTINGS
@given(peer=anything)
def test_open_session_with_junk_peer(make_auth: Callable[..., nxauth.Authenticator], peer: Any) -> None:
    with contextlib.suppress(NxauthError):
        make_auth().open_session(peer)
