"""``nxauth authorized-keys-daemon`` and its client: the wire format, the
same answers as ``nxauth authorized-keys`` in-process, reloads, the socket's
safety, the client's fallback, and the client's lean start-up.

Everything runs over real UNIX sockets in the test's directory; the only
doubles are fault injections (a failing decision, a squatting server)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nxauth.cli import main
from nxauth.errors import ConfigError, StoreError
from nxauth.integrations import keyd, keyd_client, openssh
from nxauth.integrations.keyd import AuthorizedKeysDaemon, KeyAnswerer, RequestError, decode_request, encode_reply
from nxauth.integrations.keyd_client import ReplyError, decode_reply, encode_request
from tests.support.keys import TransportKey

CLIENT = Path(keyd_client.__file__).with_name("keyd_run.py")  # what sshd runs
OPTIONS = 'restrict,command="nxauth login"'


# ---------------------------------------------------------------- fixtures


def write_config(path: Path, state: Path, account: str = "nx") -> None:
    path.write_text(
        f'state_dir = "{state}"\n[transport]\naccount = "{account}"\n[audit]\njsonl = "{state / "audit.jsonl"}"\n'
    )


@pytest.fixture
def deployed(tmp_path: Path, transport_key: TransportKey) -> Path:
    """A configuration with ``transport_key`` in its keystore (a short base
    path: a UNIX socket path must fit in 108 bytes)."""
    tmp_path.chmod(0o700)
    config = tmp_path / "nxauth.toml"
    write_config(config, tmp_path / "state")
    keys = tmp_path / "keys.pub"
    keys.write_text(f"{OPTIONS} {transport_key.line}\n")
    assert main(["--config", str(config), "keys", "add", str(keys)]) == 0
    return config


@pytest.fixture
def in_process_logging() -> Iterator[None]:
    """``run_authorized_keys`` configures the root logger for a service (its
    handlers, its level): put it back for the tests that follow."""
    root = logging.getLogger()
    audit = logging.getLogger("nxauth.audit")
    saved = root.handlers[:], root.level, audit.propagate
    yield
    for handler in root.handlers[:]:
        if handler not in saved[0]:
            root.removeHandler(handler)
    for handler in saved[0]:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(saved[1])
    audit.propagate = saved[2]


def events(config: Path) -> list[dict[str, object]]:
    path = config.parent / "state" / "audit.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in records if r.get("kind") != "admin"]  # the logins' events (setup's keygen is an admin one)


class Running:
    def __init__(self, daemon: AuthorizedKeysDaemon, thread: threading.Thread) -> None:
        self.daemon = daemon
        self.thread = thread
        self.path = str(daemon.socket_path)

    def ask(self, *fields: str | None, config: str | None = None) -> tuple[int, bytes]:
        user, key_type, key, *rest = fields
        assert user is not None and key_type is not None and key is not None
        request = encode_request(config, user, key_type, key, rest[0] if rest else None)
        return keyd_client.ask(self.path, request, timeout=10)

    def stop(self) -> None:
        self.daemon.shutdown()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    started: list[tuple[Running, KeyAnswerer]] = []

    def start(config: Path | None, *, answerer: KeyAnswerer | None = None, **kwargs: object) -> Running:
        answerer = answerer or KeyAnswerer(config)
        path = kwargs.pop("socket_path", None) or tmp_path / "s.sock"
        daemon = AuthorizedKeysDaemon(answerer, path, **kwargs)  # type: ignore[arg-type]
        thread = threading.Thread(target=daemon.serve_forever, daemon=True)
        thread.start()
        running = Running(daemon, thread)
        started.append((running, answerer))
        return running

    yield start
    for running, answerer in started:
        running.stop()
        answerer.close()


def key_fields(key: TransportKey) -> tuple[str, str]:
    key_type, key_text = key.line.split()[:2]
    return key_type, key_text


# ---------------------------------------------------------------- the wire format


def test_request_round_trips_any_argv_bytes() -> None:
    weird = os.fsdecode(b"caf\xc3\xa9-\xff")  # valid UTF-8, then a byte sshd might pass through
    data = encode_request("/etc/nxauth.toml", weird, "ssh-ed25519", "AAAA", "198.51.100.1 4 192.0.2.1 22")
    assert decode_request(data) == ("/etc/nxauth.toml", weird, "ssh-ed25519", "AAAA", "198.51.100.1 4 192.0.2.1 22")
    assert decode_request(encode_request(None, "nx", "t", "k", None)) == (None, "nx", "t", "k", None)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"NXAK1",
        b"NXAK2\n\0nx\0t\0k\0",
        b"NXAK1\n\0nx\0t\0k",
        b"NXAK1\n\0nx\0t\0k\0\0extra",
        b"NXAK1\n\0\0t\0k\0",
        b"NXAK1\n\0nx\0\0k\0",
        b"NXAK1\n\0nx\0t\0\0",
    ],
)
def test_malformed_requests_are_refused(data: bytes) -> None:
    with pytest.raises(RequestError):
        decode_request(data)


def test_reply_round_trips() -> None:
    assert decode_reply(encode_reply(0, "a line\n")) == (0, b"a line\n")
    assert decode_reply(encode_reply(0)) == (0, b"")
    assert decode_reply(encode_reply(4)) == (4, b"")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"NXAK1 0 8\nshort",  # truncated: never printed
        b"NXAK1 0 2\nlonger than announced",
        b"NXAK1 0 0",  # no newline
        b"NXAK2 0 0\n",
        b"NXAK1 7 0\n",  # unknown status
        b"NXAK1 1 0\n",
        b"NXAK1 -0 0\n",
        b"NXAK1 0 99999999\n",
        b"NXAK1 0 0 0\n",
        b"NXAK1  0\n",
    ],
)
def test_malformed_replies_are_refused(data: bytes) -> None:
    with pytest.raises(ReplyError):
        decode_reply(data)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nx", "t", "k"],  # no --socket
        ["--socket", "/s"],
        ["--socket", "/s", "nx", "t"],
        ["--socket", "/s", "nx", "t", "k", "c", "extra"],
        ["--socket", "/s", "--timeout", "0", "nx", "t", "k"],
        ["--socket", "/s", "--timeout", "nan", "nx", "t", "k"],
        ["--socket", "/s", "--bogus", "x", "nx", "t", "k"],
        ["--socket"],
    ],
)
def test_client_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert keyd_client.main(argv) == 2
    assert "usage" in capsys.readouterr().err


# ---------------------------------------------------------------- answers


def test_answers_are_those_of_nxauth_authorized_keys(
    in_process_logging: None,
    deployed: Path,
    transport_key: TransportKey,
    serve: Callable[..., Running],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One policy: for every case the daemon prints what the in-process
    command prints, and audits the same decision."""
    running = serve(deployed)
    stranger = TransportKey()
    key_type, key_text = key_fields(transport_key)
    cases = [
        ("nx", key_type, key_text, None),
        ("nx", key_type, key_text, "198.51.100.9 4000 192.0.2.1 22"),
        ("root", key_type, key_text, None),
        ("nx", *key_fields(stranger), None),
        ("nx", "ssh-ed25519", "bm90IGEga2V5", None),
        ("nx", "ssh-rsa", key_text, None),
    ]
    for user, kind, text, connection in cases:
        status, body = running.ask(user, kind, text, connection)
        in_daemon = events(deployed)[-1]
        capsys.readouterr()
        argv = [user, kind, text] + ([connection] if connection else [])
        assert openssh.run_authorized_keys(str(deployed), argv, write=sys.stdout.write) == 0
        in_process = events(deployed)[-1]
        assert (status, body.decode()) == (0, capsys.readouterr().out), (user, kind, connection)
        for field in ("stage", "outcome", "reason", "user", "invalid_user", "backend", "fingerprint", "detail"):
            assert in_daemon[field] == in_process[field], (field, user, kind)
    accepted = [e for e in events(deployed) if e["outcome"] == "accepted"]
    assert len(accepted) == 4  # the first two cases, both ways
    first = running.ask("nx", key_type, key_text)[1].decode()
    assert first.startswith(f"{OPTIONS} ssh-ed25519 ") and first.endswith("\n")


