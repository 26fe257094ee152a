"""What ``nxauth authorized-keys`` imports: sshd starts it for every key a
client offers, so its start-up is what its path needs and nothing else.

The real command runs in a fresh interpreter (``python -m nxauth``, as the
end-to-end tests run it); an ``atexit`` hook prints ``sys.modules`` after
the command has decided, audited and exited.  With only built-in key
sources, the nxauth modules it loads are a fixed list and neither the
plugin machinery, nor a stage-2 backend, nor an optional dependency is
among them; a configuration that names a key source from a plugin takes
the full path and still answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nxauth.cli import main
from nxauth.keys.formats import parse_public_key
from tests.support.keys import TransportKey

#: Runs ``python -m nxauth ARGS`` and prints the loaded modules at exit, on
#: stderr, after everything the command printed there.
PROBE = """
import atexit, runpy, sys
atexit.register(lambda: sys.stderr.write("\\nMODULES " + " ".join(sorted(sys.modules)) + "\\n"))
sys.argv = ["nxauth", *sys.argv[1:]]
runpy.run_module("nxauth", run_name="__main__", alter_sys=True)
"""

#: Every nxauth module the built-in path may load: the CLI's fast path, the
#: one config reader, the key layer, stage 1 and its audit sinks, the
#: built-in key sources and the SQLite store.  A new entry here is a cost
#: paid on every login: look at ``python -X importtime`` first.
ALLOWED: frozenset[str] = frozenset(
    {
        "nxauth",
        "nxauth.__main__",
        "nxauth.admission",  # the throttle's source keys; built-ins only
        "nxauth.backends",
        "nxauth.backends.authorized_keys",
        "nxauth.backends.keystore",
        "nxauth.cli",
        "nxauth.codes",
        "nxauth.config",
        "nxauth.config.options",
        "nxauth.config.parse",
        "nxauth.config.schema",
        "nxauth.core",
        "nxauth.core.audit",
        "nxauth.core.stage1",
        "nxauth.errors",
        "nxauth.files",
        "nxauth.integrations",
        "nxauth.integrations.keyd_client",  # its FALLBACK_ENV; the module imports only built-ins
        "nxauth.integrations.openssh",
        "nxauth.integrations.syslog",  # where /dev/log exists
        "nxauth.keys",
        "nxauth.keys.authorized_keys",
        "nxauth.keys.formats",
        "nxauth.keys.patterns",
        "nxauth.keys.policy",
        "nxauth.keys.wire",
        "nxauth.model",
        "nxauth.plugins",
        "nxauth.plugins.hookspecs",  # the hookimpl marker only: no pluggy
        "nxauth.plugins.registry",  # kind -> factory and BackendContext: no pluggy
        "nxauth.store",
        "nxauth.store.sqlite",
        "nxauth.usernames",
    }
)

#: Never on the built-in path (top-level packages, or nxauth modules and
#: their submodules).
DENIED: frozenset[str] = frozenset(
    {
        # third-party: the plugin manager, the embedded server, the stage-2
        # backends, key cryptography, the other store, the tests' own
        "pluggy",
        "asyncssh",
        "ldap3",
        "passlib",
        "libpass",
        "argon2",
        "_argon2_cffi_bindings",
        "bcrypt",
        "pam",
        "cryptography",
        "psycopg",
        "psycopg_pool",
        "pyotp",
        "nxauth_totp",
        "hypothesis",
        # standard library the path does not need
        "argparse",
        "asyncio",
        "concurrent",
        "ctypes",
        "importlib.metadata",
        "email",
        "zipfile",
        "random",
        "secrets",
        "calendar",
        "locale",
        "json",
        "logging.handlers",  # with socket, pickle and queue: nxauth.integrations.syslog instead
        "socket",
        "pickle",
        "queue",
        # nxauth: plugin manager, stage 2, the embedded server, other stores
        "nxauth.plugins.manager",
        "nxauth.plugins.roles",
        "nxauth.core.authenticator",
        "nxauth.core.session",
        "nxauth.core.stage2",
        "nxauth.core.stack",
        "nxauth.core.runtime",
        "nxauth.core.observers",
        "nxauth.backends.ldap",
        "nxauth.backends.pam",
        "nxauth.backends.passwords",
        "nxauth.backends.hashing",
        "nxauth.backends.userdb",
        "nxauth.backends.users",
        "nxauth.backends.system",
        "nxauth.integrations.asyncssh",
        "nxauth.integrations._asyncssh_channel",
        "nxauth.integrations.asyncssh_client",
        "nxauth.integrations.exchange",
        "nxauth.integrations.protocol",
        "nxauth.integrations.keyd",
        "nxauth.store.postgres",
        "nxauth.cli.openssh",
        "nxauth.cli.core",
        "nxauth.cli.keys",
        "nxauth.cli.users",
        "nxauth.cli.serve",
        "nxauth.cli.pam",
        "nxauth.cli.demo",
        "nxauth.testing",
    }
)

OPTIONS = 'restrict,command="nxauth login"'

#: The fields of a stage-1 line in the JSON-lines audit file, on either path.
EVENT_FIELDS: frozenset[str] = frozenset(
    {
        "time",
        "stage",
        "outcome",
        "reason",
        "method",
        "user",
        "invalid_user",
        "host",
        "port",
        "session",
        "backend",
        "fingerprint",
        "detail",
    }
)


def fingerprint(key: TransportKey) -> str:
    return parse_public_key(key.line).fingerprint


def denied(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == d or m.startswith(d + ".") for d in DENIED))


def authorized_keys(
    config: Path, key: TransportKey, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the real command; its result (stderr without the probe's line) and the modules it loaded."""
    key_type, key_text = key.line.split()[:2]
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "--config", str(config), "authorized-keys", "nx", key_type, key_text],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    head, marker, modules = result.stderr.rpartition("\nMODULES ")
    assert marker, result.stderr
    result.stderr = head.strip()
    return result, set(modules.split())


