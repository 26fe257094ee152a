"""The embedded server's host key: generated on first use, never
overwritten, refused when others can read it (as sshd refuses one)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from nxauth.errors import ConfigError
from nxauth.files import PRIVATE_MODE, PUBLIC_MODE, make_dirs, read_small, write_file

__all__ = ["ensure_host_key", "public_key_line"]


def ensure_host_key(path: str | os.PathLike[str]) -> Path:
    """The host key at ``path``, generated on first use: Ed25519 in OpenSSH
    format, mode 0600, its directory made 0700 when missing, written to a
    temporary file and linked into place (never over an existing key; a
    concurrent start keeps the first).  ``PATH.pub`` is written beside it.
    A key that its group or others can read is refused, as sshd does."""
    target = Path(path)
    try:
        info = os.stat(target)
    except FileNotFoundError:
        _create_host_key(target)
        info = os.stat(target)
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"host key {target} is not a regular file", key="server.host_key")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"host key {target} is accessible by others (mode {stat.S_IMODE(info.st_mode):04o}; chmod 600 it)",
            key="server.host_key",
        )
    public = target.with_name(target.name + ".pub")
    if not public.exists():
        write_file(public, (public_key_line(target) + "\n").encode(), PUBLIC_MODE)
    return target


def public_key_line(path: str | os.PathLike[str]) -> str:
    """The OpenSSH public key line of the private key at ``path`` (OpenSSH
    or PEM format, unencrypted)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        data = read_small(path)
    except OSError as exc:
        raise ConfigError(f"host key {path} cannot be read: {exc.strerror}", key="server.host_key") from None
    try:
        private: Any = (
            serialization.load_ssh_private_key(data, None)
            if b"OPENSSH PRIVATE KEY" in data
            else serialization.load_pem_private_key(data, None)
        )
        public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    except (ValueError, TypeError, AttributeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"host key {path} cannot be read: {exc}", key="server.host_key") from None
    return bytes(public).decode()


def _create_host_key(target: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    make_dirs(target.parent)
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    write_file(target, pem, PRIVATE_MODE)  # linked, never over a key: a concurrent start keeps the first
