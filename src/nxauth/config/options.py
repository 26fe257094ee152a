"""The typed reader of configuration tables: :class:`Options` and :class:`SecretRef`."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, final, overload

from nxauth.errors import ConfigError
from nxauth.model import Secret

__all__ = ["Options", "SecretRef"]


@final
@dataclass(frozen=True, slots=True)
class SecretRef:
    """A secret named in the configuration: ``{env = "NAME"}`` or ``{file = "path"}``."""

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
            with open(self.file, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise ConfigError(f"cannot read secret file {self.file}: {exc.strerror}", source=source, key=key) from None
        except UnicodeDecodeError:
            raise ConfigError(f"secret file {self.file} is not UTF-8", source=source, key=key) from None
        return Secret(text.rstrip("\r\n"))


@final
class Options:
    """A backend instance's options, read with typed getters.

    Each getter names the dotted key in its error.  After the factory has
    built the backend, :meth:`check_unused` refuses keys it never read, so a
    misspelled option is an error and not a silent default.
    """

    __module__ = "nxauth"

    def __init__(self, values: Mapping[str, Any], *, source: str, prefix: str) -> None:
        self._values = dict(values)
        self._used: set[str] = set()
        self.source = source
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"Options({self.prefix}, keys={sorted(self._values)})"

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def keys(self) -> list[str]:
        return list(self._values)

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, source=self.source, key=f"{self.prefix}.{key}" if key else self.prefix)

    def _get(self, key: str, types: tuple[type, ...], what: str, default: Any) -> Any:
        self._used.add(key)
        if key not in self._values:
            return default
        value = self._values[key]
        if isinstance(value, SecretRef):
            raise self.error(key, "a secret reference is not allowed here")
        if isinstance(value, bool) and bool not in types:
            raise self.error(key, f"expected {what}, got a boolean")
        if not isinstance(value, types):
            raise self.error(key, f"expected {what}, got {type(value).__name__}")
        return value

    @overload
    def string(self, key: str) -> str | None: ...
    @overload
    def string(self, key: str, default: str) -> str: ...
    def string(self, key: str, default: str | None = None) -> str | None:
        """A string option (``default`` when absent)."""
        value: str | None = self._get(key, (str,), "a string", default)
        return value

    @overload
    def boolean(self, key: str) -> bool | None: ...
    @overload
    def boolean(self, key: str, default: bool) -> bool: ...
    def boolean(self, key: str, default: bool | None = None) -> bool | None:
        value: bool | None = self._get(key, (bool,), "true or false", default)
        return value

    @overload
    def integer(self, key: str, *, minimum: int | None = ..., maximum: int | None = ...) -> int | None: ...
    @overload
    def integer(self, key: str, default: int, *, minimum: int | None = ..., maximum: int | None = ...) -> int: ...
    def integer(
        self, key: str, default: int | None = None, *, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        value: int | None = self._get(key, (int,), "an integer", default)
        if value is not None:
            if minimum is not None and value < minimum:
                raise self.error(key, f"must be at least {minimum}")
            if maximum is not None and value > maximum:
                raise self.error(key, f"must be at most {maximum}")
        return value

    @overload
    def number(self, key: str, *, minimum: float | None = ..., maximum: float | None = ...) -> float | None: ...
    @overload
    def number(
        self, key: str, default: float, *, minimum: float | None = ..., maximum: float | None = ...
    ) -> float: ...
    def number(
        self, key: str, default: float | None = None, *, minimum: float | None = None, maximum: float | None = None
    ) -> float | None:
        """A number (int or float in TOML), returned as float."""
        raw = self._get(key, (int, float), "a number", default)
        if raw is None:
            return None
        value = float(raw)
        if math.isnan(value) or (minimum is not None and value < minimum):
            raise self.error(key, f"must be a number of at least {minimum}")
        if maximum is not None and value > maximum:
            raise self.error(key, f"must be at most {maximum}")
        return value

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = self.string(key, default)
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def strings(self, key: str, default: Sequence[str] = ()) -> tuple[str, ...]:
        value = self._get(key, (list, tuple, str), "a list of strings", None)
        if value is None:
            return tuple(default)
        if isinstance(value, str):
            value = [value]
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{key}[{index}]", f"expected a string, got {type(item).__name__}")
        return tuple(value)

    def secret(self, key: str, *, required: bool = False) -> Secret | None:
        """A secret: ``{env = "NAME"}``, ``{file = "path"}``, or a
        :class:`nxauth.Secret` handed in from code.  A literal string is
        refused: secrets do not belong in configuration files."""
        self._used.add(key)
        if key not in self._values:
            if required:
                raise self.error(key, "is required")
            return None
        value = self._values[key]
        if isinstance(value, Secret):
            return value
        if isinstance(value, SecretRef):
            return value.resolve(source=self.source, key=f"{self.prefix}.{key}")
        raise self.error(key, 'a secret must be a reference: {env = "NAME"} or {file = "/path"}')

    def raw(self, key: str, default: Any = None) -> Any:
        """The value as given (for nested tables a backend parses itself)."""
        self._used.add(key)
        return self._values.get(key, default)

    def check_unused(self) -> None:
        unknown = sorted(set(self._values) - self._used)
        if unknown:
            raise self.error(unknown[0], "unknown option")
