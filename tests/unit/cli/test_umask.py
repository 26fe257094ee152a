"""Issue 17, class 6: every path nxauth creates has an explicit mode, whatever
the umask.  The commands run in a subprocess under ``umask 000`` (and under
``umask 777``, where a mode taken from the umask would be 0000), and every
directory and file they created is checked."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# what each created path must be: nothing nxauth makes is writable by group
# or others, secrets and state are owner-only, public halves world-readable
EXPECTED_PUBLIC = 0o644
EXPECTED_PRIVATE = 0o600
EXPECTED_DIR = 0o700

SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.umask(int(sys.argv[1], 8))
    from nxauth.cli import main
    config = sys.argv[2]
    rc = main(["--config", config, "keygen", "--out", sys.argv[3]])
    if rc != 0:
        sys.exit(rc)
    import nxauth
    with nxauth.Authenticator.from_file(config) as auth:
        session = auth.open_session(peer=("198.51.100.7", 1))
        try:
            session.login("alice", "wrong")
        except nxauth.NxauthError:
            pass
        # while the store is open its -wal and -shm exist: report their modes
        db = str(auth.config.store_path)
        for side in ("-wal", "-shm"):
            print(side, oct(os.stat(db + side).st_mode & 0o7777))
    from nxauth.integrations.hostkey import ensure_host_key
    ensure_host_key(sys.argv[4])
    """
)


def _created(root: Path) -> dict[Path, int]:
    modes = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            modes[path.relative_to(root)] = stat.S_IMODE(os.lstat(path).st_mode)
    return modes


@pytest.mark.parametrize("umask", ["000", "777", "022"])
def test_every_created_path_has_its_mode(tmp_path: Path, umask: str) -> None:
    root = tmp_path / "root"
    root.mkdir(mode=0o755)
    config = tmp_path / "nxauth.toml"
    config.write_text(
        f'state_dir = "{root / "var" / "lib" / "nxauth"}"\n'
        f'[audit]\nlog = false\njsonl = "{root / "log" / "deep" / "audit.jsonl"}"\n'
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            umask,
            str(config),
            str(root / "keys" / "a" / "transport"),
            str(root / "host" / "ssh_host_ed25519_key"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    sidecars = dict(line.split() for line in result.stdout.splitlines() if line.startswith("-"))
    assert sidecars == {"-wal": oct(EXPECTED_PRIVATE), "-shm": oct(EXPECTED_PRIVATE)}, result.stdout
    modes = _created(root)
    expected_files = {
        Path("keys/a/transport"): EXPECTED_PRIVATE,
        Path("keys/a/transport.pub"): EXPECTED_PUBLIC,
        Path("var/lib/nxauth/nxauth.db"): EXPECTED_PRIVATE,
        Path("log/deep/audit.jsonl"): EXPECTED_PRIVATE,
        Path("host/ssh_host_ed25519_key"): EXPECTED_PRIVATE,
        Path("host/ssh_host_ed25519_key.pub"): EXPECTED_PUBLIC,
    }
    for path in expected_files:
        assert path in modes, f"{path} was not created: {sorted(map(str, modes))}"
    for path, mode in modes.items():
        full = root / path
        if full.is_dir():
            assert mode == EXPECTED_DIR, f"{path}/ is {mode:04o} under umask {umask}"
        elif path in expected_files:
            assert mode == expected_files[path], f"{path} is {mode:04o} under umask {umask}"
        else:  # the store's -wal / -shm / -journal: as private as the store
            assert path.name.startswith("nxauth.db-"), f"unexpected file {path} ({mode:04o})"
            assert mode == EXPECTED_PRIVATE, f"{path} is {mode:04o} under umask {umask}"
    assert not [p for p in modes if p.name.endswith(".tmp")], "a temporary file was left behind"
