"""app.invoices against moto and the simulated node: creating and reading invoices, crediting what the node
received exactly once, the expiry sweeper, and the catch-up poller with its cursor."""
from __future__ import annotations

import hashlib
import json
import pytest

from satflow.api.errors import status_for
from satflow.app import invoices
from satflow.domain import errors
from satflow.domain.accounts import Principal, Scope
from satflow.domain.invoices import InvoiceStatus
from satflow.domain.ledger import SystemAccount

from .conftest import assert_invariants, available, credits


def test_create_invoice_stores_owner_amount_expiry_and_metadata(svc, sim, users, clock):
    alice, _ = users
    dhash = hashlib.sha256(b'[["text/plain","lnurl-pay"]]').hexdigest()
    invoice = invoices.create_invoice(svc, alice, amount_msat=21_000, memo="coffee", description_hash=dhash,
                                      expiry_s=600, metadata={"order": "o-1"})
    assert invoice.status is InvoiceStatus.OPEN and invoice.account_id == alice.account_id
    assert invoice.expires_at_unix == int(clock()) + 600 and invoice.expires_at.endswith("Z")
    stored = svc.lightning.get_invoice(invoice.payment_hash)
    assert stored == invoice  # by payment hash, every field round-trips
    assert stored.metadata == {"order": "o-1"} and stored.description_hash == dhash and stored.memo == "coffee"
    import bolt11

    decoded = bolt11.decode(invoice.payment_request)
    assert decoded.payment_hash == invoice.payment_hash and decoded.amount_msat == 21_000
    assert decoded.description_hash == dhash and decoded.expiry == 600
    assert sim.invoice_state(invoice.payment_hash) == "OPEN"


def test_amount_zero_or_absent_means_any_amount(svc, users):
    alice, _ = users
    for amount in (0, None):
        invoice = invoices.create_invoice(svc, alice, amount_msat=amount)
        assert invoice.amount_msat == 0
        import bolt11

        assert bolt11.decode(invoice.payment_request).amount_msat is None


@pytest.mark.parametrize("kwargs", [
    {"amount_msat": -1}, {"amount_msat": 1.5}, {"amount_msat": True}, {"expiry_s": 10}, {"expiry_s": 8 * 86400},
    {"description_hash": "ab"}, {"description_hash": "zz" * 32}, {"metadata": ["x"]},
    {"metadata": {"x": "y" * 3000}},
])
def test_create_invoice_refuses_bad_input_before_touching_the_node(svc, sim, users, kwargs):
    alice, _ = users
    with pytest.raises(errors.ValidationError):
        invoices.create_invoice(svc, alice, **kwargs)
    assert sim.invoice_subscribers == 0 and not sim.handle("GET", "/v1/invoices")[2].count(b"payment_request")


def test_create_invoice_needs_the_receive_scope(svc, users):
    alice, _ = users
    with pytest.raises(errors.Forbidden):
        invoices.create_invoice(svc, Principal(alice.account_id, frozenset({Scope.READ})), amount_msat=1_000)


def test_get_invoice_is_for_its_owner_only(svc, users):
    alice, bob = users
    invoice = invoices.create_invoice(svc, alice, amount_msat=5_000)
    assert invoices.get_invoice(svc, alice, invoice.payment_hash) == invoice
    with pytest.raises(errors.InvoiceNotFound) as exc:
        invoices.get_invoice(svc, bob, invoice.payment_hash)
    assert status_for(exc.value) == 404
    with pytest.raises(errors.InvoiceNotFound):
        invoices.get_invoice(svc, alice, "00" * 32)


def test_get_invoice_shows_expired_past_expiry_before_the_sweeper_runs(svc, users, clock):
    alice, _ = users
    invoice = invoices.create_invoice(svc, alice, amount_msat=5_000, expiry_s=60)
    clock.advance(59)
    assert invoices.get_invoice(svc, alice, invoice.payment_hash).status is InvoiceStatus.OPEN
    clock.advance(1)
    assert invoices.get_invoice(svc, alice, invoice.payment_hash).status is InvoiceStatus.EXPIRED
    assert svc.lightning.get_invoice(invoice.payment_hash).status is InvoiceStatus.OPEN  # the record is untouched


