"""``nxauth keygen`` and ``nxauth keys list|add|remove|export``."""

from __future__ import annotations

import argparse
import datetime
import re
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nxauth.cli import EXIT_ERROR, EXIT_FAIL, EXIT_OK, EXIT_USAGE, CommandError, audited, load_authenticator, print_json
from nxauth.core.authenticator import runtime_of
from nxauth.files import PRIVATE_MODE, PUBLIC_MODE, read_small_text, write_file

if TYPE_CHECKING:
    from nxauth.backends.keystore import KeyStore, StoredKey
    from nxauth.core.authenticator import Authenticator

DURATION = re.compile(r"^(\d+)([smhdw]?)$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``90``, ``30m``, ``12h``, ``7d``, ``2w`` in seconds."""
    match = DURATION.match(text.strip())
    if match is None:
        raise CommandError(f"not a duration: {text!r} (e.g. 3600, 30m, 12h, 7d, 2w)", EXIT_USAGE)
    return float(int(match.group(1)) * UNITS[match.group(2)])


def register(subparsers: Any) -> None:
    keygen = subparsers.add_parser(
        "keygen",
        help="generate a transport key pair and register its public half",
        description=cmd_keygen.__doc__,
    )
    keygen.add_argument("--type", choices=("ed25519", "ecdsa", "rsa"), default="ed25519")
    keygen.add_argument("--bits", type=int, help="ecdsa: 256, 384 or 521 (default 256); rsa: default 3072")
    keygen.add_argument("--comment", help="key comment (default nxauth-transport@HOSTNAME)")
    keygen.add_argument("--out", type=Path, help="private key file (default STATE_DIR/transport_TYPE); .pub beside it")
    keygen.add_argument(
        "--passphrase-stdin", action="store_true", help="read a passphrase for the private key from stdin"
    )
    keygen.add_argument("--force", action="store_true", help="replace an existing private key file")
    keygen.add_argument("--rotate", action="store_true", help="expire the account's other keys after --grace")
    keygen.add_argument("--grace", default="7d", help="with --rotate: how long the old keys stay valid (default 7d)")
    keygen.add_argument("--json", action="store_true")
    keygen.set_defaults(handler=cmd_keygen)

    keys = subparsers.add_parser("keys", help="manage the transport keys in the keystore", description=cmd_keys.__doc__)
    actions = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list the keys")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--account", help="only this account's keys")
    add = actions.add_parser("add", help="add keys from an authorized_keys file ('-': stdin)")
    add.add_argument("file")
    add.add_argument("--account", help="the account (default: the transport account)")
    add.add_argument("--expires", help="expire the keys after this long (e.g. 30d)")
    remove = actions.add_parser("remove", help="remove keys by id or SHA256 fingerprint")
    remove.add_argument("selector")
    export = actions.add_parser("export", help="print the keys in authorized_keys format")
    export.add_argument("--account", help="only this account's keys")
    keys.set_defaults(handler=cmd_keys)


def _keystore(auth: Authenticator) -> KeyStore:
    from nxauth.backends.keystore import KeyStore

    return KeyStore(auth.store, clock=runtime_of(auth).clock)


def _generate(kind: str, bits: int | None, rsa_min_bits: int) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if kind == "ed25519":
        if bits not in (None, 256):
            raise CommandError("ed25519 keys have 256 bits", EXIT_USAGE)
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ecdsa":
        curves = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1()}
        if (bits or 256) not in curves:
            raise CommandError("ecdsa keys have 256, 384 or 521 bits", EXIT_USAGE)
        return ec.generate_private_key(curves[bits or 256])
    size = bits or 3072
    if size < rsa_min_bits or size > 16384:
        raise CommandError(f"rsa keys need {rsa_min_bits} to 16384 bits (transport.rsa_min_bits)", EXIT_USAGE)
    return rsa.generate_private_key(public_exponent=65537, key_size=size)


def _write_private(path: Path, data: bytes, *, force: bool) -> None:
    """Write ``data`` to ``path`` with mode 0600 from its first byte: a new
    file is created 0600 (O_EXCL); a replaced one is written to a 0600
    temporary file in the same directory and renamed over it."""
    if (path.exists() or path.is_symlink()) and not force:
        raise CommandError(f"{path} exists (use --force to replace it)")
    if not write_file(path, data, PRIVATE_MODE, replace=force):
        raise CommandError(f"{path} exists (use --force to replace it)")


def _read_key_file(name: str) -> str:
    """A key file named on the command line: a small regular UTF-8 file
    (a FIFO, device or directory is refused at once)."""
    try:
        return read_small_text(name)
    except OSError as exc:
        raise CommandError(f"{name}: cannot read: {exc.strerror}", EXIT_ERROR) from None
    except UnicodeDecodeError:
        raise CommandError(f"{name}: not UTF-8") from None


