"""nxauth-totp: time-based one-time codes (RFC 6238) as an nxauth backend.

Installing the distribution is enough: its entry point in the group
``nxauth`` makes the backend kind ``totp`` available to every
:class:`nxauth.Authenticator`.  Users are enrolled with the ``nxauth-totp``
command.  This package is also the template for third-party plugins.
"""

from __future__ import annotations

from .backend import KIND, TotpBackend, TotpSettings, new_secret, settings_from_context
from .store import AlreadyEnrolledError, EnrolledUser, Enrolment, TotpStore, TotpStoreError

__version__ = "0.1.0"

__all__ = [
    "KIND",
    "AlreadyEnrolledError",
    "EnrolledUser",
    "Enrolment",
    "TotpBackend",
    "TotpSettings",
    "TotpStore",
    "TotpStoreError",
    "__version__",
    "new_secret",
    "settings_from_context",
]
