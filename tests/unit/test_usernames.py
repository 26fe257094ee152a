"""Username normalization and log escaping."""

from __future__ import annotations

import pytest

from nxauth import InvalidUsername
from nxauth.usernames import escape_for_log, normalize_username


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("alice", "alice"),
        ("Alice", "alice"),
        ("ALICE", "alice"),
        ("e\u0301lodie", "\u00e9lodie"),  # decomposed é -> composed
        ("\u00c9lodie", "\u00e9lodie"),
        ("j.doe@example.com", "j.doe@example.com"),
        ("x" * 256, "x" * 256),
    ],
)
def test_canonical(raw: str, canonical: str) -> None:
    assert normalize_username(raw) == canonical


def test_preserve_case() -> None:
    assert normalize_username("Alice", case="preserve") == "Alice"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("al\x00ice", id="nul"),
        pytest.param("al\nice", id="newline"),
        pytest.param("al\x1bice", id="escape"),
        pytest.param("al\u200bice", id="zero-width-space"),
        pytest.param(" alice", id="leading-space"),
        pytest.param("alice\t", id="trailing-tab"),
        pytest.param("x" * 257, id="too-long"),
        pytest.param("x" * 100_000, id="huge"),
        pytest.param(None, id="none"),
        pytest.param(b"alice", id="bytes"),
    ],
)
def test_refused(raw: object) -> None:
    with pytest.raises(InvalidUsername):
        normalize_username(raw)


def test_escape_for_log() -> None:
    assert escape_for_log("alice") == "alice"
    assert escape_for_log("a b") == "a\\x20b"
    assert escape_for_log("a b", quoted=True) == "a b"
    assert escape_for_log('a"\\\n\x00') == 'a\\"\\\\\\x0a\\x00'
    assert escape_for_log("x" * 150) == "x" * 100 + "..."
    assert "\n" not in escape_for_log("root\nAccepted password for root")
