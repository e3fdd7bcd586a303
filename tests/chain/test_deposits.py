"""The chain monitor end to end: mempool -> pending_in, confirmations and events, credit by the amount-tiered
policy, idempotent rescans, reorgs before and after credit (including an overdraft that freezes), our change
outputs as UTXOs, and GET /v1/deposits."""
from __future__ import annotations

import pytest

from satflow.app.addresses import new_change_address, new_deposit_address
from satflow.app.deposits import list_deposits
from satflow.app.transfers import create_transfer
from satflow.domain import errors
from satflow.domain.accounts import AccountStatus
from satflow.domain.deposits import (
    EVENT_CONFIRMATIONS,
    BlockRecord,
    ChainTip,
    ReorgBeyondWindow,
    EVENT_CREDITED,
    EVENT_DROPPED,
    EVENT_REORGED,
    EVENT_REVERSED,
    EVENT_SEEN,
)
from satflow.domain.onchain import HOT_WALLET_OWNER, DepositStatus, UtxoStatus

from .conftest import assert_invariants, balance, principal, scan

MSAT = 1_000


def deposit_to(svc, chain_sim, account_id: str, amount_sat: int):
    """An external wallet pays a fresh address of ``account_id``; returns (address, outpoint)."""
    address = new_deposit_address(svc, principal(account_id)).address
    txid = chain_sim.send_to_address(address, amount_sat)
    (vout,) = [n for n, out in enumerate(chain_sim.mempool_entry(txid).tx.vout)
               if out.value == amount_sat]
    return address, f"{txid}:{vout}"


def timeline(deposit) -> list[tuple[str, int]]:
    return [(e.type, e.confirmations) for e in deposit.events]


def test_a_mempool_deposit_shows_as_pending_in(svc, chain_sim, alice):
    address, outpoint = deposit_to(svc, chain_sim, alice, 250_000)
    result = scan(svc)
    assert result["deposits_seen"] == 1 and result["caught_up"]
    assert balance(svc, alice) == (0, 0, 250_000 * MSAT)
    assert balance(svc, HOT_WALLET_OWNER) == (-250_000 * MSAT, 250_000 * MSAT, 0)
    deposit = svc.chain.get_deposit(outpoint)
    assert deposit.status is DepositStatus.SEEN and deposit.height is None and deposit.address == address
    assert timeline(deposit) == [(EVENT_SEEN, 0)]
    assert scan(svc).get("deposits_seen", 0) == 0  # the next run changes nothing
    assert balance(svc, alice) == (0, 0, 250_000 * MSAT)
    assert_invariants(svc)


def test_a_small_deposit_is_credited_at_one_confirmation_with_events_at_0_1_3_6(svc, chain_sim, alice):
    _, outpoint = deposit_to(svc, chain_sim, alice, 400_000)
    scan(svc)
    (block_hash,) = chain_sim.mine(1)
    result = scan(svc)
    assert result["credited"] == 1
    assert balance(svc, alice) == (400_000 * MSAT, 0, 0)
    assert balance(svc, HOT_WALLET_OWNER) == (-400_000 * MSAT, 0, 0)
    deposit = svc.chain.get_deposit(outpoint)
    assert (deposit.status, deposit.block_hash, deposit.height) == (DepositStatus.CREDITED, block_hash, 102)
    assert timeline(deposit) == [(EVENT_SEEN, 0), (EVENT_CONFIRMATIONS, 1), (EVENT_CREDITED, 1)]
    (utxo,) = svc.utxos.available()  # the credit added our UTXO in the same ledger transaction
    assert (utxo.outpoint, utxo.value_sat, utxo.chain, utxo.index, utxo.height, utxo.status) == (
        outpoint, 400_000, 0, 0, 102, UtxoStatus.AVAILABLE)
    assert [t.kind.value for t in (svc.ledger.get_transfer(f"dsn_{outpoint}"),
                                   svc.ledger.get_transfer(f"dcr_{outpoint}"))] == ["PENDING", "POST_PENDING"]

    chain_sim.mine(2)
    scan(svc)
    assert timeline(svc.chain.get_deposit(outpoint))[-1] == (EVENT_CONFIRMATIONS, 3)
    chain_sim.mine(3)
    scan(svc)
    deposit = svc.chain.get_deposit(outpoint)
    assert timeline(deposit)[-1] == (EVENT_CONFIRMATIONS, 6)
    assert [d.outpoint for d in svc.chain.watched_deposits()] == []  # final: no longer watched
    chain_sim.mine(1)
    scan(svc)
    assert len(svc.chain.get_deposit(outpoint).events) == 5
    assert_invariants(svc)


