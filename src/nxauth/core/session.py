"""Session: one client connection, a small state machine and the gate.

NEW --stage 1--> TRANSPORT_OK --stage 2--> AUTHENTICATED; CLOSED at any time,
and for good after ``session.max_attempts`` failures.  Stage 2 refuses to run
before stage 1 succeeded; ``identity`` raises before stage 2 succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Final, NoReturn, final

from nxauth.admission import Overloaded
from nxauth.codes import Method, Outcome
from nxauth.core.cancel import Cancel, async_relay, run_cancellable
from nxauth.core.stage1 import Caller
from nxauth.core.stage2 import INVALID_USER_REASONS, Denied, decide
from nxauth.core.throttle import Lockout, Settle
from nxauth.details import UNDECLARED, is_detail_word
from nxauth.errors import AuthenticationFailed, KeyFormatError, NotAuthenticated, StoreError, UsageError
from nxauth.model import AuthEvent, Identity, Peer, Reason, Secret, TransportGrant
from nxauth.usernames import InvalidUsername

if TYPE_CHECKING:
    from nxauth.core.runtime import Runtime
    from nxauth.keys.formats import PublicKey

__all__ = ["Session", "SessionState"]

log = logging.getLogger("nxauth")

_NONE: Final[frozenset[str]] = frozenset()

SSHSIG_NAMESPACE: Final = "nxauth"
MAX_CHALLENGES: Final = 4
ConversationCallback = Callable[[str, bool], Any]


class SessionState(enum.Enum):
    __module__ = "nxauth"

    NEW = "new"
    TRANSPORT_OK = "transport-ok"
    AUTHENTICATED = "authenticated"
    CLOSED = "closed"


@final
class Session:
    """One client connection.  Made by :meth:`Authenticator.open_session`."""

    __module__ = "nxauth"

    __slots__ = ("_attempts", "_auth", "_challenges", "_grant", "_id", "_identity", "_lock", "_peer", "_state")

    def __init__(self, runtime: Runtime, peer: Peer) -> None:
        self._auth = runtime
        self._peer = peer
        self._id = secrets.token_hex(8)
        self._attempts = 0
        self._state = SessionState.NEW
        self._grant: TransportGrant | None = None
        self._identity: Identity | None = None
        self._challenges: dict[str, float] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Session(id={self.id!r}, peer={self.peer!s}, state={self._state.value})"

    # ------------------------------------------------------------ state

    @property
    def peer(self) -> Peer:
        """The client's address, as the host gave it to :meth:`Authenticator.open_session`."""
        return self._peer

    @property
    def id(self) -> str:
        """This session's identifier in the audit trail (16 hex digits)."""
        return self._id

    @property
    def attempts(self) -> int:
        """Failures counted so far; at ``session.max_attempts`` the session closes for good."""
        return self._attempts

    @property
    def state(self) -> SessionState:
        """Where the session is: ``NEW``, ``TRANSPORT_OK``, ``AUTHENTICATED`` or ``CLOSED``."""
        return self._state

    @property
    def transport(self) -> TransportGrant | None:
        """The stage-1 grant, or ``None`` before stage 1 succeeded."""
        return self._grant

    @property
    def identity(self) -> Identity:
        """The authenticated user.  Raises :class:`NotAuthenticated` before
        stage 2 succeeded (and after the session was closed without it)."""
        identity = self._identity
        if identity is None or self._state is not SessionState.AUTHENTICATED:
            raise NotAuthenticated("no user is authenticated on this session")
        return identity

    @property
    def authenticated(self) -> bool:
        """Whether stage 2 succeeded on this session."""
        return self._state is SessionState.AUTHENTICATED

    def close(self) -> None:
        """Close the session: every later call fails.  An authenticated
        identity already handed out stays valid for its holder."""
        with self._lock:
            if self._state is not SessionState.AUTHENTICATED:
                self._identity = None
            self._state = SessionState.CLOSED
            self._challenges.clear()

    def abort(self, reason: Reason, detail: str = "") -> None:
        """Close the session because of the client or the integration, not a
        decision: a protocol error, a login timeout, a client gone before
        stage 2.  Audited as a refusal when no user was authenticated yet
        (``reason`` and ``detail`` go to the audit trail only).  ``detail`` is
        a detail word (:func:`nxauth.details.is_detail_word`, such as
        ``client-closed-channel``); any other text is recorded as
        ``undeclared-detail``, never as given."""
        if not isinstance(reason, Reason):
            raise UsageError("reason must be a nxauth.Reason")
        with self._lock:
            state = self._state
            if state in (SessionState.AUTHENTICATED, SessionState.CLOSED):
                return
            grant = self._grant
            self._state = SessionState.CLOSED
            self._challenges.clear()
        self._emit(
            2 if state is SessionState.TRANSPORT_OK else 1,
            Outcome.REFUSED,
            reason,
            Method.SESSION,
            grant.account if grant is not None else "",
            fingerprint=grant.fingerprint if grant is not None else None,
            detail=detail if is_detail_word(detail) else (UNDECLARED if detail else ""),
        )

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ audit and failure

    def _emit(
        self,
        stage: int,
        outcome: Outcome,
        reason: Reason,
        method: Method,
        username: str,
        *,
        backend: str | None = None,
        fingerprint: str | None = None,
        invalid_user: bool = False,
        detail: str = "",
    ) -> bool:
        event = AuthEvent(
            stage=stage,
            outcome=outcome,
            reason=reason,
            method=method,
            username=username[:100],
            peer=self.peer,
            session_id=self.id,
            backend=backend,
            fingerprint=fingerprint,
            invalid_user=invalid_user,
            detail=detail,
            time=self._auth.clock(),
        )
        return self._auth.emit(event)

    def _fail(
        self,
        stage: int,
        reason: Reason,
        method: Method,
        username: str,
        *,
        outcome: Outcome = Outcome.FAILED,
        count: bool = True,
        **extra: Any,
    ) -> NoReturn:
        """Audit a denial, count the attempt (also when a sink lets an
        interrupt through), close the session at the limit, raise."""
        try:
            self._emit(stage, outcome, reason, method, username, **extra)
        finally:
            self._count(count, method, username)
        raise AuthenticationFailed(stage, reason)

    def _deny(self, stage: int, reason: Reason, method: Method, username: str, *, count: bool = True) -> NoReturn:
        """A denial already audited: count the attempt, close the session at the limit, raise."""
        self._count(count, method, username)
        raise AuthenticationFailed(stage, reason)

    def _count(self, count: bool, method: Method, username: str) -> None:
        if count:
            self._attempts += 1
            if self._attempts >= self._auth.config.session.max_attempts and self._state is not SessionState.CLOSED:
                self._state = SessionState.CLOSED
                self._challenges.clear()
                self._emit(0, Outcome.REFUSED, Reason.TOO_MANY_ATTEMPTS, method, username, detail="session-closed")

    def _gate(self, stage: int, method: Method, username: str) -> None:
        if self._state is SessionState.CLOSED:
            self._fail(stage, Reason.SESSION_CLOSED, method, username, outcome=Outcome.REFUSED, count=False)
        if self._state is SessionState.AUTHENTICATED:
            self._fail(stage, Reason.ALREADY_AUTHENTICATED, method, username, outcome=Outcome.REFUSED, count=False)
        if stage == 1 and self._state is not SessionState.NEW:
            self._fail(
                1, Reason.STAGE_ORDER, method, username, outcome=Outcome.REFUSED, detail="transport-already-granted"
            )
        if stage == 2 and self._state is not SessionState.TRANSPORT_OK:
            self._fail(2, Reason.STAGE_ORDER, method, username, outcome=Outcome.REFUSED, detail="no-transport-grant")

    # ------------------------------------------------------------ stage 1

    def check_transport_key(
        self,
        account: str,
        public_key: PublicKey | bytes | str,
        *,
        can_verify_user: bool = True,
        probe: bool = False,
    ) -> TransportGrant:
        """Stage 1 with the key proven by the SSH layer: is ``public_key``
        (a :class:`nxauth.keys.formats.PublicKey`, a wire blob, or an OpenSSH public
        key line) allowed to open the transport for ``account``?

        The grant's options say what the SSH layer must enforce; for a
        security key that includes ``verify-required`` (user verification).
        An SSH layer that cannot see a security key's signature flags passes
        ``can_verify_user=False``: such a key is then refused.

        ``probe=True`` is for an SSH layer that asks before the client
        proved its key (the query of public-key authentication): a refusal
        is audited and counted as usual, but an allow is neither audited nor
        taken (the session stays in stage 1, and the grant returned is not
        the session's): call again without ``probe`` once the key is proven."""
        if not isinstance(account, str):
            raise UsageError("account must be a str")
        caller = Caller.SESSION if can_verify_user else Caller.SESSION_WITHOUT_FLAGS
        with self._lock:
            self._gate(1, Method.PUBLICKEY, account)
            return self._stage1(account, public_key, Method.PUBLICKEY, caller, probe=probe)

    def challenge(self) -> str:
        """A fresh nonce for :meth:`check_transport_signature`: single use,
        bound to this session, valid for ``session.challenge_ttl`` seconds.
        The client signs it as is: ``ssh-keygen -Y sign -n nxauth``."""
        with self._lock:
            if self._state is not SessionState.NEW:
                self._gate(1, Method.SSHSIG, "")
            now = self._auth.clock()
            self._challenges = {n: t for n, t in self._challenges.items() if t > now}
            while len(self._challenges) >= MAX_CHALLENGES:
                del self._challenges[next(iter(self._challenges))]
            nonce = f"nxauth-challenge-v1:{self.id}:{secrets.token_urlsafe(32)}"
            self._challenges[nonce] = now + self._auth.config.session.challenge_ttl
            return nonce

    def check_transport_signature(self, account: str, signature: str | bytes) -> TransportGrant:
        """Stage 1 without SSH: verify an SSHSIG signature (namespace
        ``nxauth``) over a nonce from :meth:`challenge`, then apply the same
        key policy to the signing key.  Every outstanding challenge is spent
        by this call, whatever its outcome."""
        if not isinstance(account, str):
            raise UsageError("account must be a str")
        if not isinstance(signature, str | bytes):
            raise UsageError("signature must be the armored SSHSIG text (str or bytes)")
        from nxauth.keys.sshsig import parse_sshsig, verify_sshsig_detailed

        with self._lock:
            self._gate(1, Method.SSHSIG, account)
            now = self._auth.clock()
            live = [nonce for nonce, expires in self._challenges.items() if expires > now]
            self._challenges.clear()
            try:
                sig = parse_sshsig(signature)
            except KeyFormatError as exc:
                self._fail(1, Reason.KEY_FORMAT, Method.SSHSIG, account, detail=exc.detail)
            fingerprint = sig.public_key.fingerprint
            if sig.namespace != SSHSIG_NAMESPACE:
                self._fail(
                    1,
                    Reason.CHALLENGE_INVALID,
                    Method.SSHSIG,
                    account,
                    fingerprint=fingerprint,
                    detail="wrong-namespace",
                )
            if not live:
                self._fail(
                    1,
                    Reason.CHALLENGE_INVALID,
                    Method.SSHSIG,
                    account,
                    fingerprint=fingerprint,
                    detail="no-live-challenge",
                )
            checks = (verify_sshsig_detailed(sig, nonce.encode("ascii"), SSHSIG_NAMESPACE) for nonce in live)
            check = next((c for c in checks if c.valid), None)
            if check is None:
                self._fail(1, Reason.BAD_SIGNATURE, Method.SSHSIG, account, fingerprint=fingerprint)
            # security keys: the policy judges the flags (touch, verification) against the entry's options
            return self._stage1(account, sig.public_key, Method.SSHSIG, Caller.SESSION, signature_flags=check.flags)

    def _stage1(
        self,
        account: str,
        key: PublicKey | bytes | str,
        method: Method,
        caller: Caller,
        *,
        signature_flags: int | None = None,
        probe: bool = False,
    ) -> TransportGrant:
        """Stage 1 decided (and audited) by its owner; the session counts a
        refusal and takes a grant."""
        stage1 = self._auth.stage1
        decision = stage1.decide(
            account, key, peer=self.peer, caller=caller, method=method, signature_flags=signature_flags
        )
        if probe and decision.grant is not None:
            return decision.grant
        try:
            decision = stage1.record(decision, session_id=self.id)
        except BaseException:
            self._count(True, method, account)  # an interrupt in a sink: no grant, the attempt counts
            raise
        grant = decision.grant
        if grant is None:
            self._deny(1, decision.reason, method, account)
        self._grant = grant
        self._state = SessionState.TRANSPORT_OK
        return grant

    # ------------------------------------------------------------ stage 2

    def login(
        self,
        username: str,
        password: str | Secret,
        *,
        conversation: ConversationCallback | None = None,
        deadline: float | None = None,
    ) -> Identity:
        """Stage 2: authenticate the real user.  Returns the :class:`Identity`;
        raises :class:`AuthenticationFailed` on any denial.

        ``conversation(prompt, echo) -> str`` relays a backend's further
        questions (a one-time code, a new password) to the client.

        ``deadline`` (a :func:`time.monotonic` value) bounds the login for a
        host that answers its client with a timeout: a login that starts
        after it asks no backend, and an allow that comes after it is not
        honoured.  Either way the login fails with ``Reason.LOGIN_TIMEOUT``,
        audited, counted neither by the throttle nor against
        ``session.max_attempts`` (closing the session is the host's call:
        :meth:`abort`).  It does not interrupt a backend (each has its own
        ``timeout``), and the backends of a login already under way are
        all asked."""
        return self._login_checked(username, password, conversation, deadline, None)

    def _login_checked(
        self, username: str, password: str | Secret, conversation: Any, deadline: Any, cancel: Cancel | None
    ) -> Identity:
        if not isinstance(password, str | Secret):
            raise UsageError(f"password must be a str or nxauth.Secret, not {type(password).__name__}")
        if conversation is not None and not callable(conversation):
            raise UsageError("conversation must be callable")
        if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, int | float)):
            raise UsageError("deadline must be a time.monotonic() value")
        secret = Secret(password)
        with self._lock:
            return self._login(username, secret, conversation, deadline, cancel)

    async def login_async(
        self,
        username: str,
        password: str | Secret,
        *,
        conversation: ConversationCallback | None = None,
        deadline: float | None = None,
    ) -> Identity:
        """:meth:`login` run in the authenticator's bounded thread pool, so the
        event loop never blocks.  ``conversation`` may be a coroutine function.
        A host that gives up waiting (``asyncio.wait_for``) should pass the
        same ``deadline``: the login still running in its thread then fails
        instead of completing unseen.  A cancelled call never leaves the
        session authenticated: the login still running fails (``cancelled``,
        audited and counted), and one that had just succeeded is taken back
        (the session is closed, audited ``cancelled``)."""
        cancel = Cancel()
        loop = asyncio.get_running_loop()
        relay = async_relay(conversation, loop, cancel)
        login = partial(self._login_checked, username, password, relay, deadline)
        gate = self._auth.login_gate
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            async with gate.admit_async(self.peer, wait=wait):
                return await run_cancellable(self._auth.executor(), login, self._take_back, cancel)
        except Overloaded as exc:  # (from the gate only: a login's own refusals are verdicts)
            await loop.run_in_executor(None, self._refuse_busy, username, exc.word)
            raise AssertionError("unreachable") from None  # _refuse_busy raises

    def _refuse_busy(self, raw_username: object, word: str) -> NoReturn:
        """Every thread of ``login_async`` stayed busy: refused before any
        check, audited, counted neither by the throttle nor against
        ``max_attempts`` (the client asked nothing wrong)."""
        shown = raw_username if isinstance(raw_username, str) else repr(type(raw_username))
        with self._lock:
            self._gate(2, Method.PASSWORD, shown)
            username = self._auth.canonical_or_none(raw_username) or shown
            self._fail(
                2, Reason.OVERLOADED, Method.PASSWORD, username, outcome=Outcome.REFUSED, count=False,
                detail=f"workers-{word}",
            )  # fmt: skip

    def _take_back(self) -> None:
        """A cancelled ``login_async`` whose login had just succeeded: nobody got the identity; drop it, close."""
        identity, self._identity, self._state = self._identity, None, SessionState.CLOSED
        if identity is not None:
            self._emit(
                2, Outcome.REFUSED, Reason.CANCELLED, Method.PASSWORD, identity.username, backend=identity.backend
            )

    def _login(
        self,
        raw_username: object,
        password: Secret,
        conversation: ConversationCallback | None,
        deadline: float | None,
        cancel: Cancel | None = None,
    ) -> Identity:
        shown = raw_username if isinstance(raw_username, str) else repr(type(raw_username))
        self._gate(2, Method.PASSWORD, shown)
        auth = self._auth
        cfg = auth.config
        try:
            username = auth.canonical_username(raw_username)
        except InvalidUsername as exc:
            auth.admission.penalize(self.peer)
            self._record_failure(None)
            self._fail(2, Reason.INVALID_USERNAME, Method.PASSWORD, shown, invalid_user=True, detail=exc.word)
        who = (Method.PASSWORD, username)
        try:
            reservation = auth.throttle.reserve(username, self.peer)  # check and reserve: one write
        except StoreError as exc:
            log.error("throttle: cannot reserve: %s", type(exc).__name__)
            self._fail(2, Reason.THROTTLE_UNAVAILABLE, Method.PASSWORD, username)
        if isinstance(reservation, Lockout):
            lockout = reservation
            auth.admission.penalize(self.peer)  # still guessing: no hash, and served last when it gets one
            self._fail(
                2,
                Reason.LOCKED_OUT,
                Method.PASSWORD,
                username,
                outcome=Outcome.REFUSED,
                detail=f"locked={lockout.key.split(':', 1)[0]} seconds={max(0.0, lockout.until - auth.clock()):.0f}",
            )
        try:
            if deadline is not None and time.monotonic() >= deadline:
                raise Denied(Reason.LOGIN_TIMEOUT, outcome=Outcome.REFUSED, detail="deadline-passed")
            if cancel is not None and cancel.cancelled:
                raise Denied(Reason.CANCELLED, outcome=Outcome.REFUSED)
            identity, messages = decide(
                auth, username, password, conversation, peer=self.peer, session_id=self.id, grant=self._grant
            )
            if deadline is not None and time.monotonic() >= deadline:
                raise Denied(Reason.LOGIN_TIMEOUT, backend=identity.backend, detail="allowed-after-deadline")
            if cancel is not None and cancel.cancelled:
                raise Denied(Reason.CANCELLED, backend=identity.backend)
        except Denied as denied:
            reason = denied.reason
            if denied.counted:
                auth.admission.penalize(self.peer)  # its source's later hashes wait behind clean sources'
            if not auth.throttle.try_settle(reservation, Settle.FAILURE if denied.counted else Settle.RELEASE):
                reason = Reason.THROTTLE_UNAVAILABLE  # not counted: fail closed, audited
            self._fail(
                2,
                reason,
                Method.PASSWORD,
                username,
                outcome=denied.outcome,
                count=denied.reason is not Reason.LOGIN_TIMEOUT,  # the host closes the session (abort)
                backend=denied.backend,
                invalid_user=denied.reason in INVALID_USER_REASONS,
                detail=denied.detail,
            )
        except BaseException as exc:  # interrupted (or a bug): no identity; audited, counted, raised as is
            auth.throttle.try_settle(reservation, Settle.FAILURE)
            with contextlib.suppress(AuthenticationFailed):
                self._fail(2, Reason.BACKEND_ERROR if isinstance(exc, Exception) else Reason.CANCELLED, *who)
            raise
        if not auth.throttle.try_settle(reservation, Settle.SUCCESS):  # the count is not proven: deny
            self._fail(2, Reason.THROTTLE_UNAVAILABLE, Method.PASSWORD, username, backend=identity.backend)
        try:
            recorded = self._emit(
                2, Outcome.ACCEPTED, Reason.OK, Method.PASSWORD, username, backend=identity.backend, detail=messages
            )
        except BaseException:
            self._count(True, *who)  # an interrupt in a sink: no identity
            raise
        if not recorded and cfg.audit.required:
            self._fail(2, Reason.AUDIT_FAILED, Method.PASSWORD, username, backend=identity.backend)
        if not (cancel or Cancel()).commit(partial(self._take, identity)):
            self._record_failure(username)
            self._fail(2, Reason.CANCELLED, *who, backend=identity.backend)
        return identity

    def _take(self, identity: Identity) -> None:
        self._identity, self._state = identity, SessionState.AUTHENTICATED

    def _record_failure(self, username: str | None) -> None:
        try:
            lockout = self._auth.throttle.record_failure(username, self.peer)
        except StoreError as exc:
            log.error("throttle: cannot record failure: %s", exc)
            return
        if lockout is not None:
            log.warning("throttle: %s locked out until %.0f", lockout.key, lockout.until)
