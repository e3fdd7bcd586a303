"""On-chain payouts through the real payout state machine (moto) and the chain simulator do not show as drift:
queued (reserved), broadcast and mined but not yet posted (the batch's inputs gone from the chain, its change ours),
and posted. The chain monitor's part (recording the change output when it scans the block) is done by hand here,
as the payout flow tests fake the monitor."""
from __future__ import annotations

from satflow.adapters.dynamodb.solvency import DynamoSolvencyStore
from satflow.adapters.lnd import LndRestClient
from satflow.app import payouts, solvency
from satflow.domain.addresses import Chain
from satflow.domain.onchain import Utxo
from satflow.domain.solvency import ONCHAIN, PART_CHANGE_NOT_POSTED, PART_PAYOUTS_NOT_POSTED
from satflow_dev.simulators.lightning import LightningSimulator

from tests.payouts.conftest import (  # noqa: F401 (the payout flow's fixtures)
    ADMIN, external_address, flow, payout_module, payout_moto, payout_state_machine,
)


def _onchain(svc):
    check = solvency.run_check(svc)
    source = check.source(ONCHAIN)
    assert source is not None and source.error is None, source
    return check, source


def _with_solvency(flow):
    """The payout flow's services with the solvency check wired: its store, a Lightning node with nothing on it,
    the breaker read uncached."""
    from satflow.adapters.dynamodb.lightning import DynamoLightningStore

    svc = flow.svc
    svc.solvency = DynamoSolvencyStore(flow.moto.client("dynamodb"), svc.utxos._m.table_name)
    svc.breaker_cache_s = 0
    lsim = LightningSimulator(our_balance_msat=0)
    lnd = LndRestClient.from_secret(lsim.secret(), transport=lsim.transport())
    svc.lnd = lambda: lnd
    svc.lightning = DynamoLightningStore(flow.moto.client("dynamodb"), svc.utxos._m)
    return svc


def test_a_payout_batch_is_never_drift(flow):
    svc = _with_solvency(flow)
    flow.seed_utxos(400_000, 300_000)  # coins the operator put in (the flow tests seed them without deposits)
    solvency.book_capital(svc, ADMIN, "cap-chain", "onchain", 700_000_000, "in", "seeded hot wallet coins")
    check, source = _onchain(svc)
    assert source.unexplained_msat == 0 and not check.breaches

    user = flow.new_account(funds_sat=1_000_000)
    flow.payout(user, external_address(1), 120_000)
    check, source = _onchain(svc)
    assert source.unexplained_msat == 0 and source.parts == {}  # reserved: still ours

    seen = []

    def after_broadcast(event, result):
        # the block with the batch was just mined; the chain monitor records our change output when it scans it
        batch = svc.payouts.get_batch(event["batch_id"])
        tx = flow.rpc.getrawtransaction(batch.current.txid, True).transaction
        change_script = flow.deriver.derive(batch.change.index, Chain.CHANGE).script_pubkey_hex
        [out] = [o for o in tx.outputs if o.script_pubkey_hex == change_script]
        svc.utxos.add(Utxo(txid=tx.txid, vout=out.n, value_sat=out.value_sat, script_pubkey_hex=change_script,
                           chain=1, index=batch.change.index, height=flow.sim.height))
        seen.append(_onchain(svc))

    flow.after_step["broadcast"] = after_broadcast
    assert payouts.run_batcher(svc)["batches"] == 1
    (batch_id,) = flow.started
    assert flow.wait(batch_id).status == "SUCCEEDED"

    [(check, mined)] = seen  # mined, not posted: the inputs are gone, the change is ours, the ledger still holds all
    inputs_msat = sum(u.value_sat for u in svc.payouts.get_batch(batch_id).inputs) * 1000
    assert mined.parts[PART_PAYOUTS_NOT_POSTED] == -inputs_msat and mined.parts[PART_CHANGE_NOT_POSTED] > 0
    assert check.ok
    assert mined.unexplained_msat == 0 and not check.breaches, mined.to_dict()
    check, posted = _onchain(svc)
    assert check.ok and posted.parts == {} and posted.unexplained_msat == 0 and not check.breaches, posted.to_dict()
    assert posted.node_msat == 700_000_000 - inputs_msat + mined.parts[PART_CHANGE_NOT_POSTED]


def test_a_signed_batch_whose_transaction_confirmed_before_its_broadcast_write_is_not_drift(flow):
    """The broadcast step sends the signed transaction, then records BROADCAST: a crash (or a slow retry) in between
    leaves the batch SIGNED while a block confirms the transaction. Its inputs are gone and its change is ours, as for
    a BROADCAST batch; calling it unexplained tripped the breaker (sim seed 2 --onchain-share 0.45)."""
    svc = _with_solvency(flow)
    from satflow.domain.payouts import BatchStatus

    flow.seed_utxos(400_000, 300_000)
    solvency.book_capital(svc, ADMIN, "cap-chain", "onchain", 700_000_000, "in", "seeded hot wallet coins")
    user = flow.new_account(funds_sat=1_000_000)
    flow.payout(user, external_address(1), 120_000)
    seen = []

    def sent_then_died(event, result):
        batch = svc.payouts.get_batch(event["batch_id"])
        assert batch.status is BatchStatus.SIGNED
        flow.rpc.sendrawtransaction(batch.current.signed_hex)  # the broadcast step's send, its write not done yet
        flow.sim.mine(1)
        tx = flow.rpc.getrawtransaction(batch.current.txid, True).transaction
        change_script = flow.deriver.derive(batch.change.index, Chain.CHANGE).script_pubkey_hex
        [out] = [o for o in tx.outputs if o.script_pubkey_hex == change_script]
        svc.utxos.add(Utxo(txid=tx.txid, vout=out.n, value_sat=out.value_sat, script_pubkey_hex=change_script,
                           chain=1, index=batch.change.index, height=flow.sim.height))  # the chain monitor's part
        seen.append(_onchain(svc))

    flow.after_step["sign_hot"] = sent_then_died
    assert payouts.run_batcher(svc)["batches"] == 1
    (batch_id,) = flow.started
    flow.wait(batch_id)
    [(check, mined)] = seen
    inputs_msat = sum(u.value_sat for u in svc.payouts.get_batch(batch_id).inputs) * 1000
    assert mined.parts[PART_PAYOUTS_NOT_POSTED] == -inputs_msat and mined.parts[PART_CHANGE_NOT_POSTED] > 0
    assert mined.unexplained_msat == 0 and not check.breaches, mined.to_dict()
    solvency.forget_breaker_cache()
    assert solvency.sends_blocked_because(svc) is None
