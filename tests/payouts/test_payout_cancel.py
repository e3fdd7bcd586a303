"""Cancelling payouts before signing: the whole reservation returns; a BUILT batch is cancelled and its other
payouts go back to the queue (and are batched again). Once the PSBT may be with the external signer, no cancel."""
from __future__ import annotations

import pytest

from satflow.app import payouts
from satflow.domain.accounts import ALL_SCOPES, Principal
from satflow.domain.onchain import PayoutStatus, UtxoStatus
from satflow.domain.payouts import BatchStatus, PayoutNotCancelable, PayoutNotFound

from .conftest import external_address


def _cancel(flow, principal, payout_id):
    return payouts.cancel_payout(flow.svc, principal, payout_id, send_task_success=flow.send_task_success)


def test_cancel_a_queued_payout_returns_everything(flow):
    user = flow.new_account(funds_sat=300_000)
    p = flow.payout(user, external_address(20), 100_000)
    assert flow.balance(user.account_id)[1] > 0
    cancelled = _cancel(flow, user, p.payout_id)
    assert cancelled.status is PayoutStatus.CANCELED
    assert flow.balance(user.account_id) == (300_000_000, 0)
    assert _cancel(flow, user, p.payout_id).status is PayoutStatus.CANCELED  # idempotent
    assert flow.svc.payouts.open_payout_ids() == []
    assert payouts.run_batcher(flow.svc)["queued"] == 0
    flow.assert_invariants()


def test_no_cancel_once_the_psbt_may_be_with_the_external_signer(flow):
    """Review finding: releasing the inputs of a batch whose PSBT left satflow let an externally signed
    transaction pay a refunded payout and the co-batched payouts twice. SIGNING is therefore final for cancels."""
    flow.svc.hot_sign_limit_sat = 1_000
    flow.seed_utxos(600_000)
    users = [flow.new_account(funds_sat=400_000) for _ in range(3)]
    ps = [flow.payout(u, external_address(21 + i), 100_000 + i * 1_000) for i, u in enumerate(users)]
    payouts.run_batcher(flow.svc)
    (first_batch,) = flow.started
    flow.wait_for(lambda: flow.batch(first_batch).status is BatchStatus.SIGNING, what="SIGNING")
    reserved = flow.balance(users[1].account_id)

    with pytest.raises(PayoutNotCancelable):
        _cancel(flow, users[1], ps[1].payout_id)
    batch = flow.batch(first_batch)
    assert batch.status is BatchStatus.SIGNING and batch.task_token is not None
    assert all(flow.svc.utxos.get(u.txid, u.vout).status is UtxoStatus.RESERVED for u in batch.inputs)
    assert flow.balance(users[1].account_id) == reserved
    assert flow.get(ps[1].payout_id).status is not PayoutStatus.CANCELED
    with pytest.raises(PayoutNotFound):  # someone else's payout
        _cancel(flow, users[0], ps[2].payout_id)
    flow.assert_invariants()


def test_cancel_a_batched_payout_before_its_workflow_runs(flow):
    flow.svc.start_payout = lambda batch_id: flow.started.append(batch_id)  # the workflow never starts
    flow.seed_utxos(500_000)
    user = flow.new_account(funds_sat=500_000)
    keep = flow.payout(user, external_address(30), 100_000)
    drop = flow.payout(user, external_address(31), 100_000)
    payouts.run_batcher(flow.svc)
    assert flow.get(drop.payout_id).status is PayoutStatus.BATCHED
    _cancel(flow, user, drop.payout_id)
    assert flow.batch(flow.started[0]).status is BatchStatus.CANCELED
    assert flow.get(keep.payout_id).status is PayoutStatus.QUEUED
    assert flow.balance(user.account_id)[1] == (keep.amount_sat + keep.fee_reserve_sat) * 1000
    flow.assert_invariants()


def test_no_cancel_once_broadcast_or_confirmed(flow):
    flow.mine_after_broadcast = False
    flow.wait_s = 1
    flow.seed_utxos(500_000)
    user = flow.new_account(funds_sat=500_000)
    p = flow.payout(user, external_address(32), 100_000)
    payouts.run_batcher(flow.svc)
    (batch_id,) = flow.started
    flow.wait_for(lambda: flow.get(p.payout_id).status is PayoutStatus.BROADCAST, what="BROADCAST")
    with pytest.raises(PayoutNotCancelable):
        _cancel(flow, user, p.payout_id)
    flow.confirm()
    assert flow.wait(batch_id).final_state == "Done"
    with pytest.raises(PayoutNotCancelable):
        _cancel(flow, user, p.payout_id)
    flow.assert_invariants()


def test_cancel_needs_the_send_scope(flow):
    user = flow.new_account(funds_sat=300_000)
    p = flow.payout(user, external_address(33), 100_000)
    from satflow.domain.errors import Forbidden

    with pytest.raises(Forbidden):
        _cancel(flow, Principal(user.account_id, frozenset(s for s in ALL_SCOPES if s.value != "send")), p.payout_id)


def test_signing_timeout_abandons_the_batch_and_requeues(flow):
    flow.svc.hot_sign_limit_sat = 1_000
    flow.signing_timeout_s = 1
    flow.seed_utxos(500_000)
    user = flow.new_account(funds_sat=500_000)
    p = flow.payout(user, external_address(34), 100_000)
    payouts.run_batcher(flow.svc)
    (batch_id,) = flow.started
    result = flow.wait(batch_id)
    assert "Abandon" in result.states and result.final_state == "Done", result
    batch = flow.batch(batch_id)
    assert batch.status is BatchStatus.ABANDONED  # the PSBT is with the signer: its inputs are never released
    assert all(flow.svc.utxos.get(u.txid, u.vout).status is UtxoStatus.RESERVED for u in batch.inputs)
    again = flow.get(p.payout_id)
    assert again.status is PayoutStatus.QUEUED and again.requeues == 1 and again.must_spend_inputs_of == batch_id
    flow.assert_invariants()
