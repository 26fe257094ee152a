"""``nxauth authorized-keys-daemon``: stage 1 for sshd, answered by a resident process.

sshd runs its ``AuthorizedKeysCommand`` twice per login.  A Python command
that builds nxauth from scratch each time costs about 100 ms a run on a small
machine, most of it interpreter start-up and imports; sshd's own scan of a
one-line ``authorized_keys`` costs nothing.  So, as ``sss_ssh_authorizedkeys``
asks sssd, the command can be a tiny client
(:mod:`nxauth.integrations.keyd_client`, run as ``python -I -S``) that asks
this daemon over a UNIX socket.

The daemon holds one :class:`~nxauth.Authenticator` (plugins and audit sinks
included) and answers each request with :func:`~nxauth.integrations.openssh.authorized_keys_line`,
the function ``nxauth authorized-keys`` runs in-process: one key policy,
one audit trail.

* The configuration file is checked on every request (one ``stat``) and the
  authenticator rebuilt when it changed; a configuration that no longer
  loads answers "configuration error" (sshd then refuses the key) until it
  is fixed.  ``SIGHUP`` rebuilds at once and logs whether it loaded.  Keys
  are read from their sources on every request, so ``nxauth keys remove``
  takes effect immediately.
* The socket is created 0600 (umask, then chmod) in a directory that neither group nor
  others can write; a peer whose uid is neither the daemon's nor root's is
  refused (``SO_PEERCRED``), and the client likewise trusts only a daemon
  running as itself or root.  Run it as the ``AuthorizedKeysCommandUser``.
* Requests and replies are bounded in size and time (the whole exchange,
  not each read); a fixed pool of worker threads answers, and connections
  beyond it wait in the socket's backlog.
* ``SIGTERM``/``SIGINT`` stop it and remove the socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from nxauth.errors import ConfigError, NxauthError, PluginError, StoreError
from nxauth.integrations.keyd_client import (
    MAGIC,
    MAX_REQUEST,
    STATUS_CONFIG,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_OTHER_CONFIG,
    STATUS_STORE,
    read_to_end,
)

if TYPE_CHECKING:
    from nxauth.core.authenticator import Authenticator

__all__ = [
    "DEFAULT_SOCKET_NAME",
    "AuthorizedKeysDaemon",
    "KeyAnswerer",
    "RequestError",
    "decode_request",
    "default_socket_path",
    "encode_reply",
]

log = logging.getLogger("nxauth.keyd")

#: The socket's file name in the state directory.
DEFAULT_SOCKET_NAME: Final = "authorized-keys.sock"
#: A UNIX socket path must fit ``sun_path`` (108 bytes on Linux, NUL included).
MAX_SOCKET_PATH: Final = 107
_PEERCRED: Final = struct.Struct("3i")


class RequestError(ValueError):
    """A request that is not a well-formed one."""


def default_socket_path(state_dir: Path) -> Path:
    return state_dir / DEFAULT_SOCKET_NAME


def decode_request(data: bytes) -> tuple[str | None, str, str, str, str | None]:
    """``(config, user, key_type, key, connection)`` of a request (see
    :mod:`~nxauth.integrations.keyd_client`); strings decoded as ``sys.argv``
    is (UTF-8, surrogate escapes), empty optional fields as ``None``."""
    head, newline, rest = data.partition(b"\n")
    if head != MAGIC or not newline:
        raise RequestError("not an NXAK1 request")
    fields = rest.split(b"\0")
    if len(fields) != 5:
        raise RequestError(f"{len(fields)} fields, expected 5")
    config, user, key_type, key, connection = (os.fsdecode(item) for item in fields)
    if not user or not key_type or not key:
        raise RequestError("empty user, key type or key")
    return config or None, user, key_type, key, connection or None


def encode_reply(status: int, body: str = "") -> bytes:
    data = body.encode("utf-8", "surrogateescape")
    return MAGIC + f" {status} {len(data)}\n".encode("ascii") + data


def _stamp(path: Path) -> tuple[int, ...]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _status_of(exc: BaseException) -> int:
    if isinstance(exc, ConfigError | PluginError):
        return STATUS_CONFIG
    if isinstance(exc, StoreError):
        return STATUS_STORE
    return STATUS_ERROR


class _Generation:
    """One built configuration (or the error that building it raised), with
    the number of requests using it: a retired one is closed by its last user."""

    def __init__(self, stamp: tuple[int, ...] | None, auth: Authenticator | None, status: int = STATUS_OK) -> None:
        self.stamp = stamp
        self.auth = auth
        self.status = status
        self.users = 0
        self.retired = False


class KeyAnswerer:
    """Answers ``authorized-keys`` requests for one configuration file,
    rebuilding the authenticator when the file changes.

    ``build(path)`` makes the authenticator (default:
    :meth:`Authenticator.from_file <nxauth.Authenticator.from_file>`, or
    the embedded default when ``config_path`` is ``None``).  The first build
    raises on error, so that a daemon never starts on a broken
    configuration; later ones turn the error into a status."""

    def __init__(
        self,
        config_path: str | os.PathLike[str] | None,
        *,
        build: Callable[[Path | None], Authenticator] | None = None,
    ) -> None:
        self.config_path = Path(config_path).absolute() if config_path is not None else None
        self._real = os.path.realpath(self.config_path) if self.config_path is not None else None
        self._build_auth = build or _default_build
        self._lock = threading.Lock()
        stamp = _stamp(self.config_path) if self.config_path is not None else None
        self._current = _Generation(stamp, self._build_auth(self.config_path))

    @property
    def authenticator(self) -> Authenticator | None:
        """The authenticator answering now (``None`` while the configuration is broken)."""
        return self._current.auth

    def reload(self) -> bool:
        """Rebuild now, even if the file looks unchanged (``SIGHUP``), and
        log the outcome; ``True`` when the configuration loads."""
        if self.config_path is None:
            log.info("no configuration file (the embedded default): nothing to reload")
            return True
        with self._lock:
            return self._refresh(force=True).auth is not None

    def _refresh(self, *, force: bool) -> _Generation:
        """The current generation, rebuilt first when the file changed (or
        ``force``); a missing or unreadable file refuses every key.  Under
        the lock, with a configuration file."""
        assert self.config_path is not None
        current = self._current
        try:
            stamp = _stamp(self.config_path)
        except OSError as exc:
            if current.stamp is None and not force:  # already said
                return current
            log.error("configuration %s: %s; refusing every key", self.config_path, exc.strerror or exc)
            return self._swap(_Generation(None, None, STATUS_CONFIG))
        if force or stamp != current.stamp:
            return self._swap(self._rebuild(stamp))
        return current

    def _acquire(self) -> _Generation:
        with self._lock:
            current = self._refresh(force=False) if self.config_path is not None else self._current
            current.users += 1
            return current

    def _rebuild(self, stamp: tuple[int, ...]) -> _Generation:
        assert self.config_path is not None
        self._real = os.path.realpath(self.config_path)  # a symlink may point elsewhere now
        try:
            auth = self._build_auth(self.config_path)
        except Exception as exc:  # noqa: BLE001 - any failure is a status, never a crash
            log.error("configuration %s no longer loads, refusing every key: %s", self.config_path, exc)
            return _Generation(stamp, None, _status_of(exc))
        log.info("configuration %s reloaded", self.config_path)
        return _Generation(stamp, auth)

    def _swap(self, new: _Generation) -> _Generation:
        old, self._current = self._current, new
        old.retired = True
        if old.users == 0:
            _close(old)
        return new

    def _release(self, generation: _Generation) -> None:
        with self._lock:
            generation.users -= 1
            if generation.retired and generation.users == 0:
                _close(generation)

    def answer(
        self, config: str | None, user: str, key_type: str, key: str, connection: str | None = None
    ) -> tuple[int, str]:
        """``(status, text)``: status 0 with the authorized_keys line (or
        ``""``), an error status, or :data:`STATUS_OTHER_CONFIG` when the
        client was given another configuration file than this one."""
        from nxauth.integrations.openssh import authorized_keys_line, peer_from_connection

        generation = self._acquire()  # first: a symlinked file may have moved, and _real with it
        try:
            if config is not None and config != self._real and os.path.realpath(config) != self._real:
                return STATUS_OTHER_CONFIG, ""
            auth = generation.auth
            if auth is None:
                return generation.status, ""
            from nxauth.core.authenticator import runtime_of

            emit = runtime_of(auth).emit
            peer = peer_from_connection(connection)
            line = authorized_keys_line(auth.config, auth.backends, emit, user, f"{key_type} {key}", peer=peer)
        except NxauthError as exc:
            log.error("authorized-keys for %r: %s", user[:100], exc)
            return _status_of(exc), ""
        except Exception:  # a bug answers "error" (sshd refuses), the daemon lives on
            log.exception("authorized-keys for %r failed", user[:100])
            return STATUS_ERROR, ""
        finally:
            self._release(generation)
        return STATUS_OK, line + "\n" if line is not None else ""

    def close(self) -> None:
        with self._lock:
            self._current.retired = True
            if self._current.users == 0:
                _close(self._current)


def _default_build(path: Path | None) -> Authenticator:
    from nxauth.config import Config
    from nxauth.core.authenticator import Authenticator

    return Authenticator.from_file(path) if path is not None else Authenticator(Config())


def _close(generation: _Generation) -> None:
    if generation.auth is not None:
        try:
            generation.auth.close()
        except Exception as exc:  # noqa: BLE001
            log.warning("closing the previous configuration failed: %s", exc)
        generation.auth = None


class AuthorizedKeysDaemon:
    """The socket side: ``workers`` threads each wait in ``accept()`` on
    ``socket_path`` and answer with ``answerer``, so that a request wakes
    one thread (on a small or virtual machine every extra wake-up shows in
    the login time) and each worker keeps its own SQLite connection.
    :meth:`serve_forever` until :meth:`shutdown`."""

    def __init__(
        self,
        answerer: KeyAnswerer,
        socket_path: str | os.PathLike[str],
        *,
        workers: int = 8,
        request_timeout: float = 5.0,
        allowed_uids: frozenset[int] | None = None,
    ) -> None:
        path = Path(socket_path).absolute()
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise ConfigError(f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes")
        if workers < 1:
            raise ConfigError("workers must be at least 1")
        if not hasattr(socket, "SO_PEERCRED"):
            raise ConfigError("the authorized-keys daemon needs SO_PEERCRED (Linux) to check who connects")
        self.answerer = answerer
        self.socket_path = path
        self.workers = workers
        self.request_timeout = request_timeout
        self.allowed_uids = allowed_uids if allowed_uids is not None else frozenset({os.geteuid(), 0})
        self._stop = threading.Event()
        self._listener = self._bind(path)
        created = os.lstat(path)
        self._identity = created.st_ino, created.st_dev

    @staticmethod
    def _bind(path: Path) -> socket.socket:
        parent = os.stat(path.parent)
        if parent.st_mode & 0o022:
            raise ConfigError(f"{path.parent} is writable by group or others: the socket would not be safe there")
        if parent.st_uid not in (os.geteuid(), 0):
            raise ConfigError(f"{path.parent} belongs to uid {parent.st_uid}, not to this user or root")
        if os.path.lexists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise ConfigError(f"{path} exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.settimeout(1.0)
                probe.connect(str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(path)  # a stale socket of a daemon that died
            except OSError as exc:
                raise ConfigError(f"{path}: cannot tell whether another daemon answers there: {exc}") from exc
            else:
                raise ConfigError(f"another daemon already answers on {path}")
            finally:
                probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(str(path))
            os.chmod(path, 0o600, follow_symlinks=False)  # explicit, not only the umask
        except OSError:
            listener.close()
            raise
        finally:
            os.umask(old)
        listener.listen(128)
        return listener

    def serve_forever(self) -> None:
        """Answer until :meth:`shutdown`; then let the workers finish the
        requests they hold and remove the socket."""
        threads = [
            threading.Thread(target=self._work, name=f"nxauth-keyd-{index}", daemon=True)
            for index in range(self.workers)
        ]
        for thread in threads:
            thread.start()
        log.info("answering sshd's AuthorizedKeysCommand on %s", self.socket_path)
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the workers blocked in accept()
            for thread in threads:
                thread.join(self.request_timeout + 1)
            self._listener.close()
            with contextlib.suppress(OSError):
                st = os.lstat(self.socket_path)
                if (st.st_ino, st.st_dev) == self._identity:  # never remove a successor's socket
                    os.unlink(self.socket_path)
            log.info("stopped answering on %s", self.socket_path)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError as exc:
                if self._stop.is_set():
                    return
                log.error("accept on %s: %s", self.socket_path, exc)
                self._stop.wait(0.1)
                continue
            if self._stop.is_set():
                conn.close()
                return
            self._serve_one(conn)

    def _serve_one(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + self.request_timeout
        try:
            with conn:
                pid, uid, _gid = _PEERCRED.unpack(
                    conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
                )
                if uid not in self.allowed_uids:
                    log.warning("refused a connection from uid %d (pid %d): not an allowed user", uid, pid)
                    return
                reply = self.respond(read_to_end(conn, MAX_REQUEST, deadline))
                conn.settimeout(max(deadline - time.monotonic(), 0.001))
                conn.sendall(reply)
        except OSError as exc:  # TimeoutError included
            log.warning("a client connection failed: %s", exc)
        except Exception:  # a bug must not cost a worker
            log.exception("answering a client failed")

    def respond(self, data: bytes | None) -> bytes:
        """The reply to one request's bytes (``None``: too long)."""
        if data is None:
            log.warning("refused a request of more than %d bytes", MAX_REQUEST)
            return encode_reply(STATUS_ERROR)
        try:
            config, user, key_type, key, connection = decode_request(data)
        except RequestError as exc:
            log.warning("refused a malformed request: %s", exc)
            return encode_reply(STATUS_ERROR)
        status, text = self.answerer.answer(config, user, key_type, key, connection)
        return encode_reply(status, text)

    def shutdown(self) -> None:
        """Stop answering (safe from a signal handler or another thread)."""
        self._stop.set()
