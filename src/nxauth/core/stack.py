"""Stack evaluation with Linux-PAM control flags.

``required``   a failure is recorded and the stack goes on; the stack fails.
``requisite``  a failure stops the stack at once; the stack fails.
``sufficient`` a success ends the stack with success, unless a required
               entry failed before (then it ends with that failure);
               a failure is ignored.
``optional``   a success counts; a failure is ignored.

An abstention (``Verdict.abstain()``, PAM_IGNORE) is ignored whatever the
flag.  A stack with no success, or only abstentions, or no entries, denies.
A backend that raises, or exceeds its timeout, is a deny with
:attr:`Reason.BACKEND_ERROR` / :attr:`Reason.TIMEOUT`: never an allow.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, final

from nxauth.admission import Overloaded
from nxauth.config import Control
from nxauth.details import vet_detail
from nxauth.model import ConversationFailed, ConversationUnavailable, Decision, Reason, Verdict

__all__ = ["StackResult", "Step", "StepOutcome", "evaluate", "merge_allowed", "run_step"]

log = logging.getLogger("nxauth.stack")


@final
@dataclass(frozen=True, slots=True)
class Step:
    """One stack entry, ready to run: its instance name, flag, and the call."""

    name: str
    control: Control
    call: Callable[[], Any]
    timeout: float | None = None
    #: the detail words the backend declared: any other detail it gives is dropped
    declared: frozenset[str] = frozenset()


@final
@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What one entry said, as recorded in the trail."""

    name: str
    control: Control
    verdict: Verdict


@final
@dataclass(frozen=True, slots=True)
class StackResult:
    """The stack's decision, the entry that decided it, and the whole trail."""

    verdict: Verdict
    decided_by: str | None
    allowed_by: tuple[StepOutcome, ...]
    trail: tuple[StepOutcome, ...]

    @property
    def allowed(self) -> bool:
        return self.verdict.decision is Decision.ALLOW


def run_step(step: Step, executor: concurrent.futures.Executor | None = None) -> Verdict:
    """Call one backend and turn whatever happens into a verdict.

    Anything but a :class:`Verdict` (an exception, a timeout, a wrong return
    type) is a deny.  With a timeout the call runs on ``executor``; a call
    that overruns is abandoned (it finishes in its thread) and denied.

    The verdict's ``detail`` is safe for the audit trail by construction:
    the backend's own detail is kept only when it is one of the words the
    backend declared (:func:`nxauth.details.vet_detail`); the stack's own
    verdicts carry fixed words of nxauth's; no exception text is kept.
    """
    try:
        if step.timeout is not None and executor is not None:
            future = executor.submit(step.call)
            try:
                result = future.result(timeout=step.timeout)
            except concurrent.futures.TimeoutError:
                future.cancel()
                log.warning("backend %s exceeded its timeout of %gs", step.name, step.timeout)
                return Verdict.deny(Reason.TIMEOUT, "backend-timeout")
        else:
            result = step.call()
    except ConversationUnavailable:
        return Verdict.deny(Reason.CONVERSATION_UNAVAILABLE)
    except ConversationFailed:
        return Verdict.deny(Reason.CONVERSATION_FAILED)
    except Overloaded as exc:  # the admission gate's refusal: its word is nxauth's own
        return Verdict.deny(Reason.OVERLOADED, f"admission-{exc.word}")
    except Exception as exc:  # noqa: BLE001 - every failure of a backend is a deny
        # the type only: an exception's text may carry what the backend was given
        log.warning("backend %s raised %s", step.name, type(exc).__name__)
        return Verdict.deny(Reason.BACKEND_ERROR, "backend-raised")
    if not isinstance(result, Verdict):
        return Verdict.deny(Reason.BACKEND_ERROR, "not-a-verdict")
    if result.detail:
        vetted = vet_detail(result.detail, step.declared)
        if vetted != result.detail:
            result = dataclasses.replace(result, detail=vetted)
    return result


def evaluate(steps: Sequence[Step], executor: concurrent.futures.Executor | None = None) -> StackResult:
    """Run the steps in order and apply the control flags."""
    trail: list[StepOutcome] = []
    allows: list[StepOutcome] = []
    failure: StepOutcome | None = None  # first failure of a required/requisite entry
    ignored: StepOutcome | None = None  # first ignored failure, for a more precise reason
    for step in steps:
        verdict = run_step(step, executor)
        outcome = StepOutcome(step.name, step.control, verdict)
        trail.append(outcome)
        decision = verdict.decision
        if decision is Decision.ABSTAIN:
            continue
        control = step.control
        if decision is Decision.ALLOW:
            if control is Control.SUFFICIENT:
                if failure is None:
                    allows.append(outcome)
                    return _finish(trail, allows, failure, ignored, decided_by=step.name)
                return _finish(trail, allows, failure, ignored, decided_by=failure.name)
            allows.append(outcome)
            continue
        # a deny
        if control is Control.REQUIRED or control is Control.REQUISITE:
            if failure is None:
                failure = outcome
            if control is Control.REQUISITE:
                return _finish(trail, allows, failure, ignored, decided_by=failure.name)
        elif ignored is None:
            ignored = outcome
    return _finish(trail, allows, failure, ignored, decided_by=None)


def _finish(
    trail: list[StepOutcome],
    allows: list[StepOutcome],
    failure: StepOutcome | None,
    ignored: StepOutcome | None,
    *,
    decided_by: str | None,
) -> StackResult:
    if failure is not None:
        return StackResult(failure.verdict, failure.name, tuple(allows), tuple(trail))
    if allows:
        return StackResult(allows[0].verdict, decided_by or allows[0].name, tuple(allows), tuple(trail))
    if ignored is not None:
        return StackResult(ignored.verdict, ignored.name, (), tuple(trail))
    detail = "empty-stack" if not trail else "every-backend-abstained"
    return StackResult(Verdict.deny(Reason.NO_DECISION, detail), None, (), tuple(trail))


def merge_allowed(outcomes: Iterable[StepOutcome]) -> tuple[frozenset[str], Mapping[str, Any]]:
    """The groups and attributes of the allowing verdicts (the first value of
    an attribute wins)."""
    groups: set[str] = set()
    attributes: dict[str, Any] = {}
    for outcome in outcomes:
        verdict = outcome.verdict
        if verdict.decision is Decision.ALLOW:
            groups.update(verdict.groups)
            for key, value in verdict.attributes.items():
                attributes.setdefault(key, value)
    return frozenset(groups), MappingProxyType(attributes)