def test_the_client_prints_the_line_and_exits_0(
    deployed: Path, transport_key: TransportKey, serve: Callable[..., Running]
) -> None:
    running = serve(deployed)
    key_type, key_text = key_fields(transport_key)
    argv = [sys.executable, "-I", "-S", str(CLIENT), "--socket", running.path, "--config", str(deployed)]
    accepted = subprocess.run([*argv, "nx", key_type, key_text], capture_output=True, text=True, check=False)
    assert (accepted.returncode, accepted.stderr) == (0, "")
    assert accepted.stdout.startswith(f"{OPTIONS} ssh-ed25519 ")
    refused = subprocess.run([*argv, "nx", *key_fields(TransportKey())], capture_output=True, text=True, check=False)
    assert (refused.returncode, refused.stdout, refused.stderr) == (0, "", "")
    assert [e["outcome"] for e in events(deployed)] == ["accepted", "failed"]


def test_the_client_imports_nothing_but_built_ins(deployed: Path, serve: Callable[..., Running]) -> None:
    """No site, no ``socket`` (enum, selectors), no nxauth: its start-up is
    the cost of every login."""
    running = serve(deployed)

    def imported(*argv: str) -> set[str]:
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-I", "-S", *argv], capture_output=True, text=True, check=False
        )
        lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
        return {line.rsplit("|", 1)[1].strip() for line in lines[1:]}

    loaded = imported(str(CLIENT), "--socket", running.path, "nx", "t", "AAAA") - imported("-c", "pass")
    assert "_socket" in loaded
    assert "keyd_client" in loaded
    heavy = {"site", "os", "socket", "enum", "re", "typing", "selectors", "json", "nxauth", "logging", "pathlib"}
    assert not loaded & heavy, loaded & heavy
    assert not any(name.startswith("nxauth") for name in loaded)


