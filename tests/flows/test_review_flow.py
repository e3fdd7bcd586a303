"""Risk review through the REAL state machines: statemachines/payment.asl.json (Risk -> AwaitReview -> ApplyRisk)
and statemachines/review.asl.json (held transfers), executed by moto with functions/risk/app.py and
functions/payment/app.py answering in-process, LND played by the simulator.

The default policy allows a fresh account's ordinary send (scores here are about 30-40); these tests lower the
thresholds (``svc.risk_policy``) so the same realistic sends land in review or block."""
from __future__ import annotations

from collections import Counter

import pytest

from satflow.domain.webhooks import event_id

from satflow.app import payments, risk, transfers
from satflow.domain import errors
from satflow.domain.ledger import SystemAccount
from satflow.domain.payments import PaymentStatus, fee_reserve
from satflow.domain.risk import Decision, ReviewStatus, RiskPolicy, SubjectKind, review_id_for

from satflow_dev.simulators.lightning import PaymentScript

FUNDS = 100_000_000  # msat
AMOUNT = 5_000_000
RESERVE = fee_reserve(AMOUNT)
FEE = 321
LND_NODE = SystemAccount.LND_NODE.value
REVIEW_ALL = RiskPolicy(review_at=20, block_at=101)
BLOCK_ALL = RiskPolicy(review_at=20, block_at=21)


def _pay(flow, principal, script=None):
    request = flow.sim.external_invoice(AMOUNT)
    flow.sim.script(script or PaymentScript.succeed(fee_msat=FEE), flow.sim.payment_hash_of(request))
    return flow.pay(principal, request)


def _audit_actions(flow) -> list[str]:
    from tests.audit.helpers import sealed_records

    return [r.action for r in sealed_records(flow.svc)]


# ------------------------------------------------------------------------------------------------- payments
def test_payment_in_review_is_held_unsent_then_approved_sent_and_posted(flow):
    flow.svc.risk_policy = REVIEW_ALL
    alice = flow.new_account(FUNDS)
    payment = _pay(flow, alice)
    review_id = review_id_for(SubjectKind.PAYMENT, payment.payment_id)

    parked = flow.wait_parked(review_id)
    assert parked.status is ReviewStatus.PENDING and parked.kind is SubjectKind.PAYMENT
    assert parked.assessment.decision is Decision.REVIEW and 20 <= parked.assessment.score < 101
    assert {f.name for f in parked.assessment.factors} >= {"account_age", "new_destination", "recent_credit"}
    # Held: reserved, IN_REVIEW (what GET /v1/payments/{id} shows), nothing sent, the reconciler keeps off it.
    assert payments.get_payment(flow.svc, alice, payment.payment_id).status is PaymentStatus.IN_REVIEW
    assert flow.balance(alice.account_id) == (FUNDS - AMOUNT - RESERVE, AMOUNT + RESERVE)
    assert payments.reconcile(flow.svc, min_age_s=0)["checked"] == 0
    assert flow.lnd.sends[payment.payment_hash] == 0
    assert flow.execution_status(flow.state_machine_arn, payment.payment_id) == "RUNNING"

    decided = flow.decide(review_id, approve=True, note="known customer")
    assert (decided.workflow, decided.replayed, decided.review.status) == ("resumed", False, ReviewStatus.APPROVED)
    result = flow.wait(payment.payment_id)

    assert result.status == "SUCCEEDED"
    assert result.states[:5] == ["Defaults", "ApplyDefaults", "Risk", "RiskRoute", "AwaitReview"]
    assert result.states[5:] == ["ApplyRisk", "ApplyRoute", "Reserve", "Send", "Route", "Post", "Done"]
    assert flow.risk_calls == ["assess_payment", "await_review", "apply"]
    record = flow.payment(payment.payment_id)
    assert record.status is PaymentStatus.SUCCEEDED and record.fee_msat == FEE
    assert flow.lnd.sends[payment.payment_hash] == 1
    assert flow.balance(alice.account_id) == (FUNDS - AMOUNT - FEE, 0)
    assert flow.svc.risk.destination_seen(alice.account_id, risk.DestinationKind.LIGHTNING, payment.destination)
    assert "review.approved" in _audit_actions(flow)
    flow.assert_invariants()


