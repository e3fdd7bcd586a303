"""The steps of the payout workflow (statemachines/payout.asl.json): prepare, sign hot, await the external
signature, broadcast, check confirmations, post, abandon."""
from __future__ import annotations

import logging

from dataclasses import replace
from typing import Any

from satflow.domain import errors
from satflow.domain.bitcoin import BitcoinTxNotFound, TransactionInputsMissing, TransactionRejected
from satflow.domain.ledger import post_pending
from satflow.domain.money import MSAT_PER_SAT
from satflow.domain.onchain import PayoutStatus
from satflow.domain.payouts import Batch, BatchStatus, Payout, TxVariant, sign_hot, txid_of_raw
from satflow.domain.templates import payout_fee_overrun
from satflow.domain.webhooks import payout_broadcast_event

from .. import webhooks
from ..ports import Services
from .common import ALIVE, IN_BATCH, SendTaskSuccess, _known, _load_batch, _route, _route_for

log = logging.getLogger(__name__)


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


def step_check(svc: Services, batch_id: str, attempt: int = 0) -> dict[str, Any]:
    """Which variant (original or replacement) has ``svc.payout_confirmations`` (the one configured depth: the
    workflow and the batcher's recovery both come here): POST it; otherwise WAIT. A replacement left *submitting*
    (signed, recorded without events: a crash between its broadcast and its recording) that the node knows is
    recorded now, with its events and audit record. If the node knows none of them (evicted, or that crash
    before the broadcast), the newest signed one is broadcast again."""
    batch = _load_batch(svc, batch_id)
    if batch.status is not BatchStatus.BROADCAST:
        return _route_for(svc, batch)
    rpc = svc.bitcoind()
    confirmations = svc.payout_confirmations
    submitting = batch.pending_replacement if (batch.pending_replacement is not None
                                               and batch.pending_replacement.signed_hex is not None) else None
    if submitting is not None:
        batch = _finish_submitting(svc, batch, submitting, rpc)
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


def _finish_submitting(svc: Services, batch: Batch, submitting: TxVariant, rpc: Any) -> Batch:
    """A replacement left *submitting* by a crash (before or after its broadcast): broadcast it (already known =
    success), then record it with its events and audit record; a refusal withdraws it (audited), as the admin
    call would have."""
    from .admin import record_replacement, withdraw_replacement  # admin builds on this module's helpers

    try:
        if not _known(rpc, submitting.txid):
            rpc.sendrawtransaction(submitting.signed_hex, submitting.txid)
        return record_replacement(svc, batch)
    except TransactionRejected as exc:
        log.warning("payout batch %s: submitting replacement %s refused: %s", batch.batch_id, submitting.txid,
                    exc.message)
        return withdraw_replacement(svc, batch, exc.details.get("reject_reason", exc.message))
    except errors.Conflict:  # recorded (or withdrawn) by a concurrent writer: what is stored now counts
        return _load_batch(svc, batch.batch_id)


def step_post(svc: Services, batch_id: str, txid: str) -> dict[str, Any]:
    """The variant ``txid`` confirmed: each payout posts amount + its share of that variant's fee (one ledger
    transaction each; the rest of the reserve returns), then the batch is CONFIRMED and its inputs SPENT. The
    change output is recorded as a UTXO by the chain monitor. Idempotent.

    The depth is checked here again, whoever asks (the workflow's Post, the batcher's recovery, an operator's
    replayed input): below ``svc.payout_confirmations`` nothing is posted and the answer is WAIT."""
    batch = _load_batch(svc, batch_id)
    if batch.status is BatchStatus.CONFIRMED:
        return _route(batch_id, "DONE", status=batch.status.value)
    if batch.status is not BatchStatus.BROADCAST:
        raise errors.Conflict(f"batch {batch_id} is {batch.status.value}, not broadcast")
    variant = batch.variant(txid)
    try:
        depth = svc.bitcoind().getrawtransaction(txid).confirmations
    except BitcoinTxNotFound:
        depth = 0
    if depth < svc.payout_confirmations:
        log.warning("payout batch %s: %s has %d of %d confirmations, not posted", batch_id, txid, depth,
                    svc.payout_confirmations)
        return _route(batch_id, "WAIT")
    for payout in svc.payouts.get_payouts(batch.payout_ids):
        if payout.status is PayoutStatus.CONFIRMED or payout.batch_id != batch_id:
            continue
        share = _charged_share(svc, payout, variant.shares[payout.payout_id])
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
        svc.payouts.run(svc.payouts.save_batch_items(done, batch) + svc.utxos.spend_items(batch.inputs, batch_id)
                        + _supersede_items(svc, batch))
    except errors.Conflict:
        if _load_batch(svc, batch_id).status is not BatchStatus.CONFIRMED:
            raise
    return _route(batch_id, "DONE", status=BatchStatus.CONFIRMED.value, txid=txid)


