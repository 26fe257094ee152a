"""Values: Secret redaction, Verdict constructors, Peer coercion."""

from __future__ import annotations

import logging
import pickle

import pytest

from nxauth import Attempt, ConversationUnavailable, Decision, Peer, Reason, Secret, UsageError, Verdict


def test_secret_is_redacted_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert "hunter2" not in f"{secret}"
    assert "hunter2" not in f"{secret!r:>30}"
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").debug("value %s %r", secret, [secret])
    assert "hunter2" not in caplog.text
    assert secret.reveal() == "hunter2"


def test_secret_compares_and_refuses_hash_and_pickle() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    with pytest.raises(TypeError):
        hash(Secret("a"))
    with pytest.raises(TypeError):
        pickle.dumps(Secret("a"))
    with pytest.raises(UsageError):
        Secret(b"bytes")  # type: ignore[arg-type]
    assert Secret("").is_empty()


def test_verdicts() -> None:
    allow = Verdict.allow(groups=["a"], attributes={"mail": "x"})
    assert allow.decision is Decision.ALLOW and allow.groups == frozenset({"a"})
    assert Verdict.deny(Reason.BAD_PASSWORD).decision is Decision.DENY
    assert Verdict.abstain().decision is Decision.ABSTAIN
    with pytest.raises(UsageError):
        Verdict.deny(Reason.OK)
    with pytest.raises(TypeError):
        allow.attributes["mail"] = "y"  # type: ignore[index]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (("198.51.100.7", 22), Peer("198.51.100.7", 22)),
        (("::ffff:198.51.100.7", 22), Peer("198.51.100.7", 22)),
        (("2001:db8::1", 22, 0, 0), Peer("2001:db8::1", 22)),
        (("fe80::1%eth0", 22), Peer("fe80::1", 22)),
    ],
)
def test_peer_coerce(value: tuple[str, int], expected: Peer) -> None:
    assert Peer.coerce(value) == expected


@pytest.mark.parametrize("value", [("host.example", 22), ("1.2.3.4", "22"), ("1.2.3.4", 70000), "1.2.3.4", (1, 2)])
def test_peer_coerce_refuses(value: object) -> None:
    with pytest.raises(UsageError):
        Peer.coerce(value)  # type: ignore[arg-type]


def test_attempt_conversation() -> None:
    attempt = Attempt("alice", Secret("pw"), conversation=lambda prompt, echo: "123456")
    assert attempt.ask("Code: ").reveal() == "123456"
    bare = Attempt("alice", Secret("pw"))
    assert not bare.can_ask
    with pytest.raises(ConversationUnavailable):
        bare.ask("Code: ")
    assert "pw" not in repr(attempt).replace("peer", "")


def test_event_outcomes_and_methods_are_closed_vocabularies() -> None:
    import json

    from nxauth import AuthEvent, Method, Outcome, Peer, Reason

    event = AuthEvent(stage=2, outcome="failed", reason=Reason.BAD_PASSWORD, method="password", username="a",
                      peer=Peer("192.0.2.1", 1), session_id="s")  # fmt: skip
    assert event.outcome is Outcome.FAILED and event.method is Method.PASSWORD
    assert (
        json.dumps({"outcome": event.outcome, "method": event.method}) == '{"outcome": "failed", "method": "password"}'
    )
    for field, value in (("outcome", "maybe"), ("method", "telepathy")):
        kwargs = {"stage": 1, "outcome": "failed", "reason": Reason.UNKNOWN_KEY, "method": "publickey",
                  "username": "nx", "peer": Peer("192.0.2.1", 1), "session_id": "s", field: value}  # fmt: skip
        with pytest.raises(ValueError):
            AuthEvent(**kwargs)  # type: ignore[arg-type]
