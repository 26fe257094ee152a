"""Handing an audit event to every ``nxauth_auth_event`` implementation:
bounded in time, never raising into the decision, never dropping an event
for a sink that is merely slow.

Internal.  nxauth's own sinks (:mod:`nxauth.core.audit`, and
:class:`nxauth.testing.RecordingSink`) run in the caller's thread: each is
bounded by itself (the syslog socket sends with a timeout; the JSON Lines
file is a local append, see ``docs/security.md``).  Every other
implementation, a third-party observer, has its own daemon thread
(``nxauth-observer``) and queue, so one stuck observer never holds another
back.  The caller waits for the observers together at most
``audit.sink_timeout`` from the moment it hands the event over; an observer
that has not finished by then is a failing sink *for that event* (the
login goes on; with ``audit.required`` it is denied), but the event stays
in its queue and reaches it when it catches up.  An observer whose queue is
full (:data:`QUEUE_SIZE` events behind a stuck one) loses that event, which
is logged.  An observer still running an earlier event for longer than the
limit is stuck: later events are queued for it without waiting at all.

Whatever an observer raises, ``Exception`` or ``BaseException``
(``asyncio.CancelledError``, ``GeneratorExit``, ``KeyboardInterrupt``,
``SystemExit``), it is recorded as that sink's failure and the other sinks
still see the event.  A ``KeyboardInterrupt`` or ``SystemExit`` raised by a
sink in the caller's thread (a signal arriving there) is re-raised once
every sink has been handed the event; the session counts and closes before
it lets it through (see :mod:`nxauth.core.session`).  One raised on an
observer thread is only that observer's failure: it is no signal.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Final, final

from nxauth.plugins.manager import call_one, implementations

if TYPE_CHECKING:
    import pluggy
    from pluggy import HookImpl

    from nxauth.model import AuthEvent

__all__ = ["INLINE", "Observers"]

log = logging.getLogger("nxauth")

HOOK: Final = "nxauth_auth_event"
#: Set on a class of nxauth's own (its module under ``nxauth.``) whose
#: implementation is quick and bounded by itself: it runs in the caller's thread.
INLINE: Final = "__nxauth_inline_sink__"
#: Events waiting for one observer at most; beyond, the newest is dropped (and logged).
QUEUE_SIZE: Final = 256


def _inline(impl: HookImpl) -> bool:
    cls = type(impl.plugin)
    return bool(getattr(cls, INLINE, False)) and cls.__module__.startswith("nxauth.")


@final
class _Delivery:
    """One event for one observer: done when the observer returned or raised."""

    __slots__ = ("done", "error", "event")

    def __init__(self, event: AuthEvent) -> None:
        self.event = event
        self.done = threading.Event()
        self.error: BaseException | None = None


@final
class _ObserverThread:
    """One third-party implementation, its queue and its daemon thread."""

    def __init__(self, impl: HookImpl) -> None:
        self.impl = impl
        self.name = impl.plugin_name
        self._queue: queue.Queue[_Delivery | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.busy_since: float | None = None  # monotonic start of the event now running
        self.reported_stuck = False  # "is stuck" logged once per stuck event, not per login

    def submit(self, delivery: _Delivery) -> bool:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="nxauth-observer", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(delivery)
        except queue.Full:
            return False
        return True

    def stuck(self, limit: float) -> bool:
        busy = self.busy_since
        return busy is not None and time.monotonic() - busy > limit

    def stop(self) -> None:
        with self._lock:
            if self._thread is not None:
                with contextlib.suppress(queue.Full):  # a stuck thread is a daemon: it dies with the process
                    self._queue.put_nowait(None)

    def _run(self) -> None:
        while (delivery := self._queue.get()) is not None:
            self.busy_since = time.monotonic()
            try:
                call_one(self.impl, {"event": delivery.event})
            except BaseException as exc:  # noqa: BLE001 - any exception of an observer is its failure
                delivery.error = exc
                log.error("audit sink %s failed: %s", self.name, type(exc).__name__)  # the type: no free text
            finally:
                self.busy_since = None
                self.reported_stuck = False
                delivery.done.set()


@final
class Observers:
    """The ``nxauth_auth_event`` implementations of one authenticator."""

    __slots__ = ("_inline", "_pm", "_threads", "_timeout")

    def __init__(self, pm: pluggy.PluginManager, timeout: float) -> None:
        self._pm = pm
        self._timeout = timeout
        self._inline: tuple[HookImpl, ...] = ()
        self._threads: tuple[_ObserverThread, ...] = ()
        self.refresh()

    def refresh(self) -> None:
        """Read the implementations again (once the sinks are registered)."""
        self.close()
        impls = implementations(self._pm, HOOK)
        self._inline = tuple(i for i in impls if _inline(i))
        self._threads = tuple(_ObserverThread(i) for i in impls if not _inline(i))

    def emit(self, event: AuthEvent) -> bool:
        """Hand ``event`` to every implementation; False if any failed or
        overran.  Raises only a ``KeyboardInterrupt`` or ``SystemExit`` that
        arrived in this thread, after every sink was handed the event."""
        deadline = time.monotonic() + self._timeout
        ok = True
        interrupt: BaseException | None = None
        waiting: list[tuple[_ObserverThread, _Delivery]] = []
        for observer in self._threads:  # handed over first: they run while the inline sinks do
            delivery = _Delivery(event)
            if not observer.submit(delivery):
                ok = False
                log.error("audit sink %s has %d events waiting: event dropped for it", observer.name, QUEUE_SIZE)
            elif observer.stuck(self._timeout):
                ok = False  # queued, not waited for
                if not observer.reported_stuck:
                    observer.reported_stuck = True
                    log.error("audit sink %s is stuck: events queued for it, not waited for", observer.name)
            else:
                waiting.append((observer, delivery))
        for impl in self._inline:
            try:
                call_one(impl, {"event": event})
            except (KeyboardInterrupt, SystemExit) as exc:
                ok = False
                interrupt = interrupt or exc
                log.error("audit sink %s failed: %s", impl.plugin_name, type(exc).__name__)
            except BaseException as exc:  # noqa: BLE001 - any exception of a sink is its failure
                ok = False
                log.error("audit sink %s failed: %s", impl.plugin_name, type(exc).__name__)
        for observer, delivery in waiting:
            if not delivery.done.wait(max(0.0, deadline - time.monotonic())):
                ok = False
                log.error("audit sink %s did not finish within %.3f s", observer.name, self._timeout)
            elif delivery.error is not None:
                ok = False  # logged by its thread
        if interrupt is not None:
            raise interrupt
        return ok

    def close(self) -> None:
        for observer in self._threads:
            observer.stop()
