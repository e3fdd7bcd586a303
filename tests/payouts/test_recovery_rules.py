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


# ------------------------------------------------------------------ item 2: announce and audit only what happened
def _events_naming(flow, txid):
    from .test_payout_webhooks import broadcast_events

    return [e for e in broadcast_events(flow) if e.data["txid"] == txid]


def _with_outbox(flow):
    from satflow.adapters.dynamodb.models import build_models
    from satflow.adapters.dynamodb.webhooks import DynamoWebhookStore

    from .conftest import REGION

    models = build_models(flow.svc.ledger._m.table_name, REGION, flow.moto.url)
    flow.svc.webhooks = DynamoWebhookStore(flow.moto.client("dynamodb"), models)


def test_a_refused_fee_bump_is_neither_announced_nor_audited_as_a_bump(flow):
    import pytest

    from satflow.domain.payouts import FeeBumpRejected

    from .conftest import ADMIN
    from .test_payout_fee_bump import _broadcast_batch, batch_audit

    _with_outbox(flow)
    batch_id, users, ps = _broadcast_batch(flow, 100_000, 150_000)
    original = flow.batch(batch_id).current
    flow.confirm(1)  # the original confirms (below the posting depth): the node must refuse any replacement
    with pytest.raises(FeeBumpRejected) as refused:
        payouts.bump_fee(flow.svc, ADMIN, batch_id, 20)
    replacement_txid = refused.value.details["txid"]
    assert _events_naming(flow, replacement_txid) == []  # nothing announced names a transaction that never left
    batch = flow.batch(batch_id)
    assert batch.txids == (original.txid,) and batch.pending_replacement is None
    assert {flow.get(p.payout_id).txid for p in ps} == {original.txid}
    assert [(r.action, r.details["txid"]) for r in batch_audit(flow, batch_id)] == [
        ("payout_batch.fee_bump_refused", replacement_txid)]
    flow.confirm()
    assert flow.wait(batch_id).final_state == "Done"
    assert flow.batch(batch_id).confirmed_txid == original.txid
    flow.assert_invariants()


def test_a_crash_between_broadcasting_a_replacement_and_recording_it_is_finished_by_the_check(flow, monkeypatch):
    import pytest

    from satflow.app.payouts import admin

    from .conftest import ADMIN
    from .test_payout_fee_bump import _broadcast_batch, batch_audit

    _with_outbox(flow)
    batch_id, users, ps = _broadcast_batch(flow, 100_000)
    original = flow.batch(batch_id).current

    def crash(*_args, **_kwargs):
        raise RuntimeError("the function died after sendrawtransaction")

    with monkeypatch.context() as m:
        m.setattr(admin, "record_replacement", crash)
        with pytest.raises(RuntimeError):
            payouts.bump_fee(flow.svc, ADMIN, batch_id, 20)
    submitting = flow.batch(batch_id).pending_replacement
    assert submitting is not None and submitting.signed_hex is not None
    assert flow.sim.mempool_txids() == [submitting.txid]  # it did leave...
    assert _events_naming(flow, submitting.txid) == [] and batch_audit(flow, batch_id) == []  # ...unrecorded
    flow.confirm()
    assert flow.wait(batch_id).final_state == "Done"  # the check step recorded it, then it was posted
    batch = flow.batch(batch_id)
    assert batch.confirmed_txid == submitting.txid and batch.txids == (original.txid, submitting.txid)
    assert len(_events_naming(flow, submitting.txid)) == 1
    assert [r.action for r in batch_audit(flow, batch_id)] == ["payout_batch.replacement_broadcast"]
    final = flow.get(ps[0].payout_id)
    assert final.txid == submitting.txid and final.fee_sat == submitting.shares[final.payout_id]
    flow.assert_invariants()


def test_a_crash_before_the_replacement_left_is_broadcast_by_the_check(flow, monkeypatch):
    import pytest

    from satflow.domain import errors

    from .conftest import ADMIN
    from .test_payout_fee_bump import _broadcast_batch

    _with_outbox(flow)
    batch_id, users, ps = _broadcast_batch(flow, 100_000)
    real_send = flow.rpc.sendrawtransaction

    def unreachable(*_args, **_kwargs):
        raise errors.BitcoinNodeUnavailable("connection reset")

    monkeypatch.setattr(flow.rpc, "sendrawtransaction", unreachable)
    with pytest.raises(errors.BitcoinNodeUnavailable):
        payouts.bump_fee(flow.svc, ADMIN, batch_id, 20)
    monkeypatch.setattr(flow.rpc, "sendrawtransaction", real_send)
    submitting = flow.batch(batch_id).pending_replacement
    assert submitting is not None and _events_naming(flow, submitting.txid) == []
    flow.wait_for(lambda: flow.batch(batch_id).pending_replacement is None, what="the check to submit it")
    assert flow.sim.mempool_txids() == [submitting.txid]
    assert len(_events_naming(flow, submitting.txid)) == 1
    flow.confirm()
    assert flow.wait(batch_id).final_state == "Done"
    assert flow.batch(batch_id).confirmed_txid == submitting.txid
    flow.assert_invariants()
