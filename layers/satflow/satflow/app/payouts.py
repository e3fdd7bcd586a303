"""Use cases of on-chain payouts: the API calls, the batcher, the admin signing/fee-bump calls and the steps of the
payout workflow (statemachines/payout.asl.json).

Lifecycle of a payout: QUEUED (amount + fee reserve held by a pending ledger transfer) -> BATCHED (in a built,
unsigned transaction; its inputs RESERVED) -> [SIGNING (waiting for the external signer)] -> BROADCAST -> CONFIRMED
(posted for amount + its fee share; the rest of the reserve returns; inputs SPENT) | CANCELED (voided, all returns).

Lifecycle of a batch: BUILT -> [SIGNING] -> SIGNED -> BROADCAST -> CONFIRMED | CANCELED (only from BUILT/SIGNING:
once a signed transaction exists it may reach the network, so nothing that depends on it is undone).

Cancelling a payout whose batch is BUILT or SIGNING cancels the whole batch first (inputs released, every payout
of it back to QUEUED with ``requeues + 1``, a waiting workflow told to finish), then voids the one payout; the
others are batched again on the next batcher run. Each step is safe to run twice; the batcher also finishes what a
dead workflow left (see :func:`run_batcher`).

Callables that talk to Step Functions are parameters, not Services fields: ``send_task_success(token, output)``
(build one with :func:`sfn_task_success_sender`).
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import datetime
from typing import Any, Callable

from satflow.domain import errors
from satflow.domain.audit import ADMIN_ACTOR, AuditEntry
from satflow.domain.accounts import Principal, Scope
from satflow.domain.bitcoin import (
    BitcoinTxNotFound, FeeEstimateMode, Network, TransactionInputsMissing, TransactionRejected,
)
from satflow.domain.coin_selection import selection_candidates
from satflow.domain.ids import derive_id, request_fingerprint
from satflow.domain.ledger import post_pending, void_pending
from satflow.domain.money import MSAT_PER_SAT
from satflow.domain.onchain import HOT_WALLET_OWNER, PayoutStatus, Priority
from satflow.domain.payouts import (
    MAX_BATCH_PAYOUTS,
    MAX_TX_ITEMS,
    Batch,
    BatchNotAwaitingSignature,
    BatchStatus,
    ChangeOutput,
    FeeBumpRejected,
    Payout,
    PayoutBatchNotFound,
    PayoutNotCancelable,
    PayoutNotFound,
    TxVariant,
    WalletKeys,
    batch_id_for,
    build_psbt,
    fee_rate_for,
    fee_shares,
    finalize_external,
    plan_replacement,
    shares_within_reserves,
    sign_hot,
    txid_of_raw,
    validate_payout_request,
)
from satflow.domain.templates import payout_reserved
from satflow.domain.webhooks import payout_broadcast_event

from . import risk, webhooks
from .accounts import require_admin, require_scope
from .audit import with_audit
from .limits import admit_with_retry, release_with_retry
from .ports import Services
from .sanctions import screen_address
from .transfers import validate_idempotency_key

log = logging.getLogger(__name__)

SendTaskSuccess = Callable[[str, dict], None]

CHANGE_CHAIN = 1
DEFAULT_CONFIRMATIONS = 1  # keep equal to the ASL's Defaults.confirmations (the batcher's recovery uses it)
RECOVER_AFTER_S = 900  # the batcher finishes batches a workflow left untouched this long
MAX_BATCHES_PER_RUN = 10  # bounds one run's work (coin selection, transactions); the rest waits for the next run
IN_BATCH = (PayoutStatus.BATCHED, PayoutStatus.SIGNING)
ALIVE = (PayoutStatus.BATCHED, PayoutStatus.SIGNING, PayoutStatus.BROADCAST)


# ============================================================================================== API: customers
def create_payout(svc: Services, principal: Principal, idempotency_key: str | None, address: object,
                  amount_sat: object, priority: object = "normal") -> Payout:
    """Queue a payout: ONE ledger transaction holds amount + fee reserve (pending) and writes the payout (QUEUED).
    The id is derived from (account, Idempotency-Key): the same key and body return the same payout, another body
    is 409 IDEMPOTENCY_KEY_REUSED.

    Risk is assessed here, per payout, because the payout workflow runs per BATCH: block -> 422 RISK_BLOCKED,
    nothing reserved; review -> reserved as usual but IN_REVIEW (the batcher takes only QUEUED payouts), with its
    review in the same transaction, parked on the review workflow; approved -> QUEUED, rejected -> voided."""
    from satflow.domain.risk import Decision, DestinationKind, SubjectKind

    account_id = require_scope(principal, Scope.SEND)
    key = validate_idempotency_key(idempotency_key)
    payout_id = derive_id("po", account_id, "payout", key)
    fingerprint = request_fingerprint(address, amount_sat, priority)
    existing = svc.payouts.get_payout(payout_id)
    if existing is not None:
        payout = _same_request(existing, fingerprint)
        if payout.status is PayoutStatus.IN_REVIEW:
            _start_review(svc, payout_id)  # a crash between the reserve and the start: start it now (once)
        return payout
    request = validate_payout_request(address, amount_sat, priority, _network(svc))
    # Before anything is reserved: a listed address is refused (403) and audited.
    screen_address(svc, request.address, actor=account_id, context=f"payout:{payout_id}")
    amount_msat = request.amount_sat * MSAT_PER_SAT
    assessed = risk.assess_send(svc, risk.Send(SubjectKind.PAYOUT, payout_id, account_id, DestinationKind.ONCHAIN,
                                               request.address, amount_msat))
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
                                  lambda extra: svc.ledger.execute(transfer, items + list(extra)))
    except errors.TransferExistsWithDifferentFields as exc:  # a concurrent request with the same key
        raise errors.IdempotencyKeyReused("this Idempotency-Key was already used with a different request") from exc
    if result.replayed:
        stored = svc.payouts.get_payout(payout_id)
        assert stored is not None
        return _same_request(stored, fingerprint)
    if held:
        _start_review(svc, payout_id)
    return payout


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
    its inputs could pay and refund the same payout (and pay the co-batched ones twice)."""
    account_id = require_scope(principal, Scope.SEND)
    for _ in range(4):
        payout = _own_payout(svc, account_id, payout_id)
        if payout.status is PayoutStatus.CANCELED:
            return payout
        if payout.status in (PayoutStatus.BROADCAST, PayoutStatus.CONFIRMED):
            raise PayoutNotCancelable(f"the payout is {payout.status.value.lower()}", payout_id=payout.payout_id)
        if payout.status in IN_BATCH:
            batch = svc.payouts.get_batch(payout.batch_id) if payout.batch_id else None
            if batch is None or batch.status not in (BatchStatus.BUILT, BatchStatus.CANCELED):
                raise PayoutNotCancelable("the payout's transaction is with the signer or already signed",
                                          payout_id=payout.payout_id)
            if batch.status is not BatchStatus.CANCELED:  # CANCELED: being re-queued by another writer
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


