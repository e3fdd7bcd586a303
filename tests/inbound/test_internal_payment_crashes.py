"""An internal invoice payment whose invocation DIES (a crash, not a handled error) at each step: after writing its
intent (before the node call), after the node cancelled the payee's invoice (before the ledger write), after the
ledger write. Found by the simulator (seed 31: the invoice stayed OPEN in satflow while the node had cancelled it).

The end state must be right after the payment reconciler (the monitor job, past its grace) and after the payer's
retry with the same Idempotency-Key, in either order: one outcome, the same for both, the invoice never OPEN here
while CANCELED on the node, and never paid twice (internally twice, or internally and from outside)."""
from __future__ import annotations

import pytest

from satflow.app import invoices, payments
from satflow.domain import errors
from satflow.domain.invoices import InvoiceStatus
from satflow.domain.payments import PaymentStatus
from satflow.domain.templates import admin_adjustment

from .conftest import assert_invariants, available, credits, fund

GRACE_S = 61  # past the reconciler's min_age_s (60 s)


class Crash(BaseException):
    """The Lambda invocation dies here (timeout, out of memory, the sandbox recycled): no handler of ours runs."""


@pytest.fixture
def funded(svc, users):
    alice, bob = users
    fund(svc, alice.account_id, 1_000_000)
    return alice, bob


class _Node:
    """The node client as the payment sees it, dying before or after the cancel call."""

    def __init__(self, real, when: str) -> None:
        self._real, self._when = real, when

    def cancel_invoice(self, payment_hash: str) -> None:
        if self._when == "before_node_call":
            raise Crash("before the node call")
        self._real.cancel_invoice(payment_hash)
        raise Crash("after the node cancel")

    def __getattr__(self, name):
        return getattr(self._real, name)


def _crash(svc, monkeypatch, when: str) -> None:
    if when in ("before_node_call", "after_node_cancel"):
        real = svc.lnd()
        monkeypatch.setattr(svc, "lnd", lambda: _Node(real, when))
    else:
        real_execute = svc.ledger.execute

        def execute(transfer, extra=()):
            result = real_execute(transfer, extra)
            if transfer.template == "internal_invoice_payment":
                raise Crash("after the ledger write")
            return result

        monkeypatch.setattr(svc.ledger, "execute", execute)


def _pay_and_die(svc, monkeypatch, payer, invoice, when: str) -> str:
    _crash(svc, monkeypatch, when)
    with pytest.raises(Crash):
        payments.create_payment(svc, payer, "pay-1", invoice.payment_request)
    monkeypatch.undo()  # the next invocation is a healthy one
    return payments.derive_id("pay", payer.account_id, "payment", "pay-1")


POINTS = ("before_node_call", "after_node_cancel", "after_ledger_write")


@pytest.mark.parametrize("when", POINTS)
def test_seed_31_after_the_reconciler_our_invoice_and_payment_agree_with_the_node(svc, sim, funded, monkeypatch,
                                                                                 clock, when):
    """The simulator's finding in its own words: the payer never comes back; once the monitor's reconciler has
    run past its grace, the invoice is no longer OPEN here if the node cancelled it, and the payment is final."""
    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=250_000)
    payment_id = _pay_and_die(svc, monkeypatch, alice, invoice, when)
    clock.advance(GRACE_S)
    payments.reconcile(svc)

    stored = svc.lightning.get_invoice(invoice.payment_hash).status
    node = sim.invoice_state(invoice.payment_hash)
    assert not (stored is InvoiceStatus.OPEN and node == "CANCELED"), "OPEN in satflow but CANCELED on the node"
    payment = svc.lightning.get_payment(payment_id)
    assert payment is not None and payment.status in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED)
    assert (stored, payment.status) in {(InvoiceStatus.SETTLED, PaymentStatus.SUCCEEDED),
                                        (InvoiceStatus.CANCELED, PaymentStatus.FAILED)}
    assert_invariants(svc)


@pytest.mark.parametrize("when", POINTS)
def test_after_a_crash_the_invoice_is_never_open_here_while_cancelled_on_the_node(svc, sim, funded, monkeypatch,
                                                                                  when):
    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=250_000)
    payment_id = _pay_and_die(svc, monkeypatch, alice, invoice, when)

    stored = svc.lightning.get_invoice(invoice.payment_hash)
    node = sim.invoice_state(invoice.payment_hash)
    payment = svc.lightning.get_payment(payment_id)
    expected = {"before_node_call": (InvoiceStatus.ACCEPTED, "OPEN", PaymentStatus.PENDING),
                "after_node_cancel": (InvoiceStatus.ACCEPTED, "CANCELED", PaymentStatus.PENDING),
                "after_ledger_write": (InvoiceStatus.SETTLED, "CANCELED", PaymentStatus.SUCCEEDED)}[when]
    assert (stored.status, node, payment.status) == expected
    assert stored.claimed_by == payment_id
    # Nobody else can pay it meanwhile: another internal payer is refused before the node is asked anything.
    from satflow.app.accounts import ADMIN, create_account
    from satflow.domain.accounts import ALL_SCOPES, Principal

    carol, _ = create_account(svc, ADMIN, "tg:carol", 1)
    fund(svc, carol.account_id, 1_000_000, "fund-c")
    with pytest.raises(errors.InvoiceNotPayable):
        payments.create_payment(svc, Principal(carol.account_id, frozenset(ALL_SCOPES)), "k",
                                invoice.payment_request)
    assert available(svc, carol.account_id) == 1_000_000


