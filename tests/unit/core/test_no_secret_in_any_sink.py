"""Issue 17, class 2: a secret never reaches a sink, in any form.

A backend that tries every way of passing the password (or a conversation
answer) on: in its verdict's detail (raw, repr, JSON, escaped, truncated,
wrapped in a "server said" message), in ``Attempt.info``, in an exception's
text, in the name it reports, in what it returns instead of a verdict.  With
generated secrets (quotes, backslashes, Unicode, longer than every cut), no
marker of the secret appears in logger records, syslog datagrams, JSON
lines, pluggy's trace, the events, or the exception the host gets.  On the
code before the fix, the escaped, truncated and echoed forms, the
conversation answers and the messages all got through.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nxauth
from nxauth import Attempt, BackendError, Reason, Secret, Verdict
from nxauth.core.authenticator import runtime_of
from nxauth.testing import RecordingSink
from nxauth.usernames import escape_for_log
from tests.support.keys import PEER, ListKeySource, TransportKey
from tests.support.leaks import (
    Planted,
    assert_no_secret,
    captured_logs,
    drain,
    exception_texts,
    secrets,
    syslog_socket,
)


def _forms(value: str) -> list[str]:
    return [
        value,
        repr(value),
        json.dumps(value),
        escape_for_log(value, 300, quoted=True),
        value[:40],
        value[-40:],
        f"server said: invalid credentials for {value!r} (data 52e)",
    ]


#: channel name -> what the backend does with the text it got
CHANNELS: dict[str, Callable[[Attempt, str], Any]] = {
    **{f"deny-detail-{i}": (lambda a, s, i=i: Verdict.deny(Reason.BAD_PASSWORD, _forms(s)[i])) for i in range(7)},
    "abstain-detail": lambda a, s: Verdict.abstain(s),
    "allow-detail": lambda a, s: Verdict.allow(detail=s),
    "info": lambda a, s: (a.info(s), a.info(repr(s)), Verdict.deny(Reason.BAD_PASSWORD))[-1],
    "raise-value-error": lambda a, s: (_ for _ in ()).throw(ValueError(f"bad credentials {s!r}")),
    "raise-backend-error": lambda a, s: (_ for _ in ()).throw(BackendError(s)),
    "reported-name": lambda a, s: Verdict.allow(username=s),
    "not-a-verdict": lambda a, s: {"password": s},
}


class Leaky:
    """Tries to pass the password, or the answer to a question, on."""

    audit_details = frozenset({"declared-word"})

    def __init__(self) -> None:
        self.channel = "deny-detail-0"
        self.ask = False

    def authenticate(self, attempt: Attempt) -> Any:
        text = attempt.password.reveal()
        if self.ask:
            text = attempt.ask("One-time code: ", False).reveal()
        return CHANNELS[self.channel](attempt, text)

    def check_account(self, identity: nxauth.Identity) -> Verdict:
        return Verdict.allow()


@pytest.fixture
def leaky_auth(tmp_path: Path, transport_key: TransportKey) -> Iterator[tuple[nxauth.Authenticator, Leaky, Any]]:
    backend = Leaky()
    sink = RecordingSink()
    jsonl = tmp_path / "audit.jsonl"
    with syslog_socket(tmp_path / "log.sock") as sock:
        auth = nxauth.Authenticator(
            {
                "state_dir": str(tmp_path / "state"),
                "transport": {"key_sources": ["keys"]},
                "auth": [{"use": "leaky"}],
                "account": [{"use": "leaky"}],
                "throttle": {"enabled": False},
                "audit": {
                    "log": True,
                    "syslog": True,
                    "syslog_address": str(tmp_path / "log.sock"),
                    "jsonl": str(jsonl),
                },
            },
            backends={"leaky": backend, "keys": ListKeySource(transport_key.line)},
            plugins=[sink],
            entry_points=False,
        )
        pm = runtime_of(auth)._pm
        trace: list[str] = []
        pm.trace.root.setwriter(trace.append)
        undo = pm.enable_tracing()
        try:
            yield auth, backend, (sink, sock, jsonl, trace, transport_key.line)
        finally:
            undo()
            auth.close()


def _login_everything(
    auth: nxauth.Authenticator, backend: Leaky, sinks: Any, secret: Planted, channel: str, ask: bool
) -> list[str]:
    sink, sock, jsonl, trace, key_line = sinks
    backend.channel, backend.ask = channel, ask
    sink.events.clear()
    trace.clear()
    jsonl.write_text("")
    texts: list[str] = []
    with captured_logs() as logs:
        session = auth.open_session(peer=PEER)
        session.check_transport_key("nx", key_line)
        password = "pw-" + secret.value if ask else secret.value
        answer = secret.value if ask else "unused"
        try:
            identity = session.login("alice", password, conversation=lambda prompt, echo: answer)
            texts.append(repr(identity))
        except nxauth.AuthenticationFailed as exc:
            texts.extend(exception_texts(exc))
        except nxauth.UsageError as exc:  # a password nxauth refuses as input (none here: no NUL)
            texts.extend(exception_texts(exc))
        texts.append(repr(session))
        session.close()
    texts.extend(logs.texts)
    texts.extend(drain(sock))
    texts.append(jsonl.read_text(encoding="utf-8"))
    texts.extend(trace)
    texts.extend(repr(event) for event in sink.events)
    texts.extend(str(event.detail) for event in sink.events)
    assert sink.events, "the login was audited"
    if ask:  # the password itself is just as secret as the answer
        assert_no_secret(Planted(password, ()), texts)
    return texts


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=secrets(), channel=st.sampled_from(sorted(CHANNELS)), ask=st.booleans())
def test_no_form_of_a_secret_reaches_any_sink(leaky_auth: Any, secret: Planted, channel: str, ask: bool) -> None:
    auth, backend, sinks = leaky_auth
    texts = _login_everything(auth, backend, sinks, secret, channel, ask)
    assert_no_secret(secret, texts)


@pytest.mark.parametrize("channel", sorted(CHANNELS))
def test_each_channel_is_replaced_by_a_fixed_word(leaky_auth: Any, channel: str) -> None:
    auth, backend, sinks = leaky_auth
    secret = Planted("0123456789abcdef \"quoted\" \\ 'x' ünï 0123456789abcdef" * 5, ("0123456789abcdef",))
    _login_everything(auth, backend, sinks, secret, channel, False)
    event = sinks[0].events[-1]
    assert event.detail in {
        "",
        "undeclared-detail",
        "backend-raised",
        "not-a-verdict",
        "every-backend-abstained",
        "backend-reported-another-name",
        "backend-messages=2",
    }


def test_a_declared_word_is_kept(leaky_auth: Any) -> None:
    auth, backend, sinks = leaky_auth
    CHANNELS["declared"] = lambda a, s: Verdict.deny(Reason.BAD_PASSWORD, "declared-word")
    try:
        _login_everything(
            auth, backend, sinks, Planted("0123456789abcdef" * 2, ("0123456789abcdef",)), "declared", False
        )
    finally:
        del CHANNELS["declared"]
    assert sinks[0].events[-1].detail == "declared-word"


@pytest.mark.parametrize("declared", [["Not A Word"], "a-string-not-a-set", [""], ["x" * 65], [b"bytes"]])
def test_audit_details_that_are_not_words_refuse_the_configuration(
    tmp_path: Path, declared: object, transport_key: TransportKey
) -> None:
    class Bad:
        audit_details = declared

        def authenticate(self, attempt: Attempt) -> Verdict:
            return Verdict.deny(Reason.BAD_PASSWORD)

    with pytest.raises(nxauth.PluginError, match="audit_details") as info:
        nxauth.Authenticator(
            {"state_dir": str(tmp_path), "transport": {"key_sources": []}, "auth": [{"use": "bad"}], "account": []},
            backends={"bad": Bad()},
            entry_points=False,
        )
    assert "Not A Word" not in str(info.value)  # the entries themselves are not echoed


def test_secret_repr_and_verdict_repr_hold_no_detail() -> None:
    verdict = Verdict.deny(Reason.BAD_PASSWORD, "hunter2-the-password")
    assert "hunter2" not in repr(verdict)
    assert "hunter2" not in repr(Secret("hunter2"))