def test_external_payment_of_an_amountless_invoice_credits_what_was_received(svc, sim, users, published, clock):
    alice, _ = users
    invoice = invoices.create_invoice(svc, alice, amount_msat=0, memo="tip jar")
    clock.advance(30)
    sim.external_pay(invoice.payment_request, amount_msat=777_123)

    assert invoices.catch_up(svc) == 1
    assert published == [{"type": "invoice.settled", "payment_hash": invoice.payment_hash,
                          "amount_paid_msat": 777_123, "settle_index": 1}]
    json.dumps(published[0])  # the message is plain JSON

    result = invoices.credit_settled_invoice(svc, payment_hash=invoice.payment_hash, amount_paid_msat=777_123)
    assert result.outcome == "credited" and result.transfer_id == f"inv_{invoice.payment_hash}"
    assert available(svc, alice.account_id) == 777_123
    shown = invoices.get_invoice(svc, alice, invoice.payment_hash)
    assert shown.status is InvoiceStatus.SETTLED and shown.amount_received_msat == 777_123
    assert shown.settled_at == svc.clock() and shown.settled_by == "lnd"
    node = sum(b.available for b in svc.ledger.balances(SystemAccount.LND_NODE.value))
    assert node == -777_123
    assert_invariants(svc)


def test_overpayment_credits_the_amount_received(svc, sim, users):
    alice, _ = users
    invoice = invoices.create_invoice(svc, alice, amount_msat=10_000)
    sim.external_pay(invoice.payment_request, amount_msat=15_000)  # LND accepts up to 2x
    invoices.credit_settled_invoice(svc, payment_hash=invoice.payment_hash, amount_paid_msat=15_000)
    assert available(svc, alice.account_id) == 15_000
    assert_invariants(svc)


def test_duplicate_late_and_out_of_order_events_change_nothing(svc, sim, users, published):
    alice, bob = users
    invs = [invoices.create_invoice(svc, owner, amount_msat=1_000 * (i + 1))
            for i, owner in enumerate((alice, bob, alice, bob, alice))]
    for inv in invs:
        sim.external_pay(inv.payment_request)
    invoices.catch_up(svc)
    events = {e["settle_index"]: e for e in published}
    assert sorted(events) == [1, 2, 3, 4, 5]

    def credit(event):
        return invoices.credit_settled_invoice(svc, payment_hash=event["payment_hash"],
                                               amount_paid_msat=event["amount_paid_msat"]).outcome

    assert credit(events[5]) == "credited"  # out of order: 5 before 3
    assert credit(events[3]) == "credited"
    assert credit(events[5]) == "duplicate"  # late duplicate
    for index in (1, 2, 4):
        assert credit(events[index]) == "credited"
    balances = (available(svc, alice.account_id), available(svc, bob.account_id))
    for event in published:  # the whole stream again (a republishing poller)
        assert credit(event) == "duplicate"
    assert (available(svc, alice.account_id), available(svc, bob.account_id)) == balances == (9_000, 6_000)
    assert len(credits(svc, alice.account_id)) == 3 and len(credits(svc, bob.account_id)) == 2
    assert_invariants(svc)


def test_a_duplicate_carrying_another_amount_changes_nothing(svc, sim, users):
    alice, _ = users
    invoice = invoices.create_invoice(svc, alice, amount_msat=0)
    sim.external_pay(invoice.payment_request, amount_msat=5_000)
    assert invoices.credit_settled_invoice(svc, payment_hash=invoice.payment_hash,
                                           amount_paid_msat=5_000).outcome == "credited"
    # same hash, a total not above what was credited: never a second credit (a HIGHER total is a further AMP
    # settlement and credits the increase: tests/inbound/test_repeated_settlement.py)
    assert invoices.credit_settled_invoice(svc, payment_hash=invoice.payment_hash,
                                           amount_paid_msat=4_000).outcome == "duplicate"
    assert available(svc, alice.account_id) == 5_000
    assert_invariants(svc)


