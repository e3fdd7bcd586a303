"""The review sweeper (monitor job ``review_sweeper``): a held send whose review workflow is gone is still finished.

Review proved the gap: a review workflow that failed to start (StartExecution throttled after the hold committed),
or that ended in NeedsAttention, left an approved transfer's reservation held forever; the admin was told
"not_parked_yet" and nothing else would ever apply the decision."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from satflow.app import accounts as accounts_app
from satflow.app import risk, transfers
from satflow.domain.risk import ReviewStatus, RiskPolicy

from tests.risk.test_app import FUNDS, _account

REVIEW_ALL = RiskPolicy(review_at=1, block_at=101)


def later(iso: str, seconds: int) -> str:
    t = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc) + timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def available(svc, account_id):
    (b,) = [b for b in svc.ledger.balances(account_id) if b.account.asset == "BTC"] or [None]
    return (b.available, b.pending_out, b.pending_in) if b else (0, 0, 0)


@pytest.fixture
def held(svc):
    """A transfer held for review whose workflow never started."""
    alice, bob = _account(svc, "tg:a", FUNDS), _account(svc, "tg:b")
    svc.risk_policy = REVIEW_ALL

    def start_fails(review_id):
        raise RuntimeError("StartExecution throttled")

    svc.start_review = start_fails
    with pytest.raises(RuntimeError):
        transfers.create_transfer(svc, alice, "k1", bob.account_id, 2_000)
    (review,) = risk.list_reviews(svc, accounts_app.ADMIN, "pending")[0]
    return alice, bob, review


@pytest.mark.parametrize("approve", [True, False])
def test_a_decision_whose_workflow_is_gone_is_applied_by_the_sweeper(svc, held, approve):
    alice, bob, review = held
    outcome = risk.decide_review(svc, accounts_app.ADMIN, review.review_id, approve, notify=lambda t, o: "resumed")
    assert outcome.workflow == "not_parked_yet"
    decided_at = svc.risk.get_review(review.review_id).decided_at
    assert risk.sweep_reviews(svc, now_iso=later(decided_at, 60))["applied"] == 0  # the workflow may still come
    assert svc.ledger.pending_resolution(review.subject_id) is None

    counts = risk.sweep_reviews(svc, now_iso=later(decided_at, risk.SWEEP_APPLY_AFTER_S + 1))
    assert counts == {"applied": 1, "timed_out": 0, "errors": 0}
    suffix = ":post" if approve else ":void"
    assert svc.ledger.pending_resolution(review.subject_id) == review.subject_id + suffix
    assert available(svc, alice.account_id) == ((FUNDS - 2_000) if approve else FUNDS, 0, 0)
    assert available(svc, bob.account_id) == ((2_000 if approve else 0), 0, 0)
    # applied once: the next run finds nothing, and the ledger stays consistent
    assert risk.sweep_reviews(svc, now_iso=later(decided_at, 7_200))["applied"] == 0
    assert svc.ledger.check_invariants().ok


def test_a_review_nobody_decides_is_rejected_after_its_timeout_and_voided(svc, held):
    alice, bob, review = held
    just_before = later(review.created_at, risk.REVIEW_TIMEOUT_S + risk.SWEEP_TIMEOUT_GRACE_S - 60)
    assert risk.sweep_reviews(svc, now_iso=just_before)["timed_out"] == 0
    assert svc.risk.get_review(review.review_id).status is ReviewStatus.PENDING

    after = later(review.created_at, risk.REVIEW_TIMEOUT_S + risk.SWEEP_TIMEOUT_GRACE_S + 60)
    assert risk.sweep_reviews(svc, now_iso=after) == {"applied": 0, "timed_out": 1, "errors": 0}
    decided = svc.risk.get_review(review.review_id)
    assert decided.status is ReviewStatus.REJECTED
    assert svc.ledger.pending_resolution(review.subject_id) == review.subject_id + ":void"
    assert available(svc, alice.account_id) == (FUNDS, 0, 0)
    # a late approval cannot undo it
    with pytest.raises(Exception) as late:
        risk.decide_review(svc, accounts_app.ADMIN, review.review_id, True, notify=lambda t, o: "resumed")
    assert getattr(late.value, "code", "") == "REVIEW_ALREADY_DECIDED"
    assert risk.sweep_reviews(svc, now_iso=later(after, 3_600)) == {"applied": 0, "timed_out": 0, "errors": 0}


def test_a_decision_applied_by_its_workflow_leaves_nothing_for_the_sweeper(svc, held):
    _, _, review = held
    risk.decide_review(svc, accounts_app.ADMIN, review.review_id, True, notify=lambda t, o: "resumed")
    risk.step_apply(svc, review_id=review.review_id)  # what the workflow's Apply state does
    decided_at = svc.risk.get_review(review.review_id).decided_at
    assert svc.risk.unapplied(later(decided_at, 86_400)) == []
    assert risk.sweep_reviews(svc, now_iso=later(decided_at, 86_400))["applied"] == 0