# ============================================================================================== API: admin
def get_batch(svc: Services, principal: Principal, batch_id: object) -> Batch:
    require_admin(principal)
    return _load_batch(svc, batch_id)


def list_open_batches(svc: Services, principal: Principal) -> list[Batch]:
    require_admin(principal)
    found = [svc.payouts.get_batch(bid) for bid in svc.payouts.open_batch_ids()]
    return sorted((b for b in found if b is not None), key=lambda b: (b.created_at, b.batch_id))


def batch_view(b: Batch) -> dict[str, Any]:
    current = b.current
    awaiting = b.status is BatchStatus.SIGNING or b.pending_replacement is not None
    return {"batch_id": b.batch_id, "status": b.status.value, "priority": b.priority.value,
            "value_sat": b.value_sat, "payout_ids": list(b.payout_ids), "txid": current.txid,
            "txids": list(b.txids), "fee_sat": current.fee_sat, "fee_rate_sat_per_vb": current.fee_rate,
            "change_sat": current.change_sat, "inputs": len(b.inputs), "selection": b.selection,
            "awaiting_signature": awaiting,
            "pending_replacement_txid": b.pending_replacement.txid if b.pending_replacement else None,
            "confirmed_txid": b.confirmed_txid, "created_at": b.created_at, "updated_at": b.updated_at}


def export_psbt(svc: Services, principal: Principal, batch_id: object) -> str:
    """The unsigned PSBT (base64) waiting for the external signer: the batch's transaction while SIGNING, or a
    fee-bump replacement of a broadcast batch."""
    require_admin(principal)
    batch = _load_batch(svc, batch_id)
    if batch.status is BatchStatus.BROADCAST and batch.pending_replacement is not None:
        return batch.pending_replacement.unsigned_psbt
    if batch.status is BatchStatus.SIGNING:
        return batch.current.unsigned_psbt
    raise BatchNotAwaitingSignature(f"batch {batch.batch_id} is {batch.status.value}: nothing to sign")


