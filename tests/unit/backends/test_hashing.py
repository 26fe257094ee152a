"""nxauth.backends.hashing: argon2id by default, legacy schemes upgraded, bcrypt never
truncated, refusals before any hashing."""

from __future__ import annotations

import statistics
import threading
import time

import pytest
from passlib import hash as passlib_hash

from nxauth import Secret, UsageError
from nxauth.backends.hashing import (
    BCRYPT_MAX_BYTES,
    MAX_PASSWORD_BYTES,
    HashCheck,
    PasswordHasher,
    PasswordRefused,
    UnsupportedHash,
    password_refusal,
)

CHEAP = {"time_cost": 1, "memory_cost": 8192, "parallelism": 1}
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher(**CHEAP)


def legacy_hashes(password: str) -> dict[str, str]:
    return {
        "bcrypt-2b": passlib_hash.bcrypt.using(rounds=4).hash(password),
        "bcrypt-2y": passlib_hash.bcrypt.using(rounds=4, ident="2y").hash(password),
        "bcrypt-2a": passlib_hash.bcrypt.using(rounds=4, ident="2a").hash(password),
        "sha512_crypt": passlib_hash.sha512_crypt.using(rounds=1000).hash(password),
        "sha256_crypt": passlib_hash.sha256_crypt.using(rounds=1000).hash(password),
        "argon2i": passlib_hash.argon2.using(type="I", rounds=1, memory_cost=8192).hash(password),
        "argon2id-other-cost": passlib_hash.argon2.using(type="ID", rounds=2, memory_cost=4096).hash(password),
    }


# ------------------------------------------------------------ new hashes


def test_new_hash_is_argon2id_with_configured_cost(hasher: PasswordHasher) -> None:
    stored = hasher.hash(Secret(PASSWORD))
    assert stored.startswith("$argon2id$v=19$m=8192,t=1,p=1$")
    assert hasher.verify(Secret(PASSWORD), stored) == HashCheck(True)
    assert not hasher.verify(Secret(PASSWORD + "x"), stored).matched
    assert not hasher.needs_update(stored)
    assert hasher.scheme_of(stored) == "argon2id"


def test_default_parameters() -> None:
    stored = PasswordHasher().hash(Secret(PASSWORD))
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_same_password_gets_a_new_salt(hasher: PasswordHasher) -> None:
    assert hasher.hash(Secret(PASSWORD)) != hasher.hash(Secret(PASSWORD))


@pytest.mark.parametrize(
    ("name", "value"),
    [("time_cost", 0), ("time_cost", 65), ("memory_cost", 1023), ("parallelism", 0), ("time_cost", True)],
)
def test_absurd_parameters_refused(name: str, value: object) -> None:
    with pytest.raises(UsageError, match=name):
        PasswordHasher(**{**CHEAP, name: value})  # type: ignore[arg-type]


# ------------------------------------------------------------ legacy schemes


@pytest.mark.parametrize("label", list(legacy_hashes("x")))
def test_legacy_hash_verified_and_upgraded(hasher: PasswordHasher, label: str) -> None:
    stored = legacy_hashes(PASSWORD)[label]
    assert hasher.needs_update(stored)
    check = hasher.verify(Secret(PASSWORD), stored)
    assert check.matched
    assert check.new_hash is not None
    assert check.new_hash.startswith("$argon2id$v=19$m=8192,t=1,p=1$")
    assert hasher.verify(Secret(PASSWORD), check.new_hash) == HashCheck(True)


@pytest.mark.parametrize("label", list(legacy_hashes("x")))
def test_legacy_hash_wrong_password_not_upgraded(hasher: PasswordHasher, label: str) -> None:
    check = hasher.verify(Secret("wrong password"), legacy_hashes(PASSWORD)[label])
    assert check == HashCheck(False)


# ------------------------------------------------------------ bcrypt's 72 bytes


def test_bcrypt_long_password_refused_never_truncated(hasher: PasswordHasher) -> None:
    prefix = "a" * BCRYPT_MAX_BYTES
    stored = passlib_hash.bcrypt.using(rounds=4).hash(prefix)
    # A truncating implementation would accept anything that starts with the 72 bytes.
    for longer in (prefix + "b", prefix + "anything else at all"):
        check = hasher.verify(Secret(longer), stored)
        assert not check.matched
        assert check.new_hash is None
        assert check.detail == "bcrypt-password-too-long"
        assert longer not in check.detail
    assert hasher.verify(Secret(prefix), stored).matched


