"""Shared fixtures for the core tests: an authenticator on a temporary state
directory, a transport key pair made with ``cryptography``, an in-memory
key source, and the store contract: ``store_kind`` runs a test once on the
embedded SQLite store and once on PostgreSQL (a private cluster per test
session, a schema per test), ``any_store`` is that store, and ``make_auth``
uses it whenever the test asks for ``store_kind``."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import nxauth
from nxauth.config import parse_config
from nxauth.store import open_store
from nxauth.store.protocol import Store
from nxauth.testing import MemoryBackend, RecordingSink
from tests.support.keys import PEER, ListKeySource, TransportKey
from tests.support.postgres import Cluster, server_bin

STORE_KINDS = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One private PostgreSQL cluster for the test session (Debian's
    binaries, an unprivileged account when root, a free loopback port)."""
    bindir = server_bin()
    if bindir is None:
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    cluster = Cluster(bindir)
    try:
        cluster.start()
    except (OSError, subprocess.SubprocessError) as exc:
        cluster.destroy()
        pytest.fail(f"cannot start PostgreSQL: {exc}")
    yield cluster
    cluster.destroy()


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_section(store_kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The ``[store]`` table of the store under test ({} for SQLite)."""
    if store_kind == "sqlite":
        return {}
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    return cluster.store_options(cluster.new_schema())


@pytest.fixture
def any_store(store_section: dict[str, Any], tmp_path: Path) -> Iterator[Store]:
    """A new, empty store of the kind under test."""
    store = open_store(parse_config({"state_dir": str(tmp_path / "state"), "store": store_section}, source="test"))
    yield store
    store.close()


@pytest.fixture
def transport_key() -> TransportKey:
    return TransportKey()


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def make_auth(
    tmp_path: Path, transport_key: TransportKey, sink: RecordingSink, request: pytest.FixtureRequest
) -> Iterator[Callable[..., nxauth.Authenticator]]:
    """Build an authenticator: key source ``keys`` holding ``transport_key``,
    backend ``mem`` (alice/wonderland, bob/builder) in both stacks, unless the
    mapping says otherwise; on the store under test when the test asks for
    ``store_kind``."""
    made: list[nxauth.Authenticator] = []
    store = request.getfixturevalue("store_section") if "store_kind" in request.fixturenames else {}

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
        if store:
            data["store"] = store
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
