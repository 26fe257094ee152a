"""The ``nxauth-totp`` command: enrol users for one-time codes.

    nxauth-totp [--config PATH] [--state-dir DIR] [--backend NAME] enroll USER [--force] [--json]
    nxauth-totp [...] remove USER
    nxauth-totp [...] list [--json]

The configuration is found exactly as ``nxauth`` finds it (``--config``,
else ``$NXAUTH_CONFIG``, else ``/etc/nxauth/nxauth.toml``, else the embedded
default), and the ``totp`` instance's options are read through the same
factory code as the server's, so the provisioning URI carries the digits,
period and algorithm that the server checks.  ``--state-dir`` overrides the
configuration's ``state_dir``.

``enroll`` is the one place a secret is ever shown: the ``otpauth://`` URI
and the base32 secret, printed once on standard output, for the user's
authenticator app.  Exit codes follow ``nxauth``: 0 success, 1 refused (already
enrolled, not enrolled), 2 usage, 3 configuration, 4 enrolment database.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

import nxauth

from .backend import KIND, TotpSettings, new_secret, settings_from_context
from .store import AlreadyEnrolledError, TotpStore, TotpStoreError

__all__ = ["build_parser", "load_settings", "main"]

EXIT_OK: Final = 0
EXIT_FAIL: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONFIG: Final = 3
EXIT_STORE: Final = 4
EXIT_ERROR: Final = 5


class CommandError(Exception):
    """An expected failure: print the message, exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nxauth-totp", description="Enrol nxauth users for one-time codes (TOTP).")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="nxauth configuration file (default: $NXAUTH_CONFIG, /etc/nxauth/nxauth.toml, else the embedded default)",
    )
    parser.add_argument("--state-dir", metavar="DIR", help="override the configuration's state_dir")
    parser.add_argument(
        "--backend",
        metavar="NAME",
        help="the totp instance whose options apply (default: the first of kind totp in the auth stack)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    enroll = commands.add_parser("enroll", help="make a secret for USER and print it once")
    enroll.add_argument("user")
    enroll.add_argument(
        "--force", action="store_true", help="replace an existing enrolment (the old app stops working)"
    )
    enroll.add_argument("--json", action="store_true", help="print user, uri and secret as JSON")
    enroll.set_defaults(handler=cmd_enroll)
    remove = commands.add_parser("remove", help="forget USER's secret")
    remove.add_argument("user")
    remove.set_defaults(handler=cmd_remove)
    listing = commands.add_parser("list", help="list the enrolled users (no secrets)")
    listing.add_argument("--json", action="store_true", help="print as JSON")
    listing.set_defaults(handler=cmd_list)
    return parser


# ------------------------------------------------------------ configuration


def _no_store() -> NoReturn:
    raise nxauth.UsageError("the totp backend does not use nxauth's store")


def _instance(config: nxauth.Config, name: str | None) -> nxauth.BackendConfig:
    """The ``totp`` instance whose options apply: ``name``, else the first of
    kind ``totp`` in the auth stack, else the first declared, else the implicit one."""
    implicit = nxauth.BackendConfig(KIND, KIND, implicit=True)
    if name is not None:
        declared = config.backends.get(name)
        if declared is None:
            if name == KIND:
                return implicit
            raise CommandError(f"{config.source}: no [backends.{name}] table", EXIT_CONFIG)
        if declared.kind != KIND:
            raise CommandError(
                f"{config.source}: backends.{name} is of kind {declared.kind!r}, not {KIND!r}", EXIT_CONFIG
            )
        return declared
    for entry in config.auth:
        declared = config.backends.get(entry.use)
        if declared is None and entry.use == KIND:
            return implicit
        if declared is not None and declared.kind == KIND:
            return declared
    of_kind = [b for b in config.backends.values() if b.kind == KIND]
    return of_kind[0] if of_kind else implicit


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    backend: str | None = None,
) -> tuple[nxauth.Config, TotpSettings]:
    """The configuration and the ``totp`` settings, found as ``nxauth`` finds them."""
    path = config_path if config_path is not None else nxauth.default_config_path()
    config = nxauth.load_config(path) if path is not None else nxauth.Config()
    if state_dir is not None:
        config = dataclasses.replace(config, state_dir=Path(state_dir).expanduser().absolute())
    context = nxauth.BackendContext(_instance(config, backend), root=config, store=_no_store)
    settings = settings_from_context(context)
    context.options.check_unused()
    return config, settings


