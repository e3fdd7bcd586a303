"""Recovery and clean-up paths obey the same rules as the main flow (issue 11): one confirmation depth for the
workflow and the batcher's recovery, nothing posted below it."""
from __future__ import annotations

from satflow.app import payouts
from satflow.domain.onchain import PayoutStatus
from satflow.domain.payouts import BatchStatus

from .conftest import external_address


def _broadcast_and_abandoned_by_its_workflow(flow, amount_sat=100_000):
    flow.mine_after_broadcast = False
    flow.wait_s = 0
    flow.max_checks = 1  # the workflow gives up at its first check: the batcher's recovery is what is left
    flow.seed_utxos(500_000)
    user = flow.new_account(funds_sat=500_000)
    p = flow.payout(user, external_address(60), amount_sat)
    payouts.run_batcher(flow.svc)
    (batch_id,) = flow.started
    assert flow.wait(batch_id).final_state == "NeedsAttention"
    assert flow.batch(batch_id).status is BatchStatus.BROADCAST
    return batch_id, user, p


def test_the_fixture_runs_at_the_production_depth(flow):
    from satflow import config

    config.reset()
    try:
        assert flow.svc.payout_confirmations == config.settings().payout_confirmations >= 3
    finally:
        config.reset()


def test_the_batchers_recovery_never_posts_below_the_configured_depth(flow):
    batch_id, user, p = _broadcast_and_abandoned_by_its_workflow(flow)
    depth = flow.svc.payout_confirmations
    flow.confirm(depth - 1)  # one block short
    payouts.run_batcher(flow.svc, recover_after_s=0)
    assert flow.batch(batch_id).status is BatchStatus.BROADCAST
    assert flow.get(p.payout_id).status is PayoutStatus.BROADCAST
    assert flow.balance(user.account_id)[1] > 0  # still pending: nothing posted
    flow.confirm(1)
    payouts.run_batcher(flow.svc, recover_after_s=0)
    assert flow.batch(batch_id).status is BatchStatus.CONFIRMED
    final = flow.get(p.payout_id)
    assert final.status is PayoutStatus.CONFIRMED
    assert flow.balance(user.account_id) == ((500_000 - final.amount_sat - final.fee_sat) * 1000, 0)
    flow.assert_invariants()


def test_post_checks_the_depth_itself_whoever_calls_it(flow):
    batch_id, user, p = _broadcast_and_abandoned_by_its_workflow(flow)
    txid = flow.batch(batch_id).current.txid
    flow.confirm(1)
    assert payouts.step_post(flow.svc, batch_id, txid)["next"] == "WAIT"  # e.g. a replayed Post input
    assert flow.batch(batch_id).status is BatchStatus.BROADCAST
    assert flow.get(p.payout_id).status is PayoutStatus.BROADCAST
    flow.confirm()
    assert payouts.step_post(flow.svc, batch_id, txid)["next"] == "DONE"
    assert flow.get(p.payout_id).status is PayoutStatus.CONFIRMED
    flow.assert_invariants()
