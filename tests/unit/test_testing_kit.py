"""The testing kit: the contract suites run against the in-memory backend,
and a backend that leaks its secret fails the contract."""

from __future__ import annotations

import logging

import pytest

from nxauth import Attempt, Reason, Verdict
from nxauth.testing import (
    SENTINEL_PASSWORD,
    AccountBackendContract,
    AuthBackendContract,
    MemoryBackend,
    _assert_no_secret,
    make_attempt,
)


class TestMemoryBackendAuth(AuthBackendContract):
    @pytest.fixture
    def backend(self) -> MemoryBackend:
        return MemoryBackend({"alice": "wonderland"})

    @pytest.fixture
    def credentials(self) -> tuple[str, str]:
        return ("alice", "wonderland")


class TestMemoryBackendAccount(AccountBackendContract):
    @pytest.fixture
    def backend(self) -> MemoryBackend:
        return MemoryBackend({"alice": "wonderland"})

    @pytest.fixture
    def listed_username(self) -> str:
        return "alice"


class Leaky:
    def authenticate(self, attempt: Attempt) -> Verdict:
        logging.getLogger("leaky").debug("checking %s with %s", attempt.username, attempt.password.reveal())
        return Verdict.deny(Reason.BAD_PASSWORD)


def test_contract_catches_a_leak(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        Leaky().authenticate(make_attempt("alice", SENTINEL_PASSWORD))
    with pytest.raises(AssertionError, match="leaked"):
        _assert_no_secret(SENTINEL_PASSWORD, *(r.getMessage() for r in caplog.records))


def test_make_attempt_answers() -> None:
    attempt = make_attempt("alice", "pw", answers=["1", "2"])
    assert attempt.ask("a").reveal() == "1"
    assert attempt.ask("b").reveal() == "2"
