"""The ``ldap`` backend object: auth, account and key-source roles over the
connection pools.  Options and behaviour are documented in
:mod:`nxauth.backends.ldap`."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, final
from urllib.parse import unquote, urlsplit

import nxauth.backends.ldap.filter as filters
from nxauth.backends.ldap import ad, wire
from nxauth.backends.ldap.config import Settings
from nxauth.backends.ldap.connection import (
    LdapTimeout,
    Link,
    LinkError,
    Pool,
    ProtocolViolation,
    SearchResult,
    ServerSet,
    VerifiedTls,
    parse_uri,
)
from nxauth.backends.ldap.escape import check_ad_logon_name
from nxauth.backends.ldap.groups import Group, GroupResolver, matches
from nxauth.errors import BackendError, KeyFormatError
from nxauth.model import Attempt, Identity, Reason, Secret, Verdict
from nxauth.usernames import InvalidUsername, escape_for_log, normalize_username

if TYPE_CHECKING:
    from nxauth.keys.authorized_keys import AuthorizedKey

__all__ = ["LdapBackend", "build_ldap_backend"]

log = logging.getLogger("nxauth.backends.ldap")

#: Verdicts of a successful ``authenticate`` kept for the ``check_account``
#: call of the same session that follows it (the account stack runs right after).
RECENT_TTL: Final = 60.0
RECENT_MAX: Final = 10_000
#: Generic account-state attributes (operational: only returned when asked for).
GENERIC_STATE: Final = ("pwdAccountLockedTime", "nsAccountLock")
PERMANENT_LOCK: Final = b"000001010000Z"
#: Non-49 bind result codes that say something about the account.
BIND_CODES: Final = {
    19: (Reason.ACCOUNT_LOCKED, "ldap-result=19"),  # constraint violation; 389-ds: retry limit exceeded
    50: (Reason.DENIED, "ldap-result=50"),  # insufficient access
    53: (Reason.DENIED, "ldap-result=53"),  # unwilling to perform; 389-ds / FreeIPA: account inactivated
}


def _kebab(name: str) -> str:
    return "".join(f"-{c.lower()}" if c.isupper() else c for c in name)


def ppolicy_word(error: str) -> str:
    """``ppolicy:password-expired`` for the ppolicy error ``passwordExpired``."""
    return f"ppolicy:{_kebab(error)}"


#: The detail words of an ldap backend's verdicts (see nxauth.details): fixed
#: words of nxauth's, never the server's text (which may echo the password).
DETAIL_WORDS: Final = frozenset(
    {
        *ad.DETAIL_WORDS,
        *(word for _, word in BIND_CODES.values()),
        *(ppolicy_word(error) for error in wire.PPOLICY_ERRORS.values()),
        "ldap-result-other",
        "bind-referral",
        "pwd-account-locked-time",
        "ns-account-lock",
        "member-of-denied-group",
        "not-in-required-group",
        "empty-password",
        "nul-in-password",
        "invalid-username",
        "no-entry",
        "entry-unreadable",
        "no-user-base",
        "ldap-timeout",
        "ldap-error",
        "ldap-protocol-violation",
        "username-attribute-missing",
        "username-attribute-multivalued",
        "username-attribute-not-utf8",
        "username-attribute-differs",
    }
)


@final
class LdapBackend:
    """An ``ldap`` backend instance (see :mod:`nxauth.backends.ldap`)."""

    audit_details = DETAIL_WORDS

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        canonical: Callable[[str], str] = normalize_username,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self._clock = clock
        self._canonical = canonical
        self._servers = ServerSet(settings.servers, selection=settings.selection, retry_after=settings.retry_after)
        tls = VerifiedTls(settings.ssl_context) if settings.ssl_context is not None else None
        pool_options: dict[str, Any] = {
            "connect_timeout": settings.connect_timeout,
            "size": settings.pool_size,
            "lifetime": settings.connection_lifetime,
        }
        self._tls = tls
        self._service = Pool("service", self._servers, tls, prepare=self._service_bind, **pool_options)
        self._users = Pool("user binds", self._servers, tls, bind_first=True, **pool_options)
        self._groups = GroupResolver(settings.groups, active_directory=settings.active_directory)
        self._controls: tuple[tuple[str, bool, bytes | None], ...] = (
            ((wire.PPOLICY_OID, False, None),) if settings.password_policy else ()
        )
        wanted = [settings.username_attribute, *(a for a in settings.attributes if a.lower() != "dn")]
        wanted += self._groups.user_attributes()
        wanted += ad.AD_STATE_ATTRIBUTES if settings.active_directory else GENERIC_STATE
        self._entry_attributes = tuple(dict.fromkeys(wanted))
        # the entry is always read after the bind: its username attribute is
        # the name the directory stores, which the identity gets (see
        # _stored_name); AD's account state is read as well (defence in depth)
        self._recent: OrderedDict[tuple[str, str], tuple[float, Verdict]] = OrderedDict()
        self._recent_lock = threading.Lock()

    def __repr__(self) -> str:
        servers = ", ".join(s.uri for s in self.settings.servers)
        return f"LdapBackend(name={self.name!r}, mode={self.settings.mode!r}, servers=[{servers}])"

    def close(self) -> None:
        """Close every pooled connection."""
        self._service.close()
        self._users.close()

    # ------------------------------------------------------------ pools

    def _deadline(self) -> float:
        return time.monotonic() + self.settings.operation_timeout

    def _service_bind(self, link: Link, deadline: float) -> None:
        settings = self.settings
        if settings.bind_dn is None or settings.bind_password is None:
            return  # anonymous
        result = link.bind(settings.bind_dn, settings.bind_password.reveal_bytes(), deadline)
        if not result.ok:
            log.error("ldap %s: the service account bind failed with code %d", self.name, result.code)
            raise BackendError(f"service account bind failed with {result.describe()}")

    def _searcher(self, link: Link, deadline: float) -> Callable[..., SearchResult]:
        def search(base: str, scope: int, condition: filters.Filter, attributes: Sequence[str]) -> SearchResult:
            return self._search(link, base, scope, condition.encode(), attributes, deadline=deadline)

        return search

    def _search(
        self,
        link: Link,
        base: str,
        scope: int,
        filter_ber: bytes,
        attributes: Sequence[str],
        *,
        deadline: float,
        size_limit: int = 0,
    ) -> SearchResult:
        result = link.search(base, scope, filter_ber, attributes, deadline, size_limit=size_limit)
        if self.settings.referrals and (result.references or result.result.code == 10):
            return self._follow(
                result, base, scope, filter_ber, attributes=attributes, deadline=deadline, size_limit=size_limit
            )
        return result

    def _follow(
        self,
        first: SearchResult,
        base: str,
        scope: int,
        filter_ber: bytes,
        *,
        attributes: Sequence[str],
        deadline: float,
        size_limit: int,
    ) -> SearchResult:
        """Chase referrals one level deep, on new connections to the servers
        they name, with the same TLS policy and the service account."""
        entries = list(first.entries)
        final_result = first.result
        urls = list(first.references) + list(first.result.referrals if first.result.code == 10 else ())
        for url in urls[:10]:
            parts = urlsplit(url)
            insecure = any(s.tls == "none" for s in self.settings.servers)
            try:
                spec = parse_uri(f"{parts.scheme}://{parts.netloc}", insecure=insecure)
            except ValueError:
                log.warning("ldap %s: ignoring a referral to another server", self.name)  # the URL is the server's text
                continue
            target = unquote(parts.path.lstrip("/")) or base
            try:  # a referral that cannot be chased leaves the answer incomplete: fail closed
                link = Link.open(spec, self._tls, connect_timeout=self.settings.connect_timeout, deadline=deadline)
                try:
                    self._service_bind(link, deadline)
                    result = link.search(target, scope, filter_ber, attributes, deadline, size_limit=size_limit)
                finally:
                    link.close()
            except (LinkError, LdapTimeout) as exc:  # not the pooled server's fault
                raise BackendError(f"a referral could not be followed ({type(exc).__name__})") from None
            entries.extend(result.entries)
            if first.result.code == 10:
                final_result = result.result
        return SearchResult(tuple(entries), (), final_result)

    # ------------------------------------------------------------ finding users

    def _bind_name(self, username: str) -> str:
        settings = self.settings
        if settings.mode == "dn":
            assert settings.dn_template is not None
            return settings.dn_template.fill(username)
        if settings.mode == "upn":
            return f"{username}@{settings.upn_suffix}"
        return f"{settings.netbios_domain}\\{username}"

    def _find(self, link: Link, username: str, deadline: float, attributes: Sequence[str]) -> wire.Entry | None:
        """The user's entry: a base read of the DN template, or the user
        filter under ``user_base`` (exactly one entry must match)."""
        settings = self.settings
        if settings.mode == "dn":
            dn = self._bind_name(username)
            result = self._search(link, dn, 0, _ANY_OBJECT, attributes, deadline=deadline)
            if result.result.code == 32:  # noSuchObject
                return None
            base = dn
        else:
            assert settings.user_base is not None
            base = settings.user_base
            condition = settings.user_filter.encode({"username": username.encode("utf-8")})
            result = self._search(
                link, base, settings.user_scope, condition, attributes, deadline=deadline, size_limit=2
            )
        if result.result.code == 4 or len(result.entries) > 1:  # sizeLimitExceeded
            raise BackendError(f"more than one entry under {base!r} matches the user: refusing to choose")
        if result.result.code == 32:
            raise BackendError(f"user_base {base!r} does not exist")
        if not result.result.ok:
            raise BackendError(f"user search failed with {result.result.describe()}")
        return result.entries[0] if result.entries else None

    # ------------------------------------------------------------ decisions

    def _bind_failure(self, result: wire.Result) -> Verdict | None:
        """None if the bind may count as a success, else the deny."""
        policy = None
        raw = result.controls.get(wire.PPOLICY_OID)
        if raw is not None:
            try:
                policy = wire.parse_ppolicy(raw)
            except wire.WireError:
                log.warning("ldap %s: malformed password policy control ignored", self.name)
        if result.ok:
            if policy is not None and policy.error in ("changeAfterReset", "passwordExpired"):
                return Verdict.deny(Reason.PASSWORD_EXPIRED, ppolicy_word(policy.error))
            if policy is not None and policy.grace_left is not None:
                log.warning("ldap %s: password expired, %d grace logins left", self.name, policy.grace_left)
            return None
        if result.code == 49:
            if self.settings.active_directory:
                reason, detail = ad.subcode_reason(result.message)
                return Verdict.deny(reason, detail)
            if policy is not None and policy.error == "accountLocked":
                return Verdict.deny(Reason.ACCOUNT_LOCKED, ppolicy_word("accountLocked"))
            if policy is not None and policy.error == "passwordExpired":
                return Verdict.deny(Reason.PASSWORD_EXPIRED, ppolicy_word("passwordExpired"))
            return Verdict.deny(Reason.BAD_PASSWORD, "invalid-credentials")
        if result.code == 10:
            return Verdict.deny(Reason.BACKEND_ERROR, "bind-referral")
        reason, word = BIND_CODES.get(result.code, (Reason.BACKEND_ERROR, "ldap-result-other"))
        log.warning("ldap %s: the bind failed with %s", self.name, result.describe())
        return Verdict.deny(reason, word)

    def _account_state(self, entry: wire.Entry) -> Verdict | None:
        if self.settings.active_directory:
            state = ad.account_state(entry, self._clock)
            return Verdict.deny(*state) if state is not None else None
        if entry.first("pwdAccountLockedTime") == PERMANENT_LOCK:
            return Verdict.deny(Reason.ACCOUNT_LOCKED, "pwd-account-locked-time")
        if (entry.first("nsAccountLock") or b"").strip().lower() == b"true":
            return Verdict.deny(Reason.DISABLED, "ns-account-lock")
        return None

    def _stored_name(self, entry: wire.Entry) -> str | Verdict:
        """The entry's one ``username_attribute`` value, or the deny: a
        directory's matching rules (case, width, spaces, compatibility forms)
        find the entry for look-alikes of its name, so the identity is the
        name read back, never the name typed.  Several values are several
        names for one account: refused."""
        values = entry.values(self.settings.username_attribute)
        if not values:
            return Verdict.deny(Reason.NAME_MISMATCH, "username-attribute-missing")
        if len(values) > 1:
            return Verdict.deny(Reason.NAME_MISMATCH, "username-attribute-multivalued")
        try:
            return values[0].decode("utf-8")
        except UnicodeDecodeError:
            return Verdict.deny(Reason.NAME_MISMATCH, "username-attribute-not-utf8")

    def _other_name(self, entry: wire.Entry, username: str) -> Verdict | None:
        """The deny when the entry found for ``username`` stores another
        name (the directory's matching rules are looser than nxauth's
        canonical form), before any bind; None when it is the same name.
        The core checks the reported name again after any allow."""
        stored = self._stored_name(entry)
        if isinstance(stored, Verdict):
            return stored
        if stored == username:
            return None
        try:
            same = self._canonical(stored) == username
        except InvalidUsername:
            same = False
        return None if same else Verdict.deny(Reason.NAME_MISMATCH, "username-attribute-differs")

    def _decide(self, entry: wire.Entry, groups: list[Group]) -> Verdict:
        """Account state, then deny_groups (deny wins), then require_groups;
        an allow reports the stored name (the core compares it with the
        canonical name)."""
        denied = self._account_state(entry)
        if denied is not None:
            return denied
        stored = self._stored_name(entry)
        if isinstance(stored, Verdict):
            return stored
        group_settings = self.settings.groups
        hit = matches(groups, group_settings.deny)
        if hit:
            return Verdict.deny(Reason.DENIED, "member-of-denied-group")
        if group_settings.require and not matches(groups, group_settings.require):
            return Verdict.deny(Reason.NOT_IN_GROUP, "not-in-required-group")
        attributes: dict[str, Any] = {}
        for name in self.settings.attributes:
            if name.lower() == "dn":
                attributes[name] = entry.dn
                continue
            values = entry.text(name)
            if values:
                attributes[name] = values[0] if len(values) == 1 else values
        names = {g.name for g in groups} if group_settings.in_identity else set()
        return Verdict.allow(
            username=stored, groups=names, attributes=MappingProxyType(attributes) if attributes else None
        )

    def _evaluate(self, link: Link, entry: wire.Entry, username: str, deadline: float) -> Verdict:
        groups: list[Group] = []
        if self.settings.groups.enabled:
            groups = self._groups.resolve(self._searcher(link, deadline), entry, username)
        return self._decide(entry, groups)

    # ------------------------------------------------------------ roles

    def authenticate(self, attempt: Attempt) -> Verdict:
        """Auth role: bind as the user, then check the account and groups."""
        username = attempt.username
        refused = self._refuse(username, attempt.password)
        if refused is not None:
            return refused
        deadline = self._deadline()
        try:
            verdict = self._authenticate(username, attempt.password, deadline)
        except LdapTimeout as exc:
            log.warning("ldap %s: timeout for user %s: %s", self.name, escape_for_log(username), exc)
            return Verdict.deny(Reason.TIMEOUT, "ldap-timeout")
        except ProtocolViolation as exc:
            log.warning("ldap %s: %s", self.name, exc)
            return Verdict.deny(Reason.BACKEND_ERROR, "ldap-protocol-violation")
        except BackendError as exc:
            log.warning("ldap %s: %s", self.name, exc)
            return Verdict.deny(Reason.BACKEND_ERROR, "ldap-error")
        if verdict.allowed and attempt.session_id:
            self._remember(attempt.session_id, username, verdict)
        return verdict

    def _refuse(self, username: str, password: Secret) -> Verdict | None:
        """Checks made before any traffic."""
        if not isinstance(password, Secret) or not password.reveal().strip():
            return Verdict.deny(Reason.EMPTY_PASSWORD, "empty-password")  # not sent to the directory
        if "\x00" in password.reveal():
            return Verdict.deny(Reason.INVALID_PASSWORD, "nul-in-password")
        if not username or any(ord(c) < 0x20 or ord(c) == 0x7F for c in username):
            return Verdict.deny(Reason.INVALID_USERNAME, "invalid-username")
        if self.settings.mode in ("upn", "downlevel"):
            why = check_ad_logon_name(username)
            if why is not None:
                return Verdict.deny(Reason.INVALID_USERNAME, "invalid-username")
        return None

    def _authenticate(self, username: str, password: Secret, deadline: float) -> Verdict:
        settings = self.settings
        as_user = settings.bind_dn is None  # no service account: read as the user just bound
        entry: wire.Entry | None = None
        bind_name = self._bind_name(username) if settings.mode != "search" else ""
        if settings.mode == "search" or not as_user:  # the entry can be read before the bind
            entry = self._service.run(
                lambda link: self._find(link, username, deadline, self._entry_attributes), deadline
            )
            if entry is None:
                return Verdict.deny(Reason.UNKNOWN_USER, "no-entry")
            different = self._other_name(entry, username)
            if different is not None:  # a look-alike the directory matched: the password is not tried
                return different
            bind_name = bind_name or entry.dn
        secret = password.reveal_bytes()

        def bind(link: Link) -> Verdict | wire.Entry | None:
            result = link.bind(bind_name, secret, deadline, self._controls)
            failure = self._bind_failure(result)
            if failure is not None:
                return failure
            if not as_user:
                return entry
            found = entry or self._find(link, username, deadline, self._entry_attributes)
            if found is None:
                return Verdict.deny(Reason.UNKNOWN_USER, "entry-unreadable")
            return self._evaluate(link, found, username, deadline)

        outcome = self._users.run(bind, deadline)
        if isinstance(outcome, Verdict):
            return outcome
        if outcome is None:  # entry to read with the service account
            return self._service.run(lambda link: self._lookup_and_evaluate(link, username, deadline), deadline)
        found_entry = outcome
        return self._service.run(lambda link: self._evaluate(link, found_entry, username, deadline), deadline)

    def _lookup_and_evaluate(self, link: Link, username: str, deadline: float) -> Verdict:
        entry = self._find(link, username, deadline, self._entry_attributes)
        if entry is None:
            return Verdict.deny(Reason.UNKNOWN_USER, "no-entry")
        return self._evaluate(link, entry, username, deadline)

    def _remember(self, session_id: str, username: str, verdict: Verdict) -> None:
        now = time.monotonic()
        with self._recent_lock:
            recent = self._recent
            recent[(session_id, username)] = (now + RECENT_TTL, verdict)
            recent.move_to_end((session_id, username))
            while recent and (len(recent) > RECENT_MAX or next(iter(recent.values()))[0] < now):
                recent.popitem(last=False)

    def _recall(self, session_id: str, username: str) -> Verdict | None:
        with self._recent_lock:
            item = self._recent.pop((session_id, username), None)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def check_account(self, identity: Identity) -> Verdict:
        """Account role: the entry exists, its state allows a login, and the
        group requirements hold.  Right after this backend's own successful
        ``authenticate`` in the same session, that decision is reused."""
        username = identity.username
        recalled = self._recall(identity.session_id, username) if identity.session_id else None
        if recalled is not None:
            return recalled
        if not username or any(ord(c) < 0x20 or ord(c) == 0x7F for c in username):
            return Verdict.deny(Reason.INVALID_USERNAME, "invalid-username")
        if self.settings.mode != "dn" and self.settings.user_base is None:
            return Verdict.deny(Reason.BACKEND_ERROR, "no-user-base")
        deadline = self._deadline()
        try:
            return self._service.run(lambda link: self._lookup_and_evaluate(link, username, deadline), deadline)
        except LdapTimeout:
            return Verdict.deny(Reason.TIMEOUT, "ldap-timeout")
        except ProtocolViolation as exc:
            log.warning("ldap %s: %s", self.name, exc)
            return Verdict.deny(Reason.BACKEND_ERROR, "ldap-protocol-violation")
        except BackendError as exc:
            log.warning("ldap %s: %s", self.name, exc)
            return Verdict.deny(Reason.BACKEND_ERROR, "ldap-error")

    def authorized_keys(self, account: str) -> list[AuthorizedKey]:
        """Key-source role: the ``sshPublicKey`` values (openssh-lpk) of the
        transport account's entry, as authorized_keys lines (options allowed).
        A line that does not parse is logged and skipped; a directory error
        raises :class:`nxauth.BackendError`."""
        from nxauth.keys.authorized_keys import parse_authorized_key

        if not account or any(ord(c) < 0x20 or ord(c) == 0x7F for c in account):
            return []
        if self.settings.mode != "dn" and self.settings.user_base is None:
            raise BackendError("the key-source role needs user_base")
        deadline = self._deadline()
        attribute = self.settings.key_attribute
        entry = self._service.run(lambda link: self._find(link, account, deadline, [attribute]), deadline)
        if entry is None:
            return []
        keys = []
        for index, raw in enumerate(entry.values(attribute), start=1):
            try:
                parsed = parse_authorized_key(raw.decode("utf-8").strip(), index)
            except (UnicodeDecodeError, KeyFormatError) as exc:
                log.warning(
                    "ldap %s: %s value %d of %s skipped: %s",
                    self.name,
                    attribute,
                    index,
                    escape_for_log(entry.dn, 200),
                    exc,
                )
                continue
            if parsed is not None:
                keys.append(parsed)
        return keys


_ANY_OBJECT: Final = filters.Filter("present", attr="objectClass").encode()


def build_ldap_backend(context: Any) -> LdapBackend:
    """The factory for kind ``ldap`` (see :mod:`nxauth.backends.ldap`)."""
    from nxauth.backends.ldap.config import read_settings

    usernames = context.config.usernames
    return LdapBackend(
        read_settings(context),
        clock=context.clock,
        canonical=partial(normalize_username, case=usernames.case, max_length=usernames.max_length),
    )