def test_a_config_change_is_seen_on_the_next_request(
    tmp_path: Path, deployed: Path, transport_key: TransportKey, serve: Callable[..., Running]
) -> None:
    running = serve(deployed)
    key_type, key_text = key_fields(transport_key)
    assert running.ask("nx", key_type, key_text)[1]
    # the same keystore, another transport account: nx's key now answers nothing
    write_config(deployed, tmp_path / "state", account="nxother")
    assert running.ask("nx", key_type, key_text) == (0, b"")
    assert events(deployed)[-1]["reason"] == "wrong-account"
    # a configuration that no longer loads refuses every key, and says why
    deployed.write_text("state_dir = [broken\n")
    assert running.ask("nx", key_type, key_text) == (3, b"")
    assert running.ask("nx", key_type, key_text) == (3, b"")
    deployed.unlink()
    assert running.ask("nx", key_type, key_text) == (3, b"")
    write_config(deployed, tmp_path / "state")
    assert running.ask("nx", key_type, key_text)[1].startswith(OPTIONS.encode())


def test_reload_rebuilds_even_when_the_file_looks_unchanged(deployed: Path, serve: Callable[..., Running]) -> None:
    builds: list[Path | None] = []

    def build(path: Path | None) -> object:
        from nxauth import Authenticator

        builds.append(path)
        return Authenticator.from_file(path)

    answerer = KeyAnswerer(deployed, build=build)  # type: ignore[arg-type]
    running = serve(deployed, answerer=answerer)
    running.ask("nx", "ssh-ed25519", "AAAA")
    assert len(builds) == 1
    assert answerer.reload() is True  # at once, not at the next request
    assert len(builds) == 2
    running.ask("nx", "ssh-ed25519", "AAAA")
    assert len(builds) == 2
    saved = deployed.read_text()
    deployed.write_text("state_dir = [broken\n")
    assert answerer.reload() is False
    assert running.ask("nx", "ssh-ed25519", "AAAA") == (3, b"")
    deployed.write_text(saved)
    assert answerer.reload() is True
    assert running.ask("nx", "ssh-ed25519", "AAAA")[0] == 0


