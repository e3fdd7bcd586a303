"""An internal invoice payment whose ledger write fails after the payee's invoice was cancelled on the node
(issue 11 item 4): a transient failure is retried to completion (admit_with_retry, same transfer id); if it persists
the outcome is unknown, not failed: the payment stays PENDING and the invoice ACCEPTED (never OPEN while the node has
cancelled it) until the payer's retry or the reconciler finishes it (tests/inbound/test_internal_payment_crashes.py
covers the invocation dying at each step)."""
from __future__ import annotations

import pytest

from satflow.app import invoices, payments
from satflow.domain import errors
from satflow.domain.invoices import InvoiceStatus
from satflow.domain.payments import PaymentStatus
from satflow.domain.templates import admin_adjustment

from .conftest import assert_invariants, available, fund


@pytest.fixture
def funded(svc, users):
    alice, bob = users
    fund(svc, alice.account_id, 1_000_000)
    return alice, bob


def _failing_ledger(svc, monkeypatch, failures: int) -> list:
    real = svc.ledger.execute
    calls: list = []

    def execute(transfer, extra=()):
        calls.append(transfer.id)
        if len(calls) <= failures:
            raise errors.TransientError("ProvisionedThroughputExceeded")
        return real(transfer, extra)

    monkeypatch.setattr(svc.ledger, "execute", execute)
    return calls


def test_a_transient_ledger_failure_after_the_node_cancel_is_retried_to_completion(svc, sim, funded, monkeypatch):
    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=250_000)
    calls = _failing_ledger(svc, monkeypatch, failures=1)
    payment = payments.create_payment(svc, alice, "pay-1", invoice.payment_request)
    assert payment.status is PaymentStatus.SUCCEEDED and len(calls) == 2 and len(set(calls)) == 1  # same id
    assert sim.invoice_state(invoice.payment_hash) == "CANCELED"
    assert svc.lightning.get_invoice(invoice.payment_hash).status is InvoiceStatus.SETTLED
    assert available(svc, alice.account_id) == 750_000 and available(svc, bob.account_id) == 250_000
    assert_invariants(svc)


def test_a_persistent_failure_leaves_the_payment_pending_never_the_invoice_open_and_a_retry_finishes_it(
        svc, sim, funded, monkeypatch):
    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=250_000)
    _failing_ledger(svc, monkeypatch, failures=100)
    with pytest.raises(errors.TransientError):
        payments.create_payment(svc, alice, "pay-1", invoice.payment_request)
    assert sim.invoice_state(invoice.payment_hash) == "CANCELED"
    assert svc.lightning.get_invoice(invoice.payment_hash).status is InvoiceStatus.ACCEPTED  # not OPEN
    payment_id = payments.derive_id("pay", alice.account_id, "payment", "pay-1")
    assert svc.lightning.get_payment(payment_id).status is PaymentStatus.PENDING  # unknown is not failed
    assert available(svc, alice.account_id) == 1_000_000 and available(svc, bob.account_id) == 0
    monkeypatch.undo()
    again = payments.create_payment(svc, alice, "pay-1", invoice.payment_request)  # the payer's retry finishes it
    assert again.status is PaymentStatus.SUCCEEDED and again == svc.lightning.get_payment(payment_id)
    assert svc.lightning.get_invoice(invoice.payment_hash).status is InvoiceStatus.SETTLED
    assert available(svc, alice.account_id) == 750_000 and available(svc, bob.account_id) == 250_000
    assert_invariants(svc)


def test_a_refusal_after_the_node_cancel_fails_the_payment_and_cancels_the_invoice(svc, sim, funded, monkeypatch):
    """The ledger refuses (here: the payer's funds went to another send between the pre-check and the write): the
    node has cancelled the invoice, nothing moved; the payment is FAILED with the refusal's code and the invoice
    CANCELED, in one transaction. The payer's retry gets that payment, and the reconciler has nothing to do."""
    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=250_000)
    real = svc.lightning.settle_invoice_items

    def funds_gone_meanwhile(*args, **kwargs):
        svc.ledger.execute(admin_adjustment(transfer_id="drain", account_id=alice.account_id, amount_msat=900_000,
                                            direction="debit", reason="test", created_at=svc.clock(),
                                            shards=svc.system_shards))
        return real(*args, **kwargs)

    monkeypatch.setattr(svc.lightning, "settle_invoice_items", funds_gone_meanwhile)
    with pytest.raises(errors.InsufficientFunds):
        payments.create_payment(svc, alice, "pay-1", invoice.payment_request)
    monkeypatch.undo()
    payment_id = payments.derive_id("pay", alice.account_id, "payment", "pay-1")
    failed = svc.lightning.get_payment(payment_id)
    assert failed.status is PaymentStatus.FAILED and failed.failure_reason == "INSUFFICIENT_FUNDS"
    assert svc.lightning.get_invoice(invoice.payment_hash).status is InvoiceStatus.CANCELED
    assert sim.invoice_state(invoice.payment_hash) == "CANCELED"
    assert payments.create_payment(svc, alice, "pay-1", invoice.payment_request) == failed
    assert payments.reconcile(svc, min_age_s=0)["checked"] == 0
    assert available(svc, alice.account_id) == 100_000 and available(svc, bob.account_id) == 0
    assert_invariants(svc)


def test_an_unknown_outcome_that_did_commit_stays_settled(svc, sim, funded, monkeypatch):
    """The write committed but its answer was lost every time: the invoice stays SETTLED (the CANCELED write is
    conditional on OPEN) and the payer's retry returns the payment."""
    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=5_000)
    real = svc.ledger.execute

    def committed_but_lost(transfer, extra=()):
        real(transfer, extra)
        raise errors.TransientError("connection reset after commit")

    monkeypatch.setattr(svc.ledger, "execute", committed_but_lost)
    with pytest.raises(errors.TransientError):
        payments.create_payment(svc, alice, "pay-1", invoice.payment_request)
    monkeypatch.undo()
    assert svc.lightning.get_invoice(invoice.payment_hash).status is InvoiceStatus.SETTLED
    again = payments.create_payment(svc, alice, "pay-1", invoice.payment_request)
    assert again.status is PaymentStatus.SUCCEEDED
    assert available(svc, alice.account_id) == 995_000 and available(svc, bob.account_id) == 5_000
    assert_invariants(svc)
