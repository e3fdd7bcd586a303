"""The batcher (MonitorFunction job ``payout_batcher``): QUEUED payouts into one transaction per priority, and the
recovery of batches a workflow left."""
from __future__ import annotations

import logging

from satflow.domain import errors
from satflow.domain.bitcoin import BitcoinTxNotFound, FeeEstimateMode
from satflow.domain.coin_selection import selection_candidates, with_required_inputs
from satflow.domain.onchain import HOT_WALLET_OWNER, PayoutStatus, Priority
from satflow.domain.payouts import (
    MAX_BATCH_PAYOUTS, MAX_TX_ITEMS, Batch, BatchStatus, ChangeOutput, Payout, TxVariant, batch_id_for,
    build_psbt, fee_rate_for, fee_shares, shares_within_reserves,
)

from ..ports import Services
from .common import CHANGE_CHAIN, MAX_BATCHES_PER_RUN, RECOVER_AFTER_S, _age_s, _keys
from .workflow import (
    _abandoned_transaction_seen, adopt_abandoned_transaction, step_broadcast, step_check, step_post,
)

log = logging.getLogger(__name__)


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
    # Payouts of an abandoned batch first, each group in its own successor spending all the abandoned inputs.
    bound: dict[str, list[Payout]] = {}
    for p in queued:
        if p.must_spend_inputs_of:
            bound.setdefault(p.must_spend_inputs_of, []).append(p)
    queued = [p for p in queued if not p.must_spend_inputs_of]
    for abandoned_id, members in sorted(bound.items()):
        if counts["batches"] >= MAX_BATCHES_PER_RUN:
            counts["deferred"] += len(members)
            continue
        batch = _build_successor(svc, abandoned_id, members, pool, rpc)
        if batch is None:
            counts["deferred"] += len(members)
            continue
        used = {u.outpoint for u in batch.inputs}
        pool = [u for u in pool if u.outpoint not in used]
        counts["batches"] += 1
        counts["batched"] += len(batch.payout_ids)
        svc.start_payout(batch.batch_id)
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
    return _record_batch(svc, members, selection, shares, priority, rate)


def _record_batch(svc: Services, members: list[Payout], selection, shares: dict[str, int], priority: Priority,
                  rate: int, abandoned: Batch | None = None) -> Batch | None:
    """Build the PSBT and store the batch, its input reservations and its payouts (BATCHED) in one transaction.
    A successor takes over the abandoned batch's inputs (never AVAILABLE in between) and reserves the others."""
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
                  created_at=now, updated_at=now, selection=selection.algorithm,
                  supersedes=abandoned.batch_id if abandoned else None)
    held = {u.outpoint for u in abandoned.inputs} if abandoned else set()
    inputs_items = svc.utxos.reserve_items([u for u in selection.inputs if u.outpoint not in held], batch.batch_id)
    if abandoned is not None:
        inputs_items += svc.utxos.handover_items(abandoned.inputs, abandoned.batch_id, batch.batch_id)
    items = (svc.payouts.new_batch_items(batch) + inputs_items
             + svc.payouts.batch_payouts_items(batch, members, shares, now))
    try:
        svc.payouts.run(items)
    except errors.Conflict as exc:  # a payout was cancelled or an output taken meanwhile: next run
        log.warning("payout batch %s not built: %s", batch.batch_id, exc.message)
        return None
    log.info("payout batch %s built: %d payouts, %d inputs, fee %d sat (%s)", batch.batch_id, len(members),
             len(selection.inputs), selection.fee_sat, selection.algorithm)
    return batch


def _build_successor(svc: Services, abandoned_id: str, members: list[Payout], pool: list, rpc) -> Batch | None:
    """The payouts of an abandoned batch, in a transaction that spends ALL its inputs (plus others if the fee
    rose): if the abandoned transaction is ever signed and broadcast, at most one of the two confirms. At the
    current rate, else at the abandoned transaction's own rate (it fit their reserves); else they wait."""
    abandoned = svc.payouts.get_batch(abandoned_id)
    if abandoned is None or abandoned.status is not BatchStatus.ABANDONED:
        log.error("payouts bound to batch %s wait: it is %s, not ABANDONED", abandoned_id,
                  abandoned.status.value if abandoned else "missing")
        return None
    members = sorted(members, key=lambda p: p.payout_id)
    estimate, _ = fee_rate_for(abandoned.priority,
                               rpc.estimatesmartfee(abandoned.priority.conf_target, FeeEstimateMode.ECONOMICAL))
    for rate in dict.fromkeys((estimate, abandoned.current.fee_rate)):
        selection = with_required_inputs(abandoned.inputs, pool, amount_sat=sum(p.amount_sat for p in members),
                                         output_kinds=[p.kind for p in members], fee_rate=rate,
                                         max_inputs=MAX_TX_ITEMS - 2 - len(members))
        if selection is None:
            continue
        shares = fee_shares(selection.fee_sat, {p.payout_id: p.output_vbytes for p in members}, selection.vbytes)
        if not shares_within_reserves(shares, members):
            return _record_batch(svc, members, selection, shares, abandoned.priority, rate, abandoned)
    log.warning("the successor of abandoned batch %s (%d payouts) cannot be funded within their reserves yet",
                abandoned_id, len(members))
    return None


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


def _watch_abandoned(svc: Services, batch: Batch) -> bool:
    """Did the external signer broadcast the abandoned transaction after all? Seen: an error log and the
    ``PayoutAbandonedTransactionSeen`` metric; at the posting depth it is adopted (its payouts post with it)."""
    rpc = svc.bitcoind()
    for variant in batch.variants:
        try:
            info = rpc.getrawtransaction(variant.txid)
        except BitcoinTxNotFound:
            continue
        _abandoned_transaction_seen(svc, batch, variant.txid)
        if info.confirmations >= svc.payout_confirmations:
            adopt_abandoned_transaction(svc, batch, variant.txid)
            return True
    return False


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
            elif batch.status is BatchStatus.ABANDONED:
                if not _watch_abandoned(svc, batch):
                    continue
            elif batch.status is BatchStatus.BROADCAST:
                decision = step_check(svc, batch_id)  # at svc.payout_confirmations, like the workflow
                if decision["next"] == "POST":
                    step_post(svc, batch_id, decision["txid"])
            else:
                continue
            recovered += 1
        except errors.SatflowError as exc:
            log.error("payout batch %s recovery failed: %s", batch_id, exc.message)
    return recovered