def test_payment_review_rejected_voids_sends_nothing_and_restores_balance_and_limits(flow):
    from satflow.app.limits import get_limits

    flow.svc.risk_policy = REVIEW_ALL
    alice = flow.new_account(FUNDS)
    payment = _pay(flow, alice)
    review_id = review_id_for(SubjectKind.PAYMENT, payment.payment_id)
    flow.wait_parked(review_id)
    assert get_limits(flow.svc, alice)["used_daily_msat"] == AMOUNT

    assert flow.decide(review_id, approve=False).workflow == "resumed"
    result = flow.wait(payment.payment_id)

    assert result.status == "SUCCEEDED" and result.states[-3:] == ["ApplyRisk", "ApplyRoute", "Done"]
    record = flow.payment(payment.payment_id)
    assert record.status is PaymentStatus.FAILED and record.failure_reason == "RISK_REJECTED"
    assert flow.lnd.sends[payment.payment_hash] == 0 and flow.step_calls == []
    assert flow.balance(alice.account_id) == (FUNDS, 0)
    assert flow.balance(LND_NODE) == (0, 0)
    assert get_limits(flow.svc, alice)["used_daily_msat"] == 0  # given back, like a failed payment
    assert not flow.svc.risk.destination_seen(alice.account_id, risk.DestinationKind.LIGHTNING, payment.destination)
    assert "review.rejected" in _audit_actions(flow)
    flow.assert_invariants()


def test_payment_blocked_is_voided_with_the_reason_and_never_sent(flow):
    flow.svc.risk_policy = BLOCK_ALL
    alice = flow.new_account(FUNDS)
    payment = _pay(flow, alice)
    result = flow.wait(payment.payment_id)

    assert result.states == ["Defaults", "ApplyDefaults", "Risk", "RiskRoute", "ApplyRisk", "ApplyRoute", "Done"]
    record = flow.payment(payment.payment_id)
    assert record.status is PaymentStatus.FAILED and record.failure_reason == "RISK_BLOCKED"
    assert flow.lnd.sends[payment.payment_hash] == 0
    assert flow.balance(alice.account_id) == (FUNDS, 0)
    assert flow.svc.risk.get_review(review_id_for(SubjectKind.PAYMENT, payment.payment_id)) is None
    flow.assert_invariants()


def test_payment_review_timeout_rejects_and_voids_and_a_late_approval_is_409(flow):
    flow.svc.risk_policy = REVIEW_ALL
    flow.review_timeout_s = 1
    alice = flow.new_account(FUNDS)
    payment = _pay(flow, alice)
    result = flow.wait(payment.payment_id)

    assert "ReviewTimedOut" in result.states and result.states[-1] == "Done"
    review = flow.review(review_id_for(SubjectKind.PAYMENT, payment.payment_id))
    assert review.status is ReviewStatus.REJECTED and review.decided_by == risk.TIMEOUT_ACTOR
    record = flow.payment(payment.payment_id)
    assert record.status is PaymentStatus.FAILED and record.failure_reason == "RISK_REJECTED"
    assert flow.lnd.sends[payment.payment_hash] == 0 and flow.balance(alice.account_id) == (FUNDS, 0)
    with pytest.raises(errors.ReviewAlreadyDecided, match="timed out"):
        flow.decide(review.review_id, approve=True)
    assert "review.timed_out" in _audit_actions(flow)
    flow.assert_invariants()


