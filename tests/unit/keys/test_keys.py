"""nxauth.keys.formats against keys made by the real ssh-keygen.

Security-key (sk-*) keys cannot be generated without a FIDO token, so
:func:`sk_key` builds their blobs by hand from a software Ed25519/ECDSA key
and signs the way a token does (PROTOCOL.u2f: the key signs
``SHA256(application) || flags || counter || SHA256(data)``); ``ssh-keygen``
itself then checks the fingerprints of those blobs.
"""

from __future__ import annotations

import copy
import hashlib
import pickle
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from nxauth.errors import KeyFormatError
from nxauth.keys.formats import (
    PublicKey,
    coerce_public_key,
    decode_public_key,
    parse_public_key,
    verify_signature,
    verify_signature_detailed,
)
from nxauth.keys.sshsig import parse_sshsig

SSH_KEYGEN = shutil.which("ssh-keygen")
pytestmark = pytest.mark.skipif(SSH_KEYGEN is None, reason="OpenSSH ssh-keygen is not installed")

KEY_SPECS = {
    "ed25519": ["-t", "ed25519"],
    "ecdsa256": ["-t", "ecdsa", "-b", "256"],
    "ecdsa384": ["-t", "ecdsa", "-b", "384"],
    "ecdsa521": ["-t", "ecdsa", "-b", "521"],
    "rsa2048": ["-t", "rsa", "-b", "2048"],
    "rsa3072": ["-t", "rsa", "-b", "3072"],
    "rsa1024": ["-t", "rsa", "-b", "1024"],
    "dsa": ["-t", "dsa"],
}
LABELS = {"ed25519": "ED25519", "ecdsa": "ECDSA", "rsa": "RSA", "dsa": "DSA"}


