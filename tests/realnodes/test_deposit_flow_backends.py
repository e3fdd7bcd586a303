"""The on-chain deposit flow on both chain backends: a fresh deposit address of ours, paid from outside (the Core
simulator's wallet, or on btcd the regtest miner's key: btcd has no wallet, so the harness builds and signs the
transaction with embit), scanned from the mempool as pending, confirmed block by block and credited at the depth
the amount-tiered policy asks for, with its UTXO recorded in the same ledger transaction.

Ledger on moto; the chain is the only thing that changes between the parameters. On btcd every test derives its
addresses from a fresh random account key: the stack is shared by the session and the first scan looks a few
blocks back, where another test's deposit to "index 0 of the test vector key" would otherwise be found.
"""
from __future__ import annotations

import os

import pytest

from satflow.adapters.dynamodb.chain import DynamoChainStore, forget_index_cache
from satflow.adapters.dynamodb.models import build_models
from satflow.adapters.dynamodb.utxos import DynamoUtxoStore
from satflow.app.accounts import ADMIN, create_account
from satflow.app.addresses import new_deposit_address
from satflow.app.deposits import forget_mempool_cache, list_deposits, scan_chain
from satflow.domain.onchain import HOT_WALLET_OWNER, DepositStatus, UtxoStatus

from tests.chain.conftest import Clock, balance, principal
from tests.conftest import TABLE, build_services

POLICY = "1000000:1,10000000:3,*:6"
MSAT = 1_000


def random_account_tpub() -> str:
    """m/84'/1'/0' of a random seed, as the deployed DepositAccountKey parameter would hold it."""
    from embit import bip32
    from embit.networks import NETWORKS

    root = bip32.HDKey.from_seed(os.urandom(32), version=NETWORKS["test"]["xprv"])
    return root.derive("m/84h/1h/0h").to_public().to_base58(version=NETWORKS["test"]["xpub"])


@pytest.fixture
def svc(ddb, chain):
    forget_index_cache()
    forget_mempool_cache()
    svc = build_services(ddb)
    models = build_models(TABLE, "us-east-1")
    svc.chain = DynamoChainStore(ddb, models)
    svc.utxos = DynamoUtxoStore(ddb, models)
    svc.bitcoind = lambda: chain.rpc
    svc.deposit_account_key = random_account_tpub()
    svc.network = "regtest"
    svc.deposit_policy = POLICY
    svc.clock = Clock()
    yield svc
    forget_index_cache()
    forget_mempool_cache()


def scan_until_caught_up(svc) -> dict:
    for _ in range(10):
        result = scan_chain(svc)
        if result["caught_up"]:
            return result
    raise AssertionError("the monitor never caught up with the node")


def test_a_deposit_is_seen_in_the_mempool_then_credited_at_the_policys_depth(svc, chain):
    alice = create_account(svc, ADMIN, "tg:alice", 1)[0].account_id
    scan_until_caught_up(svc)  # the first run starts a few blocks behind the node's tip
    amount_sat = 2_000_000  # 1,000,000 < amount <= 10,000,000: credited at 3 confirmations

    address = new_deposit_address(svc, principal(alice)).address
    assert address.startswith("bcrt1q")
    txid = chain.pay(address, amount_sat)
    seen = scan_until_caught_up(svc)
    assert seen["deposits_seen"] == 1
    assert balance(svc, alice) == (0, 0, amount_sat * MSAT)
    (view,) = list_deposits(svc, principal(alice)).items
    assert (view.txid, view.amount_sat, view.status, view.height) == (txid, amount_sat, DepositStatus.SEEN, None)
    assert view.required_confirmations == 3

    (first_block,) = chain.mine(1)
    confirmed = scan_until_caught_up(svc)
    assert confirmed.get("credited", 0) == 0
    (view,) = list_deposits(svc, principal(alice)).items
    assert view.confirmations == 1 and view.height == confirmed["height"]
    assert balance(svc, alice) == (0, 0, amount_sat * MSAT)

    chain.mine(2)
    credited = scan_until_caught_up(svc)
    assert credited["credited"] == 1
    assert balance(svc, alice) == (amount_sat * MSAT, 0, 0)
    assert balance(svc, HOT_WALLET_OWNER) == (-amount_sat * MSAT, 0, 0)
    deposit = svc.chain.get_deposit(f"{txid}:{view.vout}")
    assert deposit.status is DepositStatus.CREDITED and deposit.block_hash == first_block
    (utxo,) = svc.utxos.available()
    assert (utxo.outpoint, utxo.value_sat, utxo.status) == (f"{txid}:{view.vout}", amount_sat, UtxoStatus.AVAILABLE)

    assert scan_until_caught_up(svc).get("credited", 0) == 0  # a rescan credits nothing twice
    assert balance(svc, alice) == (amount_sat * MSAT, 0, 0)
    report = svc.ledger.check_invariants()
    assert report.ok, report.violations
