"""Configuration: TOML (or a mapping of the same shape) into frozen dataclasses.

``parse_config(mapping, source=...)`` is pure; ``load_config(path)`` reads the
file.  Every error is a :class:`nxauth.ConfigError` naming the source and the
dotted key.  Backend options stay a mapping here and are read, typed and
checked for unknown keys through :class:`Options` when the backend is built.

Every table, each section as well as each backend's options, is read by
one reader, :class:`Options`: the same types, the same refusal of NaN,
infinities and unknown keys, the same messages.  The modules:
:mod:`~nxauth.config.options` (the typed reader),
:mod:`~nxauth.config.schema` (the dataclasses and their defaults) and
:mod:`~nxauth.config.parse` (mapping or file into a :class:`Config`).
"""

from __future__ import annotations

from nxauth.config.options import Options, SecretRef
from nxauth.config.parse import default_config_path, load_config, parse_config
from nxauth.config.schema import (
    AdmissionConfig,
    AuditConfig,
    BackendConfig,
    Config,
    Control,
    LoginConfig,
    PluginsConfig,
    ServerConfig,
    SessionConfig,
    StackEntry,
    ThrottleConfig,
    TransportConfig,
    UsernameConfig,
    default_state_dir,
)

__all__ = [
    "AdmissionConfig",
    "AuditConfig",
    "BackendConfig",
    "Config",
    "Control",
    "LoginConfig",
    "Options",
    "PluginsConfig",
    "SecretRef",
    "ServerConfig",
    "SessionConfig",
    "StackEntry",
    "ThrottleConfig",
    "TransportConfig",
    "UsernameConfig",
    "default_config_path",
    "default_state_dir",
    "load_config",
    "parse_config",
]
