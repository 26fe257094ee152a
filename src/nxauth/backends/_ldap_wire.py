"""LDAP messages on the wire: BER encoding of the requests a login needs
(bind, search, unbind), RFC 4515 filters compiled once with slots for the
values, and decoding of the responses (results, entries, controls).

Why not ldap3's own encoder: it builds every request through pyasn1, which
costs about 200 µs of CPU per bind and 480 µs per search here, more than the
directory takes to answer; and it applies SASLprep to simple-bind passwords,
so a non-ASCII password reaches the server as other bytes than OpenLDAP's
tools and Active Directory send.  ldap3 still opens the connections (TCP,
LDAPS, StartTLS); this module only frames what goes through them.

Values never pass through filter text: a filter template is parsed once, and
the user's value is placed, as raw octets, into the assertion value it
belongs to.  A ``*`` or ``)`` in a username is an octet of that value, never
filter syntax.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, final

from ..usernames import escape_for_log

__all__ = [
    "PPOLICY_OID",
    "Entry",
    "Filter",
    "FilterError",
    "Message",
    "Result",
    "bind_request",
    "decode_message",
    "message_length",
    "parse_filter",
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


# ------------------------------------------------------------ filters


class FilterError(ValueError):
    """A filter template that is not valid RFC 4515."""


@final
@dataclass(frozen=True, slots=True)
class Slot:
    """A placeholder in a filter value, filled when the filter is encoded."""

    name: str


Value = tuple["bytes | Slot", ...]


@final
@dataclass(frozen=True, slots=True)
class Filter:
    """A parsed filter: ``kind`` is and, or, not, eq, ge, le, approx,
    present, sub or ext.  Encode it with :meth:`encode`."""

    kind: str
    children: tuple[Filter, ...] = ()
    attr: str = ""
    value: Value = ()
    substrings: tuple[tuple[int, Value], ...] = ()  # (0 initial / 1 any / 2 final, value)
    rule: str = ""
    dn_attributes: bool = False
    slots: frozenset[str] = field(default=frozenset(), compare=False)

    def encode(self, values: Mapping[str, bytes] | None = None) -> bytes:
        """The BER encoding, each slot replaced by ``values[name]`` (raw octets)."""
        given = values or {}
        missing = self.slots - given.keys()
        if missing:
            raise KeyError(f"filter value missing for {sorted(missing)[0]!r}")
        return _encode_filter(self, given)


_KIND_TAGS: Final = {"and": 0xA0, "or": 0xA1, "not": 0xA2, "eq": 0xA3, "ge": 0xA5, "le": 0xA6, "approx": 0xA8}


def _fill(value: Value, values: Mapping[str, bytes]) -> bytes:
    return b"".join(part if isinstance(part, bytes) else values[part.name] for part in value)


def _encode_filter(node: Filter, values: Mapping[str, bytes]) -> bytes:
    kind = node.kind
    if kind in ("and", "or"):
        return _tlv(_KIND_TAGS[kind], b"".join(_encode_filter(c, values) for c in node.children))
    if kind == "not":
        return _tlv(0xA2, _encode_filter(node.children[0], values))
    attr = node.attr.encode("ascii")
    if kind == "present":
        return _octets(attr, 0x87)
    if kind == "sub":
        parts = b"".join(_octets(_fill(v, values), 0x80 + which) for which, v in node.substrings)
        return _tlv(0xA4, _octets(attr) + _tlv(0x30, parts))
    if kind == "ext":
        body = b""
        if node.rule:
            body += _octets(node.rule.encode("ascii"), 0x81)
        if node.attr:
            body += _octets(attr, 0x82)
        body += _octets(_fill(node.value, values), 0x83)
        if node.dn_attributes:
            body += _boolean(True, 0x84)
        return _tlv(0xA9, body)
    return _tlv(_KIND_TAGS[kind], _octets(attr) + _octets(_fill(node.value, values)))


_ATTR_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-;.")
_HEX: Final = frozenset("0123456789abcdefABCDEF")


class _FilterParser:
    def __init__(self, text: str, slots: frozenset[str]) -> None:
        self.text = text
        self.pos = 0
        self.allowed = slots
        self.used: set[str] = set()

    def fail(self, message: str) -> FilterError:
        return FilterError(f"{message} at position {self.pos} of {self.text!r}")

    def parse(self) -> Filter:
        node = self.filter()
        if self.pos != len(self.text):
            raise self.fail("unexpected text after the filter")
        return node

    def filter(self) -> Filter:
        if self.pos >= len(self.text) or self.text[self.pos] != "(":
            raise self.fail("expected '('")
        self.pos += 1
        char = self.text[self.pos : self.pos + 1]
        if char in ("&", "|"):
            self.pos += 1
            children = []
            while self.text[self.pos : self.pos + 1] == "(":
                children.append(self.filter())
            if not children:
                raise self.fail("empty and/or")
            node = Filter("and" if char == "&" else "or", tuple(children))
        elif char == "!":
            self.pos += 1
            node = Filter("not", (self.filter(),))
        else:
            node = self.item()
        if self.text[self.pos : self.pos + 1] != ")":
            raise self.fail("expected ')'")
        self.pos += 1
        return node

    def attribute(self, *, optional: bool = False) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _ATTR_CHARS:
            self.pos += 1
        name = self.text[start : self.pos]
        if not name and not optional:
            raise self.fail("expected an attribute description")
        return name

    def item(self) -> Filter:
        attr = self.attribute(optional=True)
        text = self.text
        if text.startswith(":", self.pos):  # extensible: attr[:dn][:rule]:=value
            dn = False
            rule = ""
            if text.startswith(":dn", self.pos) and text[self.pos + 3 : self.pos + 4] == ":":
                dn = True
                self.pos += 3
            if not text.startswith(":=", self.pos):
                self.pos += 1
                rule = self.attribute()
            if not text.startswith(":=", self.pos):
                raise self.fail("expected ':='")
            self.pos += 2
            if not attr and not rule:
                raise self.fail("an extensible match needs an attribute or a matching rule")
            return Filter("ext", attr=attr, value=self.value(), rule=rule, dn_attributes=dn)
        if not attr:
            raise self.fail("expected an attribute description")
        op = text[self.pos : self.pos + 2]
        if op in (">=", "<=", "~="):
            self.pos += 2
            kind = {">=": "ge", "<=": "le", "~=": "approx"}[op]
            return Filter(kind, attr=attr, value=self.value())
        if text[self.pos : self.pos + 1] != "=":
            raise self.fail("expected '=', '>=', '<=' or '~='")
        self.pos += 1
        pieces = [self.value(stop_at_star=True)]
        while text[self.pos : self.pos + 1] == "*":
            self.pos += 1
            pieces.append(self.value(stop_at_star=True))
        if len(pieces) == 1:
            return Filter("eq", attr=attr, value=pieces[0])
        if len(pieces) == 2 and not pieces[0] and not pieces[1]:
            return Filter("present", attr=attr)
        subs: list[tuple[int, Value]] = []
        if pieces[0]:
            subs.append((0, pieces[0]))
        subs.extend((1, piece) for piece in pieces[1:-1] if piece)
        if pieces[-1]:
            subs.append((2, pieces[-1]))
        if any(not piece for piece in pieces[1:-1]):
            raise self.fail("empty substring between '*'")
        return Filter("sub", attr=attr, substrings=tuple(subs))

    def value(self, *, stop_at_star: bool = False) -> Value:
        parts: list[bytes | Slot] = []
        literal = bytearray()
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == ")" or (char == "*" and stop_at_star):
                break
            if char in "(*":
                raise self.fail(f"unescaped {char!r} in a value")
            if char == "\\":
                pair = text[self.pos + 1 : self.pos + 3]
                if len(pair) != 2 or not set(pair) <= _HEX:
                    raise self.fail("a backslash must be followed by two hex digits")
                literal.append(int(pair, 16))
                self.pos += 3
                continue
            if char == "{":
                end = text.find("}", self.pos)
                name = text[self.pos + 1 : end] if end > 0 else ""
                if name not in self.allowed:
                    raise self.fail(f"unknown placeholder {{{name}}} (allowed: {', '.join(sorted(self.allowed))})")
                if literal:
                    parts.append(bytes(literal))
                    literal.clear()
                parts.append(Slot(name))
                self.used.add(name)
                self.pos = end + 1
                continue
            if char == "}":
                raise self.fail("unmatched '}'")
            literal.extend(char.encode("utf-8"))
            self.pos += 1
        if literal:
            parts.append(bytes(literal))
        return tuple(parts)


def parse_filter(text: str, slots: Sequence[str] = ()) -> Filter:
    """Parse an RFC 4515 filter whose assertion values may hold placeholders
    ``{name}`` for the names in ``slots`` (a literal brace is ``\\7b`` / ``\\7d``).
    Raises :class:`FilterError` with the position of the first fault."""
    if not isinstance(text, str) or not text:
        raise FilterError("a filter is a non-empty string")
    parser = _FilterParser(text.strip(), frozenset(slots))
    node = parser.parse()
    return _with_slots(node, frozenset(parser.used))


def _with_slots(node: Filter, used: frozenset[str]) -> Filter:
    return Filter(node.kind, node.children, node.attr, node.value, node.substrings, node.rule, node.dn_attributes, used)


def equality(attr: str, value: bytes) -> Filter:
    """``(attr=value)`` with ``value`` as raw octets."""
    return Filter("eq", attr=attr, value=(value,))


def matching(attr: str, rule: str, value: bytes) -> Filter:
    """``(attr:rule:=value)`` (an extensible match)."""
    return Filter("ext", attr=attr, rule=rule, value=(value,))


def any_of(filters: Sequence[Filter]) -> Filter:
    return filters[0] if len(filters) == 1 else Filter("or", tuple(filters))


def all_of(filters: Sequence[Filter]) -> Filter:
    return filters[0] if len(filters) == 1 else Filter("and", tuple(filters))


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
        """``code N: message`` for logs and the audit trail (the server's
        text cut to 120 characters and escaped)."""
        text = escape_for_log(self.message.rstrip("\x00"), 120, quoted=True)
        return f"code {self.code}: {text}" if text else f"code {self.code}"


def decode_result(message: Message) -> Result:
    data = message.data
    parts = _children(data, message.start, message.end)
    if len(parts) < 3 or parts[0][0] != 0x0A:
        raise WireError("bad LDAPResult")
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
