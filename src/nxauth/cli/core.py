"""``nxauth check`` and ``nxauth unlock``."""

from __future__ import annotations

import argparse
import datetime
import sys
from typing import Any

from nxauth.cli import EXIT_FAIL, EXIT_OK, CommandError, audited, load_authenticator, print_json
from nxauth.core.authenticator import runtime_of


def register(subparsers: Any) -> None:
    check = subparsers.add_parser(
        "check", help="validate the configuration and print the composed pipeline", description=cmd_check.__doc__
    )
    check.add_argument("--json", action="store_true", help="print the pipeline as JSON")
    check.set_defaults(handler=cmd_check)

    unlock = subparsers.add_parser(
        "unlock", help="lift a throttle lockout for a user or an address", description=cmd_unlock.__doc__
    )
    unlock.add_argument("target", nargs="?", help="a username or an IP address")
    unlock.add_argument("--user", action="store_true", help="TARGET is a username, even if it looks like an address")
    unlock.add_argument("--list", action="store_true", help="list the lockouts in force")
    unlock.add_argument("--json", action="store_true", help="with --list: print as JSON")
    unlock.set_defaults(handler=cmd_unlock)


def cmd_check(args: argparse.Namespace) -> int:
    """Build the authenticator from the configuration (every backend is
    created and its options checked) and print the pipeline.  Exits 1 when a
    plugin failed to load."""
    with load_authenticator(args) as auth:
        info = auth.describe()
    if args.json:
        print_json(info)
    else:
        out = sys.stdout.write
        out(f"config:        {info['config']}\n")
        out(f"store:         {info['store']}\n")
        out(f"transport:     account {info['transport_account']}\n")
        out("key sources:   " + ", ".join(f"{s['use']} ({s['kind']})" for s in info["key_sources"]) + "\n")
        for title in ("auth", "account"):
            out(f"{title} stack:\n")
            if not info[title]:
                out("  (empty: denies everyone)\n")
            for index, entry in enumerate(info[title], 1):
                out(f"  {index}. {entry['control']:<11} {entry['use']:<16} ({entry['kind']})\n")
        plugins = [f"{name} ({dist})" if dist else name for name, dist in info["plugins"].items()]
        out("plugins:       " + (", ".join(plugins) or "none") + "\n")
        for error in info["plugin_errors"]:
            out(f"plugin error:  {error}\n")
    return EXIT_FAIL if info["plugin_errors"] else EXIT_OK


def cmd_unlock(args: argparse.Namespace) -> int:
    """Forget the failures and lockouts of a username or an address."""
    with load_authenticator(args) as auth:
        if args.list:
            rows = [
                {
                    "key": lock.key,
                    "until": datetime.datetime.fromtimestamp(lock.until, datetime.UTC).isoformat(timespec="seconds"),
                    "lockouts": lock.lockouts,
                }
                for lock in runtime_of(auth).throttle.status()
            ]
            if args.json:
                print_json(rows)
            else:
                for row in rows:
                    print(f"{row['key']:<40} until {row['until']}  (lockout #{row['lockouts']})")
            return EXIT_OK
        if not args.target:
            raise CommandError("unlock needs a username or an address (or --list)", 2)
        removed = auth.unlock(args.target, user=True if args.user else None)
        audited(auth.config, auth.store, "unlock", target=args.target)
    print(f"unlocked {args.target} ({removed} record{'s' if removed != 1 else ''} removed)")
    return EXIT_OK
