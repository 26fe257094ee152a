"""The owner of stage 1 (nxauth.core.stage1): its result, its one event, the
audit.required rule, the rules of what a caller enforces itself, and the
session's probe.  tests/test_stage1_parity.py runs it through every entry
point."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import nxauth
from nxauth.core.authenticator import runtime_of
from nxauth.core.stage1 import Caller, Stage1, TransportDecision, transport_event
from nxauth.integrations.openssh import authorized_keys_line
from nxauth.model import UNKNOWN_PEER, AuthEvent, Peer, Reason
from nxauth.testing import RecordingSink
from tests.support.keys import PEER, ListKeySource, TransportKey

Build = Callable[..., nxauth.Authenticator]


def sk_line() -> str:
    def s(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    raw = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    blob = s(b"sk-ssh-ed25519@openssh.com") + s(raw) + s(b"ssh:")
    return f"sk-ssh-ed25519@openssh.com {base64.b64encode(blob).decode()}"


class Trail:
    """An ``emit`` callable that records, and fails when told to."""

    def __init__(self, result: bool | Exception = True) -> None:
        self.events: list[AuthEvent] = []
        self.result = result

    def __call__(self, event: AuthEvent) -> bool:
        self.events.append(event)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def stage1(*lines: str, required: bool = False, emit: Trail | None = None) -> tuple[Stage1, Trail]:
    config = nxauth.parse_config({"transport": {"key_sources": ["keys"]}, "audit": {"required": required}})
    trail = emit or Trail()
    return Stage1(config, {"keys": ListKeySource(*lines)}, trail, clock=lambda: 1000.0), trail


def test_a_grant_and_its_one_event(transport_key: TransportKey) -> None:
    owner, trail = stage1(f'restrict,command="nxauth login" {transport_key.line}')
    peer = Peer("198.51.100.7", 52100)
    decision = owner.check("nx", transport_key.line, session_id="s1", peer=peer)
    assert decision.allowed and decision.reason is Reason.OK and decision.backend == "keys"
    grant = decision.grant
    assert grant is not None and grant.forced_command == "nxauth login" and grant.granted_at == 1000.0
    assert decision.line == f'restrict,command="nxauth login" {transport_key.line}'
    assert trail.events == [
        AuthEvent(1, "accepted", Reason.OK, "publickey", "nx", peer, "s1", "keys", grant.fingerprint, time=1000.0)
    ]
    assert trail.events == [transport_event(decision, session_id="s1", time=1000.0)]


def test_decide_audits_nothing_and_record_audits_once(transport_key: TransportKey) -> None:
    owner, trail = stage1(transport_key.line)
    decision = owner.decide("nx", transport_key.line)
    assert decision.allowed and trail.events == []
    assert owner.record(decision, session_id="s") is decision
    assert [e.outcome for e in trail.events] == ["accepted"]


@pytest.mark.parametrize(
    ("account", "key", "reason", "invalid_user"),
    [
        ("root", "own", Reason.WRONG_ACCOUNT, True),
        ("nx", "other", Reason.UNKNOWN_KEY, False),
        ("nx", "ssh-ed25519 AAAA", Reason.KEY_FORMAT, False),
    ],
    ids=["wrong-account", "unknown-key", "key-format"],
)
def test_refusals_carry_their_reason_and_no_grant(
    transport_key: TransportKey, account: str, key: str, reason: Reason, invalid_user: bool
) -> None:
    owner, trail = stage1(transport_key.line)
    presented = {"own": transport_key.line, "other": TransportKey().line}.get(key, key)
    decision = owner.check(account, presented, session_id="s")
    assert (decision.grant, decision.entry, decision.line) == (None, None, None)
    assert (decision.reason, decision.invalid_user) == (reason, invalid_user)
    [event] = trail.events
    assert (event.outcome, event.reason, event.invalid_user) == ("failed", reason, invalid_user)
    assert event.fingerprint == (None if reason is Reason.KEY_FORMAT else decision.fingerprint)


def test_the_entry_points_label_is_nxauths_word_in_the_detail(transport_key: TransportKey) -> None:
    owner, trail = stage1(transport_key.line)
    owner.check("nx", transport_key.line, session_id="s", caller=Caller.SSHD)
    owner.check("nx", TransportKey().line, session_id="s", caller=Caller.SSHD)
    owner.check("nx", TransportKey().line, session_id="s", caller=Caller.SESSION)
    details = [e.detail for e in trail.events]
    assert details[0] == "authorized-keys"
    assert details[1].startswith("authorized-keys: ED25519 SHA256:")
    assert details[2].startswith("ED25519 SHA256:")


@pytest.mark.parametrize("failure", [False, OSError("disk full")], ids=["sink-failed", "emit-raised"])
def test_audit_required_refuses_a_grant_nobody_recorded(transport_key: TransportKey, failure: bool | Exception) -> None:
    owner, trail = stage1(transport_key.line, required=True, emit=Trail(failure))
    decision = owner.check("nx", transport_key.line, session_id="s")
    assert decision.grant is None and decision.reason is Reason.AUDIT_FAILED and decision.line is None
    assert [(e.outcome, e.reason, e.backend) for e in trail.events] == [
        ("accepted", Reason.OK, "keys"),
        ("failed", Reason.AUDIT_FAILED, "keys"),
    ]
    relaxed, _ = stage1(transport_key.line, emit=Trail(failure))
    assert relaxed.check("nx", transport_key.line, session_id="s").allowed  # a failing sink alone does not deny


def test_audit_required_is_the_same_rule_at_every_entry_point(make_auth: Build, transport_key: TransportKey) -> None:
    """The session and sshd's entry point refuse alike, with the same events."""

    class Broken:
        @nxauth.hookimpl
        def nxauth_auth_event(self, event: AuthEvent) -> None:
            raise OSError("disk full")

    sink = RecordingSink()
    auth = make_auth({"audit": {"required": True}}, plugins=(Broken(), sink))
    session = auth.open_session(PEER)
    with pytest.raises(nxauth.AuthenticationFailed) as failed:
        session.check_transport_key("nx", transport_key.line)
    assert failed.value.reason is Reason.AUDIT_FAILED and session.transport is None and session.attempts == 1
    in_session = [dataclasses.replace(e, session_id="", time=0.0) for e in sink.events]
    sink.events.clear()
    peer = Peer(*PEER)
    assert (
        authorized_keys_line(auth.config, auth.backends, runtime_of(auth).emit, "nx", transport_key.line, peer=peer)
        is None
    )
    for_sshd = [dataclasses.replace(e, session_id="", time=0.0) for e in sink.events]
    assert [e.reason for e in in_session] == [Reason.OK, Reason.AUDIT_FAILED]
    assert for_sshd == [dataclasses.replace(e, detail="authorized-keys") for e in in_session]


