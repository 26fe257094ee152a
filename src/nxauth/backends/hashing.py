"""Password hashing for the nxauth password database.

One passlib ``CryptContext`` (from ``libpass``) per :class:`PasswordHasher`:
new hashes are argon2id with the configured cost; bcrypt, sha512_crypt and
sha256_crypt hashes (and argon2 hashes of another type or cost) are verified
and handed back re-hashed, so the caller can upgrade them after a successful
login.

What this module refuses, and why:

- passwords that are empty, hold a NUL, are not UTF-8, or are longer than
  :data:`MAX_PASSWORD_BYTES` (passlib's own limit): refused before any
  hashing, so a 1 MiB password costs nothing;
- a bcrypt check with a password longer than 72 bytes: bcrypt would look at
  the first 72 bytes only, so the check is denied with a clear detail rather
  than silently truncated (new hashes are argon2id, which has no such limit);
- hashes of other schemes, malformed hashes, and hashes whose cost would make
  one login take absurdly long (a denial-of-service from an imported file).

Unknown users cost the same as known ones: :meth:`PasswordHasher.dummy_verify`
checks the password against an argon2id hash with the parameters of new
hashes, a random salt and a random digest.  It is put together, not
computed, so it costs nothing to make: neither a process that never checks
a password (``nxauth authorized-keys``) nor the first unknown user of a
one-login process (``nxauth login``) pays an extra hash.  No message here
ever contains a password.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, final

from nxauth.errors import NxauthError, UsageError

if TYPE_CHECKING:
    from nxauth.model import Secret

__all__ = [
    "BCRYPT_MAX_BYTES",
    "DEFAULT_MEMORY_COST",
    "DEFAULT_PARALLELISM",
    "DEFAULT_TIME_COST",
    "MAX_PASSWORD_BYTES",
    "SCHEMES",
    "HashCheck",
    "PasswordHasher",
    "PasswordRefused",
    "UnsupportedHash",
    "password_refusal",
]

#: The longest password accepted, in UTF-8 bytes (passlib refuses longer ones).
MAX_PASSWORD_BYTES: Final = 4096
#: bcrypt reads at most this many bytes of a password.
BCRYPT_MAX_BYTES: Final = 72

# argon2id, OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): about
# 25 ms on a 2020s server core.  One lane, so concurrent logins scale with
# the cores (argon2-cffi releases the GIL while hashing).
DEFAULT_TIME_COST: Final = 2
DEFAULT_MEMORY_COST: Final = 19456  # KiB
DEFAULT_PARALLELISM: Final = 1

#: Schemes accepted in the database, the default (new hashes) first.
SCHEMES: Final[tuple[str, ...]] = ("argon2", "bcrypt", "sha512_crypt", "sha256_crypt")

# Bounds of accepted stored hashes: above them a single check would take
# seconds or gigabytes.  (OpenSSH's and glibc's defaults are far below.)
_MAX_BCRYPT_ROUNDS: Final = 16
_MAX_SHA_CRYPT_ROUNDS: Final = 1_000_000
_MAX_ARGON2_MEMORY: Final = 1 << 20  # KiB: 1 GiB
_MAX_ARGON2_TIME: Final = 64


@final
class PasswordRefused(NxauthError, ValueError):
    """A password that cannot be hashed or checked: empty, too long, with a
    NUL, not UTF-8.  The message says why, never what the password was."""


@final
class UnsupportedHash(NxauthError, ValueError):
    """A stored hash of an unsupported scheme, malformed, or too costly."""


@final
@dataclass(frozen=True, slots=True)
class HashCheck:
    """The result of :meth:`PasswordHasher.verify`.

    ``matched``: the password is right.  ``new_hash``: when matched and the
    stored hash is of an older scheme or other parameters, the replacement
    to store.  ``detail``: why a check failed other than by a wrong password
    (for the audit trail; never a secret).
    """

    matched: bool
    new_hash: str | None = field(default=None, repr=False)
    detail: str = ""


def password_refusal(password: Secret) -> str | None:
    """Why ``password`` cannot go to the password database, or ``None``.

    Cheap: looks at the length first, so a 1 MiB password is refused in
    microseconds, before any hashing.
    """
    value = password.reveal()
    if not value:
        return "empty password"
    if len(value) > MAX_PASSWORD_BYTES:
        return f"password longer than {MAX_PASSWORD_BYTES} bytes"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "password is not valid UTF-8"
    if size > MAX_PASSWORD_BYTES:
        return f"password longer than {MAX_PASSWORD_BYTES} bytes"
    if "\x00" in value:
        return "NUL character in password"
    return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _synthetic_argon2id(time_cost: int, memory_cost: int, parallelism: int) -> str:
    """An argon2id hash string with these parameters, a random 16-byte salt
    and a random 32-byte digest (the sizes of real hashes), so checking a
    password against it costs exactly one real check and never matches."""
    salt, digest = secrets.token_bytes(16), secrets.token_bytes(32)
    return f"$argon2id$v=19$m={memory_cost},t={time_cost},p={parallelism}${_b64(salt)}${_b64(digest)}"


@final
class PasswordHasher:
    """Hashes and checks passwords for the password database.

    ``time_cost`` (passes), ``memory_cost`` (KiB) and ``parallelism``
    (lanes) are argon2id's parameters for new hashes.  Thread-safe.
    """

    def __init__(
        self,
        *,
        time_cost: int = DEFAULT_TIME_COST,
        memory_cost: int = DEFAULT_MEMORY_COST,
        parallelism: int = DEFAULT_PARALLELISM,
    ) -> None:
        for name, value, low, high in (
            ("time_cost", time_cost, 1, _MAX_ARGON2_TIME),
            ("memory_cost", memory_cost, 1024, _MAX_ARGON2_MEMORY),
            ("parallelism", parallelism, 1, 64),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise UsageError(f"{name} must be an integer between {low} and {high}")
        if memory_cost < 8 * parallelism:
            raise UsageError("memory_cost must be at least 8 KiB per lane")
        from passlib.context import CryptContext

        self.time_cost = time_cost
        self.memory_cost = memory_cost
        self.parallelism = parallelism
        self._context: Any = CryptContext(
            schemes=list(SCHEMES),
            default="argon2",
            deprecated=list(SCHEMES[1:]),
            argon2__type="ID",
            argon2__rounds=time_cost,
            argon2__memory_cost=memory_cost,
            argon2__parallelism=parallelism,
        )
        self.dummy_hash = _synthetic_argon2id(time_cost, memory_cost, parallelism)

    def __repr__(self) -> str:
        return f"PasswordHasher(argon2id t={self.time_cost} m={self.memory_cost}KiB p={self.parallelism})"

    # ------------------------------------------------------------ new hashes

    def hash(self, password: Secret) -> str:
        """A new argon2id hash of ``password``.  Raises :class:`PasswordRefused`."""
        problem = password_refusal(password)
        if problem is not None:
            raise PasswordRefused(problem)
        return str(self._context.hash(password.reveal()))

    # ------------------------------------------------------------ checks

    def verify(self, password: Secret, stored: str) -> HashCheck:
        """Check ``password`` against the ``stored`` hash.

        Every outcome costs about one hash of the stored scheme (an unusable
        stored hash costs a dummy check), so the time taken says little.
        Raises :class:`PasswordRefused` for a password that
        :func:`password_refusal` refuses: callers check that first.
        """
        problem = password_refusal(password)
        if problem is not None:
            raise PasswordRefused(problem)
        try:
            scheme = self.check_hash(stored)
        except UnsupportedHash:
            self.dummy_verify(password)
            return HashCheck(False, detail="stored-hash-unusable")
        value = password.reveal()
        if scheme == "bcrypt" and len(value.encode("utf-8")) > BCRYPT_MAX_BYTES:
            # bcrypt would compare the first 72 bytes only: refuse, never truncate.
            self.dummy_verify(password)
            # (set a new password: new hashes are argon2id)
            return HashCheck(False, detail="bcrypt-password-too-long")
        try:
            matched, new_hash = self._context.verify_and_update(value, stored)
        except ValueError:  # a hash that parsed but that the backend rejects
            self.dummy_verify(password)
            return HashCheck(False, detail="stored-hash-unusable")
        return HashCheck(bool(matched), str(new_hash) if matched and new_hash else None)

    def dummy_verify(self, password: Secret) -> None:
        """Spend what checking a real hash would cost, and learn nothing:
        for unknown users, so that timing does not tell who exists."""
        if password_refusal(password) is None:
            self._context.verify(password.reveal(), self.dummy_hash)  # never matches: the digest is random

    def needs_update(self, stored: str) -> bool:
        """True when ``stored`` is not argon2id with this hasher's parameters."""
        return bool(self._context.needs_update(stored))

    # ------------------------------------------------------------ stored hashes

    def check_hash(self, stored: str) -> str:
        """Return the scheme of a stored hash (one of :data:`SCHEMES`) or
        raise :class:`UnsupportedHash` saying why it cannot be used."""
        if not isinstance(stored, str) or not stored:
            raise UnsupportedHash("empty hash")
        if len(stored) > 512 or not stored.isascii() or not stored.isprintable():
            raise UnsupportedHash("not a password hash")
        scheme = self._context.identify(stored)
        if scheme is None:
            raise UnsupportedHash(f"unknown hash format (supported: {', '.join(SCHEMES)})")
        try:
            parsed = self._context.handler(scheme).from_string(stored)
        except ValueError as exc:
            raise UnsupportedHash(f"malformed {scheme} hash: {exc}") from None
        if scheme == "bcrypt" and parsed.rounds > _MAX_BCRYPT_ROUNDS:
            raise UnsupportedHash(f"bcrypt cost {parsed.rounds} is above {_MAX_BCRYPT_ROUNDS}")
        if scheme in ("sha512_crypt", "sha256_crypt") and parsed.rounds > _MAX_SHA_CRYPT_ROUNDS:
            raise UnsupportedHash(f"{scheme} rounds {parsed.rounds} is above {_MAX_SHA_CRYPT_ROUNDS}")
        if scheme == "argon2" and (parsed.memory_cost > _MAX_ARGON2_MEMORY or parsed.rounds > _MAX_ARGON2_TIME):
            raise UnsupportedHash(
                f"argon2 cost m={parsed.memory_cost} t={parsed.rounds} is above m={_MAX_ARGON2_MEMORY} "
                f"t={_MAX_ARGON2_TIME}"
            )
        return str(scheme)

    def scheme_of(self, stored: str | None) -> str | None:
        """The scheme of a stored hash for display (``None`` if unusable)."""
        if stored is None:
            return None
        try:
            scheme = self.check_hash(stored)
        except UnsupportedHash:
            return None
        return stored.split("$", 2)[1] if scheme == "argon2" else scheme
