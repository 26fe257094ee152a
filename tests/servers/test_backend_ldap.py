"""The ldap backend against a real slapd (tests/servers/slapd.py): the
contracts, direct bind and search-then-bind, injection attempts, empty
passwords, groups (direct, nested, cyclic), require/deny, ppolicy states,
attributes, the account and key-source roles, threads, and end to end
through the Authenticator (stage 1 with keys from the directory)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import nxauth
from nxauth import AuthenticationFailed, Decision, Reason, Secret, Verdict
from nxauth.backends.ldap.backend import ppolicy_word
from nxauth.backends.ldap.escape import normalize_dn
from nxauth.testing import AccountBackendContract, AuthBackendContract, RecordingSink, make_attempt, make_identity
from tests.support.keys import TransportKey
from tests.support.ldap import NX_KEY, NX_KEY_2, build_backend
from tests.support.slapd import (
    GROUPS,
    PASSWORDS,
    PEOPLE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SUFFIX,
    Slapd,
    TlsFiles,
    group_dn,
    person_dn,
    slapd_missing,
)

pytest.importorskip("ldap3")
pytestmark = pytest.mark.skipif(slapd_missing() is not None, reason=f"slapd is not usable: {slapd_missing()}")

STRANGER_KEY = TransportKey("stranger")

DIRECT: dict[str, Any] = {"user_dn": "uid={username},ou=people,dc=example,dc=org"}
SERVICE: dict[str, Any] = {"bind_dn": SERVICE_DN, "bind_password": Secret(SERVICE_PASSWORD)}
SEARCH: dict[str, Any] = {"user_base": PEOPLE, **SERVICE}
ALL_MEMBERSHIPS = ["member", "uniqueMember", "memberUid", "memberOf"]
Make = Callable[..., Any]


@pytest.fixture
def server(directory: Slapd) -> Slapd:
    """The session's slapd (tests/servers/conftest.py)."""
    return directory


@pytest.fixture
def make(server: Slapd, tls: TlsFiles) -> Iterator[Make]:
    """``make(**options)``: a backend on the module's slapd over LDAPS."""
    built: list[Any] = []

    def factory(**options: Any) -> Any:
        base = {"uri": server.ldaps_uri, "ca_file": str(tls.ca_cert)}
        backend = build_backend({**base, **options})
        built.append(backend)
        return backend

    yield factory
    for backend in built:
        backend.close()


def verdict_of(backend: Any, username: str, password: str) -> Verdict:
    verdict = backend.authenticate(make_attempt(username, password))
    assert isinstance(verdict, Verdict)
    return verdict


# ------------------------------------------------------------ contracts


class TestDirectBindContract(AuthBackendContract):
    @pytest.fixture
    def backend(self, make: Make) -> Any:
        return make(**DIRECT)

    @pytest.fixture
    def credentials(self) -> tuple[str, str]:
        return ("alice", PASSWORDS["alice"])


class TestSearchBindContract(AuthBackendContract):
    @pytest.fixture
    def backend(self, make: Make) -> Any:
        return make(**SEARCH, group_base=GROUPS, require_groups=["admins"], attributes=["mail"])

    @pytest.fixture
    def credentials(self) -> tuple[str, str]:
        return ("alice", PASSWORDS["alice"])


class TestAccountContract(AccountBackendContract):
    @pytest.fixture
    def backend(self, make: Make) -> Any:
        return make(**SEARCH, group_base=GROUPS)

    @pytest.fixture
    def listed_username(self) -> str:
        return "alice"


# ------------------------------------------------------------ the two ways to find the user

MODES = {"direct": DIRECT, "search": SEARCH, "search-anonymous-groups": {**SEARCH}}
SPECIAL_USERS = ["smith, j", "x+y=z", "#hash", "o'hara", "zoë", "al*"]


@pytest.mark.parametrize("mode", ["direct", "search"])
@pytest.mark.parametrize("username", ["alice", "bob", *SPECIAL_USERS])
def test_right_password_allows(make: Make, mode: str, username: str) -> None:
    backend = make(**MODES[mode])
    assert verdict_of(backend, username, PASSWORDS[username]).decision is Decision.ALLOW


