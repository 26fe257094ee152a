"""Plugin manager: built-ins, entry points, broken plugins, misspelled hooks,
backend registration and instance building."""

from __future__ import annotations

import importlib.metadata
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import nxauth
from nxauth import BackendContext, BackendRegistry, ConfigError, PluginError, Verdict, hookimpl
from nxauth.plugins.manager import collect_backends, make_plugin_manager
from nxauth.testing import MemoryBackend


class Kind:
    """A plugin that provides backend kind ``mem`` built from options."""

    def __init__(self) -> None:
        self.contexts: list[BackendContext] = []

    @hookimpl
    def nxauth_register_backends(self, registry: BackendRegistry) -> None:
        registry.add("mem", self.build)

    def build(self, context: BackendContext) -> MemoryBackend:
        self.contexts.append(context)
        user = context.options.string("user", "alice")
        return MemoryBackend({user: "pw"})


class Misspelled:
    @hookimpl
    def nxauth_register_backend(self, registry: BackendRegistry) -> None:  # missing "s"
        raise AssertionError("never called")


class Raising:
    @hookimpl
    def nxauth_register_backends(self, registry: BackendRegistry) -> None:
        raise RuntimeError("broken plugin")


def test_fresh_manager_each_time() -> None:
    pm1, _ = make_plugin_manager(builtins=False, entry_points=False)
    pm2, _ = make_plugin_manager(builtins=False, entry_points=False)
    assert pm1 is not pm2


def test_fixture_gives_fresh_manager(nxauth_plugin_manager: Any) -> None:
    assert nxauth_plugin_manager.list_name_plugin() == []


def test_misspelled_hook_is_fatal() -> None:
    with pytest.raises(PluginError, match="nxauth_register_backend") as raised:
        make_plugin_manager([Misspelled(), Kind()], builtins=False, entry_points=False)
    assert "'Misspelled'" in str(raised.value)


def test_raising_registration_is_reported_by_name() -> None:
    pm, errors = make_plugin_manager([Raising(), Kind()], builtins=False, entry_points=False)
    registry = collect_backends(pm, errors)
    assert "mem" in registry
    assert any("broken plugin" in str(e) and e.plugin == "Raising" for e in errors)


def test_duplicate_kind_is_an_error() -> None:
    pm, errors = make_plugin_manager([Kind(), Kind()], builtins=False, entry_points=False)
    with pytest.raises(PluginError, match="registered by both"):
        collect_backends(pm, errors)


class FakeEntryPoint:
    def __init__(self, name: str, value: str, target: object | Exception) -> None:
        self.name = name
        self.value = value
        self._target = target

    def load(self) -> object:
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def test_entry_points_load_and_a_broken_one_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    good = types.ModuleType("good_plugin")
    good.nxauth_register_backends = Kind().nxauth_register_backends  # type: ignore[attr-defined]
    eps = [
        FakeEntryPoint("broken", "broken_plugin:plugin", ImportError("No module named 'pyotp'")),
        FakeEntryPoint("good", "good_plugin", good),
    ]

    def entry_points(group: str) -> list[FakeEntryPoint]:
        assert group == "nxauth"
        return eps

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    pm, errors = make_plugin_manager(builtins=False, entry_points=True)
    assert pm.has_plugin("good")
    assert [e.plugin for e in errors] == ["broken"]
    assert "pyotp" in str(errors[0])


def test_authenticator_uses_plugin_kinds_and_options(tmp_path: Path) -> None:
    kind = Kind()
    auth = nxauth.Authenticator(
        {
            "state_dir": str(tmp_path),
            "transport": {"key_sources": []},
            "backends": {"one": {"kind": "mem", "user": "bob"}},
            "auth": [{"use": "one"}],
            "account": [{"use": "mem"}],  # implicit instance of kind "mem"
        },
        plugins=[kind],
        entry_points=False,
    )
    assert [c.name for c in kind.contexts] == ["one", "mem"]
    assert auth.describe()["account"] == [{"use": "mem", "control": "required", "kind": "mem"}]
    assert auth.describe()["auth"] == [{"use": "one", "control": "required", "kind": "mem"}]


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({"auth": [{"use": "nope"}]}, "auth[0].use", "unknown backend instance 'nope'"),
        ({"backends": {"x": {"kind": "nokind"}}, "auth": [{"use": "x"}]}, "backends.x.kind", "unknown backend kind"),
        ({"backends": {"x": {"kind": "mem", "usr": "a"}}, "auth": [{"use": "x"}]}, "backends.x.usr", "unknown option"),
        (
            {"transport": {"key_sources": ["mem"]}, "auth": []},
            "transport.key_sources[0]",
            "cannot be used as key source",
        ),
    ],
)
def test_config_errors_at_build(tmp_path: Path, data: dict[str, Any], key: str, message: str) -> None:
    data = {"state_dir": str(tmp_path), "transport": {"key_sources": []}, "account": [], **data}
    with pytest.raises(ConfigError, match=message) as info:
        nxauth.Authenticator(data, plugins=[Kind()], entry_points=False)
    assert info.value.key == key


def test_factory_crash_becomes_plugin_error(tmp_path: Path) -> None:
    class Crashing:
        @hookimpl
        def nxauth_register_backends(self, registry: BackendRegistry) -> None:
            registry.add("crash", lambda context: 1 / 0)

    with pytest.raises(PluginError, match="ZeroDivisionError") as info:
        nxauth.Authenticator(
            {"state_dir": str(tmp_path), "transport": {"key_sources": []}, "auth": [{"use": "crash"}], "account": []},
            plugins=[Crashing()],
            entry_points=False,
        )
    assert info.value.plugin == "Crashing"


