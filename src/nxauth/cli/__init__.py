"""The ``nxauth`` command.

Exit codes (also in ``docs/cli.md``):

==  =====================================================================
0   success
1   the operation was refused or found problems (a denied login, a failed
    check, a user or key that does not exist)
2   usage error (bad arguments)
3   configuration or plugin error
4   store error (corrupt, newer schema, unreadable)
5   any other error
==  =====================================================================

Errors are one clear line on stderr; ``--debug`` adds the traceback.
Command modules are imported only when their command runs, so a command that
sshd calls on every login starts lean.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import argparse

    from nxauth.core.authenticator import Authenticator

__all__ = ["EXIT_CONFIG", "EXIT_ERROR", "EXIT_FAIL", "EXIT_OK", "EXIT_STORE", "EXIT_USAGE", "CommandError", "main"]

EXIT_OK: Final = 0
EXIT_FAIL: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONFIG: Final = 3
EXIT_STORE: Final = 4
EXIT_ERROR: Final = 5

#: Modules that add subcommands; each has ``register(subparsers)``.
COMMAND_MODULES: Final[tuple[str, ...]] = (
    "nxauth.cli.core",
    "nxauth.cli.keys",
    "nxauth.cli.demo",
    "nxauth.cli.users",
    "nxauth.cli.nodes",
    "nxauth.cli.log",
    "nxauth.cli.pam",
    "nxauth.cli.openssh",
    "nxauth.cli.serve",
)


class CommandError(Exception):
    """A command failed in an expected way: print the message, exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


def load_authenticator(args: argparse.Namespace, **kwargs: Any) -> Authenticator:
    """The authenticator for ``--config`` / ``$NXAUTH_CONFIG`` / the default."""
    from nxauth.core.authenticator import Authenticator

    return Authenticator.from_file(args.config, **kwargs)


def audited(config: Any, store: Any, action: str, **fields: str) -> None:
    """The change is committed: record it with the acting account
    (:func:`nxauth.core.admin.admin_event`).  A sink's failure becomes the
    command's error: the change stands, the message says it was not recorded."""
    from nxauth.core.admin import AuditFailed, admin_event

    try:
        admin_event(config, store, action, **fields)
    except AuditFailed as exc:
        raise CommandError(f"done, but the audit trail did not record it ({exc})") from None


def print_json(data: Any) -> None:
    import json

    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def build_parser() -> argparse.ArgumentParser:
    import argparse
    import importlib

    parser = argparse.ArgumentParser(
        prog="nxauth",
        description="Two-stage authentication: an SSH transport key, then the real user.",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=os.environ.get("NXAUTH_CONFIG") or None,
        help="configuration file (default: $NXAUTH_CONFIG, /etc/nxauth/nxauth.toml, else the embedded default)",
    )
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level and show tracebacks")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # a broken command module must not take the others down
            broken = subparsers.add_parser(name.rsplit(".", 1)[-1], help=f"(unavailable: {exc})")
            broken.set_defaults(handler=_unavailable(name, exc))
            continue
        module.register(subparsers)
    return parser


def _unavailable(name: str, error: ImportError) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        raise CommandError(f"{name} cannot be imported: {error}", EXIT_ERROR)

    return handler


def _fast_authorized_keys(argv: Sequence[str]) -> int | None:
    """``[--config PATH] [--debug] authorized-keys USER TYPE KEY [CONN]``
    without argparse and without importing every command module: sshd runs
    it on every login.  ``None``: not this shape, take the normal path."""
    config = os.environ.get("NXAUTH_CONFIG") or None
    debug = False
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--config" and index + 1 < len(argv):
            config = argv[index + 1]
            index += 2
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
            index += 1
        elif arg == "--debug":
            debug = True
            index += 1
        else:
            break
    rest = list(argv[index + 1 :])
    if index >= len(argv) or argv[index] != "authorized-keys" or len(rest) not in (3, 4):
        return None
    if any(item.startswith("-") for item in rest[:3]):
        return None
    from nxauth.errors import ConfigError, NxauthError, StoreError
    from nxauth.integrations.openssh import run_authorized_keys

    try:
        return run_authorized_keys(config, rest, write=sys.stdout.write, debug=debug)
    except ConfigError as exc:
        print(f"nxauth: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StoreError as exc:
        print(f"nxauth: store error: {exc}", file=sys.stderr)
        return EXIT_STORE
    except (NxauthError, OSError) as exc:
        print(f"nxauth: {exc}", file=sys.stderr)
        return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    fast = _fast_authorized_keys(argv)
    if fast is not None:
        return fast
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and EXIT_USAGE
    if args.version:
        from nxauth._version import __version__

        print(f"nxauth {__version__}")
        return EXIT_OK
    import logging

    if not getattr(args, "service", False):  # login / authorized-keys: never stderr (the SSH client's)
        logging.basicConfig(
            level=logging.DEBUG if args.debug else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from nxauth.errors import ConfigError, NxauthError, PluginError, StoreError

    try:
        return handler(args)
    except CommandError as exc:
        return _error(args, str(exc), exc.code)
    except (ConfigError, PluginError) as exc:
        return _error(args, f"configuration error: {exc}", EXIT_CONFIG)
    except StoreError as exc:
        return _error(args, f"store error: {exc}", EXIT_STORE)
    except NxauthError as exc:
        return _error(args, str(exc), EXIT_ERROR)
    except OSError as exc:
        return _error(args, f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}", EXIT_ERROR)
    except KeyboardInterrupt:
        return 130


def _error(args: argparse.Namespace, message: str, code: int) -> int:
    if args.debug:
        import traceback

        traceback.print_exc()
    print(f"nxauth: {message}", file=sys.stderr)
    return code
