"""Payout risk, decided per payout at request time (the payout workflow runs per batch): block refuses before any
reservation; review reserves, holds the payout out of batching (IN_REVIEW) and parks on the REAL
statemachines/review.asl.json; approve -> QUEUED and batched; reject -> voided, refunded."""
from __future__ import annotations

import time

import pytest

from satflow.app import accounts as accounts_app
from satflow.app import payouts, risk
from satflow.domain import errors
from satflow.domain.ids import derive_id
from satflow.domain.onchain import PayoutStatus
from satflow.domain.risk import ReviewStatus, RiskPolicy, SubjectKind, review_id_for

from tests.payouts.conftest import external_address

REVIEW_ALL = RiskPolicy(review_at=20, block_at=101)
BLOCK_ALL = RiskPolicy(review_at=20, block_at=21)
FUNDS_SAT = 1_000_000


def _decide(flow, review_id, approve):
    return risk.decide_review(flow.svc, accounts_app.ADMIN, review_id, approve,
                              notify=risk.sfn_notifier(flow.moto.client("stepfunctions")))


def _parked(flow, review_id, timeout_s=15.0):
    """Until the review workflow stored its task token (it waits for the admin)."""
    deadline = time.monotonic() + timeout_s
    while True:
        review = flow.svc.risk.get_review(review_id)
        if review is not None and review.task_token:
            return
        assert time.monotonic() < deadline, "never parked"
        time.sleep(0.05)


def _wait_review(flow, review_id):
    return flow.moto.wait(flow.moto.execution_arn(flow.review_state_machine_arn, review_id), 20)


def test_a_blocked_payout_reserves_nothing(payout_review):
    flow = payout_review
    flow.svc.risk_policy = BLOCK_ALL
    user = flow.new_account(funds_sat=FUNDS_SAT)
    with pytest.raises(errors.RiskBlocked):
        flow.payout(user, external_address(1), 100_000, key="k-1")
    assert flow.balance(user.account_id) == (FUNDS_SAT * 1000, 0)
    assert flow.svc.payouts.get_payout(derive_id("po", user.account_id, "payout", "k-1")) is None
    assert flow.svc.payouts.open_payout_ids() == []


def test_a_payout_in_review_is_held_out_of_batching_then_approved_batched_and_confirmed(payout_review):
    flow = payout_review
    flow.svc.risk_policy = REVIEW_ALL
    flow.seed_utxos(400_000)
    user = flow.new_account(funds_sat=FUNDS_SAT)
    held = flow.payout(user, external_address(1), 100_000)
    review_id = review_id_for(SubjectKind.PAYOUT, held.payout_id)
    assert held.status is PayoutStatus.IN_REVIEW
    assert flow.balance(user.account_id)[1] == (held.amount_sat + held.fee_reserve_sat) * 1000  # reserved
    assert payouts.run_batcher(flow.svc)["queued"] == 0  # not batched while in review
    assert flow.get(held.payout_id).status is PayoutStatus.IN_REVIEW
    _parked(flow, review_id)

    assert _decide(flow, review_id, True).workflow == "resumed"
    assert _wait_review(flow, review_id).states[-2:] == ["Apply", "Done"]
    assert flow.get(held.payout_id).status is PayoutStatus.QUEUED

    counts = payouts.run_batcher(flow.svc)
    assert counts["batched"] == 1
    batch_id = flow.get(held.payout_id).batch_id
    assert flow.wait(batch_id).final_state == "Done"
    final = flow.get(held.payout_id)
    assert final.status is PayoutStatus.CONFIRMED
    assert flow.balance(user.account_id) == ((FUNDS_SAT - final.amount_sat - final.fee_sat) * 1000, 0)
    flow.assert_invariants()


def test_a_payout_in_review_rejected_is_voided_and_refunded(payout_review):
    flow = payout_review
    flow.svc.risk_policy = REVIEW_ALL
    user = flow.new_account(funds_sat=FUNDS_SAT)
    held = flow.payout(user, external_address(2), 100_000)
    review_id = review_id_for(SubjectKind.PAYOUT, held.payout_id)
    _parked(flow, review_id)

    _decide(flow, review_id, False)
    _wait_review(flow, review_id)

    assert flow.get(held.payout_id).status is PayoutStatus.CANCELED
    assert flow.balance(user.account_id) == (FUNDS_SAT * 1000, 0)
    assert flow.svc.payouts.open_payout_ids() == []
    assert flow.svc.risk.get_review(review_id).status is ReviewStatus.REJECTED
    flow.assert_invariants()


def test_the_user_may_cancel_a_payout_in_review_and_the_later_decision_changes_nothing(payout_review):
    flow = payout_review
    flow.svc.risk_policy = REVIEW_ALL
    user = flow.new_account(funds_sat=FUNDS_SAT)
    held = flow.payout(user, external_address(3), 100_000)
    review_id = review_id_for(SubjectKind.PAYOUT, held.payout_id)
    _parked(flow, review_id)
    assert payouts.cancel_payout(flow.svc, user, held.payout_id).status is PayoutStatus.CANCELED

    _decide(flow, review_id, True)
    _wait_review(flow, review_id)
    assert flow.get(held.payout_id).status is PayoutStatus.CANCELED
    assert flow.balance(user.account_id) == (FUNDS_SAT * 1000, 0)
    flow.assert_invariants()
