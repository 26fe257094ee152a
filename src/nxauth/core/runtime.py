"""What a session, and nxauth's own integrations, need of an authenticator:
the configuration, the clock, the built backends and stacks, the throttle,
the admission gate,
stage 1, the store, the thread pools, and the audit emitter.

Internal.  An :class:`~nxauth.Authenticator` builds one and never hands it
to host code: emitting audit events is nxauth's alone.  nxauth's own
integrations reach it with :func:`nxauth.core.authenticator.runtime_of`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

from nxauth.admission import Admission
from nxauth.config import Config, Control
from nxauth.core.observers import Observers
from nxauth.core.stage1 import Stage1
from nxauth.core.throttle import Throttle
from nxauth.errors import ConfigError, UsageError
from nxauth.store import open_store
from nxauth.usernames import InvalidUsername, normalize_username

if TYPE_CHECKING:
    import pluggy

    from nxauth.model import AuthEvent
    from nxauth.plugins.roles import Backend
    from nxauth.store.protocol import Store

__all__ = ["Plan", "PlannedStep", "Runtime"]

log = logging.getLogger("nxauth")

#: One stack entry bound to its backend: (instance name, control, method, timeout).
PlannedStep = tuple[str, Control, Callable[[Any], Any], float | None]


@final
@dataclass(frozen=True, slots=True)
class Plan:
    """The stacks, bound to their backends' methods once, not per login."""

    auth: tuple[PlannedStep, ...]
    account: tuple[PlannedStep, ...]
    needs_timeouts: bool
    #: the detail words each backend instance declared (``audit_details``), read once
    details: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)


@final
class Runtime:
    """The long-lived parts one authenticator owns (see the module docstring)."""

    __slots__ = (
        "_executor",
        "_lock",
        "_observers",
        "_pm",
        "_store",
        "_timeout_executor",
        "admission",
        "backends",
        "clock",
        "config",
        "login_gate",
        "plan",
        "stage1",
        "throttle",
    )

    def __init__(self, config: Config, clock: Callable[[], float], pm: pluggy.PluginManager) -> None:
        self.config = config
        self.clock = clock
        self._pm = pm
        self._observers = Observers(pm, config.audit.sink_timeout)
        self._store: Store | None = None
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._timeout_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.throttle = Throttle(lambda: self.store, config.throttle, clock=clock)
        limits = config.admission
        #: the gate in front of password hashes, shared by every backend of this authenticator
        try:
            self.admission = Admission(
                limits.hashes,
                reserve=limits.reserve,
                max_waiting=limits.queue,
                wait=limits.wait,
                halflife=limits.penalty_halflife,
            )
        except UsageError as exc:  # the one check the parser cannot make: reserve < the cores found here
            raise ConfigError(str(exc), source=config.source, key="admission.reserve") from None
        #: the gate in front of login_async's threads: ``session.workers`` logins at once, the
        #: others waiting without a thread, clean sources first (the same penalties)
        self.login_gate = Admission(config.session.workers, max_waiting=65_536, wait=limits.wait, shares=self.admission)
        self.backends: Mapping[str, Backend] = {}
        self.plan = Plan((), (), needs_timeouts=False)
        self.stage1 = Stage1(config, self.backends, self.emit, clock)

    def bind(self, backends: Mapping[str, Backend], plan: Plan) -> None:
        """Set the built backends and stacks (once, while the authenticator is built)."""
        self.backends = backends
        self.plan = plan
        self._observers.refresh()
        self.stage1 = Stage1(self.config, backends, self.emit, self.clock)

    def emit(self, event: AuthEvent) -> bool:
        """Hand ``event`` to every ``nxauth_auth_event`` implementation, each on
        its own and bounded by ``audit.sink_timeout``; False if any of them
        failed or overran (see :mod:`nxauth.core.observers`)."""
        return self._observers.emit(event)

    @property
    def store(self) -> Store:
        """The embedded store, opened on first use."""
        store = self._store
        if store is None:
            with self._lock:
                if self._store is None:
                    self._store = open_store(self.config)
                store = self._store
        return store

    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """The bounded pool that runs the synchronous core for ``login_async``
        and the embedded server's stage 1: twice ``session.workers`` threads,
        of which logins (through :attr:`login_gate`) hold at most half, so a
        stage-1 call never queues behind logins waiting for a hash."""
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = concurrent.futures.ThreadPoolExecutor(
                        max_workers=self.config.session.workers * 2, thread_name_prefix="nxauth"
                    )
        return self._executor

    def timeout_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """The pool that runs backend calls that have a timeout."""
        if self._timeout_executor is None:
            with self._lock:
                if self._timeout_executor is None:
                    self._timeout_executor = concurrent.futures.ThreadPoolExecutor(
                        max_workers=self.config.session.workers * 2, thread_name_prefix="nxauth-backend"
                    )
        return self._timeout_executor

    def timeout_of(self, name: str) -> float | None:
        """The ``timeout`` of backend instance ``name`` (``None``: none configured)."""
        declared = self.config.backends.get(name)
        return declared.timeout if declared is not None else None

    def canonical_username(self, username: object) -> str:
        """The canonical form of ``username`` (raises :class:`nxauth.InvalidUsername`)."""
        cfg = self.config.usernames
        return normalize_username(username, case=cfg.case, max_length=cfg.max_length)

    def canonical_or_none(self, username: object) -> str | None:
        """The canonical form of ``username``, or ``None`` if it is invalid."""
        try:
            return self.canonical_username(username)
        except InvalidUsername:
            return None

    def close(self) -> None:
        """Stop the pools (without waiting) and close the store."""
        self._observers.close()
        for pool in (self._executor, self._timeout_executor):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        if self._store is not None:
            self._store.close()
