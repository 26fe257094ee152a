"""Look-alikes of a username: the forms a directory's matching rules (case,
width, spaces, compatibility forms of Unicode, combining marks) may take for
the same name, generated with hypothesis.

``lookalikes(name)`` draws a name built from ``name`` by one to four edits:
case changes, fullwidth / mathematical / circled letters, NFD, NFKD,
inserted zero-width and format characters, leading, trailing, doubled and
other spaces, Turkish dotless and dotted i, ``ß`` for ``ss`` and back, the
Kelvin and Angstrom signs, ligatures, and combining marks.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

from hypothesis import strategies as st

__all__ = ["EDITS", "FIXED", "lookalikes"]

ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u034f", "\u180e")
SPACES = (" ", "  ", "\u00a0", "\u3000", "\u2009", "\u202f", "\u2007", "\t")
COMBINING = ("\u0301", "\u0308", "\u0307", "\u0300", "\u0327", "\u030a")
LIGATURES = {"fi": "\ufb01", "fl": "\ufb02", "ff": "\ufb00", "st": "\ufb06"}


def _fullwidth(char: str) -> str:
    return chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char


def _bold(char: str) -> str:
    if "a" <= char <= "z":
        return chr(0x1D41A + ord(char) - ord("a"))
    if "A" <= char <= "Z":
        return chr(0x1D400 + ord(char) - ord("A"))
    return char


def _circled(char: str) -> str:
    return chr(0x24D0 + ord(char) - ord("a")) if "a" <= char <= "z" else char


def _per_char(change: Callable[[str], str]) -> Callable[[st.DrawFn, str], str]:
    def edit(draw: st.DrawFn, name: str) -> str:
        if not name:
            return name
        chosen = draw(st.sets(st.integers(0, len(name) - 1), min_size=1))
        return "".join(change(c) if i in chosen else c for i, c in enumerate(name))

    return edit


def _insert(pool: tuple[str, ...]) -> Callable[[st.DrawFn, str], str]:
    def edit(draw: st.DrawFn, name: str) -> str:
        where = draw(st.integers(0, len(name)))
        return name[:where] + draw(st.sampled_from(pool)) + name[where:]

    return edit


def _replace(pairs: dict[str, str]) -> Callable[[st.DrawFn, str], str]:
    def edit(draw: st.DrawFn, name: str) -> str:
        present = [(a, b) for a, b in pairs.items() if a in name]
        if not present:
            return name
        old, new = draw(st.sampled_from(present))
        return name.replace(old, new, 1)

    return edit


def _normalize(form: str) -> Callable[[st.DrawFn, str], str]:
    return lambda draw, name: unicodedata.normalize(form, name)  # type: ignore[arg-type]


def _space_edit(draw: st.DrawFn, name: str) -> str:
    space = draw(st.sampled_from(SPACES))
    where = draw(st.sampled_from(["lead", "trail", "inner", "double"]))
    if where == "lead":
        return space + name
    if where == "trail":
        return name + space
    if where == "double" and " " in name:
        return name.replace(" ", " " + space, 1)
    if " " in name:
        return name.replace(" ", space, 1)
    return _insert((space,))(draw, name)


#: name -> edit, each taking (draw, name) and returning the edited name
EDITS: dict[str, Callable[[st.DrawFn, str], str]] = {
    "upper": _per_char(str.upper),
    "title": lambda draw, name: name.title(),
    "fullwidth": _per_char(_fullwidth),
    "bold": _per_char(_bold),
    "circled": _per_char(_circled),
    "nfd": _normalize("NFD"),
    "nfkd": _normalize("NFKD"),
    "zero-width": _insert(ZERO_WIDTH),
    "spaces": _space_edit,
    "turkish-i": _replace({"i": "\u0131", "I": "\u0130"}),
    "dotted-capital-i": _replace({"i": "\u0130"}),
    "sharp-s": _replace({"ss": "\u00df", "\u00df": "ss", "s": "\u017f"}),
    "kelvin": _replace({"k": "\u212a", "K": "\u212a", "\u00e5": "\u212b"}),
    "ligature": _replace(LIGATURES),
    "combining": _insert(COMBINING),
}

#: Hand-picked look-alikes of "alice", tried first (and on every run).
FIXED = (
    "ALICE",
    "\uff41\uff4c\uff49\uff43\uff45",  # fullwidth
    "\uff41lice",
    "al\u0130ce",  # dotted capital I: slapd folds it to i
    "al\u0131ce",  # dotless i
    "alice ",
    " alice",
    "al\u200bice",
    "\U0001d41alice",  # mathematical bold a
    "\u24d0lice",  # circled a
    "alice\u00ad",
    "ali\u0307ce",
)


@st.composite
def lookalikes(draw: st.DrawFn, name: str) -> str:
    """A look-alike of ``name``, different from it."""
    result = name
    for edit in draw(st.lists(st.sampled_from(sorted(EDITS)), min_size=1, max_size=4)):
        result = EDITS[edit](draw, result)
    if result == name:
        result = _per_char(_fullwidth)(draw, name) if name.isascii() else name.upper()
    return result