def test_bcrypt_limit_counts_utf8_bytes(hasher: PasswordHasher) -> None:
    exactly = "€" * 24  # 72 bytes
    stored = passlib_hash.bcrypt.using(rounds=4).hash(exactly)
    assert hasher.verify(Secret(exactly), stored).matched
    assert hasher.verify(Secret(exactly + "€"), stored).detail == "bcrypt-password-too-long"


def test_long_password_fine_with_argon2(hasher: PasswordHasher) -> None:
    long_password = "b" * 200
    stored = hasher.hash(Secret(long_password))
    assert hasher.verify(Secret(long_password), stored).matched
    assert not hasher.verify(Secret(long_password[:72]), stored).matched


# ------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("a\x00b", "NUL", id="nul"),
        pytest.param("x" * (MAX_PASSWORD_BYTES + 1), "longer than 4096", id="4097-bytes"),
        pytest.param("é" * (MAX_PASSWORD_BYTES // 2 + 1), "longer than 4096", id="4098-utf8-bytes"),
        pytest.param("x" * (1 << 20), "longer than 4096", id="1MiB"),
        pytest.param("bad\udcffsurrogate", "UTF-8", id="lone-surrogate"),
    ],
)
def test_refused_passwords(hasher: PasswordHasher, password: str, expected: str) -> None:
    secret = Secret(password)
    assert expected in (password_refusal(secret) or "")
    with pytest.raises(PasswordRefused, match=expected) as info:
        hasher.hash(secret)
    assert password not in str(info.value) or not password
    with pytest.raises(PasswordRefused):
        hasher.verify(secret, hasher.dummy_hash)


def test_4kib_password_works(hasher: PasswordHasher) -> None:
    password = Secret("k" * MAX_PASSWORD_BYTES)
    assert password_refusal(password) is None
    assert hasher.verify(password, hasher.hash(password)).matched


def test_1mib_password_refused_fast(hasher: PasswordHasher) -> None:
    huge = Secret("x" * (1 << 20))
    start = time.perf_counter()
    for _ in range(10):
        with pytest.raises(PasswordRefused):
            hasher.hash(huge)
    assert (time.perf_counter() - start) / 10 < 0.005


# ------------------------------------------------------------ stored hashes


def _with_cost(stored: str, old: str, new: str) -> str:
    assert old in stored
    return stored.replace(old, new, 1)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("plain text password", "unknown hash format", id="plain"),
        pytest.param("$apr1$salt$0123456789abcdefghijkl", "unknown hash format", id="apr1"),
        pytest.param("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "unknown hash format", id="sha1"),
        pytest.param("abJnggxhB/yWI", "unknown hash format", id="des-crypt"),
        pytest.param("$2b$04$short", "malformed bcrypt", id="bcrypt-short"),
        pytest.param("$6$rounds=5000$salt$short", "malformed sha512_crypt", id="sha512-short"),
        pytest.param("$argon2id$v=19$m=8192,t=1,p=1$bad", "malformed argon2", id="argon2-short"),
        pytest.param("$2b$04$" + "a" * 53 + "\n", "not a password hash", id="newline"),
        pytest.param("x" * 600, "not a password hash", id="huge"),
    ],
)
def test_check_hash_refusals(hasher: PasswordHasher, stored: str, expected: str) -> None:
    with pytest.raises(UnsupportedHash, match=expected):
        hasher.check_hash(stored)
    check = hasher.verify(Secret(PASSWORD), stored)
    assert not check.matched
    assert check.detail == "stored-hash-unusable"


def test_check_hash_refuses_absurd_costs(hasher: PasswordHasher) -> None:
    bcrypt17 = _with_cost(passlib_hash.bcrypt.using(rounds=4).hash("x"), "$04$", "$17$")
    sha_huge = _with_cost(passlib_hash.sha512_crypt.using(rounds=1000).hash("x"), "rounds=1000", "rounds=2000000")
    argon_huge = _with_cost(hasher.hash(Secret("x")), "m=8192", "m=4194304")
    for stored, what in ((bcrypt17, "bcrypt cost 17"), (sha_huge, "rounds 2000000"), (argon_huge, "m=4194304")):
        with pytest.raises(UnsupportedHash, match=what):
            hasher.check_hash(stored)


