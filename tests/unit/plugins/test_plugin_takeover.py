"""Plugin takeover (issue 17, class 1): a built-in backend kind is reserved
to the built-in module that owns it, a kind registered twice is fatal, and
so is a misspelled ``nxauth_*`` hook, all whatever ``plugins.strict`` says."""

from __future__ import annotations

import contextlib
import importlib
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nxauth
from nxauth import BackendContext, BackendRegistry, PluginError, Verdict, hookimpl
from nxauth.plugins.manager import BUILTIN_PLUGINS, collect_backends, make_plugin_manager

#: the built-in kinds and their owners, spelled out (the table in nxauth must agree)
BUILTIN_KINDS = {
    "keystore": "nxauth.backends.keystore",
    "authorized_keys": "nxauth.backends.authorized_keys",
    "passwords": "nxauth.backends.passwords",
    "users": "nxauth.backends.users",
    "system": "nxauth.backends.system",
    "pam": "nxauth.backends.pam",
    "ldap": "nxauth.backends.ldap",
}

CALLED: list[str] = []


class AllowAll:
    """The takeover: accepts every password."""

    def authenticate(self, attempt: Any) -> Verdict:
        CALLED.append(attempt.username)
        return Verdict.allow()

    def check_account(self, identity: Any) -> Verdict:
        return Verdict.allow()


class Takeover:
    def __init__(self, kinds: tuple[str, ...] = ("passwords",), **impl: bool) -> None:
        self.kinds = kinds
        self.__name__ = f"takeover-{'-'.join(kinds)}"

        def register(registry: BackendRegistry) -> None:
            for kind in self.kinds:
                # a plugin that swallows the refusal does not make it go away
                with contextlib.suppress(PluginError):
                    registry.add(kind, lambda context: AllowAll())

        self.nxauth_register_backends = hookimpl(**impl)(register)


def config(tmp_path: Path, *, strict: bool = False, disabled: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "state_dir": str(tmp_path / "state"),
        "transport": {"key_sources": []},
        "auth": [{"use": "passwords"}],
        "account": [{"use": "passwords"}],
        "plugins": {"strict": strict, "disabled": list(disabled)},
    }


def test_builtin_modules_register_exactly_the_reserved_kinds() -> None:
    pm, errors = make_plugin_manager(entry_points=False)
    registry = collect_backends(pm, errors)
    assert {k: registry.owner(k) for k in registry.kinds()} == BUILTIN_KINDS
    from nxauth.plugins.registry import RESERVED_KINDS

    assert dict(RESERVED_KINDS) == BUILTIN_KINDS


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("impl", [{}, {"tryfirst": True}, {"trylast": True}])
def test_code_plugin_cannot_take_over_passwords(tmp_path: Path, strict: bool, impl: dict[str, bool]) -> None:
    CALLED.clear()
    with pytest.raises(PluginError, match="reserved") as raised:
        nxauth.Authenticator(config(tmp_path, strict=strict), plugins=[Takeover(**impl)], entry_points=False)
    assert "takeover-passwords" in str(raised.value)
    assert CALLED == []


def test_takeover_refused_when_the_builtin_is_disabled(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="reserved"):
        nxauth.Authenticator(
            config(tmp_path, disabled=("nxauth.backends.passwords",)), plugins=[Takeover()], entry_points=False
        )


def test_a_lookalike_named_like_the_builtin_is_not_the_builtin(tmp_path: Path) -> None:
    fake = types.SimpleNamespace(__name__="nxauth.backends.passwords")
    fake.nxauth_register_backends = hookimpl(lambda registry: registry.add("passwords", lambda c: AllowAll()))
    with pytest.raises(PluginError, match="reserved"):
        nxauth.Authenticator(
            config(tmp_path, disabled=("nxauth.backends.passwords",)), plugins=[fake], entry_points=False
        )


def _install_dist(root: Path, name: str, body: str) -> None:
    (root / f"{name}.py").write_text(textwrap.dedent(body))
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[nxauth]\n{name} = {name}\n")


EVIL = """
    from nxauth import Verdict, hookimpl

    class AllowAll:
        def authenticate(self, attempt):
            raise AssertionError("the takeover backend was called")

        def check_account(self, identity):
            return Verdict.allow()

    @hookimpl(tryfirst=True)
    def nxauth_register_backends(registry):
        registry.add("passwords", lambda context: AllowAll())
"""


@pytest.mark.parametrize("strict", [False, True])
def test_entry_point_plugin_cannot_take_over_passwords(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strict: bool
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _install_dist(site, "nxauth_evil_takeover", EVIL)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    with pytest.raises(PluginError, match="reserved") as raised:
        nxauth.Authenticator(config(tmp_path, strict=strict), entry_points=True)
    assert "nxauth_evil_takeover" in str(raised.value)
    sys.modules.pop("nxauth_evil_takeover", None)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kinds=st.lists(st.sampled_from(sorted(BUILTIN_KINDS)), min_size=1, max_size=3, unique=True),
    order=st.sampled_from(["before", "after"]),
    impl=st.sampled_from([{}, {"tryfirst": True}, {"trylast": True}]),
    disabled=st.lists(st.sampled_from(BUILTIN_PLUGINS), max_size=3, unique=True),
)
def test_every_builtin_kind_is_reserved_in_every_order(
    kinds: list[str], order: str, impl: dict[str, bool], disabled: list[str]
) -> None:
    takeover = Takeover(tuple(kinds), **impl)
    builtins = [importlib.import_module(p) for p in BUILTIN_PLUGINS if p not in disabled]
    plugins = [takeover, *builtins] if order == "before" else [*builtins, takeover]
    pm, errors = make_plugin_manager(plugins, builtins=False, entry_points=False)
    with pytest.raises(PluginError, match="reserved") as raised:
        collect_backends(pm, errors)
    assert takeover.__name__ in str(raised.value)


class Mem:
    def __init__(self, name: str) -> None:
        self.__name__ = name

    @hookimpl
    def nxauth_register_backends(self, registry: BackendRegistry) -> None:
        registry.add("mem", self.build)

    def build(self, context: BackendContext) -> AllowAll:
        return AllowAll()


@pytest.mark.parametrize("strict", [False, True])
def test_duplicate_third_party_kind_names_both_plugins(tmp_path: Path, strict: bool) -> None:
    data = config(tmp_path, strict=strict) | {"auth": [{"use": "mem"}], "account": [{"use": "mem"}]}
    with pytest.raises(PluginError, match="registered by both") as raised:
        nxauth.Authenticator(data, plugins=[Mem("first-plugin"), Mem("second-plugin")], entry_points=False)
    assert "first-plugin" in str(raised.value) and "second-plugin" in str(raised.value)


class Misspelled:
    @hookimpl
    def nxauth_auth_evnt(self, event: object) -> None:
        raise AssertionError("never called")


class Unmarked:
    def nxauth_auth_event(self, event: object) -> None:  # forgot @hookimpl: would never be called
        raise AssertionError


@pytest.mark.parametrize("plugin", [Misspelled(), Unmarked(), types.SimpleNamespace(nxauth_auth_evnt=lambda e: None)])
def test_misspelled_hook_is_fatal_in_non_strict_mode(tmp_path: Path, plugin: object) -> None:
    with pytest.raises(PluginError, match="nxauth_auth_ev"):
        nxauth.Authenticator(config(tmp_path, strict=False), plugins=[plugin], entry_points=False)
