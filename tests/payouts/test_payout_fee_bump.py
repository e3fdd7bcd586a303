"""Fee bump (BIP125 RBF): the replacement pays more from the change, replaces the original in the mempool and
confirms; the workflow posts whichever variant confirmed. Plus the batcher's recovery of a workflow that gave up."""
from __future__ import annotations

import pytest
from embit import bip32
from embit.psbt import PSBT

from satflow.app import payouts
from satflow.domain.bitcoin import BitcoinTxNotFound
from satflow.domain.onchain import PayoutStatus
from satflow.domain.payouts import BatchNotAwaitingSignature, BatchStatus, FeeBumpRejected

from .conftest import ADMIN, TEST_ACCOUNT_TPRV, external_address


def _broadcast_batch(flow, *amounts):
    flow.mine_after_broadcast = False
    flow.wait_s = 1
    flow.seed_utxos(800_000)
    users = [flow.new_account(funds_sat=500_000) for _ in amounts]
    ps = [flow.payout(u, external_address(40 + i), a) for i, (u, a) in enumerate(zip(users, amounts))]
    payouts.run_batcher(flow.svc)
    (batch_id,) = flow.started
    flow.wait_for(lambda: flow.batch(batch_id).status is BatchStatus.BROADCAST, what="BROADCAST")
    return batch_id, users, ps


def _sign_externally(exported: str) -> str:
    psbt = PSBT.from_base64(exported)
    assert psbt.sign_with(bip32.HDKey.from_string(TEST_ACCOUNT_TPRV)) == len(psbt.inputs)
    return psbt.to_base64()


def batch_audit(flow, batch_id):
    """The admin actions on a batch, in chain order (a batch's records share one chain)."""
    from tests.audit.helpers import sealed_records

    return [r for r in sealed_records(flow.svc) if r.subject_ids[:1] == (batch_id,)]


def test_fee_bump_replaces_the_transaction_and_the_replacement_confirms(flow):
    batch_id, users, ps = _broadcast_batch(flow, 100_000, 150_000)
    original = flow.batch(batch_id).current
    assert flow.sim.mempool_txids() == [original.txid]

    with pytest.raises(FeeBumpRejected):  # not higher than the current rate
        payouts.bump_fee(flow.svc, ADMIN, batch_id, original.fee_rate)
    with pytest.raises(FeeBumpRejected):  # would exceed the payouts' fee reserves
        payouts.bump_fee(flow.svc, ADMIN, batch_id, 200)

    bumped = payouts.bump_fee(flow.svc, ADMIN, batch_id, 20)
    replacement = bumped.current
    assert bumped.txids == (original.txid, replacement.txid)
    assert replacement.fee_sat > original.fee_sat and replacement.change_sat < original.change_sat
    assert replacement.fee_sat - original.fee_sat == original.change_sat - replacement.change_sat  # change pays
    assert sum(replacement.shares.values()) == replacement.fee_sat
    assert flow.sim.mempool_txids() == [replacement.txid]  # the original was evicted
    with pytest.raises(BitcoinTxNotFound):
        flow.rpc.getrawtransaction(original.txid)
    assert {flow.get(p.payout_id).txid for p in ps} == {replacement.txid}

    flow.confirm()
    assert flow.wait(batch_id).final_state == "Done"
    batch = flow.batch(batch_id)
    assert batch.status is BatchStatus.CONFIRMED and batch.confirmed_txid == replacement.txid
    block = flow.sim.confirmed_block_of(replacement.txid)
    assert block.fees[replacement.txid] == replacement.fee_sat
    final = [flow.get(p.payout_id) for p in ps]
    assert sum(p.fee_sat for p in final) == replacement.fee_sat
    for user, p in zip(users, final):
        assert p.txid == replacement.txid and p.fee_sat <= p.fee_reserve_sat
        assert flow.balance(user.account_id) == ((500_000 - p.amount_sat - p.fee_sat) * 1000, 0)
    with pytest.raises(FeeBumpRejected):  # confirmed: nothing to bump
        payouts.bump_fee(flow.svc, ADMIN, batch_id, 30)
    flow.assert_invariants()
    bumps = batch_audit(flow, batch_id)
    assert [(r.action, r.actor, r.details["txid"], r.details["replaces"]) for r in bumps] == [
        ("payout_batch.fee_bumped", "admin", replacement.txid, original.txid)]


