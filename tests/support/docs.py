"""What the docs tests share: the fenced code blocks of a Markdown page, and
the option names each built-in backend kind reads.

Option names are not listed anywhere by hand: every built-in kind is built
once with an :class:`nxauth.Options` that records each key its factory asks
for, so an option added to a backend shows up here without touching this file.
The backend instances of the configuration examples are built the same way,
so an example that a real ``nxauth check`` would refuse fails its test.
"""

from __future__ import annotations

import functools
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from nxauth.config import BackendConfig, Config, SecretRef, parse_config
from nxauth.errors import ConfigError
from nxauth.model import Secret
from nxauth.plugins.manager import collect_backends, make_plugin_manager
from nxauth.plugins.registry import BackendContext, BackendRegistry
from nxauth.store.sqlite import SqliteStore
from tests.support import ROOT

DOCS = ROOT / "docs"

# ---------------------------------------------------------------- Markdown code blocks

_OPEN = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)[^`]*$")
_SKIP = re.compile(r"^\s*<!--\s*skip-test:(?P<reason>.*?)-->\s*$")


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced code block: its language, its text (indentation of the fence
    removed), the 1-based line of its first content line, and the reason
    given by a ``<!-- skip-test: reason -->`` line right before it."""

    language: str
    text: str
    line: int
    skip: str | None


def code_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _OPEN.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent = len(opening["indent"])
        fence = opening["fence"]
        closing = re.compile(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not closing.match(lines[end]):
            text = lines[end]
            body.append(text[min(indent, len(text) - len(text.lstrip(" "))) :])
            end += 1
        blocks.append(Block(opening["info"].lower(), "\n".join(body) + "\n", index + 2, _skip_reason(lines, index)))
        index = end + 1
    return blocks


def _skip_reason(lines: list[str], fence_index: int) -> str | None:
    before = fence_index - 1
    while before >= 0 and not lines[before].strip():
        before -= 1
    if before < 0:
        return None
    marker = _SKIP.match(lines[before])
    if marker is None:
        return None
    reason = marker["reason"].strip()
    if not reason:
        raise ValueError(f"{lines[before]!r}: a skip-test marker needs a reason")
    return reason


# ---------------------------------------------------------------- backend options

#: What a kind needs before its factory goes on to read its other options.
REQUIRED_OPTIONS: Mapping[str, Mapping[str, Any]] = {
    "authorized_keys": {"path": "authorized_keys"},
    "ldap": {"uri": "ldaps://ldap.example.org", "user_base": "ou=people,dc=example,dc=org"},
}


class _LazyStore:
    """A store in ``directory``, opened when a backend first asks for it."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "nxauth.db"
        self.store: SqliteStore | None = None

    def __call__(self) -> SqliteStore:
        if self.store is None:
            self.store = SqliteStore(self.path)
        return self.store

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


class _RecordingOptions:
    """Stands in for a backend's :class:`nxauth.Options` and remembers every
    key a getter was asked for, and which getter."""

    GETTERS = frozenset(
        {"string", "boolean", "integer", "number", "choice", "strings", "secret", "raw", "table", "tables"}
    )

    def __init__(self, real: Any) -> None:
        self._real = real
        self.read: dict[str, str] = {}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._real, name)
        if name not in self.GETTERS:
            return attribute

        def getter(key: str, *args: Any, **kwargs: Any) -> Any:
            self.read.setdefault(key, name)
            return attribute(key, *args, **kwargs)

        return getter

    def __contains__(self, key: str) -> bool:
        return key in self._real


@functools.cache
def _registry() -> BackendRegistry:
    """The built-in backend kinds (no entry points: third-party kinds are their own business)."""
    pm, errors = make_plugin_manager(entry_points=False)
    registry = collect_backends(pm, errors)
    if errors:
        raise errors[0]
    return registry


def _build(
    registry: BackendRegistry, declared: BackendConfig, root: Config, store: Callable[[], SqliteStore]
) -> dict[str, str]:
    """Build one backend instance as the authenticator would, close it, and
    return the option names its factory read, each with the getter that read
    it (unknown options are refused)."""
    context = BackendContext(declared, root=root, store=store)
    recorder = _RecordingOptions(context.options)
    context.options = recorder  # type: ignore[assignment]
    factory = registry.get(declared.kind)
    assert factory is not None
    backend = factory(context)
    close = getattr(backend, "close", None)
    if callable(close):
        close()
    context.options.check_unused()
    return recorder.read


class InstanceBuilder:
    """Builds instances of the built-in kinds as the authenticator would
    (unknown options refused), all with one state directory."""

    def __init__(self, directory: Path) -> None:
        self.root = parse_config({"state_dir": str(directory)})
        self._store = _LazyStore(directory)

    def kinds(self) -> list[str]:
        return sorted(_registry().kinds())

    def build(self, kind: str, options: Mapping[str, Any] = MappingProxyType({})) -> dict[str, str]:
        """Build an instance named ``kind`` with ``options`` over the
        :data:`REQUIRED_OPTIONS` of its kind; return what :func:`_build` does."""
        merged = MappingProxyType({**REQUIRED_OPTIONS.get(kind, {}), **options})
        return _build(_registry(), BackendConfig(kind, kind, merged), self.root, self._store)

    def close(self) -> None:
        self._store.close()


@functools.cache
def backend_option_getters() -> Mapping[str, Mapping[str, str]]:
    """Every built-in backend kind, the option names its factory reads, and
    the getter that reads each (``"integer"``, ``"strings"``, ...)."""
    found: dict[str, Mapping[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        builder = InstanceBuilder(Path(tmp))
        try:
            for kind in builder.kinds():
                found[kind] = MappingProxyType(builder.build(kind))
        finally:
            builder.close()
    return MappingProxyType(found)


def backend_options() -> Mapping[str, frozenset[str]]:
    """Every built-in backend kind and the option names its factory reads."""
    return MappingProxyType({kind: frozenset(names) for kind, names in backend_option_getters().items()})


#: Errors that depend on the machine, not on the example: files named in the
#: options (a CA file, a libpam) that exist where the configuration is deployed.
_MACHINE_ERRORS = re.compile(r"(file|directory) not found: |cannot load")


def check_backends(config: Config, state_dir: Path) -> None:
    """Build every instance of a built-in kind in ``config`` the way the
    authenticator would, with its secrets replaced by a stand-in; raise the
    :class:`nxauth.ConfigError` of the first one that is wrong.  Kinds from
    third-party plugins are skipped."""
    registry = _registry()
    store = _LazyStore(state_dir)
    try:
        for declared in config.backends.values():
            if declared.kind not in registry:
                continue
            options = {
                key: Secret("stand-in secret") if isinstance(value, SecretRef) else value
                for key, value in declared.options.items()
            }
            try:
                _build(registry, replace(declared, options=MappingProxyType(options)), config, store)
            except ConfigError as exc:
                if not _MACHINE_ERRORS.search(str(exc)):
                    raise
    finally:
        store.close()
