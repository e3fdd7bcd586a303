"""app/risk.py and the DynamoDB risk store on in-process moto: features from real ledger state, the assessment
stored once with what it causes, and the review record's exactly-once transitions."""
from __future__ import annotations

import pytest

from satflow.app import accounts as accounts_app
from satflow.app import risk, transfers
from satflow.domain import errors
from satflow.domain.accounts import ALL_SCOPES, Principal
from satflow.domain.risk import (
    Decision, DestinationKind, Review, ReviewStatus, RiskAssessment, RiskPolicy, SubjectKind,
)

FUNDS = 10_000_000


def _account(svc, ref, funds=0):
    account, _ = accounts_app.create_account(svc, accounts_app.ADMIN, ref, 1)
    if funds:
        transfers.adjust(svc, accounts_app.ADMIN, f"fund-{ref}", account.account_id, funds, "credit", "seed")
    return Principal(account.account_id, frozenset(ALL_SCOPES))


def _send(alice, bob, amount, subject="tr_x"):
    return risk.Send(SubjectKind.TRANSFER, subject, alice.account_id, DestinationKind.INTERNAL, bob.account_id, amount)


def test_features_come_from_the_account_its_limits_its_history_and_its_destinations(svc):
    alice, bob = _account(svc, "tg:a", FUNDS), _account(svc, "tg:b")
    fresh = risk.features(svc, _send(alice, bob, 1_000))
    assert fresh.tier == 1 and fresh.account_age_s < 60 and fresh.new_destination
    assert (fresh.past_sends, fresh.max_past_send_msat, fresh.sends_last_hour) == (0, None, 0)
    assert fresh.seconds_since_last_credit is not None and fresh.seconds_since_last_credit < 60
    for n, amount in enumerate((1_000, 3_000, 2_000)):
        assert transfers.create_transfer(svc, alice, f"k{n}", bob.account_id, amount).status == "SETTLED"

    later = risk.features(svc, _send(alice, bob, 500))
    assert (later.past_sends, later.max_past_send_msat, later.sends_last_hour) == (3, 3_000, 3)
    assert later.used_daily_msat == 6_000 and not later.new_destination  # the allowed sends marked it seen
    mine = [e.transfer_id for e in svc.ledger.history(alice.account_id, "BTC", 10).items if e.direction == "out"]
    assert risk.features(svc, _send(alice, bob, 500, subject=mine[0])).past_sends == 2  # the send itself excluded


def test_an_assessment_is_made_once_and_replays_read_it_back(svc):
    alice, bob = _account(svc, "tg:a", FUNDS), _account(svc, "tg:b")
    first = transfers.create_transfer(svc, alice, "k1", bob.account_id, 1_000)
    stored = svc.risk.get_assessment(first.transfer.id)
    assert stored.assessment.decision is Decision.ALLOW and stored.account_id == alice.account_id
    assert stored.features["destination_kind"] == "internal"
    svc.risk_policy = RiskPolicy(review_at=1, block_at=1)  # everything would block now ...
    replay = transfers.create_transfer(svc, alice, "k1", bob.account_id, 1_000)
    assert replay.replayed and replay.status == "SETTLED"  # ... but the retry keeps the decision it was given
    with pytest.raises(errors.RiskBlocked):
        transfers.create_transfer(svc, alice, "k2", bob.account_id, 1_000)
    with pytest.raises(errors.IdempotencyKeyReused):
        transfers.create_transfer(svc, alice, "k1", bob.account_id, 2_000)


def test_risk_fails_closed_without_its_store(svc):
    alice, bob = _account(svc, "tg:a", FUNDS), _account(svc, "tg:b")
    svc.risk = None
    with pytest.raises(RuntimeError, match="risk is not configured"):
        transfers.create_transfer(svc, alice, "k1", bob.account_id, 1_000)


def _review(store, n=0, created_at="2026-11-21T10:00:00.000Z"):
    review = Review(review_id=f"rev_{n:026d}", kind=SubjectKind.PAYOUT, subject_id=f"po_{n}", account_id="acc_x",
                    amount_msat=1_000, destination="bcrt1qexample", status=ReviewStatus.PENDING,
                    assessment=RiskAssessment(80, Decision.REVIEW), created_at=created_at)
    store.run(store.new_review_items(review))
    return review


def test_review_record_is_decided_exactly_once_and_parks_only_while_pending(svc):
    store = svc.risk
    review = _review(store)
    with pytest.raises(errors.Conflict):
        store.run(store.new_review_items(review))  # one review per send
    assert store.park(review.review_id, "token-1") and store.get_review(review.review_id).task_token == "token-1"
    store.run(store.decide_items(review, ReviewStatus.APPROVED, "admin", "2026-11-21T10:05:00.000Z", "fine"))
    with pytest.raises(errors.ReviewAlreadyDecided) as raised:
        store.run(store.decide_items(review, ReviewStatus.REJECTED, "admin", "2026-11-21T10:06:00.000Z"))
    assert raised.value.details["status"] == "approved"
    assert not store.park(review.review_id, "token-2")  # decided: the workflow answers itself instead
    decided = store.get_review(review.review_id)
    assert (decided.status, decided.decided_by, decided.note, decided.task_token) == (
        ReviewStatus.APPROVED, "admin", "fine", "token-1")
    assert store.list_reviews(ReviewStatus.PENDING, 10)[0] == []
    assert [r.review_id for r in store.list_reviews(ReviewStatus.APPROVED, 10)[0]] == [review.review_id]


def test_admin_decisions_need_the_admin_and_a_known_review(svc):
    alice = _account(svc, "tg:a")
    review = _review(svc.risk)
    with pytest.raises(errors.Forbidden):
        risk.decide_review(svc, alice, review.review_id, True)
    with pytest.raises(errors.ReviewNotFound):
        risk.decide_review(svc, accounts_app.ADMIN, "rev_" + "z" * 26, True)
    audit, svc.audit = svc.audit, None
    with pytest.raises(RuntimeError, match="audit"):  # an admin action is never unaudited: fail closed
        risk.decide_review(svc, accounts_app.ADMIN, review.review_id, True)
    svc.audit = audit
    assert svc.risk.get_review(review.review_id).status is ReviewStatus.PENDING
    with pytest.raises(errors.Forbidden):
        risk.list_reviews(svc, alice)
    with pytest.raises(errors.ValidationError):
        risk.decide_review(svc, accounts_app.ADMIN, review.review_id, True, note="x" * 281)
