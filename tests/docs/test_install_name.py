"""No page, README, error message or packaging file tells anyone to install
the distribution ``nxauth``: that name on the public package index belongs to
an unrelated project ("Authentication extension for Nexa.py"), and so do the
spellings pip treats as the same or the index refuses as lookalikes.  nxauth's
distribution is ``nx-twostage-auth``; the import package, the command and the
entry-point group stay ``nxauth`` (docs/quickstart.md, "Why two names").

The scanner (tests/support/installs.py) is tested first, on generated lines:
a check that finds nothing proves nothing."""

from __future__ import annotations

import importlib.metadata
import shlex
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import nxauth
from tests.support import ROOT
from tests.support.docs import code_blocks
from tests.support.installs import (
    Mention,
    canonical_name,
    confusable,
    extras_mentions,
    installed_names,
    requirement_name,
    requirements_file_names,
    shell_words,
    text_mentions,
    toml_mentions,
)

DISTRIBUTION = "nx-twostage-auth"
TAKEN = "nxauth"  # on PyPI: an unrelated project
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS = tuple(PYPROJECT["project"]["optional-dependencies"])
#: This module and the scanner quote the taken name on purpose.
SELF = {Path(__file__).resolve(), (ROOT / "tests" / "support" / "installs.py").resolve()}

# ---------------------------------------------------------------- the scanner, on generated lines


def spellings(name: str) -> st.SearchStrategy[str]:
    """``name`` in random case, with runs of ``- _ .`` put between letters or
    swapped for its own separators: every spelling confusable with it."""
    parts = [part for part in name.replace("_", "-").replace(".", "-").split("-") if part]
    letters = "".join(parts)

    def spell(cases: list[bool], separators: list[str]) -> str:
        out = []
        for index, (char, upper) in enumerate(zip(letters, cases, strict=True)):
            out.append(char.upper() if upper else char)
            if index < len(letters) - 1:
                out.append(separators[index])
        return "".join(out)

    size = len(letters)
    return st.builds(
        spell,
        st.lists(st.booleans(), min_size=size, max_size=size),
        st.lists(st.sampled_from(["", "", "", "-", "_", ".", "-_", "__"]), min_size=size - 1, max_size=size - 1),
    )


def same_name(name: str) -> st.SearchStrategy[str]:
    """``name`` in random case with each separator swapped for another run of
    ``- _ .``: what pip reads as exactly ``name`` (PEP 503)."""
    canonical = canonical_name(name)

    def spell(cases: list[bool], separators: list[str]) -> str:
        chars = iter(separators)
        return "".join(
            next(chars) if char == "-" else char.upper() if upper else char
            for char, upper in zip(canonical, cases, strict=True)
        )

    return st.builds(
        spell,
        st.lists(st.booleans(), min_size=len(canonical), max_size=len(canonical)),
        st.lists(
            st.sampled_from(["-", "_", ".", "--", "-_"]), min_size=canonical.count("-"), max_size=canonical.count("-")
        ),
    )


