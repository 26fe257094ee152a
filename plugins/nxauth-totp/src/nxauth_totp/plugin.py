"""The entry point of the distribution (group ``nxauth``, name ``totp``).

nxauth imports this module when it builds an :class:`nxauth.Authenticator`
and registers it as a pluggy plugin.  The hook only says which backend kinds
exist; it is cheap and does no I/O.  The work happens in the backend objects
that the factory builds for each configured instance.
"""

from __future__ import annotations

import nxauth

from .backend import KIND, build

__all__ = ["nxauth_register_backends"]


@nxauth.hookimpl
def nxauth_register_backends(registry: nxauth.BackendRegistry) -> None:
    """Make backend kind ``totp`` available."""
    registry.add(KIND, build)
