"""Which distributions a text tells someone to install.

nxauth's distribution is not called ``nxauth`` (an unrelated project owns that
name on the public package index), so a page, an error message or a packaging
file that installs ``nxauth`` sends people to a stranger's code.  This module
finds, in any text, the distribution names that install commands
(``pip install``, ``pipx install``, ``uv pip install``, ``uv add``,
``poetry add``, ...), requirement strings (pyproject arrays, requirements
files, a ``pyproject.toml`` shown in a page) and extras mentions
(``nxauth[pam]``) name, and which of those are confusable with a given name
the way the index compares names.  Parsing only: the tests decide which files
to read.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

# ---------------------------------------------------------------- names


def canonical_name(name: str) -> str:
    """PEP 503: the name pip and the index compare (``NX_Auth`` -> ``nx-auth``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def confusable_name(name: str) -> str:
    """The name the index refuses lookalikes of (warehouse's ``ultranormalize_name``:
    separators dropped, ``o`` read as ``0``, ``l`` and ``i`` as ``1``), so
    ``nx-auth``, ``nx.auth`` and ``NXAuth`` all read as ``nxauth``."""
    folded = re.sub(r"[-_.]+", "", name.lower())
    return folded.replace("o", "0").replace("l", "1").replace("i", "1")


def confusable(name: str, other: str) -> bool:
    """Whether ``name`` is ``other`` or a lookalike of it on the index."""
    return canonical_name(name) == canonical_name(other) or confusable_name(name) == confusable_name(other)


# ---------------------------------------------------------------- install commands

#: Commands whose arguments are distributions to install.  ``pip3 install``,
#: ``python -m pip install``, ``/opt/x/bin/pip install`` and ``uv pip install``
#: all contain ``pip install`` after a word boundary.
_INSTALLER = re.compile(
    r"(?<![\w-])(?:pip3?(?:\.\d+)?\s+install|pipx\s+install|pipx\s+inject|uv\s+add|uv\s+tool\s+install"
    r"|poetry\s+add|pdm\s+add|rye\s+add)(?![\w-])"
)

#: Options that take a value, in any installer above.  ``-e``/``--editable``
#: take a value too, but it is a target (a path or a requirement).
_VALUED = frozenset(
    {
        "-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url", "-f",
        "--find-links", "-t", "--target", "--prefix", "--root", "--src", "--upgrade-strategy",
        "--python-version", "--platform", "--implementation", "--abi", "--only-binary", "--no-binary",
        "--progress-bar", "--log", "--proxy", "--retries", "--timeout", "--exists-action", "--trusted-host",
        "--cert", "--client-cert", "--cache-dir", "--report", "-C", "--config-settings", "--global-option",
        "--python", "--pip-args", "--suffix", "--group", "-G", "--optional", "--extra", "-E", "--extras",
        "--source", "--index", "--default-index", "--package", "--directory", "--project", "-p",
    }
)  # fmt: skip
_EDITABLE = frozenset({"-e", "--editable"})

#: What ends a shell command (outside quotes).
_STOP = frozenset(";&|()<>`")

_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_DIRECT = re.compile(r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[[^\]]*\])?\s*@")


def shell_words(text: str) -> list[str]:
    """The words of ``text`` up to the end of its first shell command: quotes
    removed, a ``#`` at the start of a word a comment, ``; & | ( ) < >`` and a
    backtick (the end of inline code in Markdown) the end, as is an
    unterminated quote (prose, or the end of the string literal around it)."""
    words: list[str] = []
    word: list[str] = []
    started = False
    index = 0
    while index < len(text):
        char = text[index]
        if char in "'\"":
            end = text.find(char, index + 1)
            if end < 0:
                break
            word.append(text[index + 1 : end])
            started = True
            index = end + 1
            continue
        if char == "\\" and index + 1 < len(text):
            word.append(text[index + 1])
            started = True
            index += 2
            continue
        if char.isspace() or char in _STOP or (char == "#" and not started):
            if started:
                words.append("".join(word))
                word, started = [], False
            if char in _STOP or char == "#":
                return words
            index += 1
            continue
        word.append(char)
        started = True
        index += 1
    if started:
        words.append("".join(word))
    return words


def is_local(target: str) -> bool:
    """Whether an install target is a path, a file or a URL rather than a
    name the index resolves: ``.``, ``'.[ssh]'``, ``./plugins/x``, ``/path/to/nxauth[pam]``,
    ``dist/x.whl``, ``git+https://...``."""
    if not target or target[0] in "./~$" or "/" in target or "\\" in target or "://" in target:
        return True
    return target.startswith("file:") or target.endswith((".whl", ".tar.gz", ".zip"))


