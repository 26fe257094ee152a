"""The docs cannot drift: every hook, every configuration key and every CLI
command is documented."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from nxauth import config, hookspecs
from nxauth.cli import build_parser

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_hook_is_documented() -> None:
    text = (DOCS / "hooks.md").read_text()
    hooks = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("nxauth_")]
    assert hooks
    for name in hooks:
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"`{name}({params})`" in text, f"{name} is missing from docs/hooks.md"


SECTIONS = {
    "transport": config.TransportConfig,
    "session": config.SessionConfig,
    "usernames": config.UsernameConfig,
    "throttle": config.ThrottleConfig,
    "audit": config.AuditConfig,
    "plugins": config.PluginsConfig,
}


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_config_key_is_documented(section: str) -> None:
    text = (DOCS / "configuration.md").read_text()
    heading = f"## `[{section}]`"
    assert heading in text
    body = text.split(heading, 1)[1].split("\n## ", 1)[0]
    for field in dataclasses.fields(SECTIONS[section]):
        assert f"| `{field.name}` |" in body, f"{section}.{field.name} is missing from docs/configuration.md"


def test_every_cli_command_is_documented() -> None:
    text = (DOCS / "cli.md").read_text()
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands
    for name in commands:
        assert f"`nxauth {name}" in text, f"nxauth {name} is missing from docs/cli.md"
