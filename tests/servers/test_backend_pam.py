"""The ``pam`` backend against real PAM: pam_matrix and friends through
pam_wrapper (no root), pam_unix with throwaway system users (root only).

Every PAM call here goes through libpam: a crash inside it would take the
test process down, which is what the bad-input tests guard against.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import pwd
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import nxauth
from nxauth import Attempt, AuthenticationFailed, ConfigError, Decision, Peer, PluginError, Reason, Secret
from nxauth.backends import pam as pam_module
from nxauth.backends.pam import REASONS, PamBackend
from nxauth.backends.pam import libpam as _libpam
from nxauth.model import UNKNOWN_PEER
from nxauth.testing import (
    SENTINEL_PASSWORD,
    AccountBackendContract,
    AuthBackendContract,
    RecordingSink,
    make_identity,
)
from tests.support import pam as pam_servers
from tests.support.pam import PamWrapper, Services, chage, missing_pam_unix, nss_users, system_user, usermod

# Fixtures from servers/pam.py (a module, not a conftest: bring them into scope).
pam_wrapper = pam_servers.pam_wrapper
unix_user = pam_servers.unix_user

INSIDE = Peer("192.0.2.10", 50022)  # allowed by the access rules below
OUTSIDE = Peer("198.51.100.7", 52100)
GHOST = "nxauth-ghost"  # known to pam_matrix, unknown to NSS
THREADS = 8


def root_only() -> pytest.MarkDecorator:
    reason = missing_pam_unix()
    return pytest.mark.skipif(reason is not None, reason=reason or "")


@pytest.fixture(scope="module")
def names() -> list[str]:
    """Users that exist in NSS here; pam_matrix gets passwords for them."""
    return nss_users(THREADS + 1)


def password_of(name: str) -> str:
    return f"pw-{name}-Matrix"


def code_of(name: str) -> str:
    return f"{sum(name.encode()) * 7919 % 1000000:06d}"


@pytest.fixture
def matrix(pam_wrapper: PamWrapper, names: list[str]) -> PamWrapper:
    users = {name: password_of(name) for name in names} | {GHOST: password_of(GHOST)}
    pam_wrapper.set_users(users)
    pam_wrapper.set_codes({name: code_of(name) for name in users})
    pam_wrapper.set_access(["+:ALL:192.0.2.0/24", "-:ALL:ALL"])
    return pam_wrapper


def make(wrapper: PamWrapper, service: str = Services.MATRIX, **kwargs: Any) -> PamBackend:
    return PamBackend(service=service, library=wrapper.library, **kwargs)


class Recorder:
    """A conversation that answers in order and records what it was asked."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, bool]] = []
        self.threads: list[str] = []

    def __call__(self, prompt: str, echo: bool) -> str:
        self.asked.append((prompt, echo))
        self.threads.append(threading.current_thread().name)
        if not self.answers:
            raise RuntimeError("no answer left")
        return self.answers.pop(0)


def attempt(name: str, password: str, conversation: Any = None, peer: Peer = INSIDE) -> Attempt:
    return Attempt(name, Secret(password), peer=peer, session_id="t", conversation=conversation)


# ------------------------------------------------------------ contracts


class TestMatrixContract(AuthBackendContract):
    @pytest.fixture
    def backend(self, matrix: PamWrapper) -> PamBackend:
        return make(matrix)

    @pytest.fixture
    def credentials(self, names: list[str]) -> tuple[str, str]:
        return names[0], password_of(names[0])


class TestMatrixAccountContract(AccountBackendContract):
    @pytest.fixture
    def backend(self, matrix: PamWrapper) -> PamBackend:
        return make(matrix)

    @pytest.fixture
    def listed_username(self, names: list[str]) -> str:
        return names[0]


@root_only()
class TestUnixContract(AuthBackendContract):
    @pytest.fixture
    def backend(self, pam_wrapper: PamWrapper) -> PamBackend:
        return make(pam_wrapper, Services.UNIX)

    @pytest.fixture
    def credentials(self, unix_user: tuple[str, str]) -> tuple[str, str]:
        return unix_user


# ------------------------------------------------------------ building


