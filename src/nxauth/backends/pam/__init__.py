"""The ``pam`` backend: stage 2 against the system's PAM stack.

nxauth behaves as a correct PAM application, the way sshd does:

- **One handle per login.**  The auth role runs ``pam_start``, sets
  ``PAM_RHOST`` (the client's address; sshd's ``UNKNOWN`` when the host gave
  none, never unset, so ``pam_access`` never sees a console login) and
  ``PAM_TTY`` (``nxauth``), then ``pam_authenticate`` with
  ``PAM_DISALLOW_NULL_AUTHTOK`` and, unless ``account = false``,
  ``pam_acct_mgmt`` on the same handle, then ``pam_end``.  It never calls
  ``pam_setcred``, ``pam_open_session`` or ``pam_chauthtok``: nxauth
  authenticates; the program started for the user opens the session.
- **The account role** (``check_account``) runs ``pam_acct_mgmt``.  When
  this backend authenticated the same login with ``account = true`` (the
  default), pam_acct_mgmt already passed on that login's handle and the
  account role takes that result (once, within 60 s): ``pam`` in both
  stacks is one handle per login, as in sshd.  Otherwise (another backend
  authenticated: LDAP, the password database; or ``account = false``) it
  opens a handle of its own and calls ``pam_acct_mgmt`` only.
- **Conversation.**  The first echo-off prompt gets the password; later
  echo-off prompts (a one-time code from pam_google_authenticator) and every
  echo-on prompt are relayed through ``attempt.ask`` (an echo-on prompt never
  gets the password).  Info and error messages go to the audit trail
  (``attempt.info``).  Without a conversation a further prompt fails the
  login with ``conversation-unavailable``.
- **Canonical name.**  PAM modules may rewrite ``PAM_USER``; the name PAM
  ends with is looked up through NSS (``getpwnam``: the account's own
  spelling) and must still be the canonical name the allowlist and the
  throttle used, or the login is denied with ``name-mismatch``.
- **Bad input** (NUL, a string the configured encoding cannot hold, an
  oversized answer) is denied before libpam is called.

Return codes map to :class:`nxauth.Reason` as in :data:`REASONS`; anything
else is ``backend-error`` with libpam's text in the detail.  ``PAM_AUTH_ERR``
for a user whose shadow password is locked (``usermod -L``; readable by root
only) is reported as ``account-locked``.  ``usermod -L`` locks the password,
not the account: pam_unix's account step still passes, so ``check_account``
alone allows such a user (lock the account with ``usermod -e 1``).

An allowed login's verdict carries the NSS name and the attributes
``uid``, ``gid``, ``home`` and ``shell``.  A denied login has never
reached ``pam_setcred``; the fail delay of a module (pam_unix: 2 s unless
``nodelay``) is spent in the worker thread, never on an event loop.

Why nxauth drives libpam itself rather than calling ``pam.authenticate``
is explained in :mod:`nxauth.backends.pam.libpam`.

Options (``[backends.NAME]`` with ``kind = "pam"``):

``service``   the PAM service name (default ``nxauth``: ``/etc/pam.d/nxauth``,
              which ``nxauth pam-service`` writes)
``encoding``  how names, passwords and answers are encoded (default ``utf-8``)
``account``   run ``pam_acct_mgmt`` after ``pam_authenticate`` (default true)
``nss``       ``require`` (default): the final user must exist in NSS;
              ``optional``: keep PAM's name when NSS does not know it
``library``   path of the libpam to load (default: the system's libpam);
              tests point it at ``libpam_wrapper.so``
"""

from __future__ import annotations

import codecs
import logging
import os
import pwd
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, final

from nxauth.errors import PluginError
from nxauth.model import UNKNOWN_PEER, Attempt, ConversationUnavailable, Identity, Peer, Reason, Verdict
from nxauth.plugins.hookspecs import hookimpl
from nxauth.usernames import InvalidUsername, escape_for_log, normalize_username

if TYPE_CHECKING:
    from nxauth.backends.pam.libpam import LibPam, Transaction
    from nxauth.plugins.registry import BackendContext, BackendRegistry

__all__ = ["DEFAULT_SERVICE", "PAM_TTY_NAME", "REASONS", "PamBackend", "build_pam_backend", "check_service_name"]

log = logging.getLogger("nxauth.backends.pam")

DEFAULT_SERVICE: Final = "nxauth"
#: The fixed ``PAM_TTY`` of every nxauth login (sshd uses ``ssh``).
PAM_TTY_NAME: Final = "nxauth"
#: Info and error messages kept per login (a chatty module cannot flood the trail).
MAX_MESSAGES: Final = 20

