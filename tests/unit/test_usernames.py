"""Username normalization and log escaping."""

from __future__ import annotations

import unicodedata

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


# ------------------------------------------------------------ one account, one name (issue 17, class 3)

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.support.lookalikes import FIXED, lookalikes  # noqa: E402


@pytest.mark.parametrize(
    ("raw", "word"),
    [
        pytest.param("\uff41lice", "username-compatibility-form", id="fullwidth"),
        pytest.param("\U0001d41alice", "username-compatibility-form", id="mathematical-bold"),
        pytest.param("\u24d0lice", "username-compatibility-form", id="circled"),
        pytest.param("smith,\u00a0j", "username-compatibility-form", id="no-break-space"),
        pytest.param("smith,\u3000j", "username-compatibility-form", id="ideographic-space"),
        pytest.param("smith,  j", "username-inner-space", id="doubled-space"),
        pytest.param("alice\u00ad", "username-control-character", id="soft-hyphen"),
        pytest.param("alice\ufeff", "username-control-character", id="bom"),
        pytest.param("alice ", "username-outer-space", id="trailing-space"),
    ],
)
def test_lookalikes_a_directory_would_match_are_refused(raw: str, word: str) -> None:
    for case in ("fold", "preserve"):
        with pytest.raises(InvalidUsername) as info:
            normalize_username(raw, case=case)
        assert info.value.word == word


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("al\u0130ce", "alice"),  # dotted capital I: folded to i, as slapd does
        ("ali\u0307ce", "alice"),
        ("\u212airk", "kirk"),  # Kelvin sign: NFC maps it to K
        ("stra\u00dfe", "strasse"),
        ("\u212bsa", "\u00e5sa"),  # Angstrom sign
        ("zoe\u0308", "zo\u00eb"),
        ("\ufb01ona", "fiona"),  # casefold undoes the ligature
    ],
)
def test_foldable_forms_are_the_one_name(raw: str, canonical: str) -> None:
    assert normalize_username(raw) == canonical


def _canonical_or_none(raw: str, case: str = "fold") -> str | None:
    try:
        return normalize_username(raw, case=case)
    except InvalidUsername:
        return None


@settings(max_examples=500, deadline=None)
@given(
    raw=st.one_of(st.text(min_size=1, max_size=20), st.sampled_from(FIXED)), case=st.sampled_from(["fold", "preserve"])
)
def test_a_canonical_name_is_stable_under_every_mapping_a_directory_applies(raw: str, case: str) -> None:
    name = _canonical_or_none(raw, case)
    if name is None:
        return
    assert normalize_username(name, case=case) == name  # idempotent
    assert unicodedata.normalize("NFKC", name) == name  # no compatibility form left
    assert unicodedata.normalize("NFC", name) == name
    assert "  " not in name and name == name.strip()
    if case == "fold":
        assert name.casefold() == name or unicodedata.normalize("NFC", name.casefold()) == name


@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_a_lookalike_is_the_name_itself_or_refused_or_another_name(data: st.DataObject) -> None:
    """What a look-alike of a stored name canonicalizes to: the stored name,
    nothing, or a name a directory also keeps apart (never a second
    spelling of the same name that compatibility mapping would join)."""
    stored = data.draw(st.sampled_from(["alice", "kirk", "strasse", "zo\u00eb", "smith j", "ingrid"]))
    name = _canonical_or_none(data.draw(lookalikes(stored)))
    if name is not None and name != stored:
        folded = unicodedata.normalize("NFC", unicodedata.normalize("NFKC", name).casefold())
        joined = " ".join(folded.split())
        assert joined == name  # a directory's compatibility and space mapping does not join it to anything else


def test_a_ligature_is_refused_when_case_is_preserved() -> None:
    with pytest.raises(InvalidUsername) as info:
        normalize_username("\ufb01ona", case="preserve")
    assert info.value.word == "username-compatibility-form"