def test_an_unassessed_payment_is_assessed_by_the_reconciler_before_any_send(flow):
    """The workflow never started (so no Risk state ran): the reconciler scores it first; in review it starts the
    review workflow instead of sending, and once approved the next run sends it."""
    flow.svc.risk_policy = REVIEW_ALL
    flow.svc.start_payment = lambda payment_id: None
    alice = flow.new_account(FUNDS)
    payment = _pay(flow, alice)

    counts = payments.reconcile(flow.svc, min_age_s=0)
    assert counts["still_pending"] == 1 and flow.lnd.sends[payment.payment_hash] == 0
    review_id = review_id_for(SubjectKind.PAYMENT, payment.payment_id)
    assert flow.reviews_started == [review_id]
    flow.wait_parked(review_id)
    flow.decide(review_id, approve=True)
    assert flow.wait_review(review_id).states[-2:] == ["Apply", "Done"]
    assert flow.payment(payment.payment_id).status is PaymentStatus.PENDING  # approved: sendable again

    payments.reconcile(flow.svc, min_age_s=0)
    assert flow.lnd.sends[payment.payment_hash] == 1
    assert flow.payment(payment.payment_id).status is PaymentStatus.SUCCEEDED
    flow.assert_invariants()


# ------------------------------------------------------------------------------------------------- transfers
def _transfer(flow, sender, recipient, amount=AMOUNT, key="t-1"):
    return transfers.create_transfer(flow.svc, sender, key, recipient.account_id, amount, "rent")


def test_transfer_in_review_is_pending_then_approved_posted(flow):
    flow.svc.risk_policy = REVIEW_ALL
    alice, bob = flow.new_account(FUNDS), flow.new_account()
    outcome = _transfer(flow, alice, bob)
    assert (outcome.status, outcome.replayed) == ("IN_REVIEW", False)
    assert outcome.transfer.kind.value == "PENDING"
    assert flow.reviews_started == [outcome.review_id]
    bob_balance = [b for b in flow.svc.ledger.balances(bob.account_id) if b.account.asset == "BTC"][0]
    assert (bob_balance.available, bob_balance.pending_in) == (0, AMOUNT)
    assert flow.balance(alice.account_id) == (FUNDS - AMOUNT, AMOUNT)
    flow.wait_parked(outcome.review_id)

    assert flow.decide(outcome.review_id, approve=True).workflow == "resumed"
    result = flow.wait_review(outcome.review_id)

    assert result.states == ["Defaults", "ApplyDefaults", "AwaitDecision", "Apply", "Done"]
    assert flow.balance(alice.account_id) == (FUNDS - AMOUNT, 0)
    assert flow.balance(bob.account_id)[0] == AMOUNT
    replay = _transfer(flow, alice, bob)  # the same Idempotency-Key: the stored decision, the current state
    assert (replay.status, replay.replayed, replay.review_id) == ("SETTLED", True, outcome.review_id)
    flow.assert_invariants()


def test_transfer_in_review_rejected_is_voided_and_the_sender_restored(flow):
    flow.svc.risk_policy = REVIEW_ALL
    alice, bob = flow.new_account(FUNDS), flow.new_account()
    outcome = _transfer(flow, alice, bob)
    flow.wait_parked(outcome.review_id)
    flow.decide(outcome.review_id, approve=False, note="mule pattern")
    flow.wait_review(outcome.review_id)

    assert flow.balance(alice.account_id) == (FUNDS, 0)
    assert flow.balance(bob.account_id) == (0, 0)
    assert flow.svc.ledger.pending_resolution(outcome.transfer.id) == f"{outcome.transfer.id}:void"
    # review.required was announced with the review (same transaction); the voided transfer announces nothing
    required = flow.svc.webhooks.get_event(event_id(outcome.review_id, "review.required", alice.account_id))
    assert required is not None and required.data["subject_id"] == outcome.transfer.id
    assert required.data["kind"] == "transfer" and required.data["amount_msat"] == AMOUNT
    assert flow.svc.webhooks.get_event(event_id(f"{outcome.transfer.id}:void", "transfer.settled",
                                                alice.account_id)) is None
    assert _transfer(flow, alice, bob).status == "REJECTED"
    review = flow.review(outcome.review_id)
    assert (review.status, review.decided_by, review.note) == (ReviewStatus.REJECTED, "admin", "mule pattern")
    flow.assert_invariants()


