"""``nxauth authorized-keys``, ``nxauth login`` and ``nxauth sshd-config``:
nxauth behind the system's OpenSSH."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from nxauth.cli import EXIT_OK, CommandError, load_authenticator
from nxauth.files import make_dirs, read_small


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

    daemon = subparsers.add_parser(
        "authorized-keys-daemon",
        help="answer sshd's AuthorizedKeysCommand from a resident process (see sshd-config --daemon)",
        description=cmd_authorized_keys_daemon.__doc__,
    )
    daemon.add_argument("--socket", metavar="PATH", help="the UNIX socket (default: STATE_DIR/authorized-keys.sock)")
    daemon.add_argument(
        "--workers", type=int, default=8, metavar="N", help="requests answered at once; more wait (default: 8)"
    )
    daemon.set_defaults(handler=cmd_authorized_keys_daemon)

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
    conf.add_argument(
        "--daemon",
        action="store_true",
        help="ask nxauth authorized-keys-daemon through its small client (the fast way; see docs/deploy-openssh.md)",
    )
    conf.add_argument("--socket", metavar="PATH", help="with --daemon: the daemon's socket (default: in the state dir)")
    conf.add_argument(
        "--python", metavar="PATH", help="with --daemon: the interpreter that runs the client (default: this one)"
    )
    conf.set_defaults(handler=cmd_sshd_config)


def cmd_authorized_keys(args: argparse.Namespace) -> int:
    """For sshd's AuthorizedKeysCommand (``%u %t %k``): print the
    authorized_keys line, with its options, of a key that stage 1 accepts for
    that account; print nothing otherwise.  Every decision is audited.  Exits
    0 in both cases (sshd reads the output); non-zero only on an error."""
    from nxauth.integrations.openssh import run_authorized_keys

    argv = [args.user, args.key_type, args.key] + ([args.connection] if args.connection else [])
    return run_authorized_keys(args.config, argv, write=sys.stdout.write, debug=args.debug)


def _top_level_keys(path: Path) -> set[str]:
    import tomllib

    try:
        return set(tomllib.loads(read_small(path).decode("utf-8")))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return set()


def cmd_authorized_keys_daemon(args: argparse.Namespace) -> int:
    """Answer sshd's AuthorizedKeysCommand from a resident process: the
    same decision and audit as ``nxauth authorized-keys``, without starting
    Python on every login.  Listens on a UNIX socket (0600) that
    ``nxauth sshd-config --daemon`` points sshd's command at; run it as the
    AuthorizedKeysCommandUser.  Rebuilds when the configuration file
    changes or on SIGHUP; stops on SIGTERM or SIGINT."""
    import logging
    import signal

    from nxauth.config import default_config_path
    from nxauth.integrations.keyd import AuthorizedKeysDaemon, KeyAnswerer, default_socket_path

    if args.workers < 1:
        raise CommandError("--workers must be at least 1", 2)
    if not args.debug:
        logging.getLogger("nxauth").setLevel(logging.INFO)
    path = args.config if args.config is not None else default_config_path()
    answerer = KeyAnswerer(path)
    try:
        auth = answerer.authenticator
        assert auth is not None  # the first build raises instead
        if args.socket is None:
            make_dirs(auth.config.state_dir)
        socket_path = args.socket or default_socket_path(auth.config.state_dir)
        if auth.config.audit.syslog:  # the journal gets the syslog sink's lines: not twice
            logging.getLogger("nxauth.audit").propagate = False
        daemon = AuthorizedKeysDaemon(answerer, socket_path, workers=args.workers)
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda *_: daemon.shutdown())
        signal.signal(signal.SIGHUP, lambda *_: answerer.reload())
        daemon.serve_forever()
    finally:
        answerer.close()
    return EXIT_OK


def cmd_login(args: argparse.Namespace) -> int:
    """The forced command of the transport account: rebuilds the transport
    grant from the key sshd accepted (``SSH_USER_AUTH``), runs stage 2 over
    stdin/stdout (the line protocol of docs/protocol.md, or prompts on a
    terminal) and on success runs ``[login] command`` with ``NXAUTH_USER``
    and friends in its environment.  Exits 1 after a failed login."""
    import pwd

    from nxauth.integrations.openssh import configure_service_logging, run_login

    with load_authenticator(args) as auth:
        configure_service_logging(auth.config, debug=args.debug)
        account = pwd.getpwuid(os.getuid()).pw_name
        return run_login(auth, account=account, environ=os.environ)


def cmd_sshd_config(args: argparse.Namespace) -> int:
    """Print the ``Match User`` block for sshd_config: public keys only, keys
    from ``nxauth authorized-keys``, ``nxauth login`` forced, forwarding off,
    ``ExposeAuthInfo yes``."""
    from nxauth.config import Config, default_config_path, load_config
    from nxauth.integrations.keyd import default_socket_path
    from nxauth.integrations.openssh import daemon_key_command, sshd_config_block

    path = args.config if args.config is not None else default_config_path()
    config = load_config(path) if path is not None else Config()
    program = args.program or shutil.which("nxauth") or os.path.abspath(sys.argv[0])
    if not os.path.isabs(program):
        raise CommandError(f"--program must be an absolute path, not {program!r}", 2)
    if (args.socket or args.python) and not args.daemon:
        raise CommandError("--socket and --python go with --daemon", 2)
    key_command = None
    if args.daemon:
        python = args.python or sys.executable
        if not os.path.isabs(python):
            raise CommandError(f"--python must be an absolute path, not {python!r}", 2)
        socket_path = os.path.abspath(args.socket) if args.socket else str(default_socket_path(config.state_dir))
        key_command = daemon_key_command(
            python=python, socket_path=socket_path, config_path=str(path) if path else None
        )
    user = args.command_user or config.transport.account
    if path is None or "state_dir" not in _top_level_keys(Path(path)):
        import pwd

        if user != pwd.getpwuid(os.geteuid()).pw_name:
            print(
                f"nxauth: warning: the configuration does not set state_dir: {user} would not use "
                f"{config.state_dir} (the default depends on the user); set it explicitly",
                file=sys.stderr,
            )
    sys.stdout.write(
        sshd_config_block(
            config,
            program=program,
            config_path=str(path) if path else None,
            command_user=user,
            key_command=key_command,
        )
    )
    return EXIT_OK
