"""Stage 1 has one owner (nxauth.core.stage1): every entry point decides and
audits alike.

One table of cases, each run through every entry point, each one real:

* ``session``: :meth:`Session.check_transport_key` (a host's SSH layer);
* ``authorized-keys``: ``authorized_keys_line`` on the lean path
  (:func:`lean_sources`, built-in key sources, no plugin manager);
* ``authorized-keys/plugin``: the same function on the full-Authenticator
  path (the file key source is a plugin's kind);
* ``key daemon``: ``nxauth authorized-keys-daemon`` over a real UNIX socket;
* ``embedded server``: the asyncssh server's key probe, with asyncssh's
  client on a real TCP connection.

Every entry point must reach the same decision and emit the same stage-1
event (every field but the session id and the time; the peer is checked
against the one the entry point was given).  sshd's entry points name
themselves in the event's detail (``authorized-keys``, nxauth's own word,
a column of the table below).  Where an entry point legitimately decides
otherwise, the case says so in ``differs``, with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest

import nxauth
from nxauth.backends.keystore import KeyStore
from nxauth.config import load_config
from nxauth.core.authenticator import runtime_of
from nxauth.integrations import keyd_client
from nxauth.integrations.asyncssh import NxauthServer, ensure_host_key, start_server
from nxauth.integrations.keyd import AuthorizedKeysDaemon, KeyAnswerer
from nxauth.integrations.keyd_client import encode_request
from nxauth.integrations.openssh import authorized_keys_line, emit_to, lean_sources
from nxauth.keys.authorized_keys import parse_authorized_key, read_authorized_keys
from nxauth.model import UNKNOWN_PEER, AuthEvent, Peer, Reason
from nxauth.store.sqlite import SqliteStore
from nxauth.testing import RecordingSink
from tests.support.keys import LoopThread

SESSION = "session"
LEAN = "authorized-keys"
PLUGIN = "authorized-keys/plugin"
DAEMON = "key daemon"
EMBEDDED = "embedded server"
ENTRY_POINTS = (SESSION, LEAN, PLUGIN, DAEMON, EMBEDDED)
SSHD = (LEAN, PLUGIN, DAEMON)
#: how each entry point is named in its events' detail (chosen by nxauth, never by a backend)
LABEL = {SESSION: "", LEAN: "authorized-keys", PLUGIN: "authorized-keys", DAEMON: "authorized-keys", EMBEDDED: ""}

PEER_HOST = "127.0.0.1"  # the embedded server's clients come from there: every entry point gets the same peer
PEER_PORT = 4000


@dataclass(frozen=True)
class Expect:
    """A decision: ``reason`` (``OK``: granted; ``None``: no stage-1
    decision at all, the SSH layer refused before asking nxauth), and the key
    source the event names.  ``why`` says why an entry point differs."""

    reason: Reason | None
    backend: str | None = None
    why: str = ""

    @property
    def accepted(self) -> bool:
        return self.reason is Reason.OK


def ok(backend: str = "keys", why: str = "") -> Expect:
    return Expect(Reason.OK, backend, why)


def no(reason: Reason, backend: str | None = "keys", why: str = "") -> Expect:
    return Expect(reason, backend, why)


@dataclass(frozen=True)
class Cert:
    """A user certificate over the case's key, from the case's own CA."""

    principals: tuple[str, ...] = ("nx",)
    force_command: str | None = None
    source_address: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Case:
    id: str
    #: the key source entry ({key}: the case's public key, {ca}: its CA's); None: no entry
    entry: str | None
    expect: Expect
    #: ed25519, ecdsa, rsa1024, sk (a security key: presented, never signed), malformed
    kind: str = "ed25519"
    cert: Cert | None = None
    #: where the entry is: the authorized_keys file (source "keys") or the keystore;
    #: "removed": in the keystore when the entry points start, removed before the case runs
    where: str = "file"
    account: str = "nx"
    #: False: the entry point is not told the peer (sshd 9 gives its AuthorizedKeysCommand no address)
    peer_known: bool = True
    differs: Mapping[str, Expect] = field(default_factory=dict)


def not_asked(why: str) -> Expect:
    return Expect(None, None, why)


NOT_ASKED_CERT = not_asked("asyncssh asks validate_ca_key, which refuses: certificates are no way in there")
NOT_ASKED_FORMAT = not_asked("asyncssh cannot decode the key: it never reaches stage 1")

CASES = [
    Case("file key", 'restrict,command="nxauth login" {key}', ok()),
    Case("keystore key", "restrict,pty {key}", ok("keystore"), where="keystore"),
    Case("expired key", 'expiry-time="200001010000" {key}', no(Reason.KEY_EXPIRED)),
    Case("from= allows", f'from="10.0.0.0/8,{PEER_HOST}" {{key}}', ok()),
    Case("from= refuses", 'from="10.0.0.0/8,192.0.2.*" {key}', no(Reason.SOURCE_REFUSED)),
    Case(
        "from=, peer not given",
        f'from="{PEER_HOST}" {{key}}',
        no(Reason.SOURCE_REFUSED),
        peer_known=False,
        differs={
            **dict.fromkeys(SSHD, ok(why="sshd enforces from= on the printed line (defer_source)")),
            EMBEDDED: ok(why="the embedded server always knows its peer"),
        },
    ),
    Case(
        "certificate, principal matches",
        "cert-authority {ca}",
        ok(),
        cert=Cert(),
        differs={EMBEDDED: NOT_ASKED_CERT},
    ),
    Case(
        "certificate, principals= matches",
        'cert-authority,principals="ops,nx-clients" {ca}',
        ok(),
        cert=Cert(principals=("nx-clients",)),
        differs={EMBEDDED: NOT_ASKED_CERT},
    ),
    Case(
        "certificate, no principal matches",
        "cert-authority {ca}",
        no(Reason.WRONG_ACCOUNT),
        cert=Cert(principals=("alice", "root")),
        differs={EMBEDDED: NOT_ASKED_CERT},
    ),
    Case(
        "certificate force-command",
        "cert-authority {ca}",
        ok(),
        cert=Cert(force_command="nxauth login"),
        differs={EMBEDDED: NOT_ASKED_CERT},
    ),
    Case(
        "certificate force-command against command=",
        'cert-authority,command="other" {ca}',
        no(Reason.CERTIFICATE_INVALID),
        cert=Cert(force_command="nxauth login"),
        differs={EMBEDDED: NOT_ASKED_CERT},
    ),
    Case(
        "certificate source-address allows",
        "cert-authority {ca}",
        ok(),
        cert=Cert(source_address=("192.0.2.0/24", f"{PEER_HOST}/32")),
        differs={EMBEDDED: NOT_ASKED_CERT},
    ),
    Case(
        "certificate source-address refuses",
        "cert-authority {ca}",
        no(Reason.SOURCE_REFUSED),
        cert=Cert(source_address=("10.0.0.0/8",)),
        differs={EMBEDDED: NOT_ASKED_CERT},
    ),
    Case("key type refused", "{key}", no(Reason.KEY_TYPE_REFUSED), kind="ecdsa"),
    Case("RSA too small", "{key}", no(Reason.KEY_TOO_WEAK), kind="rsa1024"),
    Case("unknown key", None, no(Reason.UNKNOWN_KEY, None)),
    Case("removed from the keystore", "restrict {key}", no(Reason.UNKNOWN_KEY, None), where="removed"),
    Case("wrong account", "{key}", no(Reason.WRONG_ACCOUNT, None), account="root"),
    Case("malformed key", None, no(Reason.KEY_FORMAT, None), kind="malformed", differs={EMBEDDED: NOT_ASKED_FORMAT}),
    Case(
        "verify-required security key",
        "verify-required {key}",
        ok(why="the grant's options carry verify-required: the host's SSH layer (sshd: the printed line) enforces it"),
        kind="sk",
        differs={
            EMBEDDED: no(
                Reason.KEY_TYPE_REFUSED,
                why="asyncssh does not hand over the signature's flags: refused, fail closed (can_verify_user=False)",
            )
        },
    ),
]


# ---------------------------------------------------------------- keys


def _ssh_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


class PresentOnly(asyncssh.SSHKeyPair):
    """A client key that asyncssh's client offers (the query) but cannot
    sign with: a security key without its device, or a malformed blob."""

    def __init__(self, algorithm: bytes, blob: bytes) -> None:
        super().__init__(algorithm, algorithm, [algorithm], [algorithm], blob, None)

    def sign(self, data: bytes) -> bytes:
        raise ValueError("no private key")

    async def sign_async(self, data: bytes) -> bytes:
        raise ValueError("no private key")


@dataclass
class Presented:
    """What a case's client holds: the line sshd and hosts are given
    (``type base64``), the client key for asyncssh, the key source entry."""

    line: str
    client: asyncssh.SSHKeyPair
    entry: str | None


def make_presented(case: Case) -> Presented:
    if case.kind == "malformed":
        blob = _ssh_string(b"ssh-ed25519") + _ssh_string(b"not a key")
        return Presented(f"ssh-ed25519 {base64.b64encode(blob).decode()}", PresentOnly(b"ssh-ed25519", blob), None)
    if case.kind == "sk":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        raw = (
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
        algorithm = b"sk-ssh-ed25519@openssh.com"
        blob = _ssh_string(algorithm) + _ssh_string(raw) + _ssh_string(b"ssh:")
        line = f"{algorithm.decode()} {base64.b64encode(blob).decode()}"
        return Presented(line, PresentOnly(algorithm, blob), (case.entry or "").format(key=line))
    algorithm, size = {"ed25519": ("ssh-ed25519", None), "ecdsa": ("ecdsa-sha2-nistp256", None)}.get(
        case.kind, ("ssh-rsa", 1024)
    )
    key = asyncssh.generate_private_key(algorithm, key_size=size) if size else asyncssh.generate_private_key(algorithm)
    public = " ".join(key.export_public_key("openssh").decode().split()[:2])
    if case.cert is None:
        entry = case.entry.format(key=public) if case.entry is not None else None
        return Presented(public, asyncssh.load_keypairs([key])[0], entry)
    ca = asyncssh.generate_private_key("ssh-ed25519")
    cert = ca.generate_user_certificate(
        key,
        f"parity {case.id}",
        principals=list(case.cert.principals),
        force_command=case.cert.force_command,
        source_address=list(case.cert.source_address) if case.cert.source_address else None,
    )
    line = " ".join(cert.export_certificate("openssh").decode().split()[:2])
    ca_public = " ".join(ca.export_public_key("openssh").decode().split()[:2])
    assert case.entry is not None
    return Presented(line, asyncssh.load_keypairs([(key, cert)])[0], case.entry.format(ca=ca_public))


# ---------------------------------------------------------------- the deployment


class PluginFileKeys:
    """A third-party key source (a plain list, no index) over the same file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def authorized_keys(self, account: str) -> list[Any]:
        return read_authorized_keys(self.path)[0]


