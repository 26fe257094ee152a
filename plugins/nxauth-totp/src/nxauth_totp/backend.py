"""The ``totp`` backend (auth role): a time-based one-time code (RFC 6238).

Meant to be stacked ``required`` after a password backend, so a login needs
both the password and the code::

    [[auth]]
    use = "passwords"
    control = "required"
    [[auth]]
    use = "totp"
    control = "required"

    [backends.totp]          # every option is optional
    digits = 6               # 6 to 8
    period = 30              # seconds per time step, 10 to 120
    window = 1               # steps accepted either side of the current one, 0 to 10
    algorithm = "sha1"       # sha1, sha256 or sha512 (most apps know only sha1)
    issuer = "nxauth"        # shown by the authenticator app
    prompt = "Verification code: "
    database = "totp.db"     # default: STATE_DIR/totp.db; relative to the config file

The backend asks the client for the code through the attempt's conversation
(``attempt.ask(prompt, echo=False)``), always before it looks at the user,
so the question itself reveals nothing.  Decisions:

=====================================  =======================================
the code...                            verdict
=====================================  =======================================
cannot be asked (no conversation)      deny CONVERSATION_UNAVAILABLE
could not be read (callback failed)    deny CONVERSATION_FAILED
is not ``digits`` ASCII digits         deny INVALID_PASSWORD
is for a user who is not enrolled      deny UNKNOWN_USER, after the same
                                       comparisons against a dummy secret
matches no step in the window          deny BAD_PASSWORD "wrong-code"
matches only steps already used        deny BAD_PASSWORD "code-replayed"
                                       (RFC 6238 section 5.2)
matches a step later than the last     allow, and that step is recorded as
accepted one                           the last accepted one, atomically
=====================================  =======================================

An unenrolled user is denied, not abstained on: a ``required`` entry that
abstains is ignored, which would let the password alone in.  Any failure of
the enrolment database is a deny BACKEND_ERROR.  Neither the code nor the
secret ever appears in a verdict, a log line or a ``repr``.  Verdict
details are the words of :data:`DETAIL_WORDS` (and ``code-offset=…`` for the
step of an accepted code), declared in ``audit_details``: the audit trail
keeps only declared words (see :mod:`nxauth.details`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, final

import nxauth
import pyotp
from nxauth import Reason, Verdict

from .store import TotpStore, TotpStoreError

log = logging.getLogger("nxauth_totp")

__all__ = ["ALGORITHMS", "KIND", "TotpBackend", "TotpSettings", "build", "new_secret", "settings_from_context"]

KIND: Final = "totp"
ALGORITHMS: Final[dict[str, Callable[..., Any]]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}
DEFAULT_PROMPT: Final = "Verification code: "
DATABASE_NAME: Final = "totp.db"
_ISSUER_FORBIDDEN: Final = re.compile(r"[:\x00-\x1f\x7f]")


@final
@dataclass(frozen=True, slots=True)
class TotpSettings:
    """A ``totp`` instance's options, checked."""

    database: Path
    digits: int = 6
    period: int = 30
    window: int = 1
    algorithm: str = "sha1"
    issuer: str = "nxauth"
    prompt: str = DEFAULT_PROMPT

    def totp(self, secret: nxauth.Secret, username: str | None = None) -> pyotp.TOTP:
        """A :class:`pyotp.TOTP` for ``secret`` with these parameters (short-lived:
        it holds the secret in clear)."""
        return pyotp.TOTP(
            secret.reveal(),
            digits=self.digits,
            digest=ALGORITHMS[self.algorithm],
            interval=self.period,
            name=username,
            issuer=self.issuer,
        )

    def provisioning_uri(self, secret: nxauth.Secret, username: str) -> str:
        """The ``otpauth://totp/...`` URI an authenticator app imports (it
        contains the secret: show it to the user once, store it nowhere)."""
        return self.totp(secret, username).provisioning_uri()

    def step(self, now: float) -> int:
        """The RFC 6238 time step of ``now`` (T0 = 0)."""
        if not math.isfinite(now) or now < 0:
            raise ValueError("the clock returned an unusable time")
        return int(now // self.period)


#: The details of this backend's denials, declared in ``audit_details``.
DETAIL_WORDS: Final = frozenset(
    {
        "no-conversation",
        "asking-failed",
        "code-not-digits",
        "clock-unusable",
        "enrolment-database-failed",
        "stored-secret-unusable",
        "not-enrolled",
        "wrong-code",
        "code-replayed",
        "code-replayed-concurrently",
    }
)


def offset_word(offset: int) -> str:
    """``code-offset=0``, ``code-offset=p1`` (one step ahead), ``code-offset=m2``."""
    return f"code-offset={'p' if offset > 0 else 'm' if offset < 0 else ''}{abs(offset)}"


def new_secret() -> nxauth.Secret:
    """A fresh random secret: 32 base32 characters (160 bits, RFC 4226's
    recommended length), from :mod:`secrets`."""
    return nxauth.Secret(pyotp.random_base32(32))


def settings_from_context(context: nxauth.BackendContext) -> TotpSettings:
    """The :class:`TotpSettings` of a ``totp`` instance, read through the
    typed option getters (each error names ``backends.NAME.KEY``)."""
    options = context.options
    digits = options.integer("digits", 6, minimum=6, maximum=8)
    period = options.integer("period", 30, minimum=10, maximum=120)
    window = options.integer("window", 1, minimum=0, maximum=10)
    algorithm = options.choice("algorithm", tuple(ALGORITHMS), "sha1")
    issuer = options.string("issuer", "nxauth")
    if not issuer or len(issuer) > 64 or _ISSUER_FORBIDDEN.search(issuer):
        raise context.error("issuer", "must be 1 to 64 characters, without ':' or control characters")
    prompt = options.string("prompt", DEFAULT_PROMPT)
    if not prompt or len(prompt) > 200:
        raise context.error("prompt", "must be 1 to 200 characters")
    database = options.string("database")
    if database is not None and not database:
        raise context.error("database", "must be a path")
    return TotpSettings(
        database=context.path(database) if database else context.state_dir / DATABASE_NAME,
        digits=digits,
        period=period,
        window=window,
        algorithm=algorithm,
        issuer=issuer,
        prompt=prompt,
    )


@final
class TotpBackend:
    """Checks one-time codes against the enrolment database.  Thread-safe."""

    def __init__(
        self,
        store: TotpStore,
        settings: TotpSettings,
        *,
        clock: Callable[[], float] = time.time,
        name: str = KIND,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.name = name
        # compared against when the user is not enrolled, so that path costs the same
        self._dummy = new_secret()
        self._code = re.compile(rf"[0-9]{{{settings.digits}}}")
        #: what the audit trail may record of this backend's verdicts (nxauth.details)
        self.audit_details = DETAIL_WORDS | {
            offset_word(offset) for offset in range(-settings.window, settings.window + 1)
        }

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"TotpBackend(name={self.name!r}, digits={s.digits}, period={s.period}, window={s.window}, "
            f"algorithm={s.algorithm!r}, database={str(s.database)!r})"
        )

    def authenticate(self, attempt: nxauth.Attempt) -> Verdict:
        """Ask for the code and check it (see the module's table).  Never
        raises for bad input; a failure of the database is a deny."""
        try:
            answer = attempt.ask(self.settings.prompt, False)
        except nxauth.ConversationUnavailable:
            return Verdict.deny(Reason.CONVERSATION_UNAVAILABLE, "no-conversation")
        except nxauth.ConversationFailed:
            return Verdict.deny(Reason.CONVERSATION_FAILED, "asking-failed")
        code = answer.reveal().strip()
        if self._code.fullmatch(code) is None:
            return Verdict.deny(Reason.INVALID_PASSWORD, "code-not-digits")
        try:
            current = self.settings.step(self.clock())
        except ValueError:
            return Verdict.deny(Reason.BACKEND_ERROR, "clock-unusable")
        try:
            enrolment = self.store.lookup(attempt.username)
        except TotpStoreError as exc:
            return self._database_failed(exc)
        secret = enrolment.secret if enrolment is not None else self._dummy
        try:
            matched = self._matching_steps(secret, code, current)
        except (ValueError, TypeError):  # pyotp refuses a stored secret that is not base32 or too short
            return Verdict.deny(Reason.BACKEND_ERROR, "stored-secret-unusable")
        if enrolment is None:
            return Verdict.deny(Reason.UNKNOWN_USER, "not-enrolled")
        if not matched:
            return Verdict.deny(Reason.BAD_PASSWORD, "wrong-code")
        fresh = [step for step in matched if step > enrolment.last_step]
        if not fresh:
            return Verdict.deny(
                Reason.BAD_PASSWORD,
                "code-replayed",  # its step is not after the last accepted one
            )
        step = max(fresh)
        try:
            claimed = self.store.claim_step(attempt.username, enrolment.secret, step, self.clock())
        except TotpStoreError as exc:
            return self._database_failed(exc)
        if not claimed:
            return Verdict.deny(
                Reason.BAD_PASSWORD,
                "code-replayed-concurrently",  # used by a concurrent login (or re-enrolled)
            )
        return Verdict.allow(detail=offset_word(step - current))

    def _database_failed(self, exc: TotpStoreError) -> Verdict:
        # the store's message is about the file (its path, its mode), built by
        # this plugin: for the log; the audit trail gets the word
        log.error("totp %s: enrolment database: %s", self.name, exc)
        return Verdict.deny(Reason.BACKEND_ERROR, "enrolment-database-failed")

    def _matching_steps(self, secret: nxauth.Secret, code: str, current: int) -> list[int]:
        """Every step of the window whose code equals ``code``; all of them
        are compared, in constant time, whatever matches."""
        totp = self.settings.totp(secret)
        given = code.encode("ascii")
        window = self.settings.window
        matched = []
        for step in range(current - window, current + window + 1):
            if step < 0:
                continue
            if hmac.compare_digest(totp.generate_otp(step).encode("ascii"), given):
                matched.append(step)
        return matched

    def close(self) -> None:
        self.store.close()


def build(context: nxauth.BackendContext) -> TotpBackend:
    """The factory registered for kind ``totp``."""
    settings = settings_from_context(context)
    return TotpBackend(TotpStore(settings.database), settings, clock=context.clock, name=context.name)
