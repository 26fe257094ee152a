"""nxauth: two-stage authentication (an SSH transport key, then the real user)
with pluggable backends.

The public API is what this package exports (``__all__``), listed once, in
``__init__.pyi``; every other module is private and may change.  See
``docs/`` for the concepts, the configuration and the API reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nxauth._version import __version__ as __version__

_locations: dict[str, str] = {}


def _public() -> dict[str, str]:
    """Public name -> defining module, read from ``__init__.pyi`` once (the
    single listing of the API).  Names load on first use (PEP 562), so that a
    program importing one part (``nxauth authorized-keys``, run by sshd on
    every login) does not pay for all of them."""
    if not _locations:
        import ast
        from pathlib import Path

        tree = ast.parse(Path(__file__).with_suffix(".pyi").read_text(encoding="utf-8"))
        found: dict[str, str] = {}
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    if alias.asname == alias.name:
                        found[alias.name] = node.module
        _locations.update(found)
    return _locations


def __getattr__(name: str) -> Any:
    if name == "__all__":
        value: Any = sorted(_public())
    elif name == "__version__":
        from nxauth._version import __version__ as value
    else:
        module = _public().get(name)
        if module is None:
            raise AttributeError(f"module 'nxauth' has no attribute {name!r}")
        import importlib

        value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_public()))