class FilePlugin:
    @nxauth.hookimpl
    def nxauth_register_backends(self, registry: Any) -> None:
        registry.add("parity_file", lambda context: PluginFileKeys(context.path(context.options.string("path"))))


@dataclass
class Run:
    accepted: bool
    events: list[AuthEvent]
    #: the peer host the entry point was told ("UNKNOWN" when none)
    peer_host: str


class Deployment:
    """One configuration, its key sources holding every case's entry, and
    every entry point running on it."""

    def __init__(self, root: Path, loop: LoopThread) -> None:
        self.root = root
        self.loop = loop
        self.sink = RecordingSink()
        self.presented = {case.id: make_presented(case) for case in CASES}
        state = root / "state"
        keys = root / "authorized_keys"
        lines = [p.entry for c in CASES if c.where == "file" and (p := self.presented[c.id]).entry is not None]
        keys.write_text("".join(f"{line}\n" for line in lines))
        keys.chmod(0o600)
        common = (
            f'state_dir = "{state}"\n'
            "[transport]\n"
            'key_sources = ["keystore", "keys"]\n'
            'allowed_key_types = ["ssh-ed25519", "ssh-rsa", "sk-ssh-ed25519@openssh.com"]\n'
            # every case fails a connection from 127.0.0.1: sshd-like penalties would drop
            # the later ones (they have tests of their own: test_startups.py)
            "[server]\n"
            "penalties = false\n"
        )
        self.config_path = root / "nxauth.toml"
        self.config_path.write_text(common + f'[backends.keys]\nkind = "authorized_keys"\npath = "{keys}"\n')
        plugin_path = root / "nxauth-plugin.toml"
        plugin_path.write_text(common + f'[backends.keys]\nkind = "parity_file"\npath = "{keys}"\n')
        self.config = load_config(self.config_path)
        self.plugin_config = load_config(plugin_path)

        self.store = SqliteStore(self.config.store_path)
        keystore = KeyStore(self.store)
        for case in CASES:
            if case.where in ("keystore", "removed"):
                entry = parse_authorized_key(self.presented[case.id].entry or "")
                assert entry is not None
                keystore.add("nx", entry)

        # the entry points
        self.auth = nxauth.Authenticator(self.config, plugins=[self.sink], entry_points=False)
        self.lean = lean_sources(self.config, store=lambda: self.store)
        assert self.lean is not None, "the lean path builds the built-in key sources itself"
        assert lean_sources(self.plugin_config, store=lambda: self.store) is None, "a plugin kind: the full path"
        self.plugin_auth = nxauth.Authenticator(
            self.plugin_config, plugins=[self.sink, FilePlugin()], entry_points=False
        )
        self.answerer = KeyAnswerer(
            self.config_path,
            build=lambda path: nxauth.Authenticator.from_file(path, plugins=[self.sink], entry_points=False),
        )
        self.daemon = AuthorizedKeysDaemon(self.answerer, root / "keyd.sock", workers=2)
        self.daemon_thread = threading.Thread(target=self.daemon.serve_forever, daemon=True)
        self.daemon_thread.start()
        host_key = ensure_host_key(root / "host" / "ssh_host_ed25519_key")
        self.server: NxauthServer = loop.run(start_server(self.auth, _no_handler, host_keys=[host_key]))

        # revoked while every entry point runs: it must take effect at once
        for case in CASES:
            if case.where == "removed":
                entry = parse_authorized_key(self.presented[case.id].entry or "")
                assert entry is not None and keystore.remove(entry.key.fingerprint) == 1

    def close(self) -> None:
        self.loop.run(_stop(self.server))
        self.daemon.shutdown()
        self.daemon_thread.join(10)
        self.answerer.close()
        self.auth.close()
        self.plugin_auth.close()
        for source in (self.lean or {}).values():
            close = getattr(source, "close", None)
            if callable(close):
                close()
        self.store.close()

    # ------------------------------------------------------------ one run per entry point

    def run(self, entry_point: str, case: Case) -> Run:
        presented = self.presented[case.id]
        before = len(self.sink.events)
        runner: Callable[[Case, Presented], tuple[bool, str]] = {
            SESSION: self._session,
            LEAN: self._lean,
            PLUGIN: self._plugin,
            DAEMON: self._daemon,
            EMBEDDED: self._embedded,
        }[entry_point]
        accepted, peer_host = runner(case, presented)
        return Run(accepted, self.sink.events[before:], peer_host)

    def _peer(self, case: Case) -> Peer:
        return Peer(PEER_HOST, PEER_PORT) if case.peer_known else UNKNOWN_PEER

    def _session(self, case: Case, presented: Presented) -> tuple[bool, str]:
        peer = self._peer(case)
        session = self.auth.open_session(None if peer == UNKNOWN_PEER else (peer.host, peer.port))
        try:
            grant = session.check_transport_key(case.account, presented.line)
        except nxauth.AuthenticationFailed:
            assert session.transport is None
            return False, peer.host
        assert session.transport is grant and grant.fingerprint == nxauth_fingerprint(presented.line)
        if case.cert is not None and case.cert.force_command:
            assert grant.forced_command == case.cert.force_command
        if case.kind == "sk":
            assert grant.options["verify-required"] is True  # for the host's SSH layer to enforce
        return True, peer.host

    def _sshd_line(self, line: str | None, presented: Presented) -> bool:
        if line is None:
            return False
        assert presented.entry is not None
        expected = parse_authorized_key(presented.entry)
        assert expected is not None and line == expected.to_line()  # the entry as stored: sshd enforces its options
        return True

    def _lean(self, case: Case, presented: Presented) -> tuple[bool, str]:
        assert self.lean is not None
        peer = self._peer(case)
        line = authorized_keys_line(
            self.config, self.lean, emit_to([self.sink]), case.account, presented.line, peer=peer
        )
        return self._sshd_line(line, presented), peer.host

    def _plugin(self, case: Case, presented: Presented) -> tuple[bool, str]:
        peer = self._peer(case)
        auth = self.plugin_auth
        line = authorized_keys_line(
            auth.config, auth.backends, runtime_of(auth).emit, case.account, presented.line, peer=peer
        )
        return self._sshd_line(line, presented), peer.host

    def _daemon(self, case: Case, presented: Presented) -> tuple[bool, str]:
        key_type, key_text = presented.line.split()
        connection = f"{PEER_HOST} {PEER_PORT} 127.0.0.1 22" if case.peer_known else None
        request = encode_request(None, case.account, key_type, key_text, connection)
        status, body = keyd_client.ask(str(self.daemon.socket_path), request, timeout=10)
        assert status == keyd_client.STATUS_OK
        line = body.decode().rstrip("\n") if body else None
        return self._sshd_line(line, presented), self._peer(case).host

    def _embedded(self, case: Case, presented: Presented) -> tuple[bool, str]:
        before = len(self.sink.events)
        accepted = self.loop.run(self._connect(case, presented, before))
        deadline = time.monotonic() + 10
        while self.server.connections and time.monotonic() < deadline:  # every event of the connection is out
            time.sleep(0.01)
        assert not self.server.connections
        return accepted, PEER_HOST

    async def _connect(self, case: Case, presented: Presented, before: int) -> bool:
        try:
            conn = await asyncssh.connect(
                "127.0.0.1",
                self.server.port,
                username=case.account,
                client_keys=[presented.client],
                known_hosts=None,
                agent_path=None,
                config=None,
                password=None,
                kbdint_auth=False,
                password_auth=False,
                gss_auth=False,
            )
        except asyncssh.PermissionDenied:
            return False
        try:  # stage 1 is committed (and audited) after the proof: wait for it before hanging up
            deadline = time.monotonic() + 10
            while not any(e.method == "publickey" for e in self.sink.events[before:]) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            conn.close()
            await conn.wait_closed()
        return True


