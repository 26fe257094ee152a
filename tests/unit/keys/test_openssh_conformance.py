"""OpenSSH conformance (issue 17, class 9), with certificates signed by the
real ``ssh-keygen -s``.

* A certificate's ``source-address`` is syntax-checked when the certificate
  is read, as sshd does (``addr_match_cidr_list(NULL, list)`` in
  auth-options.c), even when the address match itself is deferred
  (``nxauth authorized-keys`` without the connection address).  The oracle is
  ``ssh-keygen -O source-address=``, which runs that same check; the
  certificates under test are made with ``-O critical:source-address=``,
  which does not.
* A certificate whose CA key is itself a certificate is refused when parsed
  (sshkey.c reads the CA key with ``allow_cert = 0``).  ssh-keygen refuses to
  make one, so the intermediate is ssh-keygen's and the leaf is signed here.
* Duplicate ``environment=`` options: the first one of a name wins.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nxauth.errors import KeyFormatError
from nxauth.keys.authorized_keys import parse_authorized_key
from nxauth.keys.formats import CERT_TYPE_USER, FOREVER, PublicKey, parse_public_key
from nxauth.keys.policy import KeyPolicy, evaluate_key
from nxauth.model import Reason

SSH_KEYGEN = shutil.which("ssh-keygen")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJsg1rFJxjHpUHrlWMSYPXWgamTBJfIN5PRG8oKcF00A"
pytestmark = pytest.mark.skipif(SSH_KEYGEN is None, reason="OpenSSH ssh-keygen is not installed")


def s(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return len(raw).to_bytes(4, "big") + raw


def keygen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SSH_KEYGEN or "ssh-keygen", *args], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("conformance")
    for name in ("ca", "intermediate", "user"):
        assert keygen("-q", "-N", "", "-t", "ed25519", "-C", name, "-f", str(directory / name)).returncode == 0
    return directory


def sign(keydir: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``ssh-keygen -s ca -I id -n nx -O ... user.pub``."""
    args = [item for option in options for item in ("-O", option)]
    return keygen("-q", "-s", str(keydir / "ca"), "-I", "conformance", "-n", "nx", *args, str(keydir / "user.pub"))


def certificate(keydir: Path) -> PublicKey:
    return parse_public_key((keydir / "user-cert.pub").read_text())


def deferred(keydir: Path, key: PublicKey) -> bool:
    """The decision of ``nxauth authorized-keys`` without the peer address."""
    line = parse_authorized_key(f"cert-authority {(keydir / 'ca.pub').read_text().strip()}", 1)
    assert line is not None
    decision = evaluate_key(KeyPolicy(), key, [line], account="nx", peer_host=None, now=time.time(), defer_source=True)
    if not decision.allowed:
        assert decision.reason is Reason.CERTIFICATE_INVALID, decision
    return decision.allowed


# ------------------------------------------------------------ source-address

OCTET = st.integers(0, 300).map(str)
IPV4 = st.tuples(OCTET, OCTET, OCTET, OCTET).map(".".join)
IPV6 = st.sampled_from(
    ["::1", "::", "2001:db8::", "2001:db8::1", "fe80::1:2", "2001:db8:::1", "::ffff:10.0.0.1", "1::2::3"]
)
MASK = st.one_of(
    st.just(""), st.integers(0, 140).map(lambda n: f"/{n}"), st.sampled_from(["/", "/x", "/-1", "/08", "/+8"])
)
JUNK = st.sampled_from(
    ["", "*", "!10.0.0.1", "10.0.0.*", "host.example", " 10.0.0.1", "10.0.0.1 ", "10.0.0.1/8/8", "g::1"]
)
ENTRY = st.one_of(st.tuples(st.one_of(IPV4, IPV6), MASK).map("".join), JUNK)
SOURCE_LISTS = st.lists(ENTRY, min_size=1, max_size=4).map(",".join)

NAMED_LISTS = [
    ("127.0.0.1", True),
    ("10.0.0.0/8,192.168.0.0/16", True),
    ("2001:db8::/32", True),
    ("0.0.0.0/0,::/0", True),
    ("10.0.0.1/8", False),  # host bits set
    ("10.0.0.0/33", False),  # mask too long
    ("2001:db8::/129", False),
    ("10.0.0.0/", False),
    ("10.0.0.0,,10.0.0.1", False),  # empty entry
    ("10.0.0.1,", False),
    ("*", False),  # no wildcards in source-address
    ("!10.0.0.1", False),
    ("300.0.0.1", False),
    ("example.org", False),
]


