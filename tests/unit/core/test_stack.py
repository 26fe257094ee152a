"""The stack evaluator: a table that documents each control flag, and a
property test against a small reference model."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nxauth import Control, Decision, Reason, Verdict
from nxauth.core.stack import Step, evaluate

R, Q, S, O = Control.REQUIRED, Control.REQUISITE, Control.SUFFICIENT, Control.OPTIONAL
ALLOW = "allow"
DENY = "deny"
ABSTAIN = "abstain"
RAISE = "raise"
WRONG = "wrong-type"

REASONS = [Reason.BAD_PASSWORD, Reason.UNKNOWN_USER, Reason.DISABLED, Reason.NOT_LISTED]


def _call(outcome: str, index: int, calls: list[int]) -> Callable[[], object]:
    def call() -> object:
        calls.append(index)
        if outcome == ALLOW:
            return Verdict.allow(groups={f"g{index}"})
        if outcome == DENY:
            return Verdict.deny(REASONS[index % len(REASONS)], f"entry {index}")
        if outcome == ABSTAIN:
            return Verdict.abstain()
        if outcome == RAISE:
            raise RuntimeError(f"backend {index} broke")
        return True  # a backend that returns a bool instead of a Verdict

    return call


def run(entries: list[tuple[Control, str]]) -> tuple[bool, Reason, list[int], str | None]:
    calls: list[int] = []
    steps = [Step(f"b{i}", control, _call(outcome, i, calls)) for i, (control, outcome) in enumerate(entries)]
    result = evaluate(steps)
    return result.allowed, result.verdict.reason, calls, result.decided_by


# (entries, allowed, entries called) — each row documents one rule.
TABLE = [
    pytest.param([], False, [], id="empty stack denies"),
    pytest.param([(R, ABSTAIN)], False, [0], id="only abstentions deny"),
    pytest.param([(R, ALLOW)], True, [0], id="required success allows"),
    pytest.param([(R, DENY), (R, ALLOW)], False, [0, 1], id="required failure is recorded and the stack goes on"),
    pytest.param([(Q, DENY), (R, ALLOW)], False, [0], id="requisite failure stops at once"),
    pytest.param([(Q, ALLOW), (R, ALLOW)], True, [0, 1], id="requisite success goes on"),
    pytest.param([(S, ALLOW), (R, DENY)], True, [0], id="sufficient success ends the stack"),
    pytest.param(
        [(R, DENY), (S, ALLOW), (R, ALLOW)], False, [0, 1], id="sufficient after a required failure ends failed"
    ),
    pytest.param([(S, DENY), (R, ALLOW)], True, [0, 1], id="sufficient failure is ignored"),
    pytest.param([(S, DENY)], False, [0], id="sufficient failure alone denies (no success)"),
    pytest.param([(O, ALLOW)], True, [0], id="optional success counts when nothing else decided"),
    pytest.param([(O, DENY), (R, ALLOW)], True, [0, 1], id="optional failure is ignored"),
    pytest.param([(O, ALLOW), (R, DENY)], False, [0, 1], id="optional success does not beat a required failure"),
    pytest.param([(S, ABSTAIN), (R, ALLOW)], True, [0, 1], id="abstention is ignored whatever the flag"),
    pytest.param([(R, RAISE), (O, ALLOW)], False, [0, 1], id="exception is a required failure, never an allow"),
    pytest.param([(S, RAISE), (R, ABSTAIN)], False, [0, 1], id="exception in sufficient is ignored, then no success"),
    pytest.param([(R, WRONG)], False, [0], id="a return value that is not a Verdict denies"),
]


@pytest.mark.parametrize(("entries", "allowed", "called"), TABLE)
def test_control_flags(entries: list[tuple[Control, str]], allowed: bool, called: list[int]) -> None:
    result_allowed, reason, calls, _ = run(entries)
    assert result_allowed is allowed
    assert calls == called
    if not allowed:
        assert reason is not Reason.OK


def test_reason_of_first_required_failure_wins() -> None:
    allowed, reason, _, decided_by = run([(O, DENY), (R, ABSTAIN), (R, DENY), (R, DENY)])
    assert not allowed
    assert reason is REASONS[2]
    assert decided_by == "b2"


def test_exception_reason_is_backend_error() -> None:
    allowed, reason, _, _ = run([(R, RAISE)])
    assert (allowed, reason) == (False, Reason.BACKEND_ERROR)


def test_empty_and_abstaining_reason_is_no_decision() -> None:
    assert run([])[1] is Reason.NO_DECISION
    assert run([(R, ABSTAIN), (S, ABSTAIN)])[1] is Reason.NO_DECISION


def test_timeout_denies_and_does_not_wait() -> None:
    release = threading.Event()

    def hang() -> Verdict:
        release.wait(10)
        return Verdict.allow()

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        result = evaluate([Step("slow", S, hang, timeout=0.05), Step("fast", R, lambda: Verdict.abstain())], pool)
        release.set()
    assert not result.allowed
    assert result.trail[0].verdict.reason is Reason.TIMEOUT


# ------------------------------------------------------------ property test


def reference(entries: list[tuple[Control, str]]) -> tuple[bool, int]:
    """The Linux-PAM rules, written plainly: (allowed, number of entries called)."""
    failed = False
    succeeded = False
    for index, (control, outcome) in enumerate(entries):
        if outcome == ABSTAIN:
            continue
        good = outcome == ALLOW
        if control is S:
            if good:
                return (not failed, index + 1)
            continue
        if control is O:
            succeeded = succeeded or good
            continue
        if good:
            succeeded = True
        else:
            failed = True
            if control is Q:
                return (False, index + 1)
    return (succeeded and not failed, len(entries))


entry = st.tuples(st.sampled_from([R, Q, S, O]), st.sampled_from([ALLOW, DENY, ABSTAIN, RAISE, WRONG]))


@settings(max_examples=800, deadline=None)
@given(st.lists(entry, max_size=8))
def test_evaluator_matches_reference_model(entries: list[tuple[Control, str]]) -> None:
    allowed, reason, calls, _ = run(entries)
    expected_allowed, expected_calls = reference(entries)
    assert allowed is expected_allowed
    assert calls == list(range(expected_calls))
    if allowed:
        assert reason is Reason.OK
        # an allow needs at least one backend that really allowed
        assert any(outcome == ALLOW for _, outcome in entries)
    else:
        assert reason is not Reason.OK


@settings(max_examples=300, deadline=None)
@given(st.lists(entry, max_size=8))
def test_a_stack_without_a_real_allow_never_allows(entries: list[tuple[Control, str]]) -> None:
    entries = [(c, DENY if o == ALLOW else o) for c, o in entries]
    assert run(entries)[0] is False


def test_allowed_verdict_carries_the_allowing_entries() -> None:
    calls: list[int] = []
    result = evaluate([Step("a", O, _call(ALLOW, 0, calls)), Step("b", R, _call(ALLOW, 1, calls))])
    assert result.allowed
    assert [o.name for o in result.allowed_by] == ["a", "b"]
    assert result.verdict.decision is Decision.ALLOW
