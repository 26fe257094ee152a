"""nxauth: two-stage authentication (an SSH transport key, then the real user)
with pluggable backends.

The public API is what this module exports; everything else is private and
may change.  See ``docs/`` for the concepts and the configuration reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: Where each public name lives.  Imported on first use (PEP 562), so that a
#: program importing one part (``nxauth authorized-keys``, run by sshd on
#: every login) does not pay for all of them.
_LOCATIONS: dict[str, str] = {
    "Authenticator": "authenticator",
    "Config": "config",
    "Control": "config",
    "Options": "config",
    "load_config": "config",
    "parse_config": "config",
    "AuthenticationFailed": "errors",
    "BackendError": "errors",
    "ConfigError": "errors",
    "KeyFormatError": "errors",
    "NotAuthenticated": "errors",
    "NxauthError": "errors",
    "PluginError": "errors",
    "StoreError": "errors",
    "UsageError": "errors",
    "hookimpl": "hookspecs",
    "Attempt": "model",
    "AuthEvent": "model",
    "ConversationFailed": "model",
    "ConversationUnavailable": "model",
    "Decision": "model",
    "Identity": "model",
    "Peer": "model",
    "Reason": "model",
    "Secret": "model",
    "TransportGrant": "model",
    "Verdict": "model",
    "BackendContext": "plugins",
    "BackendRegistry": "plugins",
    "Session": "session",
    "SessionState": "session",
    "InvalidUsername": "usernames",
}


def __getattr__(name: str) -> Any:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module 'nxauth' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
