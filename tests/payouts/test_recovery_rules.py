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


# ------------------------------------------------------------------ item 3: never free inputs a signed tx may spend
def _abandoned_after_export(flow, n_payouts=2):
    """External signing; the operator exports the PSBT, the signer does not answer in time: Abandon."""
    from .test_payout_fee_bump import _sign_externally

    flow.svc.hot_sign_limit_sat = 1_000
    flow.signing_timeout_s = 3
    flow.seed_utxos(300_000, 300_000)
    users = [flow.new_account(funds_sat=400_000) for _ in range(n_payouts)]
    ps = [flow.payout(u, external_address(70 + i), 100_000 + i * 1_000) for i, u in enumerate(users)]
    payouts.run_batcher(flow.svc)
    (batch_id,) = flow.started
    flow.wait_for(lambda: flow.batch(batch_id).status is BatchStatus.SIGNING, what="SIGNING")
    from .conftest import ADMIN

    signed_late = _sign_externally(payouts.export_psbt(flow.svc, ADMIN, batch_id))
    result = flow.wait(batch_id)
    assert "Abandon" in result.states, result
    return batch_id, users, ps, signed_late


def _broadcast_psbt(flow, batch, psbt_b64):
    from satflow.domain.payouts import finalize_external

    raw = finalize_external(batch.current.unsigned_psbt, psbt_b64)
    flow.rpc.sendrawtransaction(raw, batch.current.txid)


def test_a_signing_timeout_keeps_the_inputs_and_binds_the_requeued_payouts(flow):
    import pytest

    from satflow.domain.onchain import UtxoStatus
    from satflow.domain.payouts import PayoutNotCancelable

    batch_id, users, ps, _late = _abandoned_after_export(flow)
    abandoned = flow.batch(batch_id)
    assert abandoned.status is BatchStatus.ABANDONED
    assert all(flow.svc.utxos.get(u.txid, u.vout).status is UtxoStatus.RESERVED for u in abandoned.inputs)
    for user, p in zip(users, ps):
        again = flow.get(p.payout_id)
        assert (again.status, again.must_spend_inputs_of) == (PayoutStatus.QUEUED, batch_id)
        with pytest.raises(PayoutNotCancelable):  # refunding it could pay and refund the same payout
            payouts.cancel_payout(flow.svc, user, p.payout_id, send_task_success=flow.send_task_success)
    assert batch_id in flow.svc.payouts.open_batch_ids()  # operators still see it
    flow.assert_invariants()


def test_the_successor_spends_every_abandoned_input_so_a_late_signature_cannot_pay_twice(flow):
    from satflow.domain.bitcoin import TransactionRejected

    batch_id, users, ps, signed_late = _abandoned_after_export(flow)
    abandoned = flow.batch(batch_id)
    flow.svc.hot_sign_limit_sat = 10_000_000  # the successor is signed hot
    flow.seed_utxos(50_000)  # unrelated coins the successor must not need
    payouts.run_batcher(flow.svc)
    successor_id = flow.started[-1]
    assert successor_id != batch_id
    flow.wait_for(lambda: flow.batch(successor_id).status is BatchStatus.CONFIRMED, what="successor CONFIRMED")
    successor = flow.batch(successor_id)
    assert successor.supersedes == batch_id
    assert {u.outpoint for u in abandoned.inputs} <= {u.outpoint for u in successor.inputs}
    assert flow.batch(batch_id).status is BatchStatus.SUPERSEDED
    assert batch_id not in flow.svc.payouts.open_batch_ids()
    try:  # the signer answers at last: the node refuses it, the payees are paid once
        _broadcast_psbt(flow, abandoned, signed_late)
        raise AssertionError("the abandoned transaction was accepted next to its confirmed successor")
    except TransactionRejected:
        pass
    for user, p in zip(users, ps):
        final = flow.get(p.payout_id)
        assert final.status is PayoutStatus.CONFIRMED and final.txid == successor.confirmed_txid
        assert flow.balance(user.account_id) == ((400_000 - final.amount_sat - final.fee_sat) * 1000, 0)
    flow.assert_invariants()


