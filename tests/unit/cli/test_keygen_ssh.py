"""Keys written by ``nxauth keygen`` authenticate with the real ``ssh -i``
against a real sshd, with the restrictions and forced command nxauth gave
them (issue 3's interop check; the full two-stage SSH deployment is issue 7)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nxauth.cli import EXIT_OK, main
from tests.support.sshd import free_port, running_sshd, skip_reason

reason = skip_reason()
pytestmark = pytest.mark.skipif(reason is not None, reason=reason or "")


def test_keygen_key_logs_in_with_ssh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the transport account is the throwaway account sshd lets in
    account = f"nxt{os.getpid() % 100000}"
    config = tmp_path / "nxauth.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\nauth = []\naccount = []\n'
        f'[transport]\naccount = "{account}"\nforced_command = "echo nxauth-forced-command"\n'
    )
    key = tmp_path / "id_transport"
    other = tmp_path / "id_other"
    assert main(["--config", str(config), "keygen", "--out", str(key)]) == EXIT_OK
    assert main(["--config", str(config), "keygen", "--out", str(other)]) == EXIT_OK
    capsys.readouterr()
    assert main(["--config", str(config), "keys", "remove", "2"]) == EXIT_OK  # the other key is not listed
    capsys.readouterr()
    assert main(["--config", str(config), "keys", "export"]) == EXIT_OK
    exported = capsys.readouterr().out
    with running_sshd("AuthorizedKeysFile {work}/authorized_keys\n", account=account) as sshd:
        keys_file = sshd.work / "authorized_keys"
        keys_file.write_text(exported)
        keys_file.chmod(0o644)
        result = sshd.ssh(key, "id")  # the forced command replaces whatever the client asks
        assert result.returncode == 0, result.stderr + sshd.log.read_text()
        assert result.stdout.strip() == "nxauth-forced-command"
        refused = sshd.ssh(other, "true")
        assert refused.returncode == 255
        log = sshd.log.read_text()
        assert "Accepted publickey for " + account in log


def test_restrict_refuses_remote_port_forwarding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    account = f"nxf{os.getpid() % 100000}"
    config = tmp_path / "nxauth.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\nauth = []\naccount = []\n'
        f'[transport]\naccount = "{account}"\nforced_command = "sleep 2"\n'
    )
    key = tmp_path / "id_transport"
    assert main(["--config", str(config), "keygen", "--out", str(key)]) == EXIT_OK
    capsys.readouterr()
    assert main(["--config", str(config), "keys", "export"]) == EXIT_OK
    exported = capsys.readouterr().out
    with running_sshd("AuthorizedKeysFile {work}/authorized_keys\n", account=account) as sshd:
        (sshd.work / "authorized_keys").write_text(exported)
        ssh = sshd.ssh(
            key,
            "true",
            options=("-o", "ExitOnForwardFailure=yes", "-R", f"127.0.0.1:{free_port()}:127.0.0.1:{sshd.port}"),
        )
        assert ssh.returncode == 255
        assert "remote port forwarding failed" in ssh.stderr