def requirements(names: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A requirement on one of ``names``, with or without extras and a version."""
    extras = st.lists(st.sampled_from(EXTRAS), min_size=1, max_size=3, unique=True).map(lambda e: f"[{','.join(e)}]")
    versions = st.sampled_from(["", "==0.1", ">=0.1", "~=0.1.0", "==0.1.*", "<1,>=0.1", " >= 0.1"])
    return st.builds(lambda n, e, v: n + e + v, names, st.one_of(st.just(""), extras), versions)


INSTALLERS = [
    "pip install",
    "pip3 install",
    "pip3.11 install",
    "python -m pip install",
    "python3 -m pip install",
    "/opt/nxauth/bin/pip install",
    ".venv/bin/python -m pip install",
    "sudo pip install",
    "uv pip install",
    "uv add",
    "uv tool install",
    "pipx install",
    "pipx inject someapp",
    "poetry add",
    "pdm add",
]
OPTIONS = [
    "-U",
    "--upgrade",
    "-q",
    "--user",
    "--no-deps",
    "--pre",
    "--index-url https://example.org/simple",
    "-c constraints.txt",
    "--target=/tmp/x",
]
LOCAL = [
    ".",
    "'.[ssh]'",
    "./plugins/nxauth-totp",
    "/path/to/nxauth[pam]",
    "-e .",
    "-e plugins/nxauth-totp",
    "-r req.txt",
]


@st.composite
def install_lines(draw: st.DrawFn, targets: st.SearchStrategy[str]) -> str:
    """An install command as the docs, the scripts and the sources write one:
    any installer, options, other (local) targets around the one drawn, any
    quoting, inline code in prose, a comment or a second command after it,
    or inside a Python string literal."""
    target = draw(targets)
    quote = draw(st.sampled_from(["", "'", '"']))
    if quote == "" and " " in target:
        quote = "'"
    words = [*draw(st.lists(st.sampled_from(OPTIONS), max_size=2)), *draw(st.lists(st.sampled_from(LOCAL), max_size=1))]
    words.append(f"{quote}{target}{quote}")
    words += draw(st.lists(st.sampled_from(LOCAL), max_size=1))
    command = f"{draw(st.sampled_from(INSTALLERS))} {' '.join(words)}"
    contexts = [
        "{}",
        "$ {}",
        "  {}   # then run: pip install .",
        "{} && nxauth demo",
        "(`{}`, which brings ldap3). One instance",
        "Install it with `{}`.",
    ]
    if '"' not in command:
        contexts.append('raise PluginError("the pam backend needs python-pam: {}", plugin=PLUGIN) from None')
    return draw(st.sampled_from(contexts)).format(command)


@given(install_lines(requirements(spellings(TAKEN))))
def test_the_scanner_catches_every_spelling_of_the_taken_name(line: str) -> None:
    assert any(confusable(name, TAKEN) for name in installed_names(line)), line


@given(install_lines(requirements(same_name(DISTRIBUTION))))
def test_the_scanner_passes_the_distribution_in_any_spelling(line: str) -> None:
    names = installed_names(line)
    assert not any(confusable(name, TAKEN) for name in names), (line, names)
    assert any(canonical_name(name) == DISTRIBUTION for name in names), (line, names)


@given(install_lines(st.sampled_from(LOCAL)))
def test_local_paths_name_no_distribution(line: str) -> None:
    assert not any(confusable(name, TAKEN) for name in installed_names(line)), line


@pytest.mark.parametrize(
    "line",
    [
        "pip install nxauth",
        "pip install 'nxauth[pam,ldap]'",
        "pip install -U NXAuth==0.1",
        "pip install nx_auth",
        "pip install nx-auth",
        "pip install NX.Auth",
        "/opt/nxauth/bin/pip install 'nxauth[pam,ldap]'",
        "(`pip install 'nxauth[ldap]'`, which brings ldap3)",
        "pip install nxauth-totp nxauth",
        "pip install . nxauth",
        "uv add 'nxauth>=0.1'",
        "pip install -e 'nxauth[ssh]'",
        "pip install 'nxauth @ https://example.org/nxauth.whl'",
        "pip install \\\n  nxauth",
    ],
)
def test_the_scanner_catches(line: str) -> None:
    found = [m.name for m in text_mentions("x", line, EXTRAS)]
    assert any(confusable(name, TAKEN) for name in found), found


@pytest.mark.parametrize(
    "line",
    [
        f"pip install {DISTRIBUTION}[ldap]",
        f"pip install '{DISTRIBUTION}[pam,ldap]'",
        "pip install .",
        "pip install '.[ssh]' && nxauth demo",
        "pip install -e '.[all,test,docs]'",
        "pip install -e plugins/nxauth-totp",
        "/opt/nxauth/bin/pip install '/path/to/nxauth[pam]'",
        "Python refuses a bare `pip install`). In an environment of your own",
        "nxauth[815]: Accepted publickey for nx from 198.51.100.7",
        "| `syslog` | `false` | ident `nxauth[PID]` |",
        "pip install nxauthority nx-authz",
        "nxauth login",
    ],
)
def test_the_scanner_passes(line: str) -> None:
    found = [m.name for m in text_mentions("x", line, EXTRAS)]
    assert not any(confusable(name, TAKEN) for name in found), found


def test_extras_mentions_are_requirements_in_prose() -> None:
    assert extras_mentions("needs `nxauth[pam]`. See", EXTRAS) == ["nxauth"]
    assert extras_mentions("the `all` extra, `nxauth[ldap, pam]`", EXTRAS) == ["nxauth"]
    assert extras_mentions("ident `nxauth[PID]`, nxauth[815]: Accepted", EXTRAS) == []


def test_requirement_strings() -> None:
    assert requirement_name("nxauth[pam]>=0.1; python_version > '3'") == "nxauth"
    assert requirement_name(f"{DISTRIBUTION}>=0.1") == DISTRIBUTION
    assert requirement_name("./plugins/nxauth-totp") is None
    assert requirement_name("git+https://example.org/nxauth.git") is None
    assert requirements_file_names("# pinned\nNXAuth==0.1  # why\n-e .\n-r other.txt\npyotp\n") == ["NXAuth", "pyotp"]


@given(st.lists(st.text(st.characters(exclude_categories=["Cs"]), max_size=12), max_size=6))
def test_shell_words_reads_what_shlex_quotes(words: list[str]) -> None:
    assert shell_words(shlex.join(words)) == words


def test_the_lookalike_rule() -> None:
    assert confusable("nx-auth", TAKEN) and confusable("NX.Auth", TAKEN) and confusable("nx_auth", TAKEN)
    assert not confusable(DISTRIBUTION, TAKEN)
    assert not confusable("nxauth-totp", TAKEN)


# ---------------------------------------------------------------- the repository


def _skipped(path: Path) -> bool:
    return any(part.startswith(".") or part in {"site", "node_modules", "__pycache__"} for part in path.parts)


def _files(pattern: str, under: Path = ROOT) -> list[Path]:
    return sorted(p for p in under.glob(pattern) if p.is_file() and not _skipped(p.relative_to(ROOT)))


def repository_mentions(root: Path = ROOT) -> list[Mention]:
    """Every distribution that the repository's pages, READMEs, packaging
    files, scripts, error messages and test-skip reasons name to install."""

    def rel(path: Path) -> str:
        return str(path.relative_to(root))

    found: list[Mention] = []
    pages = [root / "README.md", *_files("docs/**/*.md", root), *_files("plugins/**/*.md", root)]
    for page in pages:
        found += text_mentions(rel(page), page.read_text(encoding="utf-8"), EXTRAS)
        for block in code_blocks(page):
            if block.language == "toml" and ("[project]" in block.text or "[build-system]" in block.text):
                found += toml_mentions(rel(page), block.text, block.line)
    for pyproject in [root / "pyproject.toml", *_files("plugins/*/pyproject.toml", root)]:
        found += toml_mentions(rel(pyproject), pyproject.read_text(encoding="utf-8"))
    for requirements_file in _files("**/requirements*.txt", root) + _files("**/constraints*.txt", root):
        text = requirements_file.read_text(encoding="utf-8")
        found += [Mention(rel(requirements_file), 0, "requirement", n, n) for n in requirements_file_names(text)]
    sources = _files("src/**/*.py", root) + _files("plugins/*/src/**/*.py", root) + _files("scripts/*", root)
    sources += [p for p in _files("tests/support/*.py", root) if p.resolve() not in SELF]
    for source in sources:
        found += text_mentions(rel(source), source.read_text(encoding="utf-8"), EXTRAS)
    return found


MENTIONS = repository_mentions()


def test_no_file_tells_anyone_to_install_the_taken_name() -> None:
    offending = [str(m) for m in MENTIONS if confusable(m.name, TAKEN)]
    assert offending == [], "install the distribution nx-twostage-auth, not nxauth:\n" + "\n".join(offending)


def test_the_scan_reads_the_install_lines() -> None:
    """The places that install by name are seen, and name the distribution."""
    named = {(m.path, m.how) for m in MENTIONS if m.name == DISTRIBUTION}
    assert {
        ("docs/deploy-openssh.md", "install"),
        ("docs/backends/ldap.md", "install"),
        ("docs/configuration.md", "extras"),
        ("docs/writing-a-plugin.md", "requirement"),
        ("pyproject.toml", "requirement"),
        ("plugins/nxauth-totp/pyproject.toml", "requirement"),
        ("src/nxauth/backends/pam/__init__.py", "install"),
        ("src/nxauth/cli/serve.py", "install"),
    } <= named


def test_unpublished_plugins_are_installed_from_the_source_tree() -> None:
    """The example plugins are not on the index: installing one by name would
    fetch whatever someone registered under it."""
    plugins = [
        tomllib.loads(p.read_text(encoding="utf-8"))["project"]["name"] for p in _files("plugins/*/pyproject.toml")
    ]
    assert plugins
    offending = [str(m) for m in MENTIONS if m.how == "install" and any(confusable(m.name, p) for p in plugins)]
    assert offending == []


def test_the_distribution_has_a_name_of_its_own() -> None:
    project = PYPROJECT["project"]
    assert project["name"] == DISTRIBUTION and not confusable(DISTRIBUTION, TAKEN)
    assert project["optional-dependencies"]["all"] == [f"{DISTRIBUTION}[ldap,pam,ssh,postgres]"]
    # what stays nxauth: the import package, the command, the pytest plugin, the plugins' group
    assert PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["src/nxauth"]
    assert project["scripts"] == {"nxauth": "nxauth.cli:main"}
    assert project["entry-points"]["pytest11"] == {"nxauth": "nxauth.testing"}
    for path in _files("plugins/*/pyproject.toml"):
        plugin = tomllib.loads(path.read_text(encoding="utf-8"))["project"]
        assert "nxauth" in plugin["entry-points"], path
        assert any(requirement_name(r) == DISTRIBUTION for r in plugin["dependencies"]), path


def test_the_installed_distribution_is_this_one() -> None:
    """The environment runs this checkout under the new name, with the version
    nxauth reports; no distribution called nxauth (this project before the
    rename, or the unrelated one) shares its files."""
    assert importlib.metadata.version(DISTRIBUTION) == nxauth.__version__
    entry_points = importlib.metadata.distribution(DISTRIBUTION).entry_points
    assert {(ep.group, ep.name) for ep in entry_points} >= {("console_scripts", "nxauth"), ("pytest11", "nxauth")}
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution(TAKEN)  # pip uninstall nxauth, then reinstall the checkout