def test_an_abandoned_transaction_broadcast_late_is_adopted_and_its_successor_superseded(flow):
    from satflow.domain.bitcoin import TransactionRejected
    from satflow.domain.onchain import UtxoStatus

    batch_id, users, ps, signed_late = _abandoned_after_export(flow)
    abandoned = flow.batch(batch_id)
    metrics = []
    flow.svc.emit_metric = lambda name, value=1, **dims: metrics.append(name)
    flow.seed_utxos(40_000)
    payouts.run_batcher(flow.svc)  # the successor waits for the external signer (still above the hot limit)
    successor_id = flow.started[-1]
    flow.wait_for(lambda: flow.batch(successor_id).status is BatchStatus.SIGNING, what="successor SIGNING")
    _broadcast_psbt(flow, abandoned, signed_late)  # ...and the first signature arrives after all
    held = abandoned.inputs[0].outpoint
    assert payouts.on_our_input_spent(flow.svc, held, abandoned.current.txid) == "abandoned_batch"
    assert payouts.on_our_input_spent(flow.svc, held, "ff" * 32) == "unknown"
    flow.confirm()
    payouts.run_batcher(flow.svc, recover_after_s=0)
    assert "PayoutAbandonedTransactionSeen" in metrics
    adopted = flow.batch(batch_id)
    assert adopted.status is BatchStatus.CONFIRMED and adopted.confirmed_txid == abandoned.current.txid
    assert flow.batch(successor_id).status is BatchStatus.SUPERSEDED
    for user, p in zip(users, ps):
        final = flow.get(p.payout_id)
        assert final.status is PayoutStatus.CONFIRMED and final.txid == abandoned.current.txid
        assert final.fee_sat == abandoned.current.shares[p.payout_id]
        assert flow.balance(user.account_id) == ((400_000 - final.amount_sat - final.fee_sat) * 1000, 0)
    for u in abandoned.inputs:
        assert flow.svc.utxos.get(u.txid, u.vout).status is UtxoStatus.SPENT
    for u in flow.batch(successor_id).inputs:
        if u.outpoint not in {a.outpoint for a in abandoned.inputs}:
            assert flow.svc.utxos.get(u.txid, u.vout).status is UtxoStatus.AVAILABLE  # free again
    try:  # the successor, if its signer ever answers, can never confirm
        from .test_payout_fee_bump import _sign_externally

        _broadcast_psbt(flow, flow.batch(successor_id), _sign_externally(flow.batch(successor_id).current.unsigned_psbt))
        raise AssertionError("the successor was accepted next to the adopted transaction")
    except TransactionRejected:
        pass
    flow.assert_invariants()


def test_the_chain_monitor_does_not_call_a_late_abandoned_transaction_a_foreign_spend(flow):
    """The simulation found it (sim seed 2, on-chain half): the abandoned batch's transaction, broadcast by the
    signer after the timeout, spends inputs now held by the successor; the chain monitor asked only the holding batch
    and booked our own payout as a FOREIGN SPEND (suspense, breaker, and an adoption that could never post); the
    solvency check called the same window drift. Both ask the payout side's supersedes chain now."""
    from satflow.adapters.dynamodb.solvency import DynamoSolvencyStore
    from satflow.app import deposits, solvency

    from .conftest import ADMIN

    batch_id, users, ps, signed_late = _abandoned_after_export(flow)
    abandoned = flow.batch(batch_id)
    flow.seed_utxos(40_000)
    payouts.run_batcher(flow.svc)  # a successor takes the abandoned inputs over and waits for the signer
    successor_id = flow.started[-1]
    flow.wait_for(lambda: flow.batch(successor_id).status is BatchStatus.SIGNING, what="successor SIGNING")
    _broadcast_psbt(flow, abandoned, signed_late)
    flow.confirm()
    flow.svc.solvency = DynamoSolvencyStore(flow.moto.client("dynamodb"), flow.svc.utxos._m.table_name)
    counts = deposits.scan_chain(flow.svc)
    assert counts.get("foreign_spends", 0) == 0, counts
    assert solvency.list_suspense(flow.svc, ADMIN, "open") == []
    # ...and the solvency check explains the window until adoption: the abandoned inputs are gone as "confirmed, not
    # posted", the change the scan recorded is "change not posted" (it called this drift and tripped the breaker).
    # (This fixture books no opening capital, so only the explanation is compared, not the ledger side.)
    onchain = solvency._onchain(flow.svc, flow.svc.solvency, solvency.system_totals(flow.svc), [], flow.svc.clock())
    assert onchain.details["gone_unexplained_outputs"] == 0, onchain
    assert onchain.parts["payouts_confirmed_not_posted"] == -sum(u.value_sat for u in abandoned.inputs) * 1000
    assert onchain.parts.get("change_of_unposted_payouts", 0) > 0, onchain  # the abandoned transaction's change
    payouts.run_batcher(flow.svc, recover_after_s=0)
    assert flow.batch(batch_id).status is BatchStatus.CONFIRMED  # adopted, as the payout side decides
    flow.assert_invariants()


