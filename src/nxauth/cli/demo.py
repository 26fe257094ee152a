"""``nxauth demo``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import EXIT_FAIL, EXIT_OK


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="run a real two-stage login on the embedded defaults and print the audit trail",
        description=cmd_demo.__doc__,
    )
    demo.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """In a temporary state directory: generate a transport key, add a demo
    user, then log in with the right key and password, a wrong password, an
    unknown user and an unlisted key; print each outcome and the audit trail.
    Exits 0 only if every case ended as it should."""
    from ..demo import run_demo

    return EXIT_OK if run_demo(sys.stdout) else EXIT_FAIL
