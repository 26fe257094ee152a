"""The authorized_keys format of sshd(8) and its options.

Parsing follows OpenSSH's ``sshauthopt_parse`` (auth-options.c): option
names are case-insensitive, flags may be negated with ``no-`` where sshd
allows it, ``restrict`` is order-sensitive (``restrict,pty`` allows a pty,
``pty,restrict`` does not), values are double-quoted with ``\\"`` for a
quote, and ``command``/``principals``/``from`` may appear once.  Matching of
``from=`` is :mod:`nxauth.keys.patterns`'.

A line that sshd would refuse is a :class:`nxauth.KeyFormatError` here (with
its line number); :func:`parse_authorized_keys` collects them and goes on.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, final

from nxauth.errors import KeyFormatError
from nxauth.files import read_small
from nxauth.keys.formats import PublicKey, decode_public_key
from nxauth.keys.wire import KEY_TYPES, b64decode_strict

__all__ = [
    "AuthorizedKey",
    "KeyOptions",
    "format_options",
    "parse_authorized_key",
    "parse_authorized_keys",
    "parse_expiry_time",
    "read_authorized_keys",
]

MAX_LINE_LENGTH: Final = 128 * 1024
#: sshd option word -> (field set by the positive form, field set by the ``no-`` form)
_PERMITS: Final = {
    "port-forwarding": ("port_forwarding", "no_port_forwarding"),
    "agent-forwarding": ("agent_forwarding", "no_agent_forwarding"),
    "x11-forwarding": ("x11_forwarding", "no_x11_forwarding"),
    "pty": ("pty", "no_pty"),
    "user-rc": ("user_rc", "no_user_rc"),
}
#: flag options in the order sshd tries them, and whether ``no-`` is allowed
_FLAGS: Final = (
    ("restrict", False),
    ("cert-authority", False),
    ("port-forwarding", True),
    ("agent-forwarding", True),
    ("x11-forwarding", True),
    ("touch-required", True),
    ("verify-required", True),
    ("pty", True),
    ("user-rc", True),
)
_VALUED: Final = ("command", "principals", "from", "expiry-time", "environment", "permitopen", "permitlisten", "tunnel")
_RESTRICTIONS: Final = (
    ("no-agent-forwarding", "agent_forwarding", "no_agent_forwarding"),
    ("no-port-forwarding", "port_forwarding", "no_port_forwarding"),
    ("no-pty", "pty", "no_pty"),
    ("no-user-rc", "user_rc", "no_user_rc"),
    ("no-x11-forwarding", "x11_forwarding", "no_x11_forwarding"),
)
_SPELLING: Final = {"x11-forwarding": "X11-forwarding"}
_ENV_NAME: Final = re.compile(r"[A-Za-z0-9_]+")
_KEY_PART: Final = re.compile(r"([^ \t]+)(?:[ \t]+([^ \t]+))?(?:[ \t]+(.*))?", re.DOTALL)
_TUNNEL_MAX: Final = 0x7FFFFFFF - 2
#: auth-options.h SSH_AUTHOPT_ENV_MAX and SSH_AUTHOPT_PERMIT_MAX (checked before adding, as sshd)
_ENV_MAX: Final = 1024
_PERMIT_MAX: Final = 4096


@final
@dataclass(frozen=True, slots=True)
class KeyOptions:
    """The options of one authorized_keys line, as sshd(8) documents them.

    The ``no_*`` flags and their positive forms (``pty``, ...) are recorded
    as written, after sshd's last-one-wins and ``restrict``-resets rules;
    :attr:`restrictions` is the effective result.  ``expiry_time`` is an
    epoch (the earliest if repeated).
    """

    restrict: bool = False
    cert_authority: bool = False
    command: str | None = None
    principals: tuple[str, ...] | None = None
    from_patterns: tuple[str, ...] | None = None
    expiry_time: float | None = None
    environment: tuple[str, ...] = ()
    permitopen: tuple[str, ...] = ()
    permitlisten: tuple[str, ...] = ()
    tunnel: str | None = None
    no_agent_forwarding: bool = False
    no_port_forwarding: bool = False
    no_pty: bool = False
    no_user_rc: bool = False
    no_x11_forwarding: bool = False
    agent_forwarding: bool = False
    port_forwarding: bool = False
    pty: bool = False
    user_rc: bool = False
    x11_forwarding: bool = False
    no_touch_required: bool = False
    verify_required: bool = False

    @property
    def restrictions(self) -> frozenset[str]:
        """Effective restrictions: ``no-pty``, ``no-port-forwarding``, ``no-agent-forwarding``,
        ``no-x11-forwarding``, ``no-user-rc`` (a ``no-`` flag, or ``restrict`` not undone)."""
        return frozenset(
            name
            for name, permit, deny in _RESTRICTIONS
            if getattr(self, deny) or (self.restrict and not getattr(self, permit))
        )

    def as_mapping(self) -> dict[str, Any]:
        """The options that are set, under their sshd names (``from``, ``expiry-time``, ``no-pty``...)."""
        out: dict[str, Any] = {}
        if self.restrict:
            out["restrict"] = True
        if self.cert_authority:
            out["cert-authority"] = True
        for word, (permit, deny) in _PERMITS.items():
            if getattr(self, permit):
                out[word] = True
            if getattr(self, deny):
                out["no-" + word] = True
        if self.no_touch_required:
            out["no-touch-required"] = True
        if self.verify_required:
            out["verify-required"] = True
        for word, value in (
            ("command", self.command),
            ("principals", self.principals),
            ("from", self.from_patterns),
            ("expiry-time", self.expiry_time),
            ("environment", self.environment or None),
            ("permitopen", self.permitopen or None),
            ("permitlisten", self.permitlisten or None),
            ("tunnel", self.tunnel),
        ):
            if value is not None:
                out[word] = list(value) if isinstance(value, tuple) else value
        return out


_NO_OPTIONS: Final = KeyOptions()


@final
@dataclass(frozen=True, slots=True)
class AuthorizedKey:
    """One authorized_keys entry: the key, its options, and where it came from."""

    key: PublicKey
    options: KeyOptions = _NO_OPTIONS
    lineno: int | None = None

    def to_line(self) -> str:
        """The entry as an authorized_keys line (options re-quoted as sshd reads them)."""
        opts = format_options(self.options)
        return f"{opts} {self.key.to_openssh()}" if opts else self.key.to_openssh()


def _quote(value: str, what: str) -> str:
    if "\0" in value or "\n" in value or value.endswith("\\"):
        raise KeyFormatError(f"{what} value cannot be written in authorized_keys: {value[:40]!r}")
    return '"' + value.replace('"', '\\"') + '"'


def format_options(options: KeyOptions) -> str:
    """The options as sshd reads them, comma separated (``""`` when none are set); KeyFormatError
    for a value no authorized_keys line can hold (a NUL, a newline, a trailing backslash)."""
    parts = ["restrict"] if options.restrict else []
    if options.cert_authority:
        parts.append("cert-authority")
    parts += [_SPELLING.get(word, word) for word, (permit, _) in _PERMITS.items() if getattr(options, permit)]
    parts += ["no-" + _SPELLING.get(word, word) for word, (_, deny) in _PERMITS.items() if getattr(options, deny)]
    if options.no_touch_required:
        parts.append("no-touch-required")
    if options.verify_required:
        parts.append("verify-required")
    if options.command is not None:
        parts.append("command=" + _quote(options.command, "command"))
    if options.principals is not None:
        parts.append("principals=" + _quote(",".join(options.principals), "principals"))
    if options.from_patterns is not None:
        parts.append("from=" + _quote(",".join(options.from_patterns), "from"))
    if options.expiry_time is not None:
        parts.append(
            "expiry-time=" + _quote(time.strftime("%Y%m%d%H%M%SZ", time.gmtime(options.expiry_time)), "expiry")
        )
    for word in ("environment", "permitopen", "permitlisten"):
        parts += [f"{word}={_quote(value, word)}" for value in getattr(options, word)]
    if options.tunnel is not None:
        parts.append("tunnel=" + _quote(options.tunnel, "tunnel"))
    return ",".join(parts)


def parse_expiry_time(text: str) -> float:
    """``YYYYMMDD[HHMM[SS]]`` in local time, or UTC with a ``Z``/``UTC`` suffix, as sshd's
    ``parse_absolute_time`` (which, like this, calls mktime with ``tm_isdst = 0``)."""
    s, utc = text, False
    if len(s) > 1 and s[-1] in "Zz":
        s, utc = s[:-1], True
    elif len(s) > 3 and s[-3:].lower() == "utc":
        s, utc = s[:-3], True
    if len(s) not in (8, 12, 14) or not (s.isascii() and s.isdigit()):
        raise KeyFormatError(f"invalid expiry-time {text[:32]!r} (want YYYYMMDD[HHMM[SS]][Z])")
    fields = [int(s[i : i + w]) for i, w in ((0, 4), (4, 2), (6, 2), (8, 2), (10, 2), (12, 2)) if i < len(s)]
    year, month, day, hour, minute, second = (*fields, 0, 0, 0)[:6]
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60):
        raise KeyFormatError(f"invalid expiry-time {text[:32]!r}")
    tm = (year, month, day, hour, minute, second, 0, 0, 0)
    import calendar  # here: it imports locale, and most keys have no expiry-time

    try:
        when = float(calendar.timegm(tm) if utc else time.mktime(tm))
    except (ValueError, OverflowError):
        raise KeyFormatError(f"invalid expiry-time {text[:32]!r}") from None
    if when <= 0:
        raise KeyFormatError(f"invalid expiry-time {text[:32]!r} (before 1970)")
    return when


def _ieq(s: str, i: int, word: str) -> bool:
    part = s[i : i + len(word)]
    return part.isascii() and part.lower() == word


def _dequote(s: str, i: int) -> tuple[str, int]:
    if i >= len(s) or s[i] != '"':
        raise KeyFormatError("missing start quote")
    i += 1
    out: list[str] = []
    while True:
        k = s.find('"', i)
        if k < 0:
            raise KeyFormatError("missing end quote")
        if k > i and s[k - 1] == "\\":
            out.append(s[i : k - 1] + '"')
            i = k + 1
            continue
        out.append(s[i:k])
        return "".join(out), k + 1


def _check_permit(value: str, bare_port: bool) -> None:
    spec = value if not bare_port or ":" in value else "*:" + value
    if spec.startswith("["):
        close = spec.find("]")
        host, rest = (spec[1:close], spec[close + 1 :]) if close > 0 else ("", "")
        if not rest.startswith((":", "/")):
            raise KeyFormatError(f"invalid permission {value[:64]!r}")
        port = rest[1:]
    else:
        cut = min((k for k in (spec.find(":"), spec.find("/")) if k >= 0), default=-1)
        if cut < 0:
            raise KeyFormatError(f"invalid permission port in {value[:64]!r}")
        host, port = spec[:cut], spec[cut + 1 :]
    if len(host) >= 1025:
        raise KeyFormatError("invalid permission hostname")
    if port != "*" and not (port.isascii() and port.isdigit() and 0 < int(port) <= 65535):
        raise KeyFormatError(f"invalid permission port in {value[:64]!r}")


def _parse_options(s: str) -> tuple[KeyOptions, int]:
    """Parse options at the start of ``s``; return them and where they end."""
    st: dict[str, Any] = {}
    lists: dict[str, list[str]] = {"environment": [], "permitopen": [], "permitlisten": []}
    i, n = 0, len(s)
    while i < n and s[i] not in " \t":
        for word, negatable in _FLAGS:
            j, negated = i, False
            if negatable and _ieq(s, i, "no-"):
                j, negated = i + 3, True
            if _ieq(s, j, word):
                i = j + len(word)
                if word == "restrict":
                    st["restrict"] = True
                    st.update({permit: False for permit, _ in _PERMITS.values()})
                elif word == "cert-authority":
                    st["cert_authority"] = True
                elif word == "touch-required":
                    st["no_touch_required"] = negated
                elif word == "verify-required":
                    st["verify_required"] = not negated
                else:
                    permit, deny = _PERMITS[word]
                    st[permit], st[deny] = not negated, negated
                break
        else:
            for word in _VALUED:
                if _ieq(s, i, word) and s[i + len(word) : i + len(word) + 1] == "=":
                    value, i = _dequote(s, i + len(word) + 1)
                    _set_valued(st, lists, word, value)
                    break
        if i >= n or s[i] in " \t":
            break
        if s[i] != ",":
            bad = s[i : i + 50].split(" ", 1)[0]
            raise KeyFormatError(f"unknown key option {bad!r}")
        i += 1
        if i >= n:
            raise KeyFormatError("unexpected end of options")
    st.update({k: tuple(v) for k, v in lists.items()})
    return KeyOptions(**st), i


def _set_valued(st: dict[str, Any], lists: dict[str, list[str]], word: str, value: str) -> None:
    field = {"from": "from_patterns", "expiry-time": "expiry_time"}.get(word, word)
    if word in ("command", "principals", "from"):
        if field in st:
            raise KeyFormatError(f'multiple "{word}" clauses')
        st[field] = value if word == "command" else tuple(value.split(","))
    elif word == "expiry-time":
        when = parse_expiry_time(value)
        st[field] = min(when, st.get(field, when))
    elif word == "environment":
        if len(lists[word]) > _ENV_MAX:
            raise KeyFormatError("too many environment strings")
        name, eq, _ = value.partition("=")
        if not eq or not _ENV_NAME.fullmatch(name):
            raise KeyFormatError(f"invalid environment string {value[:40]!r}")
        if not any(seen.startswith(name + "=") for seen in lists[word]):  # the first one wins, as in sshd
            lists[word].append(value)
    elif word in ("permitopen", "permitlisten"):
        if len(lists[word]) > _PERMIT_MAX:
            raise KeyFormatError("too many permission directives")
        _check_permit(value, word == "permitlisten")
        lists[word].append(value)
    else:
        if value.lower() != "any" and not (value.isascii() and value.isdigit() and int(value) <= _TUNNEL_MAX):
            raise KeyFormatError(f"invalid tun device {value[:20]!r}")
        st["tunnel"] = value


def parse_authorized_key(line: str, lineno: int | None = None) -> AuthorizedKey | None:
    """Parse one authorized_keys line: ``None`` for a blank or ``#`` line, KeyFormatError (with
    ``lineno``) for anything sshd would not use."""
    try:
        return _parse_line(line, lineno)
    except KeyFormatError as exc:
        if exc.lineno == lineno:
            raise
        raise KeyFormatError(exc.detail, lineno=lineno) from None


def _parse_line(line: str, lineno: int | None) -> AuthorizedKey | None:
    if not isinstance(line, str):
        raise KeyFormatError(f"an authorized_keys line is str, not {type(line).__name__}")
    if len(line) > MAX_LINE_LENGTH:
        raise KeyFormatError(f"line longer than {MAX_LINE_LENGTH} characters")
    text = line.lstrip(" \t").rstrip(" \t\r\n")
    if not text or text.startswith("#"):
        return None
    if "\0" in text or "\n" in text:
        raise KeyFormatError("line contains a NUL or newline character")
    options = _NO_OPTIONS
    first = _KEY_PART.match(text)
    if first is None or first.group(1) not in KEY_TYPES:
        try:
            options, end = _parse_options(text)
        except KeyFormatError as exc:
            words = re.split(r"[ \t]+", text, maxsplit=2)
            token, after = words[0], words[1] if len(words) > 1 else ""
            looks_like_type = re.fullmatch(r"[a-z0-9-]+(@[a-z0-9.-]+)?", token) and after not in KEY_TYPES
            if looks_like_type and exc.detail.startswith("unknown key option"):
                raise KeyFormatError(f"unsupported key type or unknown option {token[:64]!r}") from None
            raise
        text = text[end:].lstrip(" \t")
        if not text:
            raise KeyFormatError("options but no key")
    m = _KEY_PART.fullmatch(text)
    if m is None or m.group(1) not in KEY_TYPES:
        raise KeyFormatError(f"unsupported key type {(m.group(1) if m else text)[:64]!r}")
    if m.group(2) is None:
        raise KeyFormatError("key data missing")
    key = decode_public_key(b64decode_strict(m.group(2), "key data"), (m.group(3) or "").strip())
    if key.key_type != m.group(1):
        raise KeyFormatError(f"key type {m.group(1)!r} does not match the blob's {key.key_type!r}")
    return AuthorizedKey(key, options, lineno)


def _collect(lines: Sequence[str | KeyFormatError]) -> tuple[list[AuthorizedKey], list[KeyFormatError]]:
    entries: list[AuthorizedKey] = []
    errors: list[KeyFormatError] = []
    for lineno, line in enumerate(lines, 1):
        if isinstance(line, KeyFormatError):
            errors.append(line)
            continue
        try:
            entry = parse_authorized_key(line, lineno)
        except KeyFormatError as exc:
            errors.append(exc)
            continue
        if entry is not None:
            entries.append(entry)
    return entries, errors


def parse_authorized_keys(text: str) -> tuple[list[AuthorizedKey], list[KeyFormatError]]:
    """Parse a whole file's text; bad lines become errors (with line numbers) and are skipped."""
    if not isinstance(text, str):
        raise KeyFormatError(f"authorized_keys text is str, not {type(text).__name__}")
    return _collect(text.split("\n"))


#: The largest authorized_keys file read.
AUTHORIZED_KEYS_LIMIT: Final = 16 * 1024 * 1024


def read_authorized_keys(path: str | os.PathLike[str]) -> tuple[list[AuthorizedKey], list[KeyFormatError]]:
    """Read and parse a file (UTF-8 per line); OSError if it cannot be read,
    is not a regular file (FIFO, device, directory) or exceeds
    :data:`AUTHORIZED_KEYS_LIMIT` bytes."""
    lines: list[str | KeyFormatError] = []
    for lineno, raw in enumerate(read_small(path, limit=AUTHORIZED_KEYS_LIMIT).split(b"\n"), 1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(KeyFormatError("line is not UTF-8", lineno=lineno))
    return _collect(lines)