#: PAM return code name -> reason; any other code is ``backend-error``.
REASONS: Final[Mapping[str, Reason]] = {
    "PAM_AUTH_ERR": Reason.BAD_PASSWORD,
    "PAM_USER_UNKNOWN": Reason.UNKNOWN_USER,
    "PAM_ACCT_EXPIRED": Reason.ACCOUNT_EXPIRED,
    "PAM_NEW_AUTHTOK_REQD": Reason.PASSWORD_EXPIRED,
    "PAM_AUTHTOK_EXPIRED": Reason.PASSWORD_EXPIRED,
    "PAM_PERM_DENIED": Reason.RESTRICTED,
    "PAM_MAXTRIES": Reason.ACCOUNT_LOCKED,
    "PAM_CONV_ERR": Reason.CONVERSATION_FAILED,
}

_SERVICE_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")


def check_service_name(name: object) -> str:
    """Return ``name`` if it is a usable PAM service name (a file name in
    ``/etc/pam.d``: letters, digits, ``_ . + -``, not starting with a dot),
    else raise ``ValueError``."""
    if not isinstance(name, str) or not _SERVICE_NAME.fullmatch(name):
        raise ValueError("a PAM service name is 1 to 64 letters, digits, '_', '.', '+' or '-', not starting with '.'")
    return name


def _check_encoding(name: str) -> str:
    """The codec's canonical name; ``ValueError`` for an unknown codec or one
    that is not ASCII-compatible (libpam deals in NUL-terminated C strings)."""
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        raise ValueError(f"unknown encoding {name!r}") from None
    if "nxauth-Az09".encode(codec, "replace") != b"nxauth-Az09":
        raise ValueError(f"{codec} is not ASCII-compatible")
    return codec


@hookimpl
def nxauth_register_backends(registry: BackendRegistry) -> None:
    registry.add("pam", build_pam_backend)


def build_pam_backend(context: BackendContext) -> PamBackend:
    """The factory for kind ``pam``: reads and checks the options, loads libpam."""
    options = context.options
    service = options.string("service", DEFAULT_SERVICE)
    try:
        check_service_name(service)
    except ValueError as exc:
        raise context.error("service", str(exc)) from None
    encoding = options.string("encoding", "utf-8")
    try:
        _check_encoding(encoding)
    except ValueError as exc:
        raise context.error("encoding", str(exc)) from None
    usernames = context.config.usernames
    library = options.string("library")
    try:
        return PamBackend(
            service=service,
            encoding=encoding,
            account=options.boolean("account", True),
            nss=options.choice("nss", ("require", "optional"), "require"),
            library=library,
            canonical=lambda name: normalize_username(name, case=usernames.case, max_length=usernames.max_length),
            max_answer_bytes=context.config.session.max_password_bytes,
            name=context.name,
        )
    except OSError as exc:
        raise context.error("library", f"cannot load libpam from {library or 'the system'}: {exc}") from None


#: PAM return codes are small integers (Linux-PAM: 0 to 31)
_CODES: Final = range(64)


def _code_word(step: str, code: int) -> str:
    """``authenticate=7`` (PAM_AUTH_ERR), ``acct-mgmt=13``, ``set-item=…``."""
    return f"{step}={code}" if code in _CODES else f"{step}=other"


#: The detail words of a pam backend's verdicts (see nxauth.details): PAM
#: return codes and nxauth's words, never a module's text.
DETAIL_WORDS: Final = frozenset(
    {
        *(_code_word(step, code) for step in ("authenticate", "acct-mgmt", "set-item") for code in (*_CODES, -1)),
        "question-in-account-step",
        "unsupported-message-style",
        "no-conversation",
        "conversation-raised",
        "nul-in-answer",
        "answer-not-encodable",
        "answer-too-long",
        "username-not-encodable",
        "password-too-long",
        "nul-in-password",
        "password-not-encodable",
        "acct-mgmt-on-login-handle",
        "pam-start-failed",
        "pam-user-changed",
        "pam-user-unset",
        "pam-user-not-encodable",
        "pam-user-not-in-nss",
        "nss-name-not-encodable",
        "shadow-password-locked",
    }
)