def submit_signed_psbt(svc: Services, principal: Principal, batch_id: object, psbt_b64: object, *,
                       send_task_success: SendTaskSuccess) -> Batch:
    """The external signer's PSBT: it must be the exported transaction, completely and validly signed. The batch
    becomes SIGNED and the waiting workflow continues (``send_task_success``); for a fee-bump replacement the
    replacement is recorded and broadcast here. Submitting the same signature again is harmless."""
    require_admin(principal)
    batch = _load_batch(svc, batch_id)
    if batch.status is BatchStatus.BROADCAST and batch.pending_replacement is not None:
        raw = finalize_external(batch.pending_replacement.unsigned_psbt, psbt_b64)
        variant = replace(batch.pending_replacement, signed_hex=raw)
        return _replace_transaction(svc, batch, variant)
    if batch.status is BatchStatus.SIGNING:
        raw = finalize_external(batch.current.unsigned_psbt, psbt_b64)
        signed = replace(batch, status=BatchStatus.SIGNED, updated_at=svc.clock(),
                         variants=batch.variants[:-1] + (replace(batch.current, signed_hex=raw),))
        _run_admin_action(svc, "payout_batch.signature_submitted", signed, {"txid": signed.current.txid},
                          svc.payouts.save_batch_items(signed, batch))
        batch = replace(signed, version=batch.version + 1)
    elif batch.status in (BatchStatus.SIGNED, BatchStatus.BROADCAST, BatchStatus.CONFIRMED) and \
            batch.current.signed_hex is not None:
        finalize_external(batch.current.unsigned_psbt, psbt_b64)  # still must be the right transaction
    else:
        raise BatchNotAwaitingSignature(f"batch {batch.batch_id} is {batch.status.value}: nothing to sign")
    if batch.status is BatchStatus.SIGNED and batch.task_token:
        # The token stays on the batch until Broadcast: a lost notification is repaired by submitting again.
        send_task_success(batch.task_token, _route(batch.batch_id, "BROADCAST"))
    return batch


def bump_fee(svc: Services, principal: Principal, batch_id: object, sat_per_vb: object) -> Batch:
    """RBF (BIP125) the broadcast batch at ``sat_per_vb``: same inputs and payouts, change reduced (never a
    payout), fee shares recomputed (each within its reserve). Signed hot and broadcast at once when the batch is
    within the hot limit; otherwise it waits for the external signer (export_psbt / submit_signed_psbt) while the
    original stays in the mempool. The workflow posts whichever variant confirms."""
    require_admin(principal)
    batch = _load_batch(svc, batch_id)
    if batch.status is not BatchStatus.BROADCAST:
        raise FeeBumpRejected(f"only a broadcast, unconfirmed batch can be bumped (this one is {batch.status.value})")
    if len(batch.variants) >= 10:
        raise FeeBumpRejected("this batch was bumped too often already")
    payouts = svc.payouts.get_payouts(batch.payout_ids)
    plan = plan_replacement(batch, payouts, sat_per_vb)
    built = build_psbt(batch.inputs, payouts, batch.change, plan.change_sat, _keys(svc))
    variant = TxVariant(txid=built.txid, unsigned_psbt=built.psbt_b64, fee_sat=plan.fee_sat, fee_rate=plan.fee_rate,
                        vbytes=plan.vbytes, change_sat=plan.change_sat, change_vout=built.change_vout,
                        vouts=built.vouts, shares=plan.shares)
    details = {"txid": variant.txid, "replaces": batch.current.txid, "fee_sat": variant.fee_sat,
               "hot": batch.value_sat <= svc.hot_sign_limit_sat}
    if batch.value_sat <= svc.hot_sign_limit_sat:
        variant = replace(variant, signed_hex=_sign_hot(svc, batch, variant))
        return _replace_transaction(svc, batch, variant, audit=("payout_batch.fee_bumped", details))
    waiting = replace(batch, pending_replacement=variant, updated_at=svc.clock())
    _run_admin_action(svc, "payout_batch.fee_bumped", waiting, details, svc.payouts.save_batch_items(waiting, batch))
    return replace(waiting, version=batch.version + 1)


