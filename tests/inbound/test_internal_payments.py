"""Paying another satflow account's invoice (app.payments.create_payment): settled on the ledger at once and free,
the node-side invoice cancelled first, and the race with an external payer of the same invoice decided once."""
from __future__ import annotations

import pytest

from satflow.api.errors import status_for
from satflow.app import invoices, payments
from satflow.domain import errors
from satflow.domain.invoices import InvoiceStatus
from satflow.domain.payments import PaymentStatus

from .conftest import assert_invariants, available, credits, fund


@pytest.fixture
def funded(svc, users):
    alice, bob = users
    fund(svc, alice.account_id, 1_000_000)
    return alice, bob


@pytest.fixture(autouse=True)
def no_workflow_for_internal_payments(started):
    yield
    assert started == [], "an internal payment must not start the external payment workflow"


def test_paying_another_accounts_invoice_settles_at_once_and_free(svc, sim, funded):
    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=250_000, memo="lunch")
    payment = payments.create_payment(svc, alice, "pay-1", invoice.payment_request)

    assert payment.internal and payment.status is PaymentStatus.SUCCEEDED
    assert payment.fee_msat == 0 and payment.fee_reserve_msat == 0 and payment.amount_msat == 250_000
    assert available(svc, alice.account_id) == 750_000 and available(svc, bob.account_id) == 250_000
    stored = svc.lightning.get_invoice(invoice.payment_hash)
    assert stored.status is InvoiceStatus.SETTLED and stored.settled_by == payment.payment_id
    assert stored.amount_received_msat == 250_000
    assert svc.lightning.get_payment(payment.payment_id) == payment
    assert sim.invoice_state(invoice.payment_hash) == "CANCELED"
    from satflow_dev.simulators.lightning import ExternalPaymentError

    with pytest.raises(ExternalPaymentError, match="CANCELED"):
        sim.external_pay(invoice.payment_request)  # nobody can pay it on the node any more
    assert_invariants(svc)


def test_an_amountless_internal_invoice_takes_the_payers_amount(svc, sim, funded):
    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=0)
    with pytest.raises(errors.AmountRequired):
        payments.create_payment(svc, alice, "pay-0", invoice.payment_request)
    payment = payments.create_payment(svc, alice, "pay-1", invoice.payment_request, amount_msat=4_321)
    assert payment.internal and available(svc, bob.account_id) == 4_321
    assert svc.lightning.get_invoice(invoice.payment_hash).amount_received_msat == 4_321
    assert_invariants(svc)


def test_a_retry_with_the_same_key_returns_the_payment_and_moves_nothing(svc, funded):
    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=10_000)
    first = payments.create_payment(svc, alice, "pay-1", invoice.payment_request)
    again = payments.create_payment(svc, alice, "pay-1", invoice.payment_request)
    assert again == first
    assert available(svc, alice.account_id) == 990_000 and available(svc, bob.account_id) == 10_000
    with pytest.raises(errors.InvoiceNotPayable):  # a new key for the same invoice: already settled
        payments.create_payment(svc, alice, "pay-2", invoice.payment_request)
    assert_invariants(svc)


def test_paying_your_own_invoice_is_refused(svc, sim, funded):
    alice, _ = funded
    invoice = invoices.create_invoice(svc, alice, amount_msat=1_000)
    with pytest.raises(errors.SelfPayment) as exc:
        payments.create_payment(svc, alice, "pay-1", invoice.payment_request)
    assert status_for(exc.value) == 422
    assert sim.invoice_state(invoice.payment_hash) == "OPEN"
    assert available(svc, alice.account_id) == 1_000_000
    assert_invariants(svc)


def test_paying_a_settled_invoice_is_refused(svc, sim, users, funded):
    alice, bob = funded
    carol_invoice = invoices.create_invoice(svc, bob, amount_msat=5_000)
    sim.external_pay(carol_invoice.payment_request)
    invoices.credit_settled_invoice(svc, payment_hash=carol_invoice.payment_hash, amount_paid_msat=5_000)
    with pytest.raises(errors.InvoiceNotPayable) as exc:
        payments.create_payment(svc, alice, "pay-1", carol_invoice.payment_request)
    assert status_for(exc.value) == 422
    assert available(svc, alice.account_id) == 1_000_000 and available(svc, bob.account_id) == 5_000
    assert_invariants(svc)


def test_paying_an_expired_internal_invoice_is_refused(svc, sim, funded, clock):
    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=5_000, expiry_s=60)
    clock.advance(61)
    with pytest.raises((errors.InvoiceExpired, errors.InvoiceNotPayable)):
        payments.create_payment(svc, alice, "pay-1", invoice.payment_request)
    assert available(svc, alice.account_id) == 1_000_000


