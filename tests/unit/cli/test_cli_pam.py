"""``nxauth pam-service``: print or install the PAM service file (never into
/etc/pam.d here: ``--path`` points at a temporary file)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from nxauth.cli import EXIT_FAIL, EXIT_OK, EXIT_USAGE, main
from nxauth.cli.pam import STYLES, detect_style, render_service_file


@pytest.mark.parametrize("style", STYLES)
def test_every_style_is_a_complete_service_file(style: str) -> None:
    text = render_service_file("nxauth", style)
    assert text.startswith("#%PAM-1.0\n")
    lines = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    kinds = {line[0].lstrip("-") for line in lines if not line[0].startswith("@")}
    assert {"account", "password", "session"} <= kinds
    assert any(line[0] in ("auth", "@include") for line in lines)
    # nxauth only authenticates: the other types deny.
    assert ["password", "required", "pam_deny.so"] in lines
    assert ["session", "required", "pam_deny.so"] in lines


@pytest.mark.parametrize(
    ("files", "style"),
    [
        pytest.param(("common-auth", "common-account"), "debian", id="debian"),
        pytest.param(("password-auth",), "redhat", id="redhat"),
        pytest.param((), "generic", id="generic"),
    ],
)
def test_style_detection(tmp_path: Path, files: tuple[str, ...], style: str) -> None:
    for name in files:
        (tmp_path / name).write_text("")
    assert detect_style(tmp_path) == style


def test_print(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pam-service", "--style", "debian"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out == render_service_file("nxauth", "debian")
    assert "@include common-auth" in out and 'service "nxauth"' in out


def test_print_with_service_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pam-service", "--service", "nx-login", "--style", "generic"]) == EXIT_OK
    assert 'service "nx-login"' in capsys.readouterr().out


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "", "x" * 65, "sp ace"])
def test_bad_service_name_is_a_usage_error(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pam-service", "--service", name]) == EXIT_USAGE
    assert "--service" in capsys.readouterr().err


def test_path_without_install_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["pam-service", "--path", str(tmp_path / "x")]) == EXIT_USAGE
    assert not (tmp_path / "x").exists()


def test_install_writes_0644(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "nxauth"
    assert main(["pam-service", "--install", "--style", "generic", "--path", str(target)]) == EXIT_OK
    assert target.read_text() == render_service_file("nxauth", "generic")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert f"wrote {target}" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["nxauth"]  # no temporary file left


def test_install_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "nxauth"
    target.write_text("# the administrator's own\n")
    assert main(["pam-service", "--install", "--path", str(target)]) == EXIT_FAIL
    assert "--force" in capsys.readouterr().err
    assert target.read_text() == "# the administrator's own\n"


def test_install_refuses_to_overwrite_a_dangling_symlink(tmp_path: Path) -> None:
    target = tmp_path / "nxauth"
    target.symlink_to(tmp_path / "nowhere")
    assert main(["pam-service", "--install", "--path", str(target)]) == EXIT_FAIL
    assert target.is_symlink()


def test_install_force_replaces(tmp_path: Path) -> None:
    target = tmp_path / "nxauth"
    target.write_text("old\n")
    assert main(["pam-service", "--install", "--force", "--style", "redhat", "--path", str(target)]) == EXIT_OK
    assert target.read_text() == render_service_file("nxauth", "redhat")


def test_install_into_missing_directory_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pam-service", "--install", "--path", str(tmp_path / "no" / "nxauth")]) == EXIT_FAIL
    assert "no such directory" in capsys.readouterr().err
