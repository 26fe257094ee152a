"""The stage-1 decision (nxauth.keys.policy.evaluate_key) with keys and certificates from the real ssh-keygen.

Security-key public keys are built by hand from software Ed25519 keys (no
FIDO token is available); ssh-keygen signs certificates for them all the
same, and their signature flags are passed as the caller would.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from nxauth.keys.authorized_keys import AuthorizedKey, parse_authorized_key
from nxauth.keys.formats import PublicKey, decode_public_key, parse_public_key
from nxauth.keys.policy import KeyDecision, KeyPolicy, evaluate_key, lookup_blob
from nxauth.model import Reason

SSH_KEYGEN = shutil.which("ssh-keygen")
pytestmark = pytest.mark.skipif(SSH_KEYGEN is None, reason="OpenSSH ssh-keygen is not installed")
PEER = "198.51.100.7"
ALL_RESTRICTIONS = frozenset({"no-pty", "no-port-forwarding", "no-agent-forwarding", "no-x11-forwarding", "no-user-rc"})


def run_keygen(*args: str) -> None:
    subprocess.run([SSH_KEYGEN or "ssh-keygen", *args], check=True, capture_output=True)


def s(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return len(raw).to_bytes(4, "big") + raw


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("policy")
    specs = {
        "ca": ["-t", "ed25519"],
        "ca_ecdsa": ["-t", "ecdsa"],
        "ca_rsa1024": ["-t", "rsa", "-b", "1024"],
        "ca_dsa": ["-t", "dsa"],
        "user": ["-t", "ed25519"],
        "ecdsa": ["-t", "ecdsa"],
        "rsa1024": ["-t", "rsa", "-b", "1024"],
        "rsa2048": ["-t", "rsa", "-b", "2048"],
        "dsa": ["-t", "dsa"],
    }
    for name, args in specs.items():
        run_keygen("-q", "-N", "", "-C", name, "-f", str(directory / name), *args)
    raw = ed25519.Ed25519PrivateKey.generate().public_key()
    sk = decode_public_key(
        s("sk-ssh-ed25519@openssh.com")
        + s(raw.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
        + s("ssh:"),
        "sk",
    )
    (directory / "sk.pub").write_text(sk.to_openssh() + "\n")
    return directory


def pub(keydir: Path, name: str) -> PublicKey:
    return parse_public_key((keydir / f"{name}.pub").read_text())


def cert(keydir: Path, *args: str, ca: str = "ca", key: str = "user") -> PublicKey:
    run_keygen("-q", "-s", str(keydir / ca), "-I", "cert-id", *args, str(keydir / f"{key}.pub"))
    return parse_public_key((keydir / f"{key}-cert.pub").read_text())


def entry(key: PublicKey, options: str = "", lineno: int = 1) -> AuthorizedKey:
    parsed = parse_authorized_key(f"{options} {key.to_openssh()}".strip(), lineno)
    assert parsed is not None
    return parsed


def decide(
    key: PublicKey,
    entries: list[Any],
    *,
    policy: KeyPolicy | None = None,
    account: str = "nx",
    peer: str | None = PEER,
    now: float | None = None,
    flags: int | None = None,
) -> KeyDecision:
    return evaluate_key(
        policy or KeyPolicy(),
        key,
        entries,
        account=account,
        peer_host=peer,
        now=time.time() if now is None else now,
        signature_flags=flags,
    )


def test_plain_key_allowed(keydir: Path) -> None:
    key = pub(keydir, "user")
    e = entry(key)
    d = decide(key, [e])
    assert d.allowed and d.reason is Reason.OK and d.entry is e
    assert d.forced_command is None and d.restrictions == frozenset() and dict(d.options) == {}
    assert d.expires is None and d.certificate_id is None and key.fingerprint in d.detail


def test_unknown_key(keydir: Path) -> None:
    key = pub(keydir, "user")
    assert decide(key, []).reason is Reason.UNKNOWN_KEY
    other = entry(pub(keydir, "ecdsa"))
    d = decide(key, [other])
    assert not d.allowed and d.reason is Reason.UNKNOWN_KEY and d.entry is None


def test_lookup_blob(keydir: Path) -> None:
    key = pub(keydir, "user")
    assert lookup_blob(key) == key.blob
    assert lookup_blob(cert(keydir, "-n", "nx")) == pub(keydir, "ca").blob


def test_cert_authority_and_plain_entries_do_not_mix(keydir: Path) -> None:
    key = pub(keydir, "user")
    d = decide(key, [entry(key, "cert-authority")])
    assert d.reason is Reason.UNKNOWN_KEY and "cert-authority" in d.detail
    c = cert(keydir, "-n", "nx")
    d = decide(c, [entry(pub(keydir, "ca"))])
    assert d.reason is Reason.UNKNOWN_KEY and "without cert-authority" in d.detail


@pytest.mark.parametrize(
    ("name", "policy", "reason"),
    [
        pytest.param("dsa", KeyPolicy(), Reason.KEY_TYPE_REFUSED, id="dsa"),
        pytest.param("dsa", KeyPolicy(allowed_types=frozenset({"ssh-dss"})), Reason.KEY_TYPE_REFUSED, id="dsa-listed"),
        pytest.param("rsa1024", KeyPolicy(), Reason.KEY_TOO_WEAK, id="rsa1024"),
        pytest.param("rsa2048", KeyPolicy(rsa_min_bits=3072), Reason.KEY_TOO_WEAK, id="rsa2048-min3072"),
        pytest.param("rsa2048", KeyPolicy(), Reason.OK, id="rsa2048"),
        pytest.param(
            "ecdsa",
            KeyPolicy(allowed_types=frozenset({"ssh-ed25519"})),
            Reason.KEY_TYPE_REFUSED,
            id="ecdsa-not-allowed",
        ),
        pytest.param("ecdsa", KeyPolicy(), Reason.OK, id="ecdsa"),
        pytest.param("user", KeyPolicy(allowed_types=frozenset()), Reason.KEY_TYPE_REFUSED, id="nothing-allowed"),
    ],
)
def test_key_type_policy(keydir: Path, name: str, policy: KeyPolicy, reason: Reason) -> None:
    key = pub(keydir, name)
    e = entry(key)
    d = decide(key, [e], policy=policy)
    assert d.reason is reason and d.allowed is (reason is Reason.OK)
    if not d.allowed:
        assert d.entry is e and key.fingerprint in d.detail


@pytest.mark.parametrize(
    ("options", "peer", "reason"),
    [
        pytest.param('from="198.51.100.0/24"', PEER, Reason.OK, id="from-match"),
        pytest.param('from="10.0.0.0/8"', PEER, Reason.SOURCE_REFUSED, id="from-mismatch"),
        pytest.param('from="*,!198.51.100.7"', PEER, Reason.SOURCE_REFUSED, id="from-negated"),
        pytest.param('from="*"', None, Reason.SOURCE_REFUSED, id="from-unknown-peer"),
        pytest.param("", None, Reason.OK, id="no-from-unknown-peer"),
        pytest.param('expiry-time="20000101Z"', PEER, Reason.KEY_EXPIRED, id="expired"),
        pytest.param('expiry-time="29990101Z"', PEER, Reason.OK, id="not-expired"),
        pytest.param("verify-required", PEER, Reason.KEY_TYPE_REFUSED, id="verify-required-plain-key"),
    ],
)
def test_entry_options(keydir: Path, options: str, peer: str | None, reason: Reason) -> None:
    key = pub(keydir, "user")
    d = decide(key, [entry(key, options)], peer=peer)
    assert d.reason is reason, d.detail


def test_grant_terms_from_options(keydir: Path) -> None:
    key = pub(keydir, "user")
    d = decide(key, [entry(key, 'restrict,pty,command="nxauth login",expiry-time="29990101Z",environment="A=1"')])
    assert d.allowed and d.forced_command == "nxauth login"
    assert d.restrictions == ALL_RESTRICTIONS - {"no-pty"}
    assert d.expires == pytest.approx(32472144000.0)
    assert d.options["command"] == "nxauth login" and d.options["environment"] == ["A=1"]
    with pytest.raises(TypeError):
        d.options["command"] = "changed"  # type: ignore[index]


def test_first_passing_candidate_wins_else_first_failure(keydir: Path) -> None:
    key = pub(keydir, "user")
    far, near, old = (
        entry(key, 'from="10.0.0.0/8"', 1),
        entry(key, 'command="ok"', 2),
        entry(key, 'expiry-time="20000101Z"', 3),
    )
    d = decide(key, [far, near])
    assert d.allowed and d.entry is near and d.forced_command == "ok"
    d = decide(key, [far, old])
    assert not d.allowed and d.reason is Reason.SOURCE_REFUSED and d.entry is far
    d = decide(key, [old, far])
    assert d.reason is Reason.KEY_EXPIRED and d.entry is old


def test_junk_and_mismatched_candidates_are_ignored(keydir: Path) -> None:
    key = pub(keydir, "user")
    other = entry(pub(keydir, "ecdsa"))
    d = decide(key, [other, "ssh-ed25519 AAAA", None, 42])
    assert not d.allowed and d.reason is Reason.UNKNOWN_KEY


@pytest.mark.parametrize(
    ("args", "options", "peer", "reason"),
    [
        pytest.param(["-n", "nx"], "", PEER, Reason.OK, id="valid"),
        pytest.param(["-n", "ops,nx", "-V", "-1h:+1h"], "", PEER, Reason.OK, id="valid-window"),
        pytest.param(["-n", "nx", "-V", "-2h:-1h"], "", PEER, Reason.KEY_EXPIRED, id="expired"),
        pytest.param(["-n", "nx", "-V", "+1h:+2h"], "", PEER, Reason.CERTIFICATE_INVALID, id="not-yet-valid"),
        pytest.param(["-n", "alice"], "", PEER, Reason.WRONG_ACCOUNT, id="other-principal"),
        pytest.param([], "", PEER, Reason.CERTIFICATE_INVALID, id="no-principals"),
        pytest.param(["-h", "-n", "nx"], "", PEER, Reason.CERTIFICATE_INVALID, id="host-certificate"),
        pytest.param(["-n", "ops"], 'principals="ops,admins"', PEER, Reason.OK, id="principals-option"),
        pytest.param(["-n", "nx"], 'principals="ops"', PEER, Reason.WRONG_ACCOUNT, id="principals-option-mismatch"),
        pytest.param(["-n", "nx"], 'from="10.0.0.0/8"', PEER, Reason.SOURCE_REFUSED, id="entry-from"),
        pytest.param(["-n", "nx", "-O", "source-address=198.51.100.0/24"], "", PEER, Reason.OK, id="source-address"),
        pytest.param(
            ["-n", "nx", "-O", "source-address=10.0.0.0/8"], "", PEER, Reason.SOURCE_REFUSED, id="source-address-miss"
        ),
        pytest.param(
            ["-n", "nx", "-O", "source-address=10.0.0.0/8"], "", None, Reason.SOURCE_REFUSED, id="source-unknown-peer"
        ),
        pytest.param(
            ["-n", "nx", "-O", "force-command=a"], 'command="b"', PEER, Reason.CERTIFICATE_INVALID, id="commands-differ"
        ),
        pytest.param(["-n", "nx", "-O", "force-command=a"], 'command="a"', PEER, Reason.OK, id="commands-same"),
        pytest.param(
            ["-n", "nx", "-O", "critical:nx@example.com=1"], "", PEER, Reason.CERTIFICATE_INVALID, id="unknown-critical"
        ),
        pytest.param(["-n", "nx", "-O", "extension:nx@example.com=1"], "", PEER, Reason.OK, id="unknown-extension"),
        pytest.param(
            ["-n", "nx", "-O", "verify-required"], "", PEER, Reason.KEY_TYPE_REFUSED, id="verify-required-plain"
        ),
        pytest.param(["-n", "nx"], 'expiry-time="20000101Z"', PEER, Reason.KEY_EXPIRED, id="entry-expired"),
    ],
)
def test_certificates(keydir: Path, args: list[str], options: str, peer: str | None, reason: Reason) -> None:
    key = cert(keydir, *args)
    d = decide(key, [entry(pub(keydir, "ca"), ("cert-authority," + options).rstrip(","))], peer=peer)
    assert d.reason is reason, d.detail
    if d.allowed:
        assert d.certificate_id == "cert-id" and "cert-id" in d.detail
        assert d.options["certificate"]["key-id"] == "cert-id"


def test_certificate_grant_terms(keydir: Path) -> None:
    key = cert(
        keydir, "-n", "nx", "-V", "-1m:+1h", "-O", "clear", "-O", "permit-pty", "-O", "force-command=nxauth login"
    )
    assert key.certificate is not None
    ca = entry(pub(keydir, "ca"), 'cert-authority,expiry-time="29990101Z"')
    d = decide(key, [ca])
    assert d.allowed and d.forced_command == "nxauth login"
    assert d.restrictions == ALL_RESTRICTIONS - {"no-pty"}
    assert d.expires == key.certificate.valid_before
    info = d.options["certificate"]
    assert info["principals"] == ["nx"] and info["extensions"] == ["permit-pty"]
    assert info["critical-options"] == {"force-command": "nxauth login"}
    soon = int(time.time()) + 1800
    stamp = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(soon))
    d = decide(key, [entry(pub(keydir, "ca"), f'cert-authority,restrict,expiry-time="{stamp}"')])
    assert d.restrictions == ALL_RESTRICTIONS and d.expires == soon


@pytest.mark.parametrize(
    ("ca", "policy", "reason"),
    [
        pytest.param("ca_rsa1024", KeyPolicy(), Reason.KEY_TOO_WEAK, id="weak-ca"),
        pytest.param("ca_dsa", KeyPolicy(), Reason.KEY_TYPE_REFUSED, id="dsa-ca"),
        pytest.param(
            "ca_ecdsa", KeyPolicy(allowed_types=frozenset({"ssh-ed25519"})), Reason.KEY_TYPE_REFUSED, id="ca-type"
        ),
        pytest.param("ca_ecdsa", KeyPolicy(), Reason.OK, id="ecdsa-ca"),
    ],
)
def test_ca_key_policy(keydir: Path, ca: str, policy: KeyPolicy, reason: Reason) -> None:
    key = cert(keydir, "-n", "nx", ca=ca)
    d = decide(key, [entry(pub(keydir, ca), "cert-authority")], policy=policy)
    assert d.reason is reason, d.detail


def test_certified_key_policy(keydir: Path) -> None:
    key = cert(keydir, "-n", "nx", key="rsa1024")
    assert decide(key, [entry(pub(keydir, "ca"), "cert-authority")]).reason is Reason.KEY_TOO_WEAK


def test_tampered_certificate(keydir: Path) -> None:
    key = cert(keydir, "-n", "nx")
    blob = bytearray(key.blob)
    at = blob.index(b"cert-id")
    blob[at : at + 7] = b"cert-ID"
    d = decide(decode_public_key(bytes(blob)), [entry(pub(keydir, "ca"), "cert-authority")])
    assert d.reason is Reason.CERTIFICATE_INVALID and "signature" in d.detail


@pytest.mark.parametrize(
    ("options", "flags", "reason"),
    [
        pytest.param("", None, Reason.OK, id="flags-unknown"),
        pytest.param("", 0x00, Reason.BAD_SIGNATURE, id="no-presence"),
        pytest.param("", 0x01, Reason.OK, id="presence"),
        pytest.param("no-touch-required", 0x00, Reason.OK, id="no-touch-required"),
        pytest.param("verify-required", 0x01, Reason.BAD_SIGNATURE, id="verify-missing"),
        pytest.param("verify-required", 0x05, Reason.OK, id="verified"),
        pytest.param("verify-required,no-touch-required", 0x04, Reason.OK, id="verified-no-touch"),
    ],
)
def test_security_key_flags(keydir: Path, options: str, flags: int | None, reason: Reason) -> None:
    key = pub(keydir, "sk")
    d = decide(key, [entry(key, options)], flags=flags)
    assert d.reason is reason, d.detail
    if d.allowed:
        assert d.options["no-touch-required"] == ("no-touch-required" in options)
        assert d.options["verify-required"] == ("verify-required" in options)


@pytest.mark.parametrize(
    ("args", "options", "flags", "reason"),
    [
        pytest.param([], "cert-authority,no-touch-required", 0x00, Reason.BAD_SIGNATURE, id="ca-only-no-touch"),
        pytest.param(
            ["-O", "no-touch-required"], "cert-authority", 0x00, Reason.BAD_SIGNATURE, id="cert-only-no-touch"
        ),
        pytest.param(
            ["-O", "no-touch-required"], "cert-authority,no-touch-required", 0x00, Reason.OK, id="both-no-touch"
        ),
        pytest.param(["-O", "verify-required"], "cert-authority", 0x01, Reason.BAD_SIGNATURE, id="cert-verify-missing"),
        pytest.param(["-O", "verify-required"], "cert-authority", 0x05, Reason.OK, id="cert-verified"),
    ],
)
def test_security_key_certificates(keydir: Path, args: list[str], options: str, flags: int, reason: Reason) -> None:
    key = cert(keydir, "-n", "nx", *args, key="sk")
    assert key.is_security_key and key.is_certificate
    d = decide(key, [entry(pub(keydir, "ca"), options)], flags=flags)
    assert d.reason is reason, d.detail


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"now": float("nan")}, id="nan-time"),
        pytest.param({"now": "now"}, id="str-time"),
        pytest.param({"peer_host": 42}, id="peer-not-str"),
        pytest.param({"account": None}, id="account-none"),
        pytest.param({"signature_flags": "1"}, id="flags-str"),
        pytest.param({"signature_flags": -1}, id="flags-negative"),
        pytest.param({"signature_flags": 256}, id="flags-too-big"),
        pytest.param({"candidates": 42}, id="candidates-not-iterable"),
        pytest.param({"key": "ssh-ed25519 AAAA"}, id="key-not-publickey"),
        pytest.param({"policy": None}, id="policy-none"),
    ],
)
def test_wrong_arguments_refuse_without_raising(keydir: Path, kwargs: dict[str, Any]) -> None:
    key = pub(keydir, "user")
    args: dict[str, Any] = {
        "policy": KeyPolicy(),
        "key": key,
        "candidates": [entry(key)],
        "account": "nx",
        "peer_host": PEER,
        "now": time.time(),
        "signature_flags": None,
    }
    args.update(kwargs)
    policy, key_arg, candidates = args.pop("policy"), args.pop("key"), args.pop("candidates")
    d = evaluate_key(policy, key_arg, candidates, **args)
    assert not d.allowed and d.reason is Reason.DENIED
