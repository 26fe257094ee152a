"""The examples in the docs run.

For each page under ``docs/`` (one test case per page):

- every fenced ``python`` block is executed, in order, all blocks of the page
  in one namespace, in a fresh temporary working directory, with
  ``NXAUTH_CONFIG`` unset and ``HOME`` (and ``XDG_STATE_HOME``) in that
  directory;
- every fenced ``toml`` block is parsed as a complete nxauth configuration
  with :func:`nxauth.parse_config`, and each instance of a built-in backend
  kind in it is built as ``nxauth check`` would build it (secrets replaced
  by a stand-in; a CA file or a libpam that only exists on the deployed
  machine is not an error), so a misspelled or inconsistent option fails;
- a block right after a line ``<!-- skip-test: reason -->`` is not run.

A failure names the page and the line of the block; a traceback shows the
lines of the page itself.
"""

from __future__ import annotations

import tomllib
import traceback
from pathlib import Path
from typing import Any

import pytest

import nxauth
from tests.support.docs import DOCS, Block, check_backends, code_blocks

PAGES = sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))


def run_python(block: Block, namespace: dict[str, Any], path: Path, where: str) -> None:
    # pad with blank lines so that line numbers in a traceback are the page's
    code = compile("\n" * (block.line - 1) + block.text, str(path), "exec")
    try:
        exec(code, namespace)
    except Exception:
        pytest.fail(f"{where}: the python block failed:\n{traceback.format_exc()}", pytrace=False)


def check_toml(block: Block, where: str, state_dir: Path) -> None:
    try:
        data = tomllib.loads(block.text)
    except tomllib.TOMLDecodeError as exc:
        pytest.fail(f"{where}: invalid TOML: {exc}", pytrace=False)
    try:
        config = nxauth.parse_config(data, source=where)
        check_backends(config, state_dir)
    except nxauth.ConfigError as exc:
        pytest.fail(f"not a valid nxauth configuration: {exc}", pytrace=False)  # exc names the page and line


@pytest.mark.parametrize("page", PAGES)
def test_examples_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = DOCS / page
    monkeypatch.delenv("NXAUTH_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / ".local" / "state"))
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__docs_example__"}
    for block in code_blocks(path):
        if block.skip is not None:
            continue
        where = f"docs/{page}:{block.line}"
        if block.language == "python":
            run_python(block, namespace, path, where)
        elif block.language == "toml":
            check_toml(block, where, tmp_path / ".docs-store")