def requirement_name(requirement: str) -> str | None:
    """The distribution a requirement string names (``"nxauth[pam]>=0.1; python_version>'3'"``
    -> ``nxauth``), or ``None`` for a path, a URL or no name at all."""
    text = requirement.strip()
    direct = _DIRECT.match(text)  # PEP 508 "name[extras] @ url": a name, whatever the url
    if direct is not None:
        return direct["name"]
    if is_local(text):
        return None
    match = _NAME.match(text)
    return match.group(0) if match else None


def install_targets(words: list[str]) -> Iterator[str]:
    """The targets among an installer's argument words: options and their
    values skipped, ``-e X`` and ``--editable=X`` yielding ``X``."""
    words = iter(words)
    for word in words:
        if word in _EDITABLE:
            value = next(words, None)
            if value is not None:
                yield value
        elif word.startswith("--editable="):
            yield word.partition("=")[2]
        elif word in _VALUED:
            next(words, None)
        elif word.startswith("-"):
            continue
        else:
            yield word


def installed_names(line: str) -> list[str]:
    """The distribution names that the install commands in ``line`` fetch by
    name, in order; local paths and URLs are not names."""
    names: list[str] = []
    for command in _INSTALLER.finditer(line):
        words = shell_words(line[command.end() :])
        if command.group(0).split()[-1] == "inject" and words:
            words = words[1:]  # pipx inject APP PACKAGE...: APP is an installed app
        for target in install_targets(words):
            name = requirement_name(target)
            if name is not None:
                names.append(name)
    return names


# ---------------------------------------------------------------- extras mentions

_EXTRAS = re.compile(r"(?<![\w./\\-])(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\[(?P<extras>[A-Za-z0-9_,\s-]+)\]")


def extras_mentions(line: str, extras: Iterable[str]) -> list[str]:
    """The names written with extras, ``NAME[a,b]``, where every extra is one
    of ``extras``: a requirement in prose (``needs `nxauth[pam]```), unlike a
    log line's ``nxauth[815]:``."""
    known = {canonical_name(extra) for extra in extras}
    names = []
    for match in _EXTRAS.finditer(line):
        wanted = {canonical_name(part.strip()) for part in match["extras"].split(",")}
        if wanted and wanted <= known:
            names.append(match["name"])
    return names


# ---------------------------------------------------------------- packaging files


def pyproject_requirements(document: dict[str, Any]) -> list[str]:
    """Every requirement string of a parsed ``pyproject.toml``: build-system
    requires, dependencies, optional dependencies and dependency groups."""
    found: list[str] = list(document.get("build-system", {}).get("requires", []))
    project = document.get("project", {})
    found += project.get("dependencies", [])
    for group in project.get("optional-dependencies", {}).values():
        found += group
    for group in document.get("dependency-groups", {}).values():
        found += [entry for entry in group if isinstance(entry, str)]
    return found


def requirements_file_names(text: str) -> list[str]:
    """The names a requirements file lists (options such as ``-r`` and ``-e``
    and comments skipped; an editable path is not a name)."""
    names = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            names += installed_names("pip install " + line)
            continue
        name = requirement_name(line)
        if name is not None:
            names.append(name)
    return names


@dataclass(frozen=True, slots=True)
class Mention:
    """A distribution named in a file: where, how, and the line."""

    path: str
    line: int
    how: str  # "install", "requirement" or "extras"
    name: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.how} {self.name!r}: {self.text.strip()}"


def _joined_lines(text: str) -> Iterator[tuple[int, str]]:
    """The lines of ``text`` with shell continuations (a trailing backslash)
    joined, each with the number of its first line."""
    pending: list[str] = []
    first = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not pending:
            first = number
        if line.rstrip().endswith("\\"):
            pending.append(line.rstrip()[:-1])
            continue
        pending.append(line)
        yield first, " ".join(pending)
        pending = []
    if pending:
        yield first, " ".join(pending)


def text_mentions(path: str, text: str, extras: Iterable[str]) -> list[Mention]:
    """The install commands and extras mentions of any text file (Markdown,
    a script, Python source)."""
    extras = tuple(extras)
    found = []
    for number, line in _joined_lines(text):
        found += [Mention(path, number, "install", name, line) for name in installed_names(line)]
        found += [Mention(path, number, "extras", name, line) for name in extras_mentions(line, extras)]
    return found


def toml_mentions(path: str, text: str, first_line: int = 1) -> list[Mention]:
    """The requirement strings of a ``pyproject.toml`` (or a page's excerpt of
    one), each with the line it is on."""
    requirements = pyproject_requirements(tomllib.loads(text))
    lines = text.splitlines()
    found = []
    for requirement in requirements:
        name = requirement_name(requirement)
        if name is None:
            continue
        number = next((i for i, line in enumerate(lines) if requirement in line), 0)
        found.append(Mention(path, first_line + number, "requirement", name, requirement))
    return found