@pytest.mark.parametrize(
    ("mode", "username", "password", "reason"),
    [
        ("direct", "alice", "wrong", Reason.BAD_PASSWORD),
        ("search", "alice", "wrong", Reason.BAD_PASSWORD),
        ("direct", "nobody", "wrong", Reason.BAD_PASSWORD),  # a bind cannot tell
        ("search", "nobody", "wrong", Reason.UNKNOWN_USER),
        ("direct", "al*", PASSWORDS["alice"], Reason.BAD_PASSWORD),
        ("search", "al*", PASSWORDS["alice"], Reason.BAD_PASSWORD),
        ("direct", "alice", "Wonderland", Reason.BAD_PASSWORD),
    ],
)
def test_wrong_passwords_deny(make: Make, mode: str, username: str, password: str, reason: Reason) -> None:
    verdict = verdict_of(make(**MODES[mode]), username, password)
    assert (verdict.decision, verdict.reason) == (Decision.DENY, reason)


INJECTIONS = [
    "*",
    "a*",
    "*)(uid=*",
    ")(uid=*",
    "alice)(|(uid=*)",
    "*)(|(objectClass=*)",
    "alice)(!(uid=nobody)",
    "alice\\00",
    "alice\\2a",
    "alice,ou=people,dc=example,dc=org",
    "uid=alice,ou=people,dc=example,dc=org",
    "alice+cn=alice",
    "alice,",
    "#616c696365",
    "\\61lice",
    "alice)",
]


@pytest.mark.parametrize("mode", ["direct", "search"])
@pytest.mark.parametrize("username", INJECTIONS)
def test_injection_never_matches_another_entry(make: Make, mode: str, username: str) -> None:
    backend = make(**MODES[mode])
    for password in {PASSWORDS["alice"], PASSWORDS["bob"], PASSWORDS["al*"]}:
        verdict = verdict_of(backend, username, password)
        assert verdict.decision is Decision.DENY, (username, verdict)
        expected = {Reason.UNKNOWN_USER} if mode == "search" else {Reason.BAD_PASSWORD}
        assert verdict.reason in expected, (username, verdict)


def test_nul_never_reaches_the_server_raw(make: Make) -> None:
    """The core and the backend refuse NUL in a username; below them the
    search carries it as one octet of the assertion and a DN as ``\\00``:
    neither matches alice."""
    backend = make(**SEARCH)
    assert verdict_of(backend, "alice\x00", PASSWORDS["alice"]).reason is Reason.INVALID_USERNAME
    deadline = backend._deadline()
    found = backend._service.run(lambda link: backend._find(link, "alice\x00", deadline, ()), deadline)
    assert found is None
    direct = make(**DIRECT)
    assert direct._bind_name("alice\x00") == "uid=alice\\00,ou=people,dc=example,dc=org"
    result = direct._users.run(
        lambda link: link.bind(direct._bind_name("alice\x00"), b"wonderland", deadline), deadline
    )
    assert result.code == 49


@pytest.mark.parametrize("mode", ["direct", "search"])
@pytest.mark.parametrize("password", ["", " ", "   \t"], ids=["empty", "space", "tab"])
def test_empty_and_whitespace_passwords_denied(make: Make, mode: str, password: str) -> None:
    backend = make(**MODES[mode])
    verdict = verdict_of(backend, "alice", password)
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.EMPTY_PASSWORD)
    assert backend._users.opened == 0 and backend._service.opened == 0  # no connection at all


# ------------------------------------------------------------ groups

GROUP_CASES = [
    ("alice", ["member"], False, {"admins"}),
    ("alice", ["uniqueMember"], False, {"devs"}),
    ("alice", ["memberUid"], False, {"wheel"}),
    ("alice", ["memberOf"], False, {"admins", "staff"}),
    ("alice", ["member"], True, {"admins", "staff", "everyone"}),
    ("alice", ALL_MEMBERSHIPS, True, {"admins", "staff", "everyone", "devs", "wheel"}),
    ("bob", ["member"], False, {"staff", "banned"}),
    ("bob", ["member"], True, {"staff", "banned", "everyone"}),
    ("dave", ["member"], False, {"cyc1"}),
    ("dave", ["member"], True, {"cyc1", "cyc2", "cyc3"}),  # a cycle: cyc1 <-> cyc2
    ("carol", ALL_MEMBERSHIPS, True, set()),
    ("smith, j", ["member"], False, {"special"}),
]