def test_insufficient_funds_cancels_nothing_on_the_node(svc, sim, users):
    alice, bob = users
    fund(svc, alice.account_id, 999)
    invoice = invoices.create_invoice(svc, bob, amount_msat=1_000)
    with pytest.raises(errors.InsufficientFunds) as exc:
        payments.create_payment(svc, alice, "pay-1", invoice.payment_request)
    assert status_for(exc.value) == 422
    assert sim.invoice_state(invoice.payment_hash) == "OPEN"  # the payee's invoice is still payable from outside
    assert svc.lightning.get_invoice(invoice.payment_hash).status is InvoiceStatus.OPEN
    assert svc.lightning.get_payment(payments.derive_id("pay", alice.account_id, "payment", "pay-1")) is None
    sim.external_pay(invoice.payment_request)
    assert invoices.credit_settled_invoice(svc, payment_hash=invoice.payment_hash,
                                           amount_paid_msat=1_000).outcome == "credited"
    assert available(svc, bob.account_id) == 1_000 and available(svc, alice.account_id) == 999
    assert_invariants(svc)


# --- the race: one invoice, an internal payer and an external payer -----------------------------------------------
def test_external_payer_first_refuses_the_internal_payment_and_credits_once(svc, sim, funded, published):
    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=40_000)
    sim.external_pay(invoice.payment_request)  # settled on the node; our credit has not run yet

    with pytest.raises(errors.InvoiceNotPayable, match="paid from outside"):
        payments.create_payment(svc, alice, "pay-1", invoice.payment_request)
    assert available(svc, alice.account_id) == 1_000_000  # alice paid nothing
    assert sim.invoice_state(invoice.payment_hash) == "SETTLED"

    invoices.catch_up(svc)
    event = published[-1]
    outcomes = [invoices.credit_settled_invoice(svc, payment_hash=event["payment_hash"],
                                                amount_paid_msat=event["amount_paid_msat"]).outcome
                for _ in range(2)]
    assert outcomes == ["credited", "duplicate"]
    assert available(svc, bob.account_id) == 40_000 and len(credits(svc, bob.account_id)) == 1
    assert svc.lightning.get_invoice(invoice.payment_hash).settled_by == "lnd"
    assert_invariants(svc)


def test_internal_payer_first_leaves_nothing_for_the_external_payer(svc, sim, funded, published):
    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=40_000)
    payment = payments.create_payment(svc, alice, "pay-1", invoice.payment_request)
    from satflow_dev.simulators.lightning import ExternalPaymentError

    with pytest.raises(ExternalPaymentError):
        sim.external_pay(invoice.payment_request)
    assert invoices.catch_up(svc) == 0 and published == []  # the node settled nothing

    # Even a bogus settlement event for the hash (LND misbehaving) credits nothing twice.
    result = invoices.credit_settled_invoice(svc, payment_hash=invoice.payment_hash, amount_paid_msat=40_000)
    assert result.outcome == "conflict"
    assert available(svc, alice.account_id) == 960_000 and available(svc, bob.account_id) == 40_000
    assert [e.transfer_id for e in credits(svc, bob.account_id)] == [payment.payment_id]
    assert_invariants(svc)


def test_two_internal_payers_of_one_invoice_one_wins(svc, users):
    alice, bob = users
    from satflow.app.accounts import ADMIN, create_account
    from satflow.domain.accounts import ALL_SCOPES, Principal

    carol_account, _ = create_account(svc, ADMIN, "tg:carol", 1)
    carol = Principal(carol_account.account_id, frozenset(ALL_SCOPES))
    fund(svc, alice.account_id, 50_000, "fund-a")
    fund(svc, carol.account_id, 50_000, "fund-c")
    invoice = invoices.create_invoice(svc, bob, amount_msat=30_000)
    payments.create_payment(svc, alice, "k", invoice.payment_request)
    with pytest.raises(errors.InvoiceNotPayable):
        payments.create_payment(svc, carol, "k", invoice.payment_request)
    assert (available(svc, alice.account_id), available(svc, carol.account_id),
            available(svc, bob.account_id)) == (20_000, 50_000, 30_000)
    assert_invariants(svc)


@pytest.mark.parametrize("who, status", [("payer", "frozen"), ("payee", "closed")])
def test_a_payment_the_ledger_refuses_leaves_the_payees_invoice_payable(svc, sim, funded, who, status):
    from satflow.domain.accounts import AccountStatus

    alice, bob = funded
    invoice = invoices.create_invoice(svc, bob, amount_msat=1_000)
    target = alice if who == "payer" else bob
    svc.accounts.update(target.account_id, updated_at=svc.clock(), status=AccountStatus(status))
    with pytest.raises((errors.AccountFrozen, errors.AccountClosed)):
        payments.create_payment(svc, alice, "pay-1", invoice.payment_request)
    record = svc.lightning.get_invoice(invoice.payment_hash).status
    node = sim.invoice_state(invoice.payment_hash)
    # Either nothing happened anywhere, or the record says what the node did: never OPEN here, CANCELED there.
    assert (record, node) in {(InvoiceStatus.OPEN, "OPEN"), (InvoiceStatus.CANCELED, "CANCELED")}
    assert (record, node) == (InvoiceStatus.OPEN, "OPEN") or who == "payee"