@pytest.fixture
def build(
    make_auth: Callable[..., nxauth.Authenticator], pam_wrapper: PamWrapper
) -> Callable[..., nxauth.Authenticator]:
    """An authenticator whose pipeline is PAM only: ``pam`` in both stacks."""

    def build_auth(service: str = Services.MATRIX, *, mapping: dict[str, Any] | None = None, **options: Any):
        table = {"kind": "pam", "service": service, "library": pam_wrapper.library} | options
        return make_auth(
            {"backends": {"pam": table}, "auth": [{"use": "pam"}], "account": [{"use": "pam"}], **(mapping or {})}
        )

    return build_auth


@pytest.fixture
def stage1(granted: Callable[..., nxauth.Session]) -> Callable[..., nxauth.Session]:
    """Open a session on an authenticator and pass stage 1 with the
    conftest's transport key, from ``peer``."""

    def open_session(auth: nxauth.Authenticator, peer: Peer = OUTSIDE) -> nxauth.Session:
        return granted(auth, (peer.host, peer.port))

    return open_session


def test_kind_is_a_builtin(build: Callable[..., nxauth.Authenticator]) -> None:
    auth = build(service=Services.MATRIX)
    assert auth.describe()["backend_kinds"]["pam"] == "nxauth.backends.pam"
    backend = auth.backends["pam"]
    assert isinstance(backend, PamBackend)
    assert (backend.service, backend.encoding, backend.account, backend.nss) == (
        Services.MATRIX,
        "utf-8",
        True,
        "require",
    )
    assert repr(backend).startswith("PamBackend(service='nxauth-matrix', library=")


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        pytest.param({"service": "../shadow"}, "service", "PAM service name", id="service-path"),
        pytest.param({"service": ""}, "service", "PAM service name", id="service-empty"),
        pytest.param({"encoding": "klingon"}, "encoding", "unknown encoding", id="encoding-unknown"),
        pytest.param({"encoding": "utf-16"}, "encoding", "ASCII-compatible", id="encoding-utf16"),
        pytest.param({"nss": "maybe"}, "nss", "must be one of", id="nss"),
        pytest.param({"account": "yes"}, "account", "true or false", id="account-type"),
        pytest.param({"library": "/nonexistent/libpam.so"}, "library", "cannot load libpam", id="library-missing"),
        pytest.param({"library": "libc.so.6"}, "library", "cannot load libpam", id="library-not-pam"),
        pytest.param({"sevice": "x"}, "sevice", "unknown option", id="misspelled"),
    ],
)
def test_bad_options(
    build: Callable[..., nxauth.Authenticator], options: dict[str, Any], key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build(**options)
    assert info.value.key == f"backends.pam.{key}"
    assert message in str(info.value)


def test_default_service_and_encoding(pam_wrapper: PamWrapper) -> None:
    backend = PamBackend(library=pam_wrapper.library, encoding="LATIN1")
    assert (backend.service, backend.encoding, backend.account) == ("nxauth", "iso8859-1", True)


def test_missing_python_pam_names_the_extra(monkeypatch: pytest.MonkeyPatch, pam_wrapper: PamWrapper) -> None:
    monkeypatch.setitem(sys.modules, "pam", None)
    monkeypatch.setattr(_libpam, "_abi", None)
    monkeypatch.setattr(_libpam, "_libraries", {})
    with pytest.raises(PluginError, match=r"nx-twostage-auth\[pam\]"):
        PamBackend(library=pam_wrapper.library)


@pytest.mark.parametrize(("name", "reason"), sorted(REASONS.items()))
def test_return_codes(pam_wrapper: PamWrapper, name: str, reason: Reason) -> None:
    backend = make(pam_wrapper)
    assert backend.reason_for(getattr(_libpam.abi(), name)) is reason


@pytest.mark.parametrize("name", ["PAM_SYSTEM_ERR", "PAM_ABORT", "PAM_AUTHINFO_UNAVAIL", "PAM_BUF_ERR", "PAM_IGNORE"])
def test_other_codes_are_backend_errors(pam_wrapper: PamWrapper, name: str) -> None:
    assert make(pam_wrapper).reason_for(getattr(_libpam.abi(), name)) is Reason.BACKEND_ERROR


# ------------------------------------------------------------ pam_matrix


def test_right_password_identity_through_nss(matrix: PamWrapper, names: list[str]) -> None:
    name = names[1]
    verdict = make(matrix).authenticate(attempt(name, password_of(name)))
    entry = pwd.getpwnam(name)
    assert verdict.decision is Decision.ALLOW and verdict.username == name
    assert dict(verdict.attributes) == {
        "uid": entry.pw_uid,
        "gid": entry.pw_gid,
        "home": entry.pw_dir,
        "shell": entry.pw_shell,
    }


@pytest.mark.parametrize(
    ("service", "user", "password", "options", "reason", "detail"),
    [
        pytest.param(Services.MATRIX, 0, "wrong", {}, Reason.BAD_PASSWORD, "authenticate=7", id="wrong-password"),
        pytest.param(Services.MATRIX, 1, 0, {}, Reason.BAD_PASSWORD, "authenticate=7", id="other-users-password"),
        pytest.param(Services.MATRIX, GHOST, GHOST, {}, Reason.UNKNOWN_USER, "pam-user-not-in-nss", id="not-in-nss"),
        pytest.param(Services.DENY, 0, 0, {}, Reason.BAD_PASSWORD, "authenticate=", id="pam-deny"),
        pytest.param(Services.ACCESS, 0, 0, {}, Reason.RESTRICTED, "acct-mgmt=6", id="access"),
    ],
)
def test_denials(
    matrix: PamWrapper,
    names: list[str],
    service: str,
    user: int | str,
    password: int | str,
    options: dict[str, Any],
    reason: Reason,
    detail: str,
) -> None:
    name = names[user] if isinstance(user, int) else user
    secret = password_of(names[password] if isinstance(password, int) else password)
    verdict = make(matrix, service, **options).authenticate(attempt(name, secret, peer=OUTSIDE))
    assert (verdict.decision, verdict.reason) == (Decision.DENY, reason)
    assert detail in verdict.detail


def test_nss_optional_keeps_pams_name(matrix: PamWrapper) -> None:
    verdict = make(matrix, nss="optional").authenticate(attempt(GHOST, password_of(GHOST)))
    assert verdict.decision is Decision.ALLOW and verdict.username == GHOST and not verdict.attributes


def test_account_step_can_be_turned_off(matrix: PamWrapper, names: list[str]) -> None:
    login = attempt(names[0], password_of(names[0]), peer=OUTSIDE)
    assert make(matrix, Services.ACCESS).authenticate(login).reason is Reason.RESTRICTED
    assert make(matrix, Services.ACCESS, account=False).authenticate(login).allowed


class CountingLib:
    """Counts the PAM handles a backend opens."""

    def __init__(self, lib: Any) -> None:
        self.lib, self.path, self.starts = lib, lib.path, 0

    def start(self, *args: Any) -> Any:
        self.starts += 1
        return self.lib.start(*args)


def counting(backend: object) -> CountingLib:
    assert isinstance(backend, PamBackend)
    spy = CountingLib(backend._lib)
    backend._lib = spy  # type: ignore[assignment]
    return spy


def test_one_handle_per_login(
    build: Callable[..., nxauth.Authenticator],
    matrix: PamWrapper,
    names: list[str],
    stage1: Callable[..., nxauth.Session],
) -> None:
    auth = build()
    backend, spy = auth.backends["pam"], counting(auth.backends["pam"])
    identity = stage1(auth).login(names[0], password_of(names[0]))
    assert spy.starts == 1  # pam_acct_mgmt ran on the login's handle; the account role reused it
    assert isinstance(backend, PamBackend)
    assert backend.check_account(identity).allowed and spy.starts == 2  # used once only
    other = dataclasses.replace(identity, session_id="another")
    assert backend.check_account(other).allowed and spy.starts == 3


def test_account_role_opens_its_own_handle_without_the_account_step(
    build: Callable[..., nxauth.Authenticator],
    matrix: PamWrapper,
    names: list[str],
    stage1: Callable[..., nxauth.Session],
) -> None:
    auth = build(account=False)
    spy = counting(auth.backends["pam"])
    stage1(auth).login(names[0], password_of(names[0]))
    assert spy.starts == 2


def test_a_failed_login_leaves_nothing_for_the_account_role(matrix: PamWrapper, names: list[str]) -> None:
    backend = make(matrix)
    name = names[0]
    assert backend.authenticate(attempt(name, password_of(name))).allowed
    assert not backend.authenticate(attempt(name, "wrong")).allowed
    spy = counting(backend)
    matrix.set_users({})  # pam_matrix now knows nobody: a fresh pam_acct_mgmt denies
    assert not backend.check_account(nxauth.Identity(name, "pam", INSIDE, "t", None)).allowed
    assert spy.starts == 1


def test_account_result_expires(matrix: PamWrapper, names: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    backend = make(matrix)
    assert backend.authenticate(attempt(names[0], password_of(names[0]))).allowed
    later = time.monotonic() + 61
    monkeypatch.setattr(pam_module.time, "monotonic", lambda: later)
    spy = counting(backend)
    assert backend.check_account(nxauth.Identity(names[0], "pam", INSIDE, "t", None)).allowed
    assert spy.starts == 1


# ------------------------------------------------------------ PAM items


@pytest.mark.parametrize(("peer", "allowed"), [(INSIDE, True), (OUTSIDE, False), (UNKNOWN_PEER, False)])
def test_rhost_and_tty_reach_the_modules(matrix: PamWrapper, names: list[str], peer: Peer, allowed: bool) -> None:
    # nxauth-items: pam_succeed_if "tty = nxauth" and "rhost = 192.0.2.10"
    verdict = make(matrix, Services.ITEMS).authenticate(attempt(names[0], password_of(names[0]), peer=peer))
    assert verdict.allowed is allowed


@pytest.mark.parametrize(
    ("rules", "peer", "allowed"),
    [
        pytest.param(["+:ALL:192.0.2.0/24", "-:ALL:ALL"], INSIDE, True, id="network-inside"),
        pytest.param(["+:ALL:192.0.2.0/24", "-:ALL:ALL"], OUTSIDE, False, id="network-outside"),
        pytest.param(["-:ALL:198.51.100.7", "+:ALL:ALL"], OUTSIDE, False, id="host-denied"),
        pytest.param(["-:ALL:198.51.100.7", "+:ALL:ALL"], INSIDE, True, id="other-host"),
        # Never a console login: PAM_RHOST is always set.
        pytest.param(["+:ALL:LOCAL", "-:ALL:ALL"], INSIDE, False, id="not-local"),
        pytest.param(["+:ALL:LOCAL", "-:ALL:ALL"], UNKNOWN_PEER, False, id="unknown-peer-not-local"),
    ],
)
@pytest.mark.parametrize("role", ["auth", "account"])
def test_pam_access_sees_the_remote_host(
    matrix: PamWrapper, names: list[str], rules: list[str], peer: Peer, allowed: bool, role: str
) -> None:
    matrix.set_access(rules)
    backend = make(matrix, Services.ACCESS)
    if role == "auth":
        verdict = backend.authenticate(attempt(names[0], password_of(names[0]), peer=peer))
    else:
        identity = nxauth.Identity(names[0], "test", peer, "t", None)
        verdict = backend.check_account(identity)
    assert verdict.allowed is allowed
    if not allowed:
        assert verdict.reason is Reason.RESTRICTED


def test_access_denial_end_to_end(
    build: Callable[..., nxauth.Authenticator],
    matrix: PamWrapper,
    names: list[str],
    sink: RecordingSink,
    stage1: Callable[..., nxauth.Session],
) -> None:
    auth = build(Services.ACCESS)
    with pytest.raises(AuthenticationFailed) as info:
        stage1(auth, OUTSIDE).login(names[0], password_of(names[0]))
    assert info.value.reason is Reason.RESTRICTED
    assert sink.events[-1].backend == "pam" and "acct-mgmt=" in sink.events[-1].detail
    identity = stage1(auth, INSIDE).login(names[0], password_of(names[0]))
    assert identity.username == names[0] and identity.backend == "pam"
    assert identity.attributes["uid"] == pwd.getpwnam(names[0]).pw_uid


# ------------------------------------------------------------ conversation


def test_second_prompt_is_relayed(matrix: PamWrapper, names: list[str]) -> None:
    name = names[2]
    ask = Recorder(code_of(name))
    verdict = make(matrix, Services.OTP).authenticate(attempt(name, password_of(name), ask))
    assert verdict.allowed
    assert ask.asked == [("Password: ", False)]  # one question: the password was answered by nxauth


def test_wrong_code_denies(matrix: PamWrapper, names: list[str]) -> None:
    ask = Recorder("000000")
    verdict = make(matrix, Services.OTP).authenticate(attempt(names[2], password_of(names[2]), ask))
    assert verdict.reason is Reason.BAD_PASSWORD


@pytest.mark.parametrize(
    ("conversation", "options", "reason", "detail"),
    [
        pytest.param(None, {}, Reason.CONVERSATION_UNAVAILABLE, "no-conversation", id="none"),
        pytest.param(Recorder(), {}, Reason.CONVERSATION_FAILED, "conversation-raised", id="raises"),
        pytest.param(Recorder("12\x0034"), {}, Reason.CONVERSATION_FAILED, "nul-in-answer", id="nul"),
        pytest.param(
            Recorder("\u20ac"), {"encoding": "latin-1"}, Reason.CONVERSATION_FAILED, "answer-not-encodable", id="enc"
        ),
        pytest.param(Recorder("9" * (1 << 20)), {}, Reason.CONVERSATION_FAILED, "answer-too-long", id="1MiB"),
        pytest.param(Recorder(b"x"), {}, Reason.CONVERSATION_FAILED, "conversation-raised", id="not-str"),
    ],
)
def test_conversation_failures(
    matrix: PamWrapper,
    names: list[str],
    conversation: Any,
    options: dict[str, Any],
    reason: Reason,
    detail: str,
) -> None:
    verdict = make(matrix, Services.OTP, **options).authenticate(attempt(names[2], password_of(names[2]), conversation))
    assert (verdict.decision, verdict.reason) == (Decision.DENY, reason)
    assert detail in verdict.detail


def test_echo_on_prompt_never_gets_the_password(matrix: PamWrapper, names: list[str]) -> None:
    backend = make(matrix, Services.ECHO)  # pam_matrix asks for the password with echo on
    name = names[0]
    assert backend.authenticate(attempt(name, password_of(name))).reason is Reason.CONVERSATION_UNAVAILABLE
    ask = Recorder(password_of(name))
    assert backend.authenticate(attempt(name, "not-this-one", ask)).allowed
    assert ask.asked == [("Password: ", True)]


def test_messages_go_to_the_attempt(matrix: PamWrapper, names: list[str]) -> None:
    login = attempt(names[0], password_of(names[0]))
    assert make(matrix, Services.CHATTY).authenticate(login).allowed
    assert "pam info: Authentication succeeded" in login.messages
    assert "pam error: Authentication generated an error" in login.messages


def test_a_chatty_module_cannot_flood_the_trail(matrix: PamWrapper, names: list[str]) -> None:
    login = attempt(names[0], password_of(names[0]))
    assert make(matrix, Services.LOUD).authenticate(login).allowed
    assert len(login.messages) == 20


def test_messages_reach_the_audit_trail(
    build: Callable[..., nxauth.Authenticator],
    matrix: PamWrapper,
    names: list[str],
    sink: RecordingSink,
    stage1: Callable[..., nxauth.Session],
) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        stage1(build(Services.CHATTY)).login(names[0], "wrong")
    assert info.value.reason is Reason.BAD_PASSWORD
    # the module's messages are counted, their text is not kept (it is the module's free text)
    assert sink.events[-1].detail == "authenticate=7 backend-messages=6"


# ------------------------------------------------------------ canonical name


@pytest.fixture
def pam_user_env() -> Iterator[Callable[[bytes], None]]:
    """Set ``$PAM_USER``, which pam_set_items copies into PAM_USER."""

    def set_to(value: bytes) -> None:
        os.environb[b"PAM_USER"] = value

    yield set_to
    os.environb.pop(b"PAM_USER", None)


def test_rewritten_user_is_a_name_mismatch(
    matrix: PamWrapper, names: list[str], pam_user_env: Callable[[bytes], None]
) -> None:
    pam_user_env(names[3].encode())
    verdict = make(matrix, Services.RENAME).authenticate(attempt(names[0], password_of(names[0])))
    assert verdict.reason is Reason.NAME_MISMATCH
    assert verdict.detail == "pam-user-changed"


def test_rewrite_to_same_canonical_name(
    matrix: PamWrapper, names: list[str], pam_user_env: Callable[[bytes], None]
) -> None:
    name = names[0]
    pam_user_env(name.upper().encode())
    login = attempt(name, password_of(name))
    # NSS here is case-sensitive: the rewritten name is not an account ...
    assert make(matrix, Services.RENAME, account=False).authenticate(login).reason is Reason.UNKNOWN_USER
    # ... unless NSS is optional: then it is the same canonical (case-folded) user.
    verdict = make(matrix, Services.RENAME, account=False, nss="optional").authenticate(login)
    assert verdict.allowed and verdict.username == name.upper()


def test_rewrite_to_undecodable_bytes(
    matrix: PamWrapper, names: list[str], pam_user_env: Callable[[bytes], None]
) -> None:
    pam_user_env(b"\xff\xfeuser")
    verdict = make(matrix, Services.RENAME, account=False).authenticate(attempt(names[0], password_of(names[0])))
    assert verdict.reason is Reason.NAME_MISMATCH and verdict.detail == "pam-user-not-encodable"


def test_name_mismatch_end_to_end(
    build: Callable[..., nxauth.Authenticator],
    matrix: PamWrapper,
    names: list[str],
    pam_user_env: Callable[[bytes], None],
    sink: RecordingSink,
    stage1: Callable[..., nxauth.Session],
) -> None:
    pam_user_env(names[3].encode())
    session = stage1(build(Services.RENAME))
    with pytest.raises(AuthenticationFailed) as info:
        session.login(names[0].upper(), password_of(names[0]))
    assert info.value.reason is Reason.NAME_MISMATCH
    assert sink.events[-1].username == names[0]  # the canonical name the throttle used
    assert sink.events[-1].detail == "pam-user-changed"


# ------------------------------------------------------------ bad input


class NoPam:
    """Stands in for libpam: bad input must be refused before it."""

    path = "none"

    def start(self, *args: object) -> None:
        raise AssertionError("libpam was called")


@pytest.mark.parametrize(
    ("username", "password", "options", "reason"),
    [
        pytest.param("da\x00emon", "x", {}, Reason.INVALID_USERNAME, id="nul-in-name"),
        pytest.param("\ud800", "x", {}, Reason.INVALID_USERNAME, id="surrogate-name"),
        pytest.param("d\u00e6mon", "x", {"encoding": "ascii"}, Reason.INVALID_USERNAME, id="name-not-ascii"),
        pytest.param("daemon", "pa\x00ss", {}, Reason.INVALID_PASSWORD, id="nul-in-password"),
        pytest.param("daemon", "\u20ac", {"encoding": "latin-1"}, Reason.INVALID_PASSWORD, id="password-not-latin1"),
        pytest.param("daemon", "\udcff", {}, Reason.INVALID_PASSWORD, id="surrogate-password"),
        pytest.param("daemon", "x" * (1 << 20), {}, Reason.INVALID_PASSWORD, id="1MiB-password"),
        pytest.param("daemon", "\u00e9" * 5000, {}, Reason.INVALID_PASSWORD, id="10000-utf8-bytes"),
    ],
)
def test_bad_input_never_reaches_libpam(
    pam_wrapper: PamWrapper, username: str, password: str, options: dict[str, Any], reason: Reason
) -> None:
    backend = make(pam_wrapper, **options)
    backend._lib = NoPam()  # type: ignore[assignment]
    verdict = backend.authenticate(attempt(username, password))
    assert (verdict.decision, verdict.reason) == (Decision.DENY, reason)
    if reason is Reason.INVALID_USERNAME:
        assert backend.check_account(make_identity(username)).reason is reason


class BrokenPam:
    """A libpam whose pam_start fails (a broken installation)."""

    path = "broken"

    def start(self, *args: object) -> None:
        raise _libpam.PamStartError(4, "System error")


def test_pam_start_failure_is_a_backend_error(pam_wrapper: PamWrapper, caplog: pytest.LogCaptureFixture) -> None:
    backend = make(pam_wrapper)
    backend._lib = BrokenPam()  # type: ignore[assignment]
    for verdict in (backend.authenticate(attempt("daemon", "x")), backend.check_account(make_identity("daemon"))):
        assert (verdict.reason, verdict.detail) == (Reason.BACKEND_ERROR, "pam-start-failed")
    assert "PAM service nxauth-matrix: pam_start failed" in caplog.text


def test_1mib_password_through_libpam(matrix: PamWrapper, names: list[str]) -> None:
    backend = make(matrix, max_answer_bytes=1 << 21)
    verdict = backend.authenticate(attempt(names[0], "p" * (1 << 20)))
    assert verdict.reason is Reason.BAD_PASSWORD


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        pytest.param("x" * (1 << 20), Reason.BAD_PASSWORD, id="1MiB-reaches-pam"),
        pytest.param("x" * ((1 << 20) + 1), Reason.INVALID_PASSWORD, id="over-limit"),
        pytest.param("a\x00b", Reason.INVALID_PASSWORD, id="nul"),
    ],
)
def test_bad_passwords_end_to_end(
    build: Callable[..., nxauth.Authenticator],
    matrix: PamWrapper,
    names: list[str],
    password: str,
    reason: Reason,
    stage1: Callable[..., nxauth.Session],
) -> None:
    auth = build(mapping={"session": {"max_password_bytes": 1 << 20}})
    with pytest.raises(AuthenticationFailed) as info:
        stage1(auth).login(names[0], password)
    assert info.value.reason is reason


