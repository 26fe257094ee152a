"""``nxauth log``: the audit trail read back through the real CLI, from the
JSON lines file and from the store's audit table (on SQLite and on
PostgreSQL), with its filters and views; never a password."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import nxauth
from nxauth.cli import main
from nxauth.config import load_config
from nxauth.testing import MemoryBackend
from tests.support.keys import ListKeySource, TransportKey

PASSWORD = "s3cret-'quoted'-pässword"


def toml_store(section: dict[str, Any]) -> str:
    lines = ["[store]"] + [
        f'{k} = {{ file = "{v["file"]}" }}' if isinstance(v, dict) else f"{k} = {json.dumps(v)}"
        for k, v in section.items()
    ]
    return "\n".join(lines) + "\n" if section else ""


@pytest.fixture
def trail(tmp_path: Path, store_section: dict[str, Any]) -> Path:
    """A configuration whose trail holds: alice accepted from 192.0.2.1,
    bob failed from 198.51.100.2, a refused invalid name, an admin change."""
    config = tmp_path / "nxauth.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[audit]\nlog = false\njsonl = "{tmp_path / "audit.jsonl"}"\n'
        'table = true\n[transport]\nkey_sources = ["keys"]\n'
        '[[auth]]\nuse = "mem"\n[[account]]\nuse = "mem"\n' + toml_store(store_section)
    )
    key = TransportKey()
    auth = nxauth.Authenticator(
        load_config(config),
        backends={"keys": ListKeySource(key.line), "mem": MemoryBackend({"alice": PASSWORD, "bob": "builder"})},
        entry_points=False,
    )
    try:
        for user, password, host in (("alice", PASSWORD, "192.0.2.1"), ("bob", PASSWORD, "198.51.100.2")):
            session = auth.open_session(peer=(host, 5000))
            session.check_transport_key("nx", key.line)
            with contextlib.suppress(nxauth.AuthenticationFailed):
                session.login(user, password)
        session = auth.open_session(peer=("198.51.100.2", 5001))
        session.check_transport_key("nx", key.line)
        with pytest.raises(nxauth.AuthenticationFailed):
            session.login("bad\nname", PASSWORD)
    finally:
        auth.close()  # the audit table's writer is flushed
    assert main(["--config", str(config), "useradd", "carol", "--no-password"]) == 0
    return config


def run(config: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = main(["--config", str(config), "log", *argv])
    out = capsys.readouterr().out
    return code, out.splitlines()


@pytest.mark.usefixtures("store_kind")
@pytest.mark.parametrize("trail_of", ["table", "jsonl"])
def test_views_and_filters(trail: Path, capsys: pytest.CaptureFixture[str], trail_of: str) -> None:
    def records(*argv: str) -> list[dict[str, Any]]:
        code, lines = run(trail, capsys, "--from", trail_of, "--json", *argv)
        assert code == 0
        return [json.loads(line) for line in lines]

    every = records()
    assert [(r.get("stage"), r.get("outcome"), r.get("user")) for r in every if r.get("kind") != "admin"] == [
        (1, "accepted", "nx"), (2, "accepted", "alice"), (1, "accepted", "nx"), (2, "failed", "bob"),
        (1, "accepted", "nx"), (2, "failed", "bad\nname"),
    ]  # fmt: skip
    assert [(r["action"], r["user"]) for r in every if r.get("kind") == "admin"] == [("user-add", "carol")]
    assert [(r["user"], r["reason"]) for r in records("--failed")] == [
        ("bob", "bad-password"),
        ("bad\nname", "invalid-username"),
    ]
    assert [r["user"] for r in records("--last")] == ["alice"]
    assert {r["user"] for r in records("--user", "ALICE")} == {"alice"}  # canonical form
    assert {r["host"] for r in records("--source", "198.51.100.0/24")} == {"198.51.100.2"}
    assert [r["reason"] for r in records("--outcome", "failed")] == ["bad-password", "invalid-username"]
    assert records("--outcome", "refused") == []
    assert len(records("--since", "1h")) == len(every)
    assert records("--since", "2000-01-01T00:00") == every
    assert records("--since", "2999-01-01T00:00") == []
    code, lines = run(trail, capsys, "--from", trail_of, "--failed")
    assert code == 0 and len(lines) == 2
    assert "failed (bad-password)  bob  from 198.51.100.2:5000" in lines[0]
    assert "bad\\x0aname" in lines[1]  # escaped: one event, one line
    code, lines = run(trail, capsys, "--from", trail_of, "--user", "carol")
    assert any("admin user-add by" in line and "user=carol" in line for line in lines)
    for argv in ((), ("--json",), ("--failed",)):
        assert PASSWORD not in "\n".join(run(trail, capsys, "--from", trail_of, *argv)[1])


def test_bad_filters_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "nxauth.toml"
    config.write_text(f'state_dir = "{tmp_path}"\n[audit]\njsonl = "{tmp_path / "a.jsonl"}"\n')
    assert main(["--config", str(config), "log", "--since", "yesterday"]) == 2
    assert main(["--config", str(config), "log", "--source", "not-an-address"]) == 2
    assert main(["--config", str(config), "log"]) != 0  # no trail yet: said so
    capsys.readouterr()
    bare = tmp_path / "bare.toml"
    bare.write_text(f'state_dir = "{tmp_path}"\n')
    assert main(["--config", str(bare), "log"]) == 2
    assert "set [audit] jsonl" in capsys.readouterr().err


def test_a_line_nxauth_did_not_write_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trail = tmp_path / "a.jsonl"
    good = {"time": "2026-12-07T10:00:00.000+00:00", "stage": 2, "outcome": "failed", "reason": "bad-password",
            "user": "bob", "host": "192.0.2.9", "port": 1}  # fmt: skip
    trail.write_text("not json\n" + "[1, 2]\n" + "x" * 70_000 + "\n" + json.dumps(good) + "\n")
    config = tmp_path / "nxauth.toml"
    config.write_text(f'state_dir = "{tmp_path}"\n[audit]\njsonl = "{trail}"\n')
    code, lines = run(config, capsys, "--json")
    assert code == 0 and [json.loads(line)["user"] for line in lines] == ["bob"]


def test_follow_prints_events_as_they_come(tmp_path: Path) -> None:
    trail = tmp_path / "a.jsonl"
    trail.write_text("")
    config = tmp_path / "nxauth.toml"
    config.write_text(f'state_dir = "{tmp_path}"\n[audit]\njsonl = "{trail}"\n')
    follower = subprocess.Popen(
        [sys.executable, "-m", "nxauth", "--config", str(config), "log", "--follow", "--json", "--failed"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        event = {"time": "2026-12-07T10:00:00.000+00:00", "stage": 2, "outcome": "failed", "reason": "bad-password",
                 "user": "mallory", "host": "203.0.113.5", "port": 2}  # fmt: skip
        with trail.open("a") as handle:
            handle.write(json.dumps(event) + "\n")
        assert follower.stdout is not None
        line = follower.stdout.readline()
        assert json.loads(line)["user"] == "mallory"
    finally:
        follower.kill()
        follower.communicate(timeout=10)


def test_the_trail_is_read_from_the_table_by_default_on_postgresql(
    pg_cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    section = pg_cluster.store_options(pg_cluster.new_schema())
    config = tmp_path / "nxauth.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n' + toml_store(section))
    assert main(["--config", str(config), "useradd", "dave", "--no-password"]) == 0
    capsys.readouterr()
    code, lines = run(config, capsys)
    assert code == 0 and any("admin user-add" in line and "user=dave" in line for line in lines)
