"""Internal: a ``login_async`` that its caller cancelled, told to the login
still running in the thread pool, so that it never takes an identity nobody
will receive."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar, final

__all__ = ["Cancel", "async_relay", "run_cancellable"]

_T = TypeVar("_T")


@final
class Cancel:
    """Whichever comes first, under one lock: the caller's cancellation or
    the login's commit (the session taking the identity)."""

    __slots__ = ("_lock", "_waiting", "cancelled", "committed")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: set[concurrent.futures.Future[Any]] = set()
        self.cancelled = False
        self.committed = False

    def cancel(self) -> bool:
        """Cancel; True if the login had committed already (to be taken back).
        A question the login is waiting for is cancelled too: its thread comes
        back (the backend sees the conversation fail) instead of waiting for an
        answer nobody will give."""
        with self._lock:
            self.cancelled = True
            waiting, self._waiting = self._waiting, set()
            committed = self.committed
        for future in waiting:
            future.cancel()
        return committed

    def wait(self, future: concurrent.futures.Future[_T]) -> _T:
        """``future.result()``, given up (``CancelledError``) when the login is cancelled."""
        with self._lock:
            if self.cancelled:
                future.cancel()
            else:
                self._waiting.add(future)
        try:
            return future.result()
        finally:
            with self._lock:
                self._waiting.discard(future)

    def commit(self, take: Callable[[], None]) -> bool:
        """Run ``take`` unless cancelled; False (and nothing taken) if cancelled."""
        with self._lock:
            if self.cancelled:
                return False
            take()
            self.committed = True
            return True


async def run_cancellable(
    pool: concurrent.futures.Executor,
    login: Callable[[Cancel], _T],
    take_back: Callable[[], None],
    cancel: Cancel | None = None,
) -> _T:
    """``login(cancel)`` in ``pool``, awaited.  Cancelled, the login is not
    stopped (a backend cannot be interrupted) but told: it then fails instead
    of committing, and if it had committed already ``take_back()`` runs."""
    cancel = cancel or Cancel()
    future = asyncio.wrap_future(pool.submit(login, cancel))
    try:
        return await asyncio.shield(future)  # the login runs to its end and sees the cancellation
    except asyncio.CancelledError:
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning
        if cancel.cancel():
            take_back()
        raise


def async_relay(conversation: Any, loop: asyncio.AbstractEventLoop, cancel: Cancel) -> Any:
    """``conversation`` as a blocking callable for the pool's thread (a
    coroutine function is run on ``loop``; the wait for it ends when the
    login is cancelled, so an abandoned login gives its thread back)."""
    if conversation is None or not inspect.iscoroutinefunction(conversation):
        return conversation

    def relay(prompt: str, echo: bool) -> Any:
        return cancel.wait(asyncio.run_coroutine_threadsafe(conversation(prompt, echo), loop))

    return relay