async def _no_handler(identity: nxauth.Identity, process: Any) -> int:
    return 0


async def _stop(server: NxauthServer) -> None:
    server.close()
    await server.wait_closed()


def nxauth_fingerprint(line: str) -> str:
    from nxauth.keys.formats import parse_public_key

    return parse_public_key(line).fingerprint


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("parity")
    root.chmod(0o700)  # the daemon's socket directory
    loop = LoopThread()
    deployed = Deployment(root, loop)
    yield deployed
    deployed.close()
    loop.close()


# ---------------------------------------------------------------- the test


def decision_events(entry_point: str, run: Run) -> list[AuthEvent]:
    """The run's stage-1 decision events, normalised: no session id or time;
    the peer checked against the one the entry point was told, then dropped;
    the entry point's label checked in the detail, then dropped."""
    decisions = [e for e in run.events if e.method == "publickey"]
    # what else a connection may emit is the session's end, never a decision
    assert all(e.reason is Reason.CLIENT_GONE for e in run.events if e.method != "publickey"), run.events
    label = LABEL[entry_point]
    normalised = []
    for event in decisions:
        assert event.peer.host == run.peer_host, (entry_point, event)
        detail = event.detail
        if label:
            assert detail == label or detail.startswith(f"{label}: "), (entry_point, detail)
            detail = detail[len(label) + 2 :]
        normalised.append(dataclasses.replace(event, session_id="", time=0.0, peer=UNKNOWN_PEER, detail=detail))
    return normalised


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_every_entry_point_decides_and_audits_alike(deployment: Deployment, case: Case) -> None:
    assert set(case.differs) <= set(ENTRY_POINTS)
    expected = {entry_point: case.differs.get(entry_point, case.expect) for entry_point in ENTRY_POINTS}
    assert expected[SESSION] == case.expect, "the session is the reference"
    runs = {entry_point: deployment.run(entry_point, case) for entry_point in ENTRY_POINTS}

    for entry_point, run in runs.items():
        expect = expected[entry_point]
        events = decision_events(entry_point, run)
        assert run.accepted is expect.accepted, (entry_point, expect.why, events)
        if expect.reason is None:  # the SSH layer refused before stage 1: nothing decided, nothing audited
            assert events == [], (entry_point, events)
            continue
        assert len(events) == 1, (entry_point, events)
        [event] = events
        assert (event.stage, event.outcome, event.reason, event.backend) == (
            1,
            "accepted" if expect.accepted else "failed",
            expect.reason,
            expect.backend,
        ), (entry_point, event)
        assert event.username == case.account
        assert event.invalid_user is (case.account != "nx")
        presented = deployment.presented[case.id].line
        assert event.fingerprint == (nxauth_fingerprint(presented) if case.kind != "malformed" else None)

    # identical events wherever the table expects the same decision
    groups: dict[Expect, list[str]] = {}
    for entry_point, expect in expected.items():
        groups.setdefault(expect, []).append(entry_point)
    for members in groups.values():
        first, *others = members
        reference = decision_events(first, runs[first])
        for entry_point in others:
            assert decision_events(entry_point, runs[entry_point]) == reference, (first, entry_point)


def test_the_table_covers_what_the_entry_points_must_agree_on() -> None:
    """The brief of the parity table, so that a case cannot silently go."""
    reasons = {case.expect.reason for case in CASES}
    assert {
        Reason.OK,
        Reason.KEY_EXPIRED,
        Reason.SOURCE_REFUSED,
        Reason.WRONG_ACCOUNT,
        Reason.CERTIFICATE_INVALID,
        Reason.KEY_TYPE_REFUSED,
        Reason.KEY_TOO_WEAK,
        Reason.UNKNOWN_KEY,
        Reason.KEY_FORMAT,
    } <= reasons
    kinds = {case.kind for case in CASES}
    assert {"ed25519", "ecdsa", "rsa1024", "sk", "malformed"} <= kinds
    assert any(c.cert and c.cert.force_command for c in CASES) and any(c.cert and c.cert.source_address for c in CASES)
    assert any(c.where == "removed" for c in CASES)
    assert all(e.why for c in CASES for e in c.differs.values()), "every difference says why"
