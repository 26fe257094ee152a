"""``nxauth pam-service``: print (or install) the PAM service file nxauth uses."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

from nxauth.cli import EXIT_FAIL, EXIT_OK, EXIT_USAGE, CommandError

__all__ = ["STYLES", "detect_style", "register", "render_service_file"]

PAM_DIR: Final = Path("/etc/pam.d")
STYLES: Final = ("debian", "redhat", "generic")

_HEADER: Final = """\
#%PAM-1.0
# PAM configuration for nxauth, service "{service}" (stage 2: the real user).
# Written by `nxauth pam-service`.
#
# For each login nxauth opens one PAM handle with PAM_RHOST set to the
# client's address and PAM_TTY set to "nxauth", calls pam_authenticate and
# then pam_acct_mgmt.  It never calls pam_setcred, pam_open_session or
# pam_chauthtok: the program started for the user opens the session, and an
# expired password is refused (change it by other means).
"""

_BODIES: Final = {
    "debian": """
# Standard Un*x authentication (pam_unix, and whatever else the system set up).
@include common-auth

# Refuse non-root logins while /etc/nologin exists.
account    required     pam_nologin.so

# Restrict logins by user and client address: uncomment and edit
# /etc/security/access.conf (e.g. "-:ALL EXCEPT users:ALL EXCEPT 192.0.2.0/24").
# account  required     pam_access.so

# Standard Un*x authorization (expired accounts and passwords).
@include common-account
""",
    "redhat": """
# The system's authentication for remote logins (pam_unix, pam_faillock, ...).
auth       include      password-auth

# Refuse non-root logins while /etc/nologin exists.
account    required     pam_nologin.so

# Restrict logins by user and client address: uncomment and edit
# /etc/security/access.conf (e.g. "-:ALL EXCEPT users:ALL EXCEPT 192.0.2.0/24").
# account  required     pam_access.so

account    include      password-auth
""",
    "generic": """
# Unix passwords.
auth       required     pam_unix.so

# Refuse non-root logins while /etc/nologin exists.
account    required     pam_nologin.so

# Restrict logins by user and client address: uncomment and edit
# /etc/security/access.conf (e.g. "-:ALL EXCEPT users:ALL EXCEPT 192.0.2.0/24").
# account  required     pam_access.so

# Expired accounts and passwords.
account    required     pam_unix.so
""",
}

_FOOTER: Final = """
# nxauth changes no passwords and opens no sessions through this service.
password   required     pam_deny.so
session    required     pam_deny.so
"""


def detect_style(pam_dir: Path = PAM_DIR) -> str:
    """``debian`` when ``common-auth`` exists (Debian, Ubuntu, SUSE),
    ``redhat`` when ``password-auth`` does (RHEL, Fedora), else ``generic``."""
    if (pam_dir / "common-auth").exists() and (pam_dir / "common-account").exists():
        return "debian"
    if (pam_dir / "password-auth").exists():
        return "redhat"
    return "generic"


def render_service_file(service: str = "nxauth", style: str = "generic") -> str:
    """The text of ``/etc/pam.d/<service>`` for a system of ``style``."""
    if style not in _BODIES:
        raise ValueError(f"unknown style {style!r}; one of {', '.join(STYLES)}")
    return _HEADER.format(service=service) + _BODIES[style] + _FOOTER


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "pam-service",
        help="print or install the PAM service file for the pam backend",
        description=cmd_pam_service.__doc__,
    )
    parser.add_argument("--service", default="nxauth", help="the PAM service name (default: nxauth)")
    parser.add_argument("--style", choices=STYLES, help="the system's PAM layout (default: detected from /etc/pam.d)")
    parser.add_argument("--install", action="store_true", help="write the file instead of printing it")
    parser.add_argument("--path", metavar="PATH", help="with --install: write here (default: /etc/pam.d/SERVICE)")
    parser.add_argument("--force", action="store_true", help="with --install: replace an existing file")
    parser.set_defaults(handler=cmd_pam_service)


def cmd_pam_service(args: argparse.Namespace) -> int:
    """Print a PAM service file for nxauth's pam backend, or write it with
    --install (an existing file is kept unless --force is given)."""
    from nxauth.backends.pam import check_service_name

    try:
        service = check_service_name(args.service)
    except ValueError as exc:
        raise CommandError(f"--service: {exc}", EXIT_USAGE) from None
    text = render_service_file(service, args.style or detect_style())
    if not args.install:
        if args.path or args.force:
            raise CommandError("--path and --force go with --install", EXIT_USAGE)
        sys.stdout.write(text)
        return EXIT_OK
    target = Path(args.path) if args.path else PAM_DIR / service
    if not target.parent.is_dir():
        raise CommandError(f"{target.parent}: no such directory", EXIT_FAIL)
    if (target.exists() or target.is_symlink()) and not args.force:
        raise CommandError(f"{target} exists; not replaced (use --force to replace it)", EXIT_FAIL)
    _write_atomically(target, text)
    print(f"wrote {target}")
    return EXIT_OK


def _write_atomically(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` (mode 0644) through a temporary file in
    the same directory, so a reader never sees half a PAM configuration."""
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
