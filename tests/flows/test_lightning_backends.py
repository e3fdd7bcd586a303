"""One suite, two backends: the Lightning flows against the simulator AND against real lnd on regtest.

``lightning_flow`` runs each test twice: our adapter talking to the in-process simulator, then to the real
master lnd of the session's regtest stack, with the external lnd paying our invoices and issuing the invoices we
pay. The state machine is the real ASL on moto, the steps are functions/payment/app.py and functions/invoice/app.py
in-process. Nothing here is scripted: every outcome is what the node decided, so the same assertions hold on
both (the fee is compared with the node's own record: 1 sat + 1 ppm on the simulator, 0 on the direct regtest
channel).
"""
from __future__ import annotations

import copy
import hashlib
import json
import threading
import time

import pytest

from satflow.app import invoices, payments
from satflow.domain.invoices import InvoiceStatus
from satflow.domain.ledger import SystemAccount
from satflow.domain.payments import PaymentStatus, fee_reserve
from satflow.entrypoints import invoice_listener
from satflow.entrypoints.invoice_listener import ListenerConfig

from tests.handlers.conftest import ROOT
from tests.realnodes.lightning_backends import CHANNEL_MSAT, ExternalPaymentFailed

from .harness import LambdaContext, LambdaCrash

FUNDS = 100_000_000  # msat
AMOUNT = 20_000_000
RESERVE = fee_reserve(AMOUNT)
LND_NODE = SystemAccount.LND_NODE.value
LISTENER = ListenerConfig(max_session_s=10.0, idle_timeout_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.2,
                          min_session_s=0.0)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


# ------------------------------------------------------------------------------------------------- helpers
def sqs_event(events: list[dict]) -> dict:
    """An SQS batch shaped like events/invoice/settled_batch.json, one record per published event."""
    template = json.loads((ROOT / "events" / "invoice" / "settled_batch.json").read_text())["Records"][0]
    records = []
    for i, event in enumerate(events):
        body = json.dumps(event)
        record = copy.deepcopy(template)
        record.update(messageId=f"msg-{i}", receiptHandle=f"rh-{i}", body=body,
                      md5OfBody=hashlib.md5(body.encode()).hexdigest())
        records.append(record)
    return {"Records": records}


def deliver(flow, invoice_handler) -> dict:
    """What the invoice events queue would hand InvoiceFunction: everything published so far, as one batch."""
    response = invoice_handler(sqs_event(flow.published), LambdaContext(function_name="InvoiceFunction"))
    assert response == {"batchItemFailures": []}
    return response


def wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def assert_credited(flow, principal, invoice, amount: int) -> None:
    stored = flow.svc.lightning.get_invoice(invoice.payment_hash)
    assert stored.status is InvoiceStatus.SETTLED and stored.settled_by == "lnd"
    assert stored.amount_received_msat == amount
    assert flow.balance(principal.account_id) == (amount, 0)
    assert flow.node.node_invoice_state(invoice.payment_hash) == "SETTLED"
    flow.assert_invariants()


def pay_and_wait(flow, principal, request: str, timeout_s: float = 60.0, **kwargs):
    payment = flow.pay(principal, request, **kwargs)
    return payment, flow.wait(payment.payment_id, timeout_s=timeout_s)


def assert_posted_as_the_node_says(flow, principal, payment, amount: int = AMOUNT) -> None:
    """SUCCEEDED with exactly the fee the node reports, the preimage proving payment, the reserve's rest back."""
    node = flow.node.node_payment(payment.payment_hash)
    assert node.status == "SUCCEEDED"
    record = flow.payment(payment.payment_id)
    assert record.status is PaymentStatus.SUCCEEDED
    assert record.fee_msat == node.fee_msat <= record.fee_reserve_msat
    assert hashlib.sha256(bytes.fromhex(record.preimage)).hexdigest() == payment.payment_hash
    assert flow.balance(principal.account_id) == (FUNDS - amount - record.fee_msat, 0)
    assert flow.balance(LND_NODE)[0] == amount + record.fee_msat
    assert flow.lnd.sends[payment.payment_hash] == 1
    flow.assert_invariants()


