"""Use cases: creating and reading invoices, crediting settled ones (exactly once), expiring stale ones, and the
catch-up poll that republishes settlements the listener may have missed."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from satflow.domain import errors
from satflow.domain.accounts import Principal, Scope
from satflow.domain.invoices import Invoice, InvoiceStatus, credited_amount, validate_invoice_request
from satflow.domain.lightning import InvoiceState, validate_hash_hex
from satflow.domain.templates import invoice_settled, invoice_settled_again, validate_memo

from .accounts import require_scope
from .ports import Services, iso_from_unix

log = logging.getLogger(__name__)


def create_invoice(svc: Services, principal: Principal, *, amount_msat: object = None, memo: object = None,
                   description_hash: object = None, expiry_s: object = None, metadata: object = None) -> Invoice:
    account_id = require_scope(principal, Scope.RECEIVE)
    amount, expiry, dhash, meta = validate_invoice_request(amount_msat, expiry_s, description_hash, metadata)
    memo = validate_memo(memo)
    node = svc.lnd().add_invoice(amount or None, memo=memo or "", expiry_s=expiry,
                                 description_hash=bytes.fromhex(dhash) if dhash else None)
    created = svc.unix_clock()
    invoice = Invoice(
        payment_hash=node.payment_hash_hex, account_id=account_id, amount_msat=amount,
        payment_request=node.payment_request, status=InvoiceStatus.OPEN, created_at=svc.clock(),
        expires_at=iso_from_unix(created + expiry), expires_at_unix=created + expiry, memo=memo,
        description_hash=dhash, metadata=meta,
    )
    svc.lightning.create_invoice(invoice)  # owner and metadata by payment hash; only now is the invoice handed out
    return invoice


def get_invoice(svc: Services, principal: Principal, payment_hash: object) -> Invoice:
    account_id = require_scope(principal, Scope.READ)
    invoice = svc.lightning.get_invoice(validate_hash_hex(payment_hash))
    if invoice is None or invoice.account_id != account_id:
        raise errors.InvoiceNotFound("no such invoice")  # someone else's invoice is not even acknowledged
    return shown(invoice, svc.unix_clock())


def shown(invoice: Invoice, now: int) -> Invoice:
    """Tell the truth before the sweeper runs: an OPEN invoice past its expiry is EXPIRED."""
    if invoice.status is InvoiceStatus.OPEN and now >= invoice.expires_at_unix:
        from dataclasses import replace

        return replace(invoice, status=InvoiceStatus.EXPIRED)
    return invoice


@dataclass(frozen=True)
class CreditResult:
    outcome: str  # "credited" | "duplicate" | "ignored" | "conflict"
    transfer_id: str | None = None


def credit_settled_invoice(svc: Services, *, payment_hash: str, amount_paid_msat: int) -> CreditResult:
    """Inbound Lightning: credit the invoice's owner with what the node actually received, keyed by payment hash.
    Duplicate, late and out-of-order events change nothing."""
    payment_hash = validate_hash_hex(payment_hash)
    invoice = svc.lightning.get_invoice(payment_hash)
    if invoice is None:
        log.warning("settled invoice %s is not ours; ignored", payment_hash)
        return CreditResult("ignored")
    if invoice.status is InvoiceStatus.SETTLED and invoice.settled_by == "lnd":
        return _credit_further_settlement(svc, invoice, amount_paid_msat)
    transfer = invoice_settled(payment_hash=payment_hash, account_id=invoice.account_id,
                               amount_msat=credited_amount(invoice, amount_paid_msat), created_at=svc.clock(),
                               shards=svc.system_shards)
    extra = svc.lightning.settle_invoice_items(invoice, amount_received_msat=amount_paid_msat,
                                               settled_at=transfer.created_at, settled_by="lnd")
    try:
        result = svc.ledger.execute(transfer, extra)
    except errors.InvoiceNotPayable as exc:
        # Settled internally first, yet the node also received a payment for it. The cancel-before-settle order
        # of internal payments makes this unreachable unless LND misbehaves; never credit twice, shout instead.
        log.error("external settlement of invoice %s that is already %s: booked against SUSPENSE",
                  payment_hash, exc.details.get("settled_by"))
        if svc.solvency is not None:  # no silent money: the node holds it, an admin assigns it
            from satflow.domain.solvency import SUSPENSE_DOUBLE_SETTLEMENT

            from .solvency import book_suspense

            book_suspense(svc, kind=SUSPENSE_DOUBLE_SETTLEMENT, reference=payment_hash,
                          amount_msat=amount_paid_msat, at=transfer.created_at,
                          details={"payment_hash": payment_hash, "account_id": invoice.account_id,
                                   "settled_by": str(exc.details.get("settled_by"))})
        return CreditResult("conflict")
    return CreditResult("duplicate" if result.replayed else "credited", transfer.id)


def credit_due(invoice: Invoice | None, amount_paid_msat: int) -> tuple[str, int] | None:
    """What :func:`credit_settled_invoice` books for the node's settlement of ``invoice`` (``amount_paid_msat``:
    the node's total paid) that the invoice record says is not booked yet: (ledger transfer id, msat), or None
    when nothing is due. The same branches as the credit, so the solvency check and the credit cannot disagree
    about which ledger entry answers a settlement:

    * not our invoice: nothing (ignored; the node's money stays unexplained);
    * settled by the node before: the increase over what was credited, keyed by the new total (AMP);
    * OPEN or EXPIRED: the whole amount, keyed by the payment hash;
    * settled internally or cancelled: the credit refuses, the amount goes to SUSPENSE (keyed by kind and hash).

    The record is written in the same transaction as each ledger entry; the id lets a caller confirm on the ledger.
    """
    from satflow.domain.solvency import SUSPENSE_DOUBLE_SETTLEMENT, suspense_id
    from satflow.domain.templates import invoice_credit_id

    if invoice is None or amount_paid_msat <= 0:
        return None
    if invoice.status is InvoiceStatus.SETTLED and invoice.settled_by == "lnd":
        previous = invoice.amount_received_msat or 0
        if amount_paid_msat <= previous:
            return None
        return invoice_credit_id(invoice.payment_hash, amount_paid_msat), amount_paid_msat - previous
    if invoice.status in (InvoiceStatus.OPEN, InvoiceStatus.EXPIRED):
        return invoice_credit_id(invoice.payment_hash), credited_amount(invoice, amount_paid_msat)
    return suspense_id(SUSPENSE_DOUBLE_SETTLEMENT, invoice.payment_hash), amount_paid_msat


def _credit_further_settlement(svc: Services, invoice: Invoice, amount_paid_msat: int) -> CreditResult:
    """The node settled this invoice before and reports it paid again (AMP/keysend to an invoice: several
    payments of one hash; LND's amount paid is their growing total). The owner received that money: credit the
    increase, once per new total. A replayed or older event (total not above what we credited) credits nothing.
    Before this, a second settlement went to the dead-letter queue (different amount) or was taken for a
    duplicate (same amount): money on the node attributed to nobody."""
    previous = invoice.amount_received_msat or 0
    if amount_paid_msat <= previous:
        return CreditResult("duplicate")
    transfer = invoice_settled_again(payment_hash=invoice.payment_hash, account_id=invoice.account_id,
                                     amount_msat=amount_paid_msat - previous, total_paid_msat=amount_paid_msat,
                                     created_at=svc.clock(), shards=svc.system_shards)
    result = svc.ledger.execute(transfer, svc.lightning.add_settlement_items(invoice, previous_msat=previous,
                                                                            total_msat=amount_paid_msat))
    log.warning("invoice %s settled again by the node: %d msat more credited to its owner", invoice.payment_hash,
                amount_paid_msat - previous)
    return CreditResult("duplicate" if result.replayed else "credited", transfer.id)


def expire_invoices(svc: Services, limit: int = 100) -> int:
    """Mark OPEN invoices past their expiry as EXPIRED. Returns how many. The node needs no cancel: LND's expiry
    watcher cancels its own expired invoices (and if an HTLC was accepted at the edge of expiry, the settlement
    still credits: EXPIRED -> SETTLED is allowed)."""
    now = svc.unix_clock()
    count = 0
    for invoice in svc.lightning.open_invoices_expired_before(now, limit):
        if svc.lightning.close_invoice(invoice, InvoiceStatus.EXPIRED):
            count += 1
    return count


# How long a hole in the settle-index sequence may stay unexplained before the cursor moves past it. Holes are
# normally a scan that read an invoice as OPEN just before it settled (the next poll sees it); one that persists
# this long after the next settlement is not going to fill (e.g. an AMP invoice keeps only its latest index).
SETTLE_GAP_GRACE_S = 600
_OPEN_STATES = (InvoiceState.OPEN, InvoiceState.ACCEPTED)


def catch_up(svc: Services, page_size: int = 100, gap_grace_s: int = SETTLE_GAP_GRACE_S) -> int:
    """Publish every invoice the node settled after our stored settle index; returns how many were published.

    The stored cursor is (settle_index, add_index):

    * settle_index: every settlement with an index <= it has been published. LND numbers settlements 1, 2, 3...
      without holes, so the cursor only moves over a contiguous run of indexes actually seen; a settlement beyond
      a hole is published now (re-publishing is harmless: the credit is keyed by payment hash) and again until
      the hole fills. Publishing happens before advancing, so a crash republishes rather than skips.
    * add_index: the scan watermark. LND pages invoices by add_index only, so every poll scans from here; it is
      kept just below the oldest invoice that was still OPEN (or ACCEPTED) at the last complete poll, because
      everything older is final (settled and published, cancelled or expired). Without it every poll would
      rescan the node's whole history. It moves on its own (invoices expire without any settlement), but only
      when the poll left no hole, so a later poll still rescans whatever a hole might be hiding.
    """
    settle_index, add_index = svc.lightning.invoice_cursor()
    settled = []
    lowest_open: int | None = None
    highest_seen = add_index
    for node_invoice in svc.lnd().iter_invoices(add_index, page_size=page_size):
        highest_seen = max(highest_seen, node_invoice.add_index)
        if node_invoice.state is InvoiceState.SETTLED:
            if node_invoice.settle_index > settle_index:
                settled.append(node_invoice)
        elif node_invoice.state in _OPEN_STATES:
            lowest_open = node_invoice.add_index if lowest_open is None else min(lowest_open, node_invoice.add_index)
    settled.sort(key=lambda node_invoice: node_invoice.settle_index)
    for node_invoice in settled:
        svc.publish_invoice_event(invoice_event(node_invoice))
    new_settle_index = contiguous_settle_index(settle_index, settled, svc.unix_clock(), gap_grace_s)
    no_hole = not settled or new_settle_index == settled[-1].settle_index
    watermark = (highest_seen if lowest_open is None else lowest_open - 1) if no_hole else add_index
    if new_settle_index > settle_index or watermark > add_index:
        svc.lightning.advance_invoice_cursor(new_settle_index, max(add_index, watermark))
    return len(settled)


def contiguous_settle_index(cursor: int, settled: list, now: int, gap_grace_s: int = SETTLE_GAP_GRACE_S) -> int:
    """How far the settle cursor may move over ``settled`` (sorted by settle index): through the run of indexes
    cursor+1, cursor+2, ... that were all seen, and over a hole only once the settlement after it is older than
    ``gap_grace_s`` (then loudly: a settlement may be missing)."""
    for node_invoice in settled:
        index = node_invoice.settle_index
        if index <= cursor:
            continue
        if index > cursor + 1:
            settled_at = node_invoice.settle_date or now  # no date: never old enough to skip over
            if now - settled_at < gap_grace_s:
                break
            log.error("settle indexes %d..%d never appeared as settled invoices; the cursor moves past them",
                      cursor + 1, index - 1)
        cursor = index
    return cursor


def invoice_event(node_invoice) -> dict:
    """The SQS message for a settled node invoice (the listener and the poller publish the same shape)."""
    return {"type": "invoice.settled", "payment_hash": node_invoice.payment_hash,
            "amount_paid_msat": node_invoice.amt_paid_msat, "settle_index": node_invoice.settle_index}
