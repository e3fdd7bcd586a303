"""The operator's calls on payout batches: list and read them, export and submit PSBTs for the external
signer, and RBF fee bumps."""
from __future__ import annotations

from dataclasses import replace
import logging
from typing import Any

from satflow.domain import errors
from satflow.domain.audit import ADMIN_ACTOR, AuditEntry
from satflow.domain.accounts import Principal
from satflow.domain.bitcoin import TransactionRejected
from satflow.domain.onchain import PayoutStatus
from satflow.domain.payouts import (
    Batch, BatchNotAwaitingSignature, BatchStatus, FeeBumpRejected, TxVariant, build_psbt, finalize_external,
    plan_replacement,
)

from ..accounts import require_admin
from ..audit import with_audit
from ..ports import Services
from .common import SendTaskSuccess, _keys, _load_batch, _route
from .workflow import _broadcast_outbox, _sign_hot

log = logging.getLogger(__name__)


def get_batch(svc: Services, principal: Principal, batch_id: object) -> Batch:
    require_admin(principal)
    return _load_batch(svc, batch_id)


def list_open_batches(svc: Services, principal: Principal) -> list[Batch]:
    require_admin(principal)
    found = [svc.payouts.get_batch(bid) for bid in svc.payouts.open_batch_ids()]
    return sorted((b for b in found if b is not None), key=lambda b: (b.created_at, b.batch_id))


def batch_view(b: Batch) -> dict[str, Any]:
    current = b.current
    awaiting = b.status is BatchStatus.SIGNING or (b.pending_replacement is not None
                                                   and b.pending_replacement.signed_hex is None)
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
    if batch.pending_replacement is not None and batch.pending_replacement.signed_hex is not None:
        raise FeeBumpRejected("a replacement is being broadcast; try again when the batch shows it")
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
    """Submit a signed replacement. Announce and audit only what happened:

    1. record it as *submitting* (``pending_replacement`` with its signature; no event, no audit record), so a
       crash after the broadcast is recoverable: ``step_check`` finds it on the node and records it, or
       rebroadcasts it when the node knows no variant;
    2. ``sendrawtransaction``;
    3. accepted: the variant, the payouts' txid and shares, the ``payout.broadcast`` events and the audit record in
       ONE transaction (:func:`record_replacement`). Refused (e.g. the original just confirmed): the submitting
       mark is removed and the refusal audited; nothing announced names the refused transaction."""
    action, details = audit or ("payout_batch.replacement_submitted", {"txid": variant.txid})
    if variant.txid in batch.txids:  # recorded before: a repeated submit only (re)broadcasts
        _broadcast_known(svc, variant)
        return batch
    submitting = replace(batch, pending_replacement=variant, updated_at=svc.clock())
    svc.payouts.run(svc.payouts.save_batch_items(submitting, batch))
    submitting = replace(submitting, version=batch.version + 1)
    try:
        svc.bitcoind().sendrawtransaction(variant.signed_hex, variant.txid)
    except TransactionRejected as exc:
        reason = exc.details.get("reject_reason", exc.message)
        withdraw_replacement(svc, submitting, reason)
        raise FeeBumpRejected(f"the node refused the replacement: {reason}", txid=variant.txid) from exc
    return record_replacement(svc, submitting, (action, details))


def record_replacement(svc: Services, batch: Batch, audit: tuple[str, dict] | None = None) -> Batch:
    """The node has the submitting replacement (``batch.pending_replacement``, signed): record it as the batch's
    current variant with its events and audit record, in one transaction. ``step_check`` calls it too, after a
    crash between the broadcast and this write. Returns the batch as stored."""
    variant = batch.pending_replacement
    assert variant is not None and variant.signed_hex is not None
    action, details = audit or ("payout_batch.replacement_broadcast",
                                {"txid": variant.txid, "replaces": batch.current.txid, "fee_sat": variant.fee_sat})
    now = svc.clock()
    payouts = [p for p in svc.payouts.get_payouts(batch.payout_ids) if p.batch_id == batch.batch_id]
    recorded = replace(batch, variants=batch.variants + (replace(variant, broadcast_at=now),),
                       pending_replacement=None, updated_at=now)
    _run_admin_action(svc, action, recorded, details,
                      svc.payouts.save_batch_items(recorded, batch)
                      + svc.payouts.move_payouts_items(batch, payouts, PayoutStatus.BROADCAST,
                                                       [PayoutStatus.BROADCAST], now, txid=variant.txid,
                                                       shares=dict(variant.shares))
                      + _broadcast_outbox(svc, payouts, variant.txid, now, replaces=batch.current.txid))
    return replace(recorded, version=batch.version + 1)


def withdraw_replacement(svc: Services, batch: Batch, reason: str) -> Batch:
    """The node refused the submitting replacement: it is removed (audited as refused); nothing was announced."""
    variant = batch.pending_replacement
    assert variant is not None
    withdrawn = replace(batch, pending_replacement=None, updated_at=svc.clock())
    _run_admin_action(svc, "payout_batch.fee_bump_refused", withdrawn,
                      {"txid": variant.txid, "replaces": batch.current.txid, "reason": reason},
                      svc.payouts.save_batch_items(withdrawn, batch))
    return replace(withdrawn, version=batch.version + 1)


def _broadcast_known(svc: Services, variant: TxVariant) -> None:
    try:
        svc.bitcoind().sendrawtransaction(variant.signed_hex, variant.txid)
    except TransactionRejected as exc:  # recorded earlier; confirmed or replaced since: nothing to undo
        log.info("rebroadcast of recorded replacement %s refused: %s", variant.txid, exc.message)