def _run_admin_action(svc: Services, action: str, batch: Batch, details: dict, items: list) -> None:
    """The batch change and its audit record in one transaction (only a definite cancellation is retried: the
    items carry the batch version, so a retry after a moved audit head writes exactly what was meant)."""
    entry = AuditEntry(at=batch.updated_at, actor=ADMIN_ACTOR, action=action, subject_ids=(batch.batch_id,),
                       details=details)
    with_audit(svc, entry, lambda extra: svc.payouts.run(list(items) + list(extra)), retry_on=(errors.AuditHeadMoved,))


def _replace_transaction(svc: Services, batch: Batch, variant: TxVariant,
                         audit: tuple[str, dict] | None = None) -> Batch:
    """Record the signed replacement (payouts now show its txid and shares), then broadcast it. Recorded first:
    whatever happens after, the check step knows the txid (and rebroadcasts it if nothing is in the mempool). A
    definite refusal by the node removes it again."""
    now = svc.clock()
    payouts = [p for p in svc.payouts.get_payouts(batch.payout_ids) if p.batch_id == batch.batch_id]
    if variant.txid not in batch.txids:
        recorded = replace(batch, variants=batch.variants + (variant,), pending_replacement=None, updated_at=now)
        action, details = audit or ("payout_batch.replacement_submitted", {"txid": variant.txid})
        _run_admin_action(svc, action, recorded, details,
                          svc.payouts.save_batch_items(recorded, batch)
                          + svc.payouts.move_payouts_items(batch, payouts, PayoutStatus.BROADCAST,
                                                           [PayoutStatus.BROADCAST], now, txid=variant.txid,
                                                           shares=dict(variant.shares))
                          + _broadcast_outbox(svc, payouts, variant.txid, now, replaces=batch.current.txid))
        recorded = replace(recorded, version=batch.version + 1)
    else:
        recorded = batch
    try:
        svc.bitcoind().sendrawtransaction(variant.signed_hex, variant.txid)
    except TransactionRejected as exc:
        previous = recorded.variants[-2] if recorded.variants[-1].txid == variant.txid else recorded.current
        rolled = replace(recorded, variants=tuple(v for v in recorded.variants if v.txid != variant.txid),
                         updated_at=svc.clock())
        svc.payouts.run(svc.payouts.save_batch_items(rolled, recorded)
                        + svc.payouts.move_payouts_items(recorded, payouts, PayoutStatus.BROADCAST,
                                                         [PayoutStatus.BROADCAST], svc.clock(), txid=previous.txid,
                                                         shares=dict(previous.shares)))
        raise FeeBumpRejected(f"the node refused the replacement: {exc.details.get('reject_reason', exc.message)}",
                              txid=variant.txid) from exc
    return recorded


# ============================================================================================== the batcher
def run_batcher(svc: Services, *, recover_after_s: int = RECOVER_AFTER_S) -> dict[str, int]:
    """MonitorFunction job ``payout_batcher``: batch the QUEUED payouts, per priority, into one transaction each
    (at most MAX_BATCH_PAYOUTS payouts, MAX_BATCHES_PER_RUN batches a run), reserve the inputs and start the
    workflow. Payouts that cannot be funded
    (newest first are left out) or whose fee shares would exceed their reserves stay QUEUED for the next run.

    It also finishes what workflows left: BUILT batches get their workflow (re)started, SIGNED ones are broadcast,
    BROADCAST ones are checked and posted once confirmed (each after ``recover_after_s`` without an update)."""
    counts = {"queued": 0, "batches": 0, "batched": 0, "deferred": 0, "recovered": 0}
    counts["recovered"] = _recover(svc, recover_after_s)
    open_ids = svc.payouts.open_payout_ids()
    queued = [p for p in svc.payouts.get_payouts(open_ids) if p.status is PayoutStatus.QUEUED]
    counts["queued"] = len(queued)
    if not queued:
        return counts
    pool = list(svc.utxos.available())
    rpc = svc.bitcoind()
    for priority in (Priority.FAST, Priority.NORMAL, Priority.SLOW):
        group = sorted((p for p in queued if p.priority is priority), key=lambda p: (p.created_at, p.payout_id))
        if not group:
            continue
        rate, source = fee_rate_for(priority, rpc.estimatesmartfee(priority.conf_target, FeeEstimateMode.ECONOMICAL))
        if source == "capped":
            log.warning("fee estimate for %s above the cap: paying %d sat/vB", priority.value, rate)
        for start in range(0, len(group), MAX_BATCH_PAYOUTS):
            chunk = group[start:start + MAX_BATCH_PAYOUTS]
            if counts["batches"] >= MAX_BATCHES_PER_RUN:
                counts["deferred"] += len(chunk)
                continue
            batch = _build_batch(svc, chunk, pool, priority, rate)
            if batch is None:
                counts["deferred"] += len(chunk)
                continue
            used = {u.outpoint for u in batch.inputs}
            pool = [u for u in pool if u.outpoint not in used]
            counts["batches"] += 1
            counts["batched"] += len(batch.payout_ids)
            counts["deferred"] += len(chunk) - len(batch.payout_ids)
            svc.start_payout(batch.batch_id)
    return counts


