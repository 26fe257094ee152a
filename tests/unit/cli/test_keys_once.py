"""A transport key is registered once per account (docs/cli.md, ``keys add``;
docs/deploy-openssh.md, section 4): ``keys add`` of the ``.pub`` that
``keygen`` registered with ``restrict,pty`` and the forced command is
refused, nothing added; the same line again changes nothing.  The old CLI
stored a second, unrestricted row for the same key."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nxauth.cli import EXIT_OK, main


def keys(config: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(["--config", str(config), "keys", "list", "--json"]) == EXIT_OK
    rows: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return rows


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "nxauth.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    return path


def test_adding_keygens_public_half_again_is_refused(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "nx-transport"
    assert main(["--config", str(config), "keygen", "--out", str(key)]) == EXIT_OK
    before = keys(config, capsys)
    assert len(before) == 1
    assert main(["--config", str(config), "keys", "add", f"{key}.pub"]) != EXIT_OK
    assert "already registered" in capsys.readouterr().err
    assert keys(config, capsys) == before


def test_the_same_line_twice_is_stored_once(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "k"
    assert main(["--config", str(config), "keygen", "--out", str(key)]) == EXIT_OK
    capsys.readouterr()
    assert main(["--config", str(config), "keys", "export"]) == EXIT_OK
    exported = tmp_path / "exported"
    exported.write_text(capsys.readouterr().out)
    assert main(["--config", str(config), "keys", "add", str(exported)]) == EXIT_OK
    assert len(keys(config, capsys)) == 1


@settings(max_examples=20, deadline=None)
@given(
    options=st.lists(
        st.sampled_from(["", "restrict", "restrict,pty", 'from="10.0.0.0/8"', "no-pty"]), min_size=2, max_size=4
    )
)
def test_one_file_with_the_same_key_under_other_options(
    tmp_path_factory: pytest.TempPathFactory, options: list[str]
) -> None:
    """Whatever mix of options one file gives a key: at most one row per
    distinct line, and never two rows with different options."""
    root = tmp_path_factory.mktemp("once")
    config = root / "nxauth.toml"
    config.write_text(f'state_dir = "{root / "state"}"\n')
    blob = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    text = "".join(f"{o} ssh-ed25519 {blob} k\n".lstrip() for o in options)
    (root / "keys").write_text(text)
    status = main(["--config", str(config), "keys", "add", str(root / "keys")])
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["--config", str(config), "keys", "list", "--json"]) == EXIT_OK
    rows = json.loads(out.getvalue())
    if len(set(options)) == 1:
        assert status == EXIT_OK and len(rows) == 1
    else:
        assert status != EXIT_OK and rows == []
