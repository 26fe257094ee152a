"""sshd's address patterns, ported from OpenSSH's match.c and addrmatch.c:
``from=`` pattern lists (``match_host_and_ip`` for a peer known only by its IP
address) and the CIDR lists of a certificate's ``source-address``.  Pure
functions of strings."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final

__all__ = ["match_from", "match_source_address", "valid_source_address"]


def _glob(s: str, p: str) -> bool:
    """sshd's match_pattern: ``*`` and ``?`` wildcards, everything else literal."""
    si = pi = 0
    star, mark = -1, 0
    while si < len(s):
        if pi < len(p) and p[pi] != "*" and (p[pi] == "?" or p[pi] == s[si]):
            si, pi = si + 1, pi + 1
        elif pi < len(p) and p[pi] == "*":
            star, mark, pi = pi, si, pi + 1
        elif star >= 0:
            mark += 1
            si, pi = mark, star + 1
        else:
            return False
    return p[pi:].strip("*") == ""


def _ascii_lower(s: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s)


def _match_pattern_list(string: str, patterns: str) -> int:
    """match_hostname: -1 on a negated match, 1 on a match, 0 otherwise (subpatterns lower-cased)."""
    got, i, n = 0, 0, len(patterns)
    while i < n:
        negated = patterns[i] == "!"
        i += negated
        j = patterns.find(",", i)
        j = n if j < 0 else j
        sub = _ascii_lower(patterns[i:j])
        if len(sub) >= 1023:
            return 0
        i = j + 1
        if _glob(string, sub):
            if negated:
                return -1
            got = 1
    return got


def _inet_aton(s: str) -> int | None:
    """glibc's inet_aton (what getaddrinfo(AI_NUMERICHOST) uses): ``127.1``, ``0x7f.1``, ``010.0.0.1``..."""
    parts: list[int] = []
    i, n = 0, len(s)
    while True:
        if i >= n or s[i] not in "0123456789":
            return None
        base, digit, val = 10, False, 0
        if s[i] == "0":
            i += 1
            if i < n and s[i] in "xX":
                base, i = 16, i + 1
            else:
                base, digit = 8, True
        while i < n and val <= 0xFFFFFFFF:
            c = s[i]
            if c in "0123456789" and not (base == 8 and c in "89"):
                val = val * base + int(c)
            elif base == 16 and c in "abcdefABCDEF":
                val = val * 16 + int(c, 16)
            elif c in "89":
                return None
            else:
                break
            digit, i = True, i + 1
        if i < n and s[i] == ".":
            if len(parts) > 2 or val > 0xFF:
                return None
            parts.append(val)
            i += 1
        else:
            break
    if i != n or not digit or val > (0xFFFFFFFF, 0xFFFFFF, 0xFFFF, 0xFF)[len(parts)]:
        return None
    for k, part in enumerate(parts):
        val |= part << (24 - 8 * k)
    return val


def _parse_addr(s: str) -> tuple[int, int] | None:
    """(address bits, value) for a numeric IPv4/IPv6 address, None if it is not one."""
    v4 = _inet_aton(s)
    if v4 is not None:
        return 32, v4
    if ":" not in s or "%" in s:
        return None
    try:
        return 128, int(ipaddress.IPv6Address(s))
    except ValueError:
        return None


def _strtoul(s: str) -> int | None:
    i = len(s) - len(s.lstrip(" \t\n\v\f\r"))
    negative = s[i : i + 1] == "-"
    i += s[i : i + 1] in ("+", "-")
    digits = s[i:]
    if not (digits.isascii() and digits.isdigit()):
        return None
    value = min(int(digits), 2**64 - 1)
    return (-value) % 2**64 if negative else value


def _pton_cidr(p: str) -> tuple[int, int, int] | int:
    """addr_pton_cidr: (bits, network, masklen), or -1 (not an address) / -2 (inconsistent)."""
    if len(p) >= 64:
        return -1
    addr, slash, mask = p.partition("/")
    masklen: int | None = None
    if slash:
        masklen = _strtoul(mask) if mask else None
        if masklen is None or masklen > 128:
            return -1
    parsed = _parse_addr(addr)
    if parsed is None:
        return -1
    bits, value = parsed
    masklen = bits if masklen is None else masklen
    if masklen > bits or value & ((1 << (bits - masklen)) - 1):
        return -2
    return bits, value, masklen


def _netmatch(host: tuple[int, int], net: tuple[int, int, int]) -> bool:
    bits, value, masklen = net
    return host[0] == bits and host[1] >> (bits - masklen) == value >> (bits - masklen)


def _addr_match_list(addr: str, patterns: str) -> int:
    """addr_match_list: 1 match, 0 none, -1 negated match, -2 invalid entry."""
    host = _parse_addr(addr)
    if host is None:
        return 0
    ret = 0
    for entry in patterns.split(","):
        negated = entry.startswith("!")
        cp = entry[1:] if negated else entry
        if not cp:
            return -2
        net = _pton_cidr(cp)
        if net == -2:
            return -2
        if _netmatch(host, net) if isinstance(net, tuple) else _glob(addr, cp):
            if negated:
                return -1
            ret = 1
    return ret


def _normalise_host(host: str) -> str | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def match_from(patterns: Sequence[str], host: str) -> bool:
    """sshd's ``from=`` check for a peer known by IP address ``host`` (no DNS name).

    ``patterns`` are comma lists of ``*``/``?`` wildcards and CIDR networks;
    a ``!``-negated match denies outright, an empty or inconsistent entry
    (``10.0.0.1/8``) denies, and a name pattern can only match the address
    text.  False whenever ``host`` is not an IP address.
    """
    if isinstance(patterns, str) or not isinstance(host, str):
        return False
    address = _normalise_host(host)
    if address is None or not all(isinstance(p, str) for p in patterns):
        return False
    joined = ",".join(patterns)
    mip = _addr_match_list(address, joined)
    if mip < 0:
        return False
    mhost = _match_pattern_list(_ascii_lower(address), joined)
    return mhost == 1 or (mhost == 0 and mip == 1)


_CIDR_CHARS: Final = frozenset("0123456789abcdefABCDEF.:/")


def _source_networks(allowed: object) -> list[tuple[int, int, int]] | None:
    """The networks of a ``source-address`` list, or None if any entry is invalid (empty, too long,
    a character outside ``0-9a-fA-F.:/``, not an address, a bad mask or host bits set)."""
    if not isinstance(allowed, str):
        return None
    networks: list[tuple[int, int, int]] = []
    for entry in allowed.split(","):
        net = _pton_cidr(entry) if entry and len(entry) <= 49 and set(entry) <= _CIDR_CHARS else -1
        if not isinstance(net, tuple):
            return None
        networks.append(net)
    return networks


def valid_source_address(allowed: str) -> bool:
    """Whether a certificate's ``source-address`` list is valid, without an address to match: the
    syntax check sshd makes when it reads the certificate (``addr_match_cidr_list(NULL, list)``)."""
    return _source_networks(allowed) is not None


def match_source_address(allowed: str, host: str) -> int:
    """A certificate's ``source-address`` (addr_match_cidr_list): 1 when ``host`` is in one of the
    comma-separated CIDR networks, 0 when not, -1 when the list is invalid (no wildcards, no ``!``)."""
    networks = _source_networks(allowed)
    if networks is None:
        return -1
    address = _normalise_host(host) if isinstance(host, str) else None
    parsed = _parse_addr(address) if address is not None else None
    return int(parsed is not None and any(_netmatch(parsed, net) for net in networks))
