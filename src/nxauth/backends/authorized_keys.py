"""The ``authorized_keys`` key source: a file in sshd's authorized_keys format.

The file is read into an index keyed on the key blob, and re-read when its
size, modification time or inode changes (checked with one ``stat`` per
lookup).  A malformed line is logged with its number and skipped.  A file that
is group- or world-writable is refused, as sshd's StrictModes would.

Options: ``path`` (required), ``account`` (the account the keys are for;
default: the transport account).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from pathlib import Path
from typing import Any, final

from nxauth.errors import BackendError
from nxauth.keys.authorized_keys import AuthorizedKey, read_authorized_keys
from nxauth.plugins.hookspecs import hookimpl
from nxauth.plugins.registry import BackendContext, BackendRegistry

__all__ = ["AuthorizedKeysFile"]

log = logging.getLogger("nxauth.backends.authorized_keys")


@final
class _Lookup:
    __slots__ = ("_entries", "_index")

    def __init__(self, index: dict[bytes, list[AuthorizedKey]], entries: list[AuthorizedKey]) -> None:
        self._index = index
        self._entries = entries

    def find(self, blob: bytes) -> list[AuthorizedKey]:
        return list(self._index.get(blob, ()))

    def __iter__(self) -> Any:
        return iter(self._entries)


_EMPTY = _Lookup({}, [])


@final
class AuthorizedKeysFile:
    """Key source over one authorized_keys file, indexed and reloaded on change."""

    def __init__(self, path: str | os.PathLike[str], *, account: str) -> None:
        self.path = Path(path)
        self.account = account
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int, int] | None = None
        self._lookup = _EMPTY

    def _load(self) -> _Lookup:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            raise BackendError(f"{self.path}: no such file") from None
        except OSError as exc:
            raise BackendError(f"{self.path}: {exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):
            raise BackendError(f"{self.path}: not a regular file")
        if info.st_mode & 0o022:
            raise BackendError(f"{self.path}: writable by group or others (mode {info.st_mode & 0o777:o}); refused")
        signature = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        if signature == self._signature:
            return self._lookup
        with self._lock:
            if signature == self._signature:
                return self._lookup
            try:
                entries, errors = read_authorized_keys(self.path)
            except OSError as exc:
                raise BackendError(f"{self.path}: {exc.strerror}") from None
            for error in errors:
                log.warning("%s: %s (line skipped)", self.path, error)
            index: dict[bytes, list[AuthorizedKey]] = {}
            for entry in entries:
                index.setdefault(entry.key.blob, []).append(entry)
            self._lookup = _Lookup(index, entries)
            self._signature = signature
            log.info("%s: %d keys loaded", self.path, len(entries))
            return self._lookup

    def authorized_keys(self, account: str) -> _Lookup:
        if account != self.account:
            return _EMPTY
        return self._load()

    def __repr__(self) -> str:
        return f"AuthorizedKeysFile({str(self.path)!r})"


def build(context: BackendContext) -> AuthorizedKeysFile:
    path = context.options.string("path")
    if not path:
        raise context.error("path", "is required (the authorized_keys file)")
    resolved = context.path(path)
    account = context.options.string("account", context.transport_account)
    return AuthorizedKeysFile(resolved, account=account)


@hookimpl
def nxauth_register_backends(registry: BackendRegistry) -> None:
    registry.add("authorized_keys", build)