@pytest.mark.parametrize("when", POINTS)
def test_the_reconciler_finishes_it_and_the_payers_retry_gets_the_same_answer(svc, sim, funded, monkeypatch, clock,
                                                                              when):
    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=250_000)
    payment_id = _pay_and_die(svc, monkeypatch, alice, invoice, when)

    assert payments.reconcile(svc)["checked"] == 0  # within the grace: the invocation may still be running
    clock.advance(GRACE_S)
    counts = payments.reconcile(svc)
    if when == "after_ledger_write":
        assert counts["checked"] == 0  # already finished: not pending any more
    else:
        assert (counts["checked"], counts["internal_settled"], counts["errors"]) == (1, 1, 0)
    assert payments.reconcile(svc)["checked"] == 0  # nothing left

    done = svc.lightning.get_payment(payment_id)
    assert done.status is PaymentStatus.SUCCEEDED and done.fee_msat == 0 and done.internal
    assert payments.create_payment(svc, alice, "pay-1", invoice.payment_request) == done  # the retry's answer
    stored = svc.lightning.get_invoice(invoice.payment_hash)
    assert (stored.status, stored.settled_by, stored.amount_received_msat) == (InvoiceStatus.SETTLED, payment_id,
                                                                               250_000)
    assert sim.invoice_state(invoice.payment_hash) == "CANCELED"
    assert available(svc, alice.account_id) == 750_000 and available(svc, bob.account_id) == 250_000
    assert [e.transfer_id for e in credits(svc, bob.account_id)] == [payment_id]
    assert_invariants(svc)


@pytest.mark.parametrize("when", POINTS)
def test_the_payers_retry_finishes_it_and_the_reconciler_then_has_nothing_to_do(svc, sim, funded, monkeypatch,
                                                                                clock, when):
    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=250_000)
    payment_id = _pay_and_die(svc, monkeypatch, alice, invoice, when)

    again = payments.create_payment(svc, alice, "pay-1", invoice.payment_request)
    assert again.status is PaymentStatus.SUCCEEDED and again == svc.lightning.get_payment(payment_id)
    assert payments.create_payment(svc, alice, "pay-1", invoice.payment_request) == again
    clock.advance(GRACE_S)
    assert payments.reconcile(svc)["checked"] == 0
    assert svc.lightning.get_invoice(invoice.payment_hash).status is InvoiceStatus.SETTLED
    assert available(svc, alice.account_id) == 750_000 and available(svc, bob.account_id) == 250_000
    assert_invariants(svc)


@pytest.mark.parametrize("when", ("before_node_call", "after_node_cancel"))
def test_funds_gone_by_the_time_it_resumes_fail_it_and_the_invoice_follows_the_node(svc, sim, funded, monkeypatch,
                                                                                    clock, when):
    """Resumed under the same checks as the first run: the ledger refuses, so the payment is FAILED and the invoice
    CANCELED (the node has cancelled it by then); the payer's retry gets that FAILED payment."""
    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=250_000)
    payment_id = _pay_and_die(svc, monkeypatch, alice, invoice, when)
    svc.ledger.execute(admin_adjustment(transfer_id="drain", account_id=alice.account_id, amount_msat=900_000,
                                        direction="debit", reason="test", created_at=svc.clock(),
                                        shards=svc.system_shards))
    clock.advance(GRACE_S)
    counts = payments.reconcile(svc)
    assert (counts["checked"], counts["internal_failed"], counts["errors"]) == (1, 1, 0)

    failed = svc.lightning.get_payment(payment_id)
    assert failed.status is PaymentStatus.FAILED and failed.failure_reason == "INSUFFICIENT_FUNDS"
    assert svc.lightning.get_invoice(invoice.payment_hash).status is InvoiceStatus.CANCELED
    assert sim.invoice_state(invoice.payment_hash) == "CANCELED"
    assert payments.create_payment(svc, alice, "pay-1", invoice.payment_request) == failed
    assert payments.reconcile(svc)["checked"] == 0
    assert available(svc, alice.account_id) == 100_000 and available(svc, bob.account_id) == 0
    assert_invariants(svc)


