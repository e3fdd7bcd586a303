"""Payouts end to end on the real ASL: batched, signed (hot or external), broadcast, confirmed, posted."""
from __future__ import annotations

import pytest
from embit import bip32
from embit.psbt import PSBT

from satflow.app import payouts
from satflow.domain.addresses import Chain
from satflow.domain.bitcoin import AddressKind, estimate_tx_vbytes
from satflow.domain.onchain import PayoutStatus, UtxoStatus
from satflow.domain.payouts import BatchStatus, InvalidPsbt, SignedPsbtMismatch

from .conftest import ADMIN, TEST_ACCOUNT_TPRV, external_address

HOT_WALLET = "sys:onchain_hot_wallet"


def _only_batch(flow):
    (batch_id,) = flow.started
    return flow.batch(batch_id)


def _confirmed_tx(flow, txid):
    block = flow.sim.confirmed_block_of(txid)
    assert block is not None, f"{txid} is not confirmed"
    return block.txs[block.txids.index(txid)], block.fees[txid]


def test_three_payouts_one_transaction_hot_signed_and_posted(flow):
    flow.seed_utxos(400_000, 300_000)
    users = [flow.new_account(funds_sat=1_000_000) for _ in range(3)]
    targets = [(external_address(1), 120_000), (external_address(2, "p2tr"), 95_000), (external_address(3, "p2pkh"),
                                                                                        150_000)]
    queued = [flow.payout(u, addr, amount) for u, (addr, amount) in zip(users, targets)]
    assert {p.status for p in queued} == {PayoutStatus.QUEUED}
    for user, p in zip(users, queued):  # amount + fee reserve held
        assert flow.balance(user.account_id) == ((1_000_000 - p.amount_sat - p.fee_reserve_sat) * 1000,
                                                 (p.amount_sat + p.fee_reserve_sat) * 1000)

    counts = payouts.run_batcher(flow.svc)
    assert counts["batches"] == 1 and counts["batched"] == 3 and counts["deferred"] == 0
    batch = _only_batch(flow)
    result = flow.wait(batch.batch_id)
    assert result.status == "SUCCEEDED" and result.final_state == "Done", result
    assert "SignHot" in result.states and "AwaitSignature" not in result.states

    batch = flow.batch(batch.batch_id)
    assert batch.status is BatchStatus.CONFIRMED and batch.confirmed_txid == batch.current.txid
    tx, fee = _confirmed_tx(flow, batch.confirmed_txid)
    # one transaction: the three payouts exactly, plus change to our change chain (index allocated for the wallet)
    outputs = {(out.script_pubkey.data.hex(), out.value) for out in tx.vout}
    for p in queued:
        assert (p.script_pubkey_hex, p.amount_sat) in outputs
    assert len(tx.vout) == 4 and batch.change is not None and batch.current.change_sat > 0
    change_script = flow.deriver.derive(batch.change.index, Chain.CHANGE).script_pubkey_hex
    assert (change_script, batch.current.change_sat) in outputs
    assert flow.chain.allocated == [(HOT_WALLET, 1, batch.change.index)]
    assert all(inp.sequence == 0xFFFF_FFFD for inp in tx.vin)  # BIP125 signalling

    # the ledger: each user paid amount + its share; shares add up to the on-chain fee exactly; reserves returned
    final = [flow.get(p.payout_id) for p in queued]
    assert sum(p.fee_sat for p in final) == fee == batch.current.fee_sat
    for user, p in zip(users, final):
        assert p.status is PayoutStatus.CONFIRMED and p.txid == batch.confirmed_txid
        assert 0 < p.fee_sat <= p.fee_reserve_sat
        assert flow.balance(user.account_id) == ((1_000_000 - p.amount_sat - p.fee_sat) * 1000, 0)
    assert flow.balance(HOT_WALLET)[0] == sum(p.amount_sat + p.fee_sat for p in final) * 1000
    # inputs spent, nothing left open
    assert all(flow.svc.utxos.get(u.txid, u.vout).status is UtxoStatus.SPENT for u in batch.inputs)
    assert flow.svc.payouts.open_payout_ids() == [] and flow.svc.payouts.open_batch_ids() == []
    flow.assert_invariants()