def s(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return len(raw).to_bytes(4, "big") + raw


def mpint(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b""
    return s(raw)


def keygen(directory: Path, name: str, *args: str) -> Path:
    path = directory / name
    subprocess.run(
        [SSH_KEYGEN or "ssh-keygen", "-q", "-N", "", "-C", f"{name} comment", "-f", str(path), *args], check=True
    )
    return path


def keygen_l(path: Path) -> tuple[int, str, str]:
    out = subprocess.run([SSH_KEYGEN or "ssh-keygen", "-lf", str(path)], check=True, capture_output=True, text=True)
    fields = out.stdout.split()
    return int(fields[0]), fields[1], fields[-1].strip("()")


def sk_key(
    private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey, application: str = "ssh:"
) -> tuple[PublicKey, Callable[..., bytes]]:
    """A security-key public key built from a software key, and a signer mimicking the token."""
    if isinstance(private, ed25519.Ed25519PrivateKey):
        alg = "sk-ssh-ed25519@openssh.com"
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        blob = s(alg) + s(raw) + s(application)
    else:
        alg = "sk-ecdsa-sha2-nistp256@openssh.com"
        point = private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        blob = s(alg) + s("nistp256") + s(point) + s(application)

    def sign(data: bytes, flags: int = 0x01, counter: int = 7, app: str = application) -> bytes:
        tail = bytes([flags]) + counter.to_bytes(4, "big")
        message = hashlib.sha256(app.encode()).digest() + tail + hashlib.sha256(data).digest()
        if isinstance(private, ed25519.Ed25519PrivateKey):
            inner = s(private.sign(message))
        else:
            r, s_ = decode_dss_signature(private.sign(message, ec.ECDSA(hashes.SHA256())))
            inner = s(mpint(r) + mpint(s_))
        return s(alg) + inner + tail

    return decode_public_key(blob, "sk test key"), sign


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    for name, args in KEY_SPECS.items():
        keygen(directory, name, *args)
    return directory


def load_private(path: Path) -> object:
    return serialization.load_ssh_private_key(path.read_bytes(), None)


@pytest.mark.parametrize("name", list(KEY_SPECS))
def test_fingerprint_and_bits_match_ssh_keygen(keydir: Path, name: str) -> None:
    pub = keydir / f"{name}.pub"
    key = parse_public_key(pub.read_text())
    bits, fingerprint, label = keygen_l(pub)
    assert key.fingerprint == fingerprint
    assert key.bits == bits
    assert key.label == label
    assert key.describe() == f"{label} {fingerprint} {name} comment"
    assert key.to_openssh() == pub.read_text().strip()
    assert decode_public_key(key.blob, key.comment) == key
    assert not key.is_certificate and key.certificate is None and not key.is_security_key
    assert key.base_type == key.key_type


@pytest.mark.parametrize("curve", [ec.SECP256R1(), None], ids=["ecdsa-sk", "ed25519-sk"])
def test_security_key_fingerprint_matches_ssh_keygen(tmp_path: Path, curve: ec.EllipticCurve | None) -> None:
    private = ec.generate_private_key(curve) if curve else ed25519.Ed25519PrivateKey.generate()
    key, _sign = sk_key(private)
    pub = tmp_path / "sk.pub"
    pub.write_text(key.to_openssh() + "\n")
    bits, fingerprint, label = keygen_l(pub)
    assert (key.bits, key.fingerprint, key.label) == (bits, fingerprint, label)
    assert key.is_security_key and key.application == "ssh:"


def test_coerce_public_key(keydir: Path) -> None:
    key = parse_public_key((keydir / "ed25519.pub").read_text())
    assert coerce_public_key(key) is key
    assert coerce_public_key(key.blob).blob == key.blob
    assert coerce_public_key(bytearray(key.blob)).blob == key.blob  # type: ignore[arg-type]
    assert coerce_public_key(key.to_openssh()) == key
    for bad in (None, 42, [key.blob], key.blob.hex().encode()):
        with pytest.raises(KeyFormatError):
            coerce_public_key(bad)  # type: ignore[arg-type]


def test_equality_hash_and_repr(keydir: Path) -> None:
    a = parse_public_key((keydir / "ed25519.pub").read_text())
    b = decode_public_key(a.blob, a.comment)
    c = decode_public_key(a.blob, "other comment")
    assert a == b and hash(a) == hash(b) and len({a, b, c}) == 2
    assert a != c and a.fingerprint == c.fingerprint
    assert a.fingerprint in repr(a) and "AAAA" not in repr(a)


def test_pickle_and_deepcopy(keydir: Path) -> None:
    key = parse_public_key((keydir / "ecdsa256.pub").read_text())
    for clone in (pickle.loads(pickle.dumps(key)), copy.deepcopy(key), copy.copy(key)):
        assert clone == key and clone.fingerprint == key.fingerprint and clone.bits == key.bits


def test_describe_escapes_the_comment(keydir: Path) -> None:
    key = decode_public_key(parse_public_key((keydir / "ed25519.pub").read_text()).blob, "evil\x1b[31m\r" + "x" * 300)
    text = key.describe()
    assert "\x1b" not in text and "\r" not in text and len(text) < 200


def _ed_blob(keydir: Path) -> bytes:
    return parse_public_key((keydir / "ed25519.pub").read_text()).blob


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "expected", id="empty"),
        pytest.param("ssh-ed25519", "expected", id="no-blob"),
        pytest.param("ssh-ed25519 !!!notbase64", "base64", id="bad-base64"),
        pytest.param("ssh-ed25519 AAAA AAAA", "truncated", id="short-blob"),
        pytest.param("ssh-foo AAAAC3NzaC1lZDI1NTE5", "unsupported", id="unknown-type"),
        pytest.param("ssh-ed25519 AAAA\0", "NUL", id="nul"),
    ],
)
def test_parse_public_key_errors(text: str, message: str) -> None:
    with pytest.raises(KeyFormatError, match=message):
        parse_public_key(text)


def test_outer_type_must_match_the_blob(keydir: Path) -> None:
    text = (keydir / "ed25519.pub").read_text().replace("ssh-ed25519", "ssh-rsa", 1)
    with pytest.raises(KeyFormatError, match="does not match"):
        parse_public_key(text)
    with pytest.raises(KeyFormatError, match="does not match"):
        PublicKey("ssh-rsa", _ed_blob(keydir))


