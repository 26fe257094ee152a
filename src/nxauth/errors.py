"""The exceptions nxauth raises at its public edge.

Inside nxauth a denial is a value (:class:`nxauth.Verdict`); only the public
entry points raise.  Every exception here derives from :class:`NxauthError`,
so a host program can catch everything nxauth raises in one clause.  No
message ever contains a password.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from nxauth.codes import Reason

__all__ = [
    "AuthenticationFailed",
    "BackendError",
    "ConfigError",
    "KeyFormatError",
    "NotAuthenticated",
    "NxauthError",
    "PluginError",
    "StoreError",
    "UsageError",
]


class NxauthError(Exception):
    """Base class of every exception nxauth raises."""

    __module__ = "nxauth"


@final
class ConfigError(NxauthError, ValueError):
    """The configuration is invalid.

    ``source`` is the file (or ``"<mapping>"``) and ``key`` the dotted key
    (``auth[1].control``) that is wrong; both appear in the message.
    """

    __module__ = "nxauth"

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None) -> None:
        self.source = source
        self.key = key
        self.detail = message
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


@final
class KeyFormatError(NxauthError, ValueError):
    """An SSH key, certificate, signature or authorized_keys line is malformed.

    ``lineno`` is the 1-based line number when the text came from a file.
    """

    __module__ = "nxauth"

    def __init__(self, message: str, *, lineno: int | None = None) -> None:
        self.lineno = lineno
        self.detail = message
        super().__init__(f"line {lineno}: {message}" if lineno is not None else message)


@final
class PluginError(NxauthError):
    """A plugin failed to import, to register, or to validate.

    ``plugin`` names the plugin (entry point or import path).
    """

    __module__ = "nxauth"

    def __init__(self, message: str, *, plugin: str | None = None) -> None:
        self.plugin = plugin
        super().__init__(f"plugin {plugin!r}: {message}" if plugin else message)


class BackendError(NxauthError):
    """A backend could not do its work (server down, bad response, ...).

    Inside a stack this becomes a deny with :attr:`Reason.BACKEND_ERROR`.
    """

    __module__ = "nxauth"


@final
class StoreError(NxauthError):
    """The embedded store is unusable: corrupt, of a newer schema, unreadable.

    The message names the file.  Nothing is overwritten when this is raised.
    """

    __module__ = "nxauth"


@final
class UsageError(NxauthError, TypeError):
    """A public entry point was called with an argument of the wrong type or
    an absurd value (a programming error in the host, not a denial)."""

    __module__ = "nxauth"


@final
class AuthenticationFailed(NxauthError):
    """Authentication was denied.

    ``str(exc)`` is always the generic ``"authentication failed"``: it is what
    a client may be told.  ``stage`` (1 or 2; 0 for session-level refusals)
    and ``reason`` (a :class:`nxauth.Reason`) are for the host and the audit
    trail, never for the client.
    """

    __module__ = "nxauth"

    def __init__(self, stage: int, reason: Reason) -> None:
        self.stage = stage
        self.reason = reason
        super().__init__("authentication failed")

    def __repr__(self) -> str:
        return f"AuthenticationFailed(stage={self.stage}, reason={self.reason.value!r})"


@final
class NotAuthenticated(NxauthError):
    """``session.identity`` was read before stage 2 succeeded."""

    __module__ = "nxauth"
