"""Files the safe way: every path nxauth creates gets an explicit mode, every
path a user or client names is read only if it is a small regular file.

Creating.  ``mkdir(mode)`` and ``open(..., mode)`` are masked by the process
umask, and :meth:`pathlib.Path.mkdir` with ``parents=True`` creates the
missing parents with the *default* mode (0777 under ``umask 000``).  Here
every directory and file nxauth creates is ``fchmod``/``chmod``-ed to the
mode it asked for right after creation, before any byte is written, so the
result does not depend on the umask.  Existing paths keep their mode.

Reading.  A path from a configuration, a command line or the environment of
an SSH session (``SSH_USER_AUTH``) may name a FIFO (``open`` blocks until a
writer comes), a device (``/dev/zero`` never ends, ``/dev/tty`` may become
the controlling terminal) or a directory.  :func:`read_small` opens with
``O_NONBLOCK | O_NOCTTY``, refuses anything but a regular file at once with
:class:`UnsafeFile`, then reads at most ``limit`` bytes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path
from typing import Final, final

__all__ = [
    "DIR_MODE",
    "PRIVATE_MODE",
    "PUBLIC_MODE",
    "SMALL_FILE_LIMIT",
    "UnsafeFile",
    "make_dirs",
    "open_append",
    "read_small",
    "read_small_text",
    "write_file",
]

DIR_MODE: Final = 0o700
PRIVATE_MODE: Final = 0o600
PUBLIC_MODE: Final = 0o644
#: The default bound of :func:`read_small`: configs, secrets, key files.
SMALL_FILE_LIMIT: Final = 1024 * 1024

_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_NOCTTY: Final = getattr(os, "O_NOCTTY", 0)
_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)


@final
class UnsafeFile(OSError):
    """A path names something that is not a small regular file (a FIFO, a
    device, a socket, a directory) or a file over the size limit.

    An :class:`OSError` (``errno`` ``EINVAL``, ``EISDIR`` or ``EFBIG``), so
    every caller that handles an unreadable file handles this one the same
    way; ``strerror`` is a fixed phrase nxauth chose, ``kind`` one word.
    """

    def __init__(self, code: int, kind: str, message: str, path: str) -> None:
        super().__init__(code, message, path)
        self.kind = kind


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def _refuse_special(path: str, mode: int) -> UnsafeFile:
    kind = _kind(mode)
    code = errno.EISDIR if kind == "directory" else errno.EINVAL
    article = "an" if kind[0] in "aeiou" else "a"
    return UnsafeFile(code, kind, f"is {article} {kind}, not a regular file", path)


def read_small(path: str | os.PathLike[str], *, limit: int = SMALL_FILE_LIMIT) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them.

    Never blocks on a FIFO and never takes a terminal: the file is opened
    with ``O_NONBLOCK | O_NOCTTY`` and checked with ``fstat`` before one
    byte is read.  A FIFO, device, socket or directory raises
    :class:`UnsafeFile` at once; so does a file longer than ``limit`` (the
    size is checked before and while reading).  Other errors are the
    ordinary :class:`OSError` of ``open``.
    """
    name = os.fspath(path)
    fd = os.open(name, os.O_RDONLY | _NONBLOCK | _NOCTTY | _CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _refuse_special(name, info.st_mode)
        if info.st_size > limit:
            raise UnsafeFile(errno.EFBIG, "too-large", f"is larger than {limit} bytes", name)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~_NONBLOCK)
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:  # grew while being read
            raise UnsafeFile(errno.EFBIG, "too-large", f"is larger than {limit} bytes", name)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_small_text(path: str | os.PathLike[str], *, limit: int = SMALL_FILE_LIMIT) -> str:
    """:func:`read_small` decoded as UTF-8 (``UnicodeDecodeError`` if it is not)."""
    return read_small(path, limit=limit).decode("utf-8")


def make_dirs(path: str | os.PathLike[str], mode: int = DIR_MODE) -> None:
    """Create the directory ``path`` and every missing parent, each with
    exactly ``mode`` whatever the umask.  Directories that exist are left as
    they are; a path component that is not a directory raises OSError."""
    target = Path(path)
    missing: list[Path] = []
    probe = target
    while not probe.is_dir():
        if os.path.lexists(probe):
            if probe.is_dir():  # created by another process since the check above
                break
            raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", os.fspath(probe))
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # created concurrently: its creator set its mode
        os.chmod(directory, mode, follow_symlinks=False)


def write_file(
    path: str | os.PathLike[str],
    data: bytes,
    mode: int,
    *,
    replace: bool = False,
    dir_mode: int = DIR_MODE,
) -> bool:
    """Write ``data`` to ``path`` with exactly ``mode`` from its first byte.

    The bytes go to a temporary file in the same directory (created
    ``O_EXCL | O_NOFOLLOW``, ``fchmod``-ed to ``mode``, fsync-ed), which is
    then renamed over ``path`` (``replace=True``) or hard-linked to it, so an
    existing file is never overwritten and a reader never sees a partial
    file.  Missing parents are created with ``dir_mode``.  Returns False when
    ``replace`` is False and ``path`` already exists (nothing written).
    """
    target = Path(path)
    make_dirs(target.parent, dir_mode)
    temporary = target.with_name(
        f".{target.name}.{os.urandom(6).hex()}.tmp"
    )  # secrets.token_hex, without importing random
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC | _NOFOLLOW, mode & 0o600)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(temporary, target)
            return True
        try:
            os.link(temporary, target)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def open_append(path: str | os.PathLike[str], mode: int = PRIVATE_MODE, *, dir_mode: int = DIR_MODE) -> int:
    """A descriptor open for appending to the regular file ``path``: created
    with exactly ``mode`` (and missing parents with ``dir_mode``) when it does
    not exist; an existing file keeps its mode.  Symbolic links are not
    followed, and a FIFO, device or directory raises :class:`UnsafeFile`."""
    target = os.fspath(path)
    make_dirs(Path(target).parent, dir_mode)
    flags = os.O_WRONLY | os.O_APPEND | _CLOEXEC | _NOFOLLOW | _NOCTTY
    try:
        fd = os.open(target, flags | os.O_CREAT | os.O_EXCL, mode & 0o600)
    except FileExistsError:
        fd = os.open(target, flags | _NONBLOCK)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise _refuse_special(target, info.st_mode) from None
        current = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, current & ~_NONBLOCK)
        return fd
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd
