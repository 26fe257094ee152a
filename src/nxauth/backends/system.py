"""The ``system`` backend (account role): the user must have a system account.

The original system's rule for its password database: only users with a
system account may use it.  The account is looked up through NSS
(``pwd.getpwnam``) under the canonical name.  Options::

    [backends.system]
    min_uid = 1                          # refuse accounts below this uid
    refuse_shells = ["nologin", "false"] # a bare name matches the shell's
                                         # basename, a path matches exactly

``min_uid`` defaults to 1: root is refused, as OpenSSH refuses root
password logins by default; set ``min_uid = 0`` to allow it.

==========================================  ===========================
the account...                              verdict
==========================================  ===========================
does not exist                              deny UNKNOWN_USER
has another canonical name (NSS rewrote it) deny NAME_MISMATCH
has a uid below ``min_uid``                 deny RESTRICTED
has a refused shell                         deny RESTRICTED
otherwise                                   allow, with attributes
                                            ``uid``, ``gid``, ``home``,
                                            ``shell``
==========================================  ===========================
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, Final, final

from nxauth.errors import PluginError
from nxauth.model import Identity, Reason, Verdict
from nxauth.plugins.hookspecs import hookimpl
from nxauth.plugins.registry import BackendContext, BackendRegistry
from nxauth.usernames import InvalidUsername, normalize_username

__all__ = ["SystemAccountBackend", "nxauth_register_backends"]

KIND = "system"
DEFAULT_MIN_UID: Final = 1
DEFAULT_REFUSED_SHELLS: Final = ("nologin", "false")
#: What an empty shell field in /etc/passwd means.
DEFAULT_SHELL: Final = "/bin/sh"


@final
class SystemAccountBackend:
    """Requires a system account (NSS) for the canonical name.

    ``getpwnam`` is :func:`pwd.getpwnam` unless given (tests); it returns an
    object with ``pw_name``, ``pw_uid``, ``pw_gid``, ``pw_dir``,
    ``pw_shell`` or raises ``KeyError``.  ``case`` is the configuration's
    ``usernames.case``, to compare the name NSS returns.
    """

    def __init__(
        self,
        *,
        getpwnam: Callable[[str], Any],
        min_uid: int = DEFAULT_MIN_UID,
        refuse_shells: Iterable[str] = DEFAULT_REFUSED_SHELLS,
        case: str = "fold",
        name: str = KIND,
    ) -> None:
        self._getpwnam = getpwnam
        self.min_uid = min_uid
        self.refuse_shells = frozenset(refuse_shells)
        self.case = case
        self.name = name

    def __repr__(self) -> str:
        return f"SystemAccountBackend(name={self.name!r}, min_uid={self.min_uid})"

    def _shell_refused(self, shell: str) -> bool:
        return shell in self.refuse_shells or os.path.basename(shell) in self.refuse_shells

    #: the detail words of its verdicts (see :mod:`nxauth.details`)
    audit_details = frozenset({"no-system-account", "nss-returned-another-name", "uid-below-min-uid", "shell-refused"})

    def check_account(self, identity: Identity) -> Verdict:
        """Allow a user with an acceptable system account (see the module's table)."""
        try:
            entry = self._getpwnam(identity.username)
        except KeyError:
            return Verdict.deny(Reason.UNKNOWN_USER, "no-system-account")
        try:
            system_name = normalize_username(entry.pw_name, case=self.case)
        except InvalidUsername:
            system_name = None
        if system_name != identity.username:
            return Verdict.deny(Reason.NAME_MISMATCH, "nss-returned-another-name")
        uid = int(entry.pw_uid)
        if uid < self.min_uid:
            return Verdict.deny(Reason.RESTRICTED, "uid-below-min-uid")
        shell = str(entry.pw_shell) or DEFAULT_SHELL
        if self._shell_refused(shell):
            return Verdict.deny(Reason.RESTRICTED, "shell-refused")
        return Verdict.allow(
            username=str(entry.pw_name),  # the passwd entry's name, checked again by the core
            attributes={"uid": uid, "gid": int(entry.pw_gid), "home": str(entry.pw_dir), "shell": shell},
        )


def build(context: BackendContext) -> SystemAccountBackend:
    options = context.options
    min_uid = options.integer("min_uid", DEFAULT_MIN_UID, minimum=0, maximum=2**32 - 1)
    shells = options.strings("refuse_shells", DEFAULT_REFUSED_SHELLS)
    for index, shell in enumerate(shells):
        if not shell or (shell != os.path.basename(shell) and not shell.startswith("/")):
            raise context.error(f"refuse_shells[{index}]", "expected a shell name (nologin) or an absolute path")
    try:
        import pwd
    except ImportError:
        raise PluginError("the system backend needs a POSIX system (module pwd)", plugin=__name__) from None
    return SystemAccountBackend(
        getpwnam=pwd.getpwnam,
        min_uid=min_uid,
        refuse_shells=shells,
        case=context.config.usernames.case,
        name=context.name,
    )


@hookimpl
def nxauth_register_backends(registry: BackendRegistry) -> None:
    registry.add(KIND, build)
