"""What a backend may say in the audit trail besides its :class:`~nxauth.Reason`.

A backend's free text (a server's diagnostic message, an exception's text,
a PAM module's message) never reaches an audit event: it may carry what the
backend was given, the password included, escaped, truncated or echoed back
by a server.  Instead, a backend declares the **detail words** it may use,
once, before any login (the ``audit_details`` attribute, read when the
authenticator is built), and puts one of them in ``Verdict.detail``.  A
detail that is not one of the declared words is replaced by
:data:`UNDECLARED` in the audit trail; its text is dropped, never stored.

A detail word is lowercase ASCII letters and digits in parts joined by
``-``, ``.``, ``:`` or ``=`` (``ppolicy-expired``, ``ldap:invalid-credentials``,
``pam:auth-err``), at most 64 characters.  Ground floor: no nxauth import
but :mod:`nxauth.errors`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from nxauth.errors import PluginError

__all__ = ["DETAIL_WORD", "UNDECLARED", "declared_details", "is_detail_word", "vet_detail"]

#: The grammar of one detail word.
DETAIL_WORD: Final = re.compile(r"[a-z0-9]+(?:[-.:=][a-z0-9]+)*")
_MAX: Final = 64

#: What the audit trail says when a backend's detail is not a word it declared.
UNDECLARED: Final = "undeclared-detail"


def is_detail_word(value: object) -> bool:
    """Whether ``value`` is a string in the detail-word grammar."""
    return isinstance(value, str) and len(value) <= _MAX and DETAIL_WORD.fullmatch(value) is not None


def declared_details(backend: object, *, name: str) -> frozenset[str]:
    """The detail words ``backend`` declares (its ``audit_details``
    attribute: an iterable of words), read once.  A word outside the grammar
    is a :class:`~nxauth.PluginError` naming the backend instance."""
    declared = getattr(backend, "audit_details", ())
    if isinstance(declared, str) or not isinstance(declared, Iterable):
        raise PluginError(f"backend {name!r}: audit_details must be an iterable of detail words")
    words = frozenset(declared)
    bad = sum(1 for word in words if not is_detail_word(word))
    if bad:  # the entries themselves are not shown: they are not vetted text
        raise PluginError(
            f"backend {name!r}: {bad} of its audit_details are not detail words "
            f"(lowercase letters and digits joined by - . : =, at most {_MAX} characters)"
        )
    return words


def vet_detail(detail: object, declared: frozenset[str]) -> str:
    """``detail`` when it is one of the ``declared`` words, ``""`` when it is
    empty, :data:`UNDECLARED` otherwise (the text itself is dropped)."""
    if not detail:
        return ""
    if isinstance(detail, str) and detail in declared:
        return detail
    return UNDECLARED
