"""``nxauth node add|list|remove``, ``grant``, ``revoke`` and ``passwd
--node`` through the real CLI, on the SQLite store and on PostgreSQL: the
registry and the grants, per-node passwords that the ``passwords`` backend
of that node (``[store] node``) uses, and every change an audit event with
the acting account, in the JSON lines and in the store's audit table."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import nxauth
from nxauth.cli import main
from nxauth.config import load_config
from nxauth.store import open_store
from tests.support.keys import ListKeySource, TransportKey

pytestmark = pytest.mark.usefixtures("store_kind")

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl node1"
PASSWORD = "Default-Pass-42"
NODE2_PASSWORD = "Node2-Other-Pass-7"


def toml_store(section: dict[str, Any]) -> str:
    if not section:
        return ""
    lines = ["[store]"]
    for key, value in section.items():
        if isinstance(value, dict):
            lines.append(f'{key} = {{ file = "{value["file"]}" }}')
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def write_config(tmp_path: Path, store_section: dict[str, Any]) -> Callable[..., Path]:
    def write(name: str = "nxauth.toml", node: str | None = None, table: bool = True, keys: str = "keys") -> Path:
        path = tmp_path / name
        section = dict(store_section)
        if node is not None:
            section["node"] = node
        path.write_text(
            f'state_dir = "{tmp_path / "state"}"\n'
            "[backends.passwords]\ntime_cost = 1\nmemory_cost = 8192\n"
            f'[audit]\njsonl = "{tmp_path / "audit.jsonl"}"\ntable = {str(table).lower()}\n'
            f'[transport]\nkey_sources = ["{keys}"]\n' + toml_store(section)
        )
        return path

    return write


@pytest.fixture
def cli(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[int, str, str]]:
    config = write_config()

    def run(*argv: str, stdin: str = "", path: Path | None = None) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding="utf-8"))
        code = main(["--config", str(path or config), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def admin_lines(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in records if r.get("kind") == "admin"]


def test_nodes_are_registered_listed_and_removed(cli: Callable[..., Any], tmp_path: Path) -> None:
    assert cli("node", "add", "node1", "--address", "192.0.2.10:4022", "--host-key", HOST_KEY)[0] == 0
    key_file = tmp_path / "node2.pub"
    key_file.write_text(HOST_KEY.replace("node1", "node2") + "\n")
    assert cli("node", "add", "node2", "--address", "[2001:db8::2]:22", "--host-key", str(key_file))[0] == 0
    listed = json.loads(cli("node", "list", "--json")[1])
    assert [(n["name"], n["address"]) for n in listed] == [("node1", "192.0.2.10:4022"), ("node2", "[2001:db8::2]:22")]
    assert all(n["host_key"] == HOST_KEY.rsplit(" ", 1)[0] for n in listed)  # pinned, without the comment
    assert cli("node", "remove", "node1")[0] == 0
    assert [n["name"] for n in json.loads(cli("node", "list", "--json")[1])] == ["node2"]
    assert [(r["action"], r["node"]) for r in admin_lines(tmp_path)] == [
        ("node-add", "node1"), ("node-add", "node2"), ("node-remove", "node1"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["node1", "--address", "192.0.2.10", "--host-key", HOST_KEY], "HOST:PORT"),
        (["node1", "--address", "192.0.2.10:0", "--host-key", HOST_KEY], "HOST:PORT"),
        (["node1", "--address", "[nope]:22", "--host-key", HOST_KEY], "IPv6"),
        (["node1", "--address", "bad host:22", "--host-key", HOST_KEY], "DNS name"),
        (["no/de", "--address", "h:22", "--host-key", HOST_KEY], "node name"),
        (["node1", "--address", "h:22", "--host-key", "ssh-ed25519 AAAAnotbase64"], "public key"),
    ],
)
def test_bad_node_input_is_refused_and_nothing_changes(
    cli: Callable[..., Any], tmp_path: Path, argv: list[str], message: str
) -> None:
    code, _, err = cli("node", "add", *argv)
    assert code == 2 and message in err and "nothing changed" in err
    assert json.loads(cli("node", "list", "--json")[1]) == []
    assert admin_lines(tmp_path) == []


def test_a_node_is_added_once(cli: Callable[..., Any]) -> None:
    assert cli("node", "add", "node1", "--address", "h:22", "--host-key", HOST_KEY)[0] == 0
    code, _, err = cli("node", "add", "node1", "--address", "other:22", "--host-key", HOST_KEY)
    assert code == 2 and "already exists" in err
    assert json.loads(cli("node", "list", "--json")[1])[0]["address"] == "h:22"


def test_grants_follow_users_and_nodes(cli: Callable[..., Any], tmp_path: Path) -> None:
    for name in ("node1", "node2"):
        assert cli("node", "add", name, "--address", f"{name}:22", "--host-key", HOST_KEY)[0] == 0
    code, _, err = cli("grant", "alice", "node1")
    assert code == 2 and "no such user" in err
    assert cli("useradd", "Alice", "--password-stdin", stdin=PASSWORD + "\n")[0] == 0
    code, _, err = cli("grant", "alice", "node1", "node9")
    assert code == 2 and "no node 'node9'" in err
    code, out, _ = cli("grant", "ALICE", "node1")  # the canonical name
    assert code == 0 and "alice may reach: node1" in out
    assert "nothing new" in cli("grant", "alice", "node1")[1]
    assert "may reach: node1, node2" in cli("grant", "alice", "node2")[1]
    assert "may reach: node2" in cli("revoke", "alice", "node1")[1]
    assert cli("node", "remove", "node2")[0] == 0
    store = open_store(load_config(tmp_path / "nxauth.toml"))
    try:
        assert store.execute("SELECT count(*) FROM grants") == [(0,)]
    finally:
        store.close()
    actions = [(r["action"], r["user"], r["node"]) for r in admin_lines(tmp_path)]
    assert ("grant", "alice", "node1") in actions and ("revoke", "alice", "node1") in actions
    assert ("user-add", "alice", "") in actions


def test_a_node_password_is_that_nodes_and_the_default_stays_elsewhere(
    cli: Callable[..., Any], write_config: Callable[..., Path], tmp_path: Path
) -> None:
    assert cli("node", "add", "node2", "--address", "node2:22", "--host-key", HOST_KEY)[0] == 0
    assert cli("useradd", "alice", "--password-stdin", stdin=PASSWORD + "\n")[0] == 0
    assert cli("grant", "alice", "node2")[0] == 0
    code, _, err = cli("passwd", "alice", "--node", "nodeX", "--password-stdin", stdin=NODE2_PASSWORD + "\n")
    assert code == 2 and "no node 'nodeX'" in err
    code, out, _ = cli("passwd", "alice", "--node", "node2", "--password-stdin", stdin=NODE2_PASSWORD + "\n")
    assert code == 0 and "on node node2" in out
    key = TransportKey()

    def login_on(node: str | None, password: str) -> str:
        config = load_config(write_config(f"{node}.toml", node=node))
        auth = nxauth.Authenticator(config, backends={"keys": ListKeySource(key.line)}, entry_points=False)
        try:
            session = auth.open_session(peer=("192.0.2.1", 1))
            session.check_transport_key("nx", key.line)
            try:
                return session.login("alice", password).username
            except nxauth.AuthenticationFailed as exc:
                return exc.reason.value
        finally:
            auth.close()

    assert login_on("node2", NODE2_PASSWORD) == "alice"
    assert login_on("node2", PASSWORD) == "bad-password"
    assert login_on("node1", PASSWORD) == "alice"
    assert login_on("node1", NODE2_PASSWORD) == "bad-password"
    assert cli("passwd", "alice", "--node", "node2", "--no-password")[0] == 0  # node2 takes the default again
    assert login_on("node2", PASSWORD) == "alice"
    events = admin_lines(tmp_path)
    assert [(r["action"], r["node"]) for r in events if r["action"].startswith("password")] == [
        ("password-set", "node2"), ("password-remove", "node2"),
    ]  # fmt: skip
    text = (tmp_path / "audit.jsonl").read_text()
    assert PASSWORD not in text and NODE2_PASSWORD not in text


def test_a_node_lets_in_only_the_users_granted_it(cli: Callable[..., Any], write_config: Callable[..., Path]) -> None:
    """The users allowlist of a registered node checks the grant, at every
    login (a revoke holds at the next one); an unregistered host (the server
    host) checks none."""
    assert cli("node", "add", "node1", "--address", "node1:22", "--host-key", HOST_KEY)[0] == 0
    assert cli("useradd", "alice", "--password-stdin", stdin=PASSWORD + "\n")[0] == 0
    key = TransportKey()
    hosts = {
        name: nxauth.Authenticator(
            load_config(write_config(f"{name}.toml", node=name)),
            backends={"keys": ListKeySource(key.line)},
            entry_points=False,
        )
        for name in ("node1", "server")
    }

    def login(host: str) -> str:
        session = hosts[host].open_session(peer=("192.0.2.1", 1))
        session.check_transport_key("nx", key.line)
        try:
            return session.login("alice", PASSWORD).username
        except nxauth.AuthenticationFailed as exc:
            return exc.reason.value

    try:
        assert login("node1") == "restricted"
        assert login("server") == "alice"
        assert cli("grant", "alice", "node1")[0] == 0
        assert login("node1") == "alice"
        assert cli("revoke", "alice", "node1")[0] == 0
        assert login("node1") == "restricted"
    finally:
        for auth in hosts.values():
            auth.close()


def test_admin_events_name_the_acting_account_and_reach_the_table(
    cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    if os.getuid() == 0:
        monkeypatch.setenv("SUDO_USER", "operator1")
        expected = "operator1"
    else:
        import pwd

        expected = pwd.getpwuid(os.getuid()).pw_name
    assert cli("useradd", "bob", "--no-password")[0] == 0
    assert cli("userdisable", "bob")[0] == 0
    assert cli("userdisable", "bob")[0] == 0  # already disabled: no change, no event
    assert [(r["action"], r["actor"]) for r in admin_lines(tmp_path)] == [
        ("user-add", expected), ("user-disable", expected),
    ]  # fmt: skip
    store = open_store(load_config(tmp_path / "nxauth.toml"))
    try:
        rows = store.execute("SELECT event FROM audit_events ORDER BY id")
    finally:
        store.close()
    assert [json.loads(r[0])["action"] for r in rows] == ["user-add", "user-disable"]


def test_keys_unlock_and_import_are_audited(
    cli: Callable[..., Any], write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config("keystore.toml", keys="keystore")  # commands that build an authenticator
    key = TransportKey()
    pub = tmp_path / "client.pub"
    pub.write_text(key.line + "\n")
    assert cli("keys", "add", str(pub), path=config)[0] == 0
    fingerprint = json.loads(cli("keys", "list", "--json", path=config)[1])[0]["fingerprint"]
    assert cli("keys", "remove", fingerprint, path=config)[0] == 0
    assert cli("unlock", "198.51.100.7", path=config)[0] == 0
    hashes = tmp_path / "users.txt"
    hashes.write_text("erin\nfrank\n")
    assert cli("import", str(hashes), path=config)[0] == 0
    events = [(r["action"], r["target"]) for r in admin_lines(tmp_path)]
    assert events == [
        ("key-add", fingerprint), ("key-remove", fingerprint), ("unlock", "198.51.100.7"),
        ("import", "2 added, 0 updated"),
    ]  # fmt: skip