def test_a_percent_in_a_path_is_not_an_sshd_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "50%off.toml"
    write_config(config, tmp_path / "st%ate")
    for extra in ([], ["--daemon"]):
        assert main(["--config", str(config), "sshd-config", "--program", "/opt/100%/nxauth", *extra]) == 0
        block = capsys.readouterr().out
        command = next(line for line in block.splitlines() if "AuthorizedKeysCommand " in line)
        assert "50%%off.toml" in command and command.endswith(" %u %t %k")
        assert "%" not in command.replace("%%", "").replace(" %u %t %k", "")
        assert "ForceCommand /opt/100%/nxauth --config " in block  # not expanded by sshd


def test_a_removed_key_is_refused_at_once(
    deployed: Path, transport_key: TransportKey, serve: Callable[..., Running]
) -> None:
    running = serve(deployed)
    key_type, key_text = key_fields(transport_key)
    assert running.ask("nx", key_type, key_text)[1]
    fingerprint = events(deployed)[-1]["fingerprint"]
    assert main(["--config", str(deployed), "keys", "remove", str(fingerprint)]) == 0
    assert running.ask("nx", key_type, key_text) == (0, b"")
    assert events(deployed)[-1]["reason"] == "unknown-key"


def test_a_client_given_another_configuration_is_sent_back(
    tmp_path: Path, deployed: Path, transport_key: TransportKey, serve: Callable[..., Running]
) -> None:
    running = serve(deployed)
    key_type, key_text = key_fields(transport_key)
    other = tmp_path / "other.toml"
    write_config(other, tmp_path / "other-state")
    assert running.ask("nx", key_type, key_text, config=str(other)) == (keyd_client.STATUS_OTHER_CONFIG, b"")
    assert running.ask("nx", key_type, key_text, config=str(deployed))[1]
    link = tmp_path / "link.toml"
    link.symlink_to(deployed)
    assert running.ask("nx", key_type, key_text, config=str(link))[1]  # the same file
    # the client then decides in-process with its own configuration: unknown key there
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            str(CLIENT),
            "--socket",
            running.path,
            "--config",
            str(other),
            "nx",
            key_type,
            key_text,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "")
    other_events = [
        record
        for line in (tmp_path / "other-state" / "audit.jsonl").read_text().splitlines()
        if (record := json.loads(line)).get("kind") != "admin"
    ]
    assert other_events[-1]["reason"] == "unknown-key"


def test_a_moved_configuration_symlink_is_followed(
    tmp_path: Path, deployed: Path, transport_key: TransportKey, serve: Callable[..., Running]
) -> None:
    """The daemon and its clients name /etc/nxauth/nxauth.toml, a symlink that
    an administrator points at another file: the clients are still answered,
    from the new file."""
    link = tmp_path / "current.toml"
    link.symlink_to(deployed)
    running = serve(link)
    key_type, key_text = key_fields(transport_key)
    assert running.ask("nx", key_type, key_text)[1]
    moved = tmp_path / "moved.toml"
    write_config(moved, tmp_path / "state", account="nxother")
    link.unlink()
    link.symlink_to(moved)
    assert running.ask("nx", key_type, key_text, config=str(link)) == (0, b"")  # not 6: answered, by the new file
    assert events(deployed)[-1]["reason"] == "wrong-account"
    assert running.ask("nx", key_type, key_text, config=str(deployed))[0] == keyd_client.STATUS_OTHER_CONFIG