def _charged_share(svc: Services, payout: Payout, share: int) -> int:
    """What the user pays of ``share``: at most the reserve. Never built that way (the batcher and fee bumps plan
    within reserves); if it ever is, the excess is booked as our expense first (idempotent by id, so a crash
    before the post cannot lose it and a re-run replays it), never dropped: the hot wallet paid it on-chain."""
    if share <= payout.fee_reserve_sat:
        return share
    log.error("payout %s fee share %d above its reserve %d", payout.payout_id, share, payout.fee_reserve_sat)
    svc.ledger.execute(payout_fee_overrun(payout_id=payout.payout_id, amount_sat=share - payout.fee_reserve_sat,
                                          created_at=svc.clock(), shards=svc.system_shards))
    return payout.fee_reserve_sat


def _supersede_items(svc: Services, batch: Batch) -> list:
    """The abandoned batches ``batch`` succeeds (it spends all their inputs): their transactions can never
    confirm now, so they leave the open index as SUPERSEDED."""
    items: list = []
    seen: set[str] = set()
    ancestor_id = batch.supersedes
    while ancestor_id and ancestor_id not in seen:
        seen.add(ancestor_id)
        ancestor = svc.payouts.get_batch(ancestor_id)
        if ancestor is None or ancestor.status is not BatchStatus.ABANDONED:
            break
        items += svc.payouts.save_batch_items(replace(ancestor, status=BatchStatus.SUPERSEDED,
                                                      updated_at=svc.clock()), ancestor, tag=f"batch:{ancestor_id}")
        ancestor_id = ancestor.supersedes
    return items


def step_abandon(svc: Services, batch_id: str) -> dict[str, Any]:
    """The external signer did not answer in time. A batch still BUILT never left satflow: cancelled (inputs
    released, payouts re-queued). A SIGNING one is with the signer, who may still sign and broadcast it: ABANDONED
    (see :func:`_cancel_batch`). A batch signed meanwhile carries on instead."""
    batch = _load_batch(svc, batch_id)
    if batch.status in (BatchStatus.BUILT, BatchStatus.SIGNING):
        try:
            _cancel_batch(svc, batch, None, reason="signature timed out")
        except errors.Conflict:
            pass
        batch = _load_batch(svc, batch_id)
    return _route_for(svc, batch)


def _cancel_batch(svc: Services, batch: Batch, send_task_success: SendTaskSuccess | None, reason: str) -> None:
    """Take the payouts back out of an unsigned batch. Rule: never free inputs that a signed transaction may
    spend. Only a batch whose PSBT never left satflow (BUILT, and not the successor of an abandoned one: its
    inputs are the abandoned transaction's) is CANCELED with its inputs released. Otherwise it is ABANDONED: the
    inputs stay reserved and the payouts are re-queued bound to it, so their next transaction spends all the same
    inputs and at most one of the two can ever confirm."""
    now = svc.clock()
    payouts = [p for p in svc.payouts.get_payouts(batch.payout_ids)
               if p.batch_id == batch.batch_id and p.status in IN_BATCH]
    exported = batch.status is not BatchStatus.BUILT or batch.supersedes is not None
    if exported:
        abandoned = replace(batch, status=BatchStatus.ABANDONED, task_token=None, updated_at=now)
        svc.payouts.run(svc.payouts.save_batch_items(abandoned, batch)
                        + svc.payouts.requeue_items(batch, payouts, now, must_spend_inputs_of=batch.batch_id))
        log.warning("payout batch %s abandoned (%s): inputs kept, %d payouts re-queued to spend them",
                    batch.batch_id, reason, len(payouts))
    else:
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


# ============================================================================ abandoned batches seen on the chain
def adopt_abandoned_transaction(svc: Services, abandoned: Batch, txid: str) -> dict[str, Any]:
    """The external signer (or a late submit) broadcast an ABANDONED batch's transaction after all, and it reached
    the posting depth. Its payouts were paid by it: each posts amount + its share of that transaction's fee (from
    wherever it was re-queued to). Every batch that succeeded it can never confirm (they spend the same inputs):
    SUPERSEDED; the inputs it spent are SPENT, its successors' other inputs are released. Idempotent."""
    if abandoned.status is not BatchStatus.ABANDONED:
        return _route_for(svc, abandoned)
    variant = abandoned.variant(txid)
    depth = svc.bitcoind().getrawtransaction(txid).confirmations
    if depth < svc.payout_confirmations:
        return _route(abandoned.batch_id, "WAIT")
    for payout in svc.payouts.get_payouts(abandoned.payout_ids):
        if payout.status not in (PayoutStatus.QUEUED,) + ALIVE:
            continue
        share = _charged_share(svc, payout, variant.shares[payout.payout_id])
        now = svc.clock()
        transfer = post_pending(svc.ledger.get_transfer(payout.payout_id), transfer_id=f"{payout.payout_id}:post",
                                created_at=now, amount=(payout.amount_sat + share) * MSAT_PER_SAT)
        extra = svc.payouts.finish_payout_items(payout, PayoutStatus.CONFIRMED, (PayoutStatus.QUEUED,) + ALIVE, now,
                                                txid=txid, fee_sat=share)
        try:
            svc.ledger.execute(transfer, extra)
        except errors.PendingAlreadyResolved:
            log.error("payout %s was resolved by another transfer", payout.payout_id)
    now = svc.clock()
    descendants = _descendants(svc, abandoned.batch_id)
    spent = {u.outpoint for u in abandoned.inputs}
    items = svc.payouts.save_batch_items(replace(abandoned, status=BatchStatus.CONFIRMED, confirmed_txid=txid,
                                                 updated_at=now), abandoned)
    for d in descendants:
        items += svc.payouts.save_batch_items(replace(d, status=BatchStatus.SUPERSEDED, task_token=None,
                                                      pending_replacement=None, updated_at=now), d,
                                              tag=f"batch:{d.batch_id}")
    for u in {u.outpoint: u for b in (abandoned, *descendants) for u in b.inputs}.values():
        stored = svc.utxos.get(u.txid, u.vout)
        if stored is None or stored.reserved_by is None:
            continue
        if u.outpoint in spent:
            items += svc.utxos.spend_items([u], stored.reserved_by)
        else:
            items += svc.utxos.release_items([u], stored.reserved_by)
    svc.payouts.run(items)
    log.error("abandoned payout batch %s: its transaction %s confirmed; %d successor batch(es) superseded",
              abandoned.batch_id, txid, len(descendants))
    return _route(abandoned.batch_id, "DONE", status=BatchStatus.CONFIRMED.value, txid=txid)


