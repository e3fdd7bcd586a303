"""Use cases: screening destinations against the sanctions list, refreshing the list, its status (admin).

Ports on ``Services``: ``sanctions`` (DynamoSanctionsStore: head / current / store / touch), ``sanctions_sources``
((label, url) pairs: the official list, then the operator's supplementary list), ``fetch_sanctions``
((url, label) -> SanctionsList), ``emit_metric`` (name, value, **dimensions), ``audit`` (for the block record),
``sanctions_when_unloaded`` ("block" | "allow").

Screening is called by the money-moving use cases BEFORE anything is reserved: a payout screens its destination
address, a Lightning payment the invoice's payee node. A hit appends a ``sanctions.blocked`` audit record, emits
the ``SanctionsHits`` metric (an alarm), and raises SANCTIONED_DESTINATION (403), whose message names no list.
"""
from __future__ import annotations

import logging
from typing import Any

from satflow.domain import errors
from satflow.domain.accounts import Principal
from satflow.domain.audit import AuditEntry
from satflow.domain.sanctions import (
    Kind,
    SanctionsList,
    SanctionsListConflict,
    SanctionsSourceError,
    merge_lists,
    normalise_address,
    normalise_node_pubkey,
    redact,
    refusal_reason,
)

from .accounts import require_admin
from .audit import record_admin_action
from .ports import Services

log = logging.getLogger(__name__)

BLOCKED_ACTION = "sanctions.blocked"
BLOCKED_MESSAGE = "destination is on a sanctions list"
WHEN_UNLOADED = ("block", "allow")
_MAX_CONTEXT = 120


# ------------------------------------------------------------------------------------------------ screening
def screen_address(svc: Services, address: str, *, actor: str, context: str) -> None:
    """Raise SanctionedDestination if the on-chain ``address`` is listed (any network; bech32 in any case).
    ``actor``: the sending account id; ``context``: what was being attempted, e.g. ``payout:<payout_id>``."""
    _screen(svc, "address", address, actor=actor, context=context)


def screen_node(svc: Services, pubkey: str, *, actor: str, context: str) -> None:
    """Raise SanctionedDestination if the Lightning node ``pubkey`` (66 hex) is listed."""
    _screen(svc, "node", pubkey, actor=actor, context=context)


def _screen(svc: Services, kind: Kind, value: str, *, actor: str, context: str) -> None:
    loaded = svc.sanctions.current() if svc.sanctions is not None else None
    if loaded is None:
        if svc.sanctions_when_unloaded == "allow":
            log.warning("sanctions screening skipped: no list loaded (SATFLOW_SANCTIONS_WHEN_UNLOADED=allow)")
            return
        log.error("sanctions screening unavailable: no list loaded; refusing the send (fail closed)")
        raise errors.SanctionsListUnavailable("sanctions screening is unavailable; retry later")
    entry = loaded.list.lookup(kind, value)
    if entry is None:
        return
    destination = (normalise_address(value) if kind == "address" else normalise_node_pubkey(value)) or value
    details = {"kind": kind, "destination": destination, "entry": entry, "list_version": loaded.head.version,
               "list_sha256": loaded.head.list_sha256, "context": str(context)[:_MAX_CONTEXT]}
    # The alert first: it must fire even if the audit append below fails.
    _metric(svc, "SanctionsHits", kind=kind)
    log.error("sanctioned destination blocked", extra={"actor": actor, **details})
    try:
        record_admin_action(svc, AuditEntry(at=svc.clock(), actor=actor, action=BLOCKED_ACTION,
                                            subject_ids=(actor,), details=details))
    except Exception:
        # The block stands whatever happens to its record; the error log above carries the same details.
        log.exception("sanctions block could not be audited", extra={"actor": actor, **details})
        _metric(svc, "SanctionsAuditFailures")
    raise errors.SanctionedDestination(BLOCKED_MESSAGE)


def _metric(svc: Services, name: str, **dimensions: str) -> None:
    if svc.emit_metric is None:
        return
    try:
        svc.emit_metric(name, 1, **dimensions)
    except Exception:  # a metrics failure must not change the outcome of a screening
        log.exception("could not emit metric %s", name)


