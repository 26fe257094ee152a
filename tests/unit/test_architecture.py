"""The shape is a contract: the public API is listed once and documented
name by name, plugins use only public names, and src/ has no import cycle
(the floors themselves are the import-linter contract in .importlinter,
which the test command runs)."""

from __future__ import annotations

import ast
import inspect
import re
import sys
from pathlib import Path

import pytest

import nxauth
from tests.support import ROOT

SRC = ROOT / "src" / "nxauth"
STUB = SRC / "__init__.pyi"
REFERENCE = ROOT / "docs" / "reference.md"


def stub_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for node in ast.parse(STUB.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                assert alias.asname == alias.name, f"{alias.name}: the stub re-exports names as themselves"
                names[alias.name] = node.module or ""
    return names


def test_all_is_the_stub_listing_and_every_name_resolves() -> None:
    names = stub_names()
    assert sorted(nxauth.__all__) == sorted(names)
    for name, module in names.items():
        value = getattr(nxauth, name)
        assert value is getattr(sys.modules[module], name), name


def test_unknown_names_are_not_reachable() -> None:
    with pytest.raises(AttributeError):
        _ = nxauth.Store_  # type: ignore[attr-defined]
    for private in ("authenticator", "session", "config", "Runtime", "SqliteStore"):
        assert private not in nxauth.__all__


def test_every_public_name_is_on_the_reference_page_and_nothing_else() -> None:
    documented = re.findall(r"^::: nxauth\.(\S+)$", REFERENCE.read_text(), flags=re.M)
    assert len(documented) == len(set(documented)), "a name is documented twice"
    assert sorted(documented) == sorted(nxauth.__all__)


def _public_members(cls: type) -> dict[str, object]:
    members = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__.startswith("nxauth") or klass is cls:
            members.update({k: v for k, v in vars(klass).items() if not k.startswith("_")})
    return members


@pytest.mark.parametrize("name", sorted(n for n in nxauth.__all__ if inspect.isclass(getattr(nxauth, n))))
def test_every_public_member_has_a_docstring(name: str) -> None:
    """The generated reference shows each member with its documentation."""
    cls = getattr(nxauth, name)
    assert inspect.getdoc(cls), f"{name} has no docstring"
    if issubclass(cls, BaseException) or isinstance(cls, type(nxauth.Reason)):
        return  # exceptions and enums: their members are their values
    missing = []
    for member, value in _public_members(cls).items():
        target = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
        if (callable(target) or isinstance(value, property)) and not inspect.getdoc(target):
            missing.append(member)
    assert not missing, f"{name}: undocumented public members {missing}"


def _nxauth_imports(path: Path) -> list[tuple[int, str]]:
    """(line, what) for every import of an nxauth module other than the package itself."""
    found = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "nxauth":
            if node.module != "nxauth":
                found.append((node.lineno, f"from {node.module} import ..."))
            else:
                found += [(node.lineno, a.name) for a in node.names if a.name not in nxauth.__all__]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("nxauth.")]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "nxauth"
            and node.attr not in nxauth.__all__
        ):
            found.append((node.lineno, f"nxauth.{node.attr}"))
    return found


PLUGIN_SOURCES = sorted((ROOT / "plugins").glob("*/src/**/*.py"))


@pytest.mark.parametrize("path", PLUGIN_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_use_only_public_names(path: Path) -> None:
    assert _nxauth_imports(path) == []


def test_the_public_names_check_sees_private_use(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import nxauth\nfrom nxauth.config import Options\nimport nxauth.store\nnxauth.SqliteStore\n")
    assert [line for line, _ in _nxauth_imports(probe)] == [2, 3, 4]


AUTHENTICATOR_API = {
    "backends",
    "canonical_username",
    "close",
    "config",
    "describe",
    "from_file",
    "from_mapping",
    "open_session",
    "plugin_errors",
    "store",
    "unlock",
}
SESSION_API = {
    "abort",
    "attempts",
    "authenticated",
    "challenge",
    "check_transport_key",
    "check_transport_signature",
    "close",
    "id",
    "identity",
    "login",
    "login_async",
    "peer",
    "state",
    "transport",
}


def test_authenticator_and_session_expose_only_their_documented_members(tmp_path: Path) -> None:
    assert set(_public_members(nxauth.Authenticator)) == AUTHENTICATOR_API
    assert set(_public_members(nxauth.Session)) == SESSION_API
    with nxauth.Authenticator({"state_dir": str(tmp_path)}, entry_points=False) as auth:
        session = auth.open_session(("192.0.2.1", 1))
        public = {name for name in dir(auth) if not name.startswith("_")}
        assert public == AUTHENTICATOR_API
        assert {name for name in dir(session) if not name.startswith("_")} == SESSION_API


def test_host_code_cannot_forge_events_or_reset_the_attempt_counter(tmp_path: Path) -> None:
    with nxauth.Authenticator({"state_dir": str(tmp_path)}, entry_points=False) as auth:
        assert not hasattr(auth, "emit") and not hasattr(auth, "plugin_manager")
        session = auth.open_session(("192.0.2.1", 1))
        for name, value in (("attempts", -1000), ("peer", nxauth.Peer("127.0.0.1", 1)), ("id", "forged")):
            with pytest.raises(AttributeError):
                setattr(session, name, value)
        with pytest.raises(AttributeError):
            session.extra = 1  # type: ignore[attr-defined]
        with pytest.raises(nxauth.AuthenticationFailed):
            session.check_transport_key("nx", "ssh-ed25519 " + "A" * 68)
        assert session.attempts == 1


def test_no_import_cycle_in_src() -> None:
    """Every import counts: at module level, in functions, under TYPE_CHECKING."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("nxauth", include_external_packages=False)
    imports = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in imports[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(imports):
        if module not in index:
            visit(module)
    assert cycles == []


def test_modules_stay_small() -> None:
    sizes = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    assert {path: n for path, n in sizes.items() if n > 600} == {}
