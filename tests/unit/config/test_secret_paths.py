"""docs/configuration.md: "Relative paths are relative to the configuration
file's directory" -- secret files included.  The old code read a relative
``{file = ...}`` from the working directory.  A configuration given as a
mapping has no file: a relative secret file is refused there (a
``ConfigError`` at parse time), never read from wherever the process runs.

Through the public path: a plugin's backend reads the secret with
``context.options.secret`` when the ``Authenticator`` is built from the
file (``nxauth.load_config``) or from a mapping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nxauth
from nxauth.config import SecretRef, load_config, parse_config
from nxauth.testing import MemoryBackend


class Probe:
    """A backend kind that keeps the secret its factory read."""

    def __init__(self) -> None:
        self.read: list[str] = []

    @nxauth.hookimpl
    def nxauth_register_backends(self, registry: nxauth.BackendRegistry) -> None:
        registry.add("probe", self.build)

    def build(self, context: nxauth.BackendContext) -> object:
        secret = context.options.secret("pw", required=True)
        assert secret is not None
        self.read.append(secret.reveal())
        return MemoryBackend({})


def write_config(directory: Path, reference: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "nxauth.toml"
    path.write_text(
        f'state_dir = "state"\n[transport]\nkey_sources = []\n'
        f'[backends.door]\nkind = "probe"\npw = {{file = {reference!r}}}\n'
        '[[auth]]\nuse = "door"\n'
    )
    return path


def build(config: nxauth.Config | dict[str, object]) -> list[str]:
    probe = Probe()
    with nxauth.Authenticator(config, plugins=[probe], entry_points=False):
        pass
    return probe.read


@pytest.mark.parametrize("reference", ["pw", "./pw", "sub/../pw", "secrets/pw"])
def test_a_relative_secret_file_is_read_from_the_configuration_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: str
) -> None:
    """configuration.md, the introduction: relative paths are relative to the
    configuration file's directory; and Backends: the secret is the file's
    content, its final line break removed."""
    etc = tmp_path / "etc"
    target = etc / reference
    target.parent.mkdir(parents=True, exist_ok=True)
    (etc / "sub").mkdir(exist_ok=True)
    target.write_text("from-the-config-dir\n")
    elsewhere = tmp_path / "cwd"
    decoy = elsewhere / reference
    decoy.parent.mkdir(parents=True, exist_ok=True)
    (elsewhere / "sub").mkdir(exist_ok=True)
    decoy.write_text("from-the-working-directory\n")
    config_path = write_config(etc, reference)
    monkeypatch.chdir(elsewhere)
    assert build(load_config(config_path)) == ["from-the-config-dir"]


def test_through_a_relative_configuration_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--config etc/nxauth.toml`` from another directory: the same file."""
    etc = tmp_path / "etc"
    config_path = write_config(etc, "pw")
    (etc / "pw").write_text("right")
    (tmp_path / "pw").write_text("wrong")
    monkeypatch.chdir(tmp_path)
    config = load_config(os.path.relpath(config_path))
    later = tmp_path / "later"
    later.mkdir()
    (later / "pw").write_text("wrong too")
    monkeypatch.chdir(later)  # a chdir between loading and building changes nothing
    assert build(config) == ["right"]


def test_an_absolute_secret_file_is_taken_as_it_is(tmp_path: Path) -> None:
    secret = tmp_path / "run" / "pw"
    secret.parent.mkdir()
    secret.write_text("absolute")
    assert build(load_config(write_config(tmp_path / "etc", str(secret)))) == ["absolute"]


@settings(max_examples=50, deadline=None)
@given(reference=st.from_regex(r"\A(\.\./|\./|[a-z]{1,8}/){0,3}[a-z]{1,8}\Z"))
def test_a_relative_secret_in_a_mapping_is_refused(reference: str) -> None:
    """A mapping given in code has no file: a relative secret file is a
    ConfigError naming the key, whatever the working directory holds."""
    with pytest.raises(nxauth.ConfigError, match="must be an absolute path") as info:
        parse_config({"backends": {"door": {"kind": "probe", "pw": {"file": reference}}}})
    assert info.value.key == "backends.door.pw.file"


def test_a_relative_secret_in_a_nested_table_of_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At any depth of a backend's options."""
    etc = tmp_path / "etc"
    etc.mkdir()
    path = etc / "nxauth.toml"
    path.write_text('[backends.door]\nkind = "probe"\ntls = {client_key = {file = "key"}}\n')
    config = load_config(path)
    reference = config.backends["door"].options["tls"]["client_key"]
    assert reference == SecretRef(file=str(etc.resolve() / "key"))


def test_the_mapping_refusal_is_at_build_through_the_authenticator(tmp_path: Path) -> None:
    with pytest.raises(nxauth.ConfigError, match="must be an absolute path"):
        build(
            {
                "state_dir": str(tmp_path / "state"),
                "transport": {"key_sources": []},
                "backends": {"door": {"kind": "probe", "pw": {"file": "pw"}}},
                "auth": [{"use": "door"}],
            }
        )