@pytest.mark.parametrize(("allowed", "valid"), NAMED_LISTS, ids=[a for a, _ in NAMED_LISTS])
def test_source_address_is_checked_when_the_certificate_is_read(keydir: Path, allowed: str, valid: bool) -> None:
    assert (sign(keydir, f"source-address={allowed}").returncode == 0) is valid  # ssh-keygen agrees with the table
    assert sign(keydir, f"critical:source-address={allowed}").returncode == 0
    assert deferred(keydir, certificate(keydir)) is valid


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(allowed=SOURCE_LISTS)
def test_source_address_syntax_is_sshds(keydir: Path, allowed: str) -> None:
    """Generated lists (CIDR with host bits, bad masks, IPv6 forms, empty
    entries, wildcards, spaces): accepted by nxauth exactly when
    ``ssh-keygen -O source-address=`` (sshd's own check) accepts them."""
    valid = sign(keydir, f"source-address={allowed}").returncode == 0
    assert sign(keydir, f"critical:source-address={allowed}").returncode == 0
    assert deferred(keydir, certificate(keydir)) is valid, allowed


# ------------------------------------------------------------ a CA that is a certificate


def test_a_certificate_signed_by_a_certificate_is_refused_when_parsed(keydir: Path) -> None:
    made = keygen("-q", "-s", str(keydir / "ca"), "-I", "intermediate", "-n", "nx", str(keydir / "intermediate.pub"))
    assert made.returncode == 0, made.stderr
    intermediate_cert = (keydir / "intermediate-cert.pub").read_text().split()
    intermediate_blob = base64.b64decode(intermediate_cert[1])
    assert parse_public_key(" ".join(intermediate_cert)).is_certificate  # a real ssh-keygen certificate
    private = load_ssh_private_key((keydir / "intermediate").read_bytes(), None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    subject = parse_public_key((keydir / "user.pub").read_text())
    body = (
        s("ssh-ed25519-cert-v01@openssh.com")
        + s(b"\x22" * 32)
        + subject.blob[len(s("ssh-ed25519")) :]
        + (1).to_bytes(8, "big")
        + CERT_TYPE_USER.to_bytes(4, "big")
        + s("leaf")
        + s(s("nx"))
        + (0).to_bytes(8, "big")
        + FOREVER.to_bytes(8, "big")
        + s(b"")
        + s(s("permit-pty") + s(b""))
        + s(b"")
        + s(intermediate_blob)
    )
    leaf = body + s(s("ssh-ed25519") + s(private.sign(body)))
    # ssh-keygen itself cannot read it
    (keydir / "leaf-cert.pub").write_text("ssh-ed25519-cert-v01@openssh.com " + base64.b64encode(leaf).decode())
    assert keygen("-L", "-f", str(keydir / "leaf-cert.pub")).returncode != 0
    with pytest.raises(KeyFormatError, match="itself a certificate"):
        parse_public_key((keydir / "leaf-cert.pub").read_text())
    with pytest.raises(KeyFormatError, match="itself a certificate"):
        parse_authorized_key("cert-authority " + (keydir / "leaf-cert.pub").read_text(), 3)


# ------------------------------------------------------------ environment=

ENV_NAMES = st.sampled_from(["A", "B", "PATH", "a_1", "1X"])


@given(st.lists(st.tuples(ENV_NAMES, st.text("xyz= ,", max_size=5)), min_size=1, max_size=8))
def test_duplicate_environment_options_keep_the_first(pairs: list[tuple[str, str]]) -> None:
    options = ",".join(f'environment="{name}={value}"' for name, value in pairs)
    parsed = parse_authorized_key(f"{options} {KEY}", 1)
    assert parsed is not None
    expected: dict[str, str] = {}
    for name, value in pairs:
        expected.setdefault(name, f"{name}={value}")
    assert parsed.options.environment == tuple(expected.values())


def test_environment_limits_are_sshds() -> None:
    many = ",".join(f'environment="V{i}=x"' for i in range(1025))
    assert parse_authorized_key(f"{many} {KEY}", 1) is not None  # 1025 strings: sshd checks > 1024 before adding
    with pytest.raises(KeyFormatError, match="too many environment strings"):
        parse_authorized_key(f'{many},environment="LAST=x" {KEY}', 1)
    # duplicates do not count
    repeated = ",".join('environment="SAME=x"' for _ in range(2000))
    assert parse_authorized_key(f"{repeated} {KEY}", 1) is not None
