"""Pure solvency rules: holdings, drift arithmetic, breaches, thresholds, the breaker's read-side decision."""
from __future__ import annotations

import pytest

from satflow.domain.ledger import Balance, LedgerAccount, SystemAccount
from satflow.domain.solvency import (
    BreakerState,
    SourceFigures,
    SolvencyCheck,
    breaches,
    holding_msat,
    liabilities_msat,
    parse_thresholds,
    suspense_booked,
)

LND = SystemAccount.LND_NODE.value


def test_holding_counts_pending_out_back_and_ignores_pending_in():
    # credited 10, an announced deposit of 3 (pending_out), a reserved payment of 4 (pending_in): holds 10
    assert holding_msat([Balance(LedgerAccount(LND, "BTC"), available=-13, pending_out=3, pending_in=4)]) == 10


def test_drift_is_what_the_parts_do_not_explain():
    s = SourceFigures("lightning", ledger_msat=100, node_msat=80, parts={"payments_succeeded_not_posted": -15},
                      foreign_msat=7)
    assert (s.difference_msat, s.unexplained_msat, s.at_risk_msat) == (-20, -5, 12)
    assert breaches([s], {"lightning": 0}) and not breaches([s], {"lightning": 1})  # 12 msat vs 0 / 1000 msat
    assert breaches([SourceFigures("onchain", 0, 0, error="down")], {"onchain": 0}) == ()  # staleness decides


def test_check_round_trips_and_liabilities_come_from_system_accounts():
    check = SolvencyCheck("sol_x", "t", (SourceFigures("lightning", 1, 2, {"a": 1}, 0, {"d": 1}),),
                          {LND: -50, SystemAccount.OWNER_EQUITY.value: 20}, liabilities_msat({LND: -50, "e": 20}))
    assert check.liabilities_msat == 30
    assert SolvencyCheck.from_dict(check.to_dict()) == check


@pytest.mark.parametrize("text", ["[]", '{"other": 1}', '{"lightning": -1}', '{"lightning": 1.5}', "nope"])
def test_bad_thresholds_are_refused(text):
    with pytest.raises(ValueError):
        parse_thresholds(text)


def test_thresholds_default_and_override():
    assert parse_thresholds("") == {"lightning": 10_000, "onchain": 10_000}
    assert parse_thresholds('{"onchain": 0}') == {"lightning": 10_000, "onchain": 0}


def test_breaker_read_side():
    assert BreakerState().blocked_because(10**9, 60) is None  # never checked: a fresh deployment is open
    assert BreakerState(sends="paused", reasons=("x",)).blocked_because(0, 60) == "x"
    assert BreakerState(last_success_at=100).blocked_because(160, 60) is None
    assert "no successful" in BreakerState(last_success_at=100).blocked_because(161, 60)
    assert BreakerState(last_success_at=100, resumed_at=150).blocked_because(200, 60) is None  # resume buys time


def test_suspense_booking_direction_and_identity():
    found = suspense_booked(kind="closed_account_deposit", reference="t:0", amount_msat=5, created_at="a", shards=4)
    lost = suspense_booked(kind="foreign_spend", reference="t:0", amount_msat=5, created_at="b", shards=4)
    assert (found.debit.owner, found.credit.owner) == (SystemAccount.ONCHAIN_HOT_WALLET.value,
                                                        SystemAccount.SUSPENSE.value)
    assert (lost.debit.owner, lost.credit.owner) == (SystemAccount.SUSPENSE.value,
                                                      SystemAccount.ONCHAIN_HOT_WALLET.value)
    again = suspense_booked(kind="foreign_spend", reference="t:0", amount_msat=5, created_at="c", shards=4)
    assert again.same_as(lost) and found.id != lost.id  # keyed by (kind, reference): found twice, booked once


def test_breaches_to_trip_foreign_at_once_drift_when_seen_twice():
    from satflow.domain.solvency import SourceFigures, breaches_to_trip

    drift = SourceFigures("lightning", 0, 50_000_000)
    stolen = SourceFigures("onchain", 0, 0, foreign_msat=20_000_000)
    breached = ("lightning: unexplained 50000000 msat ...", "onchain: unexplained 0 msat + foreign 20000000 msat ...")
    assert breaches_to_trip((drift, stolen), breached, []) == breached[1:]  # foreign trips at once
    assert breaches_to_trip((drift, stolen), breached, ["lightning: unexplained 1 msat"]) == breached
    assert breaches_to_trip((drift,), breached[:1], ["onchain: unexplained 1 msat"]) == ()  # another source
