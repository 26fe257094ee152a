"""Logging in through the server host to a node of a cluster
(docs/deploy-cluster.md), for the embedded server.  Needs the ``ssh`` extra.

After stage 2 on the server host, a user granted nodes is told them
(``NX> 210 Nodes: node1 node2``) and asked which (``NX> 211 Node:``; an
empty answer stays on the server host).  The server host connects to that
node's nxauth as the transport account with its own key (``[cluster] key``;
the node trusts it through the shared keystore) and the node's pinned host
key from the registry, never trusting on first use; it logs the user in
there with the password the user already gave, and, if the node refuses
it, asks the client for that node's password (``NX> 103 Password for
node1:``) and the node's own further questions; then it relays the channel
both ways until the node's session ends, whose exit status it returns.
Every outcome is an audit event of the server host (stage 2, method
``session``, the node in ``backend`` as ``node:NAME``): relayed, not
granted (``restricted``), unreachable or refused (``backend-error``), the
node's login refused (``bad-password``)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, final

import asyncssh

from nxauth.codes import Method, Outcome
from nxauth.core.authenticator import runtime_of
from nxauth.integrations.asyncssh_client import ClientChannel, HostKeyMismatch, connect_client
from nxauth.integrations.protocol import TEXTS, AsyncDialogue, ClientGone, Code
from nxauth.integrations.session_command import client_input
from nxauth.model import AuthEvent, Identity, Reason, Secret

if TYPE_CHECKING:
    from nxauth.core.authenticator import Authenticator
    from nxauth.core.cluster import Node

__all__ = ["Relay"]

#: Exit status of a relay that did not reach a node's session.
EXIT_RELAY_FAILED: Final = 1
#: How many of the node's password prompts the client may answer.
NODE_ATTEMPTS: Final = 3
#: The node's further questions (codes, ...) relayed to the client in one login, at most.
NODE_QUESTIONS: Final = 8


class _NodeFailed(Exception):
    """The node closed the channel, answered something the protocol has no
    place for, or asked too many questions; ``detail`` is the audit word."""

    def __init__(self, detail: str = "node-protocol-error") -> None:
        super().__init__(detail)
        self.detail = detail


@final
class Relay:
    """The server host's side: ``auth``'s registry and grants, ``key`` the
    private key it presents to the nodes."""

    def __init__(self, auth: Authenticator, key: Path, *, timeout: float = 30.0) -> None:
        self.auth = auth
        self.key = key
        self.timeout = timeout

    def _emit(self, identity: Identity, node: str, outcome: Outcome, reason: Reason, detail: str) -> None:
        runtime = runtime_of(self.auth)
        event = AuthEvent(
            stage=2,
            outcome=outcome,
            reason=reason,
            method=Method.SESSION,
            username=identity.username[:100],
            peer=identity.peer,
            session_id=identity.session_id,
            backend=f"node:{node}" if node else None,
            detail=detail,
            time=runtime.clock(),
        )
        runtime.emit(event)

    async def _granted(self, identity: Identity) -> list[Node]:
        from nxauth.core.cluster import NodeRegistry

        def read() -> list[Node]:
            registry = NodeRegistry(runtime_of(self.auth).store)
            found = [registry.get(name) for name in registry.granted(identity.username)]
            return [node for node in found if node is not None]

        return await asyncio.get_running_loop().run_in_executor(None, read)

    async def run(
        self, identity: Identity, password: Secret | None, dialogue: AsyncDialogue, process: Any
    ) -> int | None:
        """``None``: the user stays on the server host (no node granted, or
        none chosen); else the exit status of the relayed session (or
        :data:`EXIT_RELAY_FAILED`)."""
        nodes = await self._granted(identity)
        if not nodes:
            return None
        await dialogue.tell(Code.NODES, "Nodes: " + " ".join(n.name for n in nodes))
        choice = (await dialogue.ask(Code.NODE, "Node:", echo=True)).strip()
        if not choice:
            return None
        node = next((n for n in nodes if n.name == choice), None)
        if node is None:
            self._emit(identity, "", Outcome.REFUSED, Reason.RESTRICTED, "node-not-granted")
            await dialogue.tell(Code.NODE_REFUSED, TEXTS[Code.NODE_REFUSED])
            return EXIT_RELAY_FAILED
        try:
            channel = await connect_client(
                node.host,
                node.port,
                client_key=self.key,
                host_key=node.host_key,
                account=self.auth.config.transport.account,
                timeout=self.timeout,
            )
        except HostKeyMismatch:
            return await self._refused(identity, node, dialogue, "node-host-key-mismatch")
        except PermissionError:
            return await self._refused(identity, node, dialogue, "node-refused-transport-key")
        except ConnectionError:
            return await self._refused(identity, node, dialogue, "node-unreachable")
        try:
            if not await self._log_in(identity, node, password, channel, dialogue):
                self._emit(identity, node.name, Outcome.FAILED, Reason.BAD_PASSWORD, "node-refused-login")
                await dialogue.tell(Code.NODE_REFUSED, TEXTS[Code.NODE_REFUSED])
                return EXIT_RELAY_FAILED
            self._emit(identity, node.name, Outcome.ACCEPTED, Reason.OK, "relayed")
            return await _pipe(channel, process)
        except _NodeFailed as exc:
            self._emit(identity, node.name, Outcome.FAILED, Reason.BACKEND_ERROR, exc.detail)
            with contextlib.suppress(ClientGone):
                await dialogue.tell(Code.NODE_REFUSED, TEXTS[Code.NODE_REFUSED])
            return EXIT_RELAY_FAILED
        except TimeoutError:
            self._emit(identity, node.name, Outcome.FAILED, Reason.TIMEOUT, "node-login-timeout")
            with contextlib.suppress(ClientGone):
                await dialogue.tell(Code.NODE_REFUSED, TEXTS[Code.NODE_REFUSED])
            return EXIT_RELAY_FAILED
        except ClientGone:
            self._emit(identity, node.name, Outcome.FAILED, Reason.CLIENT_GONE, "client-left-during-relay")
            return EXIT_RELAY_FAILED
        finally:
            await channel.close()  # the session piped has ended, or the node failed: nothing to wait for

    async def _refused(self, identity: Identity, node: Node, dialogue: AsyncDialogue, detail: str) -> int:
        self._emit(identity, node.name, Outcome.FAILED, Reason.BACKEND_ERROR, detail)
        await dialogue.tell(Code.NODE_REFUSED, TEXTS[Code.NODE_REFUSED])
        return EXIT_RELAY_FAILED

    async def _log_in(
        self, identity: Identity, node: Node, password: Secret | None, channel: ClientChannel, dialogue: AsyncDialogue
    ) -> bool:
        """The node's exchange, as its client: the username, the password
        already given, then the client's answers to the node's questions."""
        secret = password
        prompts = questions = 0
        async with asyncio.timeout(self.timeout):
            while True:
                raw = await channel.readline()
                if not raw:
                    raise _NodeFailed
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                code, _, text = line.removeprefix("NX> ").partition(" ")
                if code in {"100", "401"}:
                    continue
                if code == "101":
                    await channel.write(identity.username.encode() + b"\n")
                elif code == "102":
                    prompts += 1
                    if prompts > NODE_ATTEMPTS:
                        return False
                    if secret is None:  # the node refused the password given first: ask for the node's
                        answer = await dialogue.ask(Code.SECRET_QUESTION, f"Password for {node.name}:", echo=False)
                        secret = Secret(answer)
                    await channel.write(secret.reveal().encode("utf-8", "surrogatepass") + b"\n")
                    secret = None
                elif code in ("103", "104"):
                    questions += 1
                    if questions > NODE_QUESTIONS:  # a node asking forever: never spam the client
                        raise _NodeFailed("node-too-many-questions")
                    answer = await dialogue.ask(Code(int(code)), _clean(text), echo=code == "104")
                    await channel.write(answer.encode("utf-8", "surrogatepass") + b"\n")
                elif code == "200":
                    return True
                elif code in ("403", "408", "400", "500", "999"):
                    return False
                else:
                    raise _NodeFailed


def _clean(text: str) -> str:
    return "".join(ch for ch in text if ch.isprintable())[:200]


async def _pipe(channel: ClientChannel, process: asyncssh.SSHServerProcess[bytes]) -> int:
    """Both ways until the node's session ends; its exit status."""

    async def upstream() -> None:
        with contextlib.suppress(OSError, asyncssh.Error):
            async for data in client_input(process):
                await channel.write(data)
        channel.close_input()

    feeding = asyncio.ensure_future(upstream())
    try:
        while chunk := await channel.read(65536):
            try:
                process.stdout.write(chunk)
                await process.stdout.drain()
            except (OSError, asyncssh.Error):
                break
    finally:
        feeding.cancel()
    return await channel.wait()
