"""Issue 17, class 2, through LDAP: a directory server that echoes the
password back (raw, quoted, escaped and cut, in the diagnostic message of
every answer, in a referral URL, in the attribute values and group names of
the entries it returns; tests/support/ldap_echo.py).  With generated
secrets, whatever the bind's answer, no form of the password reaches a
logger record, syslog, the JSON lines, an event or the exception text: the
backend reduces each answer to its result code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nxauth
from tests.support.ldap_echo import echo_server
from tests.support.leaks import Planted, assert_no_secret, login_in_every_sink, secrets

pytest.importorskip("ldap3")

MODES = ["invalid", "success", "unwilling", "constraint", "referral", "other"]


def _login(tmp_path: Path, port: int, password: str) -> tuple[list[str], list[nxauth.AuthEvent]]:
    config = {
        "backends": {
            "directory": {
                "kind": "ldap",
                "uri": f"ldap://127.0.0.1:{port}",
                "insecure": True,
                "user_dn": "uid={username},dc=example,dc=org",
                "timeout": 5,
            }
        },
        "auth": [{"use": "directory"}],
        "account": [{"use": "directory"}],
    }
    return login_in_every_sink(tmp_path, config, "alice", password)


@pytest.mark.parametrize("mode", MODES)
def test_an_echoing_directory_leaks_the_password_nowhere(tmp_path: Path, mode: str) -> None:
    secret = Planted("5e5e5e5e5e5e5e5e \"q\" 'x' \\ ünï 7a7a7a7a7a7a7a7a" * 4, ("5e5e5e5e5e5e5e5e", "7a7a7a7a7a7a7a7a"))
    with echo_server(mode) as server:
        texts, events = _login(tmp_path, server.port, secret.value)
    assert server.passwords and secret.value.encode() in server.passwords  # it got the password, and echoed it
    assert events[-1].stage == 2
    assert_no_secret(secret, texts)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=secrets(), mode=st.sampled_from(MODES))
def test_no_generated_secret_echoed_by_a_directory_reaches_a_sink(
    tmp_path_factory: Any, secret: Planted, mode: str
) -> None:
    with echo_server(mode) as server:
        texts, _ = _login(tmp_path_factory.mktemp("echo"), server.port, secret.value)
    assert_no_secret(secret, texts)