def test_strict_plugins_raise(tmp_path: Path) -> None:
    with pytest.raises(PluginError):
        nxauth.Authenticator(
            {"state_dir": str(tmp_path), "plugins": {"strict": True}, "transport": {"key_sources": []}, "auth": []},
            plugins=[Misspelled()],
            entry_points=False,
        )


def test_no_module_level_manager() -> None:
    import pluggy

    for name, module in list(sys.modules.items()):
        if name.startswith("nxauth"):
            for value in vars(module).values():
                assert not isinstance(value, pluggy.PluginManager), f"{name} holds a plugin manager"


def test_backend_without_role_method_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be used as auth"):
        nxauth.Authenticator(
            {"state_dir": str(tmp_path), "transport": {"key_sources": []}, "auth": [{"use": "x"}], "account": []},
            backends={"x": object()},
            entry_points=False,
        )


def test_code_backends_compose_a_pipeline(tmp_path: Path) -> None:
    class Always:
        def authenticate(self, attempt: nxauth.Attempt) -> Verdict:
            return Verdict.allow()

    auth = nxauth.Authenticator(
        {"state_dir": str(tmp_path), "transport": {"key_sources": []}, "auth": [{"use": "always"}], "account": []},
        backends={"always": Always()},
        entry_points=False,
    )
    assert "always" in auth.backends


def test_context_paths_and_clock(tmp_path: Path) -> None:
    from nxauth.config import BackendConfig, load_config

    config_file = tmp_path / "etc" / "nxauth.toml"
    config_file.parent.mkdir()
    config_file.write_text("auth = []\naccount = []\n")
    context = BackendContext(
        BackendConfig("x", "x"),
        root=load_config(config_file),
        store=lambda: None,
        clock=lambda: 42.0,  # type: ignore[arg-type,return-value]
    )
    assert context.path("keys/ak") == tmp_path / "etc" / "keys" / "ak"
    assert context.path("/abs/ak") == Path("/abs/ak")
    assert context.clock() == 42.0


# ---------------------------------------------------------------- hook calls follow pluggy


def _recorders(calls: list[str]) -> list[object]:
    class Plain:
        def __init__(self, name: str) -> None:
            self.__name__ = name

        @hookimpl
        def nxauth_auth_event(self, event: nxauth.AuthEvent) -> None:
            calls.append(self.__name__)

    class First(Plain):
        @hookimpl(tryfirst=True)
        def nxauth_auth_event(self, event: nxauth.AuthEvent) -> None:
            calls.append(self.__name__)

    class Last(Plain):
        @hookimpl(trylast=True)
        def nxauth_auth_event(self, event: nxauth.AuthEvent) -> None:
            calls.append(self.__name__)

    return [Last("last"), Plain("plain-1"), First("first"), Plain("plain-2"), Plain("plain-3")]


def test_audit_events_reach_implementations_in_pluggys_order(tmp_path: Path) -> None:
    """tryfirst first, trylast last, otherwise the last registered first:
    the order pluggy's own caller uses, measured on pluggy itself."""
    import pluggy

    from nxauth.plugins import hookspecs

    reference: list[str] = []
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for plugin in _recorders(reference):
        pm.register(plugin, name=plugin.__name__)  # type: ignore[attr-defined]
    pm.hook.nxauth_auth_event(event=None)
    assert reference[0] == "first" and reference[-1] == "last"

    from nxauth.plugins.manager import implementations

    calls: list[str] = []
    config = {"state_dir": str(tmp_path), "audit": {"log": False}, "transport": {"key_sources": ["keystore"]}}
    with nxauth.Authenticator(config, plugins=_recorders(calls), entry_points=False) as auth:
        # the order the event is handed over in (each third-party observer
        # then runs in its own thread, so the calls may finish in any order)
        handed = [impl.plugin_name for impl in implementations(auth._pm, "nxauth_auth_event")]
        session = auth.open_session(("192.0.2.1", 1))
        with pytest.raises(nxauth.AuthenticationFailed):
            session.check_transport_key("someone-else", "ssh-ed25519 " + "A" * 68)
    assert [name for name in handed if name in reference] == reference
    assert sorted(calls[: len(reference)]) == sorted(reference)


@pytest.mark.parametrize("option", ["wrapper", "hookwrapper"])
def test_wrapper_implementations_are_refused_at_construction(tmp_path: Path, option: str) -> None:
    """nxauth calls each implementation on its own; a wrapper would silently
    never run, so it is refused by name (and fatal with plugins.strict)."""

    class Wrapper:
        __name__ = "wrapping-sink"

        @hookimpl(**{option: True})
        def nxauth_auth_event(self, event: nxauth.AuthEvent) -> Any:
            yield

    config: dict[str, Any] = {"state_dir": str(tmp_path), "audit": {"log": False}}
    with nxauth.Authenticator(config, plugins=[Wrapper()], entry_points=False) as auth:
        assert any("wrapper" in str(e) and e.plugin == "wrapping-sink" for e in auth.plugin_errors)
        assert "wrapping-sink" not in auth.describe()["plugins"]
    with pytest.raises(PluginError, match="wrapper implementations are not supported"):
        nxauth.Authenticator({**config, "plugins": {"strict": True}}, plugins=[Wrapper()], entry_points=False)
