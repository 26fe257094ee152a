"""nxauth.keys.formats' certificates against certificates signed by the real ``ssh-keygen -s``.

Malformed certificates are built by hand with :func:`build_cert` (checked
against ``ssh-keygen -L`` on a well-formed one).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from nxauth.errors import KeyFormatError
from nxauth.keys.formats import (
    CERT_TYPE_HOST,
    CERT_TYPE_USER,
    FOREVER,
    Certificate,
    PublicKey,
    decode_certificate,
    decode_public_key,
    parse_public_key,
)

SSH_KEYGEN = shutil.which("ssh-keygen")
pytestmark = pytest.mark.skipif(SSH_KEYGEN is None, reason="OpenSSH ssh-keygen is not installed")
CERT_ED25519 = "ssh-ed25519-cert-v01@openssh.com"


def s(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return len(raw).to_bytes(4, "big") + raw


def run_keygen(*args: str) -> str:
    return subprocess.run([SSH_KEYGEN or "ssh-keygen", *args], check=True, capture_output=True, text=True).stdout


def keygen(directory: Path, name: str, *args: str) -> Path:
    path = directory / name
    run_keygen("-q", "-N", "", "-C", name, "-f", str(path), *args)
    return path


def sign_cert(directory: Path, ca: str, key: str, *args: str) -> PublicKey:
    """ssh-keygen -s CA ... key.pub; return the certificate as a PublicKey."""
    run_keygen("-q", "-s", str(directory / ca), *args, str(directory / f"{key}.pub"))
    return parse_public_key((directory / f"{key}-cert.pub").read_text())


def ed25519_raw(private: ed25519.Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def options(items: list[tuple[str, bytes]]) -> bytes:
    return b"".join(s(name) + s(data) for name, data in items)


def build_cert(
    ca: ed25519.Ed25519PrivateKey,
    *,
    ca_blob: bytes | None = None,
    key_type: str = CERT_ED25519,
    serial: int = 7,
    cert_type: int = CERT_TYPE_USER,
    key_id: bytes = b"hand-made",
    principals: list[bytes] | None = None,
    valid_after: int = 0,
    valid_before: int = FOREVER,
    critical: list[tuple[str, bytes]] | None = None,
    extensions: list[tuple[str, bytes]] | None = None,
    signature: bytes | None = None,
) -> bytes:
    """An Ed25519 user certificate signed by the Ed25519 ``ca`` (or with ``ca_blob`` as signature key)."""
    subject = ed25519_raw(ed25519.Ed25519PrivateKey.generate())
    body = (
        s(key_type)
        + s(b"\x11" * 32)
        + s(subject)
        + serial.to_bytes(8, "big")
        + cert_type.to_bytes(4, "big")
        + s(key_id)
        + s(b"".join(s(p) for p in (principals if principals is not None else [b"nx"])))
        + valid_after.to_bytes(8, "big")
        + valid_before.to_bytes(8, "big")
        + s(options(critical or []))
        + s(options(extensions if extensions is not None else [("permit-pty", b"")]))
        + s(b"")
        + s(ca_blob if ca_blob is not None else s("ssh-ed25519") + s(ed25519_raw(ca)))
    )
    return body + s(signature if signature is not None else s("ssh-ed25519") + s(ca.sign(body)))


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    keygen(directory, "ca", "-t", "ed25519")
    keygen(directory, "ca_rsa", "-t", "rsa", "-b", "3072")
    keygen(directory, "ca_ecdsa", "-t", "ecdsa", "-b", "384")
    keygen(directory, "user", "-t", "ed25519")
    keygen(directory, "user_rsa", "-t", "rsa", "-b", "2048")
    keygen(directory, "user_ecdsa", "-t", "ecdsa", "-b", "256")
    return directory


def test_fields_of_an_ssh_keygen_certificate(keydir: Path) -> None:
    before = int(time.time())
    key = sign_cert(
        keydir,
        "ca",
        "user",
        "-I",
        "alice@example",
        "-n",
        "nx,ops",
        "-z",
        "42",
        "-V",
        "-5m:+1h",
        "-O",
        "force-command=/usr/bin/nxauth login",
        "-O",
        "source-address=10.0.0.0/8,2001:db8::/32",
    )
    cert = key.certificate
    assert isinstance(cert, Certificate)
    assert key.is_certificate and key.key_type == CERT_ED25519 and key.base_type == "ssh-ed25519"
    assert cert.key_id == "alice@example" and cert.serial == 42 and cert.principals == ("nx", "ops")
    assert cert.cert_type == CERT_TYPE_USER and cert.is_user and not cert.is_host
    assert before - 300 - 5 <= cert.valid_after <= before - 300 + 5
    assert before + 3600 - 5 <= cert.valid_before <= before + 3600 + 5
    assert cert.valid_at(time.time()) and not cert.valid_at(cert.valid_before)
    assert dict(cert.critical_options) == {
        "force-command": "/usr/bin/nxauth login",
        "source-address": "10.0.0.0/8,2001:db8::/32",
    }
    assert set(cert.extensions) == {
        "permit-X11-forwarding",
        "permit-agent-forwarding",
        "permit-port-forwarding",
        "permit-pty",
        "permit-user-rc",
    }
    assert cert.signature_key.blob == parse_public_key((keydir / "ca.pub").read_text()).blob
    assert cert.public_key.blob == parse_public_key((keydir / "user.pub").read_text()).blob
    assert cert.verify()
    assert decode_certificate(key.blob) == cert
    assert 'ID "alice@example" (serial 42) CA ED25519 SHA256:' in cert.describe()


@pytest.mark.parametrize("user", ["user", "user_rsa", "user_ecdsa"])
@pytest.mark.parametrize("ca", ["ca", "ca_rsa", "ca_ecdsa"])
def test_every_ca_type_verifies_and_fingerprints_match(keydir: Path, ca: str, user: str) -> None:
    key = sign_cert(keydir, ca, user, "-I", "id", "-n", "nx")
    assert key.certificate is not None and key.certificate.verify()
    out = run_keygen("-lf", str(keydir / f"{user}-cert.pub")).split()
    assert key.fingerprint == out[1] == parse_public_key((keydir / f"{user}.pub").read_text()).fingerprint
    assert key.bits == int(out[0]) and key.label == out[-1].strip("()")
    if ca == "ca_rsa":
        assert key.certificate.signature[4:16] == b"rsa-sha2-512"


@pytest.mark.parametrize(
    ("args", "extensions", "critical"),
    [
        pytest.param(["-O", "clear"], set(), {}, id="clear"),
        pytest.param(
            ["-O", "no-pty", "-O", "no-x11-forwarding"],
            {"permit-agent-forwarding", "permit-port-forwarding", "permit-user-rc"},
            {},
            id="no-pty",
        ),
        pytest.param(["-O", "clear", "-O", "verify-required"], set(), {"verify-required": ""}, id="verify-required"),
        pytest.param(["-O", "clear", "-O", "no-touch-required"], {"no-touch-required"}, {}, id="no-touch-required"),
        pytest.param(
            ["-O", "clear", "-O", "extension:nx@example.com=value"], {"nx@example.com"}, {}, id="custom-extension"
        ),
        pytest.param(
            ["-O", "clear", "-O", "critical:nx@example.com=value"],
            set(),
            {"nx@example.com": "value"},
            id="custom-critical",
        ),
    ],
)
def test_options_and_extensions(keydir: Path, args: list[str], extensions: set[str], critical: dict[str, str]) -> None:
    cert = sign_cert(keydir, "ca", "user", "-I", "id", "-n", "nx", *args).certificate
    assert cert is not None and cert.verify()
    assert set(cert.extensions) == extensions
    assert dict(cert.critical_options) == critical


def test_host_certificate(keydir: Path) -> None:
    cert = sign_cert(keydir, "ca", "user", "-h", "-I", "host", "-n", "server.example").certificate
    assert cert is not None and cert.cert_type == CERT_TYPE_HOST and cert.is_host


def test_security_key_certificate(keydir: Path, tmp_path: Path) -> None:
    raw = ed25519_raw(ed25519.Ed25519PrivateKey.generate())
    sk = decode_public_key(s("sk-ssh-ed25519@openssh.com") + s(raw) + s("ssh:"), "sk")
    (keydir / "skuser.pub").write_text(sk.to_openssh() + "\n")
    key = sign_cert(keydir, "ca", "skuser", "-I", "sk", "-n", "nx")
    assert key.key_type == "sk-ssh-ed25519-cert-v01@openssh.com" and key.base_type == "sk-ssh-ed25519@openssh.com"
    assert key.is_security_key and key.application == "ssh:" and key.fingerprint == sk.fingerprint
    assert key.certificate is not None and key.certificate.verify()
    assert key.certificate.public_key.blob == sk.blob


def test_hand_built_certificate_is_what_ssh_keygen_reads(tmp_path: Path) -> None:
    ca = ed25519.Ed25519PrivateKey.generate()
    blob = build_cert(ca, key_id=b"builder", principals=[b"nx", b"ops"], serial=99)
    key = decode_public_key(blob, "built")
    (tmp_path / "built-cert.pub").write_text(key.to_openssh() + "\n")
    listing = run_keygen("-L", "-f", str(tmp_path / "built-cert.pub"))
    assert 'Key ID: "builder"' in listing and "Serial: 99" in listing and "ops" in listing
    assert key.certificate is not None and key.certificate.verify()


def test_tampered_certificate_does_not_verify() -> None:
    ca = ed25519.Ed25519PrivateKey.generate()
    blob = bytearray(build_cert(ca, key_id=b"honest"))
    at = blob.index(b"honest")
    blob[at : at + 6] = b"forged"
    cert = decode_certificate(bytes(blob))
    assert cert.key_id == "forged" and not cert.verify()


def test_wrong_ca_does_not_verify() -> None:
    ca, other = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    blob = build_cert(ca, ca_blob=s("ssh-ed25519") + s(ed25519_raw(other)))
    assert not decode_certificate(blob).verify()


def test_sha1_rsa_ca_signature_is_refused() -> None:
    ca_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = ca_rsa.public_key().public_numbers()

    def mp(v: int) -> bytes:
        return s(v.to_bytes((v.bit_length() + 8) // 8, "big"))

    ca_blob = s("ssh-rsa") + mp(numbers.e) + mp(numbers.n)
    unsigned = build_cert(ed25519.Ed25519PrivateKey.generate(), ca_blob=ca_blob, signature=b"")
    body = unsigned[: -len(s(b""))]
    for alg, digest, ok in (("ssh-rsa", hashes.SHA1(), False), ("rsa-sha2-256", hashes.SHA256(), True)):
        sig = s(alg) + s(ca_rsa.sign(body, padding.PKCS1v15(), digest))
        assert decode_certificate(body + s(sig)).verify() is ok


def test_ca_that_is_a_certificate() -> None:
    root = ed25519.Ed25519PrivateKey.generate()
    intermediate = build_cert(root)
    chained = build_cert(root, ca_blob=intermediate)
    with pytest.raises(KeyFormatError, match="CA key of a certificate is itself a certificate"):
        decode_certificate(chained)  # refused when parsed, as sshd's cert_parse does


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"cert_type": 3}, id="unknown-cert-type"),
        pytest.param({"critical": [("force-command", s("a")), ("force-command", s("b"))]}, id="duplicate-critical"),
        pytest.param({"extensions": [("permit-pty", b""), ("permit-pty", b"")]}, id="duplicate-extension"),
        pytest.param({"principals": [b"p%d" % i for i in range(257)]}, id="too-many-principals"),
        pytest.param({"principals": [b"n\0x"]}, id="principal-with-nul"),
        pytest.param({"key_id": b"\xff"}, id="key-id-not-utf8"),
        pytest.param({"ca_blob": b"garbage"}, id="ca-garbage"),
        pytest.param({"key_type": "ssh-rsa-cert-v01@openssh.com"}, id="inner-type-mismatch"),
    ],
)
def test_malformed_certificates(kwargs: dict[str, object]) -> None:
    blob = build_cert(ed25519.Ed25519PrivateKey.generate(), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(KeyFormatError):
        decode_certificate(blob)


def test_truncated_and_trailing() -> None:
    blob = build_cert(ed25519.Ed25519PrivateKey.generate())
    decode_certificate(blob)
    for cut in range(len(blob)):
        with pytest.raises(KeyFormatError):
            decode_certificate(blob[:cut])
    with pytest.raises(KeyFormatError, match="trailing"):
        decode_certificate(blob + b"\0")


def test_decode_certificate_refuses_plain_keys_and_non_bytes() -> None:
    plain = s("ssh-ed25519") + s(ed25519_raw(ed25519.Ed25519PrivateKey.generate()))
    with pytest.raises(KeyFormatError, match="not a certificate"):
        decode_certificate(plain)
    with pytest.raises(KeyFormatError):
        decode_certificate("AAAA")  # type: ignore[arg-type]


def test_ecdsa_ca_point_checked() -> None:
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    bad = bytearray(point)
    bad[-1] ^= 1
    blob = build_cert(
        ed25519.Ed25519PrivateKey.generate(), ca_blob=s("ecdsa-sha2-nistp256") + s("nistp256") + s(bytes(bad))
    )
    with pytest.raises(KeyFormatError):
        decode_certificate(blob)
