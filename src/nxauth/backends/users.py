"""The ``users`` backend (account role): the users database as an allowlist.

A user authenticated by any auth backend (PAM, LDAP, ``passwords``) passes
only if listed in the users table and enabled.  An empty table denies
everyone.  No options.

=================  =====================
the user is...     verdict
=================  =====================
not listed         deny NOT_LISTED
listed, disabled   deny DISABLED
listed, enabled    allow
=================  =====================

On a node of a cluster (``[store] node`` names a node of the registry,
``nxauth node add``), a listed, enabled user passes only if granted that
node (``nxauth grant``): deny RESTRICTED otherwise.  A host whose name is
not a registered node (the server host) checks no grant.
"""

from __future__ import annotations

from typing import final

from nxauth.backends.userdb import UserDatabase, user_database
from nxauth.core.cluster import NodeRegistry
from nxauth.model import Identity, Reason, Verdict
from nxauth.plugins.hookspecs import hookimpl
from nxauth.plugins.registry import BackendContext, BackendRegistry

__all__ = ["UsersBackend", "nxauth_register_backends"]

KIND = "users"


@final
class UsersBackend:
    """The allowlist check over the users table.  Thread-safe."""

    def __init__(self, users: UserDatabase, *, name: str = KIND) -> None:
        self.users = users
        self.name = name

    def __repr__(self) -> str:
        return f"UsersBackend(name={self.name!r})"

    #: the detail words of its verdicts (see :mod:`nxauth.details`)
    audit_details = frozenset({"not-in-user-database", "disabled-in-user-database", "node-not-granted"})

    def check_account(self, identity: Identity) -> Verdict:
        """Allow a listed, enabled user; deny anyone else."""
        record = self.users.get(identity.username)
        if record is None:
            return Verdict.deny(Reason.NOT_LISTED, "not-in-user-database")
        if not record.enabled:
            return Verdict.deny(Reason.DISABLED, "disabled-in-user-database")
        node = self.users.node
        if node is not None:
            registered, granted = NodeRegistry(self.users.store).access(record.username, node)
            if registered and not granted:
                return Verdict.deny(Reason.RESTRICTED, "node-not-granted")
        return Verdict.allow(username=record.username)  # the stored row's name, checked by the core


def build(context: BackendContext) -> UsersBackend:
    return UsersBackend(user_database(context), name=context.name)


@hookimpl
def nxauth_register_backends(registry: BackendRegistry) -> None:
    registry.add(KIND, build)