def cmd_keygen(args: argparse.Namespace) -> int:
    """Generate a transport key pair: the private key in OpenSSH format (mode
    0600 from the first byte) for the clients, the public half registered in
    the keystore with ``restrict`` and the forced command.  With ``--rotate``
    the account's other keys expire after ``--grace``, so clients can move to
    the new key without being locked out."""
    from cryptography.hazmat.primitives import serialization

    from nxauth.keys.authorized_keys import AuthorizedKey, KeyOptions
    from nxauth.keys.formats import parse_public_key

    passphrase = None
    if args.passphrase_stdin:
        passphrase = sys.stdin.readline().rstrip("\r\n").encode()
        if not passphrase:
            raise CommandError("empty passphrase on stdin", EXIT_USAGE)
    grace = parse_duration(args.grace) if args.rotate else None
    with load_authenticator(args) as auth:
        transport = auth.config.transport
        private = _generate(args.type, args.bits, transport.rsa_min_bits)
        comment = args.comment or f"nxauth-transport@{socket.gethostname()}"
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
        )
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption)
        public_text = private.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        public = parse_public_key(f"{public_text.decode()} {comment}")
        out = args.out or auth.config.state_dir / f"transport_{args.type}"
        _write_private(out, pem, force=args.force)
        pub_path = out.with_name(out.name + ".pub")
        write_file(pub_path, (public.to_openssh() + "\n").encode(), PUBLIC_MODE, replace=True)
        entry = AuthorizedKey(public, KeyOptions(restrict=True, pty=True, command=transport.forced_command))
        keystore = _keystore(auth)
        stored = keystore.add(transport.account, entry)
        expired = 0
        if grace is not None:
            expired = keystore.expire_all(transport.account, runtime_of(auth).clock() + grace, keep=[stored.id])
        audited(auth.config, auth.store, "key-add", target=public.fingerprint)
    result = {
        "private_key": str(out),
        "public_key": str(pub_path),
        "fingerprint": public.fingerprint,
        "account": transport.account,
        "id": stored.id,
        "rotated": expired,
    }
    if args.json:
        print_json(result)
    else:
        print(f"private key: {out} (give it to the clients allowed in)")
        print(f"public key:  {pub_path}")
        print(f"registered:  {public.describe()} for account {transport.account} (id {stored.id})")
        if grace is not None:
            print(f"rotation:    {expired} older key(s) expire in {args.grace}")
    return EXIT_OK


def _refuse_other_options(keystore: KeyStore, account: str, entries: list[Any]) -> None:
    """A key is registered once per account: one already there (or earlier in
    the same file) with other options is not added a second time (``nxauth
    keygen`` registers its key with ``restrict,pty`` and the forced command,
    and a second row without them would be a weaker way in); nothing is added."""
    lines: dict[bytes, dict[str, str]] = {}
    for row in keystore.entries(account):
        lines.setdefault(row.entry.key.blob, {})[row.entry.to_line()] = f"id {row.id}"
    for number, entry in enumerate(entries, 1):
        known = lines.setdefault(entry.key.blob, {})
        others = [where for line, where in known.items() if line != entry.to_line()]
        if others:
            raise CommandError(
                f"{entry.key.describe()} is already registered for {account} with other options"
                f" ({', '.join(others)}); remove it first to change them; nothing was added"
            )
        known.setdefault(entry.to_line(), f"key {number} of the file")


def _row(stored: StoredKey) -> dict[str, Any]:
    data = stored.as_dict()
    for name in ("added", "expires"):
        if data[name] is not None:
            data[name] = datetime.datetime.fromtimestamp(data[name], datetime.UTC).isoformat(timespec="seconds")
    return data


def cmd_keys(args: argparse.Namespace) -> int:
    """Manage the transport keys in the keystore."""
    from nxauth.backends.keystore import _with_expiry
    from nxauth.keys.authorized_keys import parse_authorized_keys

    with load_authenticator(args) as auth:
        keystore = _keystore(auth)
        account = getattr(args, "account", None)
        if args.action == "list":
            rows = [_row(stored) for stored in keystore.entries(account)]
            if args.json:
                print_json(rows)
            else:
                for row in rows:
                    until = f" expires {row['expires']}" if row["expires"] else ""
                    print(
                        f"{row['id']:>5}  {row['account']:<10} {row['type']:<24} {row['fingerprint']}  "
                        f"{row['comment']}{until}"
                    )
            return EXIT_OK
        if args.action == "add":
            text = sys.stdin.read() if args.file == "-" else _read_key_file(args.file)
            entries, errors = parse_authorized_keys(text)
            if errors:
                for error in errors:
                    print(f"nxauth: {args.file}: {error}", file=sys.stderr)
                raise CommandError(f"{len(errors)} line(s) did not parse; nothing was added")
            if not entries:
                raise CommandError(f"{args.file}: no keys found")
            expires = runtime_of(auth).clock() + parse_duration(args.expires) if args.expires else None
            owner = account or auth.config.transport.account
            _refuse_other_options(keystore, owner, entries)
            for entry in entries:
                stored = keystore.add(owner, entry, expires=expires)
                audited(auth.config, auth.store, "key-add", target=entry.key.fingerprint)
                print(f"added {stored.id}: {entry.key.describe()}")
            return EXIT_OK
        if args.action == "remove":
            removed = keystore.remove(args.selector)
            if not removed:
                raise CommandError(f"no key matches {args.selector!r}", EXIT_FAIL)
            audited(auth.config, auth.store, "key-remove", target=args.selector)
            print(f"removed {removed} key(s)")
            return EXIT_OK
        for stored in keystore.entries(account):
            print(_with_expiry(stored.entry, stored.expires).to_line())
        return EXIT_OK
