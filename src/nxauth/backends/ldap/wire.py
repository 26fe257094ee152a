"""LDAP messages on the wire: BER encoding of the requests a login needs
(bind, search, unbind) and decoding of the responses (results, entries,
controls).  Filters are in :mod:`._ldap_filter`.

Why not ldap3's own encoder: it builds every request through pyasn1, which
costs about 200 µs of CPU per bind and 480 µs per search here, more than the
directory takes to answer; and it applies SASLprep to simple-bind passwords,
so a non-ASCII password reaches the server as other bytes than OpenLDAP's
tools and Active Directory send.  ldap3 still opens the connections (TCP,
LDAPS, StartTLS); this module only frames what goes through them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, final

__all__ = [
    "PPOLICY_OID",
    "Entry",
    "Message",
    "Result",
    "bind_request",
    "decode_message",
    "message_length",
    "parse_ppolicy",
    "search_request",
    "unbind_request",
]

PPOLICY_OID: Final = "1.3.6.1.4.1.42.2.27.8.5.1"
MAX_MESSAGE: Final = 16 << 20  # refuse responses larger than 16 MiB

# protocolOp tags (APPLICATION class)
OP_BIND_REQUEST: Final = 0x60
OP_BIND_RESPONSE: Final = 0x61
OP_UNBIND_REQUEST: Final = 0x42
OP_SEARCH_REQUEST: Final = 0x63
OP_SEARCH_ENTRY: Final = 0x64
OP_SEARCH_DONE: Final = 0x65
OP_SEARCH_REFERENCE: Final = 0x73
OP_EXTENDED_RESPONSE: Final = 0x78

#: The only unsolicited message (message id 0) LDAPv3 defines (RFC 4511 4.4.1).
NOTICE_OF_DISCONNECTION: Final = "1.3.6.1.4.1.1466.20036"

#: The LDAPResult components an operation's response may carry after the
#: three fixed ones, in this order: referral [3], then serverSaslCreds [7]
#: (bind) or responseName [10] / responseValue [11] (extended).
RESULT_EXTRAS: Final = {
    OP_BIND_RESPONSE: (0xA3, 0x87),
    OP_SEARCH_DONE: (0xA3,),
    OP_EXTENDED_RESPONSE: (0xA3, 0x8A, 0x8B),
}

SCOPES: Final = {"base": 0, "one": 1, "subtree": 2}


class WireError(ValueError):
    """A response that is not valid BER/LDAP."""


# ------------------------------------------------------------ BER encoding


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _length(len(content)) + content


def _integer(n: int, tag: int = 0x02) -> bytes:
    return _tlv(tag, n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True))


def _octets(value: bytes, tag: int = 0x04) -> bytes:
    return _tlv(tag, value)


def _boolean(value: bool, tag: int = 0x01) -> bytes:
    return _tlv(tag, b"\xff" if value else b"\x00")


def _message(msgid: int, op: bytes, controls: Sequence[tuple[str, bool, bytes | None]] = ()) -> bytes:
    body = _integer(msgid) + op
    if controls:
        encoded = b""
        for oid, critical, value in controls:
            part = _octets(oid.encode("ascii"))
            if critical:
                part += _boolean(True)
            if value is not None:
                part += _octets(value)
            encoded += _tlv(0x30, part)
        body += _tlv(0xA0, encoded)
    return _tlv(0x30, body)


def bind_request(
    msgid: int, name: bytes, password: bytes, controls: Sequence[tuple[str, bool, bytes | None]] = ()
) -> bytes:
    """A simple BindRequest (LDAPv3).  ``password`` goes as is (no SASLprep)."""
    op = _tlv(OP_BIND_REQUEST, _integer(3) + _octets(name) + _octets(password, 0x80))
    return _message(msgid, op, controls)


def search_request(
    msgid: int,
    base: bytes,
    scope: int,
    filter_ber: bytes,
    attributes: Sequence[str],
    *,
    size_limit: int = 0,
    time_limit: int = 0,
) -> bytes:
    """A SearchRequest, never dereferencing aliases."""
    attrs = b"".join(_octets(a.encode("ascii")) for a in attributes) if attributes else _octets(b"1.1")
    op = _tlv(
        OP_SEARCH_REQUEST,
        _octets(base)
        + _integer(scope, 0x0A)
        + _integer(0, 0x0A)  # neverDerefAliases
        + _integer(size_limit)
        + _integer(time_limit)
        + _boolean(False)
        + filter_ber
        + _tlv(0x30, attrs),
    )
    return _message(msgid, op)


def unbind_request(msgid: int) -> bytes:
    return _message(msgid, _tlv(OP_UNBIND_REQUEST, b""))


# ------------------------------------------------------------ BER decoding


def _header(data: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the TLV at ``pos``."""
    if pos + 2 > end:
        raise WireError("truncated BER header")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise WireError("multi-byte BER tags are not used by LDAP")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise WireError("bad BER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise WireError("BER value runs past its container")
    return tag, pos, pos + length


def message_length(buffer: bytes | bytearray) -> int | None:
    """The total length of the message at the start of ``buffer``, or None
    while its header is incomplete.  Raises WireError on garbage."""
    if len(buffer) < 2:
        return None
    if buffer[0] != 0x30:
        raise WireError("an LDAP message is a SEQUENCE")
    first = buffer[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if count == 0 or count > 4:
        raise WireError("bad BER length")
    if len(buffer) < 2 + count:
        return None
    total = 2 + count + int.from_bytes(buffer[2 : 2 + count], "big")
    if total > MAX_MESSAGE:
        raise WireError("response larger than 16 MiB")
    return total


def _int(data: bytes, start: int, end: int) -> int:
    if end - start > 8 or end == start:
        raise WireError("bad INTEGER")
    return int.from_bytes(data[start:end], "big", signed=True)


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    pos = start
    while pos < end:
        tag, s, e = _header(data, pos, end)
        out.append((tag, s, e))
        pos = e
    return out


@final
@dataclass(frozen=True, slots=True)
class Message:
    """One decoded LDAPMessage: its id, protocolOp tag, the op's content
    bounds in ``data``, and its controls (oid -> value)."""

    msgid: int
    op: int
    data: bytes
    start: int
    end: int
    controls: Mapping[str, bytes]


def decode_message(data: bytes) -> Message:
    tag, start, end = _header(data, 0, len(data))
    if tag != 0x30:
        raise WireError("an LDAP message is a SEQUENCE")
    parts = _children(data, start, end)
    if len(parts) < 2 or parts[0][0] != 0x02:
        raise WireError("LDAP message without id or operation")
    if len(parts) > 3 or (len(parts) == 3 and parts[2][0] != 0xA0):
        raise WireError("trailing data in an LDAP message")
    msgid = _int(data, parts[0][1], parts[0][2])
    op, op_start, op_end = parts[1]
    controls: dict[str, bytes] = {}
    if len(parts) > 2 and parts[2][0] == 0xA0:
        for _, cs, ce in _children(data, parts[2][1], parts[2][2]):
            items = _children(data, cs, ce)
            if not items or items[0][0] != 0x04:
                raise WireError("bad control")
            oid = data[items[0][1] : items[0][2]].decode("ascii", "replace")
            value = b""
            for itag, s, e in items[1:]:
                if itag == 0x04:
                    value = data[s:e]
            controls[oid] = value
    return Message(msgid, op, data, op_start, op_end, controls)


@final
@dataclass(frozen=True, slots=True)
class Result:
    """An LDAPResult: code, matched DN, diagnostic message, referrals, controls."""

    code: int
    matched_dn: str
    message: str
    referrals: tuple[str, ...] = ()
    controls: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.code == 0

    def describe(self) -> str:
        """``code N`` for logs and errors.  Never the server's diagnostic
        text: a server may echo what it was sent (the password of a bind)."""
        return f"code {self.code}"


def decode_result(message: Message) -> Result:
    """The LDAPResult of a bind, search-done or extended response; any
    component its operation does not define (or out of order) is refused."""
    data = message.data
    parts = _children(data, message.start, message.end)
    if len(parts) < 3 or parts[0][0] != 0x0A or parts[1][0] != 0x04 or parts[2][0] != 0x04:
        raise WireError("bad LDAPResult")
    extras = RESULT_EXTRAS.get(message.op, ())
    tags = [tag for tag, _, _ in parts[3:]]
    if any(tag not in extras for tag in tags) or tags != sorted(set(tags), key=extras.index):
        raise WireError("unexpected component in an LDAPResult")
    code = _int(data, parts[0][1], parts[0][2])
    matched = data[parts[1][1] : parts[1][2]].decode("utf-8", "replace")
    text = data[parts[2][1] : parts[2][2]].decode("utf-8", "replace")
    referrals: tuple[str, ...] = ()
    for tag, s, e in parts[3:]:
        if tag == 0xA3:
            referrals = tuple(data[rs:re].decode("utf-8", "replace") for _, rs, re in _children(data, s, e))
    return Result(code, matched, text, referrals, message.controls)


@final
@dataclass(frozen=True, slots=True)
class Entry:
    """A search result entry: its DN and attributes (lower-cased names,
    options such as ``;binary`` kept) with raw values."""

    dn: str
    attributes: Mapping[str, tuple[bytes, ...]]

    def values(self, name: str) -> tuple[bytes, ...]:
        return self.attributes.get(name.lower(), ())

    def first(self, name: str) -> bytes | None:
        values = self.attributes.get(name.lower())
        return values[0] if values else None

    def text(self, name: str) -> tuple[str, ...]:
        return tuple(v.decode("utf-8", "replace") for v in self.values(name))


def decode_entry(message: Message) -> Entry:
    data = message.data
    parts = _children(data, message.start, message.end)
    if len(parts) != 2 or parts[0][0] != 0x04 or parts[1][0] != 0x30:
        raise WireError("bad SearchResultEntry")
    dn = data[parts[0][1] : parts[0][2]].decode("utf-8", "replace")
    attributes: dict[str, tuple[bytes, ...]] = {}
    for _, s, e in _children(data, parts[1][1], parts[1][2]):
        items = _children(data, s, e)
        if len(items) != 2 or items[0][0] != 0x04 or items[1][0] != 0x31:
            raise WireError("bad PartialAttribute")
        name = data[items[0][1] : items[0][2]].decode("ascii", "replace").lower()
        values = tuple(data[vs:ve] for _, vs, ve in _children(data, items[1][1], items[1][2]))
        attributes[name] = attributes.get(name, ()) + values
    return Entry(dn, attributes)


def is_notice_of_disconnection(message: Message) -> bool:
    """Whether ``message`` is the server's Notice of Disconnection."""
    if message.msgid != 0 or message.op != OP_EXTENDED_RESPONSE:
        return False
    parts = _children(message.data, message.start, message.end)
    names = [message.data[s:e] for tag, s, e in parts[3:] if tag == 0x8A]
    return names == [NOTICE_OF_DISCONNECTION.encode("ascii")]


def decode_reference(message: Message) -> tuple[str, ...]:
    data = message.data
    return tuple(data[s:e].decode("utf-8", "replace") for _, s, e in _children(data, message.start, message.end))


# ppolicy (draft-behera-ldap-password-policy) response control
PPOLICY_ERRORS: Final = {
    0: "passwordExpired",
    1: "accountLocked",
    2: "changeAfterReset",
    3: "passwordModNotAllowed",
    4: "mustSupplyOldPassword",
    5: "insufficientPasswordQuality",
    6: "passwordTooShort",
    7: "passwordTooYoung",
    8: "passwordInHistory",
}


@final
@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """The decoded ppolicy response: ``error`` (a name from the draft or
    None), ``expires_in`` (seconds before the password expires) and
    ``grace_left`` (grace logins left)."""

    error: str | None = None
    expires_in: int | None = None
    grace_left: int | None = None


def parse_ppolicy(value: bytes) -> PasswordPolicy:
    """Decode a PasswordPolicyResponseValue; raises WireError if malformed."""
    tag, start, end = _header(value, 0, len(value))
    if tag != 0x30:
        raise WireError("bad ppolicy response")
    error: str | None = None
    expires_in: int | None = None
    grace: int | None = None
    for ptag, s, e in _children(value, start, end):
        if ptag == 0xA0:  # warning [0] CHOICE
            for wtag, ws, we in _children(value, s, e):
                if wtag == 0x80:
                    expires_in = _int(value, ws, we)
                elif wtag == 0x81:
                    grace = _int(value, ws, we)
        elif ptag == 0x81:  # error [1] ENUMERATED
            code = _int(value, s, e)
            error = PPOLICY_ERRORS.get(code, f"error{code}")
    return PasswordPolicy(error, expires_in, grace)
