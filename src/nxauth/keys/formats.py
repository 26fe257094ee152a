"""SSH public keys and OpenSSH certificates: decoding, fingerprints and signature checks.

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
import hashlib
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, final

from nxauth.errors import KeyFormatError
from nxauth.keys.wire import (
    CERT_BASE,
    DSS,
    ECDSA_CURVES,
    ED25519,
    KEY_TYPES,
    LABELS,
    MAX_BLOB_SIZE,
    MAX_CERT_DEPTH,
    MAX_RSA_BITS,
    PLAIN_KEY_TYPES,
    RSA,
    SK_ECDSA,
    SK_ED25519,
    SK_USER_PRESENCE,
    SK_USER_VERIFIED,
    Reader,
    b64decode_strict,
    check_point,
    check_rsa,
    ssh_string,
)

__all__ = [
    "CERT_TYPE_HOST",
    "CERT_TYPE_USER",
    "FOREVER",
    "Certificate",
    "PublicKey",
    "SignatureCheck",
    "coerce_public_key",
    "decode_certificate",
    "decode_public_key",
    "parse_public_key",
    "verify_signature",
    "verify_signature_detailed",
]


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
        return ec.EllipticCurvePublicKey.from_encoded_point(curves[ECDSA_CURVES[ecdsa_type][0]], params[0])
    except ValueError as exc:
        raise KeyFormatError(f"{base_type}: invalid public key ({exc})") from None


def _parse_plain_body(base_type: str, r: Reader) -> _KeyData:
    """Parse the type-specific fields of a plain key (after its type string)."""
    application: str | None = None
    params: tuple[Any, ...] = ()
    if base_type == RSA:
        e, n = r.mpint(), r.mpint()
        if n.bit_length() > MAX_RSA_BITS:
            raise KeyFormatError(f"RSA modulus larger than {MAX_RSA_BITS} bits")
        check_rsa(e, n)
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
        curve_id, _hash, bits, _p, _b = ECDSA_CURVES[ecdsa_type]
        if r.text() != curve_id:
            raise KeyFormatError(f"{base_type}: curve identifier does not match the key type")
        point = r.string()
        check_point(ecdsa_type, point)
        params = (point,)
    if base_type in (SK_ED25519, SK_ECDSA):
        application = r.text()
    return _KeyData(base_type, base_type, bits, params, application)


def _parse_blob(blob: bytes, depth: int) -> _KeyData:
    if len(blob) > MAX_BLOB_SIZE:
        raise KeyFormatError(f"key blob larger than {MAX_BLOB_SIZE} bytes")
    r = Reader(blob, "key")
    key_type = r.text()
    if key_type in CERT_BASE:
        if depth > MAX_CERT_DEPTH:  # sshkey.c cert_parse: the CA blob is read with allow_cert=0
            raise KeyFormatError("the CA key of a certificate is itself a certificate")
        cert = _parse_certificate(blob, r, key_type, CERT_BASE[key_type], depth)
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
        label = LABELS[self._data.base_type]
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
    r = Reader(signature, "signature")
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
            sr = Reader(raw, "ECDSA signature")
            sig_r, sig_s = sr.mpint(canonical=False), sr.mpint(canonical=False)
            sr.done()
            digest: hashes.HashAlgorithm = getattr(hashes, "SHA256" if base == SK_ECDSA else ECDSA_CURVES[base][1])()
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


# ---------------------------------------------------------------- certificates (PROTOCOL.certkeys)

CERT_TYPE_USER: Final = 1
CERT_TYPE_HOST: Final = 2
#: ``valid_before`` of a certificate that never expires
FOREVER: Final = 0xFFFFFFFFFFFFFFFF
MAX_PRINCIPALS: Final = 256


@final
@dataclass(frozen=True)
class Certificate:
    """A decoded OpenSSH certificate.

    ``public_key`` is the certified plain key, ``signature_key`` the CA key,
    ``signed_data`` the bytes the CA signed (every field before the
    signature).  Times are seconds since the epoch; ``valid_before`` is
    :data:`FOREVER` for a certificate without end.
    """

    key_type: str
    nonce: bytes
    public_key: PublicKey
    serial: int
    cert_type: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    critical_options: Mapping[str, str] = field(hash=False)
    extensions: Mapping[str, str] = field(hash=False)
    signature_key: PublicKey
    signature: bytes
    signed_data: bytes = field(repr=False)
    reserved: bytes = b""
    critical_options_raw: tuple[tuple[str, bytes], ...] = ()
    extensions_raw: tuple[tuple[str, bytes], ...] = ()
    _verified: list[bool] = field(default_factory=list, init=False, repr=False, compare=False, hash=False)

    @property
    def is_user(self) -> bool:
        return self.cert_type == CERT_TYPE_USER

    @property
    def is_host(self) -> bool:
        return self.cert_type == CERT_TYPE_HOST

    def valid_at(self, now: float) -> bool:
        """``valid_after <= now < valid_before``."""
        return self.valid_after <= now < self.valid_before

    def verify(self) -> bool:
        """True when the CA signature over ``signed_data`` is valid.

        A CA key that is itself a certificate is refused, as are DSA and
        SHA-1 RSA signatures.  The result is cached.
        """
        if not self._verified:
            ok = False
            if not self.signature_key.is_certificate:
                try:
                    ok = verify_signature_detailed(self.signature_key, self.signature, self.signed_data).valid
                except KeyFormatError:
                    ok = False
            self._verified.append(ok)
        return self._verified[0]

    def describe(self) -> str:
        """``ID "key id" (serial N) CA ED25519 SHA256:...``, as sshd logs a certificate."""
        key_id = "".join(c if c.isprintable() else "?" for c in self.key_id[:100])
        ca = self.signature_key
        return f'ID "{key_id}" (serial {self.serial}) CA {ca.label} {ca.fingerprint}'


def _option_value(data: bytes) -> str:
    """Readable value of an option: ``""`` if empty, the inner string if the data is one, else latin-1 text."""
    if not data:
        return ""
    r = Reader(data, "certificate option")
    try:
        value = r.text()
        r.done()
    except KeyFormatError:
        return data.decode("latin-1")
    return value


def _options(blob: bytes, what: str) -> tuple[tuple[str, bytes], ...]:
    r = Reader(blob, f"certificate {what}")
    seen: set[str] = set()
    items: list[tuple[str, bytes]] = []
    while r.remaining:
        name, data = r.text(), r.string()
        if name in seen:
            raise KeyFormatError(f"certificate {what}: {name[:64]!r} appears twice")
        seen.add(name)
        items.append((name, data))
    return tuple(items)


def _parse_certificate(blob: bytes, r: Reader, key_type: str, base_type: str, depth: int) -> Certificate:
    """Parse the rest of a certificate blob; ``r`` stands after the type string."""
    nonce = r.string()
    start = r.pos
    inner = _parse_plain_body(base_type, r)
    plain_blob = ssh_string(base_type) + blob[start : r.pos]
    inner.plain_blob = plain_blob
    public_key = _make_key(base_type, plain_blob, "", inner)
    serial = r.u64()
    cert_type = r.u32()
    if cert_type not in (CERT_TYPE_USER, CERT_TYPE_HOST):
        raise KeyFormatError(f"unknown certificate type {cert_type}")
    key_id = r.text()
    pr = Reader(r.string(), "certificate principals")
    principals: list[str] = []
    while pr.remaining:
        principals.append(pr.text())
        if len(principals) > MAX_PRINCIPALS:
            raise KeyFormatError(f"certificate has more than {MAX_PRINCIPALS} principals")
    valid_after, valid_before = r.u64(), r.u64()
    critical = _options(r.string(), "critical options")
    extensions = _options(r.string(), "extensions")
    reserved = r.string()
    ca_blob = r.string()
    signed_len = r.pos
    signature = r.string()
    r.done()
    signature_key = _decode_nested(ca_blob, depth + 1)
    return Certificate(
        key_type=key_type,
        nonce=nonce,
        public_key=public_key,
        serial=serial,
        cert_type=cert_type,
        key_id=key_id,
        principals=tuple(principals),
        valid_after=valid_after,
        valid_before=valid_before,
        critical_options=MappingProxyType({name: _option_value(data) for name, data in critical}),
        extensions=MappingProxyType({name: _option_value(data) for name, data in extensions}),
        signature_key=signature_key,
        signature=signature,
        signed_data=blob[:signed_len],
        reserved=reserved,
        critical_options_raw=critical,
        extensions_raw=extensions,
    )


def decode_certificate(blob: bytes) -> Certificate:
    """Decode a certificate blob (``*-cert-v01@openssh.com``); KeyFormatError if malformed or not a certificate."""
    if not isinstance(blob, bytes):
        raise KeyFormatError(f"a certificate blob is bytes, not {type(blob).__name__}")
    cert = _decode_nested(blob, 0).certificate
    if cert is None:
        raise KeyFormatError("not a certificate")
    return cert