@pytest.mark.parametrize(("username", "membership", "nested", "groups"), GROUP_CASES)
@pytest.mark.parametrize("mode", ["search", "direct-as-user"])
def test_groups(make: Make, mode: str, username: str, membership: list[str], nested: bool, groups: set[str]) -> None:
    options = SEARCH if mode == "search" else DIRECT  # direct without a service account reads as the user
    backend = make(**options, group_base=GROUPS, group_membership=membership, nested_groups=nested)
    verdict = verdict_of(backend, username, PASSWORDS[username])
    assert verdict.decision is Decision.ALLOW
    assert verdict.groups == groups


def test_groups_as_dns(make: Make) -> None:
    backend = make(**SEARCH, group_base=GROUPS, group_name_attribute="dn", nested_groups=True)
    verdict = verdict_of(backend, "alice", PASSWORDS["alice"])
    assert verdict.groups == {group_dn("admins"), group_dn("staff"), group_dn("everyone")}


def test_nesting_depth_is_bounded(make: Make, caplog: pytest.LogCaptureFixture) -> None:
    backend = make(**SEARCH, group_base=GROUPS, nested_groups=True, max_group_depth=1)
    with caplog.at_level(logging.WARNING, "nxauth.backends.ldap"):
        verdict = verdict_of(backend, "alice", PASSWORDS["alice"])
    assert verdict.groups == {"admins", "staff"}
    assert "deeper than 1" in caplog.text


@pytest.mark.parametrize(
    ("options", "username", "reason"),
    [
        ({"require_groups": ["admins"]}, "alice", None),
        ({"require_groups": ["admins"]}, "bob", Reason.NOT_IN_GROUP),
        ({"require_groups": ["admins", "staff"]}, "bob", None),
        ({"require_groups": ["cn=Admins, ou=Groups,dc=example,dc=org"]}, "alice", None),
        ({"require_groups": ["cn=admins,ou=elsewhere,dc=example,dc=org"]}, "alice", Reason.NOT_IN_GROUP),
        ({"require_groups": ["everyone"]}, "alice", Reason.NOT_IN_GROUP),
        ({"require_groups": ["everyone"], "nested_groups": True}, "alice", None),
        ({"deny_groups": ["banned"]}, "bob", Reason.DENIED),
        ({"deny_groups": ["banned"]}, "alice", None),
        ({"require_groups": ["staff"], "deny_groups": ["banned"]}, "bob", Reason.DENIED),
        ({"deny_groups": ["everyone"], "nested_groups": True}, "alice", Reason.DENIED),
        ({"require_groups": ["cyc3"], "nested_groups": True}, "dave", None),
        ({"require_groups": ["admins"], "groups_in_identity": False}, "alice", None),
    ],
    ids=[
        "required-member",
        "required-not-member",
        "one-of-several",
        "dn-form-normalized",
        "dn-form-other-ou",
        "nested-not-followed",
        "nested-followed",
        "denied",
        "deny-not-member",
        "deny-wins",
        "deny-nested",
        "required-through-cycle",
        "groups-not-in-identity",
    ],
)
@pytest.mark.parametrize("role", ["auth", "account"])
def test_require_and_deny_groups(
    make: Make, role: str, options: dict[str, Any], username: str, reason: Reason | None
) -> None:
    backend = make(**SEARCH, group_base=GROUPS, **options)
    if role == "auth":
        verdict = verdict_of(backend, username, PASSWORDS[username])
    else:
        verdict = backend.check_account(make_identity(username))
    assert verdict.reason is (reason or Reason.OK), verdict
    if options.get("groups_in_identity") is False:
        assert verdict.groups == frozenset()


def test_memberof_only_needs_no_group_base(make: Make) -> None:
    backend = make(**DIRECT, group_membership=["memberOf"], require_groups=["staff"])
    assert verdict_of(backend, "alice", PASSWORDS["alice"]).groups == {"admins", "staff"}
    assert verdict_of(backend, "bob", PASSWORDS["bob"]).reason is Reason.NOT_IN_GROUP


# ------------------------------------------------------------ account state (ppolicy)