def test_check_hash_accepts_supported(hasher: PasswordHasher) -> None:
    schemes = {label: hasher.check_hash(stored) for label, stored in legacy_hashes("x").items()}
    assert set(schemes.values()) == {"bcrypt", "sha512_crypt", "sha256_crypt", "argon2"}
    assert hasher.scheme_of(legacy_hashes("x")["argon2i"]) == "argon2i"
    assert hasher.scheme_of(None) is None
    assert hasher.scheme_of("garbage") is None


# ------------------------------------------------------------ dummy and secrecy


def test_dummy_hash_is_a_real_argon2id_hash_made_without_hashing() -> None:
    hasher = PasswordHasher(**CHEAP)
    assert hasher.dummy_hash is hasher.dummy_hash
    assert hasher.dummy_hash.startswith("$argon2id$v=19$m=8192,t=1,p=1$")
    assert hasher.check_hash(hasher.dummy_hash) == "argon2"
    assert not hasher.needs_update(hasher.dummy_hash)  # same parameters, same cost as new hashes
    salt, digest = hasher.dummy_hash.split("$")[-2:]
    real_salt, real_digest = hasher.hash(Secret("x")).split("$")[-2:]
    assert (len(salt), len(digest)) == (len(real_salt), len(real_digest))
    assert PasswordHasher(**CHEAP).dummy_hash != hasher.dummy_hash
    assert not hasher.verify(Secret(PASSWORD), hasher.dummy_hash).matched
    hasher.dummy_verify(Secret(PASSWORD))  # returns nothing, raises nothing
    hasher.dummy_verify(Secret("x" * (1 << 20)))  # refused passwords cost nothing


def test_dummy_verify_costs_like_a_real_verify() -> None:
    hasher = PasswordHasher(time_cost=1, memory_cost=16384)
    stored = hasher.hash(Secret(PASSWORD))
    hasher.dummy_verify(Secret("warm up"))
    real, dummy = [], []
    for _ in range(15):  # interleaved; the fastest of each is the least disturbed by other work
        start = time.perf_counter()
        hasher.verify(Secret("wrong"), stored)
        real.append(time.perf_counter() - start)
        start = time.perf_counter()
        hasher.dummy_verify(Secret("wrong"))
        dummy.append(time.perf_counter() - start)
    ratio = min(dummy) / min(real)
    assert 0.8 < ratio < 1.25, (ratio, statistics.median(dummy) / statistics.median(real))


def test_reprs_hold_no_secret(hasher: PasswordHasher) -> None:
    stored = hasher.hash(Secret(PASSWORD))
    check = hasher.verify(Secret(PASSWORD), legacy_hashes(PASSWORD)["sha256_crypt"])
    assert "argon2" not in repr(check)
    assert stored not in repr(check)
    assert repr(hasher) == "PasswordHasher(argon2id t=1 m=8192KiB p=1)"


def test_hashing_releases_the_gil() -> None:
    """argon2-cffi releases the GIL while it hashes, so logins in other
    threads (and on other cores) go on meanwhile.  Measured as the longest
    pause of a Python loop while another thread checks a password: with the
    GIL held it would last the whole check.  (Unlike a speed-up, this holds
    on a busy machine too.)"""
    hasher = PasswordHasher(time_cost=3, memory_cost=65536)
    stored = hasher.hash(Secret(PASSWORD))
    start = time.perf_counter()
    hasher.verify(Secret(PASSWORD), stored)
    one_check = time.perf_counter() - start
    worker = threading.Thread(target=lambda: [hasher.verify(Secret(PASSWORD), stored) for _ in range(2)])
    longest = 0.0
    last = time.perf_counter()
    worker.start()
    while worker.is_alive():
        now = time.perf_counter()
        longest = max(longest, now - last)
        last = now
    worker.join()
    assert longest < one_check / 2, (longest, one_check)