def _username(config: nxauth.Config, raw: str) -> str:
    """``raw`` in the canonical form the server's attempts carry."""
    try:
        return nxauth.normalize_username(raw, case=config.usernames.case, max_length=config.usernames.max_length)
    except nxauth.InvalidUsername as exc:
        raise CommandError(f"invalid username: {exc}", EXIT_USAGE) from None


# ------------------------------------------------------------ commands


def cmd_enroll(args: argparse.Namespace, config: nxauth.Config, settings: TotpSettings, store: TotpStore) -> int:
    """Make a secret, store it, and print it once."""
    username = _username(config, args.user)
    secret = new_secret()
    try:
        replaced = store.enroll(username, secret, time.time(), force=args.force)
    except AlreadyEnrolledError:
        raise CommandError(
            f"{username} is already enrolled; --force replaces the secret (the old one stops working)"
        ) from None
    uri = settings.provisioning_uri(secret, username)
    if args.json:
        json.dump({"user": username, "uri": uri, "secret": secret.reveal(), "replaced": replaced}, sys.stdout)
        sys.stdout.write("\n")
        return EXIT_OK
    out = sys.stdout.write
    out(
        f"{'re-enrolled' if replaced else 'enrolled'} {username}: {settings.digits} digits every "
        f"{settings.period} s, {settings.algorithm}, in {settings.database}\n"
        "Give the user this URI (as a QR code) or the secret below, once; keep no copy.\n"
        f"uri:    {uri}\n"
        f"secret: {secret.reveal()}\n"
    )
    return EXIT_OK


def cmd_remove(args: argparse.Namespace, config: nxauth.Config, settings: TotpSettings, store: TotpStore) -> int:
    """Forget a user's secret: the user can no longer log in where totp is required."""
    username = _username(config, args.user)
    if not store.remove(username):
        raise CommandError(f"{username} is not enrolled")
    print(f"removed {username}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace, config: nxauth.Config, settings: TotpSettings, store: TotpStore) -> int:
    """The enrolled users, when they enrolled and last logged in with a code."""
    users = store.users()
    if args.json:
        rows = [{"user": u.username, "enrolled": u.enrolled, "last_used": u.last_used} for u in users]
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK

    def when(value: float | None) -> str:
        if value is None:
            return "never"
        return datetime.datetime.fromtimestamp(value, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")

    for user in users:
        print(f"{user.username}\tenrolled {when(user.enrolled)}\tlast used {when(user.last_used)}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    handler: Any = args.handler
    try:
        config, settings = load_settings(args.config, state_dir=args.state_dir, backend=args.backend)
        store = TotpStore(settings.database)
        try:
            code: int = handler(args, config, settings, store)
        finally:
            store.close()
    except CommandError as exc:
        return _error(str(exc), exc.code)
    except (nxauth.ConfigError, nxauth.PluginError) as exc:
        return _error(f"configuration error: {exc}", EXIT_CONFIG)
    except TotpStoreError as exc:
        return _error(f"enrolment database error: {exc}", EXIT_STORE)
    except nxauth.NxauthError as exc:
        return _error(str(exc), EXIT_ERROR)
    except OSError as exc:
        return _error(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}", EXIT_ERROR)
    return code


def _error(message: str, code: int) -> int:
    print(f"nxauth-totp: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
