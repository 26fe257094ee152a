"""The SSH wire format (RFC 4251 section 5) and the key type names: a reader
whose every fault is a :class:`nxauth.KeyFormatError`, ``string`` encoding,
strict base64, and the checks of raw key values (RSA numbers, EC points)."""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Final

from nxauth.errors import KeyFormatError

__all__ = [
    "CERT_BASE",
    "CERT_KEY_TYPES",
    "DSS",
    "ED25519",
    "KEY_TYPES",
    "PLAIN_KEY_TYPES",
    "RSA",
    "SK_ECDSA",
    "SK_ED25519",
    "SK_USER_PRESENCE",
    "SK_USER_VERIFIED",
    "Reader",
    "b64decode_strict",
    "check_point",
    "check_rsa",
    "ssh_string",
]

ED25519: Final = "ssh-ed25519"
RSA: Final = "ssh-rsa"
DSS: Final = "ssh-dss"
SK_ED25519: Final = "sk-ssh-ed25519@openssh.com"
SK_ECDSA: Final = "sk-ecdsa-sha2-nistp256@openssh.com"

#: ECDSA key type -> (curve identifier, signature hash name, bits, field prime p, curve coefficient b)
#: (the NIST curves of FIPS 186-4, a = -3; held equal to cryptography's by the tests).  The
#: ``cryptography`` package is imported only to verify a signature, not to parse a key: parsing
#: checks what cryptography would (point on the curve, RSA exponent and modulus) in plain Python,
#: which keeps ``nxauth authorized-keys`` (run by sshd on every login) from loading it.
ECDSA_CURVES: Final[dict[str, tuple[str, str, int, int, int]]] = {
    "ecdsa-sha2-nistp256": (
        "nistp256",
        "SHA256",
        256,
        2**256 - 2**224 + 2**192 + 2**96 - 1,
        0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
    ),
    "ecdsa-sha2-nistp384": (
        "nistp384",
        "SHA384",
        384,
        2**384 - 2**128 - 2**96 + 2**32 - 1,
        0xB3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875AC656398D8A2ED19D2A85C8EDD3EC2AEF,
    ),
    "ecdsa-sha2-nistp521": (
        "nistp521",
        "SHA512",
        521,
        2**521 - 1,
        0x0051953EB9618E1C9A1F929A21A0B68540EEA2DA725B99B315F3B8B489918EF109E156193951EC7E937B1652C0BD3BB1BF073573DF883D2C34F1EF451FD46B503F00,
    ),
}
#: certificate type -> certified (plain) key type
CERT_BASE: Final[dict[str, str]] = {
    "ssh-rsa-cert-v01@openssh.com": RSA,
    "ssh-dss-cert-v01@openssh.com": DSS,
    "ssh-ed25519-cert-v01@openssh.com": ED25519,
    "ecdsa-sha2-nistp256-cert-v01@openssh.com": "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com": "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com": "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519-cert-v01@openssh.com": SK_ED25519,
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com": SK_ECDSA,
}
PLAIN_KEY_TYPES: Final = frozenset({RSA, DSS, ED25519, SK_ED25519, SK_ECDSA, *ECDSA_CURVES})
CERT_KEY_TYPES: Final = frozenset(CERT_BASE)
KEY_TYPES: Final = PLAIN_KEY_TYPES | CERT_KEY_TYPES
LABELS: Final = {
    RSA: "RSA",
    DSS: "DSA",
    ED25519: "ED25519",
    SK_ED25519: "ED25519-SK",
    SK_ECDSA: "ECDSA-SK",
    **dict.fromkeys(ECDSA_CURVES, "ECDSA"),
}

#: flags byte of a security-key signature (PROTOCOL.u2f)
SK_USER_PRESENCE: Final = 0x01
SK_USER_VERIFIED: Final = 0x04

MAX_BLOB_SIZE: Final = 64 * 1024
MAX_RSA_BITS: Final = 16384
_MAX_MPINT: Final = MAX_RSA_BITS // 8 + 1
MAX_CERT_DEPTH: Final = 0  # a certificate, never a certificate whose CA key is one (as sshd)


class Reader:
    """A cursor over SSH wire data (RFC 4251 section 5); every fault is a KeyFormatError."""

    __slots__ = ("_buf", "_what", "pos")

    def __init__(self, buf: bytes, what: str) -> None:
        self._buf = buf
        self._what = what
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if n > len(self._buf) - self.pos:
            raise KeyFormatError(f"{self._what}: truncated (a field runs past the end)")
        data = self._buf[self.pos : self.pos + n]
        self.pos += n
        return data

    def fixed(self, n: int) -> bytes:
        return self._take(n)

    def u8(self) -> int:
        return self._take(1)[0]

    def u32(self) -> int:
        value: int = struct.unpack(">I", self._take(4))[0]
        return value

    def u64(self) -> int:
        value: int = struct.unpack(">Q", self._take(8))[0]
        return value

    def string(self) -> bytes:
        return self._take(self.u32())

    def text(self) -> str:
        raw = self.string()
        if b"\0" in raw:
            raise KeyFormatError(f"{self._what}: a text field contains a NUL byte")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise KeyFormatError(f"{self._what}: a text field is not UTF-8") from None

    def mpint(self, *, canonical: bool = True) -> int:
        raw = self.string()
        if len(raw) > _MAX_MPINT:
            raise KeyFormatError(f"{self._what}: integer too large")
        if raw and raw[0] & 0x80:
            raise KeyFormatError(f"{self._what}: negative integer")
        if canonical and raw[:1] == b"\0" and (len(raw) == 1 or not raw[1] & 0x80):
            raise KeyFormatError(f"{self._what}: integer not minimally encoded")
        return int.from_bytes(raw, "big")

    @property
    def remaining(self) -> int:
        return len(self._buf) - self.pos

    def done(self) -> None:
        if self.pos != len(self._buf):
            raise KeyFormatError(f"{self._what}: {len(self._buf) - self.pos} trailing bytes")


def ssh_string(data: bytes | str) -> bytes:
    """Encode ``data`` as an SSH ``string`` (uint32 length, then the bytes)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return struct.pack(">I", len(raw)) + raw


def check_rsa(e: int, n: int) -> None:
    """The checks cryptography makes of RSA public numbers."""
    if n < 3 or n % 2 == 0:
        raise KeyFormatError("ssh-rsa: invalid public key (n must be odd and at least 3)")
    if not 3 <= e < n or e % 2 == 0:
        raise KeyFormatError("ssh-rsa: invalid public key (e must be odd, at least 3 and less than n)")


def check_point(ecdsa_type: str, point: bytes) -> None:
    """An uncompressed point on the curve (the curves' cofactor is 1)."""
    curve_id, _hash, _bits, p, b = ECDSA_CURVES[ecdsa_type]
    size = (p.bit_length() + 7) // 8
    if len(point) != 1 + 2 * size or point[0] != 4:
        raise KeyFormatError(f"{ecdsa_type}: EC point is not an uncompressed {curve_id} point")
    x = int.from_bytes(point[1 : 1 + size], "big")
    y = int.from_bytes(point[1 + size :], "big")
    if x >= p or y >= p or (y * y - (x * x * x - 3 * x + b)) % p != 0:
        raise KeyFormatError(f"{ecdsa_type}: invalid public key (the point is not on the curve)")


def b64decode_strict(text: str, what: str) -> bytes:
    """Standard, padded base64 without whitespace; KeyFormatError otherwise."""
    if not text.isascii():
        raise KeyFormatError(f"{what}: not base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyFormatError(f"{what}: not base64") from None