def _build_batch(svc: Services, chunk: list[Payout], pool: list, priority: Priority, rate: int) -> Batch | None:
    members = list(chunk)
    total_value = sum(u.value_sat for u in pool)
    while members and sum(p.amount_sat for p in members) > total_value:
        members.pop()  # cannot possibly be funded: leave the newest for later
    chosen = None
    while members:
        found = _select(members, pool, rate)
        if found == "insufficient":
            members.pop()
            continue
        if found == "over_reserve":
            log.warning("payout batch (%s, %d payouts) not built: its fee shares would exceed their reserves",
                        priority.value, len(members))
            return None
        chosen = found
        break
    if chosen is None:
        log.warning("payouts (%s) stay queued: the available outputs cannot fund them", priority.value)
        return None
    selection, shares = chosen
    now = svc.clock()
    change = None
    if selection.has_change:
        index, address, script = svc.chain.allocate_address(HOT_WALLET_OWNER, CHANGE_CHAIN)
        change = ChangeOutput(index=index, address=address, script_pubkey_hex=script)
    built = build_psbt(selection.inputs, members, change, selection.change_sat, _keys(svc))
    variant = TxVariant(txid=built.txid, unsigned_psbt=built.psbt_b64, fee_sat=selection.fee_sat, fee_rate=rate,
                        vbytes=selection.vbytes, change_sat=selection.change_sat, change_vout=built.change_vout,
                        vouts=built.vouts, shares=shares)
    batch = Batch(batch_id=batch_id_for(members), priority=priority,
                  payout_ids=tuple(sorted(p.payout_id for p in members)), inputs=tuple(selection.inputs),
                  change=change, value_sat=selection.amount_sat, status=BatchStatus.BUILT, variants=(variant,),
                  created_at=now, updated_at=now, selection=selection.algorithm)
    items = (svc.payouts.new_batch_items(batch) + svc.utxos.reserve_items(selection.inputs, batch.batch_id)
             + svc.payouts.batch_payouts_items(batch, members, shares, now))
    try:
        svc.payouts.run(items)
    except errors.Conflict as exc:  # a payout was cancelled or an output taken meanwhile: next run
        log.warning("payout batch %s not built: %s", batch.batch_id, exc.message)
        return None
    log.info("payout batch %s built: %d payouts, %d inputs, fee %d sat (%s)", batch.batch_id, len(members),
             len(selection.inputs), selection.fee_sat, selection.algorithm)
    return batch


def _select(members: list[Payout], pool: list, rate: int):
    """The first coin selection whose fee shares all fit their reserves; 'insufficient' or 'over_reserve'."""
    candidates = selection_candidates(pool, amount_sat=sum(p.amount_sat for p in members),
                                      output_kinds=[p.kind for p in members], fee_rate=rate,
                                      max_inputs=MAX_TX_ITEMS - 2 - len(members))
    if not candidates:
        return "insufficient"
    for selection in candidates:
        shares = fee_shares(selection.fee_sat, {p.payout_id: p.output_vbytes for p in members}, selection.vbytes)
        if not shares_within_reserves(shares, members):
            return selection, shares
    return "over_reserve"


def _recover(svc: Services, after_s: int) -> int:
    recovered = 0
    now = svc.clock()
    for batch_id in svc.payouts.open_batch_ids():
        batch = svc.payouts.get_batch(batch_id)
        if batch is None or _age_s(batch.updated_at, now) < after_s:
            continue
        try:
            if batch.status is BatchStatus.BUILT:
                svc.start_payout(batch_id)  # named by the batch id: a no-op when it already runs
            elif batch.status is BatchStatus.SIGNED:
                step_broadcast(svc, batch_id)
            elif batch.status is BatchStatus.BROADCAST:
                decision = step_check(svc, batch_id, DEFAULT_CONFIRMATIONS)
                if decision["next"] == "POST":
                    step_post(svc, batch_id, decision["txid"])
            else:
                continue
            recovered += 1
        except errors.SatflowError as exc:
            log.error("payout batch %s recovery failed: %s", batch_id, exc.message)
    return recovered


