"""The chain simulator's BIP125 replace-by-fee (opt-in with rbf=True; off, any conflict is refused)."""
from __future__ import annotations

import pytest
from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from satflow.adapters.bitcoind import BitcoinRpcClient
from satflow.domain.addresses import DepositAddressDeriver
from satflow.domain.bitcoin import BitcoinTxNotFound, Network, TransactionRejected
from satflow_dev.simulators.chain import ChainSimulator
from satflow_dev.simulators.chain_tx import sign_p2wpkh_inputs

from .conftest import TEST_ACCOUNT_HDKEY, TEST_ACCOUNT_TPUB

DERIVER = DepositAddressDeriver(TEST_ACCOUNT_TPUB, Network.REGTEST)
ELSEWHERE = "0014" + "42" * 20
FINAL = 0xFFFF_FFFF
SIGNAL = 0xFFFF_FFFD


def _setup(rbf: bool):
    sim = ChainSimulator(seed=3, rbf=rbf)
    rpc = BitcoinRpcClient("http://sim:18443/", "u", "p", transport=sim.transport())
    address = DERIVER.derive(0, 0)
    txid = sim.send_to_address(address.address, 100_000)
    tx = sim.mempool_entry(txid).tx
    (vout,) = [n for n, o in enumerate(tx.vout) if o.script_pubkey.data.hex() == address.script_pubkey_hex]
    sim.mine(1)
    return sim, rpc, (txid, vout)


def _spend(outpoint, fee: int, sequence: int = SIGNAL, parent_value: int = 100_000, index: int = 0) -> Transaction:
    txid, vout = outpoint
    tx = Transaction(vin=[TransactionInput(bytes.fromhex(txid), vout, sequence=sequence)],
                     vout=[TransactionOutput(parent_value - fee, Script(bytes.fromhex(DERIVER.derive(1, 1)
                                                                                     .script_pubkey_hex)))])
    sign_p2wpkh_inputs(tx, TEST_ACCOUNT_HDKEY.derive([0, index]).key, [parent_value])
    return tx


def _reject_reason(rpc, tx) -> str:
    with pytest.raises(TransactionRejected) as raised:
        rpc.sendrawtransaction(tx.serialize().hex())
    return raised.value.details["reject_reason"]


def test_without_rbf_any_conflict_is_refused():
    sim, rpc, outpoint = _setup(rbf=False)
    rpc.sendrawtransaction(_spend(outpoint, 500).serialize().hex())
    assert _reject_reason(rpc, _spend(outpoint, 5_000)).startswith("txn-mempool-conflict")


def test_a_higher_fee_replacement_evicts_the_original_and_confirms():
    sim, rpc, outpoint = _setup(rbf=True)
    original = _spend(outpoint, 500)
    rpc.sendrawtransaction(original.serialize().hex())
    replacement = _spend(outpoint, 1_000)
    (check,) = rpc.testmempoolaccept([replacement.serialize().hex()])
    assert check.allowed and sim.mempool_txids() == [original.txid().hex()]  # a test does not evict
    assert rpc.sendrawtransaction(replacement.serialize().hex()) == replacement.txid().hex()
    assert sim.mempool_txids() == [replacement.txid().hex()]
    with pytest.raises(BitcoinTxNotFound):
        rpc.getrawtransaction(original.txid().hex())
    sim.mine(1)
    assert rpc.getrawtransaction(replacement.txid().hex()).confirmations == 1


def test_replacement_rules_bip125():
    sim, rpc, outpoint = _setup(rbf=True)
    original = _spend(outpoint, 500)
    rpc.sendrawtransaction(original.serialize().hex())
    assert _reject_reason(rpc, _spend(outpoint, 400)).startswith("insufficient fee")  # lower fee and rate
    assert _reject_reason(rpc, _spend(outpoint, 550)).startswith("insufficient fee")  # not +1 sat/vB to relay
    # the original's child is evicted with it, and its fee counts (rule 3)
    child_parent = (original.txid().hex(), 0)
    child = Transaction(vin=[TransactionInput(bytes.fromhex(child_parent[0]), 0, sequence=SIGNAL)],
                        vout=[TransactionOutput(99_500 - 2_000, Script(bytes.fromhex(ELSEWHERE)))])
    sign_p2wpkh_inputs(child, TEST_ACCOUNT_HDKEY.derive([1, 1]).key, [99_500])
    rpc.sendrawtransaction(child.serialize().hex())
    assert _reject_reason(rpc, _spend(outpoint, 1_000)).startswith("insufficient fee")  # < 500 + 2000
    winner = _spend(outpoint, 3_000)
    rpc.sendrawtransaction(winner.serialize().hex())
    assert sim.mempool_txids() == [winner.txid().hex()]


def test_a_non_signalling_original_cannot_be_replaced():
    sim, rpc, outpoint = _setup(rbf=True)
    rpc.sendrawtransaction(_spend(outpoint, 500, sequence=FINAL).serialize().hex())
    assert _reject_reason(rpc, _spend(outpoint, 5_000)).startswith("txn-mempool-conflict")
