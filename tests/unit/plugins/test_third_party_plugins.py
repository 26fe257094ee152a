"""Third-party plugins as real installed distributions: nxauth finds the
example plugin ``plugins/nxauth-totp`` through its entry point, a
distribution whose plugin cannot be imported is reported by name while the
others still load, and every example plugin's own test suite passes against
this nxauth.

``scripts/test-all`` installs every ``plugins/*/`` into the test
environment, so nothing here skips in CI; elsewhere the tests skip, saying
which distribution to install."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nxauth
from tests.support import ROOT

PLUGINS = ROOT / "plugins"
NXAUTH = [sys.executable, "-m", "nxauth"]

try:
    import nxauth_totp  # noqa: F401 - only whether it is installed
except ImportError:
    pytest.skip(
        "the example plugin nxauth-totp is not installed: pip install -e plugins/nxauth-totp "
        "(scripts/test-all installs every plugins/*/)",
        allow_module_level=True,
    )


def mapping(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "state_dir": str(tmp_path / "state"),
        "transport": {"key_sources": []},
        "auth": [{"use": "passwords", "control": "required"}, {"use": "totp", "control": "required"}],
        "account": [{"use": "users"}],
        **extra,
    }


def check_json(config: Path, *, pythonpath: Path | None = None) -> tuple[int, dict[str, Any], str]:
    """``nxauth check --json`` in a fresh process (its own entry-point scan)."""
    env = {key: value for key, value in os.environ.items() if key != "NXAUTH_CONFIG"}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [*NXAUTH, "--config", str(config), "check", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    return done.returncode, json.loads(done.stdout) if done.stdout else {}, done.stderr


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "nxauth.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        "[transport]\nkey_sources = []\n"
        '[[auth]]\nuse = "passwords"\n[[auth]]\nuse = "totp"\n'
        '[[account]]\nuse = "users"\n'
    )
    return config


# ------------------------------------------------------------ the installed example plugin


def test_totp_has_an_entry_point_in_the_nxauth_group() -> None:
    entry = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="nxauth")}
    assert entry.get("totp") == "nxauth_totp.plugin"


def test_authenticator_discovers_totp_by_default(tmp_path: Path) -> None:
    with nxauth.Authenticator(mapping(tmp_path)) as auth:  # default: entry points on
        assert auth.describe()["backend_kinds"]["totp"] == "totp"
        assert auth.describe()["auth"][1]["kind"] == "totp"
        assert type(auth.backends["totp"]).__name__ == "TotpBackend"
        assert not [e for e in auth.plugin_errors if e.plugin == "totp"]


def test_entry_points_off_means_no_totp(tmp_path: Path) -> None:
    with pytest.raises(nxauth.ConfigError, match="totp") as info:
        nxauth.Authenticator(mapping(tmp_path), entry_points=False)
    assert info.value.key == "auth[1].use"


def test_disabled_plugin_is_not_loaded(tmp_path: Path) -> None:
    with nxauth.Authenticator(mapping(tmp_path, auth=[{"use": "passwords"}], plugins={"disabled": ["totp"]})) as auth:
        assert "totp" not in auth.describe()["backend_kinds"]


def test_check_json_lists_totp(tmp_path: Path) -> None:
    code, info, stderr = check_json(write_config(tmp_path))
    assert code == 0, stderr
    # an entry point's plugin names its distribution; built-ins have none
    assert info["plugins"]["totp"] == f"nxauth-totp {importlib.metadata.version('nxauth-totp')}"
    assert info["plugins"]["nxauth.backends.passwords"] is None
    assert info["backend_kinds"]["totp"] == "totp"
    assert {"use": "totp", "control": "required", "kind": "totp"} in info["auth"]
    assert info["plugin_errors"] == []


# ------------------------------------------------------------ a distribution that cannot be imported


def make_distribution(site: Path, name: str, entry_point: str, module_text: str) -> None:
    """A minimal installed distribution in ``site``: a module and a
    ``.dist-info`` whose ``entry_points.txt`` names it in the group ``nxauth``."""
    module = entry_point.split(":", maxsplit=1)[0]
    (site / f"{module}.py").write_text(textwrap.dedent(module_text))
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[nxauth]\n{name} = {entry_point}\n")
    (info / "RECORD").write_text("")


BROKEN = {
    "raises": (
        "broken-raises",
        "nxauth_broken_raises",
        'raise RuntimeError("this plugin is broken on purpose")\n',
        "RuntimeError: this plugin is broken on purpose",
    ),
    "missing-dependency": (
        "broken-deps",
        "nxauth_broken_deps:plugin",
        "import nxauth_no_such_dependency\nplugin = object()\n",
        "No module named 'nxauth_no_such_dependency'",
    ),
    "missing-attribute": (
        "broken-attr",
        "nxauth_broken_attr:no_such_object",
        "plugin = object()\n",
        "no_such_object",
    ),
}


@pytest.fixture(params=sorted(BROKEN))
def broken_site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    name, entry_point, text, message = BROKEN[request.param]
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, name, entry_point, text)
    yield site, name, message
    sys.modules.pop(entry_point.split(":")[0], None)  # a module that did import must not outlive its site


def test_broken_distribution_is_named_and_totp_still_loads(
    broken_site: tuple[Path, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site, name, message = broken_site
    monkeypatch.syspath_prepend(str(site))
    assert name in {ep.name for ep in importlib.metadata.entry_points(group="nxauth")}
    with nxauth.Authenticator(mapping(tmp_path)) as auth:
        errors = [e for e in auth.plugin_errors if e.plugin == name]
        assert len(errors) == 1, auth.plugin_errors
        assert isinstance(errors[0], nxauth.PluginError)
        assert message in str(errors[0]) and f"plugin {name!r}" in str(errors[0])
        assert auth.describe()["backend_kinds"]["totp"] == "totp"


def test_broken_distribution_in_check_json(broken_site: tuple[Path, str, str], tmp_path: Path) -> None:
    site, name, message = broken_site
    code, info, stderr = check_json(write_config(tmp_path), pythonpath=site)
    assert code == 1, stderr  # nxauth check fails when a plugin failed to load
    assert [error for error in info["plugin_errors"] if f"plugin {name!r}" in error and message in error]
    assert info["backend_kinds"]["totp"] == "totp"
    assert "totp" in info["plugins"] and name not in info["plugins"]


def test_strict_plugins_refuse_to_start_with_a_broken_distribution(
    broken_site: tuple[Path, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site, name, _ = broken_site
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(nxauth.PluginError) as info:
        nxauth.Authenticator(mapping(tmp_path, plugins={"strict": True}))
    assert info.value.plugin == name


# ------------------------------------------------------------ every example plugin's own tests


def example_plugins() -> list[Path]:
    return sorted(path.parent for path in PLUGINS.glob("*/pyproject.toml") if (path.parent / "tests").is_dir())


@pytest.mark.slow
@pytest.mark.parametrize("plugin", example_plugins(), ids=lambda path: path.name)
def test_example_plugin_test_suite_passes(plugin: Path) -> None:
    """The plugin's tests, run as its authors run them (from its folder, with
    its own pytest configuration), against this nxauth."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=plugin,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"\d+ passed", done.stdout)
    assert " skipped" not in done.stdout.splitlines()[-1], done.stdout[-2000:]


# ------------------------------------------------------------ the tutorial stays true to the code

TUTORIAL = ROOT / "docs" / "writing-a-plugin.md"
EXCERPT = re.compile(r"<!-- skip-test: excerpt of (\S+?)(?:,[^>]*)? -->\n```\w*\n(.*?)```", re.S)


def test_tutorial_excerpts_match_the_shipped_plugin() -> None:
    """Each block of docs/writing-a-plugin.md marked as an excerpt of a file
    appears in that file verbatim (so the page cannot drift from the code)."""
    text = TUTORIAL.read_text(encoding="utf-8")
    excerpts = EXCERPT.findall(text)
    assert len(excerpts) >= 3
    for path, block in excerpts:
        source = (ROOT / path).read_text(encoding="utf-8")
        lines = [line for line in block.splitlines() if line.strip() and line.strip() != "..."]
        position = 0
        for line in lines:
            found = source.find(line, position)
            assert found >= 0, f"{path}: excerpt line not found (in order): {line!r}"
            position = found + len(line)
