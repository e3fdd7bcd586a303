"""The ledger as every use case sees it: each money mutation carries its audit record (and its outbox events) in
the SAME TransactWriteItems as the balance change.

Wrapping the ledger port, instead of adding records at each call site, is what makes "every money mutation is
audited" true by construction: there is no other write path to balances (design rule: the ledger adapter is the only
writer of BAL# items), so a use case cannot forget its record and a new template is audited the day it lands.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from satflow.domain.audit import ADMIN_ACTOR, SYSTEM_ACTOR, AuditEntry, transfer_entry
from satflow.domain.ledger import Transfer, TransferKind, shard_for

from .audit import append_in_transaction

# Templates whose new (POSTED or PENDING) transfer is started by the debited user's own request.
_USER_INITIATED = frozenset({"internal_transfer", "payment_reserved", "payout_reserved", "internal_invoice_payment"})


def audit_entry_for(t: Transfer) -> AuditEntry:
    """``ledger.<template>.<kind>`` by the account that asked for it, the admin, or the system (workflows,
    monitors, inbound credits)."""
    if t.template.startswith("adjustment_") or t.template in ("suspense_assigned", "capital_in", "capital_out"):
        actor = ADMIN_ACTOR
    elif (t.template in _USER_INITIATED and t.kind in (TransferKind.POSTED, TransferKind.PENDING)
          and not t.debit.is_system):
        actor = t.debit.owner
    else:
        actor = SYSTEM_ACTOR
    return transfer_entry(t, actor=actor, action=f"ledger.{t.template}.{t.kind.value.lower()}")


class RecordedLedger:
    """A LedgerPort: ``execute`` appends the transfer's audit record (and outbox items, when an outbox is
    configured) to the ledger's own transaction; every other call goes to the wrapped ledger.

    Chain choice: records of ledger transfers are spread over the audit chains by transfer id, not by account, so a
    busy account (an exchange's omnibus account) never serialises its writes on one chain head; each chain is still
    totally ordered and verified on its own, and an account's records are found by subject id."""

    def __init__(self, inner: Any, audit: Any, outbox_items: Callable[[Transfer], Sequence[Any]] | None = None,
                 attempts: int = 8) -> None:
        if audit is None:  # fail closed: no money moves without its record
            raise ValueError("a recorded ledger needs an audit store")
        self._inner = inner
        self.audit = audit
        self._outbox_items = outbox_items
        self._attempts = attempts

    @property
    def inner(self) -> Any:
        return self._inner

    def execute(self, transfer: Transfer, extra: Sequence[Any] = ()) -> Any:
        outbox = list(self._outbox_items(transfer)) if self._outbox_items is not None else []
        # Retrying is safe: the transfer id is the ledger's idempotency key, so a retry after an unknown outcome
        # replays (the whole transaction cancels and appends no second record).
        return append_in_transaction(
            self.audit, audit_entry_for(transfer),
            lambda audit_items: self._inner.execute(transfer, list(extra) + outbox + list(audit_items)),
            self._attempts, shard=shard_for(transfer.id, self.audit.shards))

    def __getattr__(self, name: str) -> Any:  # reads (balances, history, get_transfer, ...) are not recorded
        return getattr(self._inner, name)
