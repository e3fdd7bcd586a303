"""The ledger as every use case sees it: each money mutation carries its audit entry (and its outbox events) in
the SAME TransactWriteItems as the balance change, and reads nothing first.

Wrapping the ledger port, instead of adding records at each call site, is what makes "every money mutation is
audited" true by construction: there is no other write path to balances (design rule: the ledger adapter is the only
writer of BAL# items), so a use case cannot forget its record and a new template is audited the day it lands.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from satflow.domain.audit import ADMIN_ACTOR, SYSTEM_ACTOR, AuditEntry, backoff_s, transfer_entry
from satflow.domain.errors import TransientError
from satflow.domain.ledger import Transfer, TransferKind, shard_for

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
    """A LedgerPort: ``execute`` adds the transfer's pending audit entry (and outbox items, when an outbox is
    configured) to the ledger's own transaction; every other call goes to the wrapped ledger.

    The entry is written WITHOUT a read (no chain head on the write path): keyed by the transfer id in its chain's
    unsealed index, sealed into the chain afterwards by the sealer (docs/audit.md). So a ledger operation as wired
    is exactly one TransactWriteItems, and concurrent operations share no audit item.

    Chain choice: records of ledger transfers are spread over the audit chains by transfer id, not by account, so a
    busy account (an exchange's omnibus account) never concentrates on one chain; each chain is still totally
    ordered and verified on its own, and an account's records are found by subject id."""

    def __init__(self, inner: Any, audit: Any, outbox_items: Callable[[Transfer], Sequence[Any]] | None = None,
                 attempts: int = 8, sleep: Callable[[float], None] = time.sleep) -> None:
        if audit is None:  # fail closed: no money moves without its record
            raise ValueError("a recorded ledger needs an audit store")
        self._inner = inner
        self.audit = audit
        self._outbox_items = outbox_items
        self._attempts = attempts
        self._sleep = sleep
        self.retries = 0  # transient cancellations retried (throttling, TransactionConflict): for benchmarks

    @property
    def inner(self) -> Any:
        return self._inner

    def execute(self, transfer: Transfer, extra: Sequence[Any] = ()) -> Any:
        outbox = list(self._outbox_items(transfer)) if self._outbox_items is not None else []
        entry = audit_entry_for(transfer)
        shard = shard_for(transfer.id, self.audit.shards)
        # Retrying is safe: the transfer id is the ledger's idempotency key, so a retry after an unknown outcome
        # replays (the whole transaction cancels, its entry included). Each attempt stamps its own written_at.
        for attempt in range(1, self._attempts + 1):
            _pending, items = self.audit.prepare(entry, shard, entry_id=transfer.id)
            try:
                return self._inner.execute(transfer, list(extra) + outbox + items)
            except TransientError:
                if attempt >= self._attempts:
                    raise
                self.retries += 1
                self._sleep(backoff_s(attempt))
        raise AssertionError("unreachable")  # attempts >= 1

    def __getattr__(self, name: str) -> Any:  # reads (balances, history, get_transfer, ...) are not recorded
        return getattr(self._inner, name)
