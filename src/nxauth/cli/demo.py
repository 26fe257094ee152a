"""``nxauth demo``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nxauth.cli import EXIT_FAIL, EXIT_OK


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="run real two-stage logins through the embedded SSH server and print the audit trail",
        description=cmd_demo.__doc__,
    )
    demo.add_argument(
        "--client",
        choices=("auto", "ssh", "asyncssh"),
        default="auto",
        help="the SSH client: OpenSSH's ssh, asyncssh's, or ssh when installed (default)",
    )
    demo.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """In a temporary state directory: generate a transport key and register
    it, add a demo user, start the embedded SSH server on 127.0.0.1, then log
    in with the real ssh client: the right key and password, a wrong
    password, an unknown user, and a key that is not listed; print each
    outcome and the audit trail.  Exits 0 only if every case ended as it
    should."""
    from nxauth.cli.demo_run import run_demo

    return EXIT_OK if run_demo(sys.stdout, client=args.client) else EXIT_FAIL
