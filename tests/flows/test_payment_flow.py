"""Outbound Lightning payments end to end: statemachines/payment.asl.json executed by moto, its Lambda tasks running
functions/payment/app.py in-process, LND played by the simulator through the real REST adapter.

Every scenario checks the ledger (user available/pending, the LND node asset), the payment record and the ledger
invariants. Unknown is never failed (design rule 6): only FAILED, or a send that provably never happened, voids.
"""
from __future__ import annotations

import pytest

from satflow.app import payments
from satflow.domain.lightning import FailureReason
from satflow.domain.payments import PaymentStatus, fee_reserve
from satflow.domain.ledger import SystemAccount

from satflow_dev.simulators.lightning import PaymentScript

FUNDS = 100_000_000  # msat
AMOUNT = 50_000_000
RESERVE = fee_reserve(AMOUNT)  # 1%: 500_000 msat
FEE = 1_234
LND_NODE = SystemAccount.LND_NODE.value


def _paid(flow, principal, amount=AMOUNT, script=None, **pay_kwargs):
    """An external invoice paid by ``principal`` (scripted outcome), and its execution's result."""
    request = flow.sim.external_invoice(None if "amount_msat" in pay_kwargs else amount)
    if script is not None:
        flow.sim.script(script, flow.sim.payment_hash_of(request))
    payment = flow.pay(principal, request, **pay_kwargs)
    return payment, flow.wait(payment.payment_id)


def _assert_succeeded(flow, principal, payment, fee, amount=AMOUNT):
    record = flow.payment(payment.payment_id)
    assert record.status is PaymentStatus.SUCCEEDED
    assert record.fee_msat == fee
    assert record.preimage and len(record.preimage) == 64
    assert record.failure_reason is None
    assert flow.balance(principal.account_id) == (FUNDS - amount - fee, 0)  # the rest of the reserve returned
    assert flow.balance(LND_NODE)[0] == amount + fee
    assert flow.svc.ledger.get_transfer(payment.payment_id) is not None
    assert flow.lnd.sends[payment.payment_hash] == 1
    flow.assert_invariants()


def _assert_voided(flow, principal, payment, reason):
    record = flow.payment(payment.payment_id)
    assert record.status is PaymentStatus.FAILED
    assert record.failure_reason == reason
    assert record.fee_msat is None and record.preimage is None
    assert flow.balance(principal.account_id) == (FUNDS, 0)  # fully restored
    assert flow.balance(LND_NODE) == (0, 0)
    flow.assert_invariants()


# ------------------------------------------------------------------------------------------------- final at send
def test_success_posts_amount_plus_actual_fee_and_returns_the_rest_of_the_reserve(flow):
    alice = flow.new_account(FUNDS)
    payment, result = _paid(flow, alice, script=PaymentScript.succeed(fee_msat=FEE))

    assert payment.fee_reserve_msat == RESERVE
    assert result.status == "SUCCEEDED"
    assert result.states == ["Defaults", "ApplyDefaults", "Risk", "RiskRoute", "Reserve", "Send", "Route", "Post",
                             "Done"]
    assert flow.risk_calls == ["assess_payment"]
    assert flow.step_calls == ["reserve", "send", "post"]
    assert flow.lnd.send_bodies[0]["fee_limit_msat"] == str(RESERVE)  # LND can never charge more than reserved
    _assert_succeeded(flow, alice, payment, FEE)


@pytest.mark.parametrize("reason", [r.value for r in FailureReason])
def test_every_failure_reason_voids_the_whole_reservation(flow, reason):
    alice = flow.new_account(FUNDS)
    payment, result = _paid(flow, alice, script=PaymentScript.fail(reason))

    assert result.status == "SUCCEEDED"
    assert result.states[-3:] == ["Route", "Void", "Done"]
    _assert_voided(flow, alice, payment, reason)


# ------------------------------------------------------------------------------------------------- in flight
def test_in_flight_then_success_after_n_tracks(flow):
    flow.max_tracks = 5
    alice = flow.new_account(FUNDS)
    payment, result = _paid(flow, alice, script=PaymentScript.succeed(fee_msat=FEE, in_flight_tracks=2))

    # send: IN_FLIGHT -> wait/track (in flight) x2 -> the third track sees SUCCEEDED
    assert result.states.count("Track") == 3 and result.states.count("Wait") == 3
    assert result.states[-3:] == ["Route", "Post", "Done"]
    assert flow.lnd.tracks == 3
    _assert_succeeded(flow, alice, payment, FEE)


