"""The ``passwords`` backend (auth role): nxauth's own password database.

Passwords live in the users table of the embedded store, hashed with
argon2id; they may differ from the system's.  Options (all optional)::

    [backends.passwords]
    time_cost = 2          # argon2id passes for new hashes
    memory_cost = 19456    # argon2id memory in KiB
    parallelism = 1        # argon2id lanes

Decisions, each after the same amount of hashing work:

==============================  ==========================================
the user...                     verdict
==============================  ==========================================
is not in the table             deny UNKNOWN_USER (after a dummy verify)
is listed without a password    deny UNKNOWN_USER (after a dummy verify):
                                not in the *password* database; never an
                                allow, and not an abstention either, so a
                                ``required`` entry still requires a password
is disabled                     deny DISABLED (after the real verify)
gave a wrong password           deny BAD_PASSWORD
gave the right password         allow; an old scheme or old parameters are
                                re-hashed, with a conditional update that
                                never overwrites a password changed meanwhile
==============================  ==========================================

A password that the database can never hold (over 4096 bytes, NUL, not
UTF-8) is denied INVALID_PASSWORD before the user is even looked up.

Every hash, the dummy one included, runs inside the authenticator's
admission gate (:class:`nxauth.Admission`, ``[admission]``): a bounded number
at once, the rest waiting, sources that keep failing served last.  A login
the gate refuses is denied OVERLOADED (``admission-queue-full``,
``admission-wait-exceeded``), not counted by the throttle.
"""

from __future__ import annotations

import logging
from typing import final

from nxauth.admission import Admission
from nxauth.backends.hashing import (
    DEFAULT_MEMORY_COST,
    DEFAULT_PARALLELISM,
    DEFAULT_TIME_COST,
    PasswordHasher,
    password_refusal,
)
from nxauth.backends.userdb import UserDatabase, user_database
from nxauth.errors import StoreError
from nxauth.model import Attempt, Reason, Verdict
from nxauth.plugins.hookspecs import hookimpl
from nxauth.plugins.registry import BackendContext, BackendRegistry
from nxauth.usernames import escape_for_log

__all__ = ["PasswordsBackend", "hasher_from_options", "nxauth_register_backends"]

log = logging.getLogger("nxauth.backends.passwords")

KIND = "passwords"


@final
class PasswordsBackend:
    """Checks passwords against the users table.  Thread-safe."""

    def __init__(
        self, users: UserDatabase, hasher: PasswordHasher, *, name: str = KIND, admission: Admission | None = None
    ) -> None:
        self.users = users
        self.hasher = hasher
        self.name = name
        #: bounds the hashes in flight, fair per source (a busy gate raises Overloaded: a deny, not counted)
        self.admission = admission if admission is not None else Admission()

    def __repr__(self) -> str:
        return f"PasswordsBackend(name={self.name!r}, {self.hasher!r})"

    #: the detail words of its verdicts (see :mod:`nxauth.details`)
    audit_details = frozenset(
        {
            "password-refused",
            "not-in-password-database",
            "no-nxauth-password",
            "disabled-password-matched",
            "disabled-password-wrong",
            "stored-hash-unusable",
            "bcrypt-password-too-long",
        }
    )

    def authenticate(self, attempt: Attempt) -> Verdict:
        """Allow the right password of an enabled user; deny everything else
        (see the module's table).  Raises only when the store fails, which
        the stack turns into a deny."""
        password = attempt.password
        problem = password_refusal(password)
        if problem is not None:
            return Verdict.deny(Reason.INVALID_PASSWORD, "password-refused")
        record = self.users.get(attempt.username)
        with self.admission.admit(attempt.peer):  # one hash either way, so the wait tells nothing either
            if record is None or record.password_hash is None:
                self.hasher.dummy_verify(password)
                return Verdict.deny(
                    Reason.UNKNOWN_USER,
                    "not-in-password-database" if record is None else "no-nxauth-password",
                )
            check = self.hasher.verify(password, record.password_hash)
        if not record.enabled:
            return Verdict.deny(
                Reason.DISABLED, "disabled-password-matched" if check.matched else "disabled-password-wrong"
            )
        if not check.matched:
            return Verdict.deny(Reason.BAD_PASSWORD, check.detail)
        if check.new_hash is not None:
            self._upgrade(record.username, record.password_hash, check.new_hash)
        return Verdict.allow(username=record.username)  # the stored row's name, checked by the core

    def _upgrade(self, username: str, old_hash: str, new_hash: str) -> None:
        """Store the re-hashed password unless it changed meanwhile.  A
        failure only delays the upgrade to the next login."""
        try:
            replaced = self.users.replace_hash(username, old_hash, new_hash)
        except StoreError as exc:
            log.warning("%s: cannot upgrade the hash of %s: %s", self.name, escape_for_log(username), exc)
            return
        if replaced:
            log.info("%s: upgraded the password hash of %s", self.name, escape_for_log(username))
        else:
            log.info("%s: hash of %s changed meanwhile; not upgraded", self.name, escape_for_log(username))


def hasher_from_options(context: BackendContext) -> PasswordHasher:
    """The :class:`PasswordHasher` described by a ``passwords`` instance's options."""
    options = context.options
    time_cost = options.integer("time_cost", DEFAULT_TIME_COST, minimum=1, maximum=64)
    memory_cost = options.integer("memory_cost", DEFAULT_MEMORY_COST, minimum=1024, maximum=1 << 20)
    parallelism = options.integer("parallelism", DEFAULT_PARALLELISM, minimum=1, maximum=64)
    if memory_cost < 8 * parallelism:
        raise context.error("memory_cost", "must be at least 8 KiB per lane (8 * parallelism)")
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)


def build(context: BackendContext) -> PasswordsBackend:
    return PasswordsBackend(
        user_database(context), hasher_from_options(context), name=context.name, admission=context.admission
    )


@hookimpl
def nxauth_register_backends(registry: BackendRegistry) -> None:
    registry.add(KIND, build)
