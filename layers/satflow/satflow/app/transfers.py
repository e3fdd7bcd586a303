"""Use cases: internal transfers, admin adjustments, balances and history."""
from __future__ import annotations

import re
from dataclasses import dataclass

from satflow.domain import errors
from satflow.domain.accounts import Principal, Scope
from satflow.domain.accounts import validate_account_id
from satflow.domain.ids import derive_id, request_fingerprint
from satflow.domain.ledger import Balance, LedgerAccount, Transfer
from satflow.domain.money import BTC
from satflow.domain.templates import admin_adjustment, internal_transfer

from . import verdicts
from .accounts import require_admin, require_scope, resolve_account_id
from .limits import admit_with_retry, release_with_retry
from .ports import Services

_IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
MAX_PAGE = 100


def validate_idempotency_key(key: str | None, required: bool = True) -> str | None:
    if key is None or key == "":
        if required:
            raise errors.ValidationError("the Idempotency-Key header is required", field="Idempotency-Key")
        return None
    if not _IDEMPOTENCY_KEY_RE.match(key):
        raise errors.ValidationError("Idempotency-Key must be 1-255 printable ASCII characters",
                                     field="Idempotency-Key")
    return key


@dataclass(frozen=True)
class TransferOutcome:
    transfer: Transfer
    replayed: bool
    status: str = "SETTLED"  # SETTLED | IN_REVIEW (held by a risk review) | REJECTED (the review refused it)
    review_id: str | None = None


def create_transfer(svc: Services, principal: Principal, idempotency_key: str | None, to: object,
                    amount_msat: object, memo: object = None) -> TransferOutcome:
    """User -> user, instant. The transfer id is derived from (sender, Idempotency-Key): a retry lands on the
    same ledger item, so it returns the original; a different body under the same key is refused.

    Risk, synchronously and once (a replay reads the stored assessment): allow -> posted, as ever; block -> 422
    RISK_BLOCKED and nothing written; review -> a PENDING transfer (the sender's funds reserved, the limits
    admitted) with its review in the same transaction, then the review workflow parks until an admin decides.

    Reads: what risk and the limits decide on comes back in one round trip (``risk.load_reads``) and is passed to
    both; the recipient's existence and status are conditions of the ledger transaction, not reads."""
    from . import risk
    from satflow.domain.risk import Decision, DestinationKind, SubjectKind

    sender = require_scope(principal, Scope.SEND)
    key = validate_idempotency_key(idempotency_key)
    recipient = resolve_account_id(svc, to)
    fingerprint = request_fingerprint(recipient, amount_msat, memo)
    transfer_id = derive_id("tr", sender, "transfer", key)
    transfer = internal_transfer(
        transfer_id=transfer_id, sender=sender, recipient=recipient,
        amount_msat=amount_msat, memo=memo, request_hash=fingerprint, created_at=svc.clock(),
        shards=svc.system_shards,
    )
    send = risk.Send(SubjectKind.TRANSFER, transfer_id, sender, DestinationKind.INTERNAL, recipient, transfer.amount)
    reads = risk.load_reads(svc, send)
    assessed = risk.assess_send(svc, send, reads)
    if assessed.decision is Decision.BLOCK:
        raise risk.refuse_blocked(svc, assessed)
    if assessed.decision is Decision.REVIEW:
        transfer = internal_transfer(
            transfer_id=transfer_id, sender=sender, recipient=recipient, amount_msat=amount_msat, memo=memo,
            request_hash=fingerprint, created_at=transfer.created_at, shards=svc.system_shards, held=True)
        own = risk.review_items(svc, assessed)
    else:
        own = risk.allow_items(svc, assessed)
    try:
        result = admit_with_retry(svc, sender, transfer.amount,
                                  lambda extra: svc.ledger.execute(transfer, own + list(extra)),
                                  reads=reads, send_id=transfer_id)
    except errors.TransferExistsWithDifferentFields as exc:
        if not assessed.stored and _decided_otherwise(svc, transfer_id, assessed.decision):
            # A concurrent identical request committed first under another decision: answer with that one.
            return create_transfer(svc, principal, idempotency_key, to, amount_msat, memo)
        raise errors.IdempotencyKeyReused("this Idempotency-Key was already used with a different request") from exc
    if assessed.decision is not Decision.REVIEW:
        return TransferOutcome(result.transfer, result.replayed)
    review_id = assessed.review_id
    if svc.start_review is None:
        raise RuntimeError("the review workflow is not configured (svc.start_review is None)")
    svc.start_review(review_id)  # named by the review id: a replay (or a crash before this line) starts it once
    resolution = svc.ledger.pending_resolution(transfer_id) if result.replayed else None
    status = "IN_REVIEW" if resolution is None else "SETTLED" if resolution.endswith(":post") else "REJECTED"
    return TransferOutcome(result.transfer, result.replayed, status, review_id)