def assert_voided(flow, principal, payment, reason: str) -> None:
    record = flow.payment(payment.payment_id)
    assert record.status is PaymentStatus.FAILED and record.failure_reason == reason
    assert record.fee_msat is None and record.preimage is None
    assert flow.balance(principal.account_id) == (FUNDS, 0)
    assert flow.balance(LND_NODE) == (0, 0)
    flow.assert_invariants()


# ------------------------------------------------------------------------------------------------- inbound
def test_invoice_paid_by_the_outside_world_is_credited_through_the_catch_up_poll(lightning_flow, invoice_handler):
    flow = lightning_flow
    bob = flow.new_account()
    invoice = invoices.create_invoice(flow.svc, bob, amount_msat=AMOUNT, memo="real invoice")
    assert flow.node.node_invoice_state(invoice.payment_hash) == "OPEN"

    flow.node.external_pay(invoice.payment_request)
    invoices.catch_up(flow.svc)
    ours = [e for e in flow.published if e["payment_hash"] == invoice.payment_hash]
    assert ours == [{"type": "invoice.settled", "payment_hash": invoice.payment_hash, "amount_paid_msat": AMOUNT,
                     "settle_index": ours[0]["settle_index"]}]
    deliver(flow, invoice_handler)
    assert_credited(flow, bob, invoice, AMOUNT)

    # The next poll publishes nothing new (the cursor moved); a redelivered batch credits nothing twice.
    flow.published.clear()
    invoices.catch_up(flow.svc)
    assert not [e for e in flow.published if e["payment_hash"] == invoice.payment_hash]
    flow.published.append(ours[0])
    deliver(flow, invoice_handler)
    assert_credited(flow, bob, invoice, AMOUNT)


def test_amountless_invoice_paid_live_is_published_by_the_listener_and_credited(lightning_flow, invoice_handler):
    flow = lightning_flow
    bob = flow.new_account()
    invoice = invoices.create_invoice(flow.svc, bob, amount_msat=0)
    stop = threading.Event()
    listener = threading.Thread(target=invoice_listener.run, args=(flow.svc, stop, LISTENER), daemon=True)
    listener.start()
    try:
        time.sleep(0.5)  # subscribed before the payment: this is the live path, not the backlog
        flow.node.external_pay(invoice.payment_request, amount_msat=3_333_000)
        wait_for(lambda: any(e["payment_hash"] == invoice.payment_hash for e in list(flow.published)))
    finally:
        stop.set()
        listener.join(15)
    assert not listener.is_alive()
    deliver(flow, invoice_handler)
    assert_credited(flow, bob, invoice, 3_333_000)


# ------------------------------------------------------------------------------------------------- outbound
def test_outbound_payment_succeeds_through_the_state_machine_and_posts_amount_plus_the_nodes_fee(lightning_flow):
    flow = lightning_flow
    alice = flow.new_account(FUNDS)
    request = flow.node.external_invoice(AMOUNT, memo="coffee")
    payment, result = pay_and_wait(flow, alice, request)

    assert payment.fee_reserve_msat == RESERVE and not payment.internal
    assert result.status == "SUCCEEDED" and result.final_state == "Done"
    assert result.states[:6] == ["Defaults", "ApplyDefaults", "Risk", "RiskRoute", "Reserve", "Send"]
    assert result.states[-2:] == ["Post", "Done"]
    assert flow.lnd.send_bodies[0]["fee_limit_msat"] == str(RESERVE)
    assert_posted_as_the_node_says(flow, alice, payment)


def test_outbound_payment_to_an_unreachable_node_is_voided_and_the_balance_restored(lightning_flow):
    flow = lightning_flow
    alice = flow.new_account(FUNDS)
    request, payment_hash = flow.node.unknown_node_invoice(AMOUNT)
    payment, result = pay_and_wait(flow, alice, request)

    assert payment.payment_hash == payment_hash
    assert result.states[-3:] == ["Route", "Void", "Done"]
    assert flow.node.node_payment(payment_hash).status == "FAILED"
    assert flow.lnd.sends[payment_hash] == 1
    assert_voided(flow, alice, payment, "NO_ROUTE")


