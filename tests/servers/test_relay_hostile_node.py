"""The server host's relay against a hostile or broken node: a real SSH
server (asyncssh) that accepts the server host's key and then answers
outside the protocol, never answers, hangs up, or asks questions forever.
Each ends in ``NX> 411`` for the client and an audit event with its own
detail word, within the relay's timeout; the password goes nowhere else."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

import nxauth
from nxauth.core.cluster import NodeRegistry
from nxauth.integrations.protocol import Code
from nxauth.integrations.relay import NODE_QUESTIONS, Relay
from nxauth.testing import RecordingSink
from tests.support.keys import TransportKey

Behaviour = Callable[[asyncssh.SSHServerProcess[bytes]], Awaitable[None]]


class Dialogue:
    """The client's side, scripted: answers in order, every line recorded."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.lines: list[str] = []

    async def ask(self, code: Code, prompt: str, *, echo: bool) -> str:
        self.lines.append(f"NX> {int(code)} {prompt}")
        return self.answers.pop(0) if self.answers else ""

    async def tell(self, code: Code, text: str) -> None:
        self.lines.append(f"NX> {int(code)} {text}")


class AcceptAny(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return True


async def garbage(process: asyncssh.SSHServerProcess[bytes]) -> None:
    process.stdout.write(b"NX> 100 nxauth\nhello, I am not nxauth\n")
    await asyncio.sleep(5)


async def silent(process: asyncssh.SSHServerProcess[bytes]) -> None:
    await asyncio.sleep(30)


async def hang_up(process: asyncssh.SSHServerProcess[bytes]) -> None:
    process.exit(0)


async def questions_forever(process: asyncssh.SSHServerProcess[bytes]) -> None:
    process.stdout.write(b"NX> 100 nxauth\n")
    while True:  # (ends at EOF: a loop that never waits would stall the test's one event loop)
        process.stdout.write(b"NX> 104 \x1b[2JWhat\x07 now?\n")
        if not await process.stdin.readline():
            return


async def refuses_everything(process: asyncssh.SSHServerProcess[bytes]) -> None:
    process.stdout.write(b"NX> 100 nxauth\n")
    while True:
        process.stdout.write(b"NX> 101 User:\n")
        if not await process.stdin.readline():
            return
        process.stdout.write(b"NX> 102 Password:\n")
        if not await process.stdin.readline():
            return
        process.stdout.write(b"NX> 401 Authentication failed\n")


@pytest.fixture
def hostile(
    make_auth: Callable[..., nxauth.Authenticator], granted: Callable[..., nxauth.Session], tmp_path: Path
) -> Iterator[Callable[[Behaviour], tuple[Relay, nxauth.Identity, RecordingSink]]]:
    servers: list[Any] = []
    loop = asyncio.new_event_loop()

    def start(behaviour: Behaviour) -> tuple[Relay, nxauth.Identity, RecordingSink]:
        sink = RecordingSink()
        auth = make_auth(plugins=(sink,))
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        server = loop.run_until_complete(
            asyncssh.create_server(
                AcceptAny, "127.0.0.1", 0, server_host_keys=[host_key], process_factory=behaviour, encoding=None
            )
        )
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        registry = NodeRegistry(auth.store)
        registry.add("evil", f"127.0.0.1:{port}", host_key.export_public_key("openssh").decode())
        registry.grant("alice", ["evil"])
        key = tmp_path / f"node_key{len(servers)}"
        key.write_bytes(TransportKey().private_openssh())
        key.chmod(0o600)
        identity = granted(auth).login("alice", "wonderland")
        return Relay(auth, key, timeout=2.0), identity, sink

    start.loop = loop  # type: ignore[attr-defined]
    yield start  # type: ignore[misc]
    for server in servers:
        server.close()
    loop.close()


@pytest.mark.parametrize(
    ("behaviour", "answers", "detail"),
    [
        (garbage, (), "node-protocol-error"),
        (silent, (), "node-login-timeout"),
        (hang_up, (), "node-protocol-error"),
        (questions_forever, ("x",) * 100, "node-too-many-questions"),
        (refuses_everything, ("p1", "p2", "p3", "p4"), "node-refused-login"),
    ],
    ids=["garbage", "silent", "hang-up", "questions-forever", "refuses-everything"],
)
def test_a_hostile_node_ends_in_411_and_an_audit_event(
    hostile: Any, behaviour: Behaviour, answers: tuple[str, ...], detail: str
) -> None:
    relay, identity, sink = hostile(behaviour)
    dialogue = Dialogue("evil", *answers)
    status = hostile.loop.run_until_complete(
        asyncio.wait_for(relay.run(identity, nxauth.Secret("wonderland"), dialogue, None), 20)
    )
    assert status == 1
    assert dialogue.lines[-1] == "NX> 411 Node refused"
    relayed = [e for e in sink.events if e.method == "session" and e.backend == "node:evil"]
    assert [e.detail for e in relayed] == [detail]
    assert all("wonderland" not in line for line in dialogue.lines)
    assert all(line.isprintable() for line in dialogue.lines), "a node's control characters reach the client"
    questions = [line for line in dialogue.lines if line.startswith(("NX> 103", "NX> 104"))]
    assert len(questions) <= NODE_QUESTIONS
    for line in dialogue.lines:  # a node's prompt reaches the client printable, cut
        assert line.isprintable() and len(line) < 260
