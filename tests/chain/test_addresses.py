"""Deposit and change addresses: BIP84 indexes from one atomic counter per chain, each owned by one account and
mapped back by script; the network is explicit."""
from __future__ import annotations

import pytest

from satflow.adapters.dynamodb.chain import DynamoChainStore
from satflow.adapters.dynamodb.models import build_models
from satflow.app.accounts import ADMIN, create_account
from satflow.app.addresses import new_change_address, new_deposit_address
from satflow.domain import errors
from satflow.domain.accounts import AccountStatus, Principal, Scope
from satflow.domain.addresses import Chain, DepositAddressDeriver, restore_gap_limit
from satflow.domain.bitcoin import Network, validate_address
from satflow.domain.onchain import HOT_WALLET_OWNER

from tests.conftest import TABLE

from .conftest import TEST_ACCOUNT_TPUB, assert_invariants, principal

DERIVER = DepositAddressDeriver(TEST_ACCOUNT_TPUB, Network.REGTEST)


def test_addresses_are_issued_in_sequence_from_one_counter_and_map_back_to_their_owner(svc, alice, bob):
    issued = [(owner, new_deposit_address(svc, principal(owner))) for owner in (alice, bob, alice, bob, bob)]
    assert [a.index for _, a in issued] == [0, 1, 2, 3, 4]  # one global receive chain, in counter order
    assert [a.address for _, a in issued] == [DERIVER.receive(i) for i in range(5)]
    assert len({a.address for _, a in issued}) == 5
    assert all(a.network == "regtest" and a.address.startswith("bcrt1q") for _, a in issued)
    assert all(validate_address(a.address, Network.REGTEST).kind.value == "p2wpkh" for _, a in issued)

    scripts = {DERIVER.script_pubkey(a.index, Chain.RECEIVE): (owner, a) for owner, a in issued}
    owners = svc.chain.owners(list(scripts) + ["0014" + "00" * 20])  # plus a script that is nobody's
    assert set(owners) == set(scripts)
    for script, record in owners.items():
        owner, address = scripts[script]
        assert (record.owner, record.chain, record.index, record.address) == (owner, 0, address.index,
                                                                                address.address)
    assert [r.index for r in svc.chain.addresses_of(alice)] == [0, 2]
    assert [r.index for r in svc.chain.addresses_of(bob)] == [1, 3, 4]
    assert_invariants(svc)


def test_change_addresses_come_from_chain_1_and_belong_to_the_hot_wallet(svc, ddb, alice):
    # The payout batcher's call: the store configured at composition time, no key passed per call.
    store = DynamoChainStore(ddb, build_models(TABLE, "us-east-1"), account_key=TEST_ACCOUNT_TPUB,
                             network="regtest")
    assert store.allocate_address(HOT_WALLET_OWNER, 1) == (0, DERIVER.change(0), DERIVER.script_pubkey(0, 1))
    index, address, script = new_change_address(svc)
    assert (index, address, script) == (1, DERIVER.change(1), DERIVER.script_pubkey(1, 1))
    assert new_deposit_address(svc, principal(alice)).index == 0  # the receive chain counts on its own
    (record,) = svc.chain.owners([script]).values()
    assert (record.owner, record.chain, record.index) == (HOT_WALLET_OWNER, 1, 1)
    with pytest.raises(errors.ValidationError):
        store.allocate_address(alice, 1)  # change belongs to a system account
    with pytest.raises(errors.ValidationError):
        store.allocate_address(alice, 2)
    assert_invariants(svc)


def test_the_network_is_explicit(ddb, svc, alice):
    models = build_models(TABLE, "us-east-1")
    with pytest.raises(errors.WrongNetworkAccountKey):
        DynamoChainStore(ddb, models, account_key=TEST_ACCOUNT_TPUB, network="bitcoin").allocate_address(alice, 0)
    with pytest.raises(errors.ValidationError):  # no key or no network: nothing is guessed
        DynamoChainStore(ddb, models).allocate_address(alice, 0)
    with pytest.raises(errors.ValidationError):
        DynamoChainStore(ddb, models, account_key=TEST_ACCOUNT_TPUB, network="mainnet").allocate_address(alice, 0)
    svc.network = "testnet"  # the same tpub is valid on testnet: the address says which network it is for
    address = new_deposit_address(svc, principal(alice))
    assert address.address.startswith("tb1q") and address.network == "testnet"
    assert_invariants(svc)


def test_only_a_receiving_account_that_is_not_closed_gets_addresses(svc, alice):
    with pytest.raises(errors.Forbidden):
        new_deposit_address(svc, Principal(account_id=alice, scopes=frozenset({Scope.READ})))
    with pytest.raises(errors.Forbidden):
        new_deposit_address(svc, ADMIN)
    svc.accounts.update(alice, updated_at="2026-11-21T12:00:00.000Z", status=AccountStatus.FROZEN)
    assert new_deposit_address(svc, principal(alice)).index == 0  # frozen accounts can still receive
    svc.accounts.update(alice, updated_at="2026-11-21T12:00:00.000Z", status=AccountStatus.CLOSED)
    with pytest.raises(errors.AccountClosed):
        new_deposit_address(svc, principal(alice))
    assert_invariants(svc)


def test_an_interrupted_allocation_burns_its_index_and_never_reuses_it(svc, alice, bob):
    assert new_deposit_address(svc, principal(alice)).index == 0
    svc.chain._next_index(Chain.RECEIVE)  # the counter moved, then the process died before the transaction
    assert new_deposit_address(svc, principal(bob)).index == 2
    assert svc.chain.owners([DERIVER.script_pubkey(1, 0)]) == {}
    # A restoring wallet must step over the hole: the gap limit operations export covers it.
    assert restore_gap_limit(3, [0, 2]) == 20
    assert_invariants(svc)


def test_concurrent_style_allocations_never_share_an_index(svc):
    accounts = [create_account(svc, ADMIN, f"tg:user{i}", 1)[0].account_id for i in range(6)]
    indexes = [new_deposit_address(svc, principal(a)).index for a in accounts for _ in range(2)]
    assert sorted(indexes) == list(range(12))
    assert_invariants(svc)