@final
class PamBackend:
    """Authenticates users and checks accounts through libpam.  Thread-safe:
    every call opens its own PAM handle."""

    audit_details = DETAIL_WORDS

    def __init__(
        self,
        *,
        service: str = DEFAULT_SERVICE,
        encoding: str = "utf-8",
        account: bool = True,
        nss: str = "require",
        library: str | None = None,
        canonical: Callable[[str], str] | None = None,
        max_answer_bytes: int = 8192,
        name: str = "pam",
    ) -> None:
        import nxauth.backends.pam.libpam as _libpam

        self.service = check_service_name(service)
        self.encoding = _check_encoding(encoding)
        self.account = account
        if nss not in ("require", "optional"):
            raise ValueError("nss must be 'require' or 'optional'")
        self.nss = nss
        self.name = name
        self.max_answer_bytes = max_answer_bytes
        self._canonical = canonical or normalize_username
        self._service = service.encode("ascii")
        self._tty = PAM_TTY_NAME.encode("ascii")
        try:
            self._lib: LibPam = _libpam.load_libpam(library)
        except _libpam.PythonPamMissing as exc:
            raise PluginError(
                f"the pam backend needs python-pam >= 2.1 ({exc}): pip install 'nx-twostage-auth[pam]'",
                plugin="nxauth.backends.pam",
            ) from None
        except AttributeError as exc:  # a library without the pam_* functions
            raise OSError(str(exc)) from None
        pam = self._pam = _libpam.PAM
        self._reasons = {getattr(pam, code.removeprefix("PAM_")): reason for code, reason in REASONS.items()}
        self._shadow_locked = _libpam.shadow_password_locked
        self._accounted = _AccountMemo()

    def __repr__(self) -> str:
        return f"PamBackend(service={self.service!r}, library={self._lib.path!r})"

    # ------------------------------------------------------------ roles

    def authenticate(self, attempt: Attempt) -> Verdict:
        """pam_authenticate (then pam_acct_mgmt) on one handle for ``attempt``."""
        key = (attempt.session_id, attempt.username)
        self._accounted.forget(key)
        user = self._encode(attempt.username)
        if user is None:
            return Verdict.deny(Reason.INVALID_USERNAME, "username-not-encodable")
        secret = attempt.password.reveal()
        if len(secret) > self.max_answer_bytes:
            return Verdict.deny(Reason.INVALID_PASSWORD, "password-too-long")
        if "\x00" in secret:
            return Verdict.deny(Reason.INVALID_PASSWORD, "nul-in-password")
        try:
            password = bytearray(secret, self.encoding)
        except UnicodeError:
            return Verdict.deny(Reason.INVALID_PASSWORD, "password-not-encodable")
        finally:
            del secret
        if len(password) > self.max_answer_bytes:
            password[:] = bytes(len(password))
            return Verdict.deny(Reason.INVALID_PASSWORD, "password-too-long")
        conversation = _LoginConversation(self, password, attempt)
        try:
            verdict = self._authenticate(user, attempt, conversation)
        finally:
            conversation.wipe()
        if verdict.allowed and self.account and attempt.session_id:
            self._accounted.remember(key)
        return verdict

    def check_account(self, identity: Identity) -> Verdict:
        """pam_acct_mgmt for ``identity.username``: on a handle of its own,
        unless this backend authenticated the same login and already ran
        pam_acct_mgmt on that login's handle (then that result stands)."""
        if identity.backend == self.name and self._accounted.take((identity.session_id, identity.username)):
            return Verdict.allow(detail="acct-mgmt-on-login-handle")
        user = self._encode(identity.username)
        if user is None:
            return Verdict.deny(Reason.INVALID_USERNAME, "username-not-encodable")
        conversation = _AccountConversation(self)
        from nxauth.backends.pam.libpam import PamStartError

        try:
            with self._lib.start(self._service, user, conversation) as tx:
                failed = self._set_items(tx, identity.peer)
                if failed is not None:
                    return failed
                code = tx.acct_mgmt(0)
                final = tx.get_string_item(self._pam.USER) if code == self._pam.SUCCESS else None
                text = tx.strerror(code)
        except PamStartError as exc:
            log.warning("PAM service %s: %s", self.service, exc)
            return Verdict.deny(Reason.BACKEND_ERROR, "pam-start-failed")
        if code != self._pam.SUCCESS:
            # the module's messages are its free text: counted, not kept (see Attempt.info)
            log.info("PAM service %s: pam_acct_mgmt: %s (%d)", self.service, text, code)
            return Verdict.deny(self._reason(code, conversation.failure), _code_word("acct-mgmt", code))
        if final != user:
            return Verdict.deny(Reason.NAME_MISMATCH, "pam-user-changed")
        return Verdict.allow()

    # ------------------------------------------------------------ the auth role

    def _authenticate(self, user: bytes, attempt: Attempt, conversation: _LoginConversation) -> Verdict:
        from nxauth.backends.pam.libpam import PamStartError

        pam = self._pam
        try:
            with self._lib.start(self._service, user, conversation) as tx:
                failed = self._set_items(tx, attempt.peer)
                if failed is not None:
                    return failed
                step = "pam_authenticate"
                code = tx.authenticate(pam.DISALLOW_NULL_AUTHTOK)
                if code == pam.SUCCESS and self.account:
                    step = "pam_acct_mgmt"
                    code = tx.acct_mgmt(0)
                final = tx.get_string_item(pam.USER) if code == pam.SUCCESS else None
                text = tx.strerror(code)
        except PamStartError as exc:
            log.warning("PAM service %s: %s", self.service, exc)
            return Verdict.deny(Reason.BACKEND_ERROR, "pam-start-failed")
        if code == pam.SUCCESS:
            return self._identify(final, attempt.username)
        reason = self._reason(code, conversation.failure)
        log.info("PAM service %s: %s: %s (%d)", self.service, step, text, code)
        detail = _code_word("authenticate" if step == "pam_authenticate" else "acct-mgmt", code)
        if conversation.failure is not None:
            detail = conversation.failure[1]
        elif code == pam.AUTH_ERR and step == "pam_authenticate" and self._shadow_locked(user):
            reason = Reason.ACCOUNT_LOCKED
            detail = "shadow-password-locked"
        return Verdict.deny(reason, detail)

    def _identify(self, final: bytes | None, canonical: str) -> Verdict:
        """The name PAM ended with, through NSS, checked against ``canonical``."""
        if final is None:
            return Verdict.deny(Reason.BACKEND_ERROR, "pam-user-unset")
        try:
            name = final.decode(self.encoding)
        except UnicodeError:
            return Verdict.deny(Reason.NAME_MISMATCH, "pam-user-not-encodable")
        attributes: dict[str, Any] = {}
        try:
            entry = pwd.getpwnam(os.fsdecode(final))
        except (KeyError, ValueError):
            if self.nss == "require":
                return Verdict.deny(Reason.UNKNOWN_USER, "pam-user-not-in-nss")
        else:
            try:
                name = os.fsencode(entry.pw_name).decode(self.encoding)
            except UnicodeError:
                return Verdict.deny(Reason.NAME_MISMATCH, "nss-name-not-encodable")
            attributes = {"uid": entry.pw_uid, "gid": entry.pw_gid, "home": entry.pw_dir, "shell": entry.pw_shell}
        try:
            same = name == canonical or self._canonical(name) == canonical
        except InvalidUsername:
            same = False
        if not same:
            return Verdict.deny(Reason.NAME_MISMATCH, "pam-user-changed")
        return Verdict.allow(username=name, attributes=attributes)

    # ------------------------------------------------------------ helpers

    def _set_items(self, tx: Transaction, peer: Peer) -> Verdict | None:
        host = peer.host if peer.host else UNKNOWN_PEER.host
        for item, value in ((self._pam.RHOST, host.encode("ascii", "replace")), (self._pam.TTY, self._tty)):
            code = tx.set_item(item, value)
            if code != self._pam.SUCCESS:
                tx.status = code
                return Verdict.deny(Reason.BACKEND_ERROR, _code_word("set-item", code))
        return None

    def reason_for(self, code: int) -> Reason:
        """The :class:`nxauth.Reason` for a PAM return code (:data:`REASONS`;
        ``backend-error`` for any other code)."""
        return self._reasons.get(code, Reason.BACKEND_ERROR)

    def _reason(self, code: int, failure: tuple[Reason, str] | None) -> Reason:
        return failure[0] if failure is not None else self.reason_for(code)

    def _encode(self, text: str) -> bytes | None:
        if "\x00" in text:
            return None
        try:
            return text.encode(self.encoding)
        except UnicodeError:
            return None

    def _show(self, raw: bytes | None) -> str:
        if raw is None:
            return "(none)"
        return repr(escape_for_log(raw.decode(self.encoding, "replace")))