def test_a_failing_source_contributes_nothing(transport_key: TransportKey) -> None:
    class Broken:
        def authorized_keys(self, account: str) -> list[object]:
            raise OSError("nfs gone")

    config = nxauth.parse_config({"transport": {"key_sources": ["broken", "keys"]}})
    trail = Trail()
    sources = {"broken": Broken(), "keys": ListKeySource(transport_key.line)}
    assert Stage1(config, sources, trail).check("nx", transport_key.line, session_id="s").backend == "keys"
    alone = Stage1(config, {"broken": Broken(), "keys": ListKeySource()}, trail)
    decision = alone.check("nx", transport_key.line, session_id="s")
    assert (decision.reason, decision.backend) == (Reason.BACKEND_ERROR, "broken")


def test_without_a_peer_from_fails_unless_the_caller_defers_it(transport_key: TransportKey) -> None:
    owner, _ = stage1(f'from="198.51.100.0/24" {transport_key.line}')
    assert owner.decide("nx", transport_key.line, peer=Peer("198.51.100.7", 1)).allowed
    unknown = owner.decide("nx", transport_key.line, peer=UNKNOWN_PEER)
    assert unknown.reason is Reason.SOURCE_REFUSED and "unknown" in unknown.detail
    assert owner.decide("nx", transport_key.line, peer=UNKNOWN_PEER, caller=Caller.SSHD).allowed  # sshd enforces from=
    # a known peer is checked whoever asks
    assert owner.decide("nx", transport_key.line, peer=Peer("203.0.113.1", 1), caller=Caller.SSHD).reason is (
        Reason.SOURCE_REFUSED
    )


