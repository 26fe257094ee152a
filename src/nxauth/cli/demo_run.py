"""``nxauth demo``: real two-stage logins through the embedded SSH server.

In a temporary state directory: a transport key pair is generated as
``nxauth keygen`` makes it (the private key in OpenSSH format, mode 0600; the
public half registered in the keystore for the transport account with
``restrict`` and the forced command); a demo user is added to the password
database (and so to the users allowlist); the embedded SSH server starts on
127.0.0.1 on a free port with a fresh host key.  Then OpenSSH's ``ssh``
client (asyncssh's client when ``ssh`` is not installed) logs in four times,
speaking the stage-2 line protocol on its standard input and output:

1. the right key and the right password: accepted, and the session
   handler's greeting comes back over the channel;
2. the right key and a wrong password: denied at stage 2;
3. the right key and an unknown user: denied at stage 2;
4. a key that is not listed: SSH refuses it (stage 1), so the client never
   reaches stage 2.

The demo prints each outcome and the audit trail, and succeeds only if
every case ended as it should.
"""

from __future__ import annotations

import asyncio
import errno
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from nxauth.codes import Outcome
from nxauth.core.audit import format_event
from nxauth.core.authenticator import Authenticator
from nxauth.files import PRIVATE_MODE, PUBLIC_MODE, make_dirs, read_small_text, write_file
from nxauth.model import AuthEvent, Identity, Reason
from nxauth.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from nxauth.integrations.asyncssh import NxauthServer

__all__ = ["run_demo"]

CLIENTS = ("auto", "ssh", "asyncssh")
READ_TIMEOUT = 20.0


class _Trail:
    """Keeps the audit events to print them."""

    def __init__(self) -> None:
        self.events: list[AuthEvent] = []

    @hookimpl
    def nxauth_auth_event(self, event: AuthEvent) -> None:
        self.events.append(event)


class _Client(Protocol):
    async def readline(self) -> bytes: ...
    async def write(self, data: bytes) -> None: ...
    def close_input(self) -> None: ...
    async def wait(self) -> int: ...


class _SshClient:
    """OpenSSH's ``ssh`` as a subprocess: the line protocol on its stdin/stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stderr = ""

    @classmethod
    async def start(cls, ssh: str, key: Path, port: int, known_hosts: Path, account: str) -> _SshClient:
        process = await asyncio.create_subprocess_exec(
            ssh, "-F", "/dev/null", "-T", "-i", str(key), "-p", str(port),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            f"{account}@127.0.0.1",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(process)

    async def readline(self) -> bytes:
        assert self.process.stdout is not None
        return await self.process.stdout.readline()

    async def write(self, data: bytes) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(data)
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def close_input(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    async def wait(self) -> int:
        assert self.process.stderr is not None
        self.stderr = (await self.process.stderr.read()).decode("utf-8", "replace").strip()
        return await self.process.wait()


class _RefusedClient:
    """An asyncssh client whose connection was refused (the key, at stage 1)."""

    def __init__(self, message: str) -> None:
        self.stderr = message

    async def readline(self) -> bytes:
        return b""

    async def write(self, data: bytes) -> None:
        return None

    def close_input(self) -> None:
        return None

    async def wait(self) -> int:
        return 255


@dataclass
class _Case:
    title: str
    key: Path
    username: str
    password: str
    expect: str  # "accepted", "stage2", "stage1"
    transcript: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    status: int = -1
    stderr: str = ""
    asked_user: bool = False
    authenticated: bool = False
    denied_line: str = ""
    events: list[AuthEvent] = field(default_factory=list)
    outcome: str = ""
    ok: bool = False


def _write_private(path: Path, data: bytes) -> None:
    """Mode 0600 from the first byte, as ``nxauth keygen`` writes it."""
    if not write_file(path, data, PRIVATE_MODE):
        raise FileExistsError(errno.EEXIST, "exists", str(path))


def _keypair(path: Path, comment: str) -> str:
    """Write an Ed25519 key pair (``path``, ``path.pub``); return the public line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    _write_private(path, pem)
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = f"{public.decode()} {comment}"
    write_file(path.with_name(path.name + ".pub"), (line + "\n").encode(), PUBLIC_MODE, replace=True)
    return line


