"""Stage 1, decided in one place: may this key open the transport for this
account, from this peer, and what does the audit trail say about it?

Every entry point asks :class:`Stage1`: the session
(:meth:`~nxauth.Session.check_transport_key`,
:meth:`~nxauth.Session.check_transport_signature`), sshd's
``AuthorizedKeysCommand`` (``nxauth authorized-keys`` and the key daemon,
through :func:`nxauth.integrations.openssh.authorized_keys_line`) and the
embedded server's key probe (through the session).  It takes explicit
inputs: the configuration, the key sources by instance name, the ``emit``
callable of the audit trail and a clock; never the ``Authenticator``.

What an entry point enforces itself is a :class:`Caller`; the result, a
grant or a refusal, is one :class:`TransportDecision`, and
:func:`transport_event` is the one place that turns it into an
:class:`~nxauth.AuthEvent`.  Attempt counting and the session's state are
the session's.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

from nxauth.codes import Method, Outcome
from nxauth.errors import KeyFormatError
from nxauth.keys.formats import PublicKey, coerce_public_key
from nxauth.keys.policy import KeyPolicy, evaluate_key, lookup_blob
from nxauth.model import UNKNOWN_PEER, AuthEvent, Peer, Reason, TransportGrant

if TYPE_CHECKING:
    from nxauth.config import Config
    from nxauth.keys.authorized_keys import AuthorizedKey

__all__ = [
    "Caller",
    "Emit",
    "Method",
    "Stage1",
    "TransportDecision",
    "transport_event",
]

log = logging.getLogger("nxauth")

#: The audit trail: hands an event to every sink, False when one of them failed.
Emit = Callable[[AuthEvent], bool]


class Caller(enum.Enum):
    """An entry point: how the audit trail names it, and what it enforces
    itself on what stage 1 grants.  A closed set: the label in an event is
    nxauth's own word, never a backend's.

    ``label`` prefixes the detail of every event (``authorized-keys:
    no entry for ...``), empty for a session.  ``defer_source``: without a
    peer address, ``from=`` and a certificate's ``source-address`` are the
    caller's to enforce (sshd does, on the line it is given); otherwise an
    unknown peer fails them.  ``can_verify_user``: without the signature's
    flags, the caller enforces a security key's ``verify-required`` itself
    (sshd from the line, a host from the grant's options); when false
    (asyncssh does not hand the flags over), an entry or certificate that
    requires user verification refuses the key.
    """

    #: A session: a host's SSH layer, ``nxauth login``, SSHSIG.
    SESSION = ("", False, True)
    #: A session whose SSH layer cannot see a security key's signature flags (the embedded server).
    SESSION_WITHOUT_FLAGS = ("", False, False)
    #: sshd's ``AuthorizedKeysCommand``: ``nxauth authorized-keys``, in-process or through the daemon.
    SSHD = ("authorized-keys", True, True)

    label: str
    defer_source: bool
    can_verify_user: bool

    def __init__(self, label: str, defer_source: bool, can_verify_user: bool) -> None:
        self.label = label
        self.defer_source = defer_source
        self.can_verify_user = can_verify_user


@final
@dataclass(frozen=True, slots=True)
class TransportDecision:
    """Stage 1's one result: a grant (and the entry that allowed it), or a
    refusal and why; with everything its audit event says.

    ``grant`` is set exactly when ``reason`` is ``OK``.  ``backend`` is the
    key source that granted, or the one whose refusal is reported;
    ``detail`` is precise text for the audit trail only (empty for a
    grant); ``fingerprint`` is ``None`` when the key could not be read.
    """

    account: str
    method: Method
    peer: Peer
    reason: Reason
    caller: Caller = Caller.SESSION
    grant: TransportGrant | None = None
    entry: AuthorizedKey | None = None
    backend: str | None = None
    fingerprint: str | None = None
    invalid_user: bool = False
    detail: str = ""

    @property
    def allowed(self) -> bool:
        return self.grant is not None

    @property
    def line(self) -> str | None:
        """The authorized_keys line of the entry that allowed the key (what
        sshd is given, its options as stored), or ``None`` for a refusal."""
        if self.grant is None or self.entry is None:
            return None
        return self.entry.to_line()


def transport_event(decision: TransportDecision, *, session_id: str, time: float) -> AuthEvent:
    """The audit event of a stage-1 decision (the only place one is built)."""
    detail = decision.detail
    label = decision.caller.label
    if label:
        detail = f"{label}: {detail}" if detail else label
    return AuthEvent(
        stage=1,
        outcome=Outcome.ACCEPTED if decision.grant is not None else Outcome.FAILED,
        reason=decision.reason,
        method=decision.method,
        username=decision.account[:100],
        peer=decision.peer,
        session_id=session_id,
        backend=decision.backend,
        fingerprint=decision.fingerprint,
        invalid_user=decision.invalid_user,
        detail=detail,
        time=time,
    )


def _find(source: object, account: str, lookup: bytes) -> list[AuthorizedKey]:
    keys = source.authorized_keys(account)  # type: ignore[attr-defined]
    finder = getattr(keys, "find", None)
    if callable(finder):
        return list(finder(lookup))
    return [entry for entry in keys if entry.key.blob == lookup]


@final
class Stage1:
    """The owner of stage 1 for one configuration.

    ``sources`` maps instance names to key sources (objects with
    ``authorized_keys(account)``), at least those ``transport.key_sources``
    names; ``emit`` is the audit trail; ``clock`` gives the time of the
    decision and of its events.  :meth:`check` decides and audits;
    :meth:`decide` and :meth:`record` are its two halves, for a caller that
    decides before the client proved its key (the embedded server's probe).
    """

    __slots__ = ("_clock", "_config", "_emit", "_sources")

    def __init__(
        self,
        config: Config,
        sources: Mapping[str, object],
        emit: Emit,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._sources = sources
        self._emit = emit
        self._clock = clock

    def check(
        self,
        account: str,
        key: PublicKey | bytes | str,
        *,
        session_id: str,
        peer: Peer = UNKNOWN_PEER,
        caller: Caller = Caller.SESSION,
        method: Method = Method.PUBLICKEY,
        signature_flags: int | None = None,
    ) -> TransportDecision:
        """:meth:`decide`, then :meth:`record`: the decision as audited."""
        decision = self.decide(account, key, peer=peer, caller=caller, method=method, signature_flags=signature_flags)
        return self.record(decision, session_id=session_id)

    def decide(
        self,
        account: str,
        key: PublicKey | bytes | str,
        *,
        peer: Peer = UNKNOWN_PEER,
        caller: Caller = Caller.SESSION,
        method: Method = Method.PUBLICKEY,
        signature_flags: int | None = None,
    ) -> TransportDecision:
        """The decision, audited by nobody yet.

        ``key`` is the key the client proved: a :class:`PublicKey` (a plain
        key or a certificate), a wire blob or an OpenSSH public key line
        (unreadable: ``KEY_FORMAT``).  ``signature_flags`` are a security
        key's signature flags when the proof showed them (SSHSIG).  The
        configured key sources are asked in order; the first that allows the
        key grants.  A failing source contributes nothing (fail closed); the
        first policy refusal is the most precise reason to report."""

        def refused(
            reason: Reason,
            *,
            backend: str | None = None,
            fingerprint: str | None = None,
            invalid_user: bool = False,
            detail: str = "",
        ) -> TransportDecision:
            return TransportDecision(
                account, method, peer, reason, caller, None, None, backend, fingerprint, invalid_user, detail
            )

        if not isinstance(key, PublicKey):
            try:
                key = coerce_public_key(key)
            except KeyFormatError as exc:
                return refused(Reason.KEY_FORMAT, detail=exc.detail)
        fingerprint = key.fingerprint
        cfg = self._config.transport
        if account != cfg.account:
            return refused(Reason.WRONG_ACCOUNT, fingerprint=fingerprint, invalid_user=True)  # not the account
        policy = KeyPolicy(allowed_types=cfg.allowed_key_types, rsa_min_bits=cfg.rsa_min_bits)
        lookup = lookup_blob(key)
        peer_host = peer.host if peer != UNKNOWN_PEER else None
        now = self._clock()
        first_refusal: tuple[Reason, str, str] | None = None
        first_error: tuple[Reason, str, str] | None = None
        for name in cfg.key_sources:
            try:
                candidates = _find(self._sources[name], account, lookup)
                decision = evaluate_key(
                    policy,
                    key,
                    candidates,
                    account=account,
                    peer_host=peer_host,
                    now=now,
                    signature_flags=signature_flags,
                    defer_source=caller.defer_source,
                    can_verify_user=caller.can_verify_user,
                )
            except Exception as exc:  # noqa: BLE001 - a failing source contributes nothing: fail closed
                log.warning("key source %s failed: %s", name, type(exc).__name__)  # the type: no free text
                first_error = first_error or (Reason.BACKEND_ERROR, name, "key-source-raised")
                continue
            entry = decision.entry
            if decision.allowed and entry is not None:
                grant = TransportGrant(
                    account=account,
                    key_type=key.key_type,
                    fingerprint=fingerprint,
                    source=name,
                    method=method,
                    comment=entry.key.comment or key.comment,
                    forced_command=decision.forced_command,
                    restrictions=decision.restrictions,
                    options=decision.options,
                    expires=decision.expires,
                    certificate_id=decision.certificate_id,
                    granted_at=now,
                )
                return TransportDecision(
                    account, method, peer, Reason.OK, caller, grant, entry, name, fingerprint=fingerprint
                )
            if decision.reason is not Reason.UNKNOWN_KEY:
                first_refusal = first_refusal or (decision.reason, name, decision.detail)
        outcome = first_refusal or first_error
        if outcome is None:
            return refused(Reason.UNKNOWN_KEY, fingerprint=fingerprint, detail=key.describe())
        reason, backend, detail = outcome
        return refused(reason, backend=backend, fingerprint=fingerprint, detail=detail)

    def record(self, decision: TransportDecision, *, session_id: str) -> TransportDecision:
        """Audit ``decision`` and return it as it stands: with
        ``audit.required``, a grant that a sink failed to record is refused
        (``AUDIT_FAILED``, audited too)."""
        recorded = self._send(transport_event(decision, session_id=session_id, time=self._clock()))
        if decision.grant is None or recorded or not self._config.audit.required:
            return decision
        refusal = dataclasses.replace(decision, reason=Reason.AUDIT_FAILED, grant=None, entry=None)
        self._send(transport_event(refusal, session_id=session_id, time=self._clock()))
        return refusal

    def _send(self, event: AuthEvent) -> bool:
        try:
            return bool(self._emit(event))
        except Exception as exc:  # noqa: BLE001 - an audit trail that raises recorded nothing
            log.error("audit trail failed: %s", type(exc).__name__)
            return False
