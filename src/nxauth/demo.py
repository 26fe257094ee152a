"""``nxauth demo``: a real two-stage login on the embedded defaults.

In a temporary state directory: a transport key pair is generated and its
public half registered in the keystore; a demo user is added to the password
database (and so to the users allowlist).  Then four clients try:

1. the right key and the right password: accepted;
2. the right key and a wrong password: refused at stage 2;
3. the right key and an unknown user: refused at stage 2;
4. a key that is not listed: refused at stage 1, and its stage-2 attempt is
   refused without reaching any backend.

Stage 1 is proven without SSH here: each client signs the session's challenge
with its private key in OpenSSH's SSHSIG format (what ``ssh-keygen -Y sign -n
nxauth`` produces), and nxauth verifies it.  The demo prints each outcome and
the audit trail, and succeeds only if every case ended as it should.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from .audit import format_event
from .authenticator import Authenticator
from .authorized_keys import AuthorizedKey, KeyOptions
from .errors import AuthenticationFailed
from .hookspecs import hookimpl
from .keys import parse_public_key
from .model import AuthEvent, Reason, Secret

__all__ = ["run_demo", "sign_sshsig_ed25519"]


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def sign_sshsig_ed25519(private: ed25519.Ed25519PrivateKey, message: bytes, namespace: str) -> str:
    """An armored SSHSIG signature (PROTOCOL.sshsig, sha512), as
    ``ssh-keygen -Y sign -n NAMESPACE`` makes it for an Ed25519 key."""
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    public_blob = _string(b"ssh-ed25519") + _string(raw)
    digest = hashlib.sha512(message).digest()
    signed = b"SSHSIG" + _string(namespace.encode()) + _string(b"") + _string(b"sha512") + _string(digest)
    signature = _string(b"ssh-ed25519") + _string(private.sign(signed))
    blob = (
        b"SSHSIG"
        + struct.pack(">I", 1)
        + _string(public_blob)
        + _string(namespace.encode())
        + _string(b"")
        + _string(b"sha512")
        + _string(signature)
    )
    text = base64.b64encode(blob).decode()
    lines = [text[i : i + 70] for i in range(0, len(text), 70)]
    return "-----BEGIN SSH SIGNATURE-----\n" + "\n".join(lines) + "\n-----END SSH SIGNATURE-----\n"


def _public_line(private: ed25519.Ed25519PrivateKey, comment: str) -> str:
    text = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{text.decode()} {comment}"


class _Trail:
    """Keeps the audit events to print them."""

    def __init__(self) -> None:
        self.events: list[AuthEvent] = []

    @hookimpl
    def nxauth_auth_event(self, event: AuthEvent) -> None:
        self.events.append(event)


@dataclass
class _Case:
    title: str
    key: ed25519.Ed25519PrivateKey
    username: str
    password: str
    expected: tuple[int, Reason] | None  # None: accepted
    outcome: str = ""
    ok: bool = False


def run_demo(out: TextIO, *, state_dir: Path | None = None) -> bool:
    """Run the demo, writing to ``out``; True when every case ended as it should."""
    from .backends.keystore import KeyStore
    from .hashing import PasswordHasher
    from .userdb import UserDatabase

    with tempfile.TemporaryDirectory(prefix="nxauth-demo-") as tmp:
        state = state_dir or Path(tmp)
        sink = _Trail()
        auth = Authenticator(
            {"state_dir": str(state), "audit": {"log": False, "jsonl": str(state / "audit.jsonl")}},
            plugins=[sink],
            entry_points=False,
        )
        with auth:
            config = auth.config
            write: Callable[[str], object] = out.write
            write(f"nxauth demo: embedded defaults in {state}\n")
            transport = ed25519.Ed25519PrivateKey.generate()
            stranger = ed25519.Ed25519PrivateKey.generate()
            public = parse_public_key(_public_line(transport, "nxauth-demo-transport"))
            options = KeyOptions(restrict=True, command=config.transport.forced_command)
            KeyStore(auth.store).add(config.transport.account, AuthorizedKey(public, options))
            write(f"  transport key  {public.describe()} registered for account {config.transport.account}\n")
            password = secrets.token_urlsafe(12)
            hasher = PasswordHasher()
            users = UserDatabase(auth.store, case=config.usernames.case)
            users.add("demo", password_hash=hasher.hash(Secret(password)), comment="nxauth demo user")
            write("  user           demo added to the password database and the users allowlist\n")
            write(
                f"  stacks         auth: {', '.join(e.use for e in config.auth)}; "
                f"account: {', '.join(e.use for e in config.account)}\n\n"
            )

            cases = [
                _Case("right key, right password", transport, "demo", password, None),
                _Case("right key, wrong password", transport, "demo", password + "x", (2, Reason.BAD_PASSWORD)),
                _Case("right key, unknown user", transport, "nobody", password, (2, Reason.UNKNOWN_USER)),
                _Case("unlisted key", stranger, "demo", password, (1, Reason.UNKNOWN_KEY)),
            ]
            for number, case in enumerate(cases, 1):
                session = auth.open_session(peer=("127.0.0.1", 40000 + number))
                nonce = session.challenge()
                signature = sign_sshsig_ed25519(case.key, nonce.encode("ascii"), "nxauth")
                try:
                    session.check_transport_signature(config.transport.account, signature)
                    identity = session.login(case.username, case.password)
                except AuthenticationFailed as exc:
                    case.outcome = f"refused at stage {exc.stage} ({exc.reason.value})"
                    case.ok = case.expected == (exc.stage, exc.reason)
                    if exc.stage == 1:
                        # a client refused at stage 1 cannot reach stage 2 either
                        try:
                            session.login(case.username, case.password)
                        except AuthenticationFailed as later:
                            case.ok = case.ok and later.reason is Reason.STAGE_ORDER
                            case.outcome += f"; stage 2 then refused ({later.reason.value})"
                else:
                    case.outcome = f"accepted as {identity.username} via {identity.backend}"
                    case.ok = case.expected is None and session.identity.username == "demo"
                mark = "ok  " if case.ok else "FAIL"
                write(f"  [{mark}] {number}. {case.title:<28} {case.outcome}\n")

            write("\naudit trail (the lines the nxauth.audit logger writes; also in audit.jsonl):\n")
            for event in sink.events:
                write(f"  {format_event(event)}\n")
            jsonl = (state / "audit.jsonl").read_text().splitlines()
            write(
                f"\n{len(jsonl)} events in {state / 'audit.jsonl'}; the password never appears: "
                f"{'yes' if all(password not in line for line in jsonl) else 'NO'}\n"
            )
            ok = all(case.ok for case in cases) and all(password not in line for line in jsonl)
            write("demo: every case ended as it should\n" if ok else "demo: FAILED\n")
            return ok