def test_unknown_hash_is_ignored(svc, users):
    result = invoices.credit_settled_invoice(svc, payment_hash="ab" * 32, amount_paid_msat=1_000)
    assert result.outcome == "ignored"
    assert svc.ledger.get_transfer(f"inv_{'ab' * 32}") is None
    assert_invariants(svc)


@pytest.mark.parametrize("amount", [0, -5])
def test_a_settlement_without_a_positive_amount_is_refused(svc, users, amount):
    alice, _ = users
    invoice = invoices.create_invoice(svc, alice, amount_msat=0)
    with pytest.raises(errors.ValidationError):
        invoices.credit_settled_invoice(svc, payment_hash=invoice.payment_hash, amount_paid_msat=amount)
    assert svc.lightning.get_invoice(invoice.payment_hash).status is InvoiceStatus.OPEN


def test_expiry_sweeper_marks_expired_but_never_a_settled_invoice(svc, sim, users, clock):
    alice, bob = users
    stale = invoices.create_invoice(svc, alice, amount_msat=1_000, expiry_s=60)
    paid = invoices.create_invoice(svc, bob, amount_msat=2_000, expiry_s=60)
    fresh = invoices.create_invoice(svc, alice, amount_msat=3_000, expiry_s=3600)
    sim.external_pay(paid.payment_request)
    invoices.credit_settled_invoice(svc, payment_hash=paid.payment_hash, amount_paid_msat=2_000)
    assert invoices.expire_invoices(svc) == 0  # nothing is due yet
    clock.advance(120)
    assert invoices.expire_invoices(svc) == 1
    assert svc.lightning.get_invoice(stale.payment_hash).status is InvoiceStatus.EXPIRED
    assert svc.lightning.get_invoice(paid.payment_hash).status is InvoiceStatus.SETTLED
    assert svc.lightning.get_invoice(fresh.payment_hash).status is InvoiceStatus.OPEN
    assert invoices.expire_invoices(svc) == 0  # run twice: nothing more
    assert_invariants(svc)


def test_a_settlement_at_the_edge_of_expiry_still_credits(svc, sim, users, clock):
    alice, _ = users
    invoice = invoices.create_invoice(svc, alice, amount_msat=4_000, expiry_s=60)
    sim.external_pay(invoice.payment_request)  # the node settled just in time ...
    clock.advance(61)
    assert invoices.expire_invoices(svc) == 1  # ... but the sweeper ran before the event was processed
    outcome = invoices.credit_settled_invoice(svc, payment_hash=invoice.payment_hash, amount_paid_msat=4_000)
    assert outcome.outcome == "credited" and available(svc, alice.account_id) == 4_000
    assert svc.lightning.get_invoice(invoice.payment_hash).status is InvoiceStatus.SETTLED
    assert_invariants(svc)


# --- the catch-up poller and its cursor --------------------------------------------------------------------------
def test_catch_up_publishes_each_settlement_once_and_advances_the_cursor(svc, sim, users, published):
    alice, _ = users
    first = [invoices.create_invoice(svc, alice, amount_msat=1_000) for _ in range(3)]
    for inv in first:
        sim.external_pay(inv.payment_request)
    assert invoices.catch_up(svc, page_size=2) == 3
    assert [e["settle_index"] for e in published] == [1, 2, 3]
    assert svc.lightning.invoice_cursor() == (3, 3)  # nothing open: the watermark is the last add index
    assert invoices.catch_up(svc) == 0  # nothing new: nothing republished
    later = invoices.create_invoice(svc, alice, amount_msat=2_000)
    sim.external_pay(later.payment_request)
    assert invoices.catch_up(svc) == 1 and published[-1]["payment_hash"] == later.payment_hash
    assert svc.lightning.invoice_cursor() == (4, 4)


