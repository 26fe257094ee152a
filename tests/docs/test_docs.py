"""The docs cannot drift: every hook, every configuration key, every option
of every built-in backend kind, every reason code and every CLI command is
documented, and the command lines the docs show are valid."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import io
import re
import shlex

import pytest

import nxauth
from nxauth import config
from nxauth.cli import build_parser
from nxauth.plugins import hookspecs
from tests.support.docs import DOCS, backend_options, code_blocks


def section_body(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a
    higher level (``#`` lines inside fenced code blocks are not headings)."""
    level = len(heading.split(" ", 1)[0])
    lines = text.splitlines()
    assert heading in lines, f"{heading!r} is missing"
    body: list[str] = []
    fenced = False
    for line in lines[lines.index(heading) + 1 :]:
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and re.match(rf"#{{1,{level}}} ", line):
            break
        body.append(line)
    return "\n".join(body)


def table_keys(body: str) -> set[str]:
    """The names in the first column of the tables in ``body`` (``| `name` | ...``)."""
    return set(re.findall(r"^\| `([^`]+)` \|", body, re.MULTILINE))


def test_every_hook_is_documented() -> None:
    text = (DOCS / "hooks.md").read_text()
    hooks = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("nxauth_")]
    assert hooks
    for name in hooks:
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"`{name}({params})`" in text, f"{name} is missing from docs/hooks.md"


# ---------------------------------------------------------------- configuration

#: Every ``[section]`` of the configuration: the fields of Config whose value is a dataclass.
SECTIONS = {
    field.name: type(field.default)
    for field in dataclasses.fields(config.Config)
    if dataclasses.is_dataclass(field.default)
}
#: Sections the lead engineer documents with the deployment pages; checked as
#: soon as their heading exists in docs/configuration.md.
PENDING_SECTIONS: dict[str, str] = {}
BACKEND_HEADING = "## `[backends.NAME]`"


def test_config_sections_are_found() -> None:
    assert {"transport", "session", "usernames", "throttle", "audit", "plugins"} <= set(SECTIONS)


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_config_key_is_documented(section: str) -> None:
    text = (DOCS / "configuration.md").read_text()
    heading = f"## `[{section}]`"
    if heading + "\n" not in text and section in PENDING_SECTIONS:
        pytest.skip(f"[{section}] is not documented yet: {PENDING_SECTIONS[section]}")
    documented = table_keys(section_body(text, heading))
    fields = {field.name for field in dataclasses.fields(SECTIONS[section])}
    assert fields - documented == set(), f"[{section}] keys missing from docs/configuration.md"
    assert documented - fields == set(), f"[{section}] keys documented in docs/configuration.md that do not exist"


def test_top_level_keys_are_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    scalars = {
        field.name
        for field in dataclasses.fields(config.Config)
        if field.name not in SECTIONS and field.name not in ("source", "backends", "auth", "account")
    }
    assert scalars
    assert table_keys(section_body(text, "## Top level")) == scalars
    assert BACKEND_HEADING + "\n" in text
    assert "## `[[auth]]` and `[[account]]`\n" in text


def test_every_backend_kind_and_option_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    backends = section_body(text, BACKEND_HEADING)
    common = table_keys(section_body(backends, "### Every instance"))
    assert common == {"kind", "timeout"}
    options = backend_options()
    assert {"keystore", "authorized_keys", "passwords", "users", "system", "pam", "ldap"} <= set(options)
    for kind, names in options.items():
        documented = table_keys(section_body(backends, f"### Kind `{kind}`"))
        assert names - documented == set(), f"options of kind {kind} missing from docs/configuration.md"
        assert documented - names == set(), f"kind {kind} has no such options (docs/configuration.md)"


def test_every_reason_is_documented() -> None:
    documented = table_keys(section_body((DOCS / "concepts.md").read_text(), "## Reasons"))
    missing = {reason.value for reason in nxauth.Reason} - documented
    assert missing == set(), "reason codes missing from docs/concepts.md"


# ---------------------------------------------------------------- command line


def test_every_cli_command_is_documented() -> None:
    text = (DOCS / "cli.md").read_text()
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands
    for name in commands:
        assert f"`nxauth {name}" in text, f"nxauth {name} is missing from docs/cli.md"


SHELL_LANGUAGES = {"sh", "shell", "bash", "console"}
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1"}
#: what may stand right before the program name: an operator, sudo, exec, or VAR=value
COMMAND_PREFIXES = SHELL_OPERATORS | {"sudo", "exec", "env", "time"}


def shell_commands(text: str) -> list[tuple[int, list[str]]]:
    """``(line offset, arguments)`` of every ``nxauth`` invocation in a shell block."""
    found = []
    logical = ""
    start = 0
    for offset, raw in enumerate(text.splitlines()):
        line = raw.removeprefix("$ ") if not logical else raw
        if not logical:
            start = offset
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        lexer = shlex.shlex(logical, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words = list(lexer)
        logical = ""
        for index, word in enumerate(words):
            before = words[index - 1] if index else ";"
            if word.rsplit("/", 1)[-1] == "nxauth" and (before in COMMAND_PREFIXES or "=" in before):
                args = []
                for arg in words[index + 1 :]:
                    if arg in SHELL_OPERATORS:
                        break
                    args.append(arg)
                found.append((start, args))
    return found


def test_shell_examples_are_valid_command_lines() -> None:
    checked = 0
    for path in sorted(DOCS.rglob("*.md")):
        for block in code_blocks(path):
            if block.language not in SHELL_LANGUAGES:
                continue
            for offset, args in shell_commands(block.text):
                where = f"docs/{path.relative_to(DOCS).as_posix()}:{block.line + offset}"
                stderr = io.StringIO()
                try:
                    with contextlib.redirect_stderr(stderr):
                        build_parser().parse_args(args)
                except SystemExit as exc:
                    if exc.code:
                        pytest.fail(f"{where}: nxauth {shlex.join(args)}: {stderr.getvalue().strip()}")
                except argparse.ArgumentError as exc:
                    pytest.fail(f"{where}: nxauth {shlex.join(args)}: {exc}")
                checked += 1
    assert checked, "no nxauth command line found in the docs' shell blocks"
