"""The closed vocabularies of decisions and audit events (ground floor: no
nxauth import).  Their values are what the audit trail and the JSON lines
carry; they are stable."""

from __future__ import annotations

import enum

__all__ = ["Method", "Outcome", "Reason"]


class Reason(enum.Enum):
    """Why a decision was taken: for the audit trail, never for the client."""

    __module__ = "nxauth"

    OK = "ok"
    # session level
    STAGE_ORDER = "stage-order"
    ALREADY_AUTHENTICATED = "already-authenticated"
    TOO_MANY_ATTEMPTS = "too-many-attempts"
    SESSION_CLOSED = "session-closed"
    PROTOCOL_ERROR = "protocol-error"
    LOGIN_TIMEOUT = "login-timeout"
    CLIENT_GONE = "client-gone"
    CANCELLED = "cancelled"
    # stage 1
    WRONG_ACCOUNT = "wrong-account"
    UNKNOWN_KEY = "unknown-key"
    KEY_FORMAT = "key-format"
    KEY_TYPE_REFUSED = "key-type-refused"
    KEY_TOO_WEAK = "key-too-weak"
    KEY_EXPIRED = "key-expired"
    SOURCE_REFUSED = "source-refused"
    CERTIFICATE_INVALID = "certificate-invalid"
    BAD_SIGNATURE = "bad-signature"
    CHALLENGE_INVALID = "challenge-invalid"
    # stage 2
    INVALID_USERNAME = "invalid-username"
    EMPTY_PASSWORD = "empty-password"
    INVALID_PASSWORD = "invalid-password"
    BAD_PASSWORD = "bad-password"
    UNKNOWN_USER = "unknown-user"
    DISABLED = "disabled"
    NOT_LISTED = "not-listed"
    NOT_IN_GROUP = "not-in-group"
    ACCOUNT_EXPIRED = "account-expired"
    PASSWORD_EXPIRED = "password-expired"
    ACCOUNT_LOCKED = "account-locked"
    RESTRICTED = "restricted"
    NAME_MISMATCH = "name-mismatch"
    LOCKED_OUT = "locked-out"
    THROTTLE_UNAVAILABLE = "throttle-unavailable"
    CONVERSATION_UNAVAILABLE = "conversation-unavailable"
    CONVERSATION_FAILED = "conversation-failed"
    OVERLOADED = "overloaded"
    # any stage
    BACKEND_ERROR = "backend-error"
    TIMEOUT = "timeout"
    NO_DECISION = "no-decision"
    AUDIT_FAILED = "audit-failed"
    DENIED = "denied"


class Outcome(enum.StrEnum):
    """What an audit event records (the values are the audit trail's words)."""

    __module__ = "nxauth"

    ACCEPTED = "accepted"
    """The stage succeeded."""
    FAILED = "failed"
    """A decision said no (a key source, a backend, the key policy)."""
    REFUSED = "refused"
    """Refused before any backend was asked: lockout, stage order, a closed
    session, bad input, an ended connection."""


class Method(enum.StrEnum):
    """How the client tried (the values are the audit trail's words)."""

    __module__ = "nxauth"

    PUBLICKEY = "publickey"
    """Stage 1: a key an SSH layer proved."""
    SSHSIG = "sshsig"
    """Stage 1: an SSHSIG signature over a challenge (no SSH layer)."""
    PASSWORD = "password"
    """Stage 2: a username and a password (and a backend's further questions)."""
    SESSION = "session"
    """About the session itself, not an attempt: closed by the integration (client gone, timeout, protocol error)."""


class AdminAction(enum.StrEnum):
    """What an administrator did (the values are the audit trail's words)."""

    __module__ = "nxauth"

    USER_ADD = "user-add"
    """``nxauth useradd``."""
    USER_REMOVE = "user-remove"
    """``nxauth userdel``."""
    PASSWORD_SET = "password-set"
    """``nxauth passwd`` (with ``--node``: the user's own password on that node)."""
    PASSWORD_REMOVE = "password-remove"
    """``nxauth passwd --no-password``."""
    USER_ENABLE = "user-enable"
    """``nxauth userenable``."""
    USER_DISABLE = "user-disable"
    """``nxauth userdisable``."""
    NODE_ADD = "node-add"
    """``nxauth node add``."""
    NODE_REMOVE = "node-remove"
    """``nxauth node remove`` (its grants go with it)."""
    GRANT = "grant"
    """``nxauth grant``: one event per node newly granted."""
    REVOKE = "revoke"
    """``nxauth revoke``: one event per node taken."""
    KEY_ADD = "key-add"
    """``nxauth keys add`` or ``nxauth keygen``: one event per key (its fingerprint in ``target``)."""
    KEY_REMOVE = "key-remove"
    """``nxauth keys remove`` (the selector in ``target``)."""
    UNLOCK = "unlock"
    """``nxauth unlock`` (the username or address in ``target``)."""
    IMPORT = "import"
    """``nxauth import`` (how many users in ``target``)."""