def test_larger_deposits_wait_for_their_tier(svc, chain_sim, alice, bob):
    _, medium = deposit_to(svc, chain_sim, alice, 5_000_000)  # <= 10,000,000 sat: 3 confirmations
    _, large = deposit_to(svc, chain_sim, bob, 20_000_000)  # above every bound: 6 confirmations
    chain_sim.mine(1)
    scan(svc)
    assert svc.chain.get_deposit(medium).status is DepositStatus.CONFIRMING
    assert svc.chain.get_deposit(medium).required_confirmations == 3
    assert balance(svc, alice) == (0, 0, 5_000_000 * MSAT)
    chain_sim.mine(1)
    scan(svc)
    assert balance(svc, alice) == (0, 0, 5_000_000 * MSAT)  # 2 confirmations: not yet
    chain_sim.mine(1)
    scan(svc)
    assert balance(svc, alice) == (5_000_000 * MSAT, 0, 0)
    assert svc.chain.get_deposit(medium).status is DepositStatus.CREDITED
    assert svc.chain.get_deposit(large).status is DepositStatus.CONFIRMING
    assert balance(svc, bob) == (0, 0, 20_000_000 * MSAT)
    chain_sim.mine(2)
    scan(svc)
    assert balance(svc, bob) == (0, 0, 20_000_000 * MSAT)  # 5 confirmations
    chain_sim.mine(1)
    scan(svc)
    assert balance(svc, bob) == (20_000_000 * MSAT, 0, 0)
    assert timeline(svc.chain.get_deposit(large)) == [
        (EVENT_SEEN, 0), (EVENT_CONFIRMATIONS, 1), (EVENT_CONFIRMATIONS, 3), (EVENT_CONFIRMATIONS, 6),
        (EVENT_CREDITED, 6)]
    assert_invariants(svc)


def test_the_same_block_scanned_twice_credits_once(svc, chain_sim, alice, monkeypatch):
    _, outpoint = deposit_to(svc, chain_sim, alice, 300_000)
    chain_sim.mine(1)  # first seen directly in a block (never scanned in the mempool)
    connect = svc.chain.connect_block
    crashes = []

    def crash_before_the_tip_moves(prev, block, at):
        if block.deposits and not crashes:
            crashes.append(block.height)
            raise errors.TransientError("simulated crash after the deposit writes, before the tip moved")
        return connect(prev, block, at)

    monkeypatch.setattr(svc.chain, "connect_block", crash_before_the_tip_moves)
    with pytest.raises(errors.TransientError):
        scan(svc)
    assert svc.chain.get_deposit(outpoint).status is DepositStatus.CONFIRMING
    assert svc.chain.tip().height == crashes[0] - 1
    scan(svc)  # the block again: the deposit is a replay, then the credit
    scan(svc)
    assert svc.chain.tip().height == 102
    assert balance(svc, alice) == (300_000 * MSAT, 0, 0)
    history = svc.ledger.history(alice, "BTC", 10).items
    assert sorted(h.transfer_id for h in history) == sorted([f"dsn_{outpoint}", f"dcr_{outpoint}"])
    assert timeline(svc.chain.get_deposit(outpoint)) == [(EVENT_SEEN, 0), (EVENT_CONFIRMATIONS, 1),
                                                         (EVENT_CREDITED, 1)]
    assert len(svc.utxos.available()) == 1
    assert_invariants(svc)


def test_a_reorg_before_credit_drops_the_deposit_when_the_transaction_is_gone(svc, chain_sim, alice):
    _, outpoint = deposit_to(svc, chain_sim, alice, 2_000_000)  # needs 3 confirmations
    chain_sim.mine(1)
    scan(svc)
    assert balance(svc, alice) == (0, 0, 2_000_000 * MSAT)
    chain_sim.reorg(depth=1, drop_txids=[outpoint.split(":")[0]])  # double-spent away
    result = scan(svc)
    assert result["reorgs"] == 1 and result["dropped"] == 1 and result.get("credited", 0) == 0
    deposit = svc.chain.get_deposit(outpoint)
    assert deposit.status is DepositStatus.REVERSED and deposit.reversed_by == f"dvd_{outpoint}"
    assert deposit.credited_at is None
    assert timeline(deposit) == [(EVENT_SEEN, 0), (EVENT_CONFIRMATIONS, 1), (EVENT_REORGED, 0), (EVENT_DROPPED, 0)]
    assert balance(svc, alice) == (0, 0, 0)
    assert balance(svc, HOT_WALLET_OWNER) == (0, 0, 0)
    chain_sim.mine(6)
    scan(svc)
    assert balance(svc, alice) == (0, 0, 0)
    assert_invariants(svc)