def test_paid_from_outside_before_the_resumed_cancel_is_paid_once(svc, sim, funded, monkeypatch, clock, published):
    """Crash before the node call: the node's invoice is still OPEN and an outside payer pays it. The resumed
    cancel hears "already settled": the internal payment FAILS, the inbound credit settles the invoice (from
    ACCEPTED) and credits the payee once. Never internal + external."""
    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=40_000)
    payment_id = _pay_and_die(svc, monkeypatch, alice, invoice, "before_node_call")
    sim.external_pay(invoice.payment_request)

    clock.advance(GRACE_S)
    counts = payments.reconcile(svc)
    assert (counts["checked"], counts["internal_failed"], counts["errors"]) == (1, 1, 0)
    failed = svc.lightning.get_payment(payment_id)
    assert failed.status is PaymentStatus.FAILED and failed.failure_reason == "INVOICE_NOT_PAYABLE"
    assert payments.create_payment(svc, alice, "pay-1", invoice.payment_request) == failed

    invoices.catch_up(svc)
    event = published[-1]
    outcome = invoices.credit_settled_invoice(svc, payment_hash=event["payment_hash"],
                                              amount_paid_msat=event["amount_paid_msat"]).outcome
    assert outcome == "credited"
    stored = svc.lightning.get_invoice(invoice.payment_hash)
    assert (stored.status, stored.settled_by) == (InvoiceStatus.SETTLED, "lnd")
    assert available(svc, alice.account_id) == 1_000_000 and available(svc, bob.account_id) == 40_000
    assert len(credits(svc, bob.account_id)) == 1
    assert_invariants(svc)


def test_an_outside_payment_credited_while_the_intent_is_open_still_fails_the_internal_one(svc, sim, funded,
                                                                                           monkeypatch, clock):
    """The inbound credit runs first (ACCEPTED -> SETTLED by the node); then the payer retries: the cancel hears
    "already settled", the payment fails, nothing is paid twice."""
    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=40_000)
    payment_id = _pay_and_die(svc, monkeypatch, alice, invoice, "before_node_call")
    sim.external_pay(invoice.payment_request)
    assert invoices.credit_settled_invoice(svc, payment_hash=invoice.payment_hash,
                                           amount_paid_msat=40_000).outcome == "credited"
    with pytest.raises(errors.InvoiceNotPayable, match="paid from outside"):
        payments.create_payment(svc, alice, "pay-1", invoice.payment_request)
    assert svc.lightning.get_payment(payment_id).status is PaymentStatus.FAILED
    clock.advance(GRACE_S)
    assert payments.reconcile(svc)["checked"] == 0
    assert available(svc, alice.account_id) == 1_000_000 and available(svc, bob.account_id) == 40_000
    assert_invariants(svc)


def test_the_reconciler_leaves_an_internal_payment_pending_while_the_node_is_unreachable(svc, sim, funded,
                                                                                        monkeypatch, clock):
    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=10_000)
    payment_id = _pay_and_die(svc, monkeypatch, alice, invoice, "before_node_call")
    clock.advance(GRACE_S)

    class Down:
        def cancel_invoice(self, payment_hash):
            raise errors.LightningNodeUnavailable("connect timeout")

    monkeypatch.setattr(svc, "lnd", lambda: Down())
    counts = payments.reconcile(svc)
    assert (counts["checked"], counts["still_pending"], counts["internal_failed"]) == (1, 1, 0)
    assert svc.lightning.get_payment(payment_id).status is PaymentStatus.PENDING  # unknown is not failed
    monkeypatch.undo()
    assert payments.reconcile(svc)["internal_settled"] == 1
    assert available(svc, bob.account_id) == 10_000
    assert_invariants(svc)


def test_the_monitor_job_resumes_it(svc, sim, funded, monkeypatch, clock):
    """Through the scheduled MonitorFunction (events/monitor/payment_reconciler.json), as deployed."""
    import json

    from satflow import bootstrap

    from tests.handlers.conftest import ROOT, LambdaContext, load_handler_module

    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=10_000)
    payment_id = _pay_and_die(svc, monkeypatch, alice, invoice, "after_node_cancel")
    clock.advance(GRACE_S)
    bootstrap.override(svc)
    try:
        handler = load_handler_module("monitor", "satflow_fn_monitor").lambda_handler
        event = json.loads((ROOT / "events" / "monitor" / "payment_reconciler.json").read_text())
        result = handler(event, LambdaContext())
    finally:
        bootstrap.override(None)
    assert (result["checked"], result["internal_settled"]) == (1, 1)
    assert svc.lightning.get_payment(payment_id).status is PaymentStatus.SUCCEEDED
    assert svc.lightning.get_invoice(invoice.payment_hash).status is InvoiceStatus.SETTLED
    assert_invariants(svc)
