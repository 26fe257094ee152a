"""A cluster end to end: three ``nxauth serve`` processes (a server host and
two nodes, each with its own state directory and host key) on one private
PostgreSQL, set up with the real CLI, logged into with the real ssh client.

- alice granted node1 only is refused on node2, and her own password on
  node2 works there (the default does not), while node1 takes the default;
- wrong passwords spread over the three hosts spend one budget;
- a transport key removed through one host is refused by the others;
- PostgreSQL stopped: denied; started again: allowed, without a restart.

and through the server host (``[server] node_key``) to a node:

- alice granted node1 logs in on the server host and picks node1: her
  session runs there, relayed; node2 (not granted) is refused;
- on node2 (granted, its own password) the server host's relay is refused
  the default password and asks her for node2's, which works;
- a node registered with another host key is refused, never trusted."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.postgres import Cluster
from tests.support.serve import NXAUTH, SSH, Serve

pytestmark = pytest.mark.skipif(SSH is None, reason="the OpenSSH client (ssh) is not installed")

HOSTS = ("server", "node1", "node2")
DEFAULT = "correct horse battery"
NODE2 = "node2 has its own"


@dataclass
class Hosts:
    configs: dict[str, Path]
    key: Path
    db: Cluster
    serves: dict[str, Serve] = field(default_factory=dict)

    def cli(self, host: str, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*NXAUTH, "--config", str(self.configs[host]), *argv],
            input=stdin, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def login(self, host: str, password: str, user: str = "alice", then: str = "") -> subprocess.CompletedProcess[str]:
        """One login; on the server host, ``then`` answers its ``Node:`` question (empty: stay)."""
        more = f"{then}\n" if host == "server" else ""
        return self.serves[host].ssh(self.key, f"{user}\n{password}\n{more}")


def host_public_key(config: Path) -> str:
    private = serialization.load_ssh_private_key((config.parent / "state" / "ssh_host_ed25519_key").read_bytes(), None)
    return (
        private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    )


@pytest.fixture
def hosts(pg_cluster: Cluster, tmp_path: Path) -> Iterator[Hosts]:
    schema = pg_cluster.new_schema()
    configs: dict[str, Path] = {}
    for host in HOSTS:
        (tmp_path / host).mkdir()
        config = tmp_path / host / "nxauth.toml"
        config.write_text(
            'state_dir = "state"\n'
            f"[login]\ncommand = [{sys.executable!r}, '-c', \"print('session on {host}')\"]\ntimeout = 20\n"
            "[throttle]\nmax_user_failures = 3\nmax_source_failures = 1000\n"
            "[backends.passwords]\ntime_cost = 1\nmemory_cost = 8192\n"
            f'[store]\nurl = "{pg_cluster.url}"\npassword = {{ file = "{pg_cluster.password_file}" }}\n'
            f'schema = "{schema}"\nnode = "{host}"\n'
        )
        configs[host] = config
    node_key = tmp_path / "server" / "node_key"  # the server host's own key for its nodes
    with configs["server"].open("a") as conf:
        conf.write(f'[server]\nnode_key = "{node_key}"\n')
    cluster = Hosts(configs, tmp_path / "client_key", pg_cluster)
    assert cluster.cli("server", "keygen", "--out", str(cluster.key)).returncode == 0  # into the shared keystore
    assert cluster.cli("server", "keygen", "--out", str(node_key)).returncode == 0  # so every node trusts it
    assert cluster.cli("server", "useradd", "alice", "--password-stdin", stdin=DEFAULT + "\n").returncode == 0
    try:
        for host in HOSTS:
            cluster.serves[host] = Serve(configs[host])
        for node in ("node1", "node2"):
            address = f"127.0.0.1:{cluster.serves[node].port}"
            added = cluster.cli(
                "server", "node", "add", node, "--address", address, "--host-key", host_public_key(configs[node])
            )
            assert added.returncode == 0, added.stderr
        assert cluster.cli("server", "grant", "alice", "node1").returncode == 0
        yield cluster
    finally:
        if not pg_cluster.running:
            pg_cluster.resume()
        for serve in cluster.serves.values():
            serve.stop()


def authenticated(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode == 0 and "NX> 200 Authenticated alice" in result.stdout


def test_grants_and_a_password_of_a_nodes_own(hosts: Hosts) -> None:
    on_node1 = hosts.login("node1", DEFAULT)
    assert authenticated(on_node1) and "session on node1" in on_node1.stdout
    assert authenticated(hosts.login("server", DEFAULT))  # the server host is no registered node: no grant needed
    refused = hosts.login("node2", DEFAULT)  # granted node1 only
    assert refused.returncode != 0 and "NX> 401" in refused.stdout
    assert hosts.cli("node2", "grant", "alice", "node2").returncode == 0  # through another host: one registry
    changed = hosts.cli("node1", "passwd", "alice", "--node", "node2", "--password-stdin", stdin=NODE2 + "\n")
    assert changed.returncode == 0, changed.stderr
    assert authenticated(hosts.login("node2", NODE2))
    assert not authenticated(hosts.login("node2", DEFAULT))
    assert authenticated(hosts.login("node1", DEFAULT))
    assert not authenticated(hosts.login("node1", NODE2))


def test_failures_on_three_hosts_spend_one_budget(hosts: Hosts) -> None:
    assert hosts.cli("server", "grant", "alice", "node2").returncode == 0
    for host in HOSTS:  # one wrong password on each: 3 in all, the limit
        assert "NX> 401" in hosts.login(host, "wrong guess").stdout
    for host in HOSTS:  # the right one is refused everywhere now
        assert not authenticated(hosts.login(host, DEFAULT))
    status = hosts.cli("node2", "unlock", "--list", "--json")
    assert "pair:addr:127.0.0.1 alice" in status.stdout  # one source: the pair locked, on the shared store


def test_a_key_removed_through_one_host_is_refused_by_the_others(hosts: Hosts) -> None:
    assert authenticated(hosts.login("server", DEFAULT))
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", f"{hosts.key}.pub"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()[1]
    removed = hosts.cli("node2", "keys", "remove", fingerprint)
    assert removed.returncode == 0, removed.stderr
    for host in ("server", "node1"):
        result = hosts.login(host, DEFAULT)
        assert result.returncode == 255 and "NX> 100" not in result.stdout  # stage 1 refused: no stage 2


def test_postgresql_stopped_denies_and_started_allows(hosts: Hosts) -> None:
    assert authenticated(hosts.login("node1", DEFAULT))
    hosts.db.stop()
    down = hosts.login("node1", DEFAULT)
    assert not authenticated(down)
    hosts.db.resume()
    assert authenticated(hosts.login("node1", DEFAULT))  # the same processes: no restart


# ------------------------------------------------------------ through the server host


def test_through_the_server_host_to_a_granted_node(hosts: Hosts) -> None:
    result = hosts.login("server", DEFAULT, then="node1")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "NX> 200 Authenticated alice" in lines and "NX> 210 Nodes: node1" in lines
    assert "session on node1" in result.stdout and "session on server" not in result.stdout
    stay = hosts.login("server", DEFAULT, then="")
    assert "session on server" in stay.stdout  # an empty answer stays
    refused = hosts.login("server", DEFAULT, then="node2")  # not granted
    assert refused.returncode != 0 and "NX> 411 Node refused" in refused.stdout
    assert "session on node2" not in refused.stdout


def test_a_nodes_own_password_is_asked_for_through_the_server_host(hosts: Hosts) -> None:
    assert hosts.cli("server", "grant", "alice", "node2").returncode == 0
    assert (
        hosts.cli("server", "passwd", "alice", "--node", "node2", "--password-stdin", stdin=NODE2 + "\n").returncode
        == 0
    )
    result = hosts.login("server", DEFAULT, then=f"node2\n{NODE2}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NX> 103 Password for node2:" in result.stdout
    assert "session on node2" in result.stdout
    wrong = hosts.login("server", DEFAULT, then="node2\nnope\nnope\nnope")
    assert wrong.returncode != 0 and "NX> 411 Node refused" in wrong.stdout


def test_a_node_whose_host_key_is_not_the_pinned_one_is_refused(hosts: Hosts, tmp_path: Path) -> None:
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    assert hosts.cli("server", "node", "remove", "node1").returncode == 0
    address = f"127.0.0.1:{hosts.serves['node1'].port}"
    assert hosts.cli("server", "node", "add", "node1", "--address", address, "--host-key", other).returncode == 0
    assert hosts.cli("server", "grant", "alice", "node1").returncode == 0
    result = hosts.login("server", DEFAULT, then="node1")
    assert result.returncode != 0 and "NX> 411 Node refused" in result.stdout
    assert "session on node1" not in result.stdout
    _, _, err = hosts.serves["server"].stop()
    assert "node-host-key-mismatch" in err and DEFAULT not in err