def test_external_signer_exports_signs_and_submits(flow):
    flow.svc.hot_sign_limit_sat = 50_000  # the batch is worth more: the external signer signs
    flow.seed_utxos(500_000)
    user = flow.new_account(funds_sat=500_000)
    p1 = flow.payout(user, external_address(4), 100_000)
    p2 = flow.payout(user, external_address(5), 60_000)
    payouts.run_batcher(flow.svc)
    batch_id = _only_batch(flow).batch_id
    flow.wait_for(lambda: flow.batch(batch_id).status is BatchStatus.SIGNING, what="SIGNING")
    assert flow.batch(batch_id).task_token
    assert {flow.get(p.payout_id).status for p in (p1, p2)} == {PayoutStatus.SIGNING}

    exported = payouts.export_psbt(flow.svc, ADMIN, batch_id)
    # wrong transaction, or not signed at all: refused, nothing changes
    tampered = PSBT.from_base64(exported)
    tampered.outputs[0].value -= 1
    with pytest.raises(SignedPsbtMismatch):
        payouts.submit_signed_psbt(flow.svc, ADMIN, batch_id, tampered.to_base64(),
                                   send_task_success=flow.send_task_success)
    with pytest.raises(InvalidPsbt):
        payouts.submit_signed_psbt(flow.svc, ADMIN, batch_id, exported, send_task_success=flow.send_task_success)
    assert flow.batch(batch_id).status is BatchStatus.SIGNING

    # the signer: an ordinary PSBT signer holding the account key (derivations name its fingerprint)
    psbt = PSBT.from_base64(exported)
    assert psbt.sign_with(bip32.HDKey.from_string(TEST_ACCOUNT_TPRV)) == len(psbt.inputs)
    signed = payouts.submit_signed_psbt(flow.svc, ADMIN, batch_id, psbt.to_base64(),
                                        send_task_success=flow.send_task_success)
    assert signed.status is BatchStatus.SIGNED
    from tests.audit.helpers import sealed_records

    (submitted,) = [r for r in sealed_records(flow.svc)
                    if r.subject_ids[:1] == (batch_id,)]  # the refused submissions left no record
    assert (submitted.action, submitted.actor, submitted.details) == (
        "payout_batch.signature_submitted", "admin", {"txid": signed.current.txid})
    result = flow.wait(batch_id)
    assert result.status == "SUCCEEDED" and result.final_state == "Done", result
    assert "AwaitSignature" in result.states and "SignHot" not in result.states
    batch = flow.batch(batch_id)
    assert batch.status is BatchStatus.CONFIRMED
    _tx, fee = _confirmed_tx(flow, batch.confirmed_txid)
    final = [flow.get(p.payout_id) for p in (p1, p2)]
    assert sum(p.fee_sat for p in final) == fee
    assert flow.balance(user.account_id) == ((500_000 - sum(p.amount_sat + p.fee_sat for p in final)) * 1000, 0)
    # a second submit of the same signature is harmless
    again = payouts.submit_signed_psbt(flow.svc, ADMIN, batch_id, psbt.to_base64(),
                                       send_task_success=flow.send_task_success)
    assert again.status is BatchStatus.CONFIRMED
    flow.assert_invariants()


def test_branch_and_bound_pays_changeless_when_an_exact_output_exists(flow):
    amount = 200_000
    rate = 5  # normal priority: the simulator's 6-block estimate
    exact_fee = estimate_tx_vbytes([AddressKind.P2WPKH], [AddressKind.P2WPKH]) * rate
    flow.seed_utxos(1_000_000, amount + exact_fee + 150, 90_000)
    user = flow.new_account(funds_sat=500_000)
    p = flow.payout(user, external_address(6), amount)
    payouts.run_batcher(flow.svc)
    batch = _only_batch(flow)
    assert batch.selection == "bnb" and batch.current.change_sat == 0 and batch.change is None
    assert [u.value_sat for u in batch.inputs] == [amount + exact_fee + 150]
    assert flow.chain.allocated == []  # no change address needed
    assert flow.wait(batch.batch_id).final_state == "Done"
    tx, fee = _confirmed_tx(flow, batch.confirmed_txid or flow.batch(batch.batch_id).confirmed_txid)
    assert len(tx.vout) == 1 and fee == exact_fee + 150
    assert flow.get(p.payout_id).fee_sat == fee  # the overshoot (within the cost of change) is fee
    flow.assert_invariants()


def test_fallback_with_change_when_no_changeless_combination_exists(flow):
    flow.seed_utxos(1_000_000, 700_000)
    user = flow.new_account(funds_sat=500_000)
    flow.payout(user, external_address(7), 200_000)
    payouts.run_batcher(flow.svc)
    batch = _only_batch(flow)
    assert batch.selection == "lowest_larger" and [u.value_sat for u in batch.inputs] == [700_000]
    assert batch.current.change_sat > 0 and flow.chain.allocated == [(HOT_WALLET, 1, 0)]
    assert flow.wait(batch.batch_id).final_state == "Done"
    flow.assert_invariants()