def test_a_reorg_before_credit_puts_the_deposit_back_to_seen_while_it_is_in_the_mempool(svc, chain_sim, alice):
    _, outpoint = deposit_to(svc, chain_sim, alice, 2_000_000)
    chain_sim.mine(1)
    scan(svc)
    chain_sim.reorg(depth=1, replacement_blocks=0)  # the block is gone, the transaction back in the mempool
    result = scan(svc)
    assert result["reorgs"] == 1 and result["deposits_disconnected"] == 1
    deposit = svc.chain.get_deposit(outpoint)
    assert (deposit.status, deposit.height, deposit.block_hash) == (DepositStatus.SEEN, None, None)
    assert balance(svc, alice) == (0, 0, 2_000_000 * MSAT)  # still announced, not credited
    chain_sim.mine(3)
    scan(svc)
    deposit = svc.chain.get_deposit(outpoint)
    assert deposit.status is DepositStatus.CREDITED and deposit.generation == 0
    assert timeline(deposit) == [(EVENT_SEEN, 0), (EVENT_CONFIRMATIONS, 1), (EVENT_REORGED, 0),
                                 (EVENT_CONFIRMATIONS, 1), (EVENT_CONFIRMATIONS, 3), (EVENT_CREDITED, 3)]
    assert balance(svc, alice) == (2_000_000 * MSAT, 0, 0)
    assert_invariants(svc)


def test_a_credited_deposit_re_mined_by_the_reorg_keeps_its_credit(svc, chain_sim, alice):
    _, outpoint = deposit_to(svc, chain_sim, alice, 600_000)
    chain_sim.mine(1)
    scan(svc)
    assert balance(svc, alice) == (600_000 * MSAT, 0, 0)
    (new_first, _) = chain_sim.reorg(depth=1)  # the usual short reorg: the new chain holds the same transaction
    result = scan(svc)
    assert result["reorgs"] == 1 and result.get("reversed", 0) == 0
    deposit = svc.chain.get_deposit(outpoint)
    assert (deposit.status, deposit.block_hash, deposit.height) == (DepositStatus.CREDITED, new_first, 102)
    assert balance(svc, alice) == (600_000 * MSAT, 0, 0)
    (utxo,) = svc.utxos.available()
    assert (utxo.outpoint, utxo.height) == (outpoint, 102)
    assert svc.ledger.get_transfer(f"rev_{outpoint}") is None
    assert_invariants(svc)


def test_a_reorg_after_credit_reverses_it_with_an_explicit_transfer(svc, chain_sim, alice):
    _, outpoint = deposit_to(svc, chain_sim, alice, 600_000)
    chain_sim.mine(1)
    scan(svc)
    assert balance(svc, alice) == (600_000 * MSAT, 0, 0) and len(svc.utxos.available()) == 1
    chain_sim.reorg(depth=1, drop_txids=[outpoint.split(":")[0]])
    result = scan(svc)
    assert result["reversed"] == 1 and result["utxos_removed"] == 1
    deposit = svc.chain.get_deposit(outpoint)
    assert deposit.status is DepositStatus.REVERSED and deposit.reversed_by == f"rev_{outpoint}"
    assert timeline(deposit)[-2:] == [(EVENT_REORGED, 0), (EVENT_REVERSED, 0)]
    reversal = svc.ledger.get_transfer(f"rev_{outpoint}")
    assert (reversal.template, reversal.amount, reversal.debit.owner) == ("deposit_reversed", 600_000 * MSAT, alice)
    assert balance(svc, alice) == (0, 0, 0) and balance(svc, HOT_WALLET_OWNER) == (0, 0, 0)
    assert svc.utxos.available() == []
    assert svc.accounts.get(alice).status is AccountStatus.ACTIVE
    scan(svc)
    assert balance(svc, alice) == (0, 0, 0)
    assert_invariants(svc)


def test_a_reorg_after_the_user_spent_the_deposit_overdraws_and_freezes(svc, chain_sim, alice, bob):
    _, outpoint = deposit_to(svc, chain_sim, alice, 500_000)
    chain_sim.mine(1)
    scan(svc)
    create_transfer(svc, principal(alice), "spend-1", bob, 400_000 * MSAT)
    chain_sim.reorg(depth=1, drop_txids=[outpoint.split(":")[0]])
    result = scan(svc)
    assert result["reversed"] == 1 and result["overdrafts"] == 1
    assert svc.ledger.get_transfer(f"rev_{outpoint}").overdraft
    assert balance(svc, alice) == (-400_000 * MSAT, 0, 0)
    assert svc.accounts.get(alice).status is AccountStatus.FROZEN  # in the same transaction as the reversal
    assert svc.chain.get_deposit(outpoint).status is DepositStatus.REVERSED
    assert balance(svc, bob) == (400_000 * MSAT, 0, 0)
    assert_invariants(svc, f"{alice}/BTC: user available below zero ({-400_000 * MSAT})")