# ------------------------------------------------------------------------------------------------ the refresh job
def refresh_sanctions_list(svc: Services, *, accept_shrink: bool = False) -> dict[str, Any]:
    """The monitor job ``sanctions_refresh``: fetch every configured source, parse, refuse a suspicious list,
    skip an unchanged one, store a new version. Returns ``{"status": ...}``:

    ``stored`` (a new version), ``unchanged`` (same destinations; checked_at updated), ``refused`` (empty, no
    entries or shrunk below half: the stored list stays, an error is logged and the handler emits
    SanctionsRefreshRefused), ``failed`` (a source could not be fetched or parsed; the stored list stays),
    ``not_configured`` (no source URL: screening keeps whatever list is stored). DynamoDB errors propagate."""
    sources = [(label, url) for label, url in svc.sanctions_sources if url]
    if not sources:
        log.info("sanctions refresh: no list location configured; screening uses the stored list")
        return {"status": "not_configured"}
    if svc.sanctions is None or svc.fetch_sanctions is None:
        raise RuntimeError("the sanctions store or fetcher is not configured (Services.sanctions)")
    stored = svc.sanctions.head()
    lists: list[SanctionsList] = []
    for label, url in sources:
        try:
            lists.append(svc.fetch_sanctions(url, label))
        except SanctionsSourceError as exc:
            log.error("sanctions refresh failed; the stored list stays", extra={"source": label, "error": str(exc)})
            return {"status": "failed", "source": label, "reason": str(exc), **_stored_view(stored)}
    new = merge_lists(lists)
    for lst in lists:
        if lst.invalid_samples:
            log.warning("sanctions list ids that are neither an address nor a node pubkey were skipped",
                        extra={"invalid": list(lst.invalid_samples), "count": sum(s.invalid_ids for s in lst.sources)})
    counts = {"addresses": len(new.addresses), "node_pubkeys": len(new.node_pubkeys),
              "invalid_ids": sum(s.invalid_ids for s in new.sources), "list_sha256": new.list_sha256,
              "sources": [{"label": s.label, "sha256": s.sha256, "entries": s.entries,
                           "location": redact(url)} for s, (_, url) in zip(new.sources, sources)]}
    reason = refusal_reason(new, stored, accept_shrink=accept_shrink)
    if reason is not None:
        log.error("sanctions refresh refused; the stored list stays", extra={"reason": reason, **counts})
        return {"status": "refused", "reason": reason, **counts, **_stored_view(stored)}
    now = svc.clock()
    if stored is not None and stored.list_sha256 == new.list_sha256:
        if svc.sanctions.touch(stored.version, now=now, sources=new.sources):
            return {"status": "unchanged", "version": stored.version, **counts}
        stored = svc.sanctions.head()  # replaced meanwhile by another run: store on top of it
    try:
        head = svc.sanctions.store(new, expected_version=stored.version if stored else 0, now=now)
    except SanctionsListConflict as exc:
        log.warning("sanctions refresh lost to a concurrent refresh", extra={"error": str(exc)})
        return {"status": "conflict", **counts}
    log.info("sanctions list stored", extra={"version": head.version, **counts})
    return {"status": "stored", "version": head.version, **counts}


def _stored_view(stored: Any) -> dict[str, Any]:
    return {"stored_version": stored.version if stored else None}


# ------------------------------------------------------------------------------------------------ status (admin)
def sanctions_status(svc: Services, principal: Principal) -> dict[str, Any]:
    """GET /v1/admin/sanctions: the stored list's version, digest, counts and when it was loaded/checked."""
    require_admin(principal)
    head = svc.sanctions.head() if svc.sanctions is not None else None
    base = {"loaded": head is not None, "when_unloaded": svc.sanctions_when_unloaded}
    if head is None:
        return {**base, "version": None, "list_sha256": None, "addresses": 0, "node_pubkeys": 0, "loaded_at": None,
                "checked_at": None, "sources": []}
    return {**base, **head.to_dict()}


__all__ = ["screen_address", "screen_node", "refresh_sanctions_list", "sanctions_status", "BLOCKED_ACTION",
           "BLOCKED_MESSAGE", "WHEN_UNLOADED"]