def _ssh_version(ssh: str) -> str:
    try:
        result = subprocess.run([ssh, "-V"], capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
    except OSError:
        return "unknown version"
    return (result.stderr or result.stdout).strip().split(",")[0] or "unknown version"


def run_demo(out: TextIO, *, state_dir: Path | None = None, client: str = "auto") -> bool:
    """Run the demo, writing to ``out``; True when every case ended as it
    should.  ``client``: ``auto`` (``ssh`` when installed, else asyncssh's
    client), ``ssh`` or ``asyncssh``."""
    if client not in CLIENTS:
        raise ValueError(f"client must be one of {', '.join(CLIENTS)}")
    try:
        from nxauth.integrations import asyncssh as _embedded  # noqa: F401 - is the ssh extra there?
    except ImportError as exc:
        out.write(f"nxauth demo needs the embedded SSH server: pip install 'nx-twostage-auth[ssh]' ({exc})\n")
        return False
    ssh = shutil.which("ssh") if client in ("auto", "ssh") else None
    if client == "ssh" and ssh is None:
        out.write("nxauth demo: the OpenSSH client (ssh) is not installed\n")
        return False
    with tempfile.TemporaryDirectory(prefix="nxauth-demo-") as tmp:
        state = state_dir or Path(tmp)
        return asyncio.run(_demo(out, state, ssh))


async def _demo(out: TextIO, state: Path, ssh: str | None) -> bool:
    from nxauth.backends.hashing import PasswordHasher
    from nxauth.backends.keystore import KeyStore
    from nxauth.backends.userdb import UserDatabase
    from nxauth.integrations.asyncssh import ensure_host_key, start_server
    from nxauth.keys.authorized_keys import AuthorizedKey, KeyOptions
    from nxauth.keys.formats import parse_public_key
    from nxauth.model import Secret

    started = time.monotonic()
    write: Callable[[str], object] = out.write
    sink = _Trail()
    make_dirs(state)
    auth = Authenticator(
        {"state_dir": str(state), "audit": {"log": False, "jsonl": str(state / "audit.jsonl")}},
        plugins=[sink],
        entry_points=False,
    )
    with auth:
        config = auth.config
        account = config.transport.account
        write(f"nxauth demo: embedded defaults in {state}\n")
        transport_path = state / "transport_ed25519"
        public = parse_public_key(_keypair(transport_path, "nxauth-demo-transport"))
        options = KeyOptions(restrict=True, pty=True, command=config.transport.forced_command)
        KeyStore(auth.store).add(account, AuthorizedKey(public, options))
        write(f"  transport key  {transport_path} ({public.describe()}), registered for account {account}\n")
        stranger_path = state / "stranger_ed25519"
        stranger = parse_public_key(_keypair(stranger_path, "not-in-the-keystore"))
        write(f"  stranger key   {stranger_path} ({stranger.fingerprint}), not registered\n")
        password = secrets.token_urlsafe(12)
        users = UserDatabase(auth.store, case=config.usernames.case)
        users.add("demo", password_hash=PasswordHasher().hash(Secret(password)), comment="nxauth demo user")
        write("  user           demo, added to the password database and the users allowlist\n")
        write(
            f"  stacks         auth: {', '.join(e.use for e in config.auth)}; "
            f"account: {', '.join(e.use for e in config.account)}\n"
        )

        host_key = ensure_host_key(config.host_key_path)
        host_public = read_small_text(host_key.with_name(host_key.name + ".pub")).split()
        server = await start_server(auth, _greet, host_keys=[host_key], host="127.0.0.1", port=0, login_timeout=30)
        async with server:
            known_hosts = state / "known_hosts"
            line = f"[127.0.0.1]:{server.port} {host_public[0]} {host_public[1]}\n"
            write_file(known_hosts, line.encode(), PUBLIC_MODE, replace=True)
            write(f"  server         embedded SSH server on 127.0.0.1 port {server.port}\n")
            if ssh is not None:
                write(f"  client         OpenSSH ssh ({ssh}, {_ssh_version(ssh)}), host key checked\n\n")
            else:
                write("  client         asyncssh's SSH client (OpenSSH ssh is not installed), host key checked\n\n")

            cases = [
                _Case("right key, right password", transport_path, "demo", password, "accepted"),
                _Case("right key, wrong password", transport_path, "demo", password + "x", "stage2"),
                _Case("right key, unknown user", transport_path, "nobody", password, "stage2"),
                _Case("unlisted key", stranger_path, "demo", password, "stage1"),
            ]
            target = _Target(server, ssh, known_hosts, account, " ".join(host_public[:2]))
            for number, case in enumerate(cases, 1):
                before = len(sink.events)
                await _run_case(case, target)
                case.events = sink.events[before:]
                _judge(case)
                mark = "ok  " if case.ok else "FAIL"
                write(f"  [{mark}] {number}. {case.title:<26} {case.outcome}\n")
                if number == 1:
                    for line in case.transcript:
                        write(f"           | {line}\n")

        write("\naudit trail (the lines the nxauth.audit logger writes; also in audit.jsonl):\n")
        for event in sink.events:
            write(f"  {format_event(event)}\n")
        jsonl = read_small_text(state / "audit.jsonl").splitlines()
        clean = all(password not in line for line in jsonl)
        shown = "yes" if clean else "NO"
        write(f"\n{len(jsonl)} events in {state / 'audit.jsonl'}; the password never appears: {shown}\n")
        ok = all(case.ok for case in cases) and clean
        elapsed = time.monotonic() - started
        write(f"demo: every case ended as it should ({elapsed:.1f} s)\n" if ok else "demo: FAILED\n")
        return ok


async def _greet(identity: Identity, process: Any) -> int:
    """The demo's session handler: runs only after stage 2 succeeded."""
    text = f"hello {identity.username} from nxauth (backend {identity.backend}, session {identity.session_id})\n"
    process.stdout.write(text.encode())
    return 0


@dataclass(frozen=True)
class _Target:
    server: NxauthServer
    ssh: str | None  # None: asyncssh's client
    known_hosts: Path
    account: str
    host_key: str


async def _open(case: _Case, target: _Target) -> _Client:
    port = target.server.port
    if target.ssh is not None:
        return await _SshClient.start(target.ssh, case.key, port, target.known_hosts, target.account)
    from nxauth.integrations.asyncssh_client import connect_client

    try:
        return await connect_client(
            "127.0.0.1", port, client_key=case.key, host_key=target.host_key, account=target.account
        )
    except PermissionError as exc:
        return _RefusedClient(str(exc))


async def _run_case(case: _Case, target: _Target) -> None:
    server = target.server
    client = await _open(case, target)
    try:
        await asyncio.wait_for(_converse(case, client), READ_TIMEOUT)
    except TimeoutError:
        case.transcript.append("(no answer: gave up)")
        client.close_input()
    case.status = await asyncio.wait_for(client.wait(), READ_TIMEOUT)
    case.stderr = getattr(client, "stderr", "")
    deadline = time.monotonic() + 5  # the server finishes the connection (its session's last event)
    while server.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def _converse(case: _Case, client: _Client) -> None:
    """The client's side of the line protocol: one username and password;
    after a denial it gives up (closes its input)."""
    while line := await client.readline():
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if not text.startswith("NX> "):
            case.output.append(text)
            case.transcript.append(text)
            continue
        case.transcript.append(text)
        code = text[4:7]
        if code == "101":
            if case.asked_user:
                client.close_input()
                continue
            case.asked_user = True
            await client.write(case.username.encode() + b"\n")
            case.transcript.append(case.username)
        elif code == "102":
            await client.write(case.password.encode() + b"\n")
            case.transcript.append("(password, not shown)")
        elif code == "200":
            case.authenticated = True
        elif code in ("401", "403"):
            case.denied_line = text


def _judge(case: _Case) -> None:
    stage2 = [e for e in case.events if e.stage == 2]
    accepted2 = [e for e in stage2 if e.accepted]
    if case.expect == "accepted":
        greeting = next((line for line in case.output if line.startswith("hello ")), "")
        case.ok = case.status == 0 and case.authenticated and bool(greeting) and len(accepted2) == 1
        case.outcome = f"accepted; the session handler said: {greeting or '(nothing)'}"
    elif case.expect == "stage2":
        reasons = [e.reason.value for e in stage2 if e.outcome is Outcome.FAILED]
        expected = Reason.BAD_PASSWORD if case.username == "demo" else Reason.UNKNOWN_USER
        case.ok = (
            case.status != 0
            and not case.authenticated
            and bool(case.denied_line)
            and expected.value in reasons
            and not accepted2
        )
        case.outcome = f"denied at stage 2 ({case.denied_line or 'no denial line'}; audit: {', '.join(reasons)})"
    else:
        reasons = [e.reason.value for e in case.events if e.stage == 1 and e.outcome is Outcome.FAILED]
        case.ok = (
            case.status == 255
            and not case.asked_user
            and not stage2
            and Reason.UNKNOWN_KEY.value in reasons
            and not any(e.accepted for e in case.events)
        )
        refused = case.stderr.splitlines()[-1] if case.stderr else f"exit {case.status}"
        case.outcome = f"refused at stage 1 ({refused}); never reached stage 2"
    case.outcome += f"; client exit {case.status}"
