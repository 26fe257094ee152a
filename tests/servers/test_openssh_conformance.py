"""OpenSSH conformance (issue 17, class 9) against the real sshd.

One sshd reads ``AuthorizedKeysFile`` from its work directory; each case
writes one line there and logs in with the real ssh client.  nxauth's
stage-1 decision on the same line, key and address (127.0.0.1) must be
sshd's: accepted by both or refused by both.  The differences that remain
are listed in docs/security.md ("OpenSSH conformance"), each deliberate;
:data:`DIFFERENCES` checks that they still are what the page says.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nxauth.errors import KeyFormatError
from nxauth.keys.authorized_keys import parse_authorized_key
from nxauth.keys.formats import parse_public_key
from nxauth.keys.policy import KeyPolicy, evaluate_key
from tests.support.sshd import Sshd, running_sshd, skip_reason

reason = skip_reason()
pytestmark = pytest.mark.skipif(reason is not None, reason=reason or "")
SSH_KEYGEN = shutil.which("ssh-keygen") or "ssh-keygen"


def keygen(*args: str) -> None:
    subprocess.run([SSH_KEYGEN, "-q", *args], check=True, capture_output=True)


class Bench:
    """The sshd, the keys, and the two deciders."""

    def __init__(self, sshd: Sshd, keys: Path) -> None:
        self.sshd = sshd
        self.keys = keys
        self.account = sshd.account

    def line(self, options: str, key: str) -> str:
        return f"{options} {(self.keys / f'{key}.pub').read_text().strip()}".strip()

    def sshd_accepts(self, line: str, identity: str, certificate: str | None = None) -> bool:
        target = self.sshd.work / "authorized_keys"
        target.write_text(line + "\n")
        target.chmod(0o644)
        options = ["-o", f"CertificateFile={self.keys / certificate}"] if certificate else []
        done = self.sshd.ssh(self.keys / identity, "true", options=[*options, "-o", "ConnectTimeout=10"])
        return done.returncode != 255  # 255: ssh's own failure; anything else is the command's status

    def nxauth_accepts(self, line: str, presented: str, *, deferred: bool = False) -> bool:
        """nxauth's decision from 127.0.0.1, or ``deferred``: without the
        address, as ``nxauth authorized-keys`` leaves the match to sshd."""
        try:
            entry = parse_authorized_key(line, 1)
            key = parse_public_key((self.keys / presented).read_text())
        except KeyFormatError:
            return False
        if entry is None:
            return False
        decision = evaluate_key(
            KeyPolicy(),
            key,
            [entry],
            account=self.account,
            peer_host=None if deferred else "127.0.0.1",
            now=time.time(),
            defer_source=deferred,
        )
        return decision.allowed

    def certify(self, name: str, *args: str, principals: str | None = None, ca: str = "ca") -> str:
        """``ssh-keygen -s CA -I id -n account args key.pub`` -> ``<name>-cert.pub``."""
        shutil.copy(self.keys / "certified.pub", self.keys / f"{name}.pub")
        shutil.copy(self.keys / "certified", self.keys / name)
        principal = ["-n", self.account if principals is None else principals] if principals != "" else []
        keygen("-s", str(self.keys / ca), "-I", name, *principal, *args, str(self.keys / f"{name}.pub"))
        return f"{name}-cert.pub"


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    keys = tmp_path_factory.mktemp("conformance-keys")
    for name in ("plain", "certified", "ca", "intermediate"):
        keygen("-N", "", "-t", "ed25519", "-C", name, "-f", str(keys / name))
    with running_sshd("AuthorizedKeysFile {work}/authorized_keys\nStrictModes yes\n") as sshd:
        yield Bench(sshd, keys)


# ------------------------------------------------------------ authorized_keys options, named

OPTION_CASES = [
    "",
    "restrict",
    "restrict,pty,port-forwarding",
    "no-pty,pty",
    "NO-PTY,No-Agent-Forwarding",
    "permit-pty",  # a certificate extension, not an option
    "no-touch-required",
    "touch-required",
    "cert-authority",  # a plain key on a CA line
    'command="true"',
    'command="true",command="true"',
    'command="echo \\"quoted\\""',
    "command=true",
    'command="true',
    'COMMAND="true"',
    'from="127.0.0.1"',
    'from="127.0.0.0/8"',
    'from="127.0.0.1/8"',  # host bits: sshd denies the entry
    'from="10.0.0.0/8"',
    'from="!127.0.0.1,*"',
    'from="*,!10.0.0.1"',
    'from="127.0.0.?"',
    'from="127.*"',
    'from=""',
    'from="127.0.0.1/33"',
    'from="localhost"',
    'from="127.0.0.1",from="127.0.0.1"',
    'expiry-time="20990101"',
    'expiry-time="209901011230"',
    'expiry-time="20990101123059"',
    'expiry-time="19990101"',
    'expiry-time="2099-01-01"',
    'expiry-time="20990101",expiry-time="19990101"',
    'environment="A=1"',
    'environment="A=1",environment="A=2"',
    'environment="1A=1"',
    'environment="A-B=1"',
    'environment="=1"',
    'environment="A"',
    'permitopen="localhost:22"',
    'permitopen="[::1]:22"',
    'permitopen="localhost:*"',
    'permitopen="localhost:0"',
    'permitopen="localhost"',
    'permitopen="localhost:65536"',
    'permitlisten="8080"',
    'permitlisten="localhost:8080"',
    'permitlisten="0"',
    'tunnel="any"',
    'tunnel="5"',
    'tunnel="x"',
    'principals="someone"',
    "unknown-option",
    "no-pty,",
    "no-pty,,no-pty",
    'no-pty,command="true" ',
]


@pytest.mark.parametrize("options", OPTION_CASES, ids=[o or "none" for o in OPTION_CASES])
def test_options_are_accepted_and_refused_as_sshd_does(bench: Bench, options: str) -> None:
    line = bench.line(options, "plain")
    assert bench.nxauth_accepts(line, "plain.pub") == bench.sshd_accepts(line, "plain"), line


TOKENS = st.sampled_from(
    [
        "restrict", "pty", "no-pty", "No-X11-Forwarding", "user-rc", "no-user-rc", "agent-forwarding",
        "permit-pty", "cert-authority", "no-touch-required", "unknown",
        'command="true"', 'command="tr\\"ue"', 'command="true', "command=true",
        'from="127.0.0.1"', 'from="10.0.0.0/8"', 'from="127.0.0.1/8"', 'from="!127.0.0.1"', 'from="*"',
        'from="127.0.0.0/8,10.0.0.1/8"', 'from="127.0.0.1/"',
        'expiry-time="20990101"', 'expiry-time="19990101"', 'expiry-time="x"',
        'environment="A=1"', 'environment="A=2"', 'environment="B\\"=1"', 'environment="A B=1"',
        'permitopen="h:22"', 'permitopen="h:0"', 'permitopen="[h]:22"', 'permitopen="h:22:33"',
        'permitlisten="22"', 'permitlisten="*:22"', 'tunnel="1"', 'tunnel="-1"',
        'principals="x"', '"quoted"', "", " ",
    ]
)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(tokens=st.lists(TOKENS, min_size=1, max_size=5), comma=st.sampled_from([",", ", ", ",,"]))
def test_generated_option_strings_are_decided_as_sshd_does(bench: Bench, tokens: list[str], comma: str) -> None:
    options = comma.join(tokens) if comma != ",," else ",".join(tokens) + ","
    line = bench.line(options, "plain")
    assert bench.nxauth_accepts(line, "plain.pub") == bench.sshd_accepts(line, "plain"), line


FROM_PARTS = st.sampled_from(
    [
        "127.0.0.1", "127.0.0.0/8", "127.0.0.1/8", "127.0.0.1/32", "10.0.0.0/8", "10.0.0.1/8", "!127.0.0.1",
        "!10.0.0.1", "*", "127.0.0.?", "127.*", "1?7.0.0.1", "!*", "", "::1", "::ffff:127.0.0.1", "127.0.0.0/33",
        "127.0.0.1/-1", "localhost", "127.0.0.01", "0x7f.0.0.1",
    ]
)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(parts=st.lists(FROM_PARTS, min_size=1, max_size=4))
def test_generated_from_lists_are_decided_as_sshd_does(bench: Bench, parts: list[str]) -> None:
    line = bench.line(f'from="{",".join(parts)}"', "plain")
    assert bench.nxauth_accepts(line, "plain.pub") == bench.sshd_accepts(line, "plain"), line


# ------------------------------------------------------------ certificates, from ssh-keygen -s

CERT_CASES = [
    ("valid", (), "cert-authority"),
    ("other-principal", ("principals=other",), "cert-authority"),
    ("expired", ("-V", "-2d:-1d"), "cert-authority"),
    ("not-yet-valid", ("-V", "+1d:+2d"), "cert-authority"),
    ("source-address-match", ("-O", "source-address=127.0.0.1/32"), "cert-authority"),
    ("source-address-miss", ("-O", "source-address=10.0.0.0/8"), "cert-authority"),
    ("source-address-host-bits", ("-O", "critical:source-address=127.0.0.1/8"), "cert-authority"),
    ("source-address-empty-entry", ("-O", "critical:source-address=127.0.0.1,"), "cert-authority"),
    ("source-address-bad-mask", ("-O", "critical:source-address=127.0.0.0/33"), "cert-authority"),
    ("source-address-wildcard", ("-O", "critical:source-address=*"), "cert-authority"),
    ("source-address-one-bad", ("-O", "critical:source-address=127.0.0.0/8,10.0.0.1/8"), "cert-authority"),
    ("unknown-critical", ("-O", "critical:unknown@example.org"), "cert-authority"),
    ("unknown-extension", ("-O", "extension:unknown@example.org"), "cert-authority"),
    ("no-extensions", ("-O", "clear"), "cert-authority"),
    ("force-command", ("-O", "force-command=true"), "cert-authority"),
    ("line-principals-match", (), 'cert-authority,principals="{account}"'),
    ("line-principals-miss", (), 'cert-authority,principals="other"'),
    ("line-from-miss", (), 'cert-authority,from="10.0.0.0/8"'),
    ("no-cert-authority", (), ""),
    ("restrict", (), "cert-authority,restrict"),
]


@pytest.mark.parametrize(("name", "args", "options"), CERT_CASES, ids=[c[0] for c in CERT_CASES])
def test_certificates_are_accepted_and_refused_as_sshd_does(
    bench: Bench, name: str, args: tuple[str, ...], options: str
) -> None:
    principals = None
    if args and args[0].startswith("principals="):
        principals, args = args[0].split("=", 1)[1], args[1:]
    cert = bench.certify(name, *args, principals=principals)
    line = bench.line(options.format(account=bench.account), "ca")
    assert bench.nxauth_accepts(line, cert) == bench.sshd_accepts(line, name, cert), (name, line)
    if name.startswith("source-address-") and name not in ("source-address-match", "source-address-miss"):
        # an invalid list refuses even when the address match is left to sshd
        assert not bench.nxauth_accepts(line, cert, deferred=True), name


def test_a_certificate_whose_ca_is_a_certificate_is_refused_by_both(bench: Bench) -> None:
    """The intermediate CA is a real ssh-keygen certificate; the leaf is
    signed with its key and names the certificate as its CA (ssh-keygen
    will not make one).  sshd refuses it with either CA trusted."""
    import base64

    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    def s(data: bytes | str) -> bytes:
        raw = data.encode() if isinstance(data, str) else data
        return len(raw).to_bytes(4, "big") + raw

    keygen(
        "-s", str(bench.keys / "ca"), "-I", "intermediate", "-n", bench.account, str(bench.keys / "intermediate.pub")
    )
    intermediate = base64.b64decode((bench.keys / "intermediate-cert.pub").read_text().split()[1])
    private = load_ssh_private_key((bench.keys / "intermediate").read_bytes(), None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    subject = parse_public_key((bench.keys / "certified.pub").read_text())
    body = (
        s("ssh-ed25519-cert-v01@openssh.com") + s(b"\x33" * 32) + subject.blob[len(s("ssh-ed25519")) :]
        + (1).to_bytes(8, "big") + (1).to_bytes(4, "big") + s("leaf") + s(s(bench.account))
        + (0).to_bytes(8, "big") + (2**64 - 1).to_bytes(8, "big") + s(b"") + s(s("permit-pty") + s(b""))
        + s(b"") + s(intermediate)
    )  # fmt: skip
    leaf = body + s(s("ssh-ed25519") + s(private.sign(body)))
    shutil.copy(bench.keys / "certified", bench.keys / "leaf")
    (bench.keys / "leaf-cert.pub").write_text(f"ssh-ed25519-cert-v01@openssh.com {base64.b64encode(leaf).decode()}\n")
    for ca in ("ca", "intermediate"):
        line = bench.line("cert-authority", ca)
        assert not bench.sshd_accepts(line, "leaf", "leaf-cert.pub")
        assert not bench.nxauth_accepts(line, "leaf-cert.pub")


# ------------------------------------------------------------ the differences that remain

#: (case, sshd accepts, nxauth accepts): each one in docs/security.md.
DIFFERENCES = [
    ("certificate-without-principals", True, False),
    ("verify-required-plain-key", True, False),
    ("permitopen-service-name", True, False),
]


@pytest.mark.parametrize(("case", "sshd_says", "nxauth_says"), DIFFERENCES, ids=[d[0] for d in DIFFERENCES])
def test_the_documented_differences_are_still_the_only_ones(
    bench: Bench, case: str, sshd_says: bool, nxauth_says: bool
) -> None:
    if case == "certificate-without-principals":
        cert = bench.certify("wildcard", principals="")
        line = bench.line("cert-authority", "ca")
        assert (bench.sshd_accepts(line, "wildcard", cert), bench.nxauth_accepts(line, cert)) == (
            sshd_says,
            nxauth_says,
        )
    elif case == "verify-required-plain-key":
        line = bench.line("verify-required", "plain")
        assert (bench.sshd_accepts(line, "plain"), bench.nxauth_accepts(line, "plain.pub")) == (sshd_says, nxauth_says)
        cert = bench.certify("verify", "-O", "verify-required")
        line = bench.line("cert-authority", "ca")
        assert (bench.sshd_accepts(line, "verify", cert), bench.nxauth_accepts(line, cert)) == (sshd_says, nxauth_says)
    else:
        line = bench.line('permitopen="localhost:ssh"', "plain")
        assert (bench.sshd_accepts(line, "plain"), bench.nxauth_accepts(line, "plain.pub")) == (sshd_says, nxauth_says)
    text = (Path(__file__).parents[2] / "docs" / "security.md").read_text()
    assert f"`{case}`" in text
