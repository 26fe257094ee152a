"""Stage 1's decision, shared by the session and ``nxauth authorized-keys``:
is this key, for this account, from this address, allowed by a key source?

Pure apart from the key sources it asks; auditing, attempt counting and the
session's state are the caller's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

from nxauth.keys.policy import KeyPolicy, evaluate_key, lookup_blob
from nxauth.model import Reason, TransportGrant

if TYPE_CHECKING:
    from nxauth.config import TransportConfig
    from nxauth.keys.authorized_keys import AuthorizedKey
    from nxauth.keys.formats import PublicKey

__all__ = ["TransportDecision", "decide_transport"]

log = logging.getLogger("nxauth")


@final
@dataclass(frozen=True, slots=True)
class TransportDecision:
    """A grant (and the entry that allowed it), or why not."""

    grant: TransportGrant | None
    reason: Reason
    backend: str | None = None
    detail: str = ""
    entry: AuthorizedKey | None = None
    invalid_user: bool = False


def _find(source: object, account: str, lookup: bytes) -> list[AuthorizedKey]:
    keys = source.authorized_keys(account)  # type: ignore[attr-defined]
    finder = getattr(keys, "find", None)
    if callable(finder):
        return list(finder(lookup))
    return [entry for entry in keys if entry.key.blob == lookup]


def decide_transport(
    cfg: TransportConfig,
    sources: Mapping[str, object],
    account: str,
    key: PublicKey,
    *,
    peer_host: str | None,
    now: float,
    method: str = "publickey",
    signature_flags: int | None = None,
    defer_source: bool = False,
) -> TransportDecision:
    """Ask the configured key sources in order; the first that allows the key
    grants.  A failing source contributes nothing (fail closed); the first
    policy refusal is the most precise reason to report.  ``defer_source``:
    see :func:`nxauth.keys.policy.evaluate_key`."""
    if account != cfg.account:
        return TransportDecision(None, Reason.WRONG_ACCOUNT, invalid_user=True)
    policy = KeyPolicy(allowed_types=cfg.allowed_key_types, rsa_min_bits=cfg.rsa_min_bits)
    lookup = lookup_blob(key)
    refused: tuple[Reason, str, str] | None = None
    broken: tuple[Reason, str, str] | None = None
    for name in cfg.key_sources:
        try:
            candidates = _find(sources[name], account, lookup)
            decision = evaluate_key(
                policy,
                key,
                candidates,
                account=account,
                peer_host=peer_host,
                now=now,
                signature_flags=signature_flags,
                defer_source=defer_source,
            )
        except Exception as exc:  # noqa: BLE001 - a failing source contributes nothing: fail closed
            log.warning("key source %s failed: %s: %s", name, type(exc).__name__, exc)
            broken = broken or (Reason.BACKEND_ERROR, name, f"{type(exc).__name__}: {str(exc)[:200]}")
            continue
        if decision.allowed and decision.entry is not None:
            grant = TransportGrant(
                account=account,
                key_type=key.key_type,
                fingerprint=key.fingerprint,
                source=name,
                method=method,
                comment=decision.entry.key.comment or key.comment,
                forced_command=decision.forced_command,
                restrictions=decision.restrictions,
                options=decision.options,
                expires=decision.expires,
                certificate_id=decision.certificate_id,
                granted_at=now,
            )
            return TransportDecision(grant, Reason.OK, name, entry=decision.entry)
        if decision.reason is not Reason.UNKNOWN_KEY:
            refused = refused or (decision.reason, name, decision.detail)
    outcome = refused or broken
    if outcome is None:
        return TransportDecision(None, Reason.UNKNOWN_KEY, detail=key.describe())
    reason, backend, detail = outcome
    return TransportDecision(None, reason, backend, detail)
