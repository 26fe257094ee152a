"""The client of ``nxauth authorized-keys-daemon``, for sshd's ``AuthorizedKeysCommand``.

sshd runs its ``AuthorizedKeysCommand`` twice per login, so the command's
start-up is the cost of every login.  This file is that command when the
daemon runs: a standalone script, run as ``python -I -S keyd_client.py``,
that imports nothing but the built-in ``posix`` and ``_socket`` (no ``site``,
no ``os``, no ``socket`` module with its enum and selectors, no nxauth), asks
the daemon over its UNIX socket, prints the answer and leaves with
``_exit`` (interpreter finalization would cost more than the exchange).
sshd runs it through ``keyd_run.py``, a launcher of three lines, so that
this module loads from its cached byte-code.  The decision, the key policy
and the audit stay in the daemon, which runs the same code as
``nxauth authorized-keys``.

When the daemon cannot answer (not running, socket refused, timed out, a
malformed reply, or a daemon serving another configuration) the client
replaces itself with ``python -I -m nxauth authorized-keys``, which decides
in-process with the same policy: slower, never weaker.  ``--no-fallback``
prints nothing and exits 5 instead.

``nxauth sshd-config --daemon`` prints the command line; ``docs/deploy-openssh.md``
explains the deployment.

The wire format (one request per connection, both directions bounded):

* request: ``NXAK1\\n`` then five fields separated by NUL bytes: the
  configuration path the client was given (empty for none), user, key
  type, base64 key, connection (empty for none); then the client shuts
  down its sending side;
* reply: ``NXAK1 STATUS LENGTH\\n`` then exactly LENGTH bytes.  STATUS 0:
  print the body (empty when stage 1 refused the key); 3, 4, 5: the exit
  status of ``nxauth authorized-keys`` for a configuration, store or other
  error, print nothing; 6: the daemon serves another configuration, ask
  in-process.

Usage::

    python -I -S keyd_run.py --socket PATH [--config PATH] [--timeout S] [--no-fallback]
                                USER KEY-TYPE BASE64-KEY [CONNECTION]
"""

import posix  # built in; ``os`` costs more than the whole exchange
import sys
import time

try:  # the C module: ``socket`` itself imports enum and selectors (~8 ms)
    import _socket as _sock
except ImportError:  # pragma: no cover - an interpreter without it
    import socket as _sock  # type: ignore[no-redef]

_FS_ENCODING = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
MAGIC = b"NXAK1"
#: The daemon reads at most this much of a request (a certificate is a few KiB).
MAX_REQUEST = 64 * 1024
#: The client reads at most this much of a reply (one authorized_keys line).
MAX_REPLY = 256 * 1024
STATUS_OK = 0
STATUS_CONFIG = 3
STATUS_STORE = 4
STATUS_ERROR = 5
STATUS_OTHER_CONFIG = 6
#: The statuses a reply may carry; 6 is never an exit status.
STATUSES = (STATUS_OK, STATUS_CONFIG, STATUS_STORE, STATUS_ERROR, STATUS_OTHER_CONFIG)
#: Seconds for the whole exchange with the daemon before falling back.
DEFAULT_TIMEOUT = 10.0
#: Set on the fallback ``nxauth authorized-keys`` so that it logs why.
FALLBACK_ENV = "NXAUTH_KEYD_UNREACHABLE"
USAGE = (
    "usage: keyd_run.py --socket PATH [--config PATH] [--timeout S] [--no-fallback] "
    "USER KEY-TYPE BASE64-KEY [CONNECTION]"
)


class ReplyError(Exception):
    """The daemon's reply is not a well-formed one (the client falls back)."""


def encode_request(config: str | None, user: str, key_type: str, key: str, connection: str | None) -> bytes:
    """The request bytes; fields are argv strings (encoded as ``os.fsencode`` does, so any
    byte sshd passed survives) and cannot hold NUL."""
    fields = [(item or "").encode(*_FS_ENCODING) for item in (config, user, key_type, key, connection)]
    return MAGIC + b"\n" + b"\0".join(fields)


def decode_reply(data: bytes) -> tuple[int, bytes]:
    """``(status, body)`` of a complete reply; :class:`ReplyError` otherwise."""
    head, newline, body = data.partition(b"\n")
    parts = head.split(b" ")
    if not newline or len(parts) != 3 or parts[0] != MAGIC:
        raise ReplyError("malformed reply header")
    if not (parts[1].isdigit() and parts[2].isdigit()) or len(parts[1]) > 1 or len(parts[2]) > 7:
        raise ReplyError("malformed reply header")
    status, length = int(parts[1]), int(parts[2])
    if status not in STATUSES:
        raise ReplyError(f"unknown status {status}")
    if len(body) != length:
        raise ReplyError(f"reply body of {len(body)} bytes, announced {length}")
    return status, body


