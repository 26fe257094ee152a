"""Key sources: the keystore (indexed in the store) and the authorized_keys
file (indexed, reloaded on change), through the authenticator's stage 1;
and the keygen / keys commands, checked with the real ssh-keygen."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import nxauth
from nxauth import AuthenticationFailed, ConfigError, Reason
from nxauth.backends.keystore import KeyStore
from nxauth.cli import EXIT_FAIL, EXIT_OK, main
from nxauth.keys.authorized_keys import parse_authorized_key
from nxauth.store.sqlite import SqliteStore
from tests.support.keys import PEER, TransportKey

ssh_keygen = shutil.which("ssh-keygen")
needs_ssh_keygen = pytest.mark.skipif(ssh_keygen is None, reason="ssh-keygen (openssh-client) is not installed")


def stage_one(
    auth: nxauth.Authenticator, key: TransportKey | str, peer: tuple[str, int] = PEER
) -> nxauth.TransportGrant:
    line = key if isinstance(key, str) else key.line
    return auth.open_session(peer).check_transport_key("nx", line)


def reason(auth: nxauth.Authenticator, key: TransportKey | str) -> Reason:
    with pytest.raises(AuthenticationFailed) as info:
        stage_one(auth, key)
    return info.value.reason


def keystore_auth(tmp_path: Path, clock: Any = time.time, **config: object) -> nxauth.Authenticator:
    return nxauth.Authenticator(
        {"state_dir": str(tmp_path / "state"), "auth": [], "account": [], **config}, entry_points=False, clock=clock
    )


def test_keystore_is_the_default_key_source(tmp_path: Path) -> None:
    auth = keystore_auth(tmp_path)
    key, other = TransportKey(), TransportKey()
    entry = parse_authorized_key(f'restrict,command="nxauth login" {key.line}')
    assert entry is not None
    KeyStore(auth.store).add("nx", entry)
    grant = stage_one(auth, key)
    assert grant.source == "keystore"
    assert grant.forced_command == "nxauth login"
    assert "no-pty" in grant.restrictions and "no-port-forwarding" in grant.restrictions
    assert reason(auth, other) is Reason.UNKNOWN_KEY


def test_keystore_expiry_is_refused_as_expired(tmp_path: Path) -> None:
    now = [2_000_000_000.0]
    auth = keystore_auth(tmp_path, clock=lambda: now[0])
    key = TransportKey()
    entry = parse_authorized_key(key.line)
    assert entry is not None
    keystore = KeyStore(auth.store)
    keystore.add("nx", entry, expires=now[0] + 100)
    assert stage_one(auth, key).expires == now[0] + 100
    now[0] += 101
    assert reason(auth, key) is Reason.KEY_EXPIRED


def test_keystore_other_account_and_removal(tmp_path: Path) -> None:
    auth = keystore_auth(tmp_path)
    key = TransportKey()
    entry = parse_authorized_key(key.line)
    assert entry is not None
    keystore = KeyStore(auth.store)
    stored = keystore.add("someone-else", entry)
    assert reason(auth, key) is Reason.UNKNOWN_KEY
    again = keystore.add("nx", entry)
    assert keystore.add("nx", entry).id == again.id  # stored once
    assert stage_one(auth, key).fingerprint == key_fingerprint(key)
    assert keystore.remove(stored.fingerprint) == 2
    assert reason(auth, key) is Reason.UNKNOWN_KEY


def key_fingerprint(key: TransportKey) -> str:
    entry = parse_authorized_key(key.line)
    assert entry is not None
    return entry.key.fingerprint


def test_keystore_lookup_is_indexed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")
    plan = store.execute(
        "EXPLAIN QUERY PLAN SELECT line, expires FROM transport_keys WHERE account = ? AND lookup = ?", ("nx", b"k")
    )
    assert any("USING INDEX transport_keys_lookup" in str(row) for row in plan)


def file_auth(tmp_path: Path, path: Path) -> nxauth.Authenticator:
    return nxauth.Authenticator(
        {
            "state_dir": str(tmp_path / "state"),
            "transport": {"key_sources": ["file"]},
            "backends": {"file": {"kind": "authorized_keys", "path": str(path)}},
            "auth": [],
            "account": [],
        },
        entry_points=False,
    )


def test_authorized_keys_file_reloads_and_skips_bad_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first, second = TransportKey(), TransportKey()
    path = tmp_path / "authorized_keys"
    path.write_text(f"# transport keys\nthis line is broken\n{first.line}\n")
    path.chmod(0o600)
    auth = file_auth(tmp_path, path)
    assert stage_one(auth, first).source == "file"
    assert "line 2" in caplog.text
    assert reason(auth, second) is Reason.UNKNOWN_KEY
    path.write_text(f'from="203.0.113.0/24" {second.line}\n')
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert reason(auth, first) is Reason.UNKNOWN_KEY
    assert reason(auth, second) is Reason.SOURCE_REFUSED
    assert stage_one(auth, second, ("203.0.113.5", 1)).source == "file"


def test_authorized_keys_file_unsafe_or_missing_fails_closed(tmp_path: Path) -> None:
    key = TransportKey()
    path = tmp_path / "authorized_keys"
    path.write_text(key.line + "\n")
    path.chmod(0o666)
    auth = file_auth(tmp_path, path)
    assert reason(auth, key) is Reason.BACKEND_ERROR
    path.unlink()
    assert reason(auth, key) is Reason.BACKEND_ERROR


def test_authorized_keys_needs_a_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        nxauth.Authenticator(
            {
                "state_dir": str(tmp_path),
                "transport": {"key_sources": ["authorized_keys"]},
                "auth": [],
                "account": [],
            },
            entry_points=False,
        )
    assert info.value.key == "backends.authorized_keys.path"


# ------------------------------------------------------------ CLI


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "nxauth.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\nauth = []\naccount = []\n')
    return path


@needs_ssh_keygen
@pytest.mark.parametrize(("kind", "bits"), [("ed25519", None), ("ecdsa", 384), ("rsa", 2048)])
def test_keygen_writes_an_openssh_key_and_registers_it(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, bits: int | None
) -> None:
    out = tmp_path / "client" / "id_nx"
    old = os.umask(0)
    try:
        args = ["--config", str(config), "keygen", "--type", kind, "--out", str(out), "--json"]
        assert main([*args, *(["--bits", str(bits)] if bits else [])]) == EXIT_OK
    finally:
        os.umask(old)
    result = json.loads(capsys.readouterr().out)
    assert (out.stat().st_mode & 0o777) == 0o600
    assert ssh_keygen is not None
    derived = subprocess.run([ssh_keygen, "-y", "-f", str(out)], capture_output=True, text=True, check=True).stdout
    printed = subprocess.run([ssh_keygen, "-lf", str(out) + ".pub"], capture_output=True, text=True, check=True).stdout
    assert printed.split()[1] == result["fingerprint"]
    auth = nxauth.Authenticator.from_file(config)
    grant = auth.open_session(PEER).check_transport_key("nx", derived.strip())
    assert grant.fingerprint == result["fingerprint"]
    assert grant.forced_command == "nxauth login"
    assert main(["--config", str(config), "keygen", "--out", str(out)]) == EXIT_FAIL  # exists


@needs_ssh_keygen
def test_keygen_passphrase(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    out = tmp_path / "id_pass"
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert main(["--config", str(config), "keygen", "--out", str(out), "--passphrase-stdin"]) == EXIT_OK
    assert ssh_keygen is not None
    wrong = subprocess.run([ssh_keygen, "-y", "-P", "wrong", "-f", str(out)], capture_output=True, check=False)
    assert wrong.returncode != 0
    subprocess.run([ssh_keygen, "-y", "-P", "correct horse", "-f", str(out)], capture_output=True, check=True)


def test_keygen_rotation_keeps_old_key_for_the_grace(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config), "keygen", "--out", str(tmp_path / "k1")]) == EXIT_OK
    assert (
        main(["--config", str(config), "keygen", "--out", str(tmp_path / "k2"), "--rotate", "--grace", "7d"]) == EXIT_OK
    )
    capsys.readouterr()
    assert main(["--config", str(config), "keys", "list", "--json"]) == EXIT_OK
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2
    assert rows[0]["expires"] is not None and rows[1]["expires"] is None
    auth = nxauth.Authenticator.from_file(config)
    old = (tmp_path / "k1.pub").read_text().strip()
    assert auth.open_session(PEER).check_transport_key("nx", old).expires is not None
    later = nxauth.Authenticator.from_file(config, clock=lambda: time.time() + 8 * 86400)
    with pytest.raises(AuthenticationFailed) as info:
        later.open_session(PEER).check_transport_key("nx", old)
    assert info.value.reason is Reason.KEY_EXPIRED


def test_keys_add_export_remove(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = TransportKey(), TransportKey()
    source = tmp_path / "keys.txt"
    source.write_text(f'restrict {a.line}\nfrom="10.0.0.0/8" {b.line}\n')
    assert main(["--config", str(config), "keys", "add", str(source), "--expires", "30d"]) == EXIT_OK
    capsys.readouterr()
    assert main(["--config", str(config), "keys", "export"]) == EXIT_OK
    exported = capsys.readouterr().out.splitlines()
    assert len(exported) == 2 and exported[0].startswith("restrict,expiry-time=") and 'from="10.0.0.0/8"' in exported[1]
    assert all(parse_authorized_key(line) is not None for line in exported)
    assert main(["--config", str(config), "keys", "remove", key_fingerprint(a)]) == EXIT_OK
    assert main(["--config", str(config), "keys", "remove", key_fingerprint(a)]) == EXIT_FAIL


def test_keys_add_is_all_or_nothing(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "keys.txt"
    source.write_text(f"{TransportKey().line}\nssh-ed25519 not-base64!\n")
    assert main(["--config", str(config), "keys", "add", str(source)]) == EXIT_FAIL
    assert "line 2" in capsys.readouterr().err
    assert main(["--config", str(config), "keys", "list", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == []
