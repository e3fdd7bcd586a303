"""Invoices, outbound payments, payment-hash locks and the invoice cursor on DynamoDB.

Methods named ``*_items`` return tagged transaction items that the use cases add to the ledger transaction of
the same business event, so the invoice/payment state and the money move together or not at all."""
from __future__ import annotations

import json
from typing import Any

from satflow.domain import errors
from satflow.domain.invoices import Invoice, InvoiceStatus
from satflow.domain.ledger import shard_for
from satflow.domain.payments import Payment, PaymentStatus

from .batch import ItemRead
from .models import Models, key
from .transaction import TxItem, delete, put, run_or_raise, transact, update, update_if

INDEX_SHARDS = 8


class DynamoLightningStore:
    def __init__(self, client: Any, models: Models) -> None:
        self._client = client
        self._m = models

    # ------------------------------------------------------------------ invoices
    def create_invoice(self, inv: Invoice) -> None:
        I, K = self._m.Invoice, self._m.Marker
        item = I(f"INVOICE#{inv.payment_hash}", "INVOICE", payment_hash=inv.payment_hash, account_id=inv.account_id,
                 amount_msat=inv.amount_msat, payment_request=inv.payment_request, status=inv.status.value,
                 created_at=inv.created_at, expires_at=inv.expires_at, expires_at_unix=inv.expires_at_unix,
                 memo=inv.memo, description_hash=inv.description_hash,
                 metadata_json=json.dumps(dict(inv.metadata)) if inv.metadata else None)
        index = K(*self._open_invoice_key(inv.payment_hash, inv.expires_at_unix), ref=inv.payment_hash)
        # The owner's index (newest first by created_at): listing an account's invoices (LndHub, GET /v1/invoices).
        owner = K(f"INVOWNER#{inv.account_id}", f"{inv.created_at}#{inv.payment_hash}", ref=inv.payment_hash)
        cancelled = transact(self._client, [put(item, I.pk.does_not_exist(), "invoice"), put(index, None, "index"),
                                            put(owner, None, "owner_index")])
        if cancelled is not None:
            raise errors.Conflict(f"invoice {inv.payment_hash} already exists")

    def invoices_of(self, account_id: str, limit: int, cursor: str | None = None, *, since: str | None = None,
                    until: str | None = None) -> tuple[list[Invoice], str | None]:
        """The account's invoices, newest first (from the owner index written with each invoice), created in
        [since, until) when given (ISO-8601 UTC, compared as text), and the sort key to continue after (None: no
        more)."""
        pk = f"INVOWNER#{account_id}"
        condition, values = "pk = :pk", {":pk": {"S": pk}}
        if since or until:
            condition += " AND sk BETWEEN :lo AND :hi"
            values[":lo"] = {"S": since or "0"}  # "0" sorts before every ISO timestamp
            values[":hi"] = {"S": until or "~"}  # "~" sorts after every ISO timestamp
        params: dict[str, Any] = {"TableName": self._m.table_name, "KeyConditionExpression": condition,
                                  "ExpressionAttributeValues": values, "ScanIndexForward": False, "Limit": limit}
        if cursor:
            params["ExclusiveStartKey"] = {"pk": {"S": pk}, "sk": {"S": cursor}}
        resp = self._client.query(**params)
        found = [inv for inv in (self.get_invoice(raw["ref"]["S"]) for raw in resp.get("Items", [])) if inv]
        last = resp.get("LastEvaluatedKey")
        return found, (last["sk"]["S"] if last else None)

    def get_invoice(self, payment_hash: str) -> Invoice | None:
        raw = self._get(f"INVOICE#{payment_hash}", "INVOICE")
        return None if raw is None else self._invoice(raw)

    def settle_invoice_items(self, inv: Invoice, *, amount_received_msat: int, settled_at: str,
                             settled_by: str) -> list[TxItem]:
        """-> SETTLED, exactly once. By the node (``settled_by="lnd"``): from OPEN, EXPIRED (the node may settle at
        the edge of expiry) or ACCEPTED (the node settled it before an internal payer's cancel reached it: that
        payment then fails, the node's word wins). By an internal payment (``settled_by`` = its id): only from the
        ACCEPTED state its own intent wrote."""
        I, K = self._m.Invoice, self._m.Marker
        model = I(f"INVOICE#{inv.payment_hash}", "INVOICE")

        def already(old: dict | None) -> errors.SatflowError:
            if old is None:
                return errors.InvoiceNotFound(f"invoice {inv.payment_hash} not found")
            return errors.InvoiceNotPayable(
                f"invoice {inv.payment_hash} is {old['status']['S']}", settled_by=old.get("settled_by", {}).get("S"))

        if settled_by == "lnd":
            condition = I.status.is_in(InvoiceStatus.OPEN.value, InvoiceStatus.EXPIRED.value,
                                       InvoiceStatus.ACCEPTED.value)
        else:
            condition = (I.status == InvoiceStatus.ACCEPTED.value) & (I.claimed_by == settled_by)
        return [
            update(model, [I.status.set(InvoiceStatus.SETTLED.value), I.amount_received_msat.set(amount_received_msat),
                           I.settled_at.set(settled_at), I.settled_by.set(settled_by)], condition, "invoice", already),
            delete(K(*self._open_invoice_key(inv.payment_hash, inv.expires_at_unix)), None, "invoice_index"),
        ]

    def claim_invoice_items(self, inv: Invoice, payment_id: str) -> list[TxItem]:
        """OPEN -> ACCEPTED by an internal payment (its intent, written before the node is asked to cancel): nobody
        else can claim it, and the expiry sweeper no longer sees it (its index entry goes)."""
        I, K = self._m.Invoice, self._m.Marker

        def taken(old: dict | None) -> errors.SatflowError:
            if old is None:
                return errors.InvoiceNotFound(f"invoice {inv.payment_hash} not found")
            status = old["status"]["S"]
            return errors.InvoiceNotPayable("the invoice is being paid" if status == InvoiceStatus.ACCEPTED.value
                                            else f"the invoice is {status.lower()}")

        return [
            update(I(f"INVOICE#{inv.payment_hash}", "INVOICE"),
                   [I.status.set(InvoiceStatus.ACCEPTED.value), I.claimed_by.set(payment_id)],
                   I.status == InvoiceStatus.OPEN.value, "invoice", taken),
            delete(K(*self._open_invoice_key(inv.payment_hash, inv.expires_at_unix)), None, "invoice_index"),
        ]

    def cancel_claimed_invoice_items(self, inv: Invoice, payment_id: str) -> list[TxItem]:
        """ACCEPTED (claimed by ``payment_id``) -> CANCELED: the internal payment failed after the node cancelled
        the invoice; the record follows the node."""
        I = self._m.Invoice
        return [update(I(f"INVOICE#{inv.payment_hash}", "INVOICE"), [I.status.set(InvoiceStatus.CANCELED.value)],
                       (I.status == InvoiceStatus.ACCEPTED.value) & (I.claimed_by == payment_id), "invoice",
                       lambda old: errors.Conflict(f"invoice {inv.payment_hash} is no longer claimed by {payment_id}"))]

    def run(self, items: list[TxItem]) -> None:
        """One TransactWriteItems of invoice/payment items that move no money (an internal payment's intent, its
        failure). A failed condition raises the first failing item's typed error."""
        run_or_raise(self._client, items)

    def add_settlement_items(self, inv: Invoice, *, previous_msat: int, total_msat: int) -> list[TxItem]:
        """A further node settlement of a SETTLED invoice (AMP): the received total grows from ``previous_msat``
        (the condition: two settlements processed at once cannot both build on the same total)."""
        I = self._m.Invoice

        def moved(old: dict | None) -> errors.SatflowError:
            return errors.TransientError(f"invoice {inv.payment_hash} received total changed meanwhile")

        return [update(I(f"INVOICE#{inv.payment_hash}", "INVOICE"), [I.amount_received_msat.set(total_msat)],
                       (I.status == InvoiceStatus.SETTLED.value) & (I.settled_by == "lnd")
                       & (I.amount_received_msat == previous_msat), "invoice", moved)]

    def close_invoice(self, inv: Invoice, status: InvoiceStatus) -> bool:
        """OPEN -> EXPIRED or CANCELED. False when it was no longer OPEN (e.g. settled meanwhile)."""
        I, K = self._m.Invoice, self._m.Marker
        items = [
            update(I(f"INVOICE#{inv.payment_hash}", "INVOICE"), [I.status.set(status.value)],
                   I.status == InvoiceStatus.OPEN.value, "invoice"),
            delete(K(*self._open_invoice_key(inv.payment_hash, inv.expires_at_unix)), None, "invoice_index"),
        ]
        return transact(self._client, items) is None

    def open_invoices_expired_before(self, unix_now: int, limit: int = 100) -> list[Invoice]:
        found: list[Invoice] = []
        for shard in range(INDEX_SHARDS):
            resp = self._client.query(
                TableName=self._m.table_name, KeyConditionExpression="pk = :pk AND sk < :sk",
                ExpressionAttributeValues={":pk": {"S": f"OPENINV#{shard}"}, ":sk": {"S": f"{unix_now:012d}#"}},
                Limit=limit)
            for raw in resp.get("Items", []):
                inv = self.get_invoice(raw["ref"]["S"])
                if inv is not None:
                    found.append(inv)
        return found

    @staticmethod
    def _open_invoice_key(payment_hash: str, expires_unix: int) -> tuple[str, str]:
        return f"OPENINV#{shard_for(payment_hash, INDEX_SHARDS)}", f"{expires_unix:012d}#{payment_hash}"

    def _invoice(self, raw: dict) -> Invoice:
        m = self._m.Invoice.from_raw_data(raw)
        return Invoice(
            payment_hash=m.payment_hash, account_id=m.account_id, amount_msat=int(m.amount_msat),
            payment_request=m.payment_request, status=InvoiceStatus(m.status), created_at=m.created_at,
            expires_at=m.expires_at, expires_at_unix=int(m.expires_at_unix), memo=m.memo,
            description_hash=m.description_hash, metadata=json.loads(m.metadata_json) if m.metadata_json else {},
            amount_received_msat=int(m.amount_received_msat or 0), settled_at=m.settled_at, settled_by=m.settled_by,
            claimed_by=m.claimed_by)

    # ------------------------------------------------------------------ the listener/poller cursor
    def invoice_cursor(self) -> tuple[int, int]:
        raw = self._get("LNDCURSOR", "INVOICES")
        if raw is None:
            return 0, 0
        m = self._m.Marker.from_raw_data(raw)
        return int(m.settle_index or 0), int(m.add_index or 0)

    def advance_invoice_cursor(self, settle_index: int, add_index: int) -> None:
        """Each index is monotonic on its own: a late or concurrent writer never moves either back."""
        K = self._m.Marker
        cursor = K("LNDCURSOR", "INVOICES")
        update_if(self._client, cursor, [K.settle_index.set(settle_index)],
                  K.settle_index.does_not_exist() | (K.settle_index < settle_index))
        update_if(self._client, cursor, [K.add_index.set(add_index)],
                  K.add_index.does_not_exist() | (K.add_index < add_index))

    # ------------------------------------------------------------------ payments
    def get_payment(self, payment_id: str) -> Payment | None:
        raw = self._get(f"PAYMENT#{payment_id}", "PAYMENT")
        return None if raw is None else self._payment(raw)

    def new_payment_items(self, p: Payment) -> list[TxItem]:
        """The payment record, the hash lock and (a PENDING payment: external, or an internal one's intent) the
        pending index the reconciler walks; for the reserve tx or the internal payment's intent."""
        P, K = self._m.Payment, self._m.Marker
        record = P(f"PAYMENT#{p.payment_id}", "PAYMENT", payment_id=p.payment_id, account_id=p.account_id,
                   payment_hash=p.payment_hash, payment_request=p.payment_request, destination=p.destination,
                   amount_msat=p.amount_msat, fee_reserve_msat=p.fee_reserve_msat, request_hash=p.request_hash,
                   invoice_expires_at=p.invoice_expires_at, internal=p.internal, status=p.status.value,
                   amountless=p.amountless,
                   created_at=p.created_at, updated_at=p.updated_at, fee_msat=p.fee_msat)
        lock = K(f"PAYHASH#{p.payment_hash}", "LOCK", ref=p.payment_id, status=p.status.value, at=p.created_at)

        def hash_taken(old: dict | None) -> errors.SatflowError:
            return errors.PaymentHashInFlight(
                "this invoice was already attempted; a payment hash is sent at most once (ask for a new invoice)",
                payment_hash=p.payment_hash)

        items = [
            put(record, P.pk.does_not_exist(), "payment"),
            # One payment per hash, ever — even after FAILED. LND's track answers per hash, so a second payment of
            # a hash could be decided by the first one's stale result (void while its own send still lands).
            put(lock, K.pk.does_not_exist(), "payment_lock", hash_taken),
        ]
        if p.status is PaymentStatus.PENDING:
            items.append(put(K(*self._pending_key(p.payment_id), at=p.created_at), None, "payment_pending"))
        return items

    def finish_payment_items(self, p: Payment, status: PaymentStatus, updated_at: str, *, fee_msat: int | None = None,
                             preimage: str | None = None, failure_reason: str | None = None,
                             from_statuses: tuple[PaymentStatus, ...] = (PaymentStatus.PENDING,)) -> list[TxItem]:
        """PENDING -> SUCCEEDED | FAILED exactly once, with the lock and the pending index, for the post/void tx.
        (A payment refused by the risk review is voided from IN_REVIEW: ``from_statuses``.)"""
        P, K = self._m.Payment, self._m.Marker
        actions = [P.status.set(status.value), P.updated_at.set(updated_at)]
        if fee_msat is not None:
            actions.append(P.fee_msat.set(fee_msat))
        if preimage is not None:
            actions.append(P.preimage.set(preimage))
        if failure_reason is not None:
            actions.append(P.failure_reason.set(failure_reason))
        return [
            update(P(f"PAYMENT#{p.payment_id}", "PAYMENT"), actions, P.status.is_in(*[s.value for s in from_statuses]),
                   "payment", lambda old: errors.PendingAlreadyResolved(f"payment {p.payment_id} already finished")),
            update(K(f"PAYHASH#{p.payment_hash}", "LOCK"), [K.status.set(status.value), K.at.set(updated_at)],
                   K.ref == p.payment_id, "payment_lock"),
            delete(K(*self._pending_key(p.payment_id)), None, "payment_pending"),
        ]

    def review_hold_items(self, p: Payment, updated_at: str) -> list[TxItem]:
        """PENDING -> IN_REVIEW (never claimed for sending), for the transaction that creates the review."""
        P = self._m.Payment
        return [update(P(f"PAYMENT#{p.payment_id}", "PAYMENT"),
                       [P.status.set(PaymentStatus.IN_REVIEW.value), P.updated_at.set(updated_at)],
                       (P.status == PaymentStatus.PENDING.value) & P.send_attempted_at.does_not_exist(), "payment",
                       lambda old: errors.Conflict(f"payment {p.payment_id} is no longer waiting to be sent"))]

    def review_release_items(self, p: Payment, updated_at: str) -> list[TxItem]:
        """IN_REVIEW -> PENDING once the review approved it: the workflow (or the reconciler) sends it then."""
        P = self._m.Payment
        return [update(P(f"PAYMENT#{p.payment_id}", "PAYMENT"),
                       [P.status.set(PaymentStatus.PENDING.value), P.updated_at.set(updated_at)],
                       P.status == PaymentStatus.IN_REVIEW.value, "payment",
                       lambda old: errors.Conflict(f"payment {p.payment_id} is no longer in review"))]

    def mark_send_attempted(self, payment_id: str, at: str) -> bool:
        """Claim the single send of a payment. False if it was already claimed (never send a hash twice)."""
        P = self._m.Payment
        # Only a PENDING payment: one held by a risk review (IN_REVIEW) is never claimed, whatever the timing.
        return update_if(self._client, P(f"PAYMENT#{payment_id}", "PAYMENT"), [P.send_attempted_at.set(at)],
                         P.pk.exists() & P.send_attempted_at.does_not_exist()
                         & (P.status == PaymentStatus.PENDING.value))

    def mark_send_rejected(self, payment_id: str) -> None:
        P = self._m.Payment
        update_if(self._client, P(f"PAYMENT#{payment_id}", "PAYMENT"), [P.send_rejected.set(True)], P.pk.exists())

    def pending_payment_ids(self, limit_per_shard: int = 100) -> list[str]:
        ids: list[str] = []
        for shard in range(INDEX_SHARDS):
            resp = self._client.query(TableName=self._m.table_name, KeyConditionExpression="pk = :pk",
                                      ExpressionAttributeValues={":pk": {"S": f"PAYPENDING#{shard}"}},
                                      Limit=limit_per_shard)
            ids.extend(raw["sk"]["S"] for raw in resp.get("Items", []))
        return ids

    @staticmethod
    def _pending_key(payment_id: str) -> tuple[str, str]:
        return f"PAYPENDING#{shard_for(payment_id, INDEX_SHARDS)}", payment_id

    def _payment(self, raw: dict) -> Payment:
        m = self._m.Payment.from_raw_data(raw)
        return Payment(
            payment_id=m.payment_id, account_id=m.account_id, payment_hash=m.payment_hash,
            payment_request=m.payment_request, destination=m.destination, amount_msat=int(m.amount_msat),
            fee_reserve_msat=int(m.fee_reserve_msat), request_hash=m.request_hash,
            invoice_expires_at=int(m.invoice_expires_at), internal=bool(m.internal), status=PaymentStatus(m.status),
            amountless=bool(m.amountless),
            created_at=m.created_at, updated_at=m.updated_at,
            fee_msat=None if m.fee_msat is None else int(m.fee_msat), preimage=m.preimage,
            failure_reason=m.failure_reason, send_attempted_at=m.send_attempted_at,
            send_rejected=bool(m.send_rejected))

    # ------------------------------------------------------------------ reads of a batch (batch.read_many)
    def payment_read(self, payment_id: str) -> ItemRead[Payment | None]:
        return ItemRead(self._client, self._m.table_name, f"PAYMENT#{payment_id}", "PAYMENT",
                        lambda raw: None if raw is None else self._payment(raw))

    def invoice_read(self, payment_hash: str) -> ItemRead[Invoice | None]:
        return ItemRead(self._client, self._m.table_name, f"INVOICE#{payment_hash}", "INVOICE",
                        lambda raw: None if raw is None else self._invoice(raw))

    # ------------------------------------------------------------------ helpers
    def _get(self, pk: str, sk: str) -> dict | None:
        return self._client.get_item(TableName=self._m.table_name, Key=key(pk, sk), ConsistentRead=True).get("Item")

