"""Values that flow through nxauth: secrets, verdicts, grants, identities, events."""

from __future__ import annotations

import enum
import functools
import hmac
import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Protocol, final

from nxauth.codes import AdminAction, Method, Outcome, Reason
from nxauth.errors import NxauthError, UsageError

__all__ = [
    "Attempt",
    "AuthEvent",
    "ConversationFailed",
    "ConversationUnavailable",
    "Decision",
    "Identity",
    "Peer",
    "Reason",
    "Secret",
    "TransportGrant",
    "Verdict",
]

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


@final
class Secret:
    """A secret string (a password, a one-time code, a bind password).

    Its ``repr`` and ``str`` are redacted, so a secret that reaches a log
    line, a pluggy trace or a traceback's locals shows as ``Secret('***')``.
    Read the value with :meth:`reveal`, at the last moment, where it is
    handed to the code that checks it.  Comparison is constant-time.
    """

    __slots__ = ("_value",)
    __module__ = "nxauth"
    _value: str

    def __init__(self, value: str | Secret) -> None:
        if isinstance(value, Secret):
            value = value._value
        if not isinstance(value, str):
            raise UsageError(f"a Secret wraps a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """Return the secret value.  Never log or display what this returns."""
        return self._value

    def reveal_bytes(self, encoding: str = "utf-8") -> bytes:
        """Return the secret encoded (``surrogateescape`` never applies)."""
        return self._value.encode(encoding)

    def is_empty(self) -> bool:
        """True for the empty string (which nxauth refuses before any backend)."""
        return not self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(
            self._value.encode("utf-8", "surrogatepass"), other._value.encode("utf-8", "surrogatepass")
        )

    def __hash__(self) -> int:
        raise TypeError("Secret is unhashable")

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")


class Decision(enum.Enum):
    """What one backend said: allow, deny, or abstain ("not my user")."""

    __module__ = "nxauth"

    ALLOW = "allow"
    DENY = "deny"
    ABSTAIN = "abstain"


@final
@dataclass(frozen=True, slots=True)
class Verdict:
    """One backend's answer.  Build it with :meth:`allow`, :meth:`deny` or
    :meth:`abstain`.

    ``username`` lets an auth backend report the name it ended with (PAM may
    rewrite ``PAM_USER``); ``groups`` and ``attributes`` flow into the
    :class:`Identity`.  ``detail`` is one of the detail words the backend
    declared in its ``audit_details`` (see :mod:`nxauth.details`): only a
    declared word reaches the audit trail; any other text is replaced by
    ``undeclared-detail`` and dropped, so a server's message or an
    exception's text can never carry a secret there.  It is left out of
    ``repr``.
    """

    decision: Decision
    reason: Reason = Reason.OK
    detail: str = field(default="", repr=False)
    username: str | None = None
    groups: frozenset[str] = frozenset()
    attributes: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    __module__ = "nxauth"

    @classmethod
    def allow(
        cls,
        *,
        username: str | None = None,
        groups: frozenset[str] | set[str] | tuple[str, ...] | list[str] = frozenset(),
        attributes: Mapping[str, Any] | None = None,
        detail: str = "",
    ) -> Verdict:
        """Yes.  ``username``: the name the backend stores, when it reports one
        (it must equal nxauth's canonical form of the name typed, or the login
        is refused); ``groups`` and ``attributes`` reach the :class:`Identity`."""
        return cls(
            Decision.ALLOW,
            Reason.OK,
            detail,
            username,
            frozenset(groups),
            MappingProxyType(dict(attributes)) if attributes else _EMPTY,
        )

    @classmethod
    def deny(cls, reason: Reason, detail: str = "") -> Verdict:
        """No: ``reason`` (any :class:`Reason` but ``OK``) and ``detail`` go to the audit trail only."""
        if not isinstance(reason, Reason) or reason is Reason.OK:
            raise UsageError("Verdict.deny needs a Reason other than OK")
        return cls(Decision.DENY, reason, detail)

    @classmethod
    def abstain(cls, detail: str = "") -> Verdict:
        """Not my user: the stack goes on as if this backend were not there."""
        return cls(Decision.ABSTAIN, Reason.NO_DECISION, detail)

    @property
    def allowed(self) -> bool:
        """Whether this is an allow."""
        return self.decision is Decision.ALLOW


@final
@dataclass(frozen=True, slots=True)
class Peer:
    """The remote end of a connection: an IP address and a port."""

    host: str
    port: int

    __module__ = "nxauth"

    @classmethod
    def coerce(cls, value: Peer | tuple[str, int] | None) -> Peer:
        """Accept a ``Peer``, a ``(host, port)`` tuple (extra items, as in
        IPv6 socket addresses, are ignored) or ``None`` (unknown peer)."""
        if value is None:
            return UNKNOWN_PEER
        if isinstance(value, Peer):
            return value
        if not isinstance(value, tuple | list) or len(value) < 2:
            raise UsageError("peer must be a (host, port) tuple")
        host, port = value[0], value[1]
        if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int):
            raise UsageError("peer must be a (str host, int port) tuple")
        if not 0 <= port <= 65535:
            raise UsageError(f"peer port out of range: {port}")
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            raise UsageError("peer host must be an IP address") from None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return cls(str(address), port)

    @property
    def address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The host as an address object (``None`` for an unknown peer); parsed once."""
        return _parse_address(self.host)

    def __str__(self) -> str:
        return f"{self.host} port {self.port}"


@functools.lru_cache(maxsize=4096)
def _parse_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


UNKNOWN_PEER: Final = Peer("UNKNOWN", 0)


@final
@dataclass(frozen=True, slots=True)
class TransportGrant:
    """Proof that stage 1 succeeded: which key opened the channel, and on
    what terms.  Integrations enforce ``forced_command`` and the
    restrictions."""

    account: str
    key_type: str
    fingerprint: str
    source: str
    method: Method = Method.PUBLICKEY
    comment: str = ""
    forced_command: str | None = None
    restrictions: frozenset[str] = frozenset()
    options: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    expires: float | None = None
    certificate_id: str | None = None
    granted_at: float = field(default_factory=time.time)

    __module__ = "nxauth"


@final
@dataclass(frozen=True, slots=True)
class Identity:
    """The authenticated user: what stage 2 returns and the host acts on."""

    username: str
    backend: str
    peer: Peer
    session_id: str
    transport: TransportGrant | None
    groups: frozenset[str] = frozenset()
    attributes: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    authenticated_at: float = field(default_factory=time.time)

    __module__ = "nxauth"


@final
@dataclass(frozen=True, slots=True)
class AuthEvent:
    """One decision, as the audit trail records it.  Never holds a secret.

    ``outcome`` is an :class:`Outcome` (refused: decided before any backend
    was asked: lockout, stage order, closed session, bad input) and
    ``method`` a :class:`Method`; both are closed sets, checked on
    construction (their plain string values are accepted).  ``username`` is the name the decision is about,
    cut to 100 characters: the canonical form (``usernames`` settings
    applied) once the name could be normalized, the name as the client sent
    it otherwise (stage 1, an invalid name, a refusal before normalizing:
    closed session, stage order).  A backend may have reported
    another name for the user: that one is ``Identity.username``.
    ``invalid_user`` says the user is unknown.
    """

    stage: int
    outcome: Outcome
    reason: Reason
    method: Method
    username: str
    peer: Peer
    session_id: str
    backend: str | None = None
    fingerprint: str | None = None
    invalid_user: bool = False
    detail: str = ""
    time: float = field(default_factory=time.time)

    __module__ = "nxauth"

    def __post_init__(self) -> None:
        # closed vocabularies: a wrong word is an error, not a new kind of event
        object.__setattr__(self, "outcome", Outcome(self.outcome))
        object.__setattr__(self, "method", Method(self.method))
        if not isinstance(self.reason, Reason):
            raise UsageError("AuthEvent.reason must be a nxauth.Reason")

    @property
    def accepted(self) -> bool:
        """Whether the event records a success (``outcome`` is :attr:`Outcome.ACCEPTED`)."""
        return self.outcome is Outcome.ACCEPTED


@final
@dataclass(frozen=True, slots=True)
class AdminEvent:
    """One administrative change, as the audit trail records it.  Never holds
    a secret: a password change says whose and where, not what.

    ``actor`` is the account that ran the command (``SUDO_USER`` under sudo,
    else the real user), ``username`` the user changed, ``node`` the node
    concerned and ``target`` what else the action was about (a key's
    fingerprint, an unlocked address), each empty when the action has none."""

    action: AdminAction
    actor: str
    username: str = ""
    node: str = ""
    target: str = ""
    time: float = field(default_factory=time.time)

    __module__ = "nxauth"

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", AdminAction(self.action))


@final
class ConversationUnavailable(NxauthError):
    """A backend asked the client a question but the host gave no way to ask."""

    __module__ = "nxauth"


@final
class ConversationFailed(NxauthError):
    """The host's conversation callback raised or returned something unusable."""

    __module__ = "nxauth"


class Conversation(Protocol):
    """How a backend asks the client a further question (a one-time code, a
    new password): ``conversation(prompt, echo)``.  Raises
    :class:`ConversationUnavailable` when the client cannot be asked and
    :class:`ConversationFailed` when the answer cannot be had."""

    def __call__(self, prompt: str, echo: bool, /) -> str | Secret:
        """The client's answer to ``prompt``; ``echo`` is False for a secret."""
        ...


@final
class Attempt:
    """One stage-2 login attempt, as an auth backend sees it.

    ``username`` is already canonical; ``password`` is a :class:`Secret`
    that is never empty.  :meth:`ask` relays a further question to the
    client (a one-time code, a new password).  :meth:`info` records a
    message for the audit trail.
    """

    __slots__ = ("_conversation", "messages", "password", "peer", "service", "session_id", "transport", "username")
    __module__ = "nxauth"

    def __init__(
        self,
        username: str,
        password: Secret,
        *,
        peer: Peer = UNKNOWN_PEER,
        session_id: str = "",
        transport: TransportGrant | None = None,
        service: str | None = None,
        conversation: Conversation | None = None,
    ) -> None:
        if not isinstance(password, Secret):
            raise UsageError("Attempt.password must be a nxauth.Secret")
        self.username = username
        self.password = password
        self.peer = peer
        self.session_id = session_id
        self.transport = transport
        self.service = service
        self._conversation = conversation
        self.messages: list[str] = []

    def ask(self, prompt: str, echo: bool = False) -> Secret:
        """Ask the client one more question and return the answer.

        Raises :class:`ConversationUnavailable` when the host gave no
        conversation callback, :class:`ConversationFailed` when the callback
        raised or returned neither ``str`` nor ``Secret`` (the stack turns
        both into a deny).
        """
        if self._conversation is None:
            raise ConversationUnavailable(f"backend asked {prompt[:60]!r} but no conversation is available")
        try:
            answer = self._conversation(prompt, echo)
        except Exception as exc:  # noqa: BLE001 - the host's callback failing is a denial, not a crash
            raise ConversationFailed(f"the conversation callback raised {type(exc).__name__}") from None
        if isinstance(answer, Secret):
            return answer
        if not isinstance(answer, str):
            raise ConversationFailed("the conversation callback returned neither str nor Secret")
        return Secret(answer)

    @property
    def can_ask(self) -> bool:
        """Whether the host gave a conversation, so that :meth:`ask` can reach the client."""
        return self._conversation is not None

    def info(self, message: str) -> None:
        """Record a message (PAM info/error text).  The audit trail records
        how many there were (``backend-messages=N``), never their text: a
        backend's message may hold what the client typed."""
        self.messages.append(message)

    def __repr__(self) -> str:
        return f"Attempt(username={self.username!r}, peer={self.peer!s}, session={self.session_id!r})"