def test_a_reorged_deposit_whose_utxo_a_batch_reserved_is_left_and_logged(svc, chain_sim, alice, caplog):
    _, outpoint = deposit_to(svc, chain_sim, alice, 700_000)
    chain_sim.mine(1)
    scan(svc)
    (utxo,) = svc.utxos.available()
    assert not svc.chain.write(svc.utxos.reserve_items([utxo], "batch_1"))
    chain_sim.reorg(depth=1, drop_txids=[outpoint.split(":")[0]])
    result = scan(svc)
    assert result["utxo_conflicts"] == 1 and result["reversed"] == 1
    left = svc.utxos.get(utxo.txid, utxo.vout)
    assert (left.status, left.reserved_by) == (UtxoStatus.RESERVED, "batch_1")
    assert any("batch_1" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    assert balance(svc, alice) == (0, 0, 0)
    assert_invariants(svc)


def test_a_reversed_deposit_that_confirms_again_is_a_new_generation(svc, chain_sim, alice):
    _, outpoint = deposit_to(svc, chain_sim, alice, 600_000)
    txid = outpoint.split(":")[0]
    chain_sim.mine(1)
    scan(svc)
    tx_hex = svc.bitcoind().getrawtransaction(txid, False)
    chain_sim.reorg(depth=1, drop_txids=[txid])
    scan(svc)
    assert svc.chain.get_deposit(outpoint).status is DepositStatus.REVERSED
    chain_sim.submit_raw_transaction(tx_hex)  # the payer rebroadcasts the very same transaction
    scan(svc)
    deposit = svc.chain.get_deposit(outpoint)
    assert (deposit.status, deposit.generation) == (DepositStatus.SEEN, 1)
    assert balance(svc, alice) == (0, 0, 600_000 * MSAT)
    chain_sim.mine(1)
    scan(svc)
    assert svc.chain.get_deposit(outpoint).status is DepositStatus.CREDITED
    assert balance(svc, alice) == (600_000 * MSAT, 0, 0)
    assert svc.ledger.get_transfer(f"dcr_{outpoint}.g1") is not None
    assert_invariants(svc)


def test_our_change_outputs_become_utxos_once_confirmed_without_a_ledger_entry(svc, chain_sim, alice):
    index, address, script = new_change_address(svc)
    txid = chain_sim.send_to_address(address, 70_000)  # stands in for a payout batch paying its change to us
    assert scan(svc).get("change_outputs", 0) == 0 and svc.utxos.available() == []  # unconfirmed: not yet
    chain_sim.mine(1)
    result = scan(svc)
    assert result["change_outputs"] == 1 and result.get("deposits_seen", 0) == 0
    (utxo,) = svc.utxos.available()
    assert (utxo.txid, utxo.value_sat, utxo.chain, utxo.index, utxo.script_pubkey_hex, utxo.height) == (
        txid, 70_000, 1, index, script, 102)
    assert balance(svc, HOT_WALLET_OWNER) == (0, 0, 0)  # the money never left the hot wallet
    scan(svc)
    assert len(svc.utxos.available()) == 1
    chain_sim.reorg(depth=1, drop_txids=[txid])
    assert scan(svc)["utxos_removed"] == 1 and svc.utxos.available() == []
    assert_invariants(svc)


def test_the_first_run_starts_a_few_blocks_below_the_tip_and_catches_up_in_bounded_steps(svc, chain_sim, alice):
    result = scan(svc)
    assert (result["height"], result["blocks"], result["caught_up"]) == (101, 6, True)
    chain_sim.mine(20)
    result = scan(svc, max_blocks=12)
    assert (result["height"], result["blocks"], result["caught_up"]) == (113, 12, False)
    result = scan(svc, max_blocks=12)
    assert (result["height"], result["blocks"], result["caught_up"]) == (121, 8, True)
    assert svc.chain.tip().hash == chain_sim.tip_hash
    assert [b.height for b in svc.chain.recent_blocks(3)] == [121, 120, 119]


def test_a_deposit_that_left_the_mempool_for_a_block_not_yet_scanned_is_not_dropped(svc, chain_sim, alice):
    _, outpoint = deposit_to(svc, chain_sim, alice, 100_000)
    scan(svc)
    chain_sim.mine(20)  # mined at 102; the monitor is far behind
    result = scan(svc, max_blocks=0)
    assert not result["caught_up"] and result.get("dropped", 0) == 0
    assert svc.chain.get_deposit(outpoint).status is DepositStatus.SEEN
    scan(svc, max_blocks=50)
    deposit = svc.chain.get_deposit(outpoint)
    assert (deposit.status, deposit.height) == (DepositStatus.CREDITED, 102)
    assert balance(svc, alice) == (100_000 * MSAT, 0, 0)
    assert_invariants(svc)


def test_list_deposits_newest_first_paginated_with_confirmations(svc, chain_sim, alice, bob):
    _, first = deposit_to(svc, chain_sim, alice, 100_000)
    scan(svc)
    chain_sim.mine(1)
    _, second = deposit_to(svc, chain_sim, alice, 2_000_000)
    _, third = deposit_to(svc, chain_sim, alice, 300_000)
    deposit_to(svc, chain_sim, bob, 50_000)
    scan(svc)
    chain_sim.mine(1)
    scan(svc)

    page = list_deposits(svc, principal(alice), limit=2)
    assert [v.outpoint for v in page.items] == [third, second] and page.next_cursor
    rest = list_deposits(svc, principal(alice), limit=2, cursor=page.next_cursor)
    assert [v.outpoint for v in rest.items] == [first] and rest.next_cursor is None
    by_outpoint = {v.outpoint: v for v in page.items + rest.items}
    assert (by_outpoint[first].confirmations, by_outpoint[first].status) == (2, DepositStatus.CREDITED)
    assert (by_outpoint[second].confirmations, by_outpoint[second].status) == (1, DepositStatus.CONFIRMING)
    assert by_outpoint[second].required_confirmations == 3
    shown = by_outpoint[third].to_dict()
    assert set(shown) == {"txid", "vout", "amount_sat", "confirmations", "required_confirmations", "status",
                          "address", "height", "first_seen_at", "credited_at", "reversed_at", "events"}
    assert shown["status"] == "CREDITED" and shown["amount_sat"] == 300_000 and type(shown["amount_sat"]) is int
    assert [e["type"] for e in shown["events"]] == [EVENT_SEEN, EVENT_CONFIRMATIONS, EVENT_CREDITED]
    assert len(list_deposits(svc, principal(bob)).items) == 1
    with pytest.raises(errors.ValidationError):
        list_deposits(svc, principal(alice), limit=0)
    with pytest.raises(errors.ValidationError):
        list_deposits(svc, principal(alice), cursor="not-a-cursor")
    assert_invariants(svc)


def test_only_one_run_moves_the_tip_and_a_fork_below_our_records_stops_for_an_operator(svc, chain_sim, ddb):
    scan(svc)
    tip = svc.chain.tip()
    stale = ChainTip(tip.height - 1, "00" * 32)  # a concurrent run's outdated view
    assert not svc.chain.connect_block(stale, BlockRecord(tip.height + 1, "11" * 32, stale.hash), "t")
    assert svc.chain.tip() == tip
    for record in svc.chain.recent_blocks():  # pretend the fork is older than every record we keep
        ddb.delete_item(TableName=svc.chain._table,
                        Key={"pk": {"S": "CHAINBLOCK"}, "sk": {"S": f"{record.height:010d}"}})
    chain_sim.reorg(depth=2)
    with pytest.raises(ReorgBeyondWindow):
        scan(svc)
    assert svc.chain.tip() == tip  # nothing guessed


def test_a_crash_before_the_tip_move_then_a_reorg_never_credits_a_vanished_deposit(svc, chain_sim, alice):
    """Review finding: the deposit was written with its block, the tip move crashed, a reorg then dropped the
    transaction; the deposit was credited from its height alone and its phantom UTXO became spendable."""
    from satflow.domain.onchain import DepositStatus

    scan(svc)
    _, outpoint = deposit_to(svc, chain_sim, alice, 500_000)  # the 1-confirmation tier
    chain_sim.mine(1)
    real = svc.chain.connect_block

    def crash(*args, **kwargs):
        raise RuntimeError("Lambda timed out after the deposit writes")

    svc.chain.connect_block = crash
    with pytest.raises(RuntimeError):
        scan(svc)
    svc.chain.connect_block = real
    chain_sim.reorg(depth=1, drop_txids=[outpoint.split(":")[0]])  # double-spent away
    scan(svc)
    scan(svc)
    assert svc.chain.get_deposit(outpoint).status is not DepositStatus.CREDITED
    assert balance(svc, alice)[0] == 0
    assert outpoint not in {u.outpoint for u in svc.utxos.available()}
    assert svc.ledger.check_invariants().ok
