"""SSH signatures (PROTOCOL.sshsig): what ``ssh-keygen -Y sign`` writes.

:func:`parse_sshsig` takes the armored text apart, :func:`verify_sshsig`
checks it over a message in a namespace.  Only version 1, hash ``sha256`` or
``sha512``, and the signature algorithms :func:`nxauth.keys.formats.verify_signature`
accepts (so never SHA-1 RSA).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final, final

from nxauth.errors import KeyFormatError
from nxauth.keys.formats import PublicKey, SignatureCheck, decode_public_key
from nxauth.keys.formats import verify_signature_detailed as _verify_detailed
from nxauth.keys.wire import Reader, b64decode_strict, ssh_string

__all__ = ["SshSignature", "parse_sshsig", "verify_sshsig", "verify_sshsig_detailed"]

MAGIC: Final = b"SSHSIG"
VERSION: Final = 1
BEGIN: Final = "-----BEGIN SSH SIGNATURE-----"
END: Final = "-----END SSH SIGNATURE-----"
HASH_ALGORITHMS: Final = frozenset({"sha256", "sha512"})
MAX_ARMORED_SIZE: Final = 256 * 1024


@final
@dataclass(frozen=True, slots=True)
class SshSignature:
    """A parsed SSHSIG blob.  ``signature`` is the SSH signature blob
    (``string alg, string sig[, flags, counter]``)."""

    public_key: PublicKey
    namespace: str
    hash_algorithm: str
    signature: bytes
    reserved: bytes = b""

    def signed_data(self, message: bytes) -> bytes:
        """The bytes the key signed for ``message`` (section 3 of PROTOCOL.sshsig)."""
        digest = hashlib.new(self.hash_algorithm, message).digest()
        return (
            MAGIC
            + ssh_string(self.namespace)
            + ssh_string(self.reserved)
            + ssh_string(self.hash_algorithm)
            + ssh_string(digest)
        )


def _dearmor(armored: str | bytes) -> bytes:
    if isinstance(armored, bytes | bytearray):
        try:
            armored = bytes(armored).decode("ascii")
        except UnicodeDecodeError:
            raise KeyFormatError("SSH signature: armor is not ASCII") from None
    if not isinstance(armored, str):
        raise KeyFormatError(f"SSH signature: expected str or bytes, not {type(armored).__name__}")
    if len(armored) > MAX_ARMORED_SIZE:
        raise KeyFormatError("SSH signature: too long")
    lines = [line.rstrip("\r") for line in armored.strip().split("\n")]
    if len(lines) < 3 or lines[0] != BEGIN or lines[-1] != END:
        raise KeyFormatError(f"SSH signature: expected {BEGIN} ... {END}")
    return b64decode_strict("".join(lines[1:-1]), "SSH signature")


def parse_sshsig(armored: str | bytes) -> SshSignature:
    """Parse an armored SSH signature; KeyFormatError unless it is a well-formed version 1 SSHSIG."""
    r = Reader(_dearmor(armored), "SSH signature")
    if r.remaining < len(MAGIC) or r.fixed(len(MAGIC)) != MAGIC:
        raise KeyFormatError("SSH signature: bad magic (not SSHSIG)")
    version = r.u32()
    if version != VERSION:
        raise KeyFormatError(f"SSH signature: unsupported version {version}")
    key_blob = r.string()
    namespace = r.text()
    reserved = r.string()
    hash_algorithm = r.text()
    signature = r.string()
    r.done()
    if not namespace:
        raise KeyFormatError("SSH signature: empty namespace")
    if hash_algorithm not in HASH_ALGORITHMS:
        raise KeyFormatError(f"SSH signature: unsupported hash algorithm {hash_algorithm[:32]!r}")
    sig_reader = Reader(signature, "SSH signature")
    sig_reader.text()  # the signature blob must at least name its algorithm
    return SshSignature(decode_public_key(key_blob), namespace, hash_algorithm, signature, reserved)


def verify_sshsig_detailed(sig: SshSignature, message: bytes, namespace: str) -> SignatureCheck:
    """Check ``sig`` over ``message`` in ``namespace``; security-key flags are reported, not judged."""
    if not isinstance(sig, SshSignature):
        raise KeyFormatError("verify_sshsig needs an SshSignature")
    if not isinstance(message, bytes | bytearray | memoryview):
        raise KeyFormatError("the signed message must be bytes")
    if not isinstance(namespace, str) or not namespace or sig.namespace != namespace:
        return SignatureCheck(False, "", detail="namespace mismatch")
    return _verify_detailed(sig.public_key, sig.signature, sig.signed_data(bytes(message)))


def verify_sshsig(sig: SshSignature, message: bytes, namespace: str) -> bool:
    """True when ``sig`` is a valid signature over ``message`` in ``namespace``.

    False on another namespace, an altered message or a bad signature.  A
    security-key signature must also assert user presence; to honour
    ``no-touch-required``/``verify-required`` use
    :func:`verify_sshsig_detailed` and pass ``.flags`` to
    :func:`nxauth.keys.policy.evaluate_key`.
    """
    try:
        check = verify_sshsig_detailed(sig, message, namespace)
    except KeyFormatError:
        return False
    return check.valid and (check.flags is None or check.user_present)