@pytest.mark.parametrize(
    ("error", "status"),
    [(StoreError("database disk image is malformed"), 4), (ConfigError("x"), 3), (RuntimeError("a bug"), 5)],
)
def test_errors_answer_a_status_and_the_daemon_lives_on(
    deployed: Path,
    transport_key: TransportKey,
    serve: Callable[..., Running],
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    status: int,
) -> None:
    running = serve(deployed)
    key_type, key_text = key_fields(transport_key)

    def fail(*args: object, **kwargs: object) -> None:
        raise error

    with monkeypatch.context() as patch:
        patch.setattr(openssh, "authorized_keys_line", fail)
        assert running.ask("nx", key_type, key_text) == (status, b"")
    assert running.ask("nx", key_type, key_text)[1]


def test_oversized_and_malformed_requests_get_an_error(deployed: Path, serve: Callable[..., Running]) -> None:
    running = serve(deployed)
    huge = encode_request(None, "nx", "ssh-ed25519", "A" * (keyd_client.MAX_REQUEST + 10), None)
    assert keyd_client.ask(running.path, huge) == (5, b"")
    assert keyd_client.ask(running.path, b"GET / HTTP/1.0\r\n\r\n") == (5, b"")
    assert keyd_client.ask(running.path, b"") == (5, b"")
    assert events(deployed) == []  # nothing was decided


def test_a_silent_client_does_not_hold_the_daemon(
    deployed: Path, transport_key: TransportKey, serve: Callable[..., Running]
) -> None:
    running = serve(deployed, workers=1, request_timeout=0.5)
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(running.path)  # takes the only slot, sends nothing
    try:
        start = time.monotonic()
        assert running.ask("nx", *key_fields(transport_key))[1]
        assert time.monotonic() - start < 5
    finally:
        silent.close()