def test_catch_up_keeps_the_watermark_below_the_oldest_open_invoice(svc, sim, users, published, lnd, monkeypatch):
    alice, _ = users
    invs = [invoices.create_invoice(svc, alice, amount_msat=1_000) for _ in range(5)]  # add indexes 1..5
    for i in (0, 2, 4):
        sim.external_pay(invs[i].payment_request)  # add 1, 3, 5 settled; 2 and 4 stay open
    invoices.catch_up(svc)
    assert svc.lightning.invoice_cursor() == (3, 1)  # the scan restarts after add index 1, i.e. at 2

    scanned_from = []
    real = lnd.iter_invoices
    monkeypatch.setattr(lnd, "iter_invoices", lambda offset, **kw: scanned_from.append(offset) or real(offset, **kw))
    sim.external_pay(invs[3].payment_request)  # add 4 settles (settle index 4)
    assert invoices.catch_up(svc) == 1 and published[-1]["payment_hash"] == invs[3].payment_hash
    assert scanned_from == [1] and svc.lightning.invoice_cursor() == (4, 1)  # add 2 is still open
    sim.external_pay(invs[1].payment_request)
    assert invoices.catch_up(svc) == 1
    assert svc.lightning.invoice_cursor() == (5, 5)  # everything final now


def test_catch_up_does_not_move_the_cursor_over_a_hole(svc, sim, users, published, lnd, monkeypatch, clock):
    """A scan pages through invoices while they settle: it can see index 3 but read the invoice that got index 2
    while it was still OPEN. The cursor stays before the hole; the next poll fills it."""
    alice, _ = users
    invs = [invoices.create_invoice(svc, alice, amount_msat=1_000) for _ in range(3)]
    sim.external_pay(invs[0].payment_request)  # settle index 1
    real = lnd.iter_invoices

    def racing_scan(offset, **kw):
        for node_invoice in real(offset, **kw):
            if node_invoice.add_index == 2:
                sim.external_pay(invs[1].payment_request)  # settles (index 2) right after we read it as OPEN
                sim.external_pay(invs[2].payment_request)  # index 3, read as SETTLED in this scan
            yield node_invoice

    monkeypatch.setattr(lnd, "iter_invoices", racing_scan)
    assert invoices.catch_up(svc, page_size=2) == 2  # indexes 1 and 3 (3 is read on the second page)
    assert svc.lightning.invoice_cursor() == (1, 0)  # not over the hole, and no watermark past it
    monkeypatch.setattr(lnd, "iter_invoices", real)
    assert invoices.catch_up(svc) == 2  # 2 (the hole) and 3 again: harmless, the credit is keyed by hash
    assert sorted(e["settle_index"] for e in published) == [1, 2, 3, 3]
    assert svc.lightning.invoice_cursor() == (3, 3)


def test_a_hole_that_never_fills_is_passed_after_the_grace_period():
    from satflow.domain.lightning import InvoiceState, NodeInvoice

    def settled(index, date):
        return NodeInvoice(payment_hash=f"{index:064x}", state=InvoiceState.SETTLED, value_msat=0,
                           amt_paid_msat=1_000, settle_index=index, add_index=index, settle_date=date,
                           creation_date=max(date - 10, 0), expiry=3600, payment_request="lnbcrt1")

    now = 1_000_000
    run = [settled(1, now - 5000), settled(3, now - 5000), settled(4, now - 10)]
    assert invoices.contiguous_settle_index(0, run, now, gap_grace_s=600) == 4  # 2 never came: passed, loudly
    fresh = [settled(1, now - 5000), settled(3, now - 10), settled(4, now - 5)]
    assert invoices.contiguous_settle_index(0, fresh, now, gap_grace_s=600) == 1
    undated = [settled(3, 0)]
    assert invoices.contiguous_settle_index(1, undated, now) == 1  # no date: never old enough


def test_the_watermark_moves_when_open_invoices_expire_without_any_settlement(svc, sim, users, published, clock):
    alice, _ = users
    paid = invoices.create_invoice(svc, alice, amount_msat=1_000)
    stale = invoices.create_invoice(svc, alice, amount_msat=1_000, expiry_s=60)  # add index 2, never paid
    sim.external_pay(paid.payment_request)
    invoices.catch_up(svc)
    assert svc.lightning.invoice_cursor() == (1, 1)  # add 2 still open: the scan restarts there
    clock.advance(120)  # add 2 expires on the node; no new settlement at all
    assert invoices.catch_up(svc) == 0
    assert svc.lightning.invoice_cursor() == (1, 2)  # the scan no longer starts below the expired invoice
    assert stale.payment_hash not in {e["payment_hash"] for e in published}
