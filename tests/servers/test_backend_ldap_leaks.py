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
from nxauth.testing import RecordingSink
from tests.support.keys import PEER, ListKeySource, TransportKey
from tests.support.ldap_echo import echo_server
from tests.support.leaks import Planted, assert_no_secret, captured_logs, drain, exception_texts, secrets, syslog_socket

pytest.importorskip("ldap3")

MODES = ["invalid", "success", "unwilling", "constraint", "referral", "other"]


def _login(tmp_path: Path, port: int, password: str) -> tuple[list[str], RecordingSink]:
    key = TransportKey()
    sink = RecordingSink()
    texts: list[str] = []
    jsonl = tmp_path / "audit.jsonl"
    with syslog_socket(tmp_path / "log.sock") as sock, captured_logs() as logs:
        with nxauth.Authenticator(
            {
                "state_dir": str(tmp_path / "state"),
                "transport": {"key_sources": ["keys"]},
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
                "throttle": {"enabled": False},
                "audit": {"syslog": True, "syslog_address": str(tmp_path / "log.sock"), "jsonl": str(jsonl)},
            },
            backends={"keys": ListKeySource(key.line)},
            plugins=[sink],
            entry_points=False,
        ) as auth:
            session = auth.open_session(peer=PEER)
            session.check_transport_key("nx", key.line)
            try:
                identity = session.login("alice", password)
                texts.append(f"{identity.username} {identity.backend}")
            except nxauth.AuthenticationFailed as exc:
                texts.extend(exception_texts(exc))
            texts.append(repr(session))
        texts.extend(logs.texts)
        texts.extend(drain(sock))
    texts.append(jsonl.read_text(encoding="utf-8") if jsonl.exists() else "")
    texts.extend(repr(event) for event in sink.events)
    return texts, sink


@pytest.mark.parametrize("mode", MODES)
def test_an_echoing_directory_leaks_the_password_nowhere(tmp_path: Path, mode: str) -> None:
    secret = Planted("5e5e5e5e5e5e5e5e \"q\" 'x' \\ ünï 7a7a7a7a7a7a7a7a" * 4, ("5e5e5e5e5e5e5e5e", "7a7a7a7a7a7a7a7a"))
    with echo_server(mode) as server:
        texts, sink = _login(tmp_path, server.port, secret.value)
    assert server.passwords and secret.value.encode() in server.passwords  # it got the password, and echoed it
    assert sink.events[-1].stage == 2
    assert_no_secret(secret, texts)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=secrets(), mode=st.sampled_from(MODES))
def test_no_generated_secret_echoed_by_a_directory_reaches_a_sink(
    tmp_path_factory: Any, secret: Planted, mode: str
) -> None:
    with echo_server(mode) as server:
        texts, _ = _login(tmp_path_factory.mktemp("echo"), server.port, secret.value)
    assert_no_secret(secret, texts)