# ============================================================================================== workflow steps
def _route(batch_id: str, nxt: str, **extra: Any) -> dict[str, Any]:
    return {"batch_id": batch_id, "next": nxt, "attempt": 0, **extra}


def _route_for(svc: Services, batch: Batch) -> dict[str, Any]:
    status = batch.status
    if status is BatchStatus.BUILT:
        nxt = "HOT" if batch.value_sat <= svc.hot_sign_limit_sat else "EXTERNAL"
    else:
        nxt = {BatchStatus.SIGNING: "EXTERNAL", BatchStatus.SIGNED: "BROADCAST", BatchStatus.BROADCAST: "CHECK",
               BatchStatus.CONFIRMED: "DONE", BatchStatus.CANCELED: "DONE"}[status]
    return _route(batch.batch_id, nxt, status=status.value)


def step_prepare(svc: Services, batch_id: str) -> dict[str, Any]:
    """Where the batch stands decides the next step: a restarted execution resumes instead of redoing."""
    return _route_for(svc, _load_batch(svc, batch_id))


def step_sign_hot(svc: Services, batch_id: str) -> dict[str, Any]:
    batch = _load_batch(svc, batch_id)
    if batch.status is not BatchStatus.BUILT or batch.value_sat > svc.hot_sign_limit_sat:
        return _route_for(svc, batch)
    raw = _sign_hot(svc, batch, batch.current)
    signed = replace(batch, status=BatchStatus.SIGNED, updated_at=svc.clock(),
                     variants=batch.variants[:-1] + (replace(batch.current, signed_hex=raw),))
    try:
        svc.payouts.run(svc.payouts.save_batch_items(signed, batch))
    except errors.Conflict:
        return _route_for(svc, _load_batch(svc, batch_id))  # cancelled (or signed) meanwhile
    return _route(batch_id, "BROADCAST", status=BatchStatus.SIGNED.value)


def _sign_hot(svc: Services, batch: Batch, variant: TxVariant) -> str:
    if svc.hot_signer_key is None:
        raise RuntimeError("no hot signer key configured")
    raw = sign_hot(variant.unsigned_psbt, batch.inputs, svc.hot_signer_key())
    if txid_of_raw(raw) != variant.txid:
        raise RuntimeError("the signed transaction is not the batch's")
    return raw


def step_await_signature(svc: Services, batch_id: str, task_token: str,
                         send_task_success: SendTaskSuccess) -> dict[str, Any]:
    """Invoked with ``.waitForTaskToken``: store the token (BUILT -> SIGNING, payouts SIGNING) and return; the
    workflow then waits until submit_signed_psbt (or a cancel) sends the task success. A batch that no longer
    needs a signature answers the token at once."""
    batch = _load_batch(svc, batch_id)
    now = svc.clock()
    if batch.status is BatchStatus.BUILT:
        waiting = replace(batch, status=BatchStatus.SIGNING, task_token=task_token, updated_at=now)
        payouts = [p for p in svc.payouts.get_payouts(batch.payout_ids)
                   if p.batch_id == batch_id and p.status is PayoutStatus.BATCHED]
        try:
            svc.payouts.run(svc.payouts.save_batch_items(waiting, batch)
                            + svc.payouts.move_payouts_items(batch, payouts, PayoutStatus.SIGNING,
                                                             [PayoutStatus.BATCHED], now))
            return _route(batch_id, "WAITING", status=BatchStatus.SIGNING.value)
        except errors.Conflict:
            batch = _load_batch(svc, batch_id)
    if batch.status is BatchStatus.SIGNING:
        if batch.task_token != task_token:  # a retried or restarted wait: the newest token is the live one
            svc.payouts.run(svc.payouts.save_batch_items(replace(batch, task_token=task_token, updated_at=now),
                                                         batch))
        return _route(batch_id, "WAITING", status=BatchStatus.SIGNING.value)
    route = _route_for(svc, batch)
    send_task_success(task_token, route)
    return route


