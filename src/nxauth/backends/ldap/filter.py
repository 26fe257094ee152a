"""RFC 4515 search filters, parsed once and encoded many times.

Values never pass through filter text: a filter template is parsed once
(:func:`parse_filter`, with ``{name}`` placeholders in assertion values), and
the user's value is placed, as raw octets, into the assertion value it
belongs to when the filter is encoded.  A ``*`` or ``)`` in a username is an
octet of that value, never filter syntax.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, final

from nxauth.backends.ldap.wire import _boolean, _octets, _tlv

__all__ = ["Filter", "FilterError", "Slot", "all_of", "any_of", "equality", "matching", "parse_filter"]


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
