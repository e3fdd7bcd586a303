"""The customer's API calls: queue a payout (risk-assessed, reserved in one ledger transaction), read it, cancel it."""
from __future__ import annotations

from typing import Any

from satflow.domain import errors
from satflow.domain.accounts import Principal, Scope
from satflow.domain.ids import derive_id, request_fingerprint
from satflow.domain.ledger import void_pending
from satflow.domain.money import MSAT_PER_SAT
from satflow.domain.onchain import PayoutStatus
from satflow.domain.payouts import (
    BatchStatus, Payout, PayoutNotCancelable, PayoutNotFound, PayoutToOwnAddress, validate_payout_request,
)
from satflow.domain.templates import payout_reserved

from .. import risk, verdicts
from ..accounts import require_scope
from ..limits import admit_with_retry, release_with_retry
from ..ports import Services
from ..sanctions import screen_address
from ..solvency import require_sends_open
from ..transfers import validate_idempotency_key
from .common import IN_BATCH, SendTaskSuccess, _network
from .workflow import _cancel_batch


def create_payout(svc: Services, principal: Principal, idempotency_key: str | None, address: object,
                  amount_sat: object, priority: object = "normal") -> Payout:
    """Queue a payout: ONE ledger transaction holds amount + fee reserve (pending) and writes the payout (QUEUED).
    The id is derived from (account, Idempotency-Key): the same key and body return the same payout, another body
    is 409 IDEMPOTENCY_KEY_REUSED.

    Risk is assessed here, per payout, because the payout workflow runs per BATCH: block -> 422 RISK_BLOCKED,
    nothing reserved; review -> reserved as usual but IN_REVIEW (the batcher takes only QUEUED payouts), with its
    review in the same transaction, parked on the review workflow; approved -> QUEUED, rejected -> voided.

    Reads: the payout under this key and everything risk and the limits decide on, in one round trip (the body
    is validated first, its error raised only once no earlier payout answers the key)."""
    from satflow.domain.risk import Decision, DestinationKind, SubjectKind

    account_id = require_scope(principal, Scope.SEND)
    key = validate_idempotency_key(idempotency_key)
    payout_id = derive_id("po", account_id, "payout", key)
    fingerprint = request_fingerprint(address, amount_sat, priority)
    try:
        request, invalid = validate_payout_request(address, amount_sat, priority, _network(svc)), None
    except errors.SatflowError as exc:
        request, invalid = None, exc
    if request is None:
        existing, reads, send = svc.payouts.get_payout(payout_id), None, None
    else:
        amount_msat = request.amount_sat * MSAT_PER_SAT
        send = risk.Send(SubjectKind.PAYOUT, payout_id, account_id, DestinationKind.ONCHAIN, request.address,
                         amount_msat)
        own = [svc.chain.owner_read(request.script_pubkey_hex)] if svc.chain is not None else []
        reads = risk.load_reads(svc, send, extra=[svc.payouts.payout_read(payout_id), *own])
        existing = reads.extra[0]
    if existing is not None:
        payout = _same_request(existing, fingerprint)
        if payout.status is PayoutStatus.IN_REVIEW:
            _start_review(svc, payout_id)  # a crash between the reserve and the start: start it now (once)
        return payout
    require_sends_open(svc)  # the solvency breaker: 503 SENDS_PAUSED before anything is reserved
    if invalid is not None:
        raise invalid
    assert request is not None and send is not None and reads is not None
    _refuse_own_address(svc, request.script_pubkey_hex, reads.extra[1] if len(reads.extra) > 1 else _UNREAD)
    # Before anything is reserved: a listed address is refused (403) and audited.
    screen_address(svc, request.address, actor=account_id, context=f"payout:{payout_id}")
    assessed = risk.assess_send(svc, send, reads)
    if assessed.decision is Decision.BLOCK:
        raise risk.refuse_blocked(svc, assessed)
    held = assessed.decision is Decision.REVIEW
    now = svc.clock()
    payout = Payout(
        payout_id=payout_id, account_id=account_id, address=request.address,
        script_pubkey_hex=request.script_pubkey_hex, amount_sat=request.amount_sat,
        fee_reserve_sat=request.fee_reserve_sat, priority=request.priority, request_hash=fingerprint,
        status=PayoutStatus.IN_REVIEW if held else PayoutStatus.QUEUED, created_at=now, updated_at=now,
    )
    transfer = payout_reserved(payout_id=payout_id, account_id=account_id, amount_sat=request.amount_sat,
                               fee_reserve_sat=request.fee_reserve_sat, created_at=now, shards=svc.system_shards)
    try:
        items = svc.payouts.new_payout_items(payout) + (risk.review_items(svc, assessed) if held
                                                        else risk.allow_items(svc, assessed))
        result = admit_with_retry(svc, account_id, amount_msat,
                                  lambda extra: svc.ledger.execute(transfer, items + list(extra)),
                                  reads=reads, send_id=payout_id)
    except errors.TransferExistsWithDifferentFields as exc:  # a concurrent request with the same key
        raise errors.IdempotencyKeyReused("this Idempotency-Key was already used with a different request") from exc
    if result.replayed:
        stored = svc.payouts.get_payout(payout_id)
        assert stored is not None
        return _same_request(stored, fingerprint)
    if held:
        _start_review(svc, payout_id)
    return payout


