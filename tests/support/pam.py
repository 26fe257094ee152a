"""PAM for the tests and the benchmark, with no /etc/pam.d file touched.

- :class:`PamWrapper`: a private service directory served by
  ``libpam_wrapper.so`` (Debian ``libpam-wrapper``) with the test modules
  ``pam_matrix`` (users and passwords from a text file), ``pam_chatty``
  (info and error messages) and ``pam_set_items`` (rewrites ``PAM_USER``),
  next to system modules (``pam_unix``, ``pam_access``) by bare name.  No root
  needed.  The nxauth ``pam`` backend loads the wrapper through its
  ``library`` option; python-pam is pointed at it with
  :func:`point_python_pam_at` (it resolves ``pam_start`` with
  ``find_library("pam")``, which bypasses ``LD_PRELOAD``).
- :func:`system_user`: a throwaway system user for ``pam_unix`` (root only),
  removed afterwards whatever happens.

pam_wrapper reads ``PAM_WRAPPER``/``PAM_WRAPPER_SERVICE_DIR`` and copies the
service files when the library is loaded, once per process: every service is
written before :meth:`PamWrapper.activate`; the data files they name
(passdb, access.conf) can change at any time.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

__all__ = [
    "LIBPAM_WRAPPER",
    "PamWrapper",
    "Services",
    "missing_pam_wrapper",
    "missing_pam_unix",
    "point_python_pam_at",
    "system_user",
]

_MULTIARCH = ("x86_64-linux-gnu", "aarch64-linux-gnu", "i386-linux-gnu", "arm-linux-gnueabihf")


def _find(*candidates: str) -> str | None:
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    return None


LIBPAM_WRAPPER: Final = _find(
    *(f"/usr/lib/{arch}/libpam_wrapper.so" for arch in _MULTIARCH), "/usr/lib/libpam_wrapper.so"
)
_MODULES: Final = _find(*(f"/usr/lib/{arch}/pam_wrapper" for arch in _MULTIARCH), "/usr/lib/pam_wrapper")
_SECURITY: Final = _find(*(f"/usr/lib/{arch}/security" for arch in _MULTIARCH), "/lib/security", "/usr/lib/security")


class Services:
    """The service names every test and the benchmark share (one directory per process)."""

    MATRIX = "nxauth-matrix"  # pam_matrix for auth and account
    OTP = "nxauth-otp"  # password, then a second echo-off prompt (a one-time code)
    CHATTY = "nxauth-chatty"  # info and error messages, then pam_matrix
    LOUD = "nxauth-loud"  # 50 info and 50 error messages, then pam_matrix
    ECHO = "nxauth-echo"  # pam_matrix asking with an echo-on prompt
    ACCESS = "nxauth-access"  # pam_access on the remote host in the account step
    RENAME = "nxauth-rename"  # pam_set_items rewrites PAM_USER from $PAM_USER
    ITEMS = "nxauth-items"  # pam_succeed_if: PAM_TTY must be "nxauth", PAM_RHOST 192.0.2.10
    DENY = "nxauth-deny"  # pam_deny everywhere
    UNIX = "nxauth-unix"  # pam_unix nodelay (root: reads /etc/shadow)
    # pam_exec asks for the password and prints it back (as a module's
    # messages might: raw, quoted, in a "server said" message, cut); then
    # pam_matrix asks for it again (through the login's conversation)
    LEAKY = "nxauth-leaky"
    MATRIX_ALL = (MATRIX, OTP, CHATTY, LOUD, ECHO, ACCESS, RENAME, ITEMS, LEAKY)


def missing_pam_wrapper() -> str | None:
    """Why the pam_wrapper tests cannot run here, or ``None``."""
    if LIBPAM_WRAPPER is None:
        return "libpam_wrapper.so not found (Debian package libpam-wrapper)"
    if _MODULES is None or not os.path.exists(os.path.join(_MODULES, "pam_matrix.so")):
        return "pam_matrix.so not found (Debian package libpam-wrapper)"
    try:
        import pam  # noqa: F401
    except ImportError:
        return "python-pam not installed (pip install 'nx-twostage-auth[pam]')"
    return None


def missing_pam_unix() -> str | None:
    """Why the pam_unix tests cannot run here, or ``None``."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "pam_unix tests need root (a throwaway system user, /etc/shadow)"
    for tool in ("useradd", "userdel", "usermod", "chpasswd", "chage"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    if _SECURITY is None or not os.path.exists(os.path.join(_SECURITY, "pam_unix.so")):
        return "pam_unix.so not found"
    return None


class PamWrapper:
    """A private PAM service directory, activated once per process."""

    _active: PamWrapper | None = None

    def __init__(self, root: Path) -> None:
        self.root = root
        self.services = root / "services"
        self.otpdb = root / "otpdb"
        self.access = root / "access.conf"
        self.library = LIBPAM_WRAPPER or "libpam_wrapper.so"
        self.services.mkdir(parents=True, exist_ok=True)
        self.otpdb.write_text("")
        self.access.write_text("+:ALL:ALL\n")
        self._write_standard_services()

    def module(self, name: str) -> str:
        assert _MODULES is not None
        return os.path.join(_MODULES, name)

    def add_service(self, name: str, lines: Sequence[str]) -> None:
        if PamWrapper._active is not None:
            raise RuntimeError("pam_wrapper already copied the service files; add services before activate()")
        (self.services / name).write_text("".join(f"{line}\n" for line in lines))

    def passdb_of(self, service: str) -> Path:
        """pam_matrix reads one line per user (and checks its service in the
        account step): each service has its own passdb."""
        return self.root / f"passdb.{service}"

    def _write_standard_services(self) -> None:
        def matrix_for(service: str) -> str:
            self.passdb_of(service).write_text("")
            return f"{self.module('pam_matrix.so')} passdb={self.passdb_of(service)}"

        otp = f"{self.module('pam_matrix.so')} passdb={self.otpdb}"
        deny = [
            "auth required pam_deny.so",
            "account required pam_deny.so",
            "password required pam_deny.so",
            "session required pam_deny.so",
        ]
        self.add_service("other", deny)
        self.add_service(Services.DENY, deny)
        matrix = matrix_for(Services.MATRIX)
        self.add_service(Services.MATRIX, [f"auth required {matrix}", f"account required {matrix}"])
        matrix = matrix_for(Services.OTP)
        self.add_service(
            Services.OTP, [f"auth required {matrix}", f"auth required {otp}", f"account required {matrix}"]
        )
        matrix = matrix_for(Services.CHATTY)
        self.add_service(
            Services.CHATTY,
            [
                f"auth required {self.module('pam_chatty.so')} num_lines=2 info error",
                f"auth required {matrix}",
                f"account required {matrix}",
            ],
        )
        matrix = matrix_for(Services.LOUD)
        self.add_service(
            Services.LOUD,
            [
                f"auth required {self.module('pam_chatty.so')} num_lines=50 info error",
                f"auth required {matrix}",
                f"account required {matrix}",
            ],
        )
        matrix = matrix_for(Services.ECHO)
        self.add_service(Services.ECHO, [f"auth required {matrix} echo", f"account required {matrix}"])
        matrix = matrix_for(Services.ACCESS)
        self.add_service(
            Services.ACCESS,
            [
                f"auth required {matrix}",
                f"account required pam_access.so accessfile={self.access} nodefgroup",
                f"account required {matrix}",
            ],
        )
        matrix = matrix_for(Services.RENAME)
        self.add_service(
            Services.RENAME,
            [
                f"auth required {matrix}",
                f"auth required {self.module('pam_set_items.so')}",
                f"account required {matrix}",
            ],
        )
        matrix = matrix_for(Services.ITEMS)
        self.add_service(
            Services.ITEMS,
            [
                "auth requisite pam_succeed_if.so quiet tty = nxauth",
                "auth requisite pam_succeed_if.so quiet rhost = 192.0.2.10",
                f"auth required {matrix}",
                f"account required {matrix}",
            ],
        )
        self.add_service(Services.UNIX, ["auth required pam_unix.so nodelay", "account required pam_unix.so"])
        echo = self.root / "echo-password.sh"
        echo.write_text(
            "#!/bin/sh\n"
            "pw=$(tr -d '\\000')\n"
            "printf 'invalid credentials for %s (data 52e)\\n' \"$pw\"\n"
            'printf "\'%s\'\\n" "$pw"\n'
            "printf '%.40s\\n' \"$pw\"\n"
        )
        echo.chmod(0o755)
        matrix = matrix_for(Services.LEAKY)
        self.add_service(
            Services.LEAKY,
            [
                f"auth optional pam_exec.so expose_authtok stdout quiet {echo}",
                f"auth required {matrix}",
                f"account required {matrix}",
            ],
        )

    def activate(self) -> str:
        """Load libpam_wrapper.so with this directory; return its path (the
        backend's ``library`` option).  Once per process."""
        if PamWrapper._active is not None:
            if PamWrapper._active is not self:
                raise RuntimeError(f"pam_wrapper is already active with {PamWrapper._active.services}")
            return self.library
        saved = {name: os.environ.get(name) for name in ("PAM_WRAPPER", "PAM_WRAPPER_SERVICE_DIR")}
        os.environ["PAM_WRAPPER"] = "1"
        os.environ["PAM_WRAPPER_SERVICE_DIR"] = str(self.services)
        try:
            self._handle = ctypes.CDLL(self.library)  # the constructor reads the environment now
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        PamWrapper._active = self
        return self.library

    def set_users(self, users: Mapping[str, str], *, services: Sequence[str] = Services.MATRIX_ALL) -> None:
        """Replace pam_matrix's users (``name -> password``) for ``services``."""
        for service in services:
            self.passdb_of(service).write_text("".join(f"{u}:{p}:{service}\n" for u, p in users.items()))

    def set_codes(self, codes: Mapping[str, str]) -> None:
        """One-time codes (the second prompt of the OTP service)."""
        self.otpdb.write_text("".join(f"{u}:{c}:{Services.OTP}\n" for u, c in codes.items()))

    def set_access(self, rules: Sequence[str]) -> None:
        """pam_access rules (``+:ALL:192.0.2.0/24``) for the ACCESS service."""
        self.access.write_text("".join(f"{rule}\n" for rule in rules))


def point_python_pam_at(library: str) -> None:
    """Make python-pam load ``library`` (libpam_wrapper.so) instead of libpam,
    before its first call (the recipe's trap: ``find_library`` bypasses
    ``LD_PRELOAD``)."""
    import importlib

    internals = importlib.import_module("pam.__internals")
    if internals.PamAuthenticator._libs_ready:
        raise RuntimeError("python-pam already loaded its libpam")
    original = internals.find_library
    internals.find_library = lambda name: library if name == "pam" else original(name)


@contextlib.contextmanager
def system_user(password: str, *, prefix: str = "nxt") -> Iterator[str]:
    """A throwaway system user (``useradd -M``) with ``password``; always
    removed afterwards.  Root only."""
    name = f"{prefix}{secrets.token_hex(4)}"
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True, capture_output=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


def chage(name: str, *args: str) -> None:
    subprocess.run(["chage", *args, name], check=True, capture_output=True)


def usermod(name: str, *args: str) -> None:
    subprocess.run(["usermod", *args, name], check=True, capture_output=True)


def nss_users(count: int) -> list[str]:
    """``count`` names of users that exist in NSS here (pam_matrix
    authenticates any name; the backend looks the final name up in NSS)."""
    import pwd
    import re

    names = sorted(
        (entry.pw_uid, entry.pw_name)
        for entry in pwd.getpwall()
        if re.fullmatch(r"[a-z_][a-z0-9_-]{0,30}", entry.pw_name)
    )
    unique = list(dict.fromkeys(name for _, name in names))
    if len(unique) < count:
        raise RuntimeError(f"only {len(unique)} NSS users here, {count} needed")
    return unique[:count]


# ------------------------------------------------------------ pytest fixtures

import pytest  # noqa: E402 - the helpers above are also used by the benchmark


@pytest.fixture(scope="session")
def pam_wrapper(tmp_path_factory: pytest.TempPathFactory) -> PamWrapper:
    """The process's pam_wrapper directory, activated (skips when
    libpam-wrapper or python-pam is missing)."""
    reason = missing_pam_wrapper()
    if reason is not None:
        pytest.skip(reason)
    if PamWrapper._active is not None:
        return PamWrapper._active
    wrapper = PamWrapper(tmp_path_factory.mktemp("pam_wrapper"))
    wrapper.activate()
    return wrapper


@pytest.fixture
def unix_user() -> Iterator[tuple[str, str]]:
    """A throwaway system user and its password for pam_unix; removed in
    teardown (skips unless root)."""
    reason = missing_pam_unix()
    if reason is not None:
        pytest.skip(reason)
    password = "Unix-" + secrets.token_urlsafe(12)
    with system_user(password) as name:
        yield name, password
