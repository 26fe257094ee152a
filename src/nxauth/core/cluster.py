"""A cluster's nodes and which user may reach which, in the store.

The node registry names each node of a multi-node setup with the address
of its nxauth (the embedded server, or sshd running ``nxauth login``) and its
pinned SSH host key: the server host connects to a node only with that key,
never trusting on first use.  Grants say which users may reach which node;
a user must be granted a node by name, and removing a node removes its
grants.  On PostgreSQL every host sees one registry; on SQLite, one host.

Names follow the instance-name rule (1 to 64 letters, digits, ``-``, ``_``,
``.``); addresses are ``HOST:PORT`` (``[v6]:PORT`` for an IPv6 address); a
host key is one OpenSSH public key (``TYPE BASE64``), stored without its
comment.  Bad input raises :class:`ClusterError` naming what is wrong;
store failures raise :class:`nxauth.StoreError`.
"""

from __future__ import annotations

import base64
import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, final

from nxauth.errors import NxauthError
from nxauth.keys.formats import parse_public_key
from nxauth.store.protocol import Store

__all__ = ["ClusterError", "Node", "NodeRegistry", "check_node_name", "parse_address"]

_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
_HOST_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
#: The longest host-key line taken (an RSA 16384-bit key is about 2,800 characters).
MAX_HOST_KEY: Final = 8192


class ClusterError(NxauthError, ValueError):
    """A node name, address or host key that is not valid, or a node or grant that does not exist."""


def check_node_name(name: object) -> str:
    """``name`` if it is a valid node name, else :class:`ClusterError`."""
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or not set(name) <= _NAME_CHARS:
        raise ClusterError("a node name is 1 to 64 letters, digits, '-', '_' or '.'")
    return name


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` as (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ClusterError("an address is HOST:PORT, the port 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        try:
            host = str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise ClusterError("[...] in an address holds an IPv6 address") from None
    elif not host or len(host) > 253 or not set(host) <= _HOST_CHARS or host.startswith(("-", ".")):
        raise ClusterError("the host of an address is an IPv4 address or a DNS name")
    return host, int(port_text)


def _host_key(text: str) -> str:
    if len(text) > MAX_HOST_KEY:
        raise ClusterError("a host key is one OpenSSH public key line")
    try:
        key = parse_public_key(text.strip())
    except ValueError:
        raise ClusterError("a host key is one OpenSSH public key line (TYPE BASE64)") from None
    if key.is_certificate:
        raise ClusterError("a node's host key is a plain key, not a certificate")
    return f"{key.key_type} {base64.b64encode(key.blob).decode('ascii')}"


@final
@dataclass(frozen=True, slots=True)
class Node:
    name: str
    host: str
    port: int
    host_key: str
    added: float

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@final
class NodeRegistry:
    """The nodes and the grants of the store an authenticator owns."""

    def __init__(self, store: Store | Callable[[], Store], *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self.clock = clock

    @property
    def store(self) -> Store:
        return self._store if isinstance(self._store, Store) else self._store()

    # ------------------------------------------------------------ nodes

    def add(self, name: str, address: str, host_key: str) -> Node:
        """Register a node; :class:`ClusterError` if the name is taken."""
        name = check_node_name(name)
        host, port = parse_address(address)
        key = _host_key(host_key)
        node = Node(name, host, port, key, self.clock())
        with self.store.transaction() as tx:
            cursor = tx.execute(
                "INSERT INTO nodes (name, address, host_key, added) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                (name, node.address, key, node.added),
            )
            if cursor.rowcount != 1:
                raise ClusterError(f"node {name!r} already exists")
        return node

    def get(self, name: str) -> Node | None:
        rows = self.store.execute(
            "SELECT name, address, host_key, added FROM nodes WHERE name = ?", (check_node_name(name),)
        )
        return _node(rows[0]) if rows else None

    def nodes(self) -> list[Node]:
        return [
            _node(row) for row in self.store.execute("SELECT name, address, host_key, added FROM nodes ORDER BY name")
        ]

    def remove(self, name: str) -> None:
        """Forget a node and every grant to it; :class:`ClusterError` if there is none."""
        name = check_node_name(name)
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM grants WHERE node = ?", (name,))
            if tx.execute("DELETE FROM nodes WHERE name = ?", (name,)).rowcount != 1:
                raise ClusterError(f"no node {name!r}")

    # ------------------------------------------------------------ grants

    def grant(self, username: str, nodes: Iterable[str]) -> list[str]:
        """Let ``username`` (a canonical name) reach ``nodes``; the nodes newly
        granted.  Every node must exist, or nothing is granted."""
        names = sorted({check_node_name(n) for n in nodes})
        now = self.clock()
        added: list[str] = []
        with self.store.transaction() as tx:
            for name in names:
                if tx.execute("SELECT 1 FROM nodes WHERE name = ?", (name,)).fetchone() is None:
                    raise ClusterError(f"no node {name!r}")
                cursor = tx.execute(
                    "INSERT INTO grants (username, node, granted) VALUES (?, ?, ?) "
                    "ON CONFLICT (username, node) DO NOTHING",
                    (username, name, now),
                )
                if cursor.rowcount == 1:
                    added.append(name)
        return added

    def revoke(self, username: str, nodes: Iterable[str]) -> list[str]:
        """Take ``nodes`` from ``username``; the nodes that were granted."""
        names = sorted({check_node_name(n) for n in nodes})
        removed: list[str] = []
        with self.store.transaction() as tx:
            for name in names:
                if tx.execute("DELETE FROM grants WHERE username = ? AND node = ?", (username, name)).rowcount == 1:
                    removed.append(name)
        return removed

    def granted(self, username: str) -> list[str]:
        """The nodes ``username`` may reach, by name (read now: a revoke is seen at once)."""
        rows = self.store.execute("SELECT node FROM grants WHERE username = ? ORDER BY node", (username,))
        return [str(row[0]) for row in rows]

    def access(self, username: str, node: str) -> tuple[bool, bool]:
        """(``node`` is a registered node, ``username`` is granted it), in one read."""
        rows = self.store.execute(
            "SELECT (SELECT count(*) FROM nodes WHERE name = ?), "
            "(SELECT count(*) FROM grants WHERE username = ? AND node = ?)",
            (node, username, node),
        )
        registered, granted = rows[0]
        return bool(registered), bool(granted)

    def is_granted(self, username: str, node: str) -> bool:
        rows = self.store.execute(
            "SELECT 1 FROM grants WHERE username = ? AND node = ?", (username, check_node_name(node))
        )
        return bool(rows)


def _node(row: tuple[object, ...]) -> Node:
    name, address, host_key, added = row
    host, port = parse_address(str(address))
    return Node(str(name), host, port, str(host_key), float(added))  # type: ignore[arg-type]
