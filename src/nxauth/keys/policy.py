"""The stage-1 decision: may this SSH key open the transport, and on what terms?

:func:`evaluate_key` applies what sshd applies to an authorized_keys match
(auth2-pubkeyfile.c, auth-options.c) plus nxauth's key policy: allowed key
types, a minimum RSA size, never DSA.  It is pure: the caller looks the key
up (:func:`lookup_blob`) and passes the entries found, the peer address and
the time.  Every unexpected condition is a refusal.

Where nxauth is stricter than sshd, it says so:

- a certificate without principals (valid for anybody in sshd) is refused;
- ``verify-required`` on an entry for a key that is not a security key
  refuses, since such a key can never prove user verification; and so does
  ``verify-required`` when the caller neither has the signature's flags nor
  enforces them itself (``can_verify_user=False``);
- a ``source-address`` list with an invalid entry refuses even when a later
  entry would match.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, NamedTuple, final

from nxauth.errors import KeyFormatError
from nxauth.keys.authorized_keys import AuthorizedKey
from nxauth.keys.formats import CERT_TYPE_USER, FOREVER, Certificate, PublicKey
from nxauth.keys.patterns import match_from, match_source_address, valid_source_address
from nxauth.keys.wire import DSS, PLAIN_KEY_TYPES, RSA, SK_USER_PRESENCE, SK_USER_VERIFIED, Reader
from nxauth.model import Reason

__all__ = ["DEFAULT_KEY_TYPES", "KeyDecision", "KeyPolicy", "evaluate_key", "lookup_blob"]

#: every supported plain key type except ssh-dss
DEFAULT_KEY_TYPES: Final = PLAIN_KEY_TYPES - {DSS}
_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
#: certificate extension -> the restriction its absence imposes
_PERMIT_EXTENSIONS: Final = {
    "permit-agent-forwarding": "no-agent-forwarding",
    "permit-port-forwarding": "no-port-forwarding",
    "permit-pty": "no-pty",
    "permit-user-rc": "no-user-rc",
    "permit-X11-forwarding": "no-x11-forwarding",
}


@final
@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """Which keys may be used at all.  ``allowed_types`` names plain key types (``None``: every
    supported type but ``ssh-dss``, which is always refused); for a certificate both the certified
    key and the CA key must pass."""

    allowed_types: frozenset[str] | None = None
    rsa_min_bits: int = 2048


@final
class KeyDecision(NamedTuple):
    """What :func:`evaluate_key` decided.  ``detail`` is precise text for the audit trail;
    ``entry`` is the entry that allowed the key (or the first one that refused it).

    The keys layer's own result (stage 1's is :class:`nxauth.core.stage1.TransportDecision`),
    immutable; a named tuple because making a frozen dataclass is a cost that
    ``nxauth authorized-keys``, started by sshd on every login, pays at each start."""

    allowed: bool
    reason: Reason
    detail: str = ""
    entry: AuthorizedKey | None = None
    forced_command: str | None = None
    restrictions: frozenset[str] = frozenset()
    options: Mapping[str, Any] = _EMPTY
    expires: float | None = None
    certificate_id: str | None = None


def lookup_blob(key: PublicKey) -> bytes:
    """The blob a key source indexes on: the key's own blob, or for a certificate its CA's."""
    cert = key.certificate
    return cert.signature_key.blob if cert is not None else key.blob


def _refuse(reason: Reason, detail: str, entry: AuthorizedKey | None = None) -> KeyDecision:
    return KeyDecision(False, reason, detail, entry)


def _type_refusal(policy: KeyPolicy, key: PublicKey, role: str) -> KeyDecision | None:
    base = key.base_type
    allowed = DEFAULT_KEY_TYPES if policy.allowed_types is None else policy.allowed_types
    if base == DSS:
        return _refuse(Reason.KEY_TYPE_REFUSED, f"{role} is a DSA key ({key.fingerprint}); DSA is never accepted")
    if base not in allowed:
        return _refuse(Reason.KEY_TYPE_REFUSED, f"{role} type {base} not allowed ({key.fingerprint})")
    if base == RSA and key.bits < policy.rsa_min_bits:
        return _refuse(
            Reason.KEY_TOO_WEAK, f"{role} is RSA {key.bits} bits, below {policy.rsa_min_bits} ({key.fingerprint})"
        )
    return None


class _CertTerms:
    """What a valid user certificate contributes: from its critical options and extensions.
    (A plain class: a dataclass costs ``nxauth authorized-keys`` its making on every run.)"""

    __slots__ = ("force_command", "no_touch_required", "restrictions", "source_address", "verify_required")

    def __init__(self) -> None:
        self.force_command: str | None = None
        self.source_address: str | None = None
        self.verify_required = False
        self.no_touch_required = False
        self.restrictions: frozenset[str] = frozenset()


def _inner_string(name: str, data: bytes) -> str:
    r = Reader(data, f"critical option {name}")
    value = r.text()
    r.done()
    return value


def _check_certificate(policy: KeyPolicy, cert: Certificate, now: float) -> KeyDecision | _CertTerms:
    """Checks that depend on the certificate only (not on the entry)."""
    ca = cert.signature_key
    if cert.cert_type != CERT_TYPE_USER:
        return _refuse(Reason.CERTIFICATE_INVALID, f"not a user certificate (type {cert.cert_type})")
    if ca.is_certificate:
        return _refuse(Reason.CERTIFICATE_INVALID, "the CA key is itself a certificate")
    refusal = _type_refusal(policy, ca, "CA key")
    if refusal is not None:
        return refusal
    if not cert.verify():
        return _refuse(Reason.CERTIFICATE_INVALID, f"bad CA signature on certificate {cert.describe()}")
    if now < cert.valid_after:
        return _refuse(Reason.CERTIFICATE_INVALID, f"certificate not valid before {cert.valid_after}")
    if now >= cert.valid_before:
        return _refuse(Reason.KEY_EXPIRED, f"certificate expired at {cert.valid_before}")
    if not cert.principals:
        return _refuse(Reason.CERTIFICATE_INVALID, "certificate has no principals (wildcard certificates refused)")
    terms = _CertTerms()
    try:
        for name, data in cert.critical_options_raw:
            if name == "force-command":
                terms.force_command = _inner_string(name, data)
            elif name == "source-address":  # syntax checked now, as sshd does, even if the match is deferred
                terms.source_address = _inner_string(name, data)
                if not valid_source_address(terms.source_address):
                    return _refuse(Reason.CERTIFICATE_INVALID, "certificate source-address is invalid")
            elif name == "verify-required" and not data:
                terms.verify_required = True
            else:
                return _refuse(Reason.CERTIFICATE_INVALID, f"unsupported critical option {name[:64]!r}")
    except KeyFormatError as exc:
        return _refuse(Reason.CERTIFICATE_INVALID, exc.detail)
    permitted: set[str] = set()
    for name, data in cert.extensions_raw:
        if name in _PERMIT_EXTENSIONS or name == "no-touch-required":
            if data:
                return _refuse(Reason.CERTIFICATE_INVALID, f"extension {name} carries data")
            permitted.add(name)
    terms.no_touch_required = "no-touch-required" in permitted
    terms.restrictions = frozenset(r for ext, r in _PERMIT_EXTENSIONS.items() if ext not in permitted)
    return terms


def _check_entry(
    entry: AuthorizedKey,
    key: PublicKey,
    terms: _CertTerms | None,
    *,
    account: str,
    peer_host: str | None,
    now: float,
    signature_flags: int | None,
    defer_source: bool = False,
    can_verify_user: bool = True,
) -> KeyDecision:
    opts = entry.options
    check_source = peer_host is not None or not defer_source
    cert = key.certificate
    if opts.expiry_time is not None and not now <= opts.expiry_time:  # NaN counts as expired
        return _refuse(Reason.KEY_EXPIRED, f"expiry-time {opts.expiry_time:.0f} passed (line {entry.lineno})", entry)
    if opts.principals is not None and not opts.cert_authority:  # auth_authorise_keyopts: denied
        return _refuse(Reason.KEY_FORMAT, f"principals= on a line without cert-authority (line {entry.lineno})", entry)
    if opts.from_patterns is not None and check_source:
        if peer_host is None:
            return _refuse(Reason.SOURCE_REFUSED, "from= set but the peer address is unknown", entry)
        if not match_from(opts.from_patterns, peer_host):
            return _refuse(
                Reason.SOURCE_REFUSED, f"{peer_host[:64]} not permitted by from= (line {entry.lineno})", entry
            )
    forced = opts.command
    if cert is not None and terms is not None:
        if opts.principals is not None:
            wanted = {p for p in opts.principals if p}
            if not wanted.intersection(cert.principals):
                return _refuse(Reason.WRONG_ACCOUNT, "no certificate principal is listed in principals=", entry)
        elif account not in cert.principals:
            return _refuse(Reason.WRONG_ACCOUNT, f"certificate not valid for account {account[:100]!r}", entry)
        if terms.source_address is not None and check_source:
            if peer_host is None:
                return _refuse(Reason.SOURCE_REFUSED, "certificate source-address set, peer address unknown", entry)
            matched = match_source_address(terms.source_address, peer_host)
            if matched < 0:
                return _refuse(Reason.CERTIFICATE_INVALID, "certificate source-address is invalid", entry)
            if matched == 0:
                return _refuse(Reason.SOURCE_REFUSED, f"{peer_host[:64]} not in certificate source-address", entry)
        if terms.force_command is not None:
            if forced is not None and forced != terms.force_command:
                return _refuse(Reason.CERTIFICATE_INVALID, "command= and certificate force-command differ", entry)
            forced = terms.force_command
    no_touch = opts.no_touch_required and (terms is None or terms.no_touch_required)
    verify_required = opts.verify_required or (terms is not None and terms.verify_required)
    if verify_required and not key.is_security_key:
        return _refuse(Reason.KEY_TYPE_REFUSED, "verify-required needs a security key", entry)
    if verify_required and signature_flags is None and not can_verify_user:
        return _refuse(
            Reason.KEY_TYPE_REFUSED,
            f"verify-required, but the signature's user-verification flag cannot be checked here (line {entry.lineno})",
            entry,
        )
    if key.is_security_key and signature_flags is not None:
        if not no_touch and not signature_flags & SK_USER_PRESENCE:
            return _refuse(Reason.BAD_SIGNATURE, "security key signature without user presence", entry)
        if verify_required and not signature_flags & SK_USER_VERIFIED:
            return _refuse(Reason.BAD_SIGNATURE, "security key signature without user verification", entry)
    return _allow(entry, key, terms, forced, no_touch=no_touch, verify=verify_required)


def _allow(
    entry: AuthorizedKey, key: PublicKey, terms: _CertTerms | None, forced: str | None, *, no_touch: bool, verify: bool
) -> KeyDecision:
    opts = entry.options
    options = opts.as_mapping()
    restrictions = opts.restrictions
    expires = opts.expiry_time
    cert = key.certificate
    detail = f"{key.describe()} line {entry.lineno}"
    if forced is not None:
        options["command"] = forced
    if key.is_security_key:
        options["no-touch-required"] = no_touch
        options["verify-required"] = verify
    if cert is not None and terms is not None:
        restrictions |= terms.restrictions
        if cert.valid_before != FOREVER:
            expires = float(cert.valid_before) if expires is None else min(expires, float(cert.valid_before))
        options["certificate"] = {
            "key-id": cert.key_id,
            "serial": cert.serial,
            "principals": list(cert.principals),
            "valid-after": cert.valid_after,
            "valid-before": cert.valid_before,
            "ca": cert.signature_key.describe(),
            "critical-options": dict(cert.critical_options),
            "extensions": sorted(cert.extensions),
        }
        if terms.source_address is not None:
            options["source-address"] = terms.source_address
        detail += " " + cert.describe()
    return KeyDecision(
        allowed=True,
        reason=Reason.OK,
        detail=detail,
        entry=entry,
        forced_command=forced,
        restrictions=frozenset(restrictions),
        options=MappingProxyType(options),
        expires=expires,
        certificate_id=cert.key_id if cert is not None else None,
    )


def evaluate_key(
    policy: KeyPolicy,
    key: PublicKey,
    candidates: Iterable[AuthorizedKey],
    *,
    account: str,
    peer_host: str | None,
    now: float,
    signature_flags: int | None = None,
    defer_source: bool = False,
    can_verify_user: bool = True,
) -> KeyDecision:
    """Decide whether ``key`` may be used by ``account`` from ``peer_host`` at ``now``.

    ``candidates`` are the entries whose key blob equals ``lookup_blob(key)``
    (others are ignored).  A plain key matches only entries without
    ``cert-authority``, a certificate only entries with it.  The first entry
    whose options all pass wins; if none does, the decision carries the
    reason of the first entry that failed (``UNKNOWN_KEY`` if none matched).
    ``signature_flags`` are the flags of the security-key signature, when
    the caller has them: then user presence is required unless
    ``no-touch-required``, and user verification if ``verify-required``.
    Without them those requirements travel in ``options`` for the
    integration to enforce; an integration that cannot (``can_verify_user``
    false: it cannot see the user-verification flag) has an entry or a
    certificate with ``verify-required`` refuse the key.  With ``defer_source`` and no ``peer_host``, the
    ``from=`` and certificate ``source-address`` checks are left to the
    caller (sshd enforces both on the line ``nxauth authorized-keys``
    prints); otherwise an unknown peer fails them.
    """
    try:
        return _evaluate(
            policy,
            key,
            candidates,
            account=account,
            peer_host=peer_host,
            now=now,
            signature_flags=signature_flags,
            defer_source=defer_source,
            can_verify_user=can_verify_user,
        )
    except Exception as exc:  # noqa: BLE001 - fail closed: a surprise is a refusal, never an allow
        return _refuse(Reason.DENIED, f"key policy error: {type(exc).__name__}: {str(exc)[:200]}")


def _evaluate(
    policy: KeyPolicy,
    key: PublicKey,
    candidates: Iterable[AuthorizedKey],
    *,
    account: str,
    peer_host: str | None,
    now: float,
    signature_flags: int | None,
    defer_source: bool = False,
    can_verify_user: bool = True,
) -> KeyDecision:
    if not isinstance(policy, KeyPolicy) or not isinstance(key, PublicKey) or not isinstance(account, str):
        return _refuse(Reason.DENIED, "evaluate_key called with wrong argument types")
    if isinstance(now, bool) or not isinstance(now, int | float) or math.isnan(now):
        return _refuse(Reason.DENIED, "evaluate_key needs a numeric time")
    if peer_host is not None and not isinstance(peer_host, str):
        return _refuse(Reason.DENIED, "peer_host must be a str or None")
    if signature_flags is not None and (
        isinstance(signature_flags, bool) or not isinstance(signature_flags, int) or not 0 <= signature_flags <= 0xFF
    ):
        return _refuse(Reason.DENIED, "signature_flags must be a byte (0-255) or None")
    cert = key.certificate
    want = lookup_blob(key)
    found = [c for c in candidates if isinstance(c, AuthorizedKey) and c.key.blob == want]
    usable = [c for c in found if c.options.cert_authority == (cert is not None)]
    if not usable:
        if found:
            what = "without cert-authority" if cert is not None else "with cert-authority only"
            return _refuse(Reason.UNKNOWN_KEY, f"{key.describe()} matches entries {what}", found[0])
        return _refuse(Reason.UNKNOWN_KEY, f"no entry for {key.describe()}")
    refusal = _type_refusal(policy, key, "key")
    terms: _CertTerms | None = None
    if refusal is None and cert is not None:
        checked = _check_certificate(policy, cert, now)
        if isinstance(checked, KeyDecision):
            refusal = checked
        else:
            terms = checked
    if refusal is not None:
        return KeyDecision(False, refusal.reason, refusal.detail, usable[0])
    first: KeyDecision | None = None
    for entry in usable:
        decision = _check_entry(
            entry,
            key,
            terms,
            account=account,
            peer_host=peer_host,
            now=now,
            signature_flags=signature_flags,
            defer_source=defer_source,
            can_verify_user=can_verify_user,
        )
        if decision.allowed:
            if decision.entry is None or decision.entry.key.blob != want:  # belt and braces
                return _refuse(Reason.DENIED, "internal error: allowed entry does not match the key")
            return decision
        first = first or decision
    assert first is not None
    return first
