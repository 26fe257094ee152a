"""``nxauth node add|list|remove``, ``nxauth grant`` and ``nxauth revoke``:
a cluster's nodes and which users may reach them (docs/deploy-cluster.md).

They work on the configured store: on PostgreSQL every host of the cluster
sees the change at its next lookup.  Each change is an audit event with the
acting account.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nxauth.cli import EXIT_OK, EXIT_USAGE, CommandError, audited, print_json
from nxauth.config import Config, default_config_path, load_config
from nxauth.files import read_small_text

if TYPE_CHECKING:
    from nxauth.core.cluster import NodeRegistry

#: The largest host-key file read.
HOST_KEY_LIMIT = 64 * 1024


def register(subparsers: Any) -> None:
    node = subparsers.add_parser("node", help="the cluster's nodes", description=__doc__)
    actions = node.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="register a node", description=cmd_node_add.__doc__)
    add.add_argument("name")
    add.add_argument("--address", required=True, help="HOST:PORT of the node's nxauth ([IPV6]:PORT)")
    add.add_argument("--host-key", required=True, help="the node's SSH host public key: a .pub file or the key line")
    add.set_defaults(handler=cmd_node_add)
    listing = actions.add_parser("list", help="list the nodes", description=cmd_node_list.__doc__)
    listing.add_argument("--json", action="store_true", help="print as JSON")
    listing.set_defaults(handler=cmd_node_list)
    remove = actions.add_parser("remove", help="forget a node and its grants", description=cmd_node_remove.__doc__)
    remove.add_argument("name")
    remove.set_defaults(handler=cmd_node_remove)

    for name, handler, verb in (("grant", cmd_grant, "let a user reach"), ("revoke", cmd_revoke, "take from a user")):
        parser = subparsers.add_parser(name, help=f"{verb} nodes", description=handler.__doc__)
        parser.add_argument("user")
        parser.add_argument("nodes", nargs="+", metavar="NODE")
        parser.set_defaults(handler=handler)


def _config(args: argparse.Namespace) -> Config:
    path = args.config or default_config_path()
    return load_config(path) if path is not None else Config()


@contextlib.contextmanager
def _registry(args: argparse.Namespace) -> Iterator[tuple[Config, NodeRegistry, Any]]:
    from nxauth.core.cluster import NodeRegistry
    from nxauth.store import open_store

    config = _config(args)
    store = open_store(config)
    try:
        yield config, NodeRegistry(store), store
    finally:
        store.close()


def _host_key_text(value: str) -> str:
    """The key line: ``value`` itself, or the file it names."""
    if value.split(" ", 1)[0].startswith(("ssh-", "ecdsa-", "sk-")):
        return value
    try:
        return read_small_text(Path(value), limit=HOST_KEY_LIMIT)
    except OSError as exc:
        raise CommandError(f"cannot read host key {value}: {exc.strerror}", EXIT_USAGE) from None
    except UnicodeDecodeError:
        raise CommandError(f"host key {value} is not text", EXIT_USAGE) from None


def _cluster_error(exc: Exception) -> CommandError:
    return CommandError(f"{exc}; nothing changed", EXIT_USAGE)


def cmd_node_add(args: argparse.Namespace) -> int:
    """Register a node: its name, the address of its nxauth, and its SSH host
    key, pinned (the server host connects to it with that key only)."""
    from nxauth.core.cluster import ClusterError

    key = _host_key_text(args.host_key)
    with _registry(args) as (config, registry, store):
        try:
            node = registry.add(args.name, args.address, key)
        except ClusterError as exc:
            raise _cluster_error(exc) from None
        audited(config, store, "node-add", node=node.name)
    print(f"added node {node.name} at {node.address}")
    return EXIT_OK


def cmd_node_list(args: argparse.Namespace) -> int:
    """List the nodes with their address and host key fingerprint."""
    from nxauth.keys.formats import parse_public_key

    with _registry(args) as (_, registry, _store):
        nodes = registry.nodes()
    if args.json:
        print_json([{"name": n.name, "address": n.address, "host_key": n.host_key, "added": n.added} for n in nodes])
        return EXIT_OK
    for n in nodes:
        print(f"{n.name}\t{n.address}\t{parse_public_key(n.host_key).fingerprint}")
    if not nodes:
        print("no nodes")
    return EXIT_OK


def cmd_node_remove(args: argparse.Namespace) -> int:
    """Forget a node, and every user's grant to it."""
    from nxauth.core.cluster import ClusterError

    with _registry(args) as (config, registry, store):
        try:
            registry.remove(args.name)
        except ClusterError as exc:
            raise _cluster_error(exc) from None
        audited(config, store, "node-remove", node=args.name)
    print(f"removed node {args.name}")
    return EXIT_OK


def _grants(args: argparse.Namespace, granting: bool) -> int:
    from nxauth.backends.userdb import UserDatabase
    from nxauth.core.cluster import ClusterError
    from nxauth.usernames import InvalidUsername

    with _registry(args) as (config, registry, store):
        users = UserDatabase(store, case=config.usernames.case, max_length=config.usernames.max_length)
        try:
            name = users.canonical(args.user)
        except InvalidUsername as exc:
            raise CommandError(f"invalid username: {exc}", EXIT_USAGE) from None
        if users.get(name) is None:
            raise CommandError(f"no such user {name} (nxauth useradd first); nothing changed", EXIT_USAGE)
        try:
            changed = registry.grant(name, args.nodes) if granting else registry.revoke(name, args.nodes)
        except ClusterError as exc:
            raise _cluster_error(exc) from None
        for node in changed:
            audited(config, store, "grant" if granting else "revoke", username=name, node=node)
        now = registry.granted(name)
    verb = "granted" if granting else "revoked"
    print(f"{verb} {', '.join(changed) or 'nothing new'}; {name} may reach: {', '.join(now) or 'no node'}")
    return EXIT_OK


def cmd_grant(args: argparse.Namespace) -> int:
    """Let a user (of the users database) reach nodes, by name."""
    return _grants(args, True)


def cmd_revoke(args: argparse.Namespace) -> int:
    """Take nodes from a user (seen by every host at its next lookup)."""
    return _grants(args, False)