def _decided_otherwise(svc: Services, transfer_id: str, decision) -> bool:
    stored = svc.risk.get_assessment(transfer_id)
    return stored is not None and stored.assessment.decision is not decision


def apply_risk_verdict(svc: Services, transfer_id: str, proceed: bool, reason: str | None, extra: list) -> str:
    """A held transfer's review decision takes effect (``risk.step_apply`` through ``app.verdicts``): approved ->
    posted (``extra``: the destination, now seen); rejected -> voided, the sender's limit usage given back.
    Idempotent (the post/void ids derive from the transfer id)."""
    from satflow.domain.ledger import post_pending, void_pending

    pending = svc.ledger.get_transfer(transfer_id)
    if pending is None:
        raise errors.TransferNotFound(f"transfer {transfer_id} not found", transfer_id=transfer_id)
    now = svc.clock()
    try:
        if proceed:
            svc.ledger.execute(post_pending(pending, transfer_id=f"{transfer_id}:post", created_at=now), extra)
        else:
            void = void_pending(pending, transfer_id=f"{transfer_id}:void", created_at=now)
            release_with_retry(svc, pending.debit.owner, pending.amount, pending.created_at,
                               lambda limit_items: svc.ledger.execute(void, list(limit_items)))
    except errors.PendingAlreadyResolved:
        pass  # an earlier run resolved it
    return "DONE"


def _register_verdict_applier() -> None:
    from satflow.domain.risk import SubjectKind

    verdicts.register(SubjectKind.TRANSFER, apply_risk_verdict)


_register_verdict_applier()


def adjust(svc: Services, principal: Principal, idempotency_key: str | None, account_id: object,
           amount_msat: object, direction: object, reason: object) -> TransferOutcome:
    """Admin credit/debit against owner equity. This route creates money, so the Idempotency-Key is required
    and scoped to the admin: a retry returns the original; the same key for another account or amount is a 409."""
    require_admin(principal)
    account_id = validate_account_id(account_id)
    key = validate_idempotency_key(idempotency_key)
    transfer_id = derive_id("adj", "admin", key)
    transfer = admin_adjustment(
        transfer_id=transfer_id, account_id=account_id, amount_msat=amount_msat, direction=direction,  # type: ignore[arg-type]
        reason=reason, created_at=svc.clock(), shards=svc.system_shards,  # type: ignore[arg-type]
    )
    try:
        result = svc.ledger.execute(transfer)
    except errors.TransferExistsWithDifferentFields as exc:
        raise errors.IdempotencyKeyReused("this Idempotency-Key was already used with a different request") from exc
    return TransferOutcome(result.transfer, result.replayed)


def balances(svc: Services, principal: Principal) -> list[Balance]:
    account_id = require_scope(principal, Scope.READ)
    found = {b.account.asset: b for b in svc.ledger.balances(account_id)}
    found.setdefault(BTC, Balance(LedgerAccount(account_id, BTC)))  # every account shows BTC, even when empty
    return [found[a] for a in sorted(found, key=lambda a: (a != BTC, a))]


def history(svc: Services, principal: Principal, limit: object, cursor: object):
    account_id = require_scope(principal, Scope.READ)
    if limit is None:
        limit = 20
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise errors.ValidationError(f"limit must be an integer from 1 to {MAX_PAGE}", field="limit")
    if cursor is not None and (not isinstance(cursor, str) or len(cursor) > 1024):
        raise errors.ValidationError("cursor is not valid", field="cursor")
    return svc.ledger.history(account_id, BTC, limit, cursor or None)
