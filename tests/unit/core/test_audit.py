"""Audit sinks: sshd-style lines, syslog with authpriv on a real socket, JSON Lines."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from nxauth import AuthEvent, Peer, Reason
from nxauth.core.audit import JsonLinesSink, SyslogSink, format_event

PEER = Peer("198.51.100.7", 52100)


def event(**kw: object) -> AuthEvent:
    base: dict[str, object] = {
        "stage": 2,
        "outcome": "failed",
        "reason": Reason.BAD_PASSWORD,
        "method": "password",
        "username": "alice",
        "peer": PEER,
        "session_id": "abcd",
    }
    base.update(kw)
    return AuthEvent(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "line"),
    [
        (
            {"outcome": "accepted", "reason": Reason.OK, "backend": "passwords"},
            "Accepted password for alice from 198.51.100.7 port 52100 via passwords [session=abcd]",
        ),
        (
            {"username": "bob", "invalid_user": True, "reason": Reason.UNKNOWN_USER, "backend": "passwords"},
            "Failed password for invalid user bob from 198.51.100.7 port 52100 "
            "[reason=unknown-user backend=passwords session=abcd]",
        ),
        (
            {"outcome": "refused", "reason": Reason.LOCKED_OUT, "detail": "user:alice locked"},
            'Refused password for alice from 198.51.100.7 port 52100 [reason=locked-out session=abcd detail="user:alice locked"]',
        ),
        (
            {
                "stage": 1,
                "outcome": "accepted",
                "reason": Reason.OK,
                "method": "publickey",
                "username": "nx",
                "fingerprint": "SHA256:abc",
                "backend": "keystore",
            },
            "Accepted publickey for nx from 198.51.100.7 port 52100: SHA256:abc via keystore [session=abcd]",
        ),
        (
            {"username": "evil\nAccepted password for root from 1.2.3.4 " + "x" * 200},
            "Failed password for evil\\x0aAccepted\\x20password\\x20for\\x20root\\x20from\\x201.2.3.4\\x20"
            + "x" * 55
            + "... from 198.51.100.7 port 52100 [reason=bad-password session=abcd]",
        ),
    ],
)
def test_format(kw: dict[str, object], line: str) -> None:
    assert format_event(event(**kw)) == line


def test_syslog_authpriv_on_a_real_socket(tmp_path: Path) -> None:
    address = str(tmp_path / "log.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)
    server.settimeout(5)
    sink = SyslogSink(address)
    try:
        sink.nxauth_auth_event(event(outcome="accepted", reason=Reason.OK, backend="pam"))
        sink.nxauth_auth_event(event())
        accepted = server.recv(4096).decode()
        failed = server.recv(4096).decode()
    finally:
        sink.close()
        server.close()
    # facility authpriv (10) * 8 + severity: info 6 -> 86, warning 4 -> 84
    assert accepted.startswith("<86>nxauth[") and "Accepted password for alice" in accepted
    assert failed.startswith("<84>nxauth[") and "reason=bad-password" in failed


def test_syslog_failure_raises(tmp_path: Path) -> None:
    sink = SyslogSink(str(tmp_path / "missing.sock"))
    with pytest.raises(OSError):
        sink.nxauth_auth_event(event())


def test_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "events.jsonl"
    sink = JsonLinesSink(path)
    sink.nxauth_auth_event(event(username="x" * 300, detail="d"))
    sink.nxauth_auth_event(event(outcome="accepted", reason=Reason.OK))
    sink.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["outcome"] for r in records] == ["failed", "accepted"]
    assert len(records[0]["user"]) == 100
    assert records[0]["reason"] == "bad-password" and records[0]["host"] == "198.51.100.7"
    assert (path.stat().st_mode & 0o777) == 0o600