# ------------------------------------------------------------ secrets


def test_password_never_leaks(
    build: Callable[..., nxauth.Authenticator],
    matrix: PamWrapper,
    names: list[str],
    sink: RecordingSink,
    caplog: pytest.LogCaptureFixture,
    stage1: Callable[..., nxauth.Session],
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[object] = []
    for service in (Services.MATRIX, Services.OTP, Services.CHATTY, Services.ECHO, Services.RENAME):
        auth = build(service)
        for conversation in (None, Recorder(SENTINEL_PASSWORD)):
            with pytest.raises(AuthenticationFailed) as info:
                stage1(auth).login(names[0], SENTINEL_PASSWORD, conversation=conversation)
            seen.append(info.value)
            login = attempt(names[0], SENTINEL_PASSWORD, conversation)
            seen.extend([make(matrix, service).authenticate(login), login.messages])
    seen.extend((event.detail, event) for event in sink.events)
    seen.extend(record.getMessage() for record in caplog.records)
    for item in seen:
        assert SENTINEL_PASSWORD not in repr(item) and SENTINEL_PASSWORD not in str(item)


# ------------------------------------------------------------ pam_unix (root)


@root_only()
@pytest.mark.parametrize(
    ("change", "password", "auth_reason", "account_reason"),
    [
        pytest.param(None, None, None, None, id="right-password"),
        pytest.param(None, "wrong", Reason.BAD_PASSWORD, None, id="wrong-password"),
        pytest.param(("chage", "-E", "0"), None, Reason.ACCOUNT_EXPIRED, Reason.ACCOUNT_EXPIRED, id="expired-account"),
        pytest.param(("chage", "-d", "0"), None, Reason.PASSWORD_EXPIRED, Reason.PASSWORD_EXPIRED, id="expired-pw"),
        # usermod -L locks the password only (pam_unix's account step allows);
        # a login with the right password is refused and reported as locked.
        pytest.param(("usermod", "-L"), None, Reason.ACCOUNT_LOCKED, None, id="locked"),
    ],
)
def test_pam_unix(
    pam_wrapper: PamWrapper,
    unix_user: tuple[str, str],
    change: tuple[str, ...] | None,
    password: str | None,
    auth_reason: Reason | None,
    account_reason: Reason | None,
) -> None:
    name, right = unix_user
    if change is not None:
        {"chage": chage, "usermod": usermod}[change[0]](name, *change[1:])
    backend = make(pam_wrapper, Services.UNIX)
    verdict = backend.authenticate(attempt(name, password or right))
    assert verdict.reason is (auth_reason or Reason.OK)
    if auth_reason is None:
        assert verdict.username == name and verdict.attributes["uid"] == pwd.getpwnam(name).pw_uid
    account = backend.check_account(make_identity(name))
    assert account.reason is (account_reason or Reason.OK)


@root_only()
def test_pam_unix_unknown_user(pam_wrapper: PamWrapper) -> None:
    verdict = make(pam_wrapper, Services.UNIX).authenticate(attempt("nxauth-no-such-user", "x"))
    assert verdict.reason is Reason.UNKNOWN_USER


@root_only()
def test_pam_unix_end_to_end(
    build: Callable[..., nxauth.Authenticator],
    unix_user: tuple[str, str],
    sink: RecordingSink,
    stage1: Callable[..., nxauth.Session],
) -> None:
    name, password = unix_user
    auth = build(Services.UNIX)
    identity = stage1(auth).login(name.upper(), password)
    assert identity.username == name and identity.attributes["home"] == pwd.getpwnam(name).pw_dir
    chage(name, "-d", "0")
    with pytest.raises(AuthenticationFailed) as info:
        stage1(auth).login(name, password)
    assert info.value.reason is Reason.PASSWORD_EXPIRED
    assert sink.events[-1].detail.startswith("acct-mgmt=12")  # PAM_NEW_AUTHTOK_REQD


@root_only()
def test_pam_unix_1mib_password(pam_wrapper: PamWrapper, unix_user: tuple[str, str]) -> None:
    backend = make(pam_wrapper, Services.UNIX, max_answer_bytes=1 << 21)
    assert backend.authenticate(attempt(unix_user[0], "p" * (1 << 20))).reason is Reason.BAD_PASSWORD


# ------------------------------------------------------------ threads and the event loop


def hammer(logins: Callable[[int], None], seconds: float) -> list[int]:
    """Run ``logins(index)`` in THREADS threads until ``seconds`` pass;
    return how many rounds each did.  Any exception fails the test."""
    deadline = time.monotonic() + seconds
    counts = [0] * THREADS
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def run(index: int) -> None:
        try:
            start.wait()
            while time.monotonic() < deadline and not errors:
                logins(index)
                counts[index] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return counts


def test_threads_pam_matrix(matrix: PamWrapper, names: list[str]) -> None:
    otp = make(matrix, Services.OTP)
    plain = make(matrix, Services.MATRIX)

    def logins(index: int) -> None:
        name, other = names[index], names[(index + 1) % THREADS]
        verdict = otp.authenticate(attempt(name, password_of(name), Recorder(code_of(name))))
        assert verdict.allowed and verdict.username == name, verdict
        verdict = otp.authenticate(attempt(name, password_of(name), Recorder(code_of(other))))
        assert verdict.reason is Reason.BAD_PASSWORD, verdict
        assert plain.authenticate(attempt(name, password_of(other))).reason is Reason.BAD_PASSWORD
        assert plain.check_account(make_identity(name)).allowed

    counts = hammer(logins, 2.0)
    assert min(counts) >= 20, counts


@root_only()
def test_threads_pam_unix(pam_wrapper: PamWrapper) -> None:
    backend = make(pam_wrapper, Services.UNIX)
    with system_user("first-Pw1") as first, system_user("second-Pw2") as second:
        users = [(first, "first-Pw1"), (second, "second-Pw2")]

        def logins(index: int) -> None:
            name, password = users[index % 2]
            verdict = backend.authenticate(attempt(name, password))
            assert verdict.allowed and verdict.username == name, verdict
            other = users[(index + 1) % 2][1]
            assert backend.authenticate(attempt(name, other)).reason is Reason.BAD_PASSWORD

        counts = hammer(logins, 2.0)
    assert min(counts) >= 2, counts


def test_login_async_runs_off_the_event_loop(
    build: Callable[..., nxauth.Authenticator],
    matrix: PamWrapper,
    names: list[str],
    stage1: Callable[..., nxauth.Session],
) -> None:
    auth = build(Services.OTP)

    async def main() -> tuple[list[nxauth.Identity], int, list[str]]:
        ticks = 0
        stop = asyncio.Event()
        threads: list[str] = []

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        def conversation_for(name: str) -> Callable[[str, bool], Any]:
            async def relay(prompt: str, echo: bool) -> str:
                await asyncio.sleep(0.02)  # the client types its code
                return code_of(name)

            return relay

        def sync_relay(name: str) -> Callable[[str, bool], str]:
            def relay(prompt: str, echo: bool) -> str:
                threads.append(threading.current_thread().name)
                return code_of(name)

            return relay

        task = asyncio.create_task(ticker())
        logins = [
            stage1(auth).login_async(name, password_of(name), conversation=conversation_for(name))
            for name in names[:THREADS]
        ]
        logins.append(stage1(auth).login_async(names[0], password_of(names[0]), conversation=sync_relay(names[0])))
        identities = await asyncio.gather(*logins)
        stop.set()
        await task
        return list(identities), ticks, threads

    identities, ticks, threads = asyncio.run(main())
    assert [i.username for i in identities] == [*names[:THREADS], names[0]]
    assert ticks >= 5  # the loop kept running while PAM worked
    assert threads and all(name.startswith("nxauth") for name in threads)
