"""Active Directory: what its bind errors mean, and the account state its
attributes hold.

A failed simple bind on AD returns ``invalidCredentials`` (49) with a
diagnostic message such as::

    80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 775, v4563

The ``data`` sub-code says why.  Several of them (530, 531, 532, 533, 701,
773) are only reported after the password was found right, so they go to
the audit trail and never to the client, who sees the generic failure.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Final

from nxauth.backends.ldap import wire
from nxauth.model import Reason

__all__ = [
    "AD_STATE_ATTRIBUTES",
    "SUBCODES",
    "account_state",
    "filetime_to_unix",
    "parse_subcode",
    "subcode_reason",
]

#: sub-code -> (reason, what it means)
SUBCODES: Final[dict[str, tuple[Reason, str]]] = {
    "525": (Reason.UNKNOWN_USER, "user not found"),
    "52e": (Reason.BAD_PASSWORD, "invalid credentials"),
    "530": (Reason.RESTRICTED, "not permitted to log on at this time"),
    "531": (Reason.RESTRICTED, "not permitted to log on at this workstation"),
    "532": (Reason.PASSWORD_EXPIRED, "password expired"),
    "533": (Reason.DISABLED, "account disabled"),
    "701": (Reason.ACCOUNT_EXPIRED, "account expired"),
    "773": (Reason.PASSWORD_EXPIRED, "user must reset password"),
    "775": (Reason.ACCOUNT_LOCKED, "account locked out"),
}

_DATA: Final = re.compile(r"\bdata ([0-9a-fA-F]{1,8})\b")


def parse_subcode(message: str) -> str | None:
    """The ``data`` sub-code of an AD diagnostic message, lower-case, or None."""
    match = _DATA.search(message)
    return match.group(1).lower() if match else None


def subcode_reason(message: str) -> tuple[Reason, str]:
    """The reason and audit detail for a failed AD bind with ``message``."""
    code = parse_subcode(message)
    if code is None:
        return Reason.BAD_PASSWORD, "invalid-credentials"
    known = SUBCODES.get(code)
    if known is None:  # the server's text is not kept: an unknown code may be an echo
        return Reason.BAD_PASSWORD, "ad-data-unknown"
    return known[0], f"ad-data={code}"


#: Every detail word of this module (declared by the backend, see nxauth.details).
DETAIL_WORDS: Final = frozenset(
    {
        "invalid-credentials",
        "ad-data-unknown",
        *(f"ad-data={code}" for code in SUBCODES),
        "uac-account-disabled",
        "uac-locked-out",
        "uac-password-expired",
        "account-expires-passed",
        "pwd-last-set-zero",
    }
)


# userAccountControl flags
UF_ACCOUNTDISABLE: Final = 0x0002
UF_LOCKOUT: Final = 0x0010
UF_DONT_EXPIRE_PASSWD: Final = 0x10000
UF_PASSWORD_EXPIRED: Final = 0x800000

NEVER: Final = 0x7FFFFFFFFFFFFFFF
_EPOCH_DIFF: Final = 11644473600  # seconds from 1601-01-01 to 1970-01-01

AD_STATE_ATTRIBUTES: Final = ("userAccountControl", "accountExpires", "pwdLastSet")


def filetime_to_unix(value: int) -> float:
    """AD FILETIME (100 ns since 1601) to a Unix time."""
    return value / 10_000_000 - _EPOCH_DIFF


def _integer(entry: wire.Entry, name: str) -> int | None:
    raw = entry.first(name)
    if raw is None:
        return None
    try:
        return int(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None


def account_state(entry: wire.Entry, clock: Callable[[], float] = time.time) -> tuple[Reason, str] | None:
    """Why the AD account in ``entry`` may not log in (None if it may):
    disabled (userAccountControl bit 2), locked, expired (accountExpires),
    or a password that must be changed (pwdLastSet = 0, or expired)."""
    uac = _integer(entry, "userAccountControl")
    if uac is not None:
        if uac & UF_ACCOUNTDISABLE:
            return Reason.DISABLED, "uac-account-disabled"
        if uac & UF_LOCKOUT:
            return Reason.ACCOUNT_LOCKED, "uac-locked-out"
        if uac & UF_PASSWORD_EXPIRED:
            return Reason.PASSWORD_EXPIRED, "uac-password-expired"
    expires = _integer(entry, "accountExpires")
    if expires is not None and expires not in (0, NEVER) and filetime_to_unix(expires) <= clock():
        return Reason.ACCOUNT_EXPIRED, "account-expires-passed"
    last_set = _integer(entry, "pwdLastSet")
    if last_set == 0:
        return Reason.PASSWORD_EXPIRED, "pwd-last-set-zero"
    return None
