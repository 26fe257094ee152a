"""Property tests: the key-layer parsers raise nothing but KeyFormatError, and the policy never
allows a key that is not among the candidates.

Valid material comes from ``cryptography`` (keys, and certificates through
its SSHCertificateBuilder), so these run without OpenSSH installed.
"""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import SSHCertificateBuilder, SSHCertificateType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nxauth.errors import KeyFormatError
from nxauth.keys.authorized_keys import (
    AuthorizedKey,
    KeyOptions,
    parse_authorized_key,
    parse_authorized_keys,
)
from nxauth.keys.formats import (
    Certificate,
    PublicKey,
    decode_certificate,
    decode_public_key,
    parse_public_key,
    verify_signature,
)
from nxauth.keys.patterns import match_from
from nxauth.keys.policy import KeyPolicy, evaluate_key, lookup_blob
from nxauth.keys.sshsig import parse_sshsig, verify_sshsig
from nxauth.keys.wire import KEY_TYPES
from nxauth.model import Reason

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def s(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return len(raw).to_bytes(4, "big") + raw


def openssh(private: object) -> PublicKey:
    public = private.public_key()  # type: ignore[attr-defined]
    return parse_public_key(
        public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    )


ED_PRIVATE = [ed25519.Ed25519PrivateKey.generate() for _ in range(3)]
PLAIN = [
    *(openssh(k) for k in ED_PRIVATE),
    openssh(ec.generate_private_key(ec.SECP256R1())),
    openssh(ec.generate_private_key(ec.SECP521R1())),
    openssh(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
]
SK = decode_public_key(s("sk-ssh-ed25519@openssh.com") + s(PLAIN[0].blob[-32:]) + s("ssh:"))
CA_PRIVATE = ed25519.Ed25519PrivateKey.generate()
CA = openssh(CA_PRIVATE)


def make_cert(principals: list[bytes], *, valid_before: int = 2**64 - 1, critical: bytes | None = None) -> PublicKey:
    builder = (
        SSHCertificateBuilder()
        .public_key(ED_PRIVATE[1].public_key())
        .serial(5)
        .type(SSHCertificateType.USER)
        .key_id(b"fuzz")
        .valid_principals(principals)
        .valid_after(0)
        .valid_before(valid_before)
        .add_extension(b"permit-pty", b"")
    )
    if critical is not None:
        builder = builder.add_critical_option(b"force-command", critical)
    return parse_public_key(builder.sign(CA_PRIVATE).public_bytes().decode())


CERTS = [make_cert([b"nx"]), make_cert([b"ops"], critical=b"/bin/true"), make_cert([b"nx"], valid_before=1000)]
KEYS = [*PLAIN, SK, *CERTS]
VALID_BLOBS = [k.blob for k in KEYS]
SIGNED = ED_PRIVATE[0].sign(b"SSHSIG" + s("nxauth") + s(b"") + s("sha512") + s(b"\0" * 64))
SSHSIG_BLOB = (
    b"SSHSIG\0\0\0\1" + s(PLAIN[0].blob) + s("nxauth") + s(b"") + s("sha512") + s(s("ssh-ed25519") + s(SIGNED))
)

OPTION_WORDS = [
    "restrict", "cert-authority", "no-pty", "pty", "no-port-forwarding", "port-forwarding", "no-agent-forwarding",
    "agent-forwarding", "no-X11-forwarding", "X11-forwarding", "no-user-rc", "user-rc", "no-touch-required",
    "touch-required", "verify-required", 'command="x"', 'command="a \\" b"', 'from="198.51.100.0/24"', 'from="*,!10.*"',
    'from="10.0.0.1/8"', 'principals="nx"', 'principals="ops,nx"', 'expiry-time="20000101Z"',
    'expiry-time="29990101"', 'environment="A=1"', 'permitopen="h:1"', 'permitlisten="2"', 'tunnel="any"',
]  # fmt: skip
FRAGMENTS = [*OPTION_WORDS, ",", " ", "\t", '"', "\\", "=", "#", "\0", "\n", *sorted(KEY_TYPES)[:4], "AAAA", "===="]


@st.composite
def mutated(draw: st.DrawFn, blobs: list[bytes]) -> bytes:
    """A valid blob, damaged: truncated, a length field rewritten, bytes flipped, inserted, or its type swapped."""
    blob = bytearray(draw(st.sampled_from(blobs)))
    kind = draw(st.sampled_from(["truncate", "length", "flip", "insert", "type", "append"]))
    if kind == "truncate":
        return bytes(blob[: draw(st.integers(0, max(len(blob) - 1, 0)))])
    if kind == "length":
        at = draw(st.integers(0, max(len(blob) - 4, 0)))
        value = draw(st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 2**31, 2**32 - 1, len(blob)])))
        blob[at : at + 4] = struct.pack(">I", value)
        return bytes(blob)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(blob) - 1))
            blob[at] ^= draw(st.integers(1, 255))
        return bytes(blob)
    if kind == "insert":
        at = draw(st.integers(0, len(blob)))
        return bytes(blob[:at]) + draw(st.binary(min_size=1, max_size=8)) + bytes(blob[at:])
    if kind == "type":
        length = struct.unpack(">I", blob[:4])[0]
        return s(draw(st.sampled_from(sorted(KEY_TYPES)))) + bytes(blob[4 + length :])
    return bytes(blob) + draw(st.binary(min_size=1, max_size=8))