def _rsa_blob(e: bytes, n: bytes) -> bytes:
    return s("ssh-rsa") + s(e) + s(n)


P256 = ec.generate_private_key(ec.SECP256R1()).public_key()
P256_POINT = P256.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
P256_COMPRESSED = P256.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


@pytest.mark.parametrize(
    "blob",
    [
        pytest.param(b"", id="empty"),
        pytest.param(s("ssh-ed25519") + s(b"\1" * 31), id="ed25519-short"),
        pytest.param(s("ssh-ed25519") + s(b"\1" * 32) + b"\0", id="trailing-byte"),
        pytest.param(s("ssh-ed25519") + b"\xff\xff\xff\xff", id="length-past-end"),
        pytest.param(s("ssh-dsa") + s(b"x"), id="unknown-type"),
        pytest.param(_rsa_blob(b"\x00\x01\x00\x01", b"\x00\xc1" + b"\1" * 255), id="rsa-e-not-minimal"),
        pytest.param(_rsa_blob(b"\x01\x00\x01", b"\xc1" + b"\1" * 255), id="rsa-n-negative"),
        pytest.param(_rsa_blob(b"\x02", b"\x00\xc1" + b"\1" * 255), id="rsa-e-even"),
        pytest.param(_rsa_blob(b"\x01\x00\x01", b"\x00\xc1" + b"\1" * 2100), id="rsa-too-large"),
        pytest.param(s("ecdsa-sha2-nistp256") + s("nistp384") + s(P256_POINT), id="ecdsa-wrong-curve"),
        pytest.param(s("ecdsa-sha2-nistp256") + s("nistp256") + s(P256_COMPRESSED), id="ecdsa-compressed"),
        pytest.param(s("ecdsa-sha2-nistp256") + s("nistp256") + s(b"\x04" + b"\1" * 64), id="ecdsa-off-curve"),
        pytest.param(s("sk-ssh-ed25519@openssh.com") + s(b"\1" * 32), id="sk-without-application"),
        pytest.param(s("ssh-ed25519-cert-v01@openssh.com") + s(b"nonce"), id="cert-truncated"),
        pytest.param(s(b"ssh-ed25519\0") + s(b"\1" * 32), id="type-with-nul"),
        pytest.param(s(b"\xff\xfe") + s(b"\1" * 32), id="type-not-utf8"),
    ],
)
def test_decode_rejects_malformed_blobs(blob: bytes) -> None:
    with pytest.raises(KeyFormatError):
        decode_public_key(blob)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(KeyFormatError):
        decode_public_key("ssh-ed25519 AAAA")  # type: ignore[arg-type]


def _signed_by_ssh_keygen(keydir: Path, name: str, tmp_path: Path) -> tuple[PublicKey, bytes, bytes]:
    """The SSH signature blob ssh-keygen made, and the data it signed (from an SSHSIG)."""
    message = b"data to sign\n"
    out = subprocess.run(
        [SSH_KEYGEN or "ssh-keygen", "-q", "-Y", "sign", "-n", "nxauth", "-f", str(keydir / name)],
        input=message,
        capture_output=True,
        check=True,
    )
    sig = parse_sshsig(out.stdout)
    return sig.public_key, sig.signature, sig.signed_data(message)


@pytest.mark.parametrize("name", ["ed25519", "ecdsa256", "ecdsa384", "ecdsa521", "rsa2048", "rsa3072"])
def test_verify_signature_made_by_ssh_keygen(keydir: Path, tmp_path: Path, name: str) -> None:
    key, signature, data = _signed_by_ssh_keygen(keydir, name, tmp_path)
    assert verify_signature(key, signature, data)
    check = verify_signature_detailed(key, signature, data)
    assert check.valid and check.flags is None and check.counter is None
    assert not verify_signature(key, signature, data + b"x")
    assert not verify_signature(key, signature, data, allowed_algorithms=frozenset({"nothing"}))
    assert verify_signature(key, signature, data, allowed_algorithms=frozenset({check.algorithm}))
    flipped = bytearray(signature)
    flipped[-3] ^= 0x01
    assert not verify_signature(key, bytes(flipped), data)