def test_outbound_payment_above_the_channel_capacity_is_voided_and_the_balance_restored(lightning_flow):
    flow = lightning_flow
    amount = CHANNEL_MSAT + 1_000_000_000  # 6,000,000 sat: more than any channel of ours can carry
    alice = flow.new_account(amount * 2, tier=3)
    funds = amount * 2
    request = flow.node.external_invoice(amount)
    payment, result = pay_and_wait(flow, alice, request)

    assert result.states[-3:] == ["Route", "Void", "Done"]
    record = flow.payment(payment.payment_id)
    assert record.status is PaymentStatus.FAILED and record.failure_reason == "INSUFFICIENT_BALANCE"
    assert flow.balance(alice.account_id) == (funds, 0)
    assert flow.balance(LND_NODE) == (0, 0)
    flow.assert_invariants()


def test_a_failed_hash_is_never_sent_again_although_lnd_would_take_it(lightning_flow):
    """lnd lets a FAILED hash be sent again (tests/realnodes: NO_ROUTE with no HTLC); satflow never does: a new
    payment of the same invoice is a 409 and nothing is reserved."""
    from satflow.domain import errors

    flow = lightning_flow
    alice = flow.new_account(FUNDS)
    request, payment_hash = flow.node.unknown_node_invoice(AMOUNT)
    first, _ = pay_and_wait(flow, alice, request)
    assert_voided(flow, alice, first, "NO_ROUTE")
    with pytest.raises(errors.PaymentHashInFlight):
        flow.pay(alice, request, key="retry")
    assert flow.lnd.sends[payment_hash] == 1
    assert flow.balance(alice.account_id) == (FUNDS, 0)


# ------------------------------------------------------------------------------------------------- internal
def test_internal_invoice_is_settled_on_the_ledger_and_cancelled_on_the_node(lightning_flow):
    flow = lightning_flow
    alice, bob = flow.new_account(FUNDS), flow.new_account()
    invoice = invoices.create_invoice(flow.svc, bob, amount_msat=AMOUNT, memo="lunch")
    payment = flow.pay(alice, invoice.payment_request)

    assert payment.internal and payment.status is PaymentStatus.SUCCEEDED and payment.fee_msat == 0
    assert flow.balance(alice.account_id) == (FUNDS - AMOUNT, 0) and flow.balance(bob.account_id) == (AMOUNT, 0)
    assert flow.svc.lightning.get_invoice(invoice.payment_hash).settled_by == payment.payment_id
    assert flow.node.node_invoice_state(invoice.payment_hash) == "CANCELED"
    with pytest.raises(ExternalPaymentFailed):  # nobody can pay it on the node any more
        flow.node.external_pay(invoice.payment_request)
    assert flow.started == [] and flow.lnd.sends == {}  # no workflow, nothing sent
    flow.assert_invariants()


def test_internal_payment_whose_invocation_died_after_the_node_cancel_is_finished_by_the_reconciler(lightning_flow):
    """The invocation dies right after the node cancelled the payee's invoice (sim seed 31): the intent (payment
    PENDING, invoice ACCEPTED) is left; the reconciler cancels again (idempotent on lnd) and settles it once."""
    flow = lightning_flow
    alice, bob = flow.new_account(FUNDS), flow.new_account()
    invoice = invoices.create_invoice(flow.svc, bob, amount_msat=AMOUNT)

    class Died(BaseException):
        pass

    node = flow.svc.lnd

    class DiesAfterCancel:
        def cancel_invoice(self, payment_hash):
            node().cancel_invoice(payment_hash)
            raise Died

    flow.svc.lnd = DiesAfterCancel
    try:
        with pytest.raises(Died):
            flow.pay(alice, invoice.payment_request, key="crash")
    finally:
        flow.svc.lnd = node
    assert flow.node.node_invoice_state(invoice.payment_hash) == "CANCELED"
    assert flow.svc.lightning.get_invoice(invoice.payment_hash).status is InvoiceStatus.ACCEPTED  # never OPEN

    counts = payments.reconcile(flow.svc, min_age_s=0)
    assert (counts["internal_settled"], counts["errors"]) == (1, 0)
    payment = flow.pay(alice, invoice.payment_request, key="crash")  # the payer's retry: the same answer
    assert payment.internal and payment.status is PaymentStatus.SUCCEEDED
    assert flow.svc.lightning.get_invoice(invoice.payment_hash).settled_by == payment.payment_id
    assert flow.balance(alice.account_id) == (FUNDS - AMOUNT, 0) and flow.balance(bob.account_id) == (AMOUNT, 0)
    with pytest.raises(ExternalPaymentFailed):
        flow.node.external_pay(invoice.payment_request)
    assert flow.started == [] and flow.lnd.sends == {}
    flow.assert_invariants()