_UNREAD = object()


def _refuse_own_address(svc: Services, script_pubkey_hex: str, owner: object = _UNREAD) -> None:
    """A payout to an address we issued (an account's deposit address, or our change) is refused before anything
    is reserved: between accounts a transfer is instant and free, and our change chain is not a deposit address
    (the chain monitor would record the output as our UTXO and credit nobody)."""
    if svc.chain is None:
        return
    # ``owner``: read with the request's batch (create_payout); the address index is only ever added to, so the
    # record read there is as good as a fresh one.
    if owner is _UNREAD:
        owner = svc.chain.owners([script_pubkey_hex]).get(script_pubkey_hex)
    if owner is not None:
        raise PayoutToOwnAddress("this address belongs to satflow: use a transfer to pay another account")


def _start_review(svc: Services, payout_id: str) -> None:
    from satflow.domain.risk import SubjectKind, review_id_for

    if svc.start_review is None:
        raise RuntimeError("the review workflow is not configured (svc.start_review is None)")
    svc.start_review(review_id_for(SubjectKind.PAYOUT, payout_id))


def apply_risk_verdict(svc: Services, payout_id: str, proceed: bool, extra: list) -> str:
    """The review's decision takes effect (``risk.step_apply``): approved -> IN_REVIEW to QUEUED (the batcher
    takes it; ``extra``: the destination, now seen); rejected -> voided, the whole reservation and the limit
    usage given back (CANCELED). Idempotent."""
    payout = svc.payouts.get_payout(payout_id)
    if payout is None:
        raise PayoutNotFound(f"payout {payout_id} not found")
    if payout.status is not PayoutStatus.IN_REVIEW:
        return "DONE"  # decided before (or the user cancelled it meanwhile)
    try:
        if proceed:
            svc.payouts.run(svc.payouts.review_release_items(payout, svc.clock()) + list(extra))
        else:
            _void(svc, payout, from_status=PayoutStatus.IN_REVIEW)
    except (errors.Conflict, PayoutNotCancelable):
        pass  # a concurrent run or a cancel got there first; the stored status says how
    return "DONE"


def _apply_verdict(svc: Services, payout_id: str, proceed: bool, reason: str | None, extra: list) -> str:
    return apply_risk_verdict(svc, payout_id, proceed, extra)  # a refused payout is CANCELED whatever the reason


def _register_verdict_applier() -> None:
    from satflow.domain.risk import SubjectKind

    verdicts.register(SubjectKind.PAYOUT, _apply_verdict)


_register_verdict_applier()


def _same_request(existing: Payout, fingerprint: str) -> Payout:
    if existing.request_hash != fingerprint:
        raise errors.IdempotencyKeyReused("this Idempotency-Key was already used with a different request")
    return existing


def get_payout(svc: Services, principal: Principal, payout_id: object) -> Payout:
    account_id = require_scope(principal, Scope.READ)
    return _own_payout(svc, account_id, payout_id)


