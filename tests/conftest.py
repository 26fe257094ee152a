"""Shared fixtures for the core tests: an authenticator on a temporary state
directory, a transport key pair made with ``cryptography``, and an in-memory
key source."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import nxauth
from nxauth.testing import MemoryBackend, RecordingSink
from tests.support.keys import PEER, ListKeySource, TransportKey


@pytest.fixture
def transport_key() -> TransportKey:
    return TransportKey()


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def make_auth(
    tmp_path: Path, transport_key: TransportKey, sink: RecordingSink
) -> Iterator[Callable[..., nxauth.Authenticator]]:
    """Build an authenticator: key source ``keys`` holding ``transport_key``,
    backend ``mem`` (alice/wonderland, bob/builder) in both stacks, unless the
    mapping says otherwise."""
    made: list[nxauth.Authenticator] = []

    def build(
        mapping: Mapping[str, Any] | None = None,
        *,
        backends: Mapping[str, object] | None = None,
        plugins: tuple[object, ...] = (),
        **kwargs: Any,
    ) -> nxauth.Authenticator:
        data: dict[str, Any] = {
            "state_dir": str(tmp_path / "state"),
            "transport": {"key_sources": ["keys"]},
            "auth": [{"use": "mem"}],
            "account": [{"use": "mem"}],
        }
        data.update(mapping or {})
        given: dict[str, object] = {
            "keys": ListKeySource(transport_key.line),
            "mem": MemoryBackend({"alice": "wonderland", "bob": "builder"}, groups={"alice": ["staff"]}),
        }
        given.update(backends or {})
        auth = nxauth.Authenticator(data, backends=given, plugins=(sink, *plugins), entry_points=False, **kwargs)
        made.append(auth)
        return auth

    yield build
    for auth in made:
        auth.close()


@pytest.fixture
def granted(
    make_auth: Callable[..., nxauth.Authenticator], transport_key: TransportKey
) -> Callable[..., nxauth.Session]:
    """Open a session on ``auth`` and pass stage 1 with the transport key."""

    def open_granted(auth: nxauth.Authenticator, peer: tuple[str, int] = PEER) -> nxauth.Session:
        session = auth.open_session(peer=peer)
        session.check_transport_key("nx", transport_key.line)
        return session

    return open_granted
