"""docs/deploy-openssh.md, followed literally: the configuration of section 3
and the shell steps of section 4 ("Keys and users") run as a script in a
temporary directory with the real CLI, the guide's paths moved under it and
``sudo -u nx`` dropped (the test runs as one user).  The documented result:
the transport key is registered once, for the transport account, with
``restrict,pty`` and the forced command (docs/cli.md, ``nxauth keygen``), and
``nxauth authorized-keys`` prints exactly that one line for it.

The old guide ran ``nxauth keygen`` (which registers the public half) and
then ``nxauth keys add`` of the same ``.pub``: a second row for the same key,
without ``restrict`` or the forced command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.docs import DOCS, code_blocks

GUIDE = DOCS / "deploy-openssh.md"


def section_blocks(heading: str, language: str) -> list[str]:
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    first = text[:start].count("\n") + 2
    last = text[:end].count("\n") + 1 if end >= 0 else 10**9
    return [b.text for b in code_blocks(GUIDE) if first <= b.line <= last and b.language == language]


def moved(text: str, root: Path) -> str:
    """The guide's absolute paths under ``root``."""
    for path in ("/var/lib/nxauth", "/etc/nxauth", "/root", "/usr/local/libexec"):
        text = text.replace(path, f"{root}{path}")
    return text


def run_guide(tmp_path: Path) -> tuple[str, dict[str, str]]:
    root = tmp_path / "root-fs"
    for directory in ("var/lib/nxauth", "etc/nxauth", "root"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (config,) = section_blocks("## 3. The configuration", "toml")
    config = moved(config, root).replace("syslog = true", "syslog = false")  # no /dev/log in a test
    config_path = root / "etc/nxauth/nxauth.toml"
    config_path.write_text(config)
    steps = section_blocks("## 4. Keys and users", "sh")
    assert steps, "section 4 has no shell steps"
    key_steps = moved(steps[0], root).replace("sudo -u nx ", "")
    script = f'set -eu\nnxauth() {{ {sys.executable} -m nxauth "$@"; }}\n{key_steps}'
    env = {**os.environ, "NXAUTH_CONFIG": str(config_path), "HOME": str(root / "root")}
    result = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    return key_steps, env


def nxauth(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "nxauth", *args], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_guides_key_steps_register_the_key_once(tmp_path: Path) -> None:
    steps, env = run_guide(tmp_path)
    keys = json.loads(nxauth(env, "keys", "list", "--json"))
    assert len(keys) == 1, f"the guide's steps registered {len(keys)} rows:\n{steps}"
    (key,) = keys
    assert key["account"] == "nx"
    public_files = sorted(tmp_path.rglob("*.pub"))
    assert len(public_files) == 1
    kind, blob, *_ = public_files[0].read_text().split()
    lines = nxauth(env, "authorized-keys", "nx", kind, blob).splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("restrict,pty,command=")  # as docs/cli.md says keygen registers it
    assert f"{kind} {blob}" in lines[0]


def test_the_guide_does_not_add_a_key_keygen_registered() -> None:
    """The guide's step 4 never feeds keygen's ``.pub`` to ``keys add``."""
    (steps, *_) = section_blocks("## 4. Keys and users", "sh")
    assert "keygen" in steps
    assert "keys add" not in steps
