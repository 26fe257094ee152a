"""Stage 2's decision: the password checks, the stacks, the reported
name and the account stack, for one login of a :class:`~nxauth.Session`.

Internal.  The session owns the state, the counting and the audit trail;
this module says allow (an identity) or deny (a :class:`Denied` with its
reason and detail words)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from nxauth.codes import Outcome
from nxauth.core.stack import Step, StepOutcome, evaluate, merge_allowed
from nxauth.model import Attempt, Decision, Identity, Peer, Reason, Secret, TransportGrant

if TYPE_CHECKING:
    from nxauth.core.runtime import Runtime

__all__ = ["INVALID_USER_REASONS", "NOT_COUNTED", "Denied", "decide"]

_NONE: Final[frozenset[str]] = frozenset()

# Failures that say nothing about the user's guess: not counted by the throttle.
NOT_COUNTED: Final = frozenset(
    {
        Reason.LOCKED_OUT,
        Reason.STAGE_ORDER,
        Reason.SESSION_CLOSED,
        Reason.ALREADY_AUTHENTICATED,
        Reason.TOO_MANY_ATTEMPTS,
        Reason.BACKEND_ERROR,
        Reason.TIMEOUT,
        Reason.CONVERSATION_UNAVAILABLE,
        Reason.AUDIT_FAILED,
        Reason.LOGIN_TIMEOUT,
        Reason.OVERLOADED,
    }
)
INVALID_USER_REASONS: Final = frozenset({Reason.UNKNOWN_USER, Reason.NO_DECISION})


class Denied(Exception):
    """Internal: a stage-2 denial on its way to the public edge."""

    def __init__(
        self,
        reason: Reason,
        *,
        outcome: Outcome = Outcome.FAILED,
        backend: str | None = None,
        detail: str = "",
        judged: bool = False,
    ):
        self.reason = reason
        self.outcome = outcome
        self.backend = backend
        self.detail = detail
        #: a backend judged the guess wrong (a deny for a counted reason),
        #: whatever the stack's final reason: the throttle counts the attempt
        #: even if that reason is not counted
        self.judged = judged

    @property
    def counted(self) -> bool:
        return self.judged or self.reason not in NOT_COUNTED


def decide(
    auth: Runtime,
    username: str,
    password: Secret,
    conversation: Any,
    *,
    peer: Peer,
    session_id: str,
    grant: TransportGrant | None,
) -> tuple[Identity, str]:
    """The stacks; returns the identity and the backends' messages (PAM
    info text, ...) for the accepted event."""
    cfg = auth.config
    if password.is_empty():
        raise Denied(Reason.EMPTY_PASSWORD, outcome=Outcome.REFUSED)
    value = password.reveal()
    limit = cfg.session.max_password_bytes
    if len(value) > limit or len(value.encode("utf-8", "surrogatepass")) > limit:
        raise Denied(Reason.INVALID_PASSWORD, outcome=Outcome.REFUSED, detail="password-too-long")
    if "\x00" in value:
        raise Denied(Reason.INVALID_PASSWORD, outcome=Outcome.REFUSED, detail="password-has-nul")
    del value
    attempt = Attempt(
        username,
        password,
        peer=peer,
        session_id=session_id,
        transport=grant,
        conversation=conversation,
    )
    timeouts = auth.timeout_executor() if auth.plan.needs_timeouts else None
    details = auth.plan.details
    result = evaluate(
        [Step(n, c, partial(m, attempt), t, details.get(n, _NONE)) for n, c, m, t in auth.plan.auth], timeouts
    )
    if not result.allowed:
        raise Denied(
            result.verdict.reason,
            backend=result.decided_by,
            detail=_messages(attempt, result.verdict.detail),
            judged=_judged(result.trail),
        )
    _check_reported_names(auth, username, result.allowed_by)
    backend = result.allowed_by[0].name
    groups, attributes = merge_allowed(result.allowed_by)
    identity = Identity(username, backend, peer, session_id, grant, groups, attributes, authenticated_at=auth.clock())
    account = evaluate(
        [Step(n, c, partial(m, identity), t, details.get(n, _NONE)) for n, c, m, t in auth.plan.account], timeouts
    )
    if not account.allowed:
        raise Denied(account.verdict.reason, backend=account.decided_by, detail=account.verdict.detail)
    _check_reported_names(auth, username, account.allowed_by)
    more_groups, more_attributes = merge_allowed(account.allowed_by)
    if more_groups - groups or more_attributes.keys() - attributes.keys():
        identity = dataclasses.replace(
            identity,
            groups=groups | more_groups,
            attributes=MappingProxyType({**more_attributes, **attributes}),
        )
    return identity, _messages(attempt)


def _judged(trail: Sequence[StepOutcome]) -> bool:
    """Some backend of the stack judged the guess wrong: a deny whose reason
    counts.  (A ``required`` entry that failed uncounted — no conversation,
    a timeout — still lets the later ones run: their verdict on the password
    must be counted, or it could be tried without limit.  A right password
    whose second factor could not be asked is not a wrong guess: not counted.)"""
    return any(step.verdict.decision is Decision.DENY and step.verdict.reason not in NOT_COUNTED for step in trail)


def _check_reported_names(auth: Runtime, username: str, allowed_by: Sequence[StepOutcome]) -> None:
    """The one place where a backend's stored name meets the canonical name.

    A backend that allowed and reported the name it stores for the user
    (``Verdict.allow(username=...)``: the LDAP entry's username attribute,
    ``PAM_USER`` after the transaction, the passwd entry, the password
    database's row) must report the canonical name itself, or a name whose
    canonical form it is; else the login is denied ``name-mismatch``: a
    look-alike that the backend's own matching rules took for another user
    never gets that user's identity.  A name that cannot be made canonical
    (a compatibility form, a control character) never matches."""
    for outcome in allowed_by:
        reported = outcome.verdict.username
        if reported is None or reported == username:
            continue
        if auth.canonical_or_none(reported) != username:
            raise Denied(Reason.NAME_MISMATCH, backend=outcome.name, detail="backend-reported-another-name")


def _messages(attempt: Attempt, word: str = "") -> str:
    """The event's detail: ``word`` (the stack's vetted word, see
    :func:`nxauth.core.stack.run_step`) and how many messages the backends
    recorded (``Attempt.info``).  Their text is a backend's free text, which
    may hold what the client typed: only the count reaches the audit trail."""
    count = len(attempt.messages)
    return f"{word} backend-messages={count}".lstrip() if count else word