def test_a_decision_made_before_the_workflow_parks_is_applied_at_once(flow):
    """The admin is faster than the workflow: the park finds the decision (ReviewAlreadyDecided) and Apply runs."""
    flow.svc.risk_policy = REVIEW_ALL
    held: list[str] = []
    flow.svc.start_review = held.append
    alice, bob = flow.new_account(FUNDS), flow.new_account()
    outcome = _transfer(flow, alice, bob)
    assert flow.decide(outcome.review_id, approve=True).workflow == "not_parked_yet"

    flow.start_review(held[0])
    result = flow.wait_review(outcome.review_id)
    assert result.states == ["Defaults", "ApplyDefaults", "AwaitDecision", "Apply", "Done"]
    assert flow.risk_calls == ["await_review", "apply"]
    assert flow.balance(bob.account_id)[0] == AMOUNT
    flow.assert_invariants()


def test_transfer_review_timeout_rejects_it(flow):
    flow.svc.risk_policy = REVIEW_ALL
    flow.review_timeout_s = 1
    alice, bob = flow.new_account(FUNDS), flow.new_account()
    outcome = _transfer(flow, alice, bob)
    result = flow.wait_review(outcome.review_id)
    assert result.states == ["Defaults", "ApplyDefaults", "AwaitDecision", "TimedOut", "Apply", "Done"]
    assert flow.balance(alice.account_id) == (FUNDS, 0) and flow.balance(bob.account_id) == (0, 0)
    flow.assert_invariants()


def test_decisions_are_exactly_once(flow):
    flow.svc.risk_policy = REVIEW_ALL
    alice, bob = flow.new_account(FUNDS), flow.new_account()
    outcome = _transfer(flow, alice, bob)
    flow.wait_parked(outcome.review_id)
    assert flow.decide(outcome.review_id, approve=True).workflow == "resumed"
    flow.wait_review(outcome.review_id)

    again = flow.decide(outcome.review_id, approve=True)  # a retried request: a replay, the token is spent
    assert (again.replayed, again.workflow, again.review.status) == (True, "ended", ReviewStatus.APPROVED)
    with pytest.raises(errors.ReviewAlreadyDecided) as raised:
        flow.decide(outcome.review_id, approve=False)
    assert raised.value.code == "REVIEW_ALREADY_DECIDED"
    with pytest.raises(errors.ReviewNotFound):
        flow.decide("rev_" + "a" * 26, approve=True)
    assert flow.balance(bob.account_id)[0] == AMOUNT  # posted once
    assert _audit_actions(flow).count("review.approved") == 1
    flow.assert_invariants()


def test_a_blocked_transfer_writes_nothing_but_its_audit_record(flow):
    flow.svc.risk_policy = BLOCK_ALL
    alice, bob = flow.new_account(FUNDS), flow.new_account()
    audit_before = Counter(_audit_actions(flow))  # sealed: only the new entry is left to seal below
    before = flow.item_count()
    with pytest.raises(errors.RiskBlocked) as raised:
        _transfer(flow, alice, bob)
    assert raised.value.code == "RISK_BLOCKED" and raised.value.details["score"] >= 21
    assert Counter(_audit_actions(flow)) - audit_before == Counter({"risk.blocked": 1})  # chains are not time-ordered
    # the sealed record and its seal marker (+ its chain's head on a new chain): no money
    assert flow.item_count() - before in (2, 3)
    assert flow.balance(alice.account_id) == (FUNDS, 0) and flow.reviews_started == []


def test_an_approved_held_transfer_announces_transfer_settled_to_both_sides(flow):
    """Review proved it: the approval posts the pending (POST_PENDING), which announced nothing."""
    flow.svc.risk_policy = REVIEW_ALL
    alice, bob = flow.new_account(FUNDS), flow.new_account()
    outcome = _transfer(flow, alice, bob)
    flow.wait_parked(outcome.review_id)
    flow.decide(outcome.review_id, approve=True)
    flow.wait_review(outcome.review_id)
    for account, direction in ((alice, "out"), (bob, "in")):
        event = flow.svc.webhooks.get_event(event_id(outcome.transfer.id, "transfer.settled", account.account_id))
        assert event is not None, direction
        assert (event.data["transfer_id"], event.data["direction"], event.data["amount_msat"]) == (
            outcome.transfer.id, direction, AMOUNT)
