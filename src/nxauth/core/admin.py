"""Administrative changes as audit events, for the ``nxauth`` commands.

A command that changes state (a user, a password, a node, a grant) calls
:func:`admin_event` once the change is committed: the event names the
acting account and goes to the built-in sinks the configuration asks for
(log, syslog, JSON lines) and to the store's audit table when that is on
(the cluster's one trail on PostgreSQL).  The commands do not load plugins,
so only these sinks see it.  A sink that fails is reported to the caller:
the change stands, and the command says it was not recorded.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from nxauth.codes import AdminAction
from nxauth.core.audit import StoreSink, sinks_from_config
from nxauth.model import AdminEvent

if TYPE_CHECKING:
    from nxauth.config import Config
    from nxauth.store.protocol import Store

__all__ = ["AuditFailed", "acting_account", "admin_event"]

log = logging.getLogger("nxauth")


class AuditFailed(Exception):
    """The change was made, but a sink could not record it (its type is named)."""


def acting_account() -> str:
    """Who runs the command: ``SUDO_USER`` under sudo, else the real user's
    name (``uid N`` when the user database does not know the uid)."""
    sudo = os.environ.get("SUDO_USER")
    if sudo and os.getuid() == 0:
        return sudo
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


def admin_event(
    config: Config, store: Store | None, action: str, *, username: str = "", node: str = "", target: str = ""
) -> AdminEvent:
    """Record ``action`` by the acting account in every built-in sink the
    configuration asks for; :class:`AuditFailed` if one of them failed."""
    event = AdminEvent(AdminAction(action), acting_account(), username=username, node=node, target=target)
    sinks: list[object] = [sink for sink, _name in sinks_from_config(config.audit)]
    if config.audit_table and store is not None:
        sinks.append(StoreSink(lambda: store))
    failed: list[str] = []
    for sink in sinks:
        try:
            sink.nxauth_admin_event(event)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - any sink's failure is reported, by type only
            failed.append(f"{type(sink).__name__}: {type(exc).__name__}")
        finally:
            close = getattr(sink, "close", None)
            if close is not None:
                close()  # the table's writer: waits until the row is written
        if getattr(sink, "failed", 0):
            failed.append(f"{type(sink).__name__}: StoreError")
    if failed:
        raise AuditFailed("; ".join(failed))
    return event