@pytest.mark.parametrize(
    ("username", "reason", "detail"),
    [
        ("locked", Reason.ACCOUNT_LOCKED, "accountLocked"),
        ("mustchange", Reason.PASSWORD_EXPIRED, "changeAfterReset"),
        ("expiredpw", Reason.PASSWORD_EXPIRED, "passwordExpired"),
    ],
)
@pytest.mark.parametrize("mode", ["direct", "search"])
def test_ppolicy_states(make: Make, mode: str, username: str, reason: Reason, detail: str) -> None:
    verdict = verdict_of(make(**MODES[mode]), username, PASSWORDS[username])
    assert (verdict.decision, verdict.reason) == (Decision.DENY, reason)
    assert verdict.detail == ppolicy_word(detail)


def test_ppolicy_lockout_after_failures(make: Make) -> None:
    backend = make(**DIRECT)
    for _ in range(3):
        assert verdict_of(backend, "lockme", "wrong").reason is Reason.BAD_PASSWORD
    verdict = verdict_of(backend, "lockme", PASSWORDS["lockme"])
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.ACCOUNT_LOCKED)


def test_without_the_ppolicy_control_a_locked_account_is_just_a_failed_bind(make: Make) -> None:
    verdict = verdict_of(make(**DIRECT, password_policy=False), "locked", PASSWORDS["locked"])
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.BAD_PASSWORD)


def test_account_role_sees_an_administrative_lock(make: Make) -> None:
    backend = make(**SEARCH)
    assert backend.check_account(make_identity("locked")).reason is Reason.ACCOUNT_LOCKED
    assert backend.check_account(make_identity("alice")).decision is Decision.ALLOW
    assert backend.check_account(make_identity("nobody")).reason is Reason.UNKNOWN_USER


# ------------------------------------------------------------ attributes and the account role


def test_attributes_go_into_the_verdict(make: Make) -> None:
    backend = make(**SEARCH, attributes=["mail", "displayName", "dn", "telephoneNumber"])
    verdict = verdict_of(backend, "alice", PASSWORDS["alice"])
    assert dict(verdict.attributes) == {
        "mail": "alice@example.org",
        "displayName": "Alice Liddell",
        "dn": person_dn("alice"),
    }


def test_account_role_reuses_the_decision_of_the_same_session(make: Make) -> None:
    backend = make(**SEARCH, group_base=GROUPS)
    verdict = backend.authenticate(make_attempt("alice", PASSWORDS["alice"]))
    assert ("test", "alice") in backend._recent
    opened = backend._service.opened
    assert backend.check_account(make_identity("alice")) is verdict
    assert ("test", "alice") not in backend._recent
    assert backend._service.opened == opened
    fresh = backend.check_account(make_identity("alice"))  # not remembered twice: a real lookup
    assert fresh.allowed and fresh is not verdict


def test_account_role_in_direct_mode_with_a_service_account(make: Make) -> None:
    backend = make(**DIRECT, **SERVICE, group_base=GROUPS, require_groups=["admins"])
    assert backend.check_account(make_identity("alice")).groups == {"admins"}
    assert backend.check_account(make_identity("bob")).reason is Reason.NOT_IN_GROUP
    assert backend.check_account(make_identity("nobody")).reason is Reason.UNKNOWN_USER


def test_ambiguous_user_filter_is_refused(make: Make, caplog: pytest.LogCaptureFixture) -> None:
    backend = make(**SEARCH, user_filter="(|(uid={username})(uid=bob))")
    verdict = verdict_of(backend, "alice", PASSWORDS["alice"])
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.BACKEND_ERROR)
    assert verdict.detail == "ldap-error"  # the precise reason goes to the log
    assert "more than one entry" in caplog.text


def test_service_account_with_a_wrong_password(make: Make, caplog: pytest.LogCaptureFixture) -> None:
    backend = make(user_base=PEOPLE, bind_dn=SERVICE_DN, bind_password=Secret("not-it"))
    verdict = verdict_of(backend, "alice", PASSWORDS["alice"])
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.BACKEND_ERROR)
    assert verdict.detail == "ldap-error"
    assert "service account" in caplog.text


def test_missing_user_base_is_an_error_not_an_unknown_user(make: Make) -> None:
    backend = make(user_base=f"ou=nowhere,{SUFFIX}", **SERVICE)
    assert verdict_of(backend, "alice", PASSWORDS["alice"]).reason is Reason.BACKEND_ERROR


