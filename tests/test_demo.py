"""``nxauth demo``, the README's first command, through the console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def test_demo_runs_every_case() -> None:
    script = shutil.which("nxauth") or str(Path(sys.executable).parent / "nxauth")
    result = subprocess.run([script, "demo"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.count("[ok  ]") == 4
    assert "Accepted password for demo" in out
    assert "Failed password for demo" in out and "reason=bad-password" in out
    assert "Failed password for invalid user nobody" in out
    assert "reason=unknown-key" in out and "reason=stage-order" in out
    assert "demo: every case ended as it should" in out