def test_verify_required_without_the_flags_needs_a_caller_that_enforces_it() -> None:
    line = sk_line()
    owner, _ = stage1(f"verify-required {line}")
    granted = owner.decide("nx", line)  # the host's SSH layer enforces the grant's options
    assert granted.grant is not None and granted.grant.options["verify-required"] is True
    blind = owner.decide("nx", line, caller=Caller.SESSION_WITHOUT_FLAGS)
    assert (blind.reason, blind.backend) == (Reason.KEY_TYPE_REFUSED, "keys")
    assert "verify-required" in blind.detail
    # flags shown by the proof (SSHSIG) are judged, whoever asks
    assert owner.decide("nx", line, caller=Caller.SESSION_WITHOUT_FLAGS, signature_flags=0x05).allowed
    assert owner.decide("nx", line, signature_flags=0x01).reason is Reason.BAD_SIGNATURE
    # the rule refuses the entry, not the key: another entry for it may allow it
    both, _ = stage1(f"verify-required {line}", f'command="no-pin" {line}')
    other = both.decide("nx", line, caller=Caller.SESSION_WITHOUT_FLAGS)
    assert other.grant is not None and other.grant.forced_command == "no-pin"


def test_the_result_type_is_the_only_one(transport_key: TransportKey) -> None:
    owner, _ = stage1(transport_key.line)
    assert type(owner.decide("nx", transport_key.line)) is TransportDecision
    assert type(owner.decide("root", transport_key.line)) is TransportDecision


# ------------------------------------------------------------ the session over the owner


def test_a_probe_audits_and_counts_refusals_but_takes_no_grant(
    make_auth: Build, transport_key: TransportKey, sink: RecordingSink
) -> None:
    auth = make_auth()
    session = auth.open_session(PEER)
    grant = session.check_transport_key("nx", transport_key.line, probe=True)
    assert grant.account == "nx"
    assert session.state is nxauth.SessionState.NEW and session.transport is None and sink.events == []
    with pytest.raises(nxauth.AuthenticationFailed):
        session.check_transport_key("nx", TransportKey().line, probe=True)
    assert session.attempts == 1 and [e.reason for e in sink.events] == [Reason.UNKNOWN_KEY]
    taken = session.check_transport_key("nx", transport_key.line)
    assert session.transport is taken and [e.outcome for e in sink.events] == ["failed", "accepted"]


def test_a_session_without_a_peer_refuses_a_key_with_from(make_auth: Build, transport_key: TransportKey) -> None:
    auth = make_auth(backends={"keys": ListKeySource(f'from="*" {transport_key.line}')})
    with pytest.raises(nxauth.AuthenticationFailed) as failed:
        auth.open_session(None).check_transport_key("nx", transport_key.line)
    assert failed.value.reason is Reason.SOURCE_REFUSED
    assert auth.open_session(PEER).check_transport_key("nx", transport_key.line).account == "nx"


def test_a_session_that_cannot_verify_the_user_refuses_verify_required(make_auth: Build) -> None:
    line = sk_line()
    auth = make_auth(
        {"transport": {"key_sources": ["keys"], "allowed_key_types": ["sk-ssh-ed25519@openssh.com"]}},
        backends={"keys": ListKeySource(f"verify-required {line}")},
    )
    assert auth.open_session(PEER).check_transport_key("nx", line).options["verify-required"] is True
    session = auth.open_session(PEER)
    with pytest.raises(nxauth.AuthenticationFailed) as failed:
        session.check_transport_key("nx", line, can_verify_user=False)
    assert failed.value.reason is Reason.KEY_TYPE_REFUSED and session.attempts == 1
