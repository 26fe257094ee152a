"""The roles a backend may play, as :class:`typing.Protocol` types.

A backend is any object with one or more of these methods; nxauth checks
at construction that each instance has the method of every role the
configuration gives it.  Each method's docstring says what returning each
value means.  A method that raises is a deny with
:attr:`nxauth.Reason.BACKEND_ERROR` (stage 2) or contributes nothing (key
sources): never an allow.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from nxauth.model import Conversation

if TYPE_CHECKING:
    from nxauth.keys.authorized_keys import AuthorizedKey
    from nxauth.model import Attempt, Identity, Verdict

__all__ = ["AccountBackend", "AuthBackend", "Backend", "Conversation", "KeySource"]


@runtime_checkable
class KeySource(Protocol):
    """Stage 1: the transport keys of an account (``transport.key_sources``)."""

    def authorized_keys(self, account: str) -> Iterable[AuthorizedKey]:
        """Every key entry that may open the transport for ``account``, with its
        options; nothing when there is none.  The returned object may also have
        ``find(lookup: bytes) -> Iterable[AuthorizedKey]`` (the entries whose
        key, or certificate authority, has that wire blob), which nxauth then
        uses instead of scanning every entry."""
        ...


@runtime_checkable
class AuthBackend(Protocol):
    """Stage 2, the auth stack (``[[auth]]``): is this the user's secret?"""

    def authenticate(self, attempt: Attempt) -> Verdict:
        """``Verdict.allow(...)``: the password is right (groups and attributes
        may come with it); ``Verdict.deny(reason)``: it is wrong, or the user
        may not log in; ``Verdict.abstain()``: not my user.  Further questions
        go through ``attempt.conversation``."""
        ...


@runtime_checkable
class AccountBackend(Protocol):
    """Stage 2, the account stack (``[[account]]``): may this authenticated user log in?"""

    def check_account(self, identity: Identity) -> Verdict:
        """``Verdict.allow(...)``: yes (groups and attributes may be added);
        ``Verdict.deny(reason)``: no (not listed, disabled, expired ...);
        ``Verdict.abstain()``: not my user."""
        ...


#: What a backend factory returns: an object playing one or more roles.
Backend = KeySource | AuthBackend | AccountBackend
