"""SSHSIG (PROTOCOL.sshsig) against the real ``ssh-keygen -Y`` and ``ssh-agent``.

Signatures made by ssh-keygen (from key files and through a running agent)
must verify here; signatures accepted here must pass ``ssh-keygen -Y
verify``.  Security-key signatures are built by hand (see
:func:`sk_signer`), since no FIDO token is available, and ssh-keygen checks
them too.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from nxauth.errors import KeyFormatError
from nxauth.keys.formats import PublicKey, decode_public_key, parse_public_key
from nxauth.keys.sshsig import SshSignature, parse_sshsig, verify_sshsig, verify_sshsig_detailed

SSH_KEYGEN = shutil.which("ssh-keygen")
SSH_AGENT = shutil.which("ssh-agent")
SSH_ADD = shutil.which("ssh-add")
pytestmark = pytest.mark.skipif(SSH_KEYGEN is None, reason="OpenSSH ssh-keygen is not installed")
NS = "nxauth"
MESSAGE = b"nxauth-challenge-v1:session:0123456789\n"
KEY_SPECS = {
    "ed25519": ["-t", "ed25519"],
    "ecdsa256": ["-t", "ecdsa", "-b", "256"],
    "ecdsa384": ["-t", "ecdsa", "-b", "384"],
    "ecdsa521": ["-t", "ecdsa", "-b", "521"],
    "rsa2048": ["-t", "rsa", "-b", "2048"],
}


def s(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return len(raw).to_bytes(4, "big") + raw


def mpint(value: int) -> bytes:
    return s(value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b"")


def keygen(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> bytes:
    return subprocess.run(
        [SSH_KEYGEN or "ssh-keygen", *args], input=stdin, capture_output=True, check=True, env=env
    ).stdout


def armor(blob: bytes) -> str:
    body = base64.b64encode(blob).decode()
    lines = [body[i : i + 70] for i in range(0, len(body), 70)]
    return "\n".join(["-----BEGIN SSH SIGNATURE-----", *lines, "-----END SSH SIGNATURE-----"]) + "\n"


def sshsig_blob(
    key_blob: bytes, signature: bytes, *, namespace: str = NS, hash_alg: str = "sha512", version: int = 1
) -> bytes:
    return b"SSHSIG" + version.to_bytes(4, "big") + s(key_blob) + s(namespace) + s(b"") + s(hash_alg) + s(signature)


def signed_data(message: bytes, namespace: str = NS, hash_alg: str = "sha512") -> bytes:
    digest = hashlib.new(hash_alg, message).digest()
    return b"SSHSIG" + s(namespace) + s(b"") + s(hash_alg) + s(digest)


def sk_signer(
    private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey,
) -> tuple[PublicKey, Callable[..., str]]:
    """A hand-made security key and a function producing its armored SSHSIG (PROTOCOL.u2f signing)."""
    if isinstance(private, ed25519.Ed25519PrivateKey):
        alg = "sk-ssh-ed25519@openssh.com"
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        blob = s(alg) + s(raw) + s("ssh:")
    else:
        alg = "sk-ecdsa-sha2-nistp256@openssh.com"
        point = private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        blob = s(alg) + s("nistp256") + s(point) + s("ssh:")

    def sign(message: bytes, flags: int = 0x01) -> str:
        tail = bytes([flags]) + (5).to_bytes(4, "big")
        signed = hashlib.sha256(b"ssh:").digest() + tail + hashlib.sha256(signed_data(message)).digest()
        if isinstance(private, ed25519.Ed25519PrivateKey):
            inner = s(private.sign(signed))
        else:
            r, s_ = decode_dss_signature(private.sign(signed, ec.ECDSA(hashes.SHA256())))
            inner = s(mpint(r) + mpint(s_))
        return armor(sshsig_blob(blob, s(alg) + inner + tail))

    return decode_public_key(blob), sign


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sshsig")
    for name, args in KEY_SPECS.items():
        keygen("-q", "-N", "", "-C", name, "-f", str(directory / name), *args)
    return directory


def ssh_keygen_verify(directory: Path, key: PublicKey, armored: str, message: bytes, namespace: str = NS) -> bool:
    signers = directory / "allowed_signers"
    signers.write_text(f'tester namespaces="{namespace}" {key.key_type} {base64.b64encode(key.blob).decode()}\n')
    sig = directory / "candidate.sig"
    sig.write_text(armored)
    result = subprocess.run(
        [
            SSH_KEYGEN or "ssh-keygen",
            "-Y",
            "verify",
            "-f",
            str(signers),
            "-I",
            "tester",
            "-n",
            namespace,
            "-s",
            str(sig),
        ],
        input=message,
        capture_output=True,
    )
    return result.returncode == 0


@pytest.mark.parametrize("hash_alg", ["sha512", "sha256"])
@pytest.mark.parametrize("name", list(KEY_SPECS))
def test_ssh_keygen_signatures_verify(keydir: Path, tmp_path: Path, name: str, hash_alg: str) -> None:
    armored = keygen("-q", "-Y", "sign", "-n", NS, "-O", f"hashalg={hash_alg}", "-f", str(keydir / name), stdin=MESSAGE)
    sig = parse_sshsig(armored)
    assert sig.public_key.blob == parse_public_key((keydir / f"{name}.pub").read_text()).blob
    assert sig.namespace == NS and sig.hash_algorithm == hash_alg and sig.reserved == b""
    assert verify_sshsig(sig, MESSAGE, NS)
    assert parse_sshsig(armored.decode()) == sig
    assert not verify_sshsig(sig, MESSAGE, "git")
    assert not verify_sshsig(sig, MESSAGE + b"x", NS)
    assert not verify_sshsig(sig, MESSAGE[:-1], NS)
    assert not verify_sshsig(sig, MESSAGE, "")
    # the reverse: what we accept, ssh-keygen accepts
    assert ssh_keygen_verify(tmp_path, sig.public_key, armored.decode(), MESSAGE)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[dict[str, str]]:
    if SSH_AGENT is None or SSH_ADD is None:
        pytest.skip("ssh-agent / ssh-add are not installed")
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen([SSH_AGENT, "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.01)
        else:
            pytest.fail("ssh-agent did not create its socket")
        yield {**os.environ, "SSH_AUTH_SOCK": str(sock)}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("name", ["ed25519", "ecdsa256", "rsa2048"])
def test_signature_made_through_ssh_agent(keydir: Path, tmp_path: Path, agent: dict[str, str], name: str) -> None:
    subprocess.run([SSH_ADD or "ssh-add", "-q", str(keydir / name)], check=True, env=agent, capture_output=True)
    pub = tmp_path / f"{name}.pub"
    shutil.copy(keydir / f"{name}.pub", pub)  # only the public half: the agent signs
    armored = keygen("-q", "-Y", "sign", "-n", NS, "-f", str(pub), stdin=MESSAGE, env=agent)
    sig = parse_sshsig(armored)
    assert verify_sshsig(sig, MESSAGE, NS)
    assert not verify_sshsig(sig, b"other", NS)
    if name.startswith("rsa"):
        assert sig.signature[4:16] == b"rsa-sha2-512"


@pytest.mark.parametrize("curve", [ec.SECP256R1(), None], ids=["ecdsa-sk", "ed25519-sk"])
def test_security_key_signatures(tmp_path: Path, curve: ec.EllipticCurve | None) -> None:
    key, sign = sk_signer(ec.generate_private_key(curve) if curve else ed25519.Ed25519PrivateKey.generate())
    armored = sign(MESSAGE, flags=0x05)
    sig = parse_sshsig(armored)
    assert verify_sshsig(sig, MESSAGE, NS)
    check = verify_sshsig_detailed(sig, MESSAGE, NS)
    assert check.valid and check.flags == 0x05 and check.counter == 5 and check.user_verified
    assert ssh_keygen_verify(tmp_path, key, armored, MESSAGE), "ssh-keygen accepts the hand-made signature"
    untouched = parse_sshsig(sign(MESSAGE, flags=0x00))
    assert verify_sshsig_detailed(untouched, MESSAGE, NS).valid
    assert not verify_sshsig(untouched, MESSAGE, NS), "no user presence: refused unless asked otherwise"
    assert not verify_sshsig(sig, MESSAGE + b"!", NS)


def test_sha1_rsa_signature_refused_here_and_by_ssh_keygen(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = private.public_key().public_numbers()
    key_blob = s("ssh-rsa") + mpint(n.e) + mpint(n.n)
    for alg, digest, ok in (("ssh-rsa", hashes.SHA1(), False), ("rsa-sha2-256", hashes.SHA256(), True)):
        raw = private.sign(signed_data(MESSAGE), padding.PKCS1v15(), digest)
        armored = armor(sshsig_blob(key_blob, s(alg) + s(raw)))
        assert verify_sshsig(parse_sshsig(armored), MESSAGE, NS) is ok
        assert ssh_keygen_verify(tmp_path, decode_public_key(key_blob), armored, MESSAGE) is ok


def _good_blob() -> tuple[bytes, bytes]:
    private = ed25519.Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_blob = s("ssh-ed25519") + s(raw)
    return key_blob, s("ssh-ed25519") + s(private.sign(signed_data(MESSAGE)))


KEY_BLOB, SIGNATURE = _good_blob()


@pytest.mark.parametrize(
    ("armored", "message"),
    [
        pytest.param("", "BEGIN", id="empty"),
        pytest.param("not a signature", "BEGIN", id="no-armor"),
        pytest.param(
            armor(sshsig_blob(KEY_BLOB, SIGNATURE)).replace("BEGIN SSH SIGNATURE", "BEGIN SSH SIG"),
            "BEGIN",
            id="bad-header",
        ),
        pytest.param(
            armor(sshsig_blob(KEY_BLOB, SIGNATURE)).replace("-----END SSH SIGNATURE-----", ""), "END", id="no-footer"
        ),
        pytest.param(armor(b"SSHSIH" + sshsig_blob(KEY_BLOB, SIGNATURE)[6:]), "magic", id="bad-magic"),
        pytest.param(armor(sshsig_blob(KEY_BLOB, SIGNATURE, version=2)), "version", id="version-2"),
        pytest.param(armor(sshsig_blob(KEY_BLOB, SIGNATURE, namespace="")), "namespace", id="empty-namespace"),
        pytest.param(armor(sshsig_blob(KEY_BLOB, SIGNATURE, hash_alg="sha1")), "hash", id="sha1-hash"),
        pytest.param(armor(sshsig_blob(KEY_BLOB, SIGNATURE) + b"\0"), "trailing", id="trailing-bytes"),
        pytest.param(armor(sshsig_blob(KEY_BLOB, SIGNATURE)[:-3]), "truncated", id="truncated"),
        pytest.param(armor(sshsig_blob(KEY_BLOB[:-1], SIGNATURE)), "truncated", id="bad-key"),
        pytest.param(armor(sshsig_blob(KEY_BLOB, b"")), "truncated", id="empty-signature"),
        pytest.param(armor(b"SSHSIG"), "truncated", id="magic-only"),
        pytest.param("-----BEGIN SSH SIGNATURE-----\n%%%%\n-----END SSH SIGNATURE-----", "base64", id="bad-base64"),
        pytest.param("-----BEGIN SSH SIGNATURE-----\n-----END SSH SIGNATURE-----", "BEGIN", id="no-body"),
        pytest.param(
            "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----" + "x" * 300_000, "long", id="huge"
        ),
    ],
)
def test_parse_errors(armored: str, message: str) -> None:
    with pytest.raises(KeyFormatError, match=message):
        parse_sshsig(armored)


def test_parse_accepts_crlf_and_surrounding_whitespace() -> None:
    armored = armor(sshsig_blob(KEY_BLOB, SIGNATURE))
    sig = parse_sshsig("\n  " + armored.replace("\n", "\r\n") + "\n\n")
    assert verify_sshsig(sig, MESSAGE, NS)


def test_parse_refuses_non_ascii_and_wrong_types() -> None:
    with pytest.raises(KeyFormatError):
        parse_sshsig("-----BEGIN SSH SIGNATURE-----\né\n-----END SSH SIGNATURE-----".encode())
    with pytest.raises(KeyFormatError):
        parse_sshsig(12)  # type: ignore[arg-type]


def test_verify_refuses_a_mangled_signature_blob() -> None:
    sig = parse_sshsig(armor(sshsig_blob(KEY_BLOB, SIGNATURE)))
    mangled = SshSignature(sig.public_key, sig.namespace, sig.hash_algorithm, sig.signature[:-1])
    assert not verify_sshsig(mangled, MESSAGE, NS)
    with pytest.raises(KeyFormatError):
        verify_sshsig_detailed(mangled, MESSAGE, NS)
