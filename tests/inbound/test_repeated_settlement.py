"""A further node settlement of one payment hash (AMP: several payments to one invoice; LND reports the growing
total paid) is credited to the invoice's owner, once per settlement (issue 11 item 5c). Before, the second event
went to the dead-letter queue (another amount) or passed for a duplicate (the same one): money on the node
attributed to nobody."""
from __future__ import annotations

from satflow.app import invoices
from satflow.domain.invoices import InvoiceStatus

from .conftest import assert_invariants, available


def test_a_second_settlement_of_one_hash_credits_the_owner_the_increase_once(svc, users):
    _alice, bob = users
    invoice = invoices.create_invoice(svc, bob, amount_msat=0)  # a reusable (amount-less) invoice
    first = invoices.credit_settled_invoice(svc, payment_hash=invoice.payment_hash, amount_paid_msat=10_000)
    assert first.outcome == "credited" and available(svc, bob.account_id) == 10_000
    second = invoices.credit_settled_invoice(svc, payment_hash=invoice.payment_hash, amount_paid_msat=25_000)
    assert second.outcome == "credited" and second.transfer_id != first.transfer_id
    assert available(svc, bob.account_id) == 25_000
    for replayed in (25_000, 10_000):  # the same event again, or an older one arriving late: nothing more
        assert invoices.credit_settled_invoice(svc, payment_hash=invoice.payment_hash,
                                               amount_paid_msat=replayed).outcome == "duplicate"
    assert available(svc, bob.account_id) == 25_000
    stored = svc.lightning.get_invoice(invoice.payment_hash)
    assert (stored.status, stored.settled_by, stored.amount_received_msat) == (InvoiceStatus.SETTLED, "lnd", 25_000)
    assert_invariants(svc)
