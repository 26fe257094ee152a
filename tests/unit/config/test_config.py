"""Configuration parsing: defaults, every error names the source and dotted key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from nxauth import ConfigError, Control, Secret
from nxauth.config import Config, Options, SecretRef, default_state_dir, load_config, parse_config


def test_embedded_default() -> None:
    config = Config()
    assert [e.use for e in config.auth] == ["passwords"]
    assert [e.use for e in config.account] == ["users"]
    assert config.transport.key_sources == ("keystore",)
    assert config.transport.account == "nx"
    assert config.session.max_attempts == 6
    assert config.store_path == config.state_dir / "nxauth.db"


def test_state_dir_default_depends_on_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_state_dir() == Path("/var/lib/nxauth")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", "/tmp/xdg")
    assert default_state_dir() == Path("/tmp/xdg/nxauth")


def test_full_file(tmp_path: Path) -> None:
    path = tmp_path / "nxauth.toml"
    path.write_text(
        """
state_dir = "state"
[transport]
account = "nx"
key_sources = ["keystore", "ak"]
allowed_key_types = ["ssh-ed25519"]
[session]
max_attempts = 3
[usernames]
case = "preserve"
[throttle]
exempt = ["10.0.0.0/8", "2001:db8::/32"]
[audit]
jsonl = "audit.jsonl"
required = true
[backends.corp-ad]
kind = "ldap"
timeout = 5
bind_password = {env = "AD_PW"}
[backends.ak]
kind = "authorized_keys"
path = "/etc/nxauth/keys"
[[auth]]
use = "corp-ad"
control = "sufficient"
[[auth]]
use = "pam"
[[account]]
use = "users"
control = "requisite"
"""
    )
    config = load_config(path)
    assert config.source == str(path)
    assert config.state_dir == tmp_path / "state"
    assert config.audit.jsonl == tmp_path / "audit.jsonl"
    assert config.transport.allowed_key_types == frozenset({"ssh-ed25519"})
    assert [(e.use, e.control) for e in config.auth] == [("corp-ad", Control.SUFFICIENT), ("pam", Control.REQUIRED)]
    assert config.account[0].control is Control.REQUISITE
    assert config.backends["corp-ad"].kind == "ldap"
    assert config.backends["corp-ad"].timeout == 5.0
    assert config.backends["corp-ad"].options["bind_password"] == SecretRef(env="AD_PW")
    assert config.usernames.case == "preserve"
    assert len(config.throttle.exempt) == 2


BAD: list[Any] = [
    pytest.param({"auth": [{"use": "pam", "control": "sufficent"}]}, "auth[0].control", id="bad-control"),
    pytest.param({"auth": [{"use": "pam", "contrl": "required"}]}, "auth[0].contrl", id="unknown-stack-key"),
    pytest.param({"auth": [{"control": "required"}]}, "auth[0].use", id="missing-use"),
    pytest.param({"auth": {"use": "pam"}}, "auth", id="stack-not-array"),
    pytest.param({"sesion": {}}, "sesion", id="unknown-top-key"),
    pytest.param({"session": {"max_attempts": 0}}, "session.max_attempts", id="zero-attempts"),
    pytest.param({"session": {"max_attempts": "6"}}, "session.max_attempts", id="string-number"),
    pytest.param({"session": {"max_attempts": True}}, "session.max_attempts", id="bool-number"),
    pytest.param({"throttle": {"exempt": ["not-a-net"]}}, "throttle.exempt[0]", id="bad-network"),
    pytest.param({"usernames": {"case": "upper"}}, "usernames.case", id="bad-case"),
    pytest.param({"backends": {"x": {"kind": 3}}}, "backends.x.kind", id="bad-kind"),
    pytest.param({"backends": {"x": {"timeout": -1}}}, "backends.x.timeout", id="negative-timeout"),
    pytest.param({"backends": {"bad name": {}}}, "backends.bad name", id="bad-instance-name"),
    pytest.param({"backends": {"x": {"pw": {"env": "A", "file": "b"}}}}, "backends.x.pw", id="two-secret-refs"),
    pytest.param({"transport": {"key_sources": "keystore"}}, "transport.key_sources", id="sources-not-list"),
    pytest.param({"transport": {"rsa_min_bits": 512}}, "transport.rsa_min_bits", id="rsa-too-small"),
    pytest.param({"state_dir": 3}, "state_dir", id="state-dir-type"),
    pytest.param({"transport": {"allowed_key_types": []}}, "transport.allowed_key_types", id="no-key-type"),
    pytest.param({"transport": {"allowed_key_types": "ssh-rsa"}}, "transport.allowed_key_types", id="types-not-list"),
    pytest.param(
        {"transport": {"allowed_key_types": ["ssh-ed25519", "ed25519"]}},
        "transport.allowed_key_types[1]",
        id="unknown-key-type",
    ),
]


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("ssh-ed25519 ", "unknown key type 'ssh-ed25519 '; supported: ecdsa-sha2-nistp256, "),
        ("ssh-dss", "ssh-dss (DSA) keys are never accepted"),
        ("ssh-dss-cert-v01@openssh.com", "ssh-dss (DSA) keys are never accepted"),
        ("rsa-sha2-512", "'rsa-sha2-512' is a signature algorithm: the key type is 'ssh-rsa'"),
        ("sk-ssh-ed25519-cert-v01@openssh.com", "list 'sk-ssh-ed25519@openssh.com', which covers its certificates"),
    ],
)
def test_allowed_key_types_are_checked(name: str, hint: str) -> None:
    """A misspelled type would only refuse more keys, silently: every name
    must be a plain key type stage 1 knows."""
    with pytest.raises(ConfigError) as info:
        parse_config({"transport": {"allowed_key_types": ["ssh-rsa", name]}}, source="x.toml")
    assert info.value.key == "transport.allowed_key_types[1]"
    assert hint in str(info.value)


def test_allowed_key_types_accept_every_supported_type() -> None:
    from nxauth.keys.wire import DSS, PLAIN_KEY_TYPES

    names = sorted(PLAIN_KEY_TYPES - {DSS})
    config = parse_config({"transport": {"allowed_key_types": names}}, source="x.toml")
    assert config.transport.allowed_key_types == frozenset(names)
    assert parse_config({}, source="x.toml").transport.allowed_key_types is None


@pytest.mark.parametrize(("data", "key"), BAD)
def test_errors_name_source_and_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="/etc/nxauth/nxauth.toml")
    assert info.value.key == key
    assert info.value.source == "/etc/nxauth/nxauth.toml"
    assert str(info.value).startswith(f"/etc/nxauth/nxauth.toml: {key}: ")
    assert isinstance(info.value, ValueError)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[auth]\nuse = 1")
    with pytest.raises(ConfigError, match="invalid TOML") as info:
        load_config(bad)
    assert info.value.source == str(bad)


def test_empty_stack_is_allowed_and_kept_empty() -> None:
    config = parse_config({"auth": [], "account": []})
    assert config.auth == ()
    assert config.account == ()


def test_options_getters_and_unused_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-file\n")
    monkeypatch.setenv("NX_TEST_PW", "from-env")
    options = Options(
        {
            "host": "ldap.example",
            "port": 636,
            "tls": True,
            "timeout": 2,
            "mode": "direct",
            "groups": ["a", "b"],
            "env_pw": SecretRef(env="NX_TEST_PW"),
            "file_pw": SecretRef(file=str(secret_file)),
            "code_pw": Secret("from-code"),
            "literal_pw": "oops",
            "typo": 1,
        },
        source="x.toml",
        prefix="backends.corp",
    )
    assert options.string("host") == "ldap.example"
    assert options.string("missing", "dflt") == "dflt"
    assert options.integer("port", minimum=1, maximum=65535) == 636
    assert options.boolean("tls") is True
    assert options.number("timeout") == 2.0
    assert options.choice("mode", ["direct", "search"], "search") == "direct"
    assert options.strings("groups") == ("a", "b")
    env_pw = options.secret("env_pw")
    file_pw = options.secret("file_pw")
    code_pw = options.secret("code_pw")
    assert env_pw is not None and env_pw.reveal() == "from-env"
    assert file_pw is not None and file_pw.reveal() == "from-file"
    assert code_pw is not None and code_pw.reveal() == "from-code"
    with pytest.raises(ConfigError, match="must be a secret reference") as info:
        options.secret("literal_pw")
    assert info.value.key == "backends.corp.literal_pw"
    with pytest.raises(ConfigError, match="must be a string"):
        options.string("port")
    with pytest.raises(ConfigError, match="at most 10"):
        options.integer("port", maximum=10)
    with pytest.raises(ConfigError, match="unknown option") as info:
        options.check_unused()
    assert info.value.key == "backends.corp.typo"


def test_secret_ref_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NX_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match="NX_NOT_SET is not set"):
        SecretRef(env="NX_NOT_SET").resolve(source="s", key="k")
    with pytest.raises(ConfigError, match="cannot read secret file"):
        SecretRef(file="/nonexistent/secret").resolve(source="s", key="k")
