"""Internal: what a backend's text (a verdict's detail, a PAM message) may
put in the audit trail of a stage-2 decision."""

from __future__ import annotations

from collections.abc import Sequence

from nxauth.model import Attempt, Secret, Verdict

__all__ = ["scrub", "trail_detail"]


def trail_detail(verdict: Verdict, attempt: Attempt) -> str:
    parts: Sequence[str] = [verdict.detail] if verdict.detail else []
    if attempt.messages:
        parts = [*parts, *("msg: " + m for m in attempt.messages)]
    return scrub("; ".join(parts), attempt.password)[:500]


def scrub(text: str, password: Secret) -> str:
    """Defence in depth: a backend's detail or message (an exception text, a
    PAM message) must not carry the password into the audit trail."""
    secret = password.reveal()
    return text.replace(secret, "***") if secret and secret in text else text