# ------------------------------------------------------------------ item 6: the IAM the payout function needs
def test_the_payout_functions_own_aws_calls_are_recorded_and_declared(flow):
    """The autouse recorder (tests/aws_calls_recorder.py) sees PayoutFunction send states:SendTaskSuccess when an
    external signature is submitted through it; satflow/aws_calls.py declares it and tests/contracts/test_iam.py
    checks template.yaml grants it (it did not: moto enforces no IAM)."""
    from tests import aws_calls_recorder
    from tests.flows.harness import LambdaContext

    from .test_payout_fee_bump import _sign_externally
    from .conftest import ADMIN

    flow.svc.hot_sign_limit_sat = 1_000
    flow.seed_utxos(300_000)
    user = flow.new_account(funds_sat=300_000)
    flow.payout(user, external_address(80), 100_000)
    payouts.run_batcher(flow.svc)
    (batch_id,) = flow.started
    flow.wait_for(lambda: flow.batch(batch_id).status is BatchStatus.SIGNING, what="SIGNING")
    signed = _sign_externally(payouts.export_psbt(flow.svc, ADMIN, batch_id))
    view = flow.handler({"step": "admin_submit_psbt", "batch_id": batch_id, "psbt": signed},
                        LambdaContext(function_name="PayoutFunction"))
    assert view["status"] == "SIGNED"
    assert flow.wait(batch_id).final_state == "Done"
    assert ("PayoutFunction", "states:SendTaskSuccess", "SendTaskSuccess") in aws_calls_recorder.seen()


# ------------------------------------------------------------------ item 5: decisions
def test_a_fee_share_above_its_reserve_is_booked_as_our_expense_not_dropped(flow):
    """Never planned so (the batcher and fee bumps keep shares within reserves); if a share ever exceeds its
    reserve (here: a payout whose stored reserve is lowered below its planned share after batching), the user pays
    the reserve and the excess is an explicit ledger entry (sys:onchain_fee_expense -> hot wallet), so the hot
    wallet's ledger balance still matches what left it on-chain."""
    from satflow.domain.ledger import SystemAccount

    flow.svc.start_payout = lambda batch_id: flow.started.append(batch_id)  # the steps are driven below
    flow.seed_utxos(600_000)
    users = [flow.new_account(funds_sat=400_000) for _ in range(2)]
    ps = [flow.payout(u, external_address(90 + i), 100_000) for i, u in enumerate(users)]
    payouts.run_batcher(flow.svc)
    (batch_id,) = flow.started
    built = flow.batch(batch_id)
    over = sorted(built.current.shares)[0]
    excess = 100
    reserve = built.current.shares[over] - excess
    flow.moto.client("dynamodb").update_item(
        TableName=flow.svc.ledger._m.table_name, Key={"pk": {"S": f"PAYOUT#{over}"}, "sk": {"S": "PAYOUT"}},
        UpdateExpression="SET fee_reserve_sat = :r", ExpressionAttributeValues={":r": {"N": str(reserve)}})
    payouts.step_sign_hot(flow.svc, batch_id)
    payouts.step_broadcast(flow.svc, batch_id)
    hot_before = flow.balance(SystemAccount.ONCHAIN_HOT_WALLET.value)[0]
    flow.confirm()
    assert payouts.step_check(flow.svc, batch_id)["next"] == "POST"
    payouts.step_post(flow.svc, batch_id, built.current.txid)
    payouts.step_post(flow.svc, batch_id, built.current.txid)  # a re-run books nothing twice
    by_id = {p.payout_id: (u, p) for u, p in zip(users, ps)}
    user_over, p_over = by_id[over]
    assert flow.get(over).fee_sat == reserve  # the user pays the reserve, no more
    assert flow.balance(user_over.account_id) == ((400_000 - p_over.amount_sat - reserve) * 1000, 0)
    assert flow.balance(SystemAccount.ONCHAIN_FEE_EXPENSE.value)[0] == -excess * 1000
    left_on_chain = sum(p.amount_sat for p in ps) + built.current.fee_sat
    assert flow.balance(SystemAccount.ONCHAIN_HOT_WALLET.value)[0] - hot_before == left_on_chain * 1000
    flow.assert_invariants()


def test_a_payout_to_one_of_our_own_addresses_is_refused_before_anything_is_reserved(flow):
    """An account's deposit address or our change address: 422 PAYOUT_TO_OWN_ADDRESS, nothing reserved. Between
    accounts a transfer is instant and free; our change chain is no deposit address (the monitor would record the
    output as our UTXO and credit nobody: the payer would lose the amount)."""
    import pytest

    from satflow.api.errors import status_for
    from satflow.app.addresses import new_deposit_address
    from satflow.domain.onchain import HOT_WALLET_OWNER
    from satflow.domain.payouts import PayoutToOwnAddress

    alice = flow.new_account(funds_sat=300_000)
    bob = flow.new_account()
    deposit = new_deposit_address(flow.svc, bob)
    with pytest.raises(PayoutToOwnAddress) as refused:
        flow.payout(alice, deposit.address, 50_000)
    assert status_for(refused.value) == 422 and refused.value.code == "PAYOUT_TO_OWN_ADDRESS"
    _index, change_address, _script = flow.svc.chain.allocate_address(HOT_WALLET_OWNER, 1)
    with pytest.raises(PayoutToOwnAddress):
        flow.payout(alice, change_address, 50_000)
    assert flow.balance(alice.account_id) == (300_000_000, 0)
    assert flow.svc.payouts.open_payout_ids() == []
    assert flow.payout(alice, external_address(99), 50_000).status is PayoutStatus.QUEUED  # others still work
    flow.assert_invariants()