def test_in_flight_then_failure(flow):
    flow.max_tracks = 5
    alice = flow.new_account(FUNDS)
    payment, result = _paid(flow, alice, script=PaymentScript.fail("TIMEOUT", in_flight_tracks=1))

    assert result.states.count("Track") == 2
    assert result.states[-3:] == ["Route", "Void", "Done"]
    _assert_voided(flow, alice, payment, "TIMEOUT")


def test_still_in_flight_while_pending_holds_the_reservation_between_tracks(flow):
    """Mid-flight the money is reserved, not gone and not back: pending_out = amount + reserve."""
    flow.max_tracks = 2
    alice = flow.new_account(FUNDS)
    payment, result = _paid(flow, alice, script=PaymentScript.succeed(hold=True))

    assert result.final_state == "NeedsReconciliation"
    assert flow.payment(payment.payment_id).status is PaymentStatus.PENDING
    assert flow.balance(alice.account_id) == (FUNDS - AMOUNT - RESERVE, AMOUNT + RESERVE)
    flow.assert_invariants()


def test_a_fee_above_the_reserve_is_our_expense_and_still_leaves_the_node_account(flow):
    """Should LND ever exceed fee_limit_msat, the user pays only the reserve; the excess is booked as routing fee
    expense against the node asset (idempotently), so the ledger still shows everything that left the node."""
    from satflow.domain.ledger import SystemAccount

    flow.max_tracks = 1
    alice = flow.new_account(FUNDS)
    payment, _ = _paid(flow, alice, script=PaymentScript.succeed(hold=True))
    record = flow.payment(payment.payment_id)
    outcome = {"status": "SUCCEEDED", "preimage_hex": "ab" * 32, "fee_msat": record.fee_reserve_msat + 500,
               "amount_msat": AMOUNT}
    payments.step_post(flow.svc, payment.payment_id, outcome)
    payments.step_post(flow.svc, payment.payment_id, outcome)  # a re-run changes nothing
    assert flow.balance(alice.account_id) == (FUNDS - AMOUNT - RESERVE, 0)
    assert flow.payment(payment.payment_id).fee_msat == RESERVE
    assert flow.balance(SystemAccount.ROUTING_FEE_EXPENSE.value) == (-500, 0)
    flow.assert_invariants()


# ------------------------------------------------------------------------------------------------- unknown outcomes
def test_send_timeout_stays_pending_through_the_bounded_loop_then_the_reconciler_posts(flow):
    flow.max_tracks = 3
    alice = flow.new_account(FUNDS)
    # LND takes the payment, the client's read times out before any update; the HTLC stays in flight.
    payment, result = _paid(flow, alice, script=PaymentScript.succeed(hold=True, send_timeout="after_node"))

    assert result.status == "SUCCEEDED" and result.final_state == "NeedsReconciliation"
    assert result.states.count("Track") == 3  # bounded by max_tracks
    assert flow.payment(payment.payment_id).status is PaymentStatus.PENDING
    assert flow.balance(alice.account_id) == (FUNDS - AMOUNT - RESERVE, AMOUNT + RESERVE)

    # Still unknown: the reconciler leaves it alone (unknown is not failed).
    assert payments.reconcile(flow.svc, min_age_s=0)["still_pending"] == 1
    assert flow.payment(payment.payment_id).status is PaymentStatus.PENDING

    flow.sim.resolve(payment.payment_hash, "SUCCEEDED", fee_msat=FEE)
    counts = payments.reconcile(flow.svc, min_age_s=0)
    assert counts["posted"] == 1 and counts["still_pending"] == 0
    _assert_succeeded(flow, alice, payment, FEE)
    assert payments.reconcile(flow.svc, min_age_s=0)["checked"] == 0  # nothing pending any more


def test_send_timeout_then_failure_found_by_the_reconciler_voids(flow):
    flow.max_tracks = 1
    alice = flow.new_account(FUNDS)
    payment, result = _paid(flow, alice, script=PaymentScript.succeed(hold=True, send_timeout="after_node"))
    assert result.final_state == "NeedsReconciliation"

    flow.sim.resolve(payment.payment_hash, "FAILED", failure_reason="NO_ROUTE")
    assert payments.reconcile(flow.svc, min_age_s=0)["voided"] == 1
    _assert_voided(flow, alice, payment, "NO_ROUTE")


