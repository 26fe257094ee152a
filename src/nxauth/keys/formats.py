"""SSH public keys: wire-format decoding, fingerprints and signature checks.

A :class:`PublicKey` is always valid: constructing one parses and checks the
whole blob (RFC 4253, RFC 5656, RFC 8709, PROTOCOL.certkeys, PROTOCOL.u2f) and
raises :class:`nxauth.KeyFormatError` otherwise.  Integers must be encoded
canonically, EC points must be uncompressed and on their curve, and no byte
may trail, so that the fingerprint of a key is the one ``ssh-keygen -lf``
prints and a blob has exactly one meaning.

``ssh-dss`` keys are decoded (so that policy can refuse them by name) but a
DSA signature never verifies; RSA signatures are accepted only as
``rsa-sha2-256`` / ``rsa-sha2-512``, never the SHA-1 ``ssh-rsa``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, final

from nxauth.errors import KeyFormatError

if TYPE_CHECKING:
    from nxauth.keys.certificates import Certificate

__all__ = [
    "CERT_KEY_TYPES",
    "KEY_TYPES",
    "PLAIN_KEY_TYPES",
    "SK_USER_PRESENCE",
    "SK_USER_VERIFIED",
    "PublicKey",
    "SignatureCheck",
    "coerce_public_key",
    "decode_public_key",
    "parse_public_key",
    "verify_signature",
    "verify_signature_detailed",
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
_ECDSA: Final[dict[str, tuple[str, str, int, int, int]]] = {
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
_CERT_BASE: Final[dict[str, str]] = {
    "ssh-rsa-cert-v01@openssh.com": RSA,
    "ssh-dss-cert-v01@openssh.com": DSS,
    "ssh-ed25519-cert-v01@openssh.com": ED25519,
    "ecdsa-sha2-nistp256-cert-v01@openssh.com": "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com": "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com": "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519-cert-v01@openssh.com": SK_ED25519,
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com": SK_ECDSA,
}
PLAIN_KEY_TYPES: Final = frozenset({RSA, DSS, ED25519, SK_ED25519, SK_ECDSA, *_ECDSA})
CERT_KEY_TYPES: Final = frozenset(_CERT_BASE)
KEY_TYPES: Final = PLAIN_KEY_TYPES | CERT_KEY_TYPES
_LABELS: Final = {
    RSA: "RSA",
    DSS: "DSA",
    ED25519: "ED25519",
    SK_ED25519: "ED25519-SK",
    SK_ECDSA: "ECDSA-SK",
    **dict.fromkeys(_ECDSA, "ECDSA"),
}

#: flags byte of a security-key signature (PROTOCOL.u2f)
SK_USER_PRESENCE: Final = 0x01
SK_USER_VERIFIED: Final = 0x04

MAX_BLOB_SIZE: Final = 64 * 1024
MAX_RSA_BITS: Final = 16384
_MAX_MPINT: Final = MAX_RSA_BITS // 8 + 1
_MAX_CERT_DEPTH: Final = 1  # a CA key may be a certificate (refused later), not deeper


class _Reader:
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


class _KeyData:
    """What decoding a blob learned; cached inside the PublicKey."""

    __slots__ = (
        "_crypto",
        "application",
        "base_type",
        "bits",
        "certificate",
        "fingerprint",
        "key_type",
        "params",
        "plain_blob",
    )

    def __init__(self, key_type: str, base_type: str, bits: int, params: tuple[Any, ...], application: str | None):
        self.key_type = key_type
        self.base_type = base_type
        self.bits = bits
        self.params = params  # RSA (e, n); Ed25519 (pk,); ECDSA (point,); DSA ()
        self.application = application
        self.certificate: Certificate | None = None
        self.plain_blob = b""
        self.fingerprint: str | None = None
        self._crypto: Any = None

    @property
    def crypto(self) -> Any:
        """The ``cryptography`` public key, made on first use (``None`` for DSA)."""
        if self._crypto is None and self.params:
            self._crypto = _make_crypto(self.base_type, self.params)
        return self._crypto


def _make_crypto(base_type: str, params: tuple[Any, ...]) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        if base_type == RSA:
            e, n = params
            return rsa.RSAPublicNumbers(e, n).public_key()
        if base_type in (ED25519, SK_ED25519):
            return ed25519.Ed25519PublicKey.from_public_bytes(params[0])
        ecdsa_type = "ecdsa-sha2-nistp256" if base_type == SK_ECDSA else base_type
        curves: dict[str, ec.EllipticCurve] = {
            "nistp256": ec.SECP256R1(),
            "nistp384": ec.SECP384R1(),
            "nistp521": ec.SECP521R1(),
        }
        return ec.EllipticCurvePublicKey.from_encoded_point(curves[_ECDSA[ecdsa_type][0]], params[0])
    except ValueError as exc:
        raise KeyFormatError(f"{base_type}: invalid public key ({exc})") from None


def _check_rsa(e: int, n: int) -> None:
    """The checks cryptography makes of RSA public numbers."""
    if n < 3 or n % 2 == 0:
        raise KeyFormatError("ssh-rsa: invalid public key (n must be odd and at least 3)")
    if not 3 <= e < n or e % 2 == 0:
        raise KeyFormatError("ssh-rsa: invalid public key (e must be odd, at least 3 and less than n)")


def _check_point(ecdsa_type: str, point: bytes) -> None:
    """An uncompressed point on the curve (the curves' cofactor is 1)."""
    curve_id, _hash, _bits, p, b = _ECDSA[ecdsa_type]
    size = (p.bit_length() + 7) // 8
    if len(point) != 1 + 2 * size or point[0] != 4:
        raise KeyFormatError(f"{ecdsa_type}: EC point is not an uncompressed {curve_id} point")
    x = int.from_bytes(point[1 : 1 + size], "big")
    y = int.from_bytes(point[1 + size :], "big")
    if x >= p or y >= p or (y * y - (x * x * x - 3 * x + b)) % p != 0:
        raise KeyFormatError(f"{ecdsa_type}: invalid public key (the point is not on the curve)")


def _parse_plain_body(base_type: str, r: _Reader) -> _KeyData:
    """Parse the type-specific fields of a plain key (after its type string)."""
    application: str | None = None
    params: tuple[Any, ...] = ()
    if base_type == RSA:
        e, n = r.mpint(), r.mpint()
        if n.bit_length() > MAX_RSA_BITS:
            raise KeyFormatError(f"RSA modulus larger than {MAX_RSA_BITS} bits")
        _check_rsa(e, n)
        params = (e, n)
        bits = n.bit_length()
    elif base_type == DSS:
        p, _q, _g, _y = r.mpint(), r.mpint(), r.mpint(), r.mpint()
        if not 0 < p.bit_length() <= MAX_RSA_BITS:
            raise KeyFormatError("DSA modulus out of range")
        bits = p.bit_length()
    elif base_type in (ED25519, SK_ED25519):
        pk = r.string()
        if len(pk) != 32:
            raise KeyFormatError(f"Ed25519 public key is {len(pk)} bytes, not 32")
        params = (pk,)
        bits = 256
    else:
        ecdsa_type = "ecdsa-sha2-nistp256" if base_type == SK_ECDSA else base_type
        curve_id, _hash, bits, _p, _b = _ECDSA[ecdsa_type]
        if r.text() != curve_id:
            raise KeyFormatError(f"{base_type}: curve identifier does not match the key type")
        point = r.string()
        _check_point(ecdsa_type, point)
        params = (point,)
    if base_type in (SK_ED25519, SK_ECDSA):
        application = r.text()
    return _KeyData(base_type, base_type, bits, params, application)


def _parse_blob(blob: bytes, depth: int) -> _KeyData:
    if len(blob) > MAX_BLOB_SIZE:
        raise KeyFormatError(f"key blob larger than {MAX_BLOB_SIZE} bytes")
    r = _Reader(blob, "key")
    key_type = r.text()
    if key_type in _CERT_BASE:
        if depth > _MAX_CERT_DEPTH:
            raise KeyFormatError("certificate nested too deep (a CA key that is a certificate signed by one)")
        from nxauth.keys.certificates import _parse_certificate

        cert = _parse_certificate(blob, r, key_type, _CERT_BASE[key_type], depth)
        inner = cert.public_key._data
        data = _KeyData(key_type, inner.base_type, inner.bits, inner.params, inner.application)
        data.certificate = cert
        data.plain_blob = cert.public_key.blob
        return data
    if key_type not in PLAIN_KEY_TYPES:
        raise KeyFormatError(f"unsupported key type {key_type[:64]!r}")
    data = _parse_plain_body(key_type, r)
    r.done()
    data.plain_blob = blob
    return data


@final
@dataclass(frozen=True, slots=True, repr=False)
class PublicKey:
    """An SSH public key or certificate, validated on construction.

    ``key_type`` is the type string inside ``blob`` (for a certificate, the
    certificate type); ``comment`` is free text that takes no part in any
    decision.  Equality and hashing cover all three fields.
    """

    key_type: str
    blob: bytes
    comment: str = ""
    _data: _KeyData = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key_type, str) or not isinstance(self.blob, bytes) or not isinstance(self.comment, str):
            raise KeyFormatError("PublicKey needs a str key_type, bytes blob and str comment")
        data = _parse_blob(self.blob, 0)
        if data.key_type != self.key_type:
            raise KeyFormatError(f"key type {self.key_type[:64]!r} does not match the blob's {data.key_type!r}")
        object.__setattr__(self, "_data", data)

    @property
    def fingerprint(self) -> str:
        """``SHA256:<unpadded base64>``; for a certificate, of the certified key (as ssh-keygen)."""
        data = self._data
        if data.fingerprint is None:
            digest = hashlib.sha256(data.plain_blob).digest()
            data.fingerprint = "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")
        return data.fingerprint

    @property
    def bits(self) -> int:
        return self._data.bits

    @property
    def base_type(self) -> str:
        """The plain key type (for a certificate, the certified key's)."""
        return self._data.base_type

    @property
    def is_certificate(self) -> bool:
        return self._data.certificate is not None

    @property
    def certificate(self) -> Certificate | None:
        return self._data.certificate

    @property
    def is_security_key(self) -> bool:
        return self._data.base_type in (SK_ED25519, SK_ECDSA)

    @property
    def application(self) -> str | None:
        """The FIDO application string of a security key (usually ``ssh:``)."""
        return self._data.application

    @property
    def label(self) -> str:
        """The type as ssh-keygen names it: ``ED25519``, ``RSA-CERT``, ``ECDSA-SK``..."""
        label = _LABELS[self._data.base_type]
        return label + "-CERT" if self.is_certificate else label

    def to_openssh(self) -> str:
        """``type base64 [comment]``, the authorized_keys / .pub form."""
        text = f"{self.key_type} {base64.b64encode(self.blob).decode('ascii')}"
        return f"{text} {self.comment}" if self.comment else text

    def describe(self) -> str:
        """``ED25519 SHA256:... comment`` for audit lines (comment escaped, cut at 100 characters)."""
        text = f"{self.label} {self.fingerprint}"
        if self.comment:
            text += " " + _printable(self.comment[:100])
        return text

    def __repr__(self) -> str:
        return f"PublicKey({self.key_type!r}, {self.fingerprint}, comment={self.comment[:100]!r})"

    def __reduce__(self) -> tuple[type[PublicKey], tuple[str, bytes, str]]:
        return (PublicKey, (self.key_type, self.blob, self.comment))


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _make_key(key_type: str, blob: bytes, comment: str, data: _KeyData) -> PublicKey:
    """Build a PublicKey from data already parsed (certificates use it for the keys inside)."""
    key = object.__new__(PublicKey)
    for name, value in (("key_type", key_type), ("blob", blob), ("comment", comment), ("_data", data)):
        object.__setattr__(key, name, value)
    return key


