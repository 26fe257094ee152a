"""Special files to point nxauth at (issue 17, class 6): a FIFO, devices, a
directory and a file over the size limit, and a runner that proves a call
returns at once instead of hanging on one of them."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: how long "at once" may take, generously (a hang is forever)
PROMPT = 10.0


def special_path(tmp_path: Path, kind: str, *, huge: int = 0) -> Path:
    """A path of ``kind``: ``fifo``, ``directory``, ``dev-null``,
    ``dev-zero``, ``dev-tty`` or ``huge`` (a sparse file of ``huge`` bytes)."""
    if kind == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path, 0o600)
        return path
    if kind == "directory":
        path = tmp_path / "directory"
        path.mkdir(mode=0o700)
        return path
    if kind == "huge":
        path = tmp_path / "huge"
        with open(path, "wb") as handle:
            handle.truncate(huge)
        os.chmod(path, 0o600)
        return path
    return Path("/dev/" + kind.removeprefix("dev-"))


def returns_at_once(call: Callable[[], T], *, fifo: Path | None = None) -> T | BaseException:
    """Run ``call`` in a thread; its result or exception, or fail if it has
    not returned within :data:`PROMPT` seconds.  A reader blocked in
    ``open`` on ``fifo`` is released (a writer opens and closes it) so that
    the thread does not outlive the test."""
    box: list[T | BaseException] = []

    def run() -> None:
        try:
            box.append(call())
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(PROMPT)
    hung = thread.is_alive()
    if hung and fifo is not None:
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(PROMPT)
    assert not hung, "the call hung on a special file"
    return box[0]
