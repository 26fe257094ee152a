"""``nxauth authorized-keys``, ``nxauth login`` and ``nxauth sshd-config``:
nxauth behind the system's OpenSSH."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Any

from . import EXIT_OK, CommandError, load_authenticator


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser(
        "authorized-keys",
        help="sshd's AuthorizedKeysCommand: print the line of a key stage 1 accepts (%%u %%t %%k)",
        description=cmd_authorized_keys.__doc__,
    )
    keys.add_argument("user", help="the account sshd authenticates (%%u)")
    keys.add_argument("key_type", metavar="key-type", help="the key's type (%%t)")
    keys.add_argument("key", help="the key, base64 (%%k)")
    keys.add_argument(
        "connection",
        nargs="?",
        help="'client-addr client-port local-addr local-port', when known (sshd has no token for it)",
    )
    keys.set_defaults(handler=cmd_authorized_keys, service=True)

    login = subparsers.add_parser(
        "login",
        help="the forced command: stage 2 over the SSH channel, then the session command",
        description=cmd_login.__doc__,
    )
    login.set_defaults(handler=cmd_login, service=True)

    conf = subparsers.add_parser(
        "sshd-config",
        help="print the sshd_config Match block for the transport account",
        description=cmd_sshd_config.__doc__,
    )
    conf.add_argument(
        "--program",
        help="absolute path of the nxauth command sshd runs (default: this one, from PATH)",
    )
    conf.add_argument(
        "--command-user",
        help="AuthorizedKeysCommandUser (default: the transport account, which must be able to read the state)",
    )
    conf.set_defaults(handler=cmd_sshd_config)


def cmd_authorized_keys(args: argparse.Namespace) -> int:
    """For sshd's AuthorizedKeysCommand (``%u %t %k``): print the
    authorized_keys line, with its options, of a key that stage 1 accepts for
    that account; print nothing otherwise.  Every decision is audited.  Exits
    0 in both cases (sshd reads the output); non-zero only on an error."""
    from ..integrations.openssh import run_authorized_keys

    argv = [args.user, args.key_type, args.key] + ([args.connection] if args.connection else [])
    return run_authorized_keys(args.config, argv, write=sys.stdout.write, debug=args.debug)


def cmd_login(args: argparse.Namespace) -> int:
    """The forced command of the transport account: rebuilds the transport
    grant from the key sshd accepted (``SSH_USER_AUTH``), runs stage 2 over
    stdin/stdout (the line protocol of docs/protocol.md, or prompts on a
    terminal) and on success runs ``[login] command`` with ``NXAUTH_USER``
    and friends in its environment.  Exits 1 after a failed login."""
    import pwd

    from ..integrations.openssh import configure_service_logging, run_login

    with load_authenticator(args) as auth:
        configure_service_logging(auth.config, debug=args.debug)
        account = pwd.getpwuid(os.getuid()).pw_name
        return run_login(auth, account=account, environ=os.environ)


def cmd_sshd_config(args: argparse.Namespace) -> int:
    """Print the ``Match User`` block for sshd_config: public keys only, keys
    from ``nxauth authorized-keys``, ``nxauth login`` forced, forwarding off,
    ``ExposeAuthInfo yes``."""
    from ..config import Config, default_config_path, load_config
    from ..integrations.openssh import sshd_config_block

    path = args.config if args.config is not None else default_config_path()
    config = load_config(path) if path is not None else Config()
    program = args.program or shutil.which("nxauth") or os.path.abspath(sys.argv[0])
    if not os.path.isabs(program):
        raise CommandError(f"--program must be an absolute path, not {program!r}", 2)
    user = args.command_user or config.transport.account
    sys.stdout.write(
        sshd_config_block(config, program=program, config_path=str(path) if path else None, command_user=user)
    )
    return EXIT_OK