def events(state: Path) -> list[dict[str, object]]:
    records = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("kind") != "admin"]  # the setup's keys add is an admin event


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def keystore_config(tmp_path: Path, key: TransportKey, extra: str = "") -> Path:
    config = tmp_path / "nxauth.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n{extra}')
    keys = tmp_path / "keys.pub"
    keys.write_text(f"{OPTIONS} {key.line}\n")
    assert main(["--config", str(config), "keys", "add", str(keys)]) == 0
    return config


def file_config(tmp_path: Path, key: TransportKey) -> Path:
    """The key in an authorized_keys file, the keystore asked first."""
    keys = tmp_path / "authorized_keys"
    keys.write_text(f'{OPTIONS},from="198.51.100.0/24" {key.line}\n')
    return keystore_config(
        tmp_path,
        TransportKey("other@nxauth"),
        '[transport]\nkey_sources = ["keystore", "file"]\n'
        f'[backends.file]\nkind = "authorized_keys"\npath = "{keys}"\n',
    )


@pytest.mark.parametrize(
    ("build", "audit"),
    [
        pytest.param(keystore_config, "", id="keystore-default-audit"),
        pytest.param(keystore_config, "[audit]\nlog = false\n", id="keystore-no-log"),
        pytest.param(file_config, "", id="keystore-and-file"),
    ],
)
def test_built_in_key_sources_import_only_their_path(
    tmp_path: Path, transport_key: TransportKey, build: object, audit: str
) -> None:
    config = build(tmp_path, transport_key)  # type: ignore[operator]
    if audit:
        config.write_text(config.read_text() + audit)
    result, modules = authorized_keys(config, transport_key)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert transport_key.line.split()[1] in result.stdout  # decided: the key's line was printed
    loaded = {m for m in modules if m == "nxauth" or m.startswith("nxauth.")}
    assert sorted(loaded - ALLOWED) == []
    assert denied(modules) == []
    assert {"nxauth.core.stage1", "nxauth.core.audit"} <= loaded  # the one stage 1 decided, and audited


def test_the_audit_event_is_emitted_on_the_lean_path(tmp_path: Path, transport_key: TransportKey) -> None:
    """An audit sink that needs ``json`` (a JSON-lines file) is loaded when
    configured, and the event carries the decision's fields."""
    config = keystore_config(tmp_path, transport_key, f'[audit]\njsonl = "{tmp_path / "state" / "audit.jsonl"}"\n')
    result, modules = authorized_keys(config, transport_key)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(OPTIONS + " ssh-ed25519 ")
    assert "pluggy" not in modules and "nxauth.plugins.manager" not in modules
    [event] = events(tmp_path / "state")
    assert set(event) == EVENT_FIELDS
    assert {key: event[key] for key in ("stage", "outcome", "reason", "method", "user", "backend", "detail")} == {
        "stage": 1,
        "outcome": "accepted",
        "reason": "ok",
        "method": "publickey",
        "user": "nx",
        "backend": "keystore",
        "detail": "authorized-keys",
    }
    assert event["fingerprint"] == fingerprint(transport_key)


def test_a_key_source_from_a_plugin_takes_the_full_path(tmp_path: Path, transport_key: TransportKey) -> None:
    """The counter-case: a kind only a plugin provides needs the plugin
    manager and the entry-point scan; the command loads them and answers."""
    plugin = tmp_path / "memkeys.py"
    plugin.write_text(
        "import nxauth\n"
        "from nxauth.keys.authorized_keys import parse_authorized_key\n"
        f"LINE = {transport_key.line!r}\n"
        "class Source:\n"
        "    def authorized_keys(self, account):\n"
        "        return [parse_authorized_key('restrict ' + LINE)]\n"
        "@nxauth.hookimpl\n"
        "def nxauth_register_backends(registry):\n"
        "    registry.add('memkeys', lambda context: Source())\n"
    )
    dist = tmp_path / "memkeys-1.0.dist-info"  # an installed distribution with an entry point
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: memkeys\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[nxauth]\nmemkeys = memkeys\n")
    config = tmp_path / "nxauth.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[transport]\nkey_sources = ["mine"]\n[backends.mine]\nkind = "memkeys"\n'
        f'[audit]\njsonl = "{tmp_path / "state" / "audit.jsonl"}"\n'
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    result, modules = authorized_keys(config, transport_key, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("restrict ssh-ed25519 ")
    assert {"pluggy", "nxauth.plugins.manager", "memkeys"} <= modules
    [event] = events(tmp_path / "state")
    assert set(event) == EVENT_FIELDS  # the same event as the lean path's
    assert (event["outcome"], event["backend"], event["detail"]) == ("accepted", "mine", "authorized-keys")
    assert event["fingerprint"] == fingerprint(transport_key)
