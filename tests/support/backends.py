"""Backends for the tests of the exchange and the session (in-memory ones are in nxauth.testing)."""

from __future__ import annotations

import time

import nxauth


class LateAllow:
    """A backend that allows everyone, after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def authenticate(self, attempt: nxauth.Attempt) -> nxauth.Verdict:
        time.sleep(self.delay)
        return nxauth.Verdict.allow()

    def check_account(self, identity: nxauth.Identity) -> nxauth.Verdict:
        return nxauth.Verdict.allow()