def test_fee_bump_above_the_hot_limit_waits_for_the_external_signer(flow):
    batch_id, users, ps = _broadcast_batch(flow, 120_000)
    flow.svc.hot_sign_limit_sat = 1_000  # from now on the batch is above the hot limit
    original = flow.batch(batch_id).current
    waiting = payouts.bump_fee(flow.svc, ADMIN, batch_id, 15)
    assert waiting.pending_replacement is not None and waiting.txids == (original.txid,)
    assert flow.sim.mempool_txids() == [original.txid]  # the original stays until the signature arrives
    exported = payouts.export_psbt(flow.svc, ADMIN, batch_id)
    batch = payouts.submit_signed_psbt(flow.svc, ADMIN, batch_id, _sign_externally(exported),
                                       send_task_success=flow.send_task_success)
    replacement = batch.current
    assert replacement.txid == waiting.pending_replacement.txid and batch.pending_replacement is None
    assert flow.sim.mempool_txids() == [replacement.txid]
    with pytest.raises(BatchNotAwaitingSignature):
        payouts.export_psbt(flow.svc, ADMIN, batch_id)
    flow.confirm()
    assert flow.wait(batch_id).final_state == "Done"
    assert flow.batch(batch_id).confirmed_txid == replacement.txid
    flow.assert_invariants()
    assert [r.action for r in batch_audit(flow, batch_id)] == ["payout_batch.fee_bumped",
                                                               "payout_batch.replacement_submitted"]


def test_the_original_confirming_before_a_pending_replacement_is_posted_with_its_own_fee(flow):
    batch_id, users, ps = _broadcast_batch(flow, 90_000, 80_000)
    flow.svc.hot_sign_limit_sat = 1_000
    original = flow.batch(batch_id).current
    payouts.bump_fee(flow.svc, ADMIN, batch_id, 25)  # waits for a signature that never comes
    flow.confirm()
    assert flow.wait(batch_id).final_state == "Done"
    batch = flow.batch(batch_id)
    assert batch.confirmed_txid == original.txid and batch.pending_replacement is None
    final = [flow.get(p.payout_id) for p in ps]
    assert sum(p.fee_sat for p in final) == original.fee_sat
    assert {p.txid for p in final} == {original.txid}
    flow.assert_invariants()


def test_the_batcher_finishes_a_batch_whose_workflow_gave_up(flow):
    flow.max_checks = 2
    batch_id, users, ps = _broadcast_batch(flow, 100_000)
    result = flow.wait(batch_id)
    assert result.final_state == "NeedsAttention"  # bounded: still BROADCAST, nothing undone
    assert flow.get(ps[0].payout_id).status is PayoutStatus.BROADCAST
    flow.confirm()
    assert payouts.run_batcher(flow.svc, recover_after_s=3600)["recovered"] == 0  # too young to touch
    assert payouts.run_batcher(flow.svc, recover_after_s=0)["recovered"] == 1
    assert flow.batch(batch_id).status is BatchStatus.CONFIRMED
    final = flow.get(ps[0].payout_id)
    assert final.status is PayoutStatus.CONFIRMED
    assert flow.balance(users[0].account_id) == ((500_000 - final.amount_sat - final.fee_sat) * 1000, 0)
    flow.assert_invariants()


def test_admin_operations_through_the_payout_function(flow):
    """An API can invoke PayoutFunction for bumps and submits, so the signer key and the node credentials never
    reach the API function."""
    from tests.flows.harness import LambdaContext

    batch_id, users, ps = _broadcast_batch(flow, 70_000)
    view = flow.handler({"step": "admin_bump_fee", "batch_id": batch_id, "sat_per_vb": 12},
                        LambdaContext(function_name="PayoutFunction"))
    assert len(view["txids"]) == 2 and view["fee_rate_sat_per_vb"] == 12 and view["status"] == "BROADCAST"
    assert flow.sim.mempool_txids() == [view["txid"]]
    flow.confirm()
    assert flow.wait(batch_id).final_state == "Done"
    assert flow.batch(batch_id).confirmed_txid == view["txid"]
    flow.assert_invariants()
