"""BER by hand (RFC 4511's LDAP messages), for the hostile LDAP servers of
the tests: enough to encode answers and to read a request's id, operation
and simple-bind password."""

from __future__ import annotations

__all__ = ["integer", "ldap_result", "message", "octets", "read_tlv", "tlv"]


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(body))) + body + content


def integer(n: int, tag: int = 0x02) -> bytes:
    return tlv(tag, n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True))


def message(msgid: int, op: bytes, trailing: bytes = b"") -> bytes:
    return tlv(0x30, integer(msgid) + op + trailing)


def ldap_result(code: int, extra: bytes = b"") -> bytes:
    return integer(code, 0x0A) + tlv(0x04, b"") + tlv(0x04, b"") + extra


def octets(value: bytes, tag: int = 0x04) -> bytes:
    return tlv(tag, value)


def read_tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first >= 0x80:
        count = first & 0x7F
        first, pos = int.from_bytes(data[pos : pos + count], "big"), pos + count
    return tag, pos, pos + first
