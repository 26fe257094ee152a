"""Fixtures for the nxauth-totp tests: a controllable clock, and ``totp``
backends built the way a server builds them (through an
:class:`nxauth.Authenticator` and the plugin's hook), on a temporary state
directory.  Only public nxauth API and :mod:`nxauth.testing` are used."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nxauth
import pytest

from nxauth_totp import TotpBackend, new_secret
from nxauth_totp import plugin as totp_plugin

#: A time well inside a 30-second step (1_700_000_010 % 30 == 10).
START = 1_700_000_010.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


MakeAuth = Callable[..., nxauth.Authenticator]


@pytest.fixture
def make_auth(state_dir: Path, clock: Clock) -> Iterator[MakeAuth]:
    """Build an authenticator whose auth stack is one ``totp`` instance with
    ``options``; the plugin is handed in as code (entry points off), so the
    test sees exactly this plugin."""
    made: list[nxauth.Authenticator] = []

    def build(mapping: dict[str, Any] | None = None, **options: Any) -> nxauth.Authenticator:
        data: dict[str, Any] = {
            "state_dir": str(state_dir),
            "transport": {"key_sources": []},
            "backends": {"totp": {"kind": "totp", **options}},
            "auth": [{"use": "totp", "control": "required"}],
            "account": [],
        }
        data.update(mapping or {})
        auth = nxauth.Authenticator(data, plugins=[totp_plugin], entry_points=False, clock=clock)
        made.append(auth)
        return auth

    yield build
    for auth in made:
        auth.close()


@pytest.fixture
def make_backend(make_auth: MakeAuth) -> Callable[..., TotpBackend]:
    def build(**options: Any) -> TotpBackend:
        backend = make_auth(**options).backends["totp"]
        assert isinstance(backend, TotpBackend)
        return backend

    return build


@pytest.fixture
def backend(make_backend: Callable[..., TotpBackend]) -> TotpBackend:
    """A ``totp`` backend with the default options."""
    return make_backend()


class Answering:
    """A conversation callback that answers ``answer`` and records each question."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.prompts: list[str] = []

    def __call__(self, prompt: str, echo: bool) -> str:
        self.prompts.append(prompt)
        return self.answer


def enroll(backend: TotpBackend, username: str) -> nxauth.Secret:
    """Enrol ``username`` with a fresh secret; return the secret."""
    secret = new_secret()
    backend.store.enroll(username, secret, backend.clock())
    return secret


def code_for(backend: TotpBackend, secret: nxauth.Secret, offset: int = 0) -> str:
    """The code ``secret`` shows ``offset`` time steps from the backend's now."""
    step = backend.settings.step(backend.clock()) + offset
    return backend.settings.totp(secret).generate_otp(step)


def answering(username: str, code: str | None, password: str = "first-factor") -> nxauth.Attempt:
    """An attempt whose conversation answers ``code`` (no conversation when ``None``)."""
    from nxauth.testing import make_attempt

    return make_attempt(username, password, answers=None if code is None else [code])