def read_to_end(sock: "_sock.socket", limit: int, deadline: float) -> bytes | None:
    """Everything ``sock`` sends until it shuts down its side, or ``None``
    past ``limit`` bytes; ``TimeoutError`` past ``deadline``
    (``time.monotonic``), for all the reads together, not each one.  The
    daemon reads its requests with it too."""
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the other end took too long")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def ask(socket_path: str, request: bytes, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, bytes]:
    """Send ``request`` to the daemon and return its decoded reply.  Raises
    ``OSError`` (unreachable, timed out) or :class:`ReplyError`."""
    deadline = time.monotonic() + timeout
    sock = _sock.socket(_sock.AF_UNIX, _sock.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        # struct ucred {pid, uid, gid}: only a daemon running as this user or
        # root may answer, never one that squats on the path
        peercred = getattr(_sock, "SO_PEERCRED", None)
        if peercred is None:
            raise ReplyError("this system cannot tell who runs the daemon (no SO_PEERCRED)")
        cred = sock.getsockopt(_sock.SOL_SOCKET, peercred, 12)
        uid = int.from_bytes(cred[4:8], sys.byteorder)
        if uid not in (posix.geteuid(), 0):
            raise ReplyError(f"the socket's server runs as uid {uid}, not as this user or root")
        sock.sendall(request)
        sock.shutdown(_sock.SHUT_WR)
        data = read_to_end(sock, MAX_REPLY, deadline)
        if data is None:
            raise ReplyError("reply too long")
    finally:
        sock.close()
    return decode_reply(data)


def fallback_argv(config: str | None, rest: list[str]) -> list[str]:
    """``nxauth authorized-keys`` in-process, with this interpreter."""
    argv = [sys.executable, "-I", "-m", "nxauth"]
    if config:
        argv += ["--config", config]
    return [*argv, "authorized-keys", *rest]


def parse_args(argv: list[str]) -> tuple[str, str | None, float, bool, list[str]]:
    """``(socket, config, timeout, fallback, [user, type, key, (connection)])``;
    ``ValueError`` with the usage on a bad command line."""
    socket_path: str | None = None
    config: str | None = None
    timeout = DEFAULT_TIMEOUT
    fallback = True
    index = 0
    while index < len(argv) and argv[index].startswith("--"):
        option = argv[index]
        if option == "--no-fallback":
            fallback = False
            index += 1
            continue
        if option not in ("--socket", "--config", "--timeout") or index + 1 >= len(argv):
            raise ValueError(USAGE)
        value = argv[index + 1]
        index += 2
        if option == "--socket":
            socket_path = value
        elif option == "--config":
            config = value
        else:
            try:
                timeout = float(value)
            except ValueError:
                raise ValueError(USAGE) from None
            if not 0 < timeout <= 3600:
                raise ValueError(USAGE)
    rest = argv[index:]
    if socket_path is None or len(rest) not in (3, 4) or any("\0" in item for item in rest):
        raise ValueError(USAGE)
    return socket_path, config, timeout, fallback, rest


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        socket_path, config, timeout, fallback, rest = parse_args(args)
    except ValueError as exc:
        sys.stderr.write(f"nxauth: {exc}\n")
        return 2
    request = encode_request(config, rest[0], rest[1], rest[2], rest[3] if len(rest) == 4 else None)
    try:
        status, body = ask(socket_path, request, timeout)
    except (OSError, ReplyError) as exc:
        why = f"{socket_path}: {type(exc).__name__}: {exc}"
    else:
        if status == STATUS_OK:
            if body:
                out = sys.stdout.buffer
                out.write(body)
                out.flush()
            return 0
        if status != STATUS_OTHER_CONFIG:
            return status  # the daemon's error, already logged there; print nothing
        why = f"{socket_path}: the daemon serves another configuration"
    if not fallback:
        sys.stderr.write(f"nxauth: authorized-keys daemon unreachable: {why}\n")
        return STATUS_ERROR
    posix.putenv(FALLBACK_ENV, why[:500])
    argv_fallback = fallback_argv(config, rest)
    try:
        posix.execv(argv_fallback[0], argv_fallback)  # this interpreter, fixed arguments
    except OSError as exc:
        sys.stderr.write(f"nxauth: cannot run {argv_fallback[0]}: {exc}\n")
    return STATUS_ERROR


def run() -> None:
    """:func:`main` as a process: flush what it wrote and ``_exit`` with
    its status, skipping the interpreter's finalization.  Nothing else is
    held: the socket is closed and nothing is buffered but the output."""
    status = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # sshd went away: what it read is all it gets
        status = status or STATUS_ERROR
    posix._exit(status)


if __name__ == "__main__":
    run()
