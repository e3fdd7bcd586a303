"""Coin selection (pure): branch and bound finds changeless solutions, the fallback adds change, limits hold."""
from __future__ import annotations

import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satflow.domain.bitcoin import AddressKind, DUST_THRESHOLD_SAT, estimate_tx_vbytes
from satflow.domain.coin_selection import (
    BNB, INPUT_VBYTES, LARGEST_FIRST, LOWEST_LARGER, branch_and_bound, fallback, select_coins,
    selection_candidates,
)
from satflow.domain.onchain import Utxo

P2WPKH = AddressKind.P2WPKH
RATE = 5


@pytest.fixture(autouse=True)
def _no_sockets(monkeypatch):
    def guard(*args, **kwargs):
        raise AssertionError("coin selection is pure")

    monkeypatch.setattr(socket.socket, "connect", guard)


def utxo(value: int, n: int = 0) -> Utxo:
    return Utxo(txid=f"{n:064x}", vout=n % 3, value_sat=value, script_pubkey_hex="0014" + "00" * 20, chain=0,
                index=n, height=100)


def pool(*values: int) -> list[Utxo]:
    return [utxo(v, i) for i, v in enumerate(values)]


def changeless_value(amount: int, inputs: int = 1, outputs=(P2WPKH,)) -> int:
    """What inputs must hold so a changeless spend pays exactly the fee at RATE."""
    return amount + estimate_tx_vbytes([P2WPKH] * inputs, list(outputs)) * RATE


def _check_accounting(sel, amount: int, rate: int = RATE) -> None:
    assert sel.input_sat == sel.amount_sat + sel.fee_sat + sel.change_sat
    assert sel.amount_sat == amount
    kinds = [P2WPKH] * len(sel.inputs)
    outputs = [P2WPKH] + ([P2WPKH] if sel.change_sat else [])
    assert sel.vbytes == estimate_tx_vbytes(kinds, outputs)
    assert sel.fee_sat >= sel.vbytes * rate
    assert sel.change_sat == 0 or sel.change_sat >= DUST_THRESHOLD_SAT[P2WPKH]


def test_bnb_finds_the_exact_single_input():
    amount = 100_000
    exact = changeless_value(amount)
    sel = branch_and_bound(pool(500_000, exact, 40_000), amount_sat=amount, output_kinds=[P2WPKH], fee_rate=RATE)
    assert sel is not None and sel.algorithm == BNB and [u.value_sat for u in sel.inputs] == [exact]
    assert sel.change_sat == 0 and sel.fee_sat == exact - amount
    _check_accounting(sel, amount)


def test_bnb_combines_several_inputs_within_the_cost_of_change_window():
    amount = 100_000
    need = changeless_value(amount, inputs=2)
    sel = branch_and_bound(pool(1_000_000, need - 30_000 + 100, 30_000, 7_777), amount_sat=amount,
                           output_kinds=[P2WPKH], fee_rate=RATE)
    assert sel is not None and sorted(u.value_sat for u in sel.inputs) == [30_000, need - 30_000 + 100]
    assert sel.fee_sat - sel.vbytes * RATE == 100  # the overshoot is fee, below the cost of change
    _check_accounting(sel, amount)


def test_bnb_gives_up_when_nothing_lands_in_the_window():
    assert branch_and_bound(pool(1_000_000, 700_000), amount_sat=100_000, output_kinds=[P2WPKH],
                            fee_rate=RATE) is None


def test_fallback_lowest_larger_with_change():
    sel = fallback(pool(1_000_000, 700_000, 50_000), amount_sat=100_000, output_kinds=[P2WPKH], fee_rate=RATE)
    assert sel.algorithm == LOWEST_LARGER and [u.value_sat for u in sel.inputs] == [700_000]
    assert sel.change_sat == 700_000 - 100_000 - sel.fee_sat
    _check_accounting(sel, 100_000)


def test_fallback_largest_first_when_no_single_output_covers():
    sel = fallback(pool(60_000, 50_000, 40_000, 1_000), amount_sat=120_000, output_kinds=[P2WPKH], fee_rate=RATE)
    assert sel.algorithm == LARGEST_FIRST and [u.value_sat for u in sel.inputs] == [60_000, 50_000, 40_000]
    assert sel.change_sat > 0
    _check_accounting(sel, 120_000)