def test_send_that_never_reached_the_node_voids_only_after_the_invoice_can_no_longer_be_paid(flow):
    flow.max_tracks = 2
    alice = flow.new_account(FUNDS)
    request = flow.sim.external_invoice(AMOUNT, expiry_s=600)
    flow.sim.script(PaymentScript.succeed(send_timeout="before_node"), flow.sim.payment_hash_of(request))
    payment = flow.pay(alice, request)
    result = flow.wait(payment.payment_id)

    # UNKNOWN at send, then "payment isn't initiated" on every track: not a proof (the send may still land).
    assert result.final_state == "NeedsReconciliation"
    assert flow.payment(payment.payment_id).status is PaymentStatus.PENDING
    assert payments.reconcile(flow.svc, min_age_s=0)["still_pending"] == 1

    flow.clock.offset = 600 + payments_grace() + 1  # past expiry + grace: the invoice cannot be paid any more
    assert payments.reconcile(flow.svc, min_age_s=0)["voided"] == 1
    _assert_voided(flow, alice, payment, "NOT_SENT")
    assert flow.lnd.sends[payment.payment_hash] == 1


def payments_grace() -> int:
    from satflow.domain.payments import NOT_FOUND_GRACE_S

    return NOT_FOUND_GRACE_S


# ------------------------------------------------------------------------------------------------- not initiated
def test_send_refused_by_the_node_then_not_found_voids(flow):
    """An invoice of our own node that satflow does not know: LND refuses the send (self-payment) before
    recording anything; the track then says "payment isn't initiated" and, the single send having been refused,
    that proves nothing left: void."""
    from satflow.adapters.lnd import LndRestClient

    alice = flow.new_account(FUNDS)
    node = LndRestClient("http://lnd.sim", flow.sim.macaroon_hex, transport=flow.sim.transport())
    request = node.add_invoice(AMOUNT).payment_request
    payment = flow.pay(alice, request)
    result = flow.wait(payment.payment_id)

    assert result.states[-5:] == ["Wait", "Track", "Route", "Void", "Done"]
    record = flow.payment(payment.payment_id)
    assert record.send_rejected
    _assert_voided(flow, alice, payment, "NOT_SENT")


def test_invoice_expired_at_the_node_between_reserve_and_send_voids(flow):
    alice = flow.new_account(FUNDS)
    request = flow.sim.external_invoice(AMOUNT, expiry_s=60)

    def expire(event, result):
        flow.clock.offset = 61  # the invoice expires while the workflow is between Reserve and Send

    flow.after_step["reserve"] = expire
    payment = flow.pay(alice, request)
    result = flow.wait(payment.payment_id)

    assert result.states[-3:] == ["Route", "Void", "Done"]
    assert flow.payment(payment.payment_id).send_rejected
    _assert_voided(flow, alice, payment, "NOT_SENT")


# ------------------------------------------------------------------------------------------------- amount-less
def test_amountless_invoice_pays_the_amount_given(flow):
    alice = flow.new_account(FUNDS)
    amount = 7_000_000
    payment, result = _paid(flow, alice, script=PaymentScript.succeed(fee_msat=FEE), amount_msat=amount)

    assert payment.amountless and payment.amount_msat == amount
    assert payment.fee_reserve_msat == fee_reserve(amount)
    assert flow.lnd.send_bodies[0]["amt_msat"] == str(amount)
    assert result.final_state == "Done"
    _assert_succeeded(flow, alice, payment, FEE, amount=amount)


def test_fixed_amount_invoice_sends_no_amount(flow):
    alice = flow.new_account(FUNDS)
    _paid(flow, alice, script=PaymentScript.succeed(fee_msat=FEE))
    assert "amt_msat" not in flow.lnd.send_bodies[0]  # LND refuses an amount for a fixed-amount invoice


# ------------------------------------------------------------------------------------------------- a failed hash
def test_a_failed_hash_is_never_sent_again(flow):
    """Review finding: a second payment of a FAILED hash could be decided by the first one's stale track result
    (voided while its own send still landed). A hash is sent at most once, ever: the retry is a 409."""
    from satflow.domain import errors

    alice = flow.new_account(FUNDS)
    request = flow.sim.external_invoice(AMOUNT)
    payment_hash = flow.sim.payment_hash_of(request)
    flow.sim.script(PaymentScript.fail("NO_ROUTE"), payment_hash)
    first = flow.pay(alice, request)
    flow.wait(first.payment_id)
    _assert_voided(flow, alice, first, "NO_ROUTE")

    with pytest.raises(errors.PaymentHashInFlight):
        flow.pay(alice, request, key="retry")
    assert flow.balance(alice.account_id) == (FUNDS, 0)
    assert flow.lnd.sends[payment_hash] == 1
    flow.assert_invariants()