def only_key_format_error(func: object, *args: object) -> object:
    try:
        return func(*args)  # type: ignore[operator]
    except KeyFormatError:
        return None


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(VALID_BLOBS)))
def test_decode_public_key_only_raises_key_format_error(blob: bytes) -> None:
    key = only_key_format_error(decode_public_key, blob)
    if isinstance(key, PublicKey):
        assert key.blob == blob
        assert key.fingerprint.startswith("SHA256:") and key.bits > 0 and key.describe()
        assert decode_public_key(key.blob) == key


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated([c.blob for c in CERTS])))
def test_decode_certificate_only_raises_key_format_error(blob: bytes) -> None:
    cert = only_key_format_error(decode_certificate, blob)
    if isinstance(cert, Certificate):
        assert isinstance(cert.verify(), bool)


@FUZZ
@given(st.one_of(st.text(max_size=300), st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join)))
def test_authorized_key_line_parser_only_raises_key_format_error(prefix: str) -> None:
    key_text = PLAIN[0].to_openssh()
    for line in (prefix, f"{prefix} {key_text}", f"{prefix}{key_text}"):
        try:
            entry = parse_authorized_key(line, 9)
        except KeyFormatError as exc:
            assert exc.lineno == 9
            continue
        if entry is not None:
            again = parse_authorized_key(entry.to_line())
            assert again is not None and again.key == entry.key
            assert again.options.restrictions == entry.options.restrictions


@FUZZ
@given(st.text(max_size=500))
def test_parse_authorized_keys_never_raises(text: str) -> None:
    entries, errors = parse_authorized_keys(text)
    assert all(isinstance(e, AuthorizedKey) for e in entries)
    assert all(isinstance(e, KeyFormatError) and e.lineno is not None for e in errors)


def _armor(blob: bytes) -> str:
    return f"-----BEGIN SSH SIGNATURE-----\n{base64.b64encode(blob).decode()}\n-----END SSH SIGNATURE-----\n"


@FUZZ
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), mutated([SSHSIG_BLOB]).map(_armor)))
def test_parse_sshsig_only_raises_key_format_error(armored: str | bytes) -> None:
    sig = only_key_format_error(parse_sshsig, armored)
    if sig is not None:
        assert verify_sshsig(sig, b"message", "nxauth") in (True, False)  # type: ignore[arg-type]


@FUZZ
@given(st.sampled_from(KEYS), st.one_of(st.binary(max_size=200), mutated([s("ssh-ed25519") + s(SIGNED)])))
def test_verify_signature_returns_bool_or_key_format_error(key: PublicKey, signature: bytes) -> None:
    result = only_key_format_error(verify_signature, key, signature, b"data")
    assert result in (None, True, False)


@FUZZ
@given(st.lists(st.text(alphabet="0123456789abcdef.:/!*?,%x", max_size=30), max_size=4), st.text(max_size=40))
def test_match_from_returns_bool(patterns: list[str], host: str) -> None:
    assert match_from(patterns, host) in (True, False)


OPTIONS = [KeyOptions(), KeyOptions(cert_authority=True), KeyOptions(restrict=True, command="x")]
OPTIONS += [e.options for w in OPTION_WORDS if (e := parse_authorized_key(f"{w} {PLAIN[0].to_openssh()}"))]
OPTIONS += [
    e.options for w in OPTION_WORDS if (e := parse_authorized_key(f"cert-authority,{w} {PLAIN[0].to_openssh()}"))
]


@st.composite
def candidate(draw: st.DrawFn) -> AuthorizedKey:
    return AuthorizedKey(
        draw(st.sampled_from([*PLAIN, SK, CA])), draw(st.sampled_from(OPTIONS)), draw(st.integers(1, 9))
    )


@FUZZ
@given(
    key=st.sampled_from(KEYS),
    candidates=st.lists(candidate(), max_size=5),
    account=st.sampled_from(["nx", "ops", "", "root"]),
    peer=st.sampled_from([None, "198.51.100.7", "10.1.2.3", "::1", "garbage"]),
    now=st.sampled_from([0.0, 500.0, 1e9, 4e9, float("inf")]),
    flags=st.sampled_from([None, 0, 1, 4, 5, 255]),
    policy=st.sampled_from(
        [KeyPolicy(), KeyPolicy(allowed_types=frozenset({"ssh-ed25519"})), KeyPolicy(rsa_min_bits=4096)]
    ),
)
def test_evaluate_key_never_allows_a_key_outside_the_candidates(
    key: PublicKey,
    candidates: list[AuthorizedKey],
    account: str,
    peer: str | None,
    now: float,
    flags: int | None,
    policy: KeyPolicy,
) -> None:
    decision = evaluate_key(policy, key, candidates, account=account, peer_host=peer, now=now, signature_flags=flags)
    assert isinstance(decision.reason, Reason)
    if decision.allowed:
        assert decision.reason is Reason.OK
        assert any(decision.entry is c for c in candidates)
        assert decision.entry is not None and decision.entry.key.blob == lookup_blob(key)
        assert decision.entry.options.cert_authority == key.is_certificate
        if key.is_certificate:
            assert key.certificate is not None and key.certificate.valid_at(now)
    else:
        assert decision.reason is not Reason.OK


@pytest.mark.parametrize("blob", VALID_BLOBS, ids=[k.key_type for k in KEYS])
def test_every_truncation_of_every_valid_blob_is_refused(blob: bytes) -> None:
    for cut in range(len(blob)):
        with pytest.raises(KeyFormatError):
            decode_public_key(blob[:cut])