def test_search_references_are_ignored_when_referrals_are_off(make: Make, caplog: pytest.LogCaptureFixture) -> None:
    # ou=remote,ou=people is a referral object: the subtree search returns a
    # reference to a port where nothing listens, and it is not chased.
    backend = make(**SEARCH)
    assert verdict_of(backend, "alice", PASSWORDS["alice"]).allowed
    chasing = make(**SEARCH, referrals=True)
    verdict = verdict_of(chasing, "alice", PASSWORDS["alice"])
    assert (verdict.decision, verdict.reason) == (Decision.DENY, Reason.BACKEND_ERROR)  # fail closed
    assert verdict.detail == "ldap-error"
    assert "referral" in caplog.text


# ------------------------------------------------------------ Active-Directory-like entries in slapd

AD_LIKE = {"implementation": "activedirectory", **SEARCH}


@pytest.mark.parametrize(
    ("username", "password_of", "reason"),
    [
        ("jdoe", "jdoe", None),
        # the UPN finds the entry, whose sAMAccountName is another name for the account: refused
        ("jdoe@corp.example.org", "jdoe", Reason.NAME_MISMATCH),
        ("disabled", "disabled", Reason.DISABLED),
        ("expired", "expired", Reason.ACCOUNT_EXPIRED),
        ("changeme", "changeme", Reason.PASSWORD_EXPIRED),
        ("alice", "alice", Reason.UNKNOWN_USER),  # no sAMAccountName
        ("ws01$", "ws01$", Reason.UNKNOWN_USER),  # a computer account
        ("jdoe", "alice", Reason.BAD_PASSWORD),
    ],
)
def test_active_directory_preset_on_ad_like_entries(
    make: Make, username: str, password_of: str, reason: Reason | None
) -> None:
    backend = make(**AD_LIKE)
    verdict = verdict_of(backend, username, PASSWORDS[password_of])
    assert verdict.reason is (reason or Reason.OK), verdict
    if reason is None:
        assert verdict.groups == {"admins"}  # memberOf, the AD default
        assert backend.check_account(make_identity("disabled")).reason is Reason.DISABLED


# ------------------------------------------------------------ key source


def test_ssh_public_keys_from_the_directory(make: Make, caplog: pytest.LogCaptureFixture) -> None:
    backend = make(user_base=SUFFIX, **SERVICE)
    with caplog.at_level(logging.WARNING, "nxauth.backends.ldap"):
        keys = backend.authorized_keys("nx")
    assert [k.key.blob for k in keys] == [NX_KEY.blob, NX_KEY_2.blob]
    assert keys[1].options.from_patterns == ("192.0.2.0/24",)
    assert keys[1].options.no_pty
    assert "skipped" in caplog.text  # the line that is not a key
    assert backend.authorized_keys("nobody") == []
    assert backend.authorized_keys("*") == []


# ------------------------------------------------------------ threads