def step_broadcast(svc: Services, batch_id: str) -> dict[str, Any]:
    """sendrawtransaction of the signed batch (already known to the node = success), then batch and payouts
    BROADCAST with the txid, in one transaction."""
    batch = _load_batch(svc, batch_id)
    if batch.status is not BatchStatus.SIGNED:
        return _route_for(svc, batch)
    variant = batch.current
    assert variant.signed_hex is not None
    rpc = svc.bitcoind()
    try:
        rpc.sendrawtransaction(variant.signed_hex, variant.txid)
    except TransactionInputsMissing:
        if not _known(rpc, variant.txid):  # confirmed and its outputs spent since counts as broadcast
            raise
    now = svc.clock()
    sent = replace(batch, status=BatchStatus.BROADCAST, task_token=None, updated_at=now,
                   variants=batch.variants[:-1] + (replace(variant, broadcast_at=now),))
    payouts = [p for p in svc.payouts.get_payouts(batch.payout_ids)
               if p.batch_id == batch_id and p.status in IN_BATCH]
    try:
        svc.payouts.run(svc.payouts.save_batch_items(sent, batch)
                        + svc.payouts.move_payouts_items(batch, payouts, PayoutStatus.BROADCAST, IN_BATCH, now,
                                                         txid=variant.txid)
                        + _broadcast_outbox(svc, payouts, variant.txid, now))
    except errors.Conflict:
        return _route_for(svc, _load_batch(svc, batch_id))
    return _route(batch_id, "CHECK", txid=variant.txid)


def _broadcast_outbox(svc: Services, payouts: list[Payout], txid: str, now: str,
                      replaces: str | None = None) -> list:
    """``payout.broadcast`` per payout, in the transaction that records the broadcast (a fee bump's replacement
    is announced too, with the txid it replaces). At most 40 payouts per batch: 1 + 40 + 40 items, under 100."""
    events = [payout_broadcast_event(payout_id=p.payout_id, account_id=p.account_id, txid=txid,
                                     amount_sat=p.amount_sat, created_at=now, replaces_txid=replaces)
              for p in payouts]
    return webhooks.outbox_items(svc, events, overwrite=True)


def step_check(svc: Services, batch_id: str, confirmations: int = DEFAULT_CONFIRMATIONS,
               attempt: int = 0) -> dict[str, Any]:
    """Which variant (original or replacement) has ``confirmations``: POST it; otherwise WAIT. If the node knows
    none of them (evicted, or a crash between recording and broadcasting a replacement), the newest signed one
    is broadcast again."""
    batch = _load_batch(svc, batch_id)
    if batch.status is not BatchStatus.BROADCAST:
        return _route_for(svc, batch)
    rpc = svc.bitcoind()
    seen = False
    for variant in reversed(batch.variants):
        if variant.signed_hex is None:
            continue
        try:
            info = rpc.getrawtransaction(variant.txid)
        except BitcoinTxNotFound:
            continue
        seen = True
        if info.confirmations >= confirmations:
            return _route(batch_id, "POST", txid=variant.txid, confirmations=info.confirmations)
    if not seen:
        newest = next(v for v in reversed(batch.variants) if v.signed_hex is not None)
        try:
            rpc.sendrawtransaction(newest.signed_hex, newest.txid)
            log.warning("payout batch %s: no variant known to the node, rebroadcast %s", batch_id, newest.txid)
        except TransactionRejected as exc:
            log.error("payout batch %s: rebroadcast of %s refused: %s", batch_id, newest.txid, exc.message)
    return {**_route(batch_id, "WAIT"), "attempt": attempt + 1}


def step_post(svc: Services, batch_id: str, txid: str) -> dict[str, Any]:
    """The variant ``txid`` confirmed: each payout posts amount + its share of that variant's fee (one ledger
    transaction each; the rest of the reserve returns), then the batch is CONFIRMED and its inputs SPENT. The
    change output is recorded as a UTXO by the chain monitor. Idempotent."""
    batch = _load_batch(svc, batch_id)
    if batch.status is BatchStatus.CONFIRMED:
        return _route(batch_id, "DONE", status=batch.status.value)
    if batch.status is not BatchStatus.BROADCAST:
        raise errors.Conflict(f"batch {batch_id} is {batch.status.value}, not broadcast")
    variant = batch.variant(txid)
    for payout in svc.payouts.get_payouts(batch.payout_ids):
        if payout.status is PayoutStatus.CONFIRMED or payout.batch_id != batch_id:
            continue
        share = variant.shares[payout.payout_id]
        if share > payout.fee_reserve_sat:  # never built that way; if it ever were, the house pays the excess
            log.error("payout %s fee share %d above its reserve %d", payout.payout_id, share, payout.fee_reserve_sat)
            share = payout.fee_reserve_sat
        pending = svc.ledger.get_transfer(payout.payout_id)
        now = svc.clock()
        transfer = post_pending(pending, transfer_id=f"{payout.payout_id}:post", created_at=now,
                                amount=(payout.amount_sat + share) * MSAT_PER_SAT)
        extra = svc.payouts.finish_payout_items(payout, PayoutStatus.CONFIRMED, ALIVE, now, txid=txid, fee_sat=share)
        try:
            svc.ledger.execute(transfer, extra)
        except errors.PendingAlreadyResolved:
            log.error("payout %s was resolved by another transfer", payout.payout_id)
    done = replace(batch, status=BatchStatus.CONFIRMED, confirmed_txid=txid, task_token=None,
                   pending_replacement=None, updated_at=svc.clock())
    try:
        svc.payouts.run(svc.payouts.save_batch_items(done, batch) + svc.utxos.spend_items(batch.inputs, batch_id))
    except errors.Conflict:
        if _load_batch(svc, batch_id).status is not BatchStatus.CONFIRMED:
            raise
    return _route(batch_id, "DONE", status=BatchStatus.CONFIRMED.value, txid=txid)