def test_concurrent_requests_all_get_their_own_answer(
    deployed: Path, transport_key: TransportKey, serve: Callable[..., Running]
) -> None:
    running = serve(deployed, workers=3)
    key_type, key_text = key_fields(transport_key)
    strangers = [key_fields(TransportKey()) for _ in range(8)]
    results: dict[int, tuple[int, bytes]] = {}

    def one(index: int) -> None:
        fields = (key_type, key_text) if index % 2 == 0 else strangers[index // 2 % 8]
        results[index] = running.ask("nx", *fields)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 24
    for index, (status, body) in results.items():
        assert status == 0
        assert bool(body) is (index % 2 == 0)
    assert len(events(deployed)) == 24


# ---------------------------------------------------------------- the socket


def test_the_socket_is_private_and_removed_on_shutdown(deployed: Path, serve: Callable[..., Running]) -> None:
    running = serve(deployed)
    mode = os.lstat(running.path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    running.stop()
    assert not os.path.lexists(running.path)


def test_a_stale_socket_is_replaced(tmp_path: Path, deployed: Path, serve: Callable[..., Running]) -> None:
    path = tmp_path / "s.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens
    running = serve(deployed, socket_path=path)
    assert running.ask("nx", "ssh-ed25519", "AAAA")[0] == 0


def test_refuses_to_start_over_a_live_daemon_or_a_file(
    tmp_path: Path, deployed: Path, serve: Callable[..., Running]
) -> None:
    running = serve(deployed)
    with pytest.raises(ConfigError, match="already answers"):
        AuthorizedKeysDaemon(KeyAnswerer(deployed), running.path)
    assert running.ask("nx", "ssh-ed25519", "AAAA")[0] == 0  # untouched
    regular = tmp_path / "file"
    regular.write_text("data")
    with pytest.raises(ConfigError, match="not a socket"):
        AuthorizedKeysDaemon(KeyAnswerer(deployed), regular)
    assert regular.read_text() == "data"


@pytest.mark.parametrize("mode", [0o770, 0o1777, 0o757])
def test_refuses_a_directory_others_can_write(tmp_path: Path, deployed: Path, mode: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(ConfigError, match="writable by group or others"):
        AuthorizedKeysDaemon(KeyAnswerer(deployed), shared / "s.sock")
    assert list(shared.iterdir()) == []


def test_refuses_a_path_too_long_for_a_socket(tmp_path: Path, deployed: Path) -> None:
    with pytest.raises(ConfigError, match="longer than"):
        AuthorizedKeysDaemon(KeyAnswerer(deployed), tmp_path / ("x" * 120))


def test_a_peer_of_another_uid_is_refused(deployed: Path, serve: Callable[..., Running]) -> None:
    running = serve(deployed, allowed_uids=frozenset({os.geteuid() + 12345}))
    with pytest.raises((OSError, ReplyError)):  # closed without a reply: the client falls back
        running.ask("nx", "ssh-ed25519", "AAAA")
    assert events(deployed) == []


# ---------------------------------------------------------------- the client's fallback


def run_client(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-S", str(CLIENT), *argv], capture_output=True, text=True, check=False, env=env
    )


def test_without_a_daemon_the_client_decides_in_process(
    tmp_path: Path, deployed: Path, transport_key: TransportKey
) -> None:
    key_type, key_text = key_fields(transport_key)
    result = run_client("--socket", str(tmp_path / "none.sock"), "--config", str(deployed), "nx", key_type, key_text)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{OPTIONS} ssh-ed25519 ")
    assert events(deployed)[-1]["outcome"] == "accepted"
    refused = run_client("--socket", str(tmp_path / "none.sock"), "--config", str(deployed), "nx", "ssh-rsa", "AAAA")
    assert (refused.returncode, refused.stdout) == (0, "")


def test_no_fallback_prints_nothing_and_exits_5(tmp_path: Path, deployed: Path, transport_key: TransportKey) -> None:
    key_type, key_text = key_fields(transport_key)
    result = run_client(
        "--socket", str(tmp_path / "none.sock"), "--no-fallback", "--config", str(deployed), "nx", key_type, key_text
    )
    assert (result.returncode, result.stdout) == (5, "")
    assert "daemon unreachable" in result.stderr
    assert events(deployed) == []


def test_the_fallback_logs_why(
    in_process_logging: None,
    deployed: Path,
    transport_key: TransportKey,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(keyd_client.FALLBACK_ENV, "/run/x.sock: FileNotFoundError")
    out: list[str] = []
    argv = ["nx", *key_fields(transport_key)]
    assert openssh.run_authorized_keys(str(deployed), argv, write=out.append, debug=True) == 0
    assert out and out[0].startswith(OPTIONS)
    assert "authorized-keys daemon did not answer (/run/x.sock: FileNotFoundError)" in capfd.readouterr().err


@contextlib.contextmanager
def fake_server(path: Path, reply: bytes | None) -> Iterator[None]:
    """A server that answers every connection with ``reply`` (``None``:
    never answers) — what a hung daemon or a squatter looks like."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    stop = threading.Event()
    held: list[socket.socket] = []

    def loop() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            if reply is None:
                held.append(conn)
            else:
                with conn:
                    conn.sendall(reply)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for conn in held:
            conn.close()


@pytest.mark.parametrize("reply", [None, b"NXAK1 0 50\nssh-ed25519 AAAA truncated", b"garbage\n"])
def test_a_hung_or_broken_daemon_is_never_believed(
    tmp_path: Path, deployed: Path, transport_key: TransportKey, reply: bytes | None
) -> None:
    path = tmp_path / "fake.sock"
    key_type, key_text = key_fields(transport_key)
    with fake_server(path, reply):
        refused = run_client("--socket", str(path), "--timeout", "0.5", "--no-fallback", "nx", key_type, key_text)
        assert (refused.returncode, refused.stdout) == (5, "")
        fallback = run_client("--socket", str(path), "--timeout", "0.5", "--config", str(deployed))
        assert fallback.returncode == 2  # usage: sanity check of the argv below
        fallback = run_client(
            "--socket", str(path), "--timeout", "0.5", "--config", str(deployed), "nx", key_type, key_text
        )
        assert fallback.returncode == 0 and fallback.stdout.startswith(OPTIONS)  # decided in-process


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a server as another user")
def test_a_server_of_another_user_is_never_believed() -> None:
    """Whoever squats on the socket path cannot let a key in: the client
    checks who runs the server (SO_PEERCRED)."""
    base = Path(tempfile.mkdtemp(prefix="nxauth-squat-"))  # pytest's tmp_path is closed to nobody
    base.chmod(0o755)
    squat = base / "squat"
    squat.mkdir()
    os.chown(squat, 65534, 65534)
    path = squat / "s.sock"
    body = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
    reply = b"NXAK1 0 %d\n" % len(body) + body
    server = (
        "import os, socket, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1); print('ready', flush=True)\n"
        "c, _ = s.accept(); c.recv(65536); c.sendall(bytes.fromhex(sys.argv[2])); c.close()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", server, str(path), reply.hex()], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        result = run_client("--socket", str(path), "--no-fallback", "nx", "ssh-ed25519", "AAAA")
        assert (result.returncode, result.stdout) == (5, "")
        assert "uid 65534" in result.stderr
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- the commands


def test_sshd_config_daemon_prints_the_client_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "nxauth.toml"
    write_config(config, tmp_path / "state")
    argv = ["--config", str(config), "sshd-config", "--program", "/usr/bin/nxauth", "--daemon"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    expected = (
        f"    AuthorizedKeysCommand {sys.executable} -I -S {CLIENT.resolve()} --socket "
        f"{tmp_path / 'state' / 'authorized-keys.sock'} --config {config} %u %t %k\n"
    )
    assert expected in out
    assert f"    ForceCommand /usr/bin/nxauth --config {config} login\n" in out
    assert main([*argv, "--socket", "/run/nxauth/k.sock", "--python", "/usr/bin/python3"]) == 0
    assert "AuthorizedKeysCommand /usr/bin/python3 -I -S " in capsys.readouterr().out
    assert main(["--config", str(config), "sshd-config", "--socket", "/run/k.sock"]) == 2
    assert main([*argv, "--python", "python3"]) == 2
    assert "--socket and --python go with --daemon" in capsys.readouterr().err


def test_the_daemon_command_serves_reloads_and_stops(deployed: Path, transport_key: TransportKey) -> None:
    socket_path = deployed.parent / "state" / keyd.DEFAULT_SOCKET_NAME
    process = subprocess.Popen(
        [sys.executable, "-m", "nxauth", "--config", str(deployed), "authorized-keys-daemon"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.02)
        key_type, key_text = key_fields(transport_key)
        result = run_client("--socket", str(socket_path), "--config", str(deployed), "nx", key_type, key_text)
        assert result.returncode == 0 and result.stdout.startswith(OPTIONS)
        process.send_signal(signal.SIGHUP)
        time.sleep(0.2)
        assert run_client("--socket", str(socket_path), "nx", key_type, key_text).stdout.startswith(OPTIONS)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "configuration" in err and "reloaded" in err
    assert "stopped answering" in err
    assert not socket_path.exists()
    assert out == ""


def test_the_daemon_refuses_to_start_on_a_broken_configuration(tmp_path: Path) -> None:
    config = tmp_path / "nxauth.toml"
    config.write_text("state_dir = [broken\n")
    result = subprocess.run(
        [sys.executable, "-m", "nxauth", "--config", str(config), "authorized-keys-daemon"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 3
    assert "configuration error" in result.stderr