def cancel_payout(svc: Services, principal: Principal, payout_id: object, *,
                  send_task_success: SendTaskSuccess | None = None) -> Payout:
    """Cancel before signing: the whole reservation returns. A BATCHED payout's batch is cancelled first (its
    other payouts go back to QUEUED) while the batch is still BUILT. Once the batch is with the external signer
    (SIGNING) or signed: 422 PAYOUT_NOT_CANCELABLE — a signed transaction may exist outside satflow, and releasing
    its inputs could pay and refund the same payout (and pay the co-batched ones twice). For the same reason a
    payout re-queued from an ABANDONED batch (its PSBT went to the signer) is not cancelable: a signed transaction
    paying it may still be broadcast; its next transaction spends the same inputs instead."""
    account_id = require_scope(principal, Scope.SEND)
    for _ in range(4):
        payout = _own_payout(svc, account_id, payout_id)
        if payout.status is PayoutStatus.CANCELED:
            return payout
        if payout.status in (PayoutStatus.BROADCAST, PayoutStatus.CONFIRMED):
            raise PayoutNotCancelable(f"the payout is {payout.status.value.lower()}", payout_id=payout.payout_id)
        if payout.must_spend_inputs_of is not None:
            raise PayoutNotCancelable("a transaction signed for this payout may still be broadcast; it will be paid "
                                      "by a transaction spending the same coins", payout_id=payout.payout_id)
        if payout.status in IN_BATCH:
            batch = svc.payouts.get_batch(payout.batch_id) if payout.batch_id else None
            if batch is None or batch.status not in (BatchStatus.BUILT, BatchStatus.CANCELED, BatchStatus.ABANDONED):
                raise PayoutNotCancelable("the payout's transaction is with the signer or already signed",
                                          payout_id=payout.payout_id)
            if batch.status is BatchStatus.BUILT:  # CANCELED/ABANDONED: being re-queued by another writer
                try:
                    _cancel_batch(svc, batch, send_task_success, reason=f"payout {payout.payout_id} cancelled")
                except errors.Conflict:
                    pass  # signed, cancelled or changed meanwhile: decide again on a fresh read
            continue
        try:
            # QUEUED, or held by a risk review (its review then finds it cancelled and does nothing)
            _void(svc, payout, from_status=payout.status)
        except PayoutNotCancelable:
            if svc.payouts.get_payout(payout.payout_id).status in (PayoutStatus.BROADCAST, PayoutStatus.CONFIRMED):
                raise
            # the batcher took it between our read and the void (or a concurrent cancel won): read again
    raise errors.TransientError("the payout kept changing while being cancelled; retry")


def _void(svc: Services, payout: Payout, from_status: PayoutStatus = PayoutStatus.QUEUED) -> None:
    pending = svc.ledger.get_transfer(payout.payout_id)
    now = svc.clock()
    transfer = void_pending(pending, transfer_id=f"{payout.payout_id}:void", created_at=now)
    items = svc.payouts.finish_payout_items(payout, PayoutStatus.CANCELED, [from_status], now)
    release_with_retry(svc, payout.account_id, payout.amount_sat * MSAT_PER_SAT, payout.created_at,
                       lambda extra: svc.ledger.execute(transfer, items + list(extra)))


def _own_payout(svc: Services, account_id: str, payout_id: object) -> Payout:
    if not isinstance(payout_id, str) or not payout_id.startswith("po_") or len(payout_id) > 64:
        raise PayoutNotFound("no such payout")
    payout = svc.payouts.get_payout(payout_id)
    if payout is None or payout.account_id != account_id:
        raise PayoutNotFound("no such payout")
    return payout


def payout_view(p: Payout) -> dict[str, Any]:
    """The API body of a payout (202 on create, 200 on get/cancel)."""
    return {"payout_id": p.payout_id, "status": p.status.value, "address": p.address, "amount_sat": p.amount_sat,
            "priority": p.priority.value, "fee_reserve_sat": p.fee_reserve_sat, "fee_sat": p.fee_sat,
            "txid": p.txid, "created_at": p.created_at, "updated_at": p.updated_at}