def step_abandon(svc: Services, batch_id: str) -> dict[str, Any]:
    """The external signer did not answer in time: cancel the batch (inputs released, payouts re-queued for the
    next batch). A batch signed meanwhile carries on instead."""
    batch = _load_batch(svc, batch_id)
    if batch.status in (BatchStatus.BUILT, BatchStatus.SIGNING):
        try:
            _cancel_batch(svc, batch, None, reason="signature timed out")
        except errors.Conflict:
            pass
        batch = _load_batch(svc, batch_id)
    return _route_for(svc, batch)


def _cancel_batch(svc: Services, batch: Batch, send_task_success: SendTaskSuccess | None, reason: str) -> None:
    now = svc.clock()
    payouts = [p for p in svc.payouts.get_payouts(batch.payout_ids)
               if p.batch_id == batch.batch_id and p.status in IN_BATCH]
    cancelled = replace(batch, status=BatchStatus.CANCELED, task_token=None, updated_at=now)
    svc.payouts.run(svc.payouts.save_batch_items(cancelled, batch)
                    + svc.utxos.release_items(batch.inputs, batch.batch_id)
                    + svc.payouts.requeue_items(batch, payouts, now))
    log.info("payout batch %s cancelled (%s): %d payouts re-queued", batch.batch_id, reason, len(payouts))
    if batch.task_token and send_task_success is not None:
        try:
            send_task_success(batch.task_token, _route(batch.batch_id, "DONE", status=BatchStatus.CANCELED.value))
        except Exception as exc:  # the workflow then ends at its signing timeout; the batch is cancelled anyway
            log.warning("could not end the workflow of batch %s: %s", batch.batch_id, exc)


# ============================================================================================== helpers
def sfn_task_success_sender(sfn_client: Any) -> SendTaskSuccess:
    """``send_task_success`` over a boto3 Step Functions client. A token whose task already finished or timed out
    is not an error here (a second submit, or a cancel racing the timeout)."""

    def send(token: str, output: dict) -> None:
        try:
            sfn_client.send_task_success(taskToken=token, output=json.dumps(output))
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("TaskTimedOut", "InvalidToken", "TaskDoesNotExist"):
                log.info("task token no longer live (%s)", code)
                return
            raise

    return send


_KEYS: dict[tuple[str, str], WalletKeys] = {}


def _keys(svc: Services) -> WalletKeys:
    if not svc.deposit_account_key:
        raise RuntimeError("no deposit account key configured")
    cache_key = (svc.deposit_account_key, svc.network)
    if cache_key not in _KEYS:
        _KEYS[cache_key] = WalletKeys.from_account_key(svc.deposit_account_key, _network(svc))
    return _KEYS[cache_key]


def _network(svc: Services) -> Network:
    return Network.from_name(svc.network)


def _load_batch(svc: Services, batch_id: object) -> Batch:
    if not isinstance(batch_id, str) or not batch_id.startswith("bat_") or len(batch_id) > 64:
        raise PayoutBatchNotFound("no such payout batch")
    batch = svc.payouts.get_batch(batch_id)
    if batch is None:
        raise PayoutBatchNotFound(f"payout batch {batch_id} not found")
    return batch


def _known(rpc: Any, txid: str) -> bool:
    try:
        rpc.getrawtransaction(txid)
        return True
    except BitcoinTxNotFound:
        return False


def _age_s(then: str, now: str) -> float:
    def parse(s: str) -> datetime:
        return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ")

    return (parse(now) - parse(then)).total_seconds()