def _decode_nested(blob: bytes, depth: int) -> PublicKey:
    data = _parse_blob(blob, depth)
    return _make_key(data.key_type, blob, "", data)


def decode_public_key(blob: bytes, comment: str = "") -> PublicKey:
    """Decode an SSH wire-format public key or certificate; KeyFormatError if malformed."""
    if isinstance(blob, bytearray | memoryview):
        blob = bytes(blob)
    if not isinstance(blob, bytes):
        raise KeyFormatError(f"a key blob is bytes, not {type(blob).__name__}")
    data = _parse_blob(blob, 0)
    return _make_key(data.key_type, blob, comment if isinstance(comment, str) else "", data)


def b64decode_strict(text: str, what: str) -> bytes:
    """Standard, padded base64 without whitespace; KeyFormatError otherwise."""
    if not text.isascii():
        raise KeyFormatError(f"{what}: not base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyFormatError(f"{what}: not base64") from None


def parse_public_key(text: str) -> PublicKey:
    """Parse ``type base64 [comment]`` (a ``.pub`` file line); the outer type must equal the blob's."""
    if not isinstance(text, str):
        raise KeyFormatError(f"a public key line is str, not {type(text).__name__}")
    if len(text) > 2 * MAX_BLOB_SIZE:
        raise KeyFormatError("public key text too long")
    if "\0" in text:
        raise KeyFormatError("public key text contains a NUL byte")
    parts = re.split(r"[ \t]+", text.strip(" \t\r\n"), maxsplit=2)
    if len(parts) < 2:
        raise KeyFormatError("expected 'type base64 [comment]'")
    key_type, b64 = parts[0], parts[1]
    if key_type not in KEY_TYPES:
        raise KeyFormatError(f"unsupported key type {key_type[:64]!r}")
    key = decode_public_key(b64decode_strict(b64, "public key"), parts[2].strip(" \t") if len(parts) > 2 else "")
    if key.key_type != key_type:
        raise KeyFormatError(f"key type {key_type!r} does not match the blob's {key.key_type!r}")
    return key


def coerce_public_key(value: PublicKey | bytes | str) -> PublicKey:
    """A PublicKey as is, a wire blob decoded, or an OpenSSH line parsed; anything else is a KeyFormatError."""
    if isinstance(value, PublicKey):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return decode_public_key(bytes(value))
    if isinstance(value, str):
        return parse_public_key(value)
    raise KeyFormatError(f"cannot make a public key from {type(value).__name__}")


@final
@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """The outcome of a signature check.

    ``flags`` and ``counter`` come from a security-key signature (``None``
    for other keys): bit 0x01 is user presence (a touch), 0x04 user
    verification (a PIN or biometric).
    """

    valid: bool
    algorithm: str
    flags: int | None = None
    counter: int | None = None
    detail: str = ""

    @property
    def user_present(self) -> bool:
        return self.flags is not None and bool(self.flags & SK_USER_PRESENCE)

    @property
    def user_verified(self) -> bool:
        return self.flags is not None and bool(self.flags & SK_USER_VERIFIED)


def verify_signature_detailed(
    key: PublicKey, signature: bytes, data: bytes, *, allowed_algorithms: frozenset[str] | None = None
) -> SignatureCheck:
    """Verify an SSH signature blob (``string alg, string sig[, flags, counter]``) over ``data``.

    For a certificate the certified key verifies.  A well-formed signature
    that does not verify, or whose algorithm is refused (``ssh-rsa``/SHA-1,
    DSA, anything not in ``allowed_algorithms``, a mismatch with the key),
    gives ``valid=False``; a malformed blob raises KeyFormatError.  Security
    key flags are reported, not judged: see :func:`verify_signature`.
    """
    if not isinstance(key, PublicKey):
        raise KeyFormatError("verify_signature needs a PublicKey")
    if not isinstance(signature, bytes) or not isinstance(data, bytes | bytearray | memoryview):
        raise KeyFormatError("signature and data must be bytes")
    r = _Reader(signature, "signature")
    alg = r.text()
    kd = key._data
    base = kd.base_type
    if allowed_algorithms is not None and alg not in allowed_algorithms:
        return SignatureCheck(False, alg, detail=f"algorithm {alg[:64]!r} not allowed")
    expected = ("rsa-sha2-256", "rsa-sha2-512") if base == RSA else (base,)
    if alg not in expected or kd.crypto is None:
        return SignatureCheck(False, alg, detail=f"algorithm {alg[:64]!r} refused for a {kd.base_type} key")
    raw = r.string()
    flags: int | None = None
    counter: int | None = None
    if base in (SK_ED25519, SK_ECDSA):
        flags, counter = r.u8(), r.u32()
    r.done()
    message = bytes(data)
    if flags is not None and counter is not None:
        app_hash = hashlib.sha256((kd.application or "").encode("utf-8")).digest()
        message = app_hash + bytes([flags]) + struct.pack(">I", counter) + hashlib.sha256(message).digest()
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    crypto = kd.crypto
    try:
        if isinstance(crypto, ed25519.Ed25519PublicKey):
            if len(raw) != 64:
                raise KeyFormatError(f"Ed25519 signature is {len(raw)} bytes, not 64")
            crypto.verify(raw, message)
        elif isinstance(crypto, ec.EllipticCurvePublicKey):
            sr = _Reader(raw, "ECDSA signature")
            sig_r, sig_s = sr.mpint(canonical=False), sr.mpint(canonical=False)
            sr.done()
            digest: hashes.HashAlgorithm = getattr(hashes, "SHA256" if base == SK_ECDSA else _ECDSA[base][1])()
            crypto.verify(encode_dss_signature(sig_r, sig_s), message, ec.ECDSA(digest))
        else:
            size = (crypto.key_size + 7) // 8
            if len(raw) > size:
                return SignatureCheck(False, alg, detail="RSA signature longer than the modulus")
            digest_alg: hashes.HashAlgorithm = hashes.SHA256() if alg == "rsa-sha2-256" else hashes.SHA512()
            crypto.verify(raw.rjust(size, b"\0"), message, padding.PKCS1v15(), digest_alg)
    except InvalidSignature:
        return SignatureCheck(False, alg, flags, counter, "signature does not verify")
    except KeyFormatError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:  # cryptography refusing odd values: fail closed
        return SignatureCheck(False, alg, flags, counter, f"signature rejected: {type(exc).__name__}")
    return SignatureCheck(True, alg, flags, counter)


def verify_signature(
    key: PublicKey, signature: bytes, data: bytes, *, allowed_algorithms: frozenset[str] | None = None
) -> bool:
    """True when ``signature`` is a valid signature by ``key`` over ``data``.

    For a security key the signature must also assert user presence (a
    touch); to honour ``no-touch-required`` use
    :func:`verify_signature_detailed` and pass its flags to the key policy.
    """
    check = verify_signature_detailed(key, signature, data, allowed_algorithms=allowed_algorithms)
    return check.valid and (check.flags is None or check.user_present)
