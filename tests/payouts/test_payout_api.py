"""POST /v1/payouts as a use case: validation codes, funds, idempotency, reads."""
from __future__ import annotations

import pytest

from satflow.app import payouts
from satflow.domain import errors
from satflow.domain.accounts import Principal, Scope
from satflow.domain.bitcoin import AddressKind
from satflow.domain.ids import derive_id
from satflow.domain.onchain import PayoutStatus
from satflow.domain.payouts import (
    MAX_PAYOUT_SAT, OVERHEAD_BUDGET_VBYTES, AmountBelowDust, PayoutAmountTooLarge, PayoutNotFound,
    fee_reserve_sat,
)
from satflow.domain.onchain import Priority

from .conftest import external_address

MAINNET_P2WPKH = "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
TESTNET_P2WPKH = "tb1q6rz28mcfaxtmd6v789l9rrlrusdprr9pqcpvkl"
MAINNET_P2PKH = "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"


def _create(flow, user, address, amount, priority="normal", key="k-1"):
    return payouts.create_payout(flow.svc, user, key, address, amount, priority)


@pytest.mark.parametrize("address, code", [
    ("bcrt1qnotanaddress", "INVALID_ADDRESS"),
    ("", "INVALID_ADDRESS"),
    (12345, "INVALID_ADDRESS"),
    (MAINNET_P2WPKH, "WRONG_NETWORK_ADDRESS"),
    (TESTNET_P2WPKH, "WRONG_NETWORK_ADDRESS"),
    (MAINNET_P2PKH, "WRONG_NETWORK_ADDRESS"),
])
def test_bad_addresses_are_refused_with_a_code(flow, address, code):
    user = flow.new_account(funds_sat=100_000)
    with pytest.raises(errors.InvalidAddress) as raised:
        _create(flow, user, address, 10_000)
    assert raised.value.code == code
    assert flow.balance(user.account_id) == (100_000_000, 0) and flow.svc.payouts.open_payout_ids() == []


@pytest.mark.parametrize("kind, dust", [("p2wpkh", 294), ("p2tr", 330), ("p2pkh", 546), ("p2sh", 540)])
def test_dust_is_refused_per_address_type(flow, kind, dust):
    user = flow.new_account(funds_sat=100_000)
    with pytest.raises(AmountBelowDust) as raised:
        _create(flow, user, external_address(50, kind), dust - 1)
    assert raised.value.code == "AMOUNT_BELOW_DUST" and raised.value.details["minimum"] == dust
    assert _create(flow, user, external_address(50, kind), dust).status is PayoutStatus.QUEUED


@pytest.mark.parametrize("amount, error", [
    (0, errors.ValidationError), (-5, errors.ValidationError), (1.0, errors.ValidationError),
    ("1000", errors.ValidationError), (True, errors.ValidationError), (MAX_PAYOUT_SAT + 1, PayoutAmountTooLarge),
])
def test_amount_limits(flow, amount, error):
    user = flow.new_account(funds_sat=100_000)
    with pytest.raises(error):
        _create(flow, user, external_address(51), amount)


def test_priority_must_be_known(flow):
    user = flow.new_account(funds_sat=100_000)
    with pytest.raises(errors.ValidationError) as raised:
        _create(flow, user, external_address(52), 10_000, priority="urgent")
    assert raised.value.details["field"] == "priority"


def test_insufficient_funds_reserve_nothing(flow):
    reserve = fee_reserve_sat(AddressKind.P2WPKH, Priority.NORMAL)
    user = flow.new_account(funds_sat=50_000 + reserve - 1)
    with pytest.raises(errors.InsufficientFunds):
        _create(flow, user, external_address(53), 50_000)
    assert flow.svc.payouts.get_payout(derive_id("po", user.account_id, "payout", "k-1")) is None
    assert flow.svc.payouts.open_payout_ids() == []
    ok = _create(flow, user, external_address(53), 50_000 - 1, key="k-2")  # exactly affordable
    assert flow.balance(user.account_id) == (0, (ok.amount_sat + ok.fee_reserve_sat) * 1000)
    flow.assert_invariants()


def test_fee_reserve_policy(flow):
    user = flow.new_account(funds_sat=1_000_000)
    p = _create(flow, user, external_address(54, "p2tr"), 100_000, priority="fast")
    assert p.fee_reserve_sat == 50 * (43 + OVERHEAD_BUDGET_VBYTES) == fee_reserve_sat(AddressKind.P2TR, Priority.FAST)
    assert fee_reserve_sat(AddressKind.P2WPKH, Priority.SLOW) == 10 * (31 + 178)


def test_same_key_and_body_is_the_same_payout_other_body_is_409(flow):
    user = flow.new_account(funds_sat=1_000_000)
    address = external_address(55)
    first = _create(flow, user, address, 100_000, key="pay-rent")
    again = _create(flow, user, address, 100_000, key="pay-rent")
    assert again == first
    assert flow.balance(user.account_id)[1] == (first.amount_sat + first.fee_reserve_sat) * 1000  # reserved once
    with pytest.raises(errors.IdempotencyKeyReused):
        _create(flow, user, address, 100_001, key="pay-rent")
    with pytest.raises(errors.IdempotencyKeyReused):
        _create(flow, user, external_address(56), 100_000, key="pay-rent")
    with pytest.raises(errors.ValidationError):
        _create(flow, user, address, 100_000, key=None)
    other = flow.new_account(funds_sat=1_000_000)  # keys are scoped to the account
    assert _create(flow, other, address, 100_000, key="pay-rent").payout_id != first.payout_id
    flow.assert_invariants()


def test_a_replay_racing_the_first_request_returns_the_stored_payout(flow):
    """Both requests passed the 'exists?' read: the ledger's conditional write decides, the loser replays."""
    user = flow.new_account(funds_sat=1_000_000)
    address = external_address(57)
    real_get = flow.svc.payouts.get_payout
    first = _create(flow, user, address, 100_000, key="race")
    calls = []

    def stale_get(payout_id):  # the second request's first read happened before the first request's write
        calls.append(payout_id)
        return None if len(calls) == 1 else real_get(payout_id)

    flow.svc.payouts.get_payout = stale_get
    try:
        assert _create(flow, user, address, 100_000, key="race") == first
        calls.clear()
        with pytest.raises(errors.IdempotencyKeyReused):
            _create(flow, user, external_address(58), 100_000, key="race")
    finally:
        flow.svc.payouts.get_payout = real_get
    flow.assert_invariants()


def test_reads_are_scoped_to_the_owner(flow):
    user = flow.new_account(funds_sat=1_000_000)
    p = _create(flow, user, external_address(59), 100_000)
    assert payouts.get_payout(flow.svc, user, p.payout_id) == p
    view = payouts.payout_view(p)
    assert view["status"] == "QUEUED" and view["payout_id"] == p.payout_id and view["txid"] is None
    stranger = flow.new_account()
    for principal, payout_id in ((stranger, p.payout_id), (user, "po_unknown"), (user, "pay_x"), (user, None)):
        with pytest.raises(PayoutNotFound):
            payouts.get_payout(flow.svc, principal, payout_id)
    with pytest.raises(errors.Forbidden):
        _create(flow, Principal(user.account_id, frozenset({Scope.READ})), external_address(59), 100_000)
