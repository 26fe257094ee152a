"""Transport keys and in-memory key sources for the tests, and an event loop in a thread."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

PEER = ("198.51.100.7", 52100)
T = TypeVar("T")


class TransportKey:
    """An Ed25519 key pair in OpenSSH formats."""

    def __init__(self, comment: str = "test@nxauth") -> None:
        self.private = ed25519.Ed25519PrivateKey.generate()
        raw = self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        name = b"ssh-ed25519"
        self.blob = len(name).to_bytes(4, "big") + name + len(raw).to_bytes(4, "big") + raw
        self.line = f"ssh-ed25519 {base64.b64encode(self.blob).decode()} {comment}"

    def private_openssh(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )


class ListKeySource:
    """A key source over authorized_keys lines held in memory (linear lookup)."""

    def __init__(self, *lines: str) -> None:
        self.lines = list(lines)
        self.calls = 0

    def authorized_keys(self, account: str) -> list[Any]:
        from nxauth.keys.authorized_keys import parse_authorized_key

        self.calls += 1
        entries = [parse_authorized_key(line) for line in self.lines]
        return [entry for entry in entries if entry is not None]


class LoopThread:
    """An event loop in a thread: the server runs there, the tests drive
    the real ssh client synchronously."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
