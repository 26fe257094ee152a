"""Handing an audit event to every ``nxauth_auth_event`` implementation:
bounded in time, and never raising into the decision.

Internal.  nxauth's own sinks (:mod:`nxauth.core.audit`) run in the
caller's thread: each is bounded by itself (the syslog socket sends with a
timeout; the JSON Lines file is a local append, see ``docs/security.md``).
Every other implementation, a third-party observer, runs on one dedicated
daemon thread per authenticator (``nxauth-observer``), and the caller waits
for it at most ``audit.sink_timeout`` of the observer's running time: an
observer still running then is a failing sink for that event, and while it
stays stuck later events skip the observers at once (each a failing sink)
instead of waiting again.

Whatever an observer raises, ``Exception`` or ``BaseException``
(``asyncio.CancelledError``, ``GeneratorExit``, ``KeyboardInterrupt``,
``SystemExit``), it is recorded as that sink's failure and the other sinks
still see the event.  A ``KeyboardInterrupt`` or ``SystemExit`` raised by a
sink in the caller's thread (a signal arriving there) is re-raised once
every inline sink has been called; the session counts and closes before it
lets it through (see :mod:`nxauth.core.session`).  One raised on the
observer thread is only that observer's failure: it is no signal.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, final

from nxauth.core.audit import JsonLinesSink, LoggingSink, SyslogSink
from nxauth.plugins.manager import call_one, implementations

if TYPE_CHECKING:
    import pluggy
    from pluggy import HookImpl

    from nxauth.model import AuthEvent

__all__ = ["Observers"]

log = logging.getLogger("nxauth")

HOOK: Final = "nxauth_auth_event"
#: nxauth's own sinks, each bounded by itself: called in the caller's thread.
INLINE_SINKS: Final = (LoggingSink, SyslogSink, JsonLinesSink)
#: How long a caller waits for the observer thread to *start* its event when
#: the thread is busy with other events (not stuck): scheduling, not running.
START_GRACE: Final = 1.0
#: Events waiting for the observer thread at most; beyond, one is dropped.
QUEUE_SIZE: Final = 256


@final
class _Job:
    __slots__ = ("abandoned", "done", "event", "failed", "finished", "impls", "lock", "started")

    def __init__(self, impls: Sequence[HookImpl], event: AuthEvent) -> None:
        self.impls = impls
        self.event = event
        self.lock = threading.Lock()
        self.started = threading.Event()
        self.done = threading.Event()
        self.abandoned = False
        self.finished: list[str] = []  # plugin names that returned normally
        self.failed: list[tuple[str, BaseException]] = []


@final
class _ObserverThread:
    """One daemon thread calling third-party observers, one event at a time."""

    def __init__(self) -> None:
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.busy_since: float | None = None  # monotonic start of the observer now running

    def submit(self, job: _Job) -> bool:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="nxauth-observer", daemon=True)
                    self._thread.start()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            return False
        return True

    def stop(self) -> None:
        if self._thread is not None:
            with contextlib.suppress(queue.Full):  # the thread is stuck; it is a daemon
                self._queue.put_nowait(None)

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            job.started.set()
            for impl in job.impls:
                with job.lock:
                    if job.abandoned:
                        break
                self.busy_since = time.monotonic()
                try:
                    call_one(impl, {"event": job.event})
                except BaseException as exc:  # noqa: BLE001 - any exception of an observer is its failure
                    with job.lock:
                        job.failed.append((impl.plugin_name, exc))
                else:
                    with job.lock:
                        job.finished.append(impl.plugin_name)
                finally:
                    self.busy_since = None
            job.done.set()


@final
class Observers:
    """The ``nxauth_auth_event`` implementations of one authenticator."""

    __slots__ = ("_inline", "_offloaded", "_pm", "_thread", "_timeout")

    def __init__(self, pm: pluggy.PluginManager, timeout: float) -> None:
        self._pm = pm
        self._timeout = timeout
        self._inline: tuple[HookImpl, ...] = ()
        self._offloaded: tuple[HookImpl, ...] = ()
        self._thread = _ObserverThread()
        self.refresh()

    def refresh(self) -> None:
        """Read the implementations again (once the sinks are registered)."""
        impls = implementations(self._pm, HOOK)
        self._inline = tuple(i for i in impls if isinstance(i.plugin, INLINE_SINKS))
        self._offloaded = tuple(i for i in impls if not isinstance(i.plugin, INLINE_SINKS))

    def emit(self, event: AuthEvent) -> bool:
        """Hand ``event`` to every implementation; False if any failed or
        overran.  Raises only a ``KeyboardInterrupt`` or ``SystemExit`` that
        arrived in this thread, after every inline sink was called."""
        failed: list[tuple[str, BaseException | None]] = []
        interrupt: BaseException | None = None
        for impl in self._inline:
            try:
                call_one(impl, {"event": event})
            except (KeyboardInterrupt, SystemExit) as exc:
                failed.append((impl.plugin_name, exc))
                interrupt = interrupt or exc
            except BaseException as exc:  # noqa: BLE001 - any exception of a sink is its failure
                failed.append((impl.plugin_name, exc))
        if self._offloaded:
            failed.extend(self._offload(event))
        for plugin, error in failed:  # a failing sink never stops the others
            if error is None:
                log.error("audit sink %s did not finish within %.3f s: event dropped for it", plugin, self._timeout)
            else:
                log.error("audit sink %s failed: %s", plugin, type(error).__name__)
        if interrupt is not None:
            raise interrupt
        return not failed

    def _offload(self, event: AuthEvent) -> list[tuple[str, BaseException | None]]:
        impls = self._offloaded
        busy = self._thread.busy_since
        if busy is not None and time.monotonic() - busy > self._timeout:
            return [(i.plugin_name, None) for i in impls]  # stuck: do not wait again
        job = _Job(impls, event)
        if not self._thread.submit(job):
            return [(i.plugin_name, None) for i in impls]
        if job.started.wait(START_GRACE):
            job.done.wait(self._timeout)
        with job.lock:
            job.abandoned = not job.done.is_set()
            failed: list[tuple[str, BaseException | None]] = list(job.failed)
            finished = {*job.finished, *(name for name, _ in job.failed)}
        failed.extend((i.plugin_name, None) for i in impls if i.plugin_name not in finished)
        return failed

    def close(self) -> None:
        self._thread.stop()
