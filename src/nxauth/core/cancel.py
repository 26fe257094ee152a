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

    __slots__ = ("_lock", "cancelled", "committed")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cancelled = False
        self.committed = False

    def cancel(self) -> bool:
        """Cancel; True if the login had committed already (to be taken back)."""
        with self._lock:
            self.cancelled = True
            return self.committed

    def commit(self, take: Callable[[], None]) -> bool:
        """Run ``take`` unless cancelled; False (and nothing taken) if cancelled."""
        with self._lock:
            if self.cancelled:
                return False
            take()
            self.committed = True
            return True


async def run_cancellable(
    pool: concurrent.futures.Executor, login: Callable[[Cancel], _T], take_back: Callable[[], None]
) -> _T:
    """``login(cancel)`` in ``pool``, awaited.  Cancelled, the login is not
    stopped (a backend cannot be interrupted) but told: it then fails instead
    of committing, and if it had committed already ``take_back()`` runs."""
    cancel = Cancel()
    future = asyncio.wrap_future(pool.submit(login, cancel))
    try:
        return await asyncio.shield(future)  # the login runs to its end and sees the cancellation
    except asyncio.CancelledError:
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning
        if cancel.cancel():
            take_back()
        raise


def async_relay(conversation: Any, loop: asyncio.AbstractEventLoop) -> Any:
    """``conversation`` as a blocking callable for the pool's thread (a
    coroutine function is run on ``loop``)."""
    if conversation is None or not inspect.iscoroutinefunction(conversation):
        return conversation

    def relay(prompt: str, echo: bool) -> Any:
        return asyncio.run_coroutine_threadsafe(conversation(prompt, echo), loop).result()

    return relay
