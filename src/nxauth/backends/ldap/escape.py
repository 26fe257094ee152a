"""Every value that reaches the directory goes through this module.

* In a DN (``user_dn = "uid={username},ou=people,..."``) the value is
  escaped as an RDN value (RFC 4514): ``\\00`` for NUL, a backslash before
  ``" + , ; < > = \\``, before a leading ``#`` or space and a trailing
  space, hex for other control characters.  ldap3's ``escape_rdn`` is not
  used: it writes NUL as a backslash followed by a raw NUL.
* In a filter the value never becomes filter text: templates are parsed once
  (:func:`nxauth.backends.ldap.filter.parse_filter`) and the value is placed
  as raw octets in its assertion.  :func:`escape_filter_value` (RFC 4515)
  exists for the logs and for showing a filter to a human.
* In an Active Directory logon name (``user@domain``, ``DOMAIN\\user``) there
  is no escaping: the characters AD forbids in logon names are refused.

DNs read from the directory are compared through :func:`normalize_dn`.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AD_FORBIDDEN",
    "DnTemplate",
    "check_ad_logon_name",
    "escape_filter_value",
    "escape_rdn_value",
    "first_rdn",
    "normalize_dn",
    "parse_dn",
]

_RDN_SPECIAL: Final = frozenset('"+,;<>=\\')
#: Characters Active Directory refuses in logon names (sAMAccountName), plus
#: the separators of the two logon-name forms.
AD_FORBIDDEN: Final = frozenset('"/\\[]:;|=,+*?<>@')


def _hex(char: str) -> str:
    return "".join(f"\\{b:02x}" for b in char.encode("utf-8"))


def escape_rdn_value(value: str) -> str:
    """Escape ``value`` for use as an attribute value in a DN (RFC 4514)."""
    if not isinstance(value, str):
        raise TypeError("an RDN value is a str")
    out = []
    last = len(value) - 1
    for index, char in enumerate(value):
        code = ord(char)
        if char in _RDN_SPECIAL or (index == 0 and char in "# ") or (index == last and char == " "):
            out.append("\\" + char)
        elif code < 0x20 or code == 0x7F:
            out.append(_hex(char))
        else:
            out.append(char)
    return "".join(out)


def escape_filter_value(value: str | bytes) -> str:
    """Escape ``value`` as an RFC 4515 assertion value: ``* ( ) \\`` and NUL
    as ``\\xx`` as the RFC requires, and also every other control, white
    space and non-printable character (as the hex of its UTF-8 octets) and
    every octet that is not UTF-8, so that no parser can trim or reinterpret
    the value."""
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    out = []
    for char in raw.decode("utf-8", "surrogateescape"):
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # an octet that was not UTF-8
            out.append(f"\\{code - 0xDC00:02x}")
        elif char in "*()\\" or char.isspace() or not char.isprintable():
            out.append(_hex(char))
        else:
            out.append(char)
    return "".join(out)


class DnTemplate:
    """A DN with one ``{username}`` placeholder standing for a whole
    attribute value: ``uid={username},ou=people,dc=example,dc=org``."""

    __slots__ = ("_prefix", "_suffix", "text")

    PLACEHOLDER: Final = "{username}"

    def __init__(self, text: str) -> None:
        if text.count(self.PLACEHOLDER) != 1:
            raise ValueError("needs exactly one {username}")
        prefix, suffix = text.split(self.PLACEHOLDER)
        if "{" in prefix + suffix or "}" in prefix + suffix:
            raise ValueError("the only placeholder allowed is {username}")
        if not prefix.endswith("=") or (suffix and not suffix.startswith(",")):
            raise ValueError("{username} must be a whole attribute value, as in uid={username},ou=people,...")
        try:
            parse_dn(prefix + "x" + suffix)
        except ValueError as exc:
            raise ValueError(f"not a DN: {exc}") from None
        self.text = text
        self._prefix = prefix
        self._suffix = suffix

    def fill(self, username: str) -> str:
        """The DN for ``username`` (escaped as an RDN value)."""
        return self._prefix + escape_rdn_value(username) + self._suffix

    def __repr__(self) -> str:
        return f"DnTemplate({self.text!r})"


def check_ad_logon_name(username: str) -> str | None:
    """Why ``username`` cannot be put into ``user@domain`` or ``DOMAIN\\user``
    (None if it can)."""
    if not username:
        return "empty"
    for char in username:
        if char in AD_FORBIDDEN:
            return f"character {char!r} is not allowed in a logon name"
        if ord(char) < 0x20 or ord(char) == 0x7F:
            return "control character in a logon name"
    return None


# ------------------------------------------------------------ DN parsing


def _unescape_value(text: str, start: int) -> tuple[str, int]:
    """Read one attribute value from ``text[start:]`` up to an unescaped
    ``,`` ``+`` or the end; return it unescaped and the stop position."""
    raw = bytearray()
    pos = start
    if text.startswith("#", pos):  # hex-encoded BER value: keep its text form
        end = pos + 1
        while end < len(text) and text[end] not in ",+":
            end += 1
        return text[pos:end].strip(), end
    trailing_escaped = 0
    while pos < len(text):
        char = text[pos]
        if char in ",+":
            break
        if char == "\\":
            nxt = text[pos + 1 : pos + 2]
            pair = text[pos + 1 : pos + 3]
            if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
                raw.append(int(pair, 16))
                pos += 3
            elif nxt:
                raw.extend(nxt.encode("utf-8"))
                pos += 2
            else:
                raise ValueError("DN ends with a backslash")
            trailing_escaped = len(raw)
            continue
        if char == '"':
            raise ValueError("quoted DN values are not supported")
        raw.extend(char.encode("utf-8"))
        pos += 1
    # unescaped trailing spaces are not part of the value
    while len(raw) > trailing_escaped and raw.endswith(b" "):
        raw.pop()
    try:
        return raw.decode("utf-8"), pos
    except UnicodeDecodeError:
        raise ValueError("DN value is not UTF-8") from None


def parse_dn(dn: str) -> list[list[tuple[str, str]]]:
    """Parse an RFC 4514 DN into RDNs of (type, unescaped value) pairs.
    Raises ValueError for a malformed DN."""
    rdns: list[list[tuple[str, str]]] = []
    if not dn.strip():
        return rdns
    pos = 0
    current: list[tuple[str, str]] = []
    while True:
        while pos < len(dn) and dn[pos] == " ":
            pos += 1
        eq = dn.find("=", pos)
        if eq < 0:
            raise ValueError(f"no '=' in RDN at position {pos}")
        attr = dn[pos:eq].strip()
        if not attr or not all(c.isalnum() or c in "-." for c in attr):
            raise ValueError(f"bad attribute type {attr!r}")
        pos = eq + 1
        while pos < len(dn) and dn[pos] == " ":
            pos += 1
        value, pos = _unescape_value(dn, pos)
        current.append((attr.lower(), value))
        if pos >= len(dn):
            rdns.append(current)
            return rdns
        if dn[pos] == ",":
            rdns.append(current)
            current = []
        pos += 1


def normalize_dn(dn: str) -> str:
    """A comparable form of ``dn``: attribute types and values case-folded,
    spaces around separators dropped, multi-valued RDNs sorted.  Falls back to
    the case-folded text when ``dn`` does not parse."""
    try:
        rdns = parse_dn(dn)
    except ValueError:
        return dn.strip().casefold()
    return ",".join(
        "+".join(f"{attr}={escape_rdn_value(value.casefold())}" for attr, value in sorted(rdn)) for rdn in rdns
    )


def first_rdn(dn: str) -> tuple[str, str] | None:
    """The (type, value) of the first RDN of ``dn`` if it is single-valued."""
    try:
        rdns = parse_dn(dn)
    except ValueError:
        return None
    if not rdns or len(rdns[0]) != 1:
        return None
    return rdns[0][0]