def _descendants(svc: Services, batch_id: str) -> list[Batch]:
    """Open batches built (directly or through other abandoned ones) to spend ``batch_id``'s inputs."""
    open_batches = [b for b in (svc.payouts.get_batch(i) for i in svc.payouts.open_batch_ids()) if b is not None]
    found: list[Batch] = []
    parents = {batch_id}
    while True:
        more = [b for b in open_batches if b.supersedes in parents and b not in found]
        if not more:
            return found
        found += more
        parents = {b.batch_id for b in more}


def on_our_input_spent(svc: Services, outpoint: str, spending_txid: str) -> str:
    """For the chain monitor, when a transaction spends one of our recorded outputs: whose spend is it?

    ``"batch"``: a variant of the batch holding it (the normal case). ``"abandoned_batch"``: the transaction of an
    ABANDONED batch this output was handed over from (the signer broadcast it after all): the payout side knows,
    logs it and emits ``PayoutAbandonedTransactionSeen``; the batcher's recovery adopts it at the posting depth.
    ``"unknown"``: not a transaction of ours (the monitor's foreign-spend alarm applies). Reads only."""
    txid, _, vout = outpoint.rpartition(":")
    utxo = svc.utxos.get(txid, int(vout)) if vout.isdigit() else None
    batch = svc.payouts.get_batch(utxo.reserved_by) if utxo is not None and utxo.reserved_by else None
    seen: set[str] = set()
    first = True
    while batch is not None and batch.batch_id not in seen:
        seen.add(batch.batch_id)
        if spending_txid in batch.txids:
            if first:
                return "batch"
            _abandoned_transaction_seen(svc, batch, spending_txid)
            return "abandoned_batch"
        first = False
        batch = svc.payouts.get_batch(batch.supersedes) if batch.supersedes else None
    return "unknown"


def abandoned_predecessors(svc: Services, holder: Batch | None) -> list[Batch]:
    """The ABANDONED batches ``holder`` took its inputs over from, nearest first: their signer may still broadcast
    them (the batcher adopts one that confirms, at the posting depth). The supersedes chain of
    :func:`on_our_input_spent`. Reads only."""
    found: list[Batch] = []
    seen = {holder.batch_id} if holder is not None else set()
    batch = svc.payouts.get_batch(holder.supersedes) if holder is not None and holder.supersedes else None
    while batch is not None and batch.batch_id not in seen:
        seen.add(batch.batch_id)
        if batch.status is BatchStatus.ABANDONED:
            found.append(batch)
        batch = svc.payouts.get_batch(batch.supersedes) if batch.supersedes else None
    return found


def unposted_batch_spending(svc: Services, holder: Batch | None, outpoint: str) -> Batch | None:
    """For the solvency check, when an output held by ``holder`` is gone from the chain: the batch of ours not
    posted yet whose transaction may have spent it — the holder once SIGNED (the broadcast step sends before it
    records BROADCAST) or BROADCAST, or an ABANDONED batch it took the output over from. None: nothing of ours
    explains the spend."""
    if holder is None:
        return None
    if holder.status in (BatchStatus.SIGNED, BatchStatus.BROADCAST):
        return holder
    return next((b for b in abandoned_predecessors(svc, holder) if any(u.outpoint == outpoint for u in b.inputs)),
                None)


def _abandoned_transaction_seen(svc: Services, batch: Batch, txid: str) -> None:
    log.error("abandoned payout batch %s: its transaction %s reached the network", batch.batch_id, txid)
    if svc.emit_metric is not None:
        svc.emit_metric("PayoutAbandonedTransactionSeen", 1)
