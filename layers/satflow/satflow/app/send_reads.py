"""What one send is decided on, read once: the per-request context of the money routes.

A send (internal transfer, Lightning payment reserve, payout reserve) needs, before its single ledger transaction:
the sender's account (tier, age), its limit window (admission) with its recent sends (risk: amount against history),
its last credit (risk: fresh funds), the stored assessment of this send (a replay keeps its decision), whether the
destination was used before (risk), and the route's own items (the payment or payout under its idempotency key,
the invoice of a payment hash). :func:`load` reads them all in ONE round trip (``svc.read_many``: a consistent
BatchGetItem) and the resulting :class:`SendReads` is passed down the request: risk scoring and limit admission take
it instead of reading the same items again.

It is a value of one request, never cached across requests (a Lambda container serves many; the next request must
see the writes of this one). The only reads it can cause later are the legacy fallbacks below, memoised on it.

Items written before the recent sends and the last credit were kept on the limit and balance items (``sends``,
``last_credit_at``) have neither: for those accounts the ledger history is read once (the old way) and the next
admission stores the derived sends, so the fallback disappears account by account.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from satflow.domain.money import BTC

from .ports import Services

# Ledger templates of the sends admission counts (risk: "past sends").
SEND_TEMPLATES = frozenset({"internal_transfer", "internal_invoice_payment", "payment_reserved", "payout_reserved"})
HISTORY_WINDOW = 50  # ledger entries read by the legacy fallback (the window risk used to read on every send)


def read_many(svc: Services, reads: Sequence[Any]) -> list[Any]:
    """One round trip where the composition root wired ``svc.read_many``; otherwise one read at a time."""
    batch = getattr(svc, "read_many", None)
    if batch is not None:
        return list(batch(reads))
    return [r.get() for r in reads]


@dataclass
class SendReads:
    account_id: str
    account: Any  # satflow.domain.accounts.Account | None
    limits: Any  # adapters' LimitRecord: window, version, sends (None: legacy item)
    last_credit: Any  # LastCredit(tracked, at) | None when not read (no risk scoring on this route)
    subject_id: str | None = None
    assessment: Any = None  # the stored assessment of subject_id (a replay), or None
    destination: tuple[Any, str] | None = None  # (DestinationKind, destination) read for risk
    destination_seen: bool | None = None
    extra: tuple = ()  # the route's own reads, in the order asked
    _history: Any = field(default=None, repr=False)  # legacy fallback, read at most once per request

    def history(self, svc: Services) -> list[Any]:
        """The last ledger entries of the account (legacy fallback only): one Query, memoised."""
        if self._history is None:
            self._history = list(svc.ledger.history(self.account_id, BTC, HISTORY_WINDOW).items)
        return self._history

    def recent_sends(self, svc: Services) -> tuple[tuple[str, int], ...]:
        """The account's recent sends (id, msat), oldest first: from the limit item, or derived from the ledger
        history when the item predates them."""
        if self.limits.sends is not None:
            return tuple(self.limits.sends)
        if self.limits.version == 0:
            return ()  # the account never sent
        return sends_from_history(self.history(svc))


def sends_from_history(entries: Sequence[Any]) -> tuple[tuple[str, int], ...]:
    """Sends among ledger history entries (newest first, as the ledger returns them) -> oldest first."""
    from satflow.domain.ledger import TransferKind

    found = [(e.transfer_id, int(e.amount)) for e in entries
             if e.direction == "out" and e.kind in (TransferKind.POSTED, TransferKind.PENDING)
             and e.template in SEND_TEMPLATES]
    return tuple(reversed(found))


def load(svc: Services, account_id: str, *, subject_id: str | None = None, destination: tuple[Any, str] | None = None,
         scored: bool = True, extra: Sequence[Any] = ()) -> SendReads:
    """Everything a send of ``account_id`` is decided on, in one round trip. ``scored`` False: no risk inputs
    (a route whose risk runs later, like a Lightning payment's workflow). ``extra``: the route's own reads
    (``ItemRead``s of its stores), returned parsed in ``SendReads.extra``."""
    reads: list[Any] = [svc.accounts.account_read(account_id), svc.limits.record_read(account_id)]
    if scored:
        reads.append(svc.ledger.last_credit_read(account_id, BTC))
        if subject_id is not None:
            reads.append(svc.risk.assessment_read(subject_id))
        if destination is not None:
            reads.append(svc.risk.destination_read(account_id, destination[0], destination[1]))
    reads.extend(extra)
    results = read_many(svc, reads)
    account, limits = results[0], results[1]
    at = 2
    last_credit = assessment = destination_seen = None
    if scored:
        last_credit = results[at]
        at += 1
        if subject_id is not None:
            assessment = results[at]
            at += 1
        if destination is not None:
            destination_seen = results[at]
            at += 1
    return SendReads(account_id=account_id, account=account, limits=limits, last_credit=last_credit,
                     subject_id=subject_id, assessment=assessment, destination=destination,
                     destination_seen=destination_seen, extra=tuple(results[at:]))


__all__ = ["SendReads", "load", "read_many", "sends_from_history", "SEND_TEMPLATES", "HISTORY_WINDOW"]
