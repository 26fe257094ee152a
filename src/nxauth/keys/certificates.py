"""OpenSSH certificates (PROTOCOL.certkeys).

:func:`decode_certificate` checks the structure only; whether a certificate
may log anybody in is the key policy's business (:mod:`nxauth.keys.policy`):
the CA signature (:meth:`Certificate.verify`), the validity interval, the
principals and the critical options.

Critical options and extensions are kept twice: ``critical_options`` /
``extensions`` map each name to its value decoded for reading (the inner
string of ``force-command`` and ``source-address``, ``""`` for flags), and
``critical_options_raw`` / ``extensions_raw`` keep the exact data bytes,
which is what the policy checks.  A name may appear only once in each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, final

from nxauth.errors import KeyFormatError
from nxauth.keys.formats import (
    PublicKey,
    _decode_nested,
    _make_key,
    _parse_plain_body,
    _Reader,
    ssh_string,
    verify_signature_detailed,
)

__all__ = [
    "CERT_TYPE_HOST",
    "CERT_TYPE_USER",
    "FOREVER",
    "Certificate",
    "decode_certificate",
]

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
    r = _Reader(data, "certificate option")
    try:
        value = r.text()
        r.done()
    except KeyFormatError:
        return data.decode("latin-1")
    return value


def _options(blob: bytes, what: str) -> tuple[tuple[str, bytes], ...]:
    r = _Reader(blob, f"certificate {what}")
    seen: set[str] = set()
    items: list[tuple[str, bytes]] = []
    while r.remaining:
        name, data = r.text(), r.string()
        if name in seen:
            raise KeyFormatError(f"certificate {what}: {name[:64]!r} appears twice")
        seen.add(name)
        items.append((name, data))
    return tuple(items)


def _parse_certificate(blob: bytes, r: _Reader, key_type: str, base_type: str, depth: int) -> Certificate:
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
    pr = _Reader(r.string(), "certificate principals")
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