# ------------------------------------------------------------------------------------------------- crash
def test_crash_between_send_and_record_is_finished_by_the_reconciler_from_the_nodes_answer(lightning_flow):
    flow = lightning_flow
    alice = flow.new_account(FUNDS)
    crashed = []

    def crash_once(event, result):
        if not crashed:
            crashed.append(result)
            raise LambdaCrash("Sandbox.Timedout", "Task timed out after 60.00 seconds")

    flow.after_step["send"] = crash_once
    request = flow.node.external_invoice(AMOUNT)
    payment, result = pay_and_wait(flow, alice, request)

    assert crashed and result.final_state == "NeedsReconciliation"
    assert flow.node.node_payment(payment.payment_hash).status == "SUCCEEDED"  # the node paid it...
    record = flow.payment(payment.payment_id)
    assert record.status is PaymentStatus.PENDING and record.send_attempted_at  # ...we did not record it
    assert flow.balance(alice.account_id) == (FUNDS - AMOUNT - RESERVE, AMOUNT + RESERVE)

    assert payments.reconcile(flow.svc, min_age_s=0)["posted"] == 1
    assert_posted_as_the_node_says(flow, alice, payment)
    assert payments.reconcile(flow.svc, min_age_s=0)["checked"] == 0


# ------------------------------------------------------------------------------------------------- held by the payee
@pytest.fixture
def short_send_wait(monkeypatch):
    """The Send step waits up to 20 s for a final status; a held HTLC never gives one. 2 s (bounded below by the
    client's read timeout on the real node) keeps the test short: timing, like the workflow's wait_s/max_tracks."""
    monkeypatch.setattr(payments.step_send, "__defaults__", (2.0,))


def _held(flow, alice):
    flow.max_tracks = 2
    request, payment_hash = flow.node.hold_invoice(AMOUNT)
    payment, result = pay_and_wait(flow, alice, request)
    assert payment.payment_hash == payment_hash
    assert result.final_state == "NeedsReconciliation"  # in flight through every track: unknown, not failed
    assert flow.node.node_payment(payment_hash).status == "IN_FLIGHT"
    assert flow.payment(payment.payment_id).status is PaymentStatus.PENDING
    assert flow.balance(alice.account_id) == (FUNDS - AMOUNT - RESERVE, AMOUNT + RESERVE)
    assert payments.reconcile(flow.svc, min_age_s=0)["still_pending"] == 1
    return payment


def test_a_payment_held_by_the_payee_stays_pending_and_the_reconciler_posts_once_it_settles(lightning_flow,
                                                                                           short_send_wait):
    flow = lightning_flow
    alice = flow.new_account(FUNDS)
    payment = _held(flow, alice)

    flow.node.settle_hold(payment.payment_hash)
    wait_for(lambda: flow.node.node_payment(payment.payment_hash).status == "SUCCEEDED")
    assert payments.reconcile(flow.svc, min_age_s=0)["posted"] == 1
    assert_posted_as_the_node_says(flow, alice, payment)


def test_a_payment_the_payee_cancels_while_held_is_voided_by_the_reconciler(lightning_flow, short_send_wait):
    flow = lightning_flow
    alice = flow.new_account(FUNDS)
    payment = _held(flow, alice)

    flow.node.cancel_hold(payment.payment_hash)
    wait_for(lambda: flow.node.node_payment(payment.payment_hash).status == "FAILED")
    assert payments.reconcile(flow.svc, min_age_s=0)["voided"] == 1
    assert_voided(flow, alice, payment, "INCORRECT_PAYMENT_DETAILS")
    assert flow.lnd.sends[payment.payment_hash] == 1
