"""Behind the system's OpenSSH (what NoMachine did on Linux).

* ``nxauth authorized-keys`` is sshd's ``AuthorizedKeysCommand``: it prints
  the authorized_keys line (with its options) of a key that stage 1 accepts
  for the transport account, nothing otherwise, and audits.  sshd runs it on
  every login, twice (a query, then the signed attempt), so its start-up is
  lean: built-in key sources and audit sinks, no pluggy, no entry-point scan,
  no ``cryptography`` (see :func:`lean_sources`).
* ``nxauth login`` is the forced command: it rebuilds the transport grant
  from the key sshd accepted (``SSH_USER_AUTH``, with ``ExposeAuthInfo
  yes``), runs stage 2 over the channel (:mod:`nxauth.integrations.exchange`)
  and on success replaces itself with the configured session command.
* ``nxauth sshd-config`` prints the ``Match User`` block that wires both.

This module imports only what ``authorized-keys`` needs; ``login`` imports
the rest when it runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn

from nxauth.config import BackendConfig, Config
from nxauth.errors import ConfigError, NxauthError
from nxauth.files import read_small
from nxauth.model import UNKNOWN_PEER, AuthEvent, Peer, Reason

if TYPE_CHECKING:
    from nxauth.core.authenticator import Authenticator
    from nxauth.core.stage1 import Emit
    from nxauth.store.protocol import Store

__all__ = [
    "LEAN_KINDS",
    "authorized_keys_line",
    "daemon_key_command",
    "lean_sinks",
    "lean_sources",
    "peer_from_connection",
    "run_login",
    "sshd_config_block",
    "transport_keys_from_user_auth",
]

#: Built-in key-source kinds ``authorized-keys`` builds without the plugin
#: manager (kind -> the plugin module that provides it).
LEAN_KINDS: Final[Mapping[str, str]] = {
    "keystore": "nxauth.backends.keystore",
    "authorized_keys": "nxauth.backends.authorized_keys",
    "ldap": "nxauth.backends.ldap",
}


def peer_from_connection(text: str | None) -> Peer:
    """The client end of ``SSH_CONNECTION``
    (``client_addr client_port server_addr server_port``); unknown when
    absent or malformed."""
    if not text:
        return UNKNOWN_PEER
    parts = text.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return UNKNOWN_PEER
    try:
        return Peer.coerce((parts[0], int(parts[1])))
    except NxauthError:
        return UNKNOWN_PEER


# ---------------------------------------------------------------- authorized-keys


def lean_sources(config: Config, *, store: Callable[[], Store]) -> dict[str, object] | None:
    """The configured key sources built from the built-in modules directly,
    or ``None`` when one of them needs the plugin manager (a kind provided by
    a third-party plugin, or a built-in that the configuration disabled)."""
    from nxauth.plugins.registry import BackendContext, BackendRegistry

    registry = BackendRegistry()
    sources: dict[str, object] = {}
    for name in config.transport.key_sources:
        declared = config.backends.get(name) or BackendConfig(name, name, implicit=True)
        module_name = LEAN_KINDS.get(declared.kind)
        if module_name is None or module_name in config.plugins.disabled:
            return None
        if declared.kind not in registry:
            registry.add_builtin(module_name)
        factory = registry.get(declared.kind)
        if factory is None:
            return None
        context = BackendContext(declared, root=config, store=store)
        sources[name] = factory(context)
        context.options.check_unused()
    return sources


def lean_sinks(config: Config) -> list[object]:
    """The built-in audit sinks the configuration asks for."""
    from nxauth.core.audit import sinks_from_config

    return [sink for sink, _name in sinks_from_config(config.audit)]


def emit_to(sinks: Sequence[object]) -> Emit:
    def emit(event: AuthEvent) -> bool:
        ok = True
        for sink in sinks:
            try:
                sink.nxauth_auth_event(event)  # type: ignore[attr-defined]
            except Exception as exc:  # noqa: BLE001 - a failing sink never stops the others
                import logging

                ok = False
                logging.getLogger("nxauth").error(
                    "audit sink %s failed: %s: %s", type(sink).__name__, type(exc).__name__, exc
                )
        return ok

    return emit


def authorized_keys_line(
    config: Config,
    sources: Mapping[str, object],
    emit: Emit,
    user: str,
    key_line: str,
    *,
    peer: Peer = UNKNOWN_PEER,
    clock: Callable[[], float] = time.time,
) -> str | None:
    """Stage 1 for sshd: the authorized_keys line to print for this key and
    account (its options as stored, which sshd then enforces), or ``None``.
    Decided and audited (through ``emit``) by :class:`nxauth.core.stage1.Stage1`
    as sshd's entry point: sshd gives no peer address to the command, so
    ``from=`` and a certificate's ``source-address`` are then sshd's to
    enforce on the printed line (and ``nxauth login`` checks them again with
    ``SSH_CONNECTION``)."""
    from nxauth.core.stage1 import Caller, Stage1

    session_id = os.urandom(8).hex()  # what secrets.token_hex does, without importing random
    stage1 = Stage1(config, sources, emit, clock)
    return stage1.check(user, key_line, session_id=session_id, peer=peer, caller=Caller.SSHD).line


def run_authorized_keys(
    config_path: str | None, argv: Sequence[str], *, write: Callable[[str], object], debug: bool = False
) -> int:
    """``nxauth authorized-keys USER TYPE KEY [CONNECTION]`` (sshd's
    ``%u %t %k``; CONNECTION, ``client-addr client-port server-addr
    server-port``, is for callers that know the peer: sshd 9 has no token
    for it).  Exit 0 whether or not a line was printed (sshd reads
    the output), 1 for usage errors, 3 for a configuration error."""
    from nxauth.config import default_config_path, load_config

    if len(argv) not in (3, 4):
        raise ConfigError("usage: nxauth authorized-keys USER KEY-TYPE BASE64-KEY [CONNECTION]")
    user, key_type, key_text = argv[0], argv[1], argv[2]
    peer = peer_from_connection(argv[3] if len(argv) == 4 else None)
    path = config_path if config_path is not None else default_config_path()
    config = load_config(path) if path is not None else Config()
    configure_service_logging(config, debug=debug)
    from nxauth.integrations.keyd_client import FALLBACK_ENV

    unreachable = os.environ.get(FALLBACK_ENV)  # set by the daemon's client when it falls back
    if unreachable:
        import logging

        logging.getLogger("nxauth.keyd").warning(
            "authorized-keys daemon did not answer (%s); deciding in-process", unreachable[:500]
        )

    opened: list[Store] = []

    def store() -> Store:
        if not opened:
            from nxauth.store import open_store

            opened.append(open_store(config))
        return opened[0]

    sources = lean_sources(config, store=store)
    if sources is not None:
        sinks = lean_sinks(config)
        try:
            line = authorized_keys_line(config, sources, emit_to(sinks), user, f"{key_type} {key_text}", peer=peer)
        finally:
            for item in (*sources.values(), *sinks, *opened):
                close = getattr(item, "close", None)
                if callable(close):
                    close()
    else:  # a key source from a plugin: the full authenticator
        from nxauth.core.authenticator import Authenticator, runtime_of

        with Authenticator(config) as auth:
            line = authorized_keys_line(
                config, auth.backends, runtime_of(auth).emit, user, f"{key_type} {key_text}", peer=peer
            )
    if line is not None:
        write(line + "\n")
    return 0


def configure_service_logging(config: Config, *, debug: bool = False, syslog_address: str = "/dev/log") -> None:
    """Logging for the commands sshd runs: their stderr is the SSH client's
    (``login``) or discarded (``authorized-keys``), so nothing goes there.
    Records go to syslog (authpriv, like sshd's own) when ``/dev/log``
    exists, through :class:`~nxauth.integrations.syslog.SyslogHandler`
    (what ``SysLogHandler`` sends, without its imports); with
    ``audit.syslog`` on, the audit logger is not sent twice.  ``--debug``
    logs to stderr instead, for an administrator at a terminal."""
    import logging

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if debug:
        handler = logging.StreamHandler()
        root.setLevel(logging.DEBUG)
    elif os.path.exists(syslog_address):
        from nxauth.integrations.syslog import LOG_AUTHPRIV, SyslogHandler

        handler = SyslogHandler(syslog_address, LOG_AUTHPRIV, ident=f"nxauth[{os.getpid()}]: ")
        root.setLevel(logging.INFO)
        if config.audit.syslog:
            logging.getLogger("nxauth.audit").propagate = False
    else:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(message)s" if not debug else "%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)


# ---------------------------------------------------------------- login


def transport_keys_from_user_auth(path: str | None) -> list[str]:
    """The public keys sshd accepted for this connection, as ``type base64``,
    from the ``SSH_USER_AUTH`` file (``ExposeAuthInfo yes``): one line per
    authentication method, ``publickey TYPE BASE64 ...`` for keys."""
    if not path:
        return []
    try:  # a FIFO, device or directory, or more than 256 KiB: no key, at once
        text = read_small(path, limit=256 * 1024).decode("ascii", errors="replace")
    except OSError:
        return []
    keys = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "publickey":
            keys.append(f"{parts[1]} {parts[2]}")
    return keys


def _exec(argv: Sequence[str], env: Mapping[str, str]) -> NoReturn:
    os.execvpe(argv[0], list(argv), dict(env))  # noqa: S606 - argv from the configuration, no shell


def run_login(
    auth: Authenticator,
    *,
    account: str,
    environ: Mapping[str, str],
    stdin_fd: int = 0,
    stdout_fd: int = 1,
    terminal: bool | None = None,
    execute: Callable[[Sequence[str], Mapping[str, str]], NoReturn] = _exec,
) -> int:
    """``nxauth login``: stage 1 rebuilt from ``SSH_USER_AUTH``, stage 2 over
    stdin/stdout, then ``execute`` (``os.execvpe``) the session command.
    Returns the exit status when nothing was executed: 0 after a login with
    no session command configured, 1 when the login failed, 5 on an error."""
    from nxauth.core.session import SessionState
    from nxauth.errors import AuthenticationFailed
    from nxauth.integrations.exchange import run_exchange
    from nxauth.integrations.protocol import (
        Code,
        Dialogue,
        FdLineReader,
        LineDialogue,
        TerminalDialogue,
        identity_environment,
    )

    config = auth.config
    peer = peer_from_connection(environ.get("SSH_CONNECTION"))
    session = auth.open_session(peer)
    reader = FdLineReader(stdin_fd, max_line=config.session.max_password_bytes)
    if terminal is None:
        terminal = os.isatty(stdin_fd)
    dialogue: Dialogue = TerminalDialogue(reader, stdout_fd) if terminal else LineDialogue(reader, stdout_fd)

    def close(code: Code, text: str, status: int) -> int:
        try:
            dialogue.tell(code, text)
            dialogue.tell(Code.BYE, "Bye")
        except Exception:  # noqa: BLE001, S110 - the client is gone; the status says the rest
            pass
        return status

    keys = transport_keys_from_user_auth(environ.get("SSH_USER_AUTH"))
    if not keys:
        session.abort(
            Reason.STAGE_ORDER,
            "no-key-in-ssh-user-auth",  # sshd needs ExposeAuthInfo yes and publickey authentication
        )
        return close(Code.INTERNAL_ERROR, "Internal error", 5)
    grant = None
    for key in keys:
        try:
            grant = session.check_transport_key(account, key)
            break
        except AuthenticationFailed:
            if session.state is SessionState.CLOSED:
                break
    if grant is None:
        return close(Code.FAILED, "Authentication failed", 1)

    identity = run_exchange(session, dialogue, timeout=config.login.timeout)
    if identity is None:
        return 1
    command = config.login.command
    if not command:
        return 0
    env = identity_environment(identity, environ)
    auth.close()
    try:
        execute(command, env)
    except OSError as exc:
        import logging

        logging.getLogger("nxauth").error("cannot run the session command %s: %s", command[0], exc.strerror or exc)
        return 5


# ---------------------------------------------------------------- sshd-config


def sshd_config_block(
    config: Config,
    *,
    program: str,
    config_path: str | None,
    command_user: str = "nobody",
    key_command: str | None = None,
) -> str:
    """The ``Match User`` block for sshd_config that makes the transport
    account an nxauth-only account.  ``key_command``: the
    ``AuthorizedKeysCommand`` (default: ``program authorized-keys``; see
    :func:`daemon_key_command`)."""
    account = config.transport.account
    prefix = _quote(program)
    if config_path:
        prefix += f" --config {_quote(str(Path(config_path).resolve()))}"
    if key_command is None:
        key_command = f"{_percent(prefix)} authorized-keys %u %t %k"
    lines = [
        f"# nxauth: the transport account {account!r} can only reach the nxauth login exchange.",
        "# Paste at the END of /etc/ssh/sshd_config (a Match block runs to the end of the file),",
        "# check with `sshd -t`, then reload sshd.",
        f"Match User {account}",
        "    AuthenticationMethods publickey",
        "    PubkeyAuthentication yes",
        "    PasswordAuthentication no",
        "    KbdInteractiveAuthentication no",
        "    HostbasedAuthentication no",
        "    GSSAPIAuthentication no",
        "    AuthorizedKeysFile none",
        f"    AuthorizedKeysCommand {key_command}",
        f"    AuthorizedKeysCommandUser {command_user}",
        f"    ForceCommand {prefix} login",
        "    ExposeAuthInfo yes",
        "    DisableForwarding yes",
        "    PermitTTY yes",
        "    PermitUserRC no",
        "    PermitTunnel no",
        "    MaxAuthTries 6",
        "    MaxSessions 1",
    ]
    return "\n".join(lines) + "\n"


def daemon_key_command(*, python: str, socket_path: str, config_path: str | None) -> str:
    """The ``AuthorizedKeysCommand`` that asks ``nxauth authorized-keys-daemon``:
    :mod:`~nxauth.integrations.keyd_client` run by ``python -I -S`` (no
    ``site``: the start-up is the cost of every login) through its launcher
    ``keyd_run.py``, falling back to ``nxauth authorized-keys`` in-process
    when the daemon does not answer."""
    from nxauth.integrations import keyd_client

    client = str(Path(keyd_client.__file__).resolve().with_name("keyd_run.py"))
    parts = [_quote(python), "-I", "-S", _quote(client), "--socket", _quote(socket_path)]
    if config_path:
        parts += ["--config", _quote(str(Path(config_path).resolve()))]
    return f"{_percent(' '.join(parts))} %u %t %k"


def _percent(text: str) -> str:
    """sshd expands ``%`` tokens in ``AuthorizedKeysCommand`` (not in
    ``ForceCommand``): a literal ``%`` in a path is written ``%%``."""
    return text.replace("%", "%%")


def _quote(text: str) -> str:
    """A path for an sshd_config command line (sshd splits on spaces and honours double quotes)."""
    if text and all(ch.isalnum() or ch in "/._-+:@%" for ch in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
