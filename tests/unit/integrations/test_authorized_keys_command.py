"""``nxauth authorized-keys`` (sshd's AuthorizedKeysCommand): the decision,
its audit, and its lean start-up; and ``nxauth sshd-config``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pluggy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

import nxauth
from nxauth.cli import main
from nxauth.integrations.openssh import sshd_config_block
from nxauth.keys.authorized_keys import parse_authorized_key
from nxauth.keys.formats import decode_public_key, parse_public_key
from nxauth.plugins.hookspecs import HookimplMarker, HookspecMarker
from tests.support.keys import TransportKey


def run(config: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nxauth", "--config", str(config), "authorized-keys", *argv],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


@pytest.fixture
def deployed(tmp_path: Path, transport_key: TransportKey) -> Path:
    config = tmp_path / "nxauth.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[audit]\njsonl = "{tmp_path / "state" / "audit.jsonl"}"\n')
    keys = tmp_path / "keys.pub"
    keys.write_text(f'restrict,command="nxauth login",from="198.51.100.0/24" {transport_key.line}\n')
    assert main(["--config", str(config), "keys", "add", str(keys)]) == 0
    return config


def events(config: Path) -> list[dict[str, object]]:
    path = config.parent / "state" / "audit.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in records if r.get("kind") != "admin"]  # the logins' events (setup's keygen is an admin one)


def test_accepted_key_prints_its_line_with_options(deployed: Path, transport_key: TransportKey) -> None:
    key_type, key_text = transport_key.line.split()[:2]
    result = run(deployed, "nx", key_type, key_text)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith('restrict,command="nxauth login",from="198.51.100.0/24" ssh-ed25519 ')
    entry = parse_authorized_key(line)
    assert entry is not None and entry.key.blob == transport_key.blob
    assert result.stderr == ""
    [event] = events(deployed)
    assert (event["stage"], event["outcome"], event["backend"], event["detail"]) == (
        1,
        "accepted",
        "keystore",
        "authorized-keys",
    )


def test_from_is_checked_when_the_peer_is_known(deployed: Path, transport_key: TransportKey) -> None:
    key_type, key_text = transport_key.line.split()[:2]
    inside = run(deployed, "nx", key_type, key_text, "198.51.100.9 4000 192.0.2.1 22")
    outside = run(deployed, "nx", key_type, key_text, "203.0.113.9 4000 192.0.2.1 22")
    assert inside.stdout and not outside.stdout
    assert outside.returncode == 0
    assert events(deployed)[-1]["reason"] == "source-refused"


@pytest.mark.parametrize(
    ("user", "mangle", "reason"),
    [
        ("root", False, "wrong-account"),
        ("nx", True, "key-format"),
    ],
)
def test_refusals_print_nothing_and_are_audited(
    deployed: Path, transport_key: TransportKey, user: str, mangle: bool, reason: str
) -> None:
    key_type, key_text = transport_key.line.split()[:2]
    result = run(deployed, user, "ssh-rsa" if mangle else key_type, key_text)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert events(deployed)[-1]["reason"] == reason


def test_unknown_key(deployed: Path) -> None:
    other = TransportKey()
    result = run(deployed, "nx", *other.line.split()[:2])
    assert (result.returncode, result.stdout) == (0, "")
    assert events(deployed)[-1]["reason"] == "unknown-key"


def test_expired_key_is_refused(tmp_path: Path, transport_key: TransportKey) -> None:
    config = tmp_path / "nxauth.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[audit]\njsonl = "{tmp_path / "state" / "audit.jsonl"}"\n')
    keys = tmp_path / "keys.pub"
    keys.write_text('expiry-time="200001010000" ' + transport_key.line + "\n")
    assert main(["--config", str(config), "keys", "add", str(keys)]) == 0
    result = run(config, "nx", *transport_key.line.split()[:2])
    assert result.stdout == ""
    assert events(config)[-1]["reason"] == "key-expired"


def test_configuration_error_exits_3(tmp_path: Path, transport_key: TransportKey) -> None:
    config = tmp_path / "nxauth.toml"
    config.write_text("[transport]\nbogus = 1\n")
    result = run(config, "nx", *transport_key.line.split()[:2])
    assert result.returncode == 3
    assert result.stdout == ""
    assert "bogus" in result.stderr


def test_lean_start_up_loads_no_plugin_machinery(deployed: Path, transport_key: TransportKey) -> None:
    """sshd runs the command twice per login: it must not import pluggy,
    the entry-point scan, cryptography, asyncio or argparse."""
    key_type, key_text = transport_key.line.split()[:2]
    probe = (
        "import sys\n"
        "from nxauth.cli import main\n"
        f"status = main(['--config', {str(deployed)!r}, 'authorized-keys', 'nx', {key_type!r}, {key_text!r}])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'pluggy', 'cryptography', 'asyncio', 'argparse', 'passlib', 'ldap3', 'concurrent'})\n"
        "meta = 'importlib.metadata' in sys.modules\n"
        "print(status, heavy, meta, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("restrict,")
    assert result.stderr.strip() == "0 [] False"


# A key source from a plugin (the full path, the plugin manager loaded): test_authorized_keys_imports.py,
# test_a_key_source_from_a_plugin_takes_the_full_path (the same command, its modules and its event too).


def test_sshd_config_block(tmp_path: Path) -> None:
    config = nxauth.parse_config({"transport": {"account": "nxsrv"}})
    text = sshd_config_block(config, program="/usr/bin/nxauth", config_path=str(tmp_path / "my conf.toml"))
    quoted = f'"{(tmp_path / "my conf.toml").resolve()}"'
    assert "Match User nxsrv\n" in text
    for directive in (
        "AuthenticationMethods publickey",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "AuthorizedKeysFile none",
        f"AuthorizedKeysCommand /usr/bin/nxauth --config {quoted} authorized-keys %u %t %k",
        "AuthorizedKeysCommandUser nobody",
        f"ForceCommand /usr/bin/nxauth --config {quoted} login",
        "ExposeAuthInfo yes",
        "DisableForwarding yes",
    ):
        assert f"    {directive}\n" in text


def test_sshd_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "nxauth.toml"
    config.write_text('[transport]\naccount = "nxsrv"\n')
    assert main(["--config", str(config), "sshd-config", "--program", "/opt/nxauth/bin/nxauth"]) == 0
    out = capsys.readouterr().out
    assert "AuthorizedKeysCommandUser nxsrv" in out
    assert main(["--config", str(config), "sshd-config", "--program", "relative/nxauth"]) == 2


# ---------------------------------------------------------------- what the lean start-up relies on


def test_markers_match_pluggy() -> None:
    """nxauth's markers set exactly what pluggy's do (they avoid importing it)."""

    def make() -> object:
        def nxauth_auth_event(event: object) -> None: ...

        return nxauth_auth_event

    for options in ({}, {"tryfirst": True}, {"trylast": True, "specname": "x"}, {"wrapper": True}):
        ours, theirs = make(), make()
        HookimplMarker("nxauth")(**options)(ours)  # type: ignore[arg-type]
        pluggy.HookimplMarker("nxauth")(**options)(theirs)  # type: ignore[call-overload]
        assert ours.nxauth_impl == theirs.nxauth_impl  # type: ignore[attr-defined]
    ours, theirs = make(), make()
    HookspecMarker("nxauth")(ours)  # type: ignore[arg-type]
    pluggy.HookspecMarker("nxauth")(theirs)
    assert ours.nxauth_spec == theirs.nxauth_spec  # type: ignore[attr-defined]


def _ec_blob(private: ec.EllipticCurvePrivateKey) -> bytes:
    line = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return parse_public_key(line.decode()).blob


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()], ids=lambda c: c.name)
@settings(max_examples=25, deadline=None)
@given(flip=st.integers(min_value=0, max_value=10**6))
def test_point_validation_agrees_with_cryptography(curve: ec.EllipticCurve, flip: int) -> None:
    blob = _ec_blob(ec.generate_private_key(curve))
    key = decode_public_key(blob)  # a real point parses
    assert key.bits == curve.key_size
    # flip one bit of the point's coordinates: both must agree it is not a key
    size = (curve.key_size + 7) // 8
    point_start = len(blob) - (1 + 2 * size) + 1
    index = point_start + flip % (2 * size)
    bad = bytearray(blob)
    bad[index] ^= 1 << (flip % 8)
    point = bytes(bad[point_start - 1 :])
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
        theirs = True
    except ValueError:
        theirs = False
    try:
        decode_public_key(bytes(bad))
        ours = True
    except nxauth.KeyFormatError:
        ours = False
    assert ours == theirs


@settings(max_examples=30, deadline=None)
@given(e=st.integers(min_value=0, max_value=70000), n=st.integers(min_value=0, max_value=2**64))
def test_rsa_number_checks_are_at_least_cryptographys(e: int, n: int) -> None:
    """What parsing accepts, cryptography accepts (parsing also wants an odd modulus)."""
    from nxauth.keys.wire import check_rsa as _check_rsa

    try:
        rsa.RSAPublicNumbers(e, n).public_key()
        theirs = True
    except ValueError:
        theirs = False
    try:
        _check_rsa(e, n)
        ours = True
    except nxauth.KeyFormatError:
        ours = False
    assert theirs or not ours
