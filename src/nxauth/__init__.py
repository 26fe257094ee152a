"""nxauth: two-stage authentication (an SSH transport key, then the real user)
with pluggable backends.

The public API is what this module exports; everything else is private and
may change.  See ``docs/`` for the concepts and the configuration reference.
"""

from __future__ import annotations

from .authenticator import Authenticator
from .config import Config, Control, Options, load_config, parse_config
from .errors import (
    AuthenticationFailed,
    BackendError,
    ConfigError,
    KeyFormatError,
    NotAuthenticated,
    NxauthError,
    PluginError,
    StoreError,
    UsageError,
)
from .hookspecs import hookimpl
from .model import (
    Attempt,
    AuthEvent,
    ConversationFailed,
    ConversationUnavailable,
    Decision,
    Identity,
    Peer,
    Reason,
    Secret,
    TransportGrant,
    Verdict,
)
from .plugins import BackendContext, BackendRegistry
from .session import Session, SessionState
from .usernames import InvalidUsername

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "AuthEvent",
    "AuthenticationFailed",
    "Authenticator",
    "BackendContext",
    "BackendError",
    "BackendRegistry",
    "Config",
    "ConfigError",
    "Control",
    "ConversationFailed",
    "ConversationUnavailable",
    "Decision",
    "Identity",
    "InvalidUsername",
    "KeyFormatError",
    "NotAuthenticated",
    "NxauthError",
    "Options",
    "Peer",
    "PluginError",
    "Reason",
    "Secret",
    "Session",
    "SessionState",
    "StoreError",
    "TransportGrant",
    "UsageError",
    "Verdict",
    "__version__",
    "hookimpl",
    "load_config",
    "parse_config",
]
