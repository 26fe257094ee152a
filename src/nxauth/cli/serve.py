"""``nxauth serve``: the embedded SSH server."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from nxauth.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, CommandError, load_authenticator
from nxauth.files import read_small_text

if TYPE_CHECKING:  # asyncio and the rest only when the command runs: every command builds the parser
    import argparse
    from pathlib import Path

    from nxauth.core.authenticator import Authenticator
    from nxauth.integrations.asyncssh import SessionHandler


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the embedded SSH server: stage 1 by SSH key, stage 2 on the channel",
        description=cmd_serve.__doc__,
    )
    serve.add_argument(
        "--listen",
        action="append",
        metavar="ADDRESS",
        help="address to listen on, repeatable (default: server.listen)",
    )
    serve.add_argument("--port", type=int, help="port to listen on (default: server.port; 0 picks a free one)")
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the embedded SSH server until SIGTERM or SIGINT.  Only the
    transport account can log in, with a key from the key sources (stage 1);
    the session channel then runs the stage-2 exchange, whatever command the
    client asked for, and after a successful login runs ``login.command``
    (no shell; ``NXAUTH_USER`` and friends in its environment) with the
    channel as its standard input and output.  The host key
    (``server.host_key``, default ``STATE_DIR/ssh_host_ed25519_key``) is
    generated on the first start.  The audit trail goes to stderr too."""
    if args.port is not None and not 0 <= args.port <= 65535:
        raise CommandError(f"--port must be 0 to 65535, not {args.port}", EXIT_USAGE)
    import asyncio
    import logging

    try:
        from nxauth.integrations import asyncssh as embedded
    except ImportError as exc:
        raise CommandError(
            f"nxauth serve needs asyncssh: pip install 'nx-twostage-auth[ssh]' ({exc})", EXIT_ERROR
        ) from None
    with load_authenticator(args) as auth:
        host_key = embedded.ensure_host_key(auth.config.host_key_path)
        listen = tuple(args.listen) if args.listen else auth.config.server.listen
        port = auth.config.server.port if args.port is None else args.port
        command = auth.config.login.command
        handler = embedded.command_handler(command) if command else _no_command
        logging.getLogger("nxauth.audit").setLevel(logging.INFO)
        return asyncio.run(_serve(auth, handler, host_key, listen, port))


async def _no_command(identity: Any, process: Any) -> int:
    return 0


async def _serve(
    auth: Authenticator, handler: SessionHandler, host_key: Path, listen: tuple[str, ...], port: int
) -> int:
    import asyncio
    import signal

    from nxauth.integrations.asyncssh import start_server
    from nxauth.keys.formats import parse_public_key

    relay = None
    node_key = auth.config.server.node_key
    if node_key is not None:
        from nxauth.integrations.relay import Relay

        if not node_key.is_file():
            raise CommandError(
                f"server.node_key: {node_key} is not a file (nxauth keygen --out {node_key})", EXIT_USAGE
            )
        relay = Relay(auth, node_key, timeout=auth.config.login.timeout)
    try:
        server = await start_server(auth, handler, host_keys=[host_key], host=listen, port=port, relay=relay)
    except OSError as exc:
        raise CommandError(f"cannot listen on {', '.join(listen)} port {port}: {exc.strerror or exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    fingerprint = parse_public_key(read_small_text(host_key.with_name(host_key.name + ".pub"))).fingerprint
    where = ", ".join(f"{host} port {bound}" for host, bound in server.addresses)
    print(f"nxauth serve: listening on {where} (host key {fingerprint})", flush=True)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), 10)
        except TimeoutError:
            print("nxauth serve: connections still open after 10 s; leaving", file=sys.stderr)
    print("nxauth serve: stopped", flush=True)
    return EXIT_OK
