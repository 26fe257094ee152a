"""The one typed reader of configuration tables: :class:`Options`.

Every section of the configuration (``[transport]``, ``[[auth]]``, ...) and
every backend instance's options are read through it, so one set of rules
holds everywhere:

- a getter names the full dotted key in its error, and the message says what
  was expected and what was got: ``backends.ldap.timeout: must be a number
  of seconds, got nan``;
- a number is finite (TOML's ``nan`` and ``inf`` are refused, and so is a
  ``float("nan")`` handed in from code); a boolean is never a number;
- a secret reference (``{env = "NAME"}``, ``{file = "/path"}``) is accepted
  only by :meth:`Options.secret`;
- every key read is recorded, and :meth:`Options.check_unused` refuses the
  others, in nested tables too.

What was got is described by its type; only numbers, booleans and the value
of a :meth:`Options.choice` are shown as written, never a string's content
(it might be a password written where it does not belong).
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, final, overload

from nxauth.errors import ConfigError
from nxauth.files import read_small_text
from nxauth.model import Secret

__all__ = ["Options", "SecretRef", "convert_secrets", "describe", "quote"]

#: What :meth:`Options.secret` asks for, in its messages.
_REFERENCE: Final = 'a secret reference ({env = "NAME"} or {file = "/path"})'
_SHOWN: Final = 100  # characters of a shown value, as sshd cuts user input


#: The largest secret file read (a FIFO, device or directory is refused at once).
SECRET_LIMIT: Final = 64 * 1024


@final
@dataclass(frozen=True, slots=True)
class SecretRef:
    """A secret named in the configuration: ``{env = "NAME"}`` or ``{file = "path"}``.

    It holds the name of the variable or file, never the secret; the secret
    is read by :meth:`resolve`, when the backend that needs it is built.
    """

    env: str | None = None
    file: str | None = None

    def resolve(self, *, source: str, key: str) -> Secret:
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ConfigError(f"environment variable {self.env} is not set", source=source, key=key)
            return Secret(value)
        assert self.file is not None
        try:
            text = read_small_text(self.file, limit=SECRET_LIMIT)
        except OSError as exc:
            raise ConfigError(f"cannot read secret file {self.file}: {exc.strerror}", source=source, key=key) from None
        except UnicodeDecodeError:
            raise ConfigError(f"secret file {self.file} is not UTF-8", source=source, key=key) from None
        return Secret(text.rstrip("\r\n"))


# ---------------------------------------------------------------- describing values


def _looks_like_reference(value: Mapping[Any, Any]) -> bool:
    keys = set(value)
    return bool(keys) and keys <= {"env", "file"}


def _integer_text(value: int) -> str:
    return str(value) if -(10**30) < value < 10**30 else "a very large integer"


def _bound(value: float) -> str:
    """A bound as an administrator writes it: ``3600``, ``0.01``."""
    if isinstance(value, int) or (value.is_integer() and abs(value) < 1e16):
        return str(int(value))
    return repr(value)


def describe(value: object) -> str:
    """What was got, for the ``got ...`` part of a message.

    Numbers and booleans are shown as written (``nan``, ``2.5``, ``true``);
    anything else only by its type (``a string``, ``a table``), so that a
    secret written at the wrong key never reaches a message.
    """
    if value is None:
        return "nothing (None)"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int):
        return _integer_text(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return "a string" if value else "an empty string"
    if isinstance(value, Secret):
        return "a secret"
    if isinstance(value, SecretRef):
        return "a secret reference"
    if isinstance(value, Mapping):
        reference = len(value) == 1 and _looks_like_reference(value) and isinstance(next(iter(value.values())), str)
        return "a secret reference" if reference else "a table"
    if isinstance(value, list | tuple):
        return "an array" if value else "an empty array"
    if isinstance(value, datetime.date | datetime.time):
        return "a date or time"
    return f"a {type(value).__name__} object"


def quote(text: str) -> str:
    """A string value that a message repeats (a choice, an address): cut and quoted."""
    return repr(text[:_SHOWN] + ("..." if len(text) > _SHOWN else ""))


# ---------------------------------------------------------------- secret references


def _reference(value: Mapping[Any, Any], *, source: str, key: str, base_dir: Path | None = None) -> SecretRef:
    """A ``{env = ...}`` / ``{file = ...}`` table as a :class:`SecretRef`.

    A relative file is taken from ``base_dir`` (the configuration file's
    directory), never from the working directory: without a ``base_dir``
    (a configuration given as a mapping) it is refused."""
    if len(value) != 1:
        raise ConfigError("must be a secret reference with one of env or file, got both", source=source, key=key)
    ((kind, target),) = value.items()
    if not isinstance(target, str) or not target:
        what = "the name of an environment variable" if kind == "env" else "the path of a file"
        raise ConfigError(f"must be {what}, got {describe(target)}", source=source, key=f"{key}.{kind}")
    if kind == "env":
        return SecretRef(env=target)
    if not os.path.isabs(target):
        if base_dir is None:
            raise ConfigError(
                "must be an absolute path: a relative secret file is relative to the configuration file's"
                " directory, and this configuration has no file",
                source=source,
                key=f"{key}.file",
            )
        target = os.path.join(base_dir, target)
    return SecretRef(file=target)


def convert_secrets(value: Any, *, source: str, key: str, base_dir: Path | None = None) -> Any:
    """Turn ``{env = ...}`` / ``{file = ...}`` tables, at any depth, into
    :class:`SecretRef` (a read-only mapping handed in from code is left as it is);
    a relative file is anchored at ``base_dir`` (see :func:`_reference`).

    Only :meth:`Options.secret` accepts the result; every other getter
    refuses a secret reference.
    """
    if isinstance(value, Mapping):
        if _looks_like_reference(value) and not isinstance(value, MappingProxyType):
            return _reference(value, source=source, key=key, base_dir=base_dir)
        return {
            name: convert_secrets(item, source=source, key=f"{key}.{name}", base_dir=base_dir)
            for name, item in value.items()
        }
    if isinstance(value, list):
        return [
            convert_secrets(item, source=source, key=f"{key}[{index}]", base_dir=base_dir)
            for index, item in enumerate(value)
        ]
    return value


# ---------------------------------------------------------------- the reader


@final
class Options:
    """A table of the configuration, read with typed getters.

    Backend factories get one as ``context.options`` (the instance's
    ``[backends.NAME]`` table without ``kind`` and ``timeout``); nxauth reads
    its own sections with the same class.  The getters are part of the plugin
    API:

    - every getter takes the key and a default for an absent key, names the
      full dotted key in its error (``backends.NAME.KEY``, ``auth[1].use``)
      and says what it expected and what it got;
    - :meth:`number` and :meth:`integer` refuse NaN and infinities, and a
      boolean is never a number;
    - only :meth:`secret` accepts a secret reference;
    - :meth:`table` and :meth:`tables` read nested tables with the same rules;
    - :meth:`check_unused` refuses every key no getter asked for, at any
      depth, so a misspelled option is an error and not a silent default
      (for a backend, nxauth calls it after the factory returns).
    """

    __module__ = "nxauth"

    def __init__(self, values: Mapping[str, Any], *, source: str, prefix: str = "") -> None:
        if not isinstance(values, Mapping):
            raise ConfigError(f"must be a table, got {describe(values)}", source=source, key=prefix or None)
        self._values = dict(values)
        self._used: set[str] = set()
        self._whole: set[str] = set()  # read with raw(): nothing below them is checked
        self._children: dict[str, list[Options]] = {}
        self.source = source
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"Options({self.prefix or '<top level>'}, keys={sorted(map(str, self._values))})"

    def __contains__(self, key: str) -> bool:
        """Whether ``key`` is given (asking does not count as reading it)."""
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        """The keys given, in their order."""
        return iter(list(self._values))

    def keys(self) -> list[str]:
        """The keys given, in their order."""
        return list(self._values)

    # ------------------------------------------------------------ errors

    def key(self, key: str) -> str:
        """The full dotted key of ``key`` (which may be an item, ``"name[2]"``)."""
        if not key or not self.prefix:
            return key or self.prefix
        return f"{self.prefix}.{key}"

    def error(self, key: str, message: str) -> ConfigError:
        """A :class:`nxauth.ConfigError` naming the source and ``key``'s dotted path."""
        return ConfigError(message, source=self.source, key=self.key(key) or None)

    def invalid(self, key: str, expected: str, value: object) -> ConfigError:
        """The error for a value that is not what was expected:
        ``KEY: must be EXPECTED, got WHAT-WAS-GOT`` (see :func:`describe`)."""
        return self.error(key, f"must be {expected}, got {describe(value)}")

    def missing(self, key: str, expected: str) -> ConfigError:
        """The error for an absent key that must be given: ``KEY: is required: EXPECTED``."""
        return self.error(key, f"is required: {expected}")

    # ------------------------------------------------------------ getters

    def _get(self, key: str, types: tuple[type, ...], expected: str) -> Any:
        """The value of ``key`` if given and of one of ``types`` (never a
        boolean unless ``bool`` is among them); ``None`` when absent."""
        self._used.add(key)
        if key not in self._values:
            return None
        value = self._values[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise self.invalid(key, expected, value)
        return value

    @overload
    def string(self, key: str, *, allow_empty: bool = ...) -> str | None: ...
    @overload
    def string(self, key: str, default: str, *, allow_empty: bool = ...) -> str: ...
    def string(self, key: str, default: str | None = None, *, allow_empty: bool = True) -> str | None:
        """A string (``default`` when absent); ``allow_empty=False`` refuses ``""``."""
        expected = "a string" if allow_empty else "a non-empty string"
        value: str | None = self._get(key, (str,), expected)
        if value is None:
            return default
        if not value and not allow_empty:
            raise self.invalid(key, expected, value)
        return value

    @overload
    def boolean(self, key: str) -> bool | None: ...
    @overload
    def boolean(self, key: str, default: bool) -> bool: ...
    def boolean(self, key: str, default: bool | None = None) -> bool | None:
        """``true`` or ``false`` (``default`` when absent)."""
        value: bool | None = self._get(key, (bool,), "true or false")
        return default if value is None else value

    def _check_range(
        self,
        key: str,
        value: float,
        given: object,
        *,
        minimum: float | None,
        maximum: float | None,
        above: float | None = None,
    ) -> None:
        """``value`` within the bounds, else the error (showing ``given``, as written)."""
        if minimum is not None and value < minimum:
            raise self.invalid(key, f"at least {_bound(minimum)}", given)
        if above is not None and value <= above:
            raise self.invalid(key, f"more than {_bound(above)}", given)
        if maximum is not None and value > maximum:
            raise self.invalid(key, f"at most {_bound(maximum)}", given)

    @overload
    def integer(self, key: str, *, minimum: int | None = ..., maximum: int | None = ...) -> int | None: ...
    @overload
    def integer(self, key: str, default: int, *, minimum: int | None = ..., maximum: int | None = ...) -> int: ...
    def integer(
        self, key: str, default: int | None = None, *, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        """An integer (``default`` when absent), within ``minimum`` and
        ``maximum`` when given (a default too: out of them, it fails closed).
        A float, even ``2.0``, is refused."""
        value: int | None = self._get(key, (int,), "an integer")
        if value is None:
            value = default
        if value is None:
            return None
        self._check_range(key, value, value, minimum=minimum, maximum=maximum)
        return value

    @overload
    def number(
        self,
        key: str,
        *,
        minimum: float | None = ...,
        maximum: float | None = ...,
        above: float | None = ...,
        unit: str | None = ...,
    ) -> float | None: ...
    @overload
    def number(
        self,
        key: str,
        default: float,
        *,
        minimum: float | None = ...,
        maximum: float | None = ...,
        above: float | None = ...,
        unit: str | None = ...,
    ) -> float: ...
    def number(
        self,
        key: str,
        default: float | None = None,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        above: float | None = None,
        unit: str | None = None,
    ) -> float | None:
        """A finite number, an integer or a float in TOML, returned as a float
        (``default`` when absent).  ``minimum`` and ``maximum`` are inclusive
        bounds, ``above`` an exclusive lower bound (a default must keep them
        too: out of them, it fails closed); ``unit`` (``"seconds"``) only
        words the message: ``must be a number of seconds, got nan``."""
        expected = f"a number of {unit}" if unit else "a number"
        raw = self._get(key, (int, float), expected)
        if raw is None:
            raw = default
        if raw is None:
            return None
        try:
            value = float(raw)
        except OverflowError:  # an integer beyond a float's range
            raise self.invalid(key, expected, raw) from None
        if not math.isfinite(value):
            raise self.invalid(key, expected, raw)
        self._check_range(key, value, raw, minimum=minimum, maximum=maximum, above=above)
        return value

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        """One of ``choices`` (``default`` when absent)."""
        expected = f"one of {', '.join(choices)}"
        value: str | None = self._get(key, (str,), expected)
        if value is None:
            return default
        if value not in choices:
            raise self.error(key, f"must be {expected}, got {quote(value)}")
        return value

    def strings(
        self, key: str, default: Sequence[str] = (), *, allow_single: bool = True, allow_empty: bool = True
    ) -> tuple[str, ...]:
        """An array of strings (``default`` when absent).  ``allow_single``:
        a lone string counts as a one-item array; ``allow_empty=False``
        refuses an empty string as an item (an empty array is allowed)."""
        item_expected = "a string" if allow_empty else "a non-empty string"
        array = "an array of strings" if allow_empty else "an array of non-empty strings"
        expected = f"a string or {array}" if allow_single else array
        types: tuple[type, ...] = (list, tuple, str) if allow_single else (list, tuple)
        value = self._get(key, types, expected)
        if value is None:
            return tuple(default)
        items = [value] if isinstance(value, str) else list(value)
        for index, item in enumerate(items):
            if not isinstance(item, str) or (not item and not allow_empty):
                raise self.invalid(key if isinstance(value, str) else f"{key}[{index}]", item_expected, item)
        return tuple(items)

    def secret(self, key: str, *, required: bool = False) -> Secret | None:
        """A secret: ``{env = "NAME"}``, ``{file = "path"}``, or a
        :class:`nxauth.Secret` handed in from code; read now.  A literal
        string is refused: secrets do not belong in configuration files."""
        self._used.add(key)
        if key not in self._values:
            if required:
                raise self.missing(key, _REFERENCE)
            return None
        value = self._values[key]
        if isinstance(value, Secret):
            return value
        if isinstance(value, Mapping) and _looks_like_reference(value):
            value = _reference(value, source=self.source, key=self.key(key))
        if isinstance(value, SecretRef):
            return value.resolve(source=self.source, key=self.key(key))
        raise self.invalid(key, _REFERENCE, value)

    def raw(self, key: str, default: Any = None) -> Any:
        """The value as given, unchecked, for a value a backend parses itself;
        nothing inside it counts as unknown.  Prefer :meth:`table`, whose
        getters check every value."""
        self._used.add(key)
        self._whole.add(key)
        return self._values.get(key, default)

    def table(self, key: str) -> Options:
        """The nested table ``key`` read with the same getters and rules
        (an empty one when absent); :meth:`check_unused` checks it too."""
        self._used.add(key)
        value = self._values.get(key, {})
        if not isinstance(value, Mapping):  # a converted SecretRef is not a table either
            raise self.invalid(key, "a table", value)
        child = Options(value, source=self.source, prefix=self.key(key))
        self._children.setdefault(key, []).append(child)
        return child

    def tables(self, key: str) -> tuple[Options, ...]:
        """The array of tables ``key`` (``[[key]]`` in TOML), each item read
        as by :meth:`table` under ``key[INDEX]`` (empty when absent)."""
        self._used.add(key)
        value = self._values.get(key, [])
        if not isinstance(value, list | tuple):
            raise self.invalid(key, f"an array of tables ([[{key}]])", value)
        children = []
        for index, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise self.invalid(f"{key}[{index}]", "a table", item)
            children.append(Options(item, source=self.source, prefix=self.key(f"{key}[{index}]")))
        self._children.setdefault(key, []).extend(children)
        return tuple(children)

    # ------------------------------------------------------------ unknown keys

    def check_unused(self) -> None:
        """Refuse the first key (in the order given) that no getter asked
        for, in this table or in one read with :meth:`table` or :meth:`tables`."""
        for name in self._values:
            if name not in self._used:
                raise self.error(str(name), "unknown option" + self._suggestion(name))
            if name not in self._whole:
                for child in self._children.get(name, ()):
                    child.check_unused()

    def _suggestion(self, name: object) -> str:
        if not isinstance(name, str):
            return ""
        import difflib  # only on this error path: the reader is on sshd's login path

        known = sorted(key for key in self._used if isinstance(key, str))
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
        return f" (did you mean {close[0]}?)" if close else ""
