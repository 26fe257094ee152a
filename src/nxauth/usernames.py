"""Username validation and normalization to one canonical name.

The canonical name is used everywhere after stage 2 begins: stacks, the
allowlist, the throttle, the logs.  It is the NFC form, case-folded unless the
configuration says ``usernames.case = "preserve"``; folding also takes the
dotted capital I (``İ``) to ``i``, as slapd does.

Directories match names more loosely than that (LDAP's ``caseIgnoreMatch``
folds width and compatibility forms and collapses inner spaces; Active
Directory ignores width), so a name that only a compatibility mapping or a
space collapse would make equal to another is refused rather than mapped:
its NFKC form must be itself, and it has no run of more than one space.  One
account then has one name, which the throttle and the lists key on.
"""

from __future__ import annotations

import unicodedata
from typing import Final, final

from nxauth.errors import NxauthError

__all__ = ["InvalidUsername", "escape_for_log", "normalize_username"]

_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
LOG_LIMIT: Final = 100


@final
class InvalidUsername(NxauthError, ValueError):
    """The username cannot be used; the message says why (no secret in it),
    :attr:`word` says it as an audit detail word."""

    __module__ = "nxauth"

    def __init__(self, message: str, word: str = "invalid-username") -> None:
        super().__init__(message)
        #: why, as a detail word for the audit trail (``username-too-long``...)
        self.word = word


def normalize_username(raw: object, *, case: str = "fold", max_length: int = 256) -> str:
    """Return the canonical form of ``raw`` or raise :class:`InvalidUsername`.

    Refused: non-strings, empty names, NUL and other control or format
    characters, unassigned code points, leading or trailing white space,
    names longer than ``max_length`` characters (after normalization),
    compatibility forms (a name whose NFKC form is not itself: fullwidth
    letters, ligatures, the Kelvin sign's kin, no-break and other spaces) and
    runs of more than one space: look-alikes that a directory would match to
    another user's name.
    """
    if not isinstance(raw, str):
        raise InvalidUsername(f"a username is a str, not {type(raw).__name__}", "username-not-a-str")
    if not raw:
        raise InvalidUsername("empty username", "username-empty")
    if len(raw) > max_length * 4:
        raise InvalidUsername(f"username longer than {max_length} characters", "username-too-long")
    name = unicodedata.normalize("NFC", raw)
    if case == "fold":
        # U+0130 (dotted capital I) casefolds to i + U+0307, which looks like i
        # and which directories fold to i: fold it to i, as Turkic case folding does
        name = unicodedata.normalize("NFC", name.casefold().replace("i\u0307", "i"))
    if len(name) > max_length:
        raise InvalidUsername(f"username longer than {max_length} characters", "username-too-long")
    if name != name.strip() or raw != raw.strip():
        raise InvalidUsername("leading or trailing white space", "username-outer-space")
    for char in name:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise InvalidUsername(f"control or unassigned character U+{ord(char):04X}", "username-control-character")
    if unicodedata.normalize("NFKC", name) != name:
        raise InvalidUsername("compatibility form of another name (NFKC differs)", "username-compatibility-form")
    if "  " in name:
        raise InvalidUsername("more than one space in a row", "username-inner-space")
    return name


def escape_for_log(text: str, limit: int = LOG_LIMIT, *, quoted: bool = False) -> str:
    """Cut ``text`` to ``limit`` characters and escape what is not printable,
    white space, backslashes and double quotes, so a log line is one line and greppable
    (as sshd does with ``strnvis``).  ``quoted``: the text stands between
    double quotes, so plain spaces may stay."""
    cut = text[:limit]
    out = []
    for char in cut:
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char.isprintable() and ((quoted and char == " ") or not char.isspace()):
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    if len(text) > limit:
        out.append("...")
    return "".join(out)