@pytest.mark.parametrize("mode", ["direct-as-user", "search"])
def test_many_threads_never_mix_users(make: Make, mode: str) -> None:
    options = DIRECT if mode == "direct-as-user" else SEARCH
    backend = make(**options, attributes=["dn"], group_base=GROUPS, pool_size=4)
    users = ["alice", "bob", "carol", "dave", "smith, j"]
    errors: list[str] = []

    def worker(index: int) -> None:
        for round_ in range(40):
            username = users[(index + round_) % len(users)]
            right = (index + round_) % 3 != 0
            password = PASSWORDS[username] if right else "wrong"
            verdict = verdict_of(backend, username, password)
            if verdict.allowed != right:
                errors.append(f"{username} right={right}: {verdict}")
            elif right and normalize_dn(verdict.attributes["dn"]) != normalize_dn(person_dn(username)):
                errors.append(f"{username} got {verdict.attributes['dn']}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:5]


# ------------------------------------------------------------ end to end


@pytest.fixture
def authenticator(server: Slapd, tls: TlsFiles, tmp_path: Path) -> Iterator[tuple[nxauth.Authenticator, RecordingSink]]:
    sink = RecordingSink()
    config = {
        "state_dir": str(tmp_path / "state"),
        "transport": {"key_sources": ["corp"]},
        "backends": {
            "corp": {
                "kind": "ldap",
                "uri": [server.ldap_uri],  # StartTLS
                "ca_file": str(tls.ca_cert),
                "user_base": SUFFIX,
                **SERVICE,
                "group_base": GROUPS,
                "nested_groups": True,
                "require_groups": ["staff"],
                "deny_groups": ["banned"],
                "attributes": ["mail"],
            }
        },
        "auth": [{"use": "corp"}],
        "account": [{"use": "corp"}],
    }
    auth = nxauth.Authenticator(config, plugins=(sink,), entry_points=False)
    yield auth, sink
    auth.close()


def test_end_to_end_two_stages_from_the_directory(authenticator: tuple[nxauth.Authenticator, RecordingSink]) -> None:
    auth, sink = authenticator
    session = auth.open_session(peer=("198.51.100.7", 40000))
    grant = session.check_transport_key("nx", NX_KEY.line)
    assert grant.source == "corp"
    identity = session.login("Alice", PASSWORDS["alice"])
    assert identity.username == "alice"
    assert identity.backend == "corp"
    assert {"admins", "staff", "everyone"} <= identity.groups
    assert identity.attributes["mail"] == "alice@example.org"
    assert sink.outcomes()[-1] == (2, "accepted", "ok")


@pytest.mark.parametrize(
    ("username", "password", "reason"),
    [
        ("alice", "wrong", "bad-password"),
        ("nobody", "x", "unknown-user"),
        ("bob", PASSWORDS["bob"], "denied"),
        ("carol", PASSWORDS["carol"], "not-in-group"),
        ("locked", PASSWORDS["locked"], "account-locked"),
        ("*", PASSWORDS["alice"], "unknown-user"),
    ],
)
def test_end_to_end_denials_are_generic_for_the_client(
    authenticator: tuple[nxauth.Authenticator, RecordingSink], username: str, password: str, reason: str
) -> None:
    auth, sink = authenticator
    session = auth.open_session(peer=("198.51.100.8", 40000))
    session.check_transport_key("nx", NX_KEY.line)
    with pytest.raises(AuthenticationFailed) as info:
        session.login(username, password)
    assert str(info.value) == "authentication failed"
    assert sink.outcomes()[-1] == (2, "failed", reason)


def test_end_to_end_unknown_transport_key(authenticator: tuple[nxauth.Authenticator, RecordingSink]) -> None:
    auth, _ = authenticator
    session = auth.open_session(peer=("198.51.100.9", 40000))
    with pytest.raises(AuthenticationFailed) as info:
        session.check_transport_key("nx", STRANGER_KEY.line)
    assert info.value.reason is Reason.UNKNOWN_KEY
    # the key with from="192.0.2.0/24" is refused from elsewhere
    with pytest.raises(AuthenticationFailed):
        auth.open_session(peer=("198.51.100.9", 40001)).check_transport_key("nx", NX_KEY_2.line)
    assert auth.open_session(peer=("192.0.2.5", 40002)).check_transport_key("nx", NX_KEY_2.line).source == "corp"


def test_a_user_bind_connection_never_searches_on_another_bind(make: Make) -> None:
    """A connection of the user-bind pool goes back to the pool bound as the
    last user; it refuses any search until this checkout's own bind succeeded."""
    backend = make(**DIRECT, pool_size=1)
    assert verdict_of(backend, "alice", PASSWORDS["alice"]).allowed  # the pooled link is bound as alice
    deadline = backend._deadline()
    condition = b"\x87\x0bobjectClass"

    def search_only(link: Any) -> Any:
        return link.search(PEOPLE, 2, condition, [], deadline)

    def failed_bind_then_search(link: Any) -> Any:
        assert not link.bind(person_dn("bob"), b"wrong", deadline).ok
        return link.search(PEOPLE, 2, condition, [], deadline)

    for work in (search_only, failed_bind_then_search):
        with pytest.raises(RuntimeError):
            backend._users.run(work, deadline)

    def bind_then_search(link: Any) -> Any:
        assert link.bind(person_dn("bob"), PASSWORDS["bob"].encode(), deadline).ok
        return link.search(person_dn("bob"), 0, condition, [], deadline)

    assert len(backend._users.run(bind_then_search, deadline).entries) == 1