def test_dsa_signatures_never_verify(keydir: Path, tmp_path: Path) -> None:
    key, signature, data = _signed_by_ssh_keygen(keydir, "dsa", tmp_path)
    assert key.base_type == "ssh-dss"
    assert not verify_signature(key, signature, data)


def test_signature_of_another_key_type_is_refused(keydir: Path, tmp_path: Path) -> None:
    _, signature, data = _signed_by_ssh_keygen(keydir, "ed25519", tmp_path)
    other = parse_public_key((keydir / "ecdsa256.pub").read_text())
    assert not verify_signature(other, signature, data)


def test_rsa_sha1_refused_sha2_accepted(keydir: Path) -> None:
    private = load_private(keydir / "rsa2048")
    assert isinstance(private, rsa.RSAPrivateKey)
    key = parse_public_key((keydir / "rsa2048.pub").read_text())
    data = b"payload"
    for alg, digest, expected in (
        ("ssh-rsa", hashes.SHA1(), False),
        ("rsa-sha2-256", hashes.SHA256(), True),
        ("rsa-sha2-512", hashes.SHA512(), True),
        ("rsa-sha2-256", hashes.SHA512(), False),
    ):
        blob = s(alg) + s(private.sign(data, padding.PKCS1v15(), digest))
        assert verify_signature(key, blob, data) is expected, alg


def test_rsa_signature_shorter_than_modulus_is_padded(keydir: Path) -> None:
    """sshd left-pads a short RSA signature; so must we."""
    private = load_private(keydir / "rsa1024")
    assert isinstance(private, rsa.RSAPrivateKey)
    key = parse_public_key((keydir / "rsa1024.pub").read_text())
    for i in range(5000):
        data = b"%d" % i
        raw = private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        if raw[0] == 0:
            break
    else:
        pytest.fail("no signature with a leading zero byte")
    assert verify_signature(key, s("rsa-sha2-256") + s(raw[1:]), data)
    assert not verify_signature(key, s("rsa-sha2-256") + s(b"\1" + raw), data)


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(b"", id="empty"),
        pytest.param(s("ssh-ed25519"), id="no-signature"),
        pytest.param(s("ssh-ed25519") + s(b"\0" * 64) + b"x", id="trailing"),
        pytest.param(s("ssh-ed25519") + s(b"\0" * 63), id="short-ed25519"),
        pytest.param(s("ssh-ed25519") + b"\0\0\1\0", id="length-past-end"),
    ],
)
def test_malformed_signature_blobs_raise(keydir: Path, signature: bytes) -> None:
    key = parse_public_key((keydir / "ed25519.pub").read_text())
    with pytest.raises(KeyFormatError):
        verify_signature(key, signature, b"data")


@pytest.mark.parametrize("curve", [ec.SECP256R1(), None], ids=["ecdsa-sk", "ed25519-sk"])
def test_security_key_signatures(curve: ec.EllipticCurve | None) -> None:
    private = ec.generate_private_key(curve) if curve else ed25519.Ed25519PrivateKey.generate()
    key, sign = sk_key(private)
    data = b"challenge"
    check = verify_signature_detailed(key, sign(data, flags=0x05, counter=42), data)
    assert check.valid and check.flags == 0x05 and check.counter == 42
    assert check.user_present and check.user_verified
    assert verify_signature(key, sign(data, flags=0x01), data)
    no_touch = verify_signature_detailed(key, sign(data, flags=0x00), data)
    assert no_touch.valid and not no_touch.user_present
    assert not verify_signature(key, sign(data, flags=0x00), data), "no user presence: refused by default"
    assert not verify_signature(key, sign(data, app="ssh:other"), data)
    assert not verify_signature(key, sign(data), data + b"!")
    forged = bytearray(sign(data, flags=0x00))
    forged[-5] = 0x01  # claim presence after the fact: the flags are signed
    assert not verify_signature(key, bytes(forged), data)
    with pytest.raises(KeyFormatError):
        verify_signature(key, sign(data)[:-1], data)
