"""A failure the throttle does not count (no conversation, a timeout, a
backend error) must not hide a password check made by a later entry of the
stack: PAM's ``required`` keeps running the stack after a failure, so the
password could otherwise be tried without limit (an outside review found
it with a second factor first and a directory second)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import nxauth
from nxauth import Attempt, AuthenticationFailed, Identity, Reason, Verdict
from tests.support.keys import ListKeySource, TransportKey

LIMIT = 3


class Asks:
    """A second factor that needs the conversation (absent here)."""

    def authenticate(self, attempt: Attempt) -> Verdict:
        attempt.ask("Code: ", False)
        return Verdict.allow()


class Raises:
    def authenticate(self, attempt: Attempt) -> Verdict:
        raise RuntimeError("the backend broke")


class Directory:
    """Checks the password (an LDAP bind would count in AD's badPwdCount)."""

    def __init__(self) -> None:
        self.calls = 0

    def authenticate(self, attempt: Attempt) -> Verdict:
        self.calls += 1
        return Verdict.deny(Reason.BAD_PASSWORD)

    def check_account(self, identity: Identity) -> Verdict:
        return Verdict.allow()


@pytest.mark.parametrize("first", [Asks, Raises], ids=["conversation-unavailable", "backend-error"])
@pytest.mark.parametrize("control", ["required", "requisite"])
def test_a_password_checked_after_an_uncounted_failure_is_counted(
    tmp_path: object, first: Callable[[], object], control: str
) -> None:
    key = TransportKey()
    directory = Directory()
    auth = nxauth.Authenticator(
        {
            "state_dir": str(tmp_path),
            "transport": {"key_sources": ["keys"]},
            "throttle": {"max_user_failures": LIMIT},
            "auth": [{"use": "first", "control": control}, {"use": "dir"}],
            "account": [{"use": "dir"}],
        },
        backends={"keys": ListKeySource(key.line), "dir": directory, "first": first()},
        entry_points=False,
    )
    try:
        for _ in range(20):
            session = auth.open_session(peer=("198.51.100.7", 1))
            session.check_transport_key("nx", key.line)
            with pytest.raises(AuthenticationFailed):
                session.login("alice", "guess")
    finally:
        auth.close()
    assert directory.calls <= LIMIT


def test_an_uncounted_failure_alone_is_still_not_counted(tmp_path: object) -> None:
    """Nothing judged the password: a client without a conversation does not lock itself out."""
    reasons = reasons_of_ten_logins(
        tmp_path, [{"use": "first"}], [{"use": "dir"}], {"dir": Directory(), "first": Asks()}, "guess"
    )
    assert reasons == {Reason.CONVERSATION_UNAVAILABLE}  # never locked-out


class Allows:
    def authenticate(self, attempt: Attempt) -> Verdict:
        return Verdict.allow()

    def check_account(self, identity: Identity) -> Verdict:
        return Verdict.allow()


def test_a_right_password_whose_second_factor_cannot_be_asked_is_not_counted(tmp_path: object) -> None:
    """The password allowed, the code never asked (no conversation, a client
    gone at the prompt): not a wrong guess, so no lockout of the user."""
    reasons = reasons_of_ten_logins(
        tmp_path, [{"use": "pw"}, {"use": "otp"}], [{"use": "pw"}], {"pw": Allows(), "otp": Asks()}, "right"
    )
    assert reasons == {Reason.CONVERSATION_UNAVAILABLE}


def reasons_of_ten_logins(
    tmp_path: object,
    auth_stack: list[dict[str, str]],
    account: list[dict[str, str]],
    backends: dict[str, object],
    password: str,
) -> set[Reason]:
    """Ten failing logins of alice from one address, with the throttle's
    limit at LIMIT: the reasons they were denied for."""
    key = TransportKey()
    auth = nxauth.Authenticator(
        {
            "state_dir": str(tmp_path),
            "transport": {"key_sources": ["keys"]},
            "throttle": {"max_user_failures": LIMIT},
            "auth": auth_stack,
            "account": account,
        },
        backends={"keys": ListKeySource(key.line), **backends},
        entry_points=False,
    )
    reasons = set()
    try:
        for _ in range(10):
            session = auth.open_session(peer=("198.51.100.7", 1))
            session.check_transport_key("nx", key.line)
            with pytest.raises(AuthenticationFailed) as failed:
                session.login("alice", password)
            reasons.add(failed.value.reason)
    finally:
        auth.close()
    return reasons