@final
class _AccountMemo:
    """Logins whose pam_acct_mgmt passed on the auth handle, by (session id,
    canonical name), so the same login's account role needs no second
    handle.  An entry is used once, within ``TTL`` seconds; at most ``LIMIT``
    are kept (entries pile up when the backend is in no account stack)."""

    TTL: Final = 60.0
    LIMIT: Final = 4096

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def remember(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = time.monotonic() + self.TTL
            while len(self._entries) > self.LIMIT:
                del self._entries[next(iter(self._entries))]

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def take(self, key: tuple[str, str]) -> bool:
        with self._lock:
            until = self._entries.pop(key, None)
        return until is not None and time.monotonic() < until


class _Conversation:
    """The part of a login's conversation both roles share: messages."""

    def __init__(self, backend: PamBackend) -> None:
        self._pam = backend._pam
        self._encoding = backend.encoding
        self.messages: list[str] = []
        self.dropped = 0
        self.failure: tuple[Reason, str] | None = None

    def note(self, style: int, raw: bytes) -> None:
        kind = "error" if style == self._pam.ERROR_MSG else "info"
        text = escape_for_log(raw.decode(self._encoding, "replace").strip(), 200, quoted=True)
        if len(self.messages) < MAX_MESSAGES:
            self.record(f"pam {kind}: {text}")
        else:
            self.dropped += 1

    def record(self, message: str) -> None:
        self.messages.append(message)

    def fail(self, reason: Reason, detail: str) -> None:
        if self.failure is None:
            self.failure = (reason, detail)


class _AccountConversation(_Conversation):
    """No user to ask in the account role: messages are kept, prompts fail."""

    def __call__(self, items: Sequence[tuple[int, bytes]]) -> list[bytearray | None]:
        pam = self._pam
        for style, raw in items:
            if style in (pam.ERROR_MSG, pam.TEXT_INFO):
                self.note(style, raw)
            else:
                self.fail(Reason.CONVERSATION_UNAVAILABLE, "question-in-account-step")
                raise _Refused
        return [None] * len(items)


class _LoginConversation(_Conversation):
    """The auth role's conversation: the password once, then the attempt's
    conversation; messages go to ``attempt.info``."""

    def __init__(self, backend: PamBackend, password: bytearray, attempt: Attempt) -> None:
        super().__init__(backend)
        self._password = password
        self._password_given = False
        self._attempt = attempt
        self._limit = backend.max_answer_bytes

    def record(self, message: str) -> None:
        self._attempt.info(message)
        self.messages.append(message)

    def wipe(self) -> None:
        self._password[:] = bytes(len(self._password))

    def __call__(self, items: Sequence[tuple[int, bytes]]) -> list[bytearray | None]:
        pam = self._pam
        answers: list[bytearray | None] = []
        try:
            for style, raw in items:
                if style == pam.PROMPT_ECHO_OFF and not self._password_given:
                    self._password_given = True
                    answers.append(self._password)
                elif style in (pam.PROMPT_ECHO_OFF, pam.PROMPT_ECHO_ON):
                    answers.append(self._ask(raw, echo=style == pam.PROMPT_ECHO_ON))
                elif style in (pam.ERROR_MSG, pam.TEXT_INFO):
                    self.note(style, raw)
                    answers.append(None)
                else:
                    self.fail(Reason.CONVERSATION_FAILED, "unsupported-message-style")
                    raise _Refused
        except BaseException:
            for answer in answers:
                if answer is not None and answer is not self._password:
                    answer[:] = bytes(len(answer))
            raise
        return answers

    def _ask(self, raw: bytes, *, echo: bool) -> bytearray:
        prompt = raw.decode(self._encoding, "replace")
        try:
            answer = self._attempt.ask(prompt, echo)
        except ConversationUnavailable:
            self.fail(Reason.CONVERSATION_UNAVAILABLE, "no-conversation")
            raise _Refused from None
        except Exception:  # noqa: BLE001 - the host's callback failed: the login fails
            self.fail(Reason.CONVERSATION_FAILED, "conversation-raised")
            raise _Refused from None
        value = answer.reveal()
        try:
            if "\x00" in value:
                self.fail(Reason.CONVERSATION_FAILED, "nul-in-answer")
                raise _Refused
            try:
                encoded = bytearray(value, self._encoding)
            except UnicodeError:
                self.fail(Reason.CONVERSATION_FAILED, "answer-not-encodable")
                raise _Refused from None
            if len(encoded) > self._limit:
                encoded[:] = bytes(len(encoded))
                self.fail(Reason.CONVERSATION_FAILED, "answer-too-long")
                raise _Refused
            return encoded
        finally:
            del value


class _Refused(Exception):
    """Internal: the conversation refuses; libpam gets ``PAM_CONV_ERR``."""