def test_fallback_drops_dust_change_into_the_fee():
    amount = 100_000
    value = changeless_value(amount) + 200  # too little left for a change output plus its fee
    sel = select_coins(pool(value), amount_sat=amount, output_kinds=[P2WPKH], fee_rate=RATE)
    assert sel.change_sat == 0 and sel.fee_sat == value - amount
    _check_accounting(sel, amount)


def test_insufficient_funds_and_uneconomic_inputs():
    assert select_coins(pool(50_000, 40_000), amount_sat=100_000, output_kinds=[P2WPKH], fee_rate=RATE) is None
    # an output worth less than the fee of spending it never helps
    assert selection_candidates(pool(300), amount_sat=294, output_kinds=[P2WPKH], fee_rate=RATE) == []


def test_max_inputs_is_respected():
    coins = pool(*[10_000] * 30)
    assert select_coins(coins, amount_sat=200_000, output_kinds=[P2WPKH], fee_rate=RATE, max_inputs=10) is None
    sel = select_coins(coins, amount_sat=200_000, output_kinds=[P2WPKH], fee_rate=RATE, max_inputs=25)
    assert sel is not None and len(sel.inputs) <= 25


def test_bnb_first_then_fallback_candidates():
    amount = 100_000
    coins = pool(900_000, changeless_value(amount))
    algorithms = [s.algorithm for s in selection_candidates(coins, amount_sat=amount, output_kinds=[P2WPKH],
                                                            fee_rate=RATE)]
    assert algorithms == [BNB, LOWEST_LARGER]


def test_deterministic_regardless_of_input_order():
    coins = pool(60_000, 50_000, 40_000, 33_000, 21_000, 9_000)
    a = select_coins(coins, amount_sat=95_000, output_kinds=[P2WPKH, AddressKind.P2TR], fee_rate=RATE)
    b = select_coins(list(reversed(coins)), amount_sat=95_000, output_kinds=[P2WPKH, AddressKind.P2TR],
                     fee_rate=RATE)
    assert a == b


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.integers(min_value=1_000, max_value=2_000_000), min_size=1, max_size=25),
       amount=st.integers(min_value=294, max_value=3_000_000), rate=st.integers(min_value=1, max_value=60))
def test_every_selection_balances_and_pays_its_fee(values, amount, rate):
    coins = pool(*values)
    for sel in selection_candidates(coins, amount_sat=amount, output_kinds=[P2WPKH], fee_rate=rate):
        _check_accounting(sel, amount, rate)
        if sel.algorithm == BNB:
            assert sel.change_sat == 0
            # within the window: never more overshoot than a change output would have cost
            assert sel.fee_sat - sel.vbytes * rate <= 31 * rate + INPUT_VBYTES * 10
    usable = sum(v - INPUT_VBYTES * rate for v in values if v > INPUT_VBYTES * rate)
    if usable >= amount + estimate_tx_vbytes([P2WPKH] * 25, [P2WPKH]) * rate:
        assert select_coins(coins, amount_sat=amount, output_kinds=[P2WPKH], fee_rate=rate) is not None


def test_a_successor_spends_every_required_input_then_adds_the_largest_others():
    from satflow.domain.coin_selection import REQUIRED_FIRST, with_required_inputs

    required = [utxo(60_000, 90), utxo(50_000, 91)]
    others = pool(5_000, 200_000, 80_000)
    enough = with_required_inputs(required, others, amount_sat=100_000, output_kinds=[P2WPKH], fee_rate=RATE)
    assert enough.algorithm == REQUIRED_FIRST and enough.inputs == tuple(required)  # nothing else needed
    _check_accounting(enough, 100_000)
    more = with_required_inputs(required, others, amount_sat=150_000, output_kinds=[P2WPKH], fee_rate=RATE)
    assert more.inputs[:2] == tuple(required) and more.inputs[2].value_sat == 200_000  # the largest other first
    _check_accounting(more, 150_000)
    assert with_required_inputs(required, [], amount_sat=150_000, output_kinds=[P2WPKH], fee_rate=RATE) is None
    assert with_required_inputs([], others, amount_sat=1_000, output_kinds=[P2WPKH], fee_rate=RATE) is None