def test_insufficient_utxos_leave_payouts_queued(flow):
    flow.seed_utxos(50_000)
    user = flow.new_account(funds_sat=1_000_000)
    p = flow.payout(user, external_address(8), 400_000)
    counts = payouts.run_batcher(flow.svc)
    assert counts == {"queued": 1, "batches": 0, "batched": 0, "deferred": 1, "recovered": 0}
    assert flow.started == [] and flow.get(p.payout_id).status is PayoutStatus.QUEUED
    assert flow.svc.utxos.available()[0].value_sat == 50_000  # nothing reserved
    # funds arrive: the next run batches it
    flow.seed_utxos(600_000)
    assert payouts.run_batcher(flow.svc)["batched"] == 1
    assert flow.wait(_only_batch(flow).batch_id).final_state == "Done"
    assert flow.get(p.payout_id).status is PayoutStatus.CONFIRMED
    flow.assert_invariants()


def test_newest_payouts_wait_when_only_the_oldest_can_be_funded(flow):
    flow.seed_utxos(300_000)
    user = flow.new_account(funds_sat=1_000_000)
    first = flow.payout(user, external_address(9), 200_000)
    second = flow.payout(user, external_address(10), 200_000)
    counts = payouts.run_batcher(flow.svc)
    assert counts["batched"] == 1 and counts["deferred"] == 1
    assert _only_batch(flow).payout_ids == (first.payout_id,)
    assert flow.get(second.payout_id).status is PayoutStatus.QUEUED
    flow.wait(_only_batch(flow).batch_id)
    flow.assert_invariants()


def test_priorities_are_batched_separately_at_their_own_rates(flow):
    flow.seed_utxos(500_000, 500_000)
    user = flow.new_account(funds_sat=1_000_000)
    fast = flow.payout(user, external_address(11), 100_000, "fast")
    slow = flow.payout(user, external_address(12), 100_000, "slow")
    assert payouts.run_batcher(flow.svc)["batches"] == 2
    rates = {flow.batch(b).priority.value: flow.batch(b).current.fee_rate for b in flow.started}
    assert rates == {"fast": 8, "slow": 2}
    for batch_id in flow.started:
        assert flow.wait(batch_id).final_state == "Done"
    assert {flow.get(p.payout_id).status for p in (fast, slow)} == {PayoutStatus.CONFIRMED}
    flow.assert_invariants()


def test_fee_shares_above_the_reserves_leave_the_payout_queued(flow):
    flow.sim.set_fee_estimate(24, 10)  # slow priority at its cap
    flow.seed_utxos(*[20_000] * 6)  # a single payout would need six inputs: far above its overhead budget
    user = flow.new_account(funds_sat=500_000)
    p = flow.payout(user, external_address(13), 100_000, "slow")
    counts = payouts.run_batcher(flow.svc)
    assert counts["batches"] == 0 and counts["deferred"] == 1
    assert flow.get(p.payout_id).status is PayoutStatus.QUEUED and flow.chain.allocated == []
    assert all(u.status is UtxoStatus.AVAILABLE for u in flow.svc.utxos.available())
    flow.seed_utxos(400_000)  # one input is enough now
    assert payouts.run_batcher(flow.svc)["batched"] == 1
    assert flow.wait(_only_batch(flow).batch_id).final_state == "Done"
    final = flow.get(p.payout_id)
    assert final.fee_sat <= final.fee_reserve_sat
    flow.assert_invariants()


def test_no_fee_estimate_falls_back_to_the_priority_floor(flow):
    for target in (2, 6, 24):
        flow.sim.set_fee_estimate(target, None)
    flow.seed_utxos(300_000)
    user = flow.new_account(funds_sat=500_000)
    flow.payout(user, external_address(14), 100_000)
    payouts.run_batcher(flow.svc)
    assert _only_batch(flow).current.fee_rate == 10  # FEE_RATE_FALLBACK[normal]
    assert flow.wait(_only_batch(flow).batch_id).final_state == "Done"
    flow.assert_invariants()


def test_large_queues_are_split_into_bounded_batches(flow, monkeypatch):
    monkeypatch.setattr(payouts.batcher, "MAX_BATCH_PAYOUTS", 2)
    monkeypatch.setattr(payouts.batcher, "MAX_BATCHES_PER_RUN", 2)
    flow.seed_utxos(*[300_000] * 4)
    user = flow.new_account(funds_sat=2_000_000)
    ps = [flow.payout(user, external_address(60 + i), 50_000) for i in range(5)]
    counts = payouts.run_batcher(flow.svc)
    assert (counts["batches"], counts["batched"], counts["deferred"]) == (2, 4, 1)
    for batch_id in list(flow.started):
        assert len(flow.batch(batch_id).payout_ids) == 2
        assert flow.wait(batch_id).final_state == "Done"
    assert payouts.run_batcher(flow.svc)["batched"] == 1  # the oldest went first; the last one now
    assert flow.wait(flow.started[-1]).final_state == "Done"
    assert {flow.get(p.payout_id).status for p in ps} == {PayoutStatus.CONFIRMED}
    flow.assert_invariants()
