"""Building the LDAP backend in tests exactly as the core does."""

from __future__ import annotations

from typing import Any

from nxauth.config import BackendConfig, Config
from nxauth.plugins.registry import BackendContext
from tests.support.keys import TransportKey

#: The transport keys of ``nx`` in the session's directory (tests/servers/conftest.py).
NX_KEY = TransportKey("nx@directory")
NX_KEY_2 = TransportKey("second@directory")
DIRECTORY_NX_KEYS = (NX_KEY.line, f'from="192.0.2.0/24",no-pty {NX_KEY_2.line}', "this is not a key")


def build_backend(options: dict[str, Any], name: str = "corp") -> Any:
    """Build through the factory exactly as the core does (options checked)."""
    from nxauth.backends.ldap import build_ldap_backend

    context = BackendContext(BackendConfig(name, "ldap", options), root=Config(), store=lambda: None)  # type: ignore[arg-type,return-value]
    backend = build_ldap_backend(context)
    context.options.check_unused()
    return backend
