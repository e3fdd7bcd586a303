"""Random ledger operations for property tests, and a pure reference model that applies them."""
from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from satflow.domain import errors
from satflow.domain.ledger import (
    LedgerAccount, SystemAccount, Transfer, TransferKind, effects, new_transfer, post_pending, void_pending,
)

NOW = "2026-11-21T12:00:00.000Z"
USERS = ["acc_u0", "acc_u1", "acc_u2"]
SYSTEM = [SystemAccount.LND_NODE.value, SystemAccount.OWNER_EQUITY.value]
OWNERS = USERS + SYSTEM

# An op: ("new", kind, debit, credit, amount) | ("post", pending_index, fraction_permille) | ("void", pending_index)
new_op = st.tuples(st.just("new"), st.sampled_from([TransferKind.POSTED, TransferKind.PENDING]),
                   st.sampled_from(OWNERS), st.sampled_from(OWNERS), st.integers(1, 5_000))
post_op = st.tuples(st.just("post"), st.integers(0, 30), st.integers(1, 1000))
void_op = st.tuples(st.just("void"), st.integers(0, 30))
ops = st.lists(st.one_of(new_op, new_op, post_op, void_op), min_size=1, max_size=25)


@dataclass
class Model:
    """What the ledger must do, computed from the pure domain rules."""

    shards: int
    balances: dict[str, list[int]] = field(default_factory=dict)  # owner -> [available, pending_out, pending_in]
    pendings: list[Transfer] = field(default_factory=list)
    resolved: set[str] = field(default_factory=set)
    counter: int = 0

    def build(self, op) -> Transfer | None:
        """The transfer an op asks for, or None when the domain itself refuses it (e.g. self transfer)."""
        self.counter += 1
        tid = f"t{self.counter}"
        try:
            if op[0] == "new":
                _, kind, debit, credit, amount = op
                return new_transfer(transfer_id=tid, kind=kind, debit=LedgerAccount(debit, "BTC"),
                                    credit=LedgerAccount(credit, "BTC"), amount=amount, template="prop",
                                    created_at=NOW, shards=self.shards)
            if not self.pendings:
                return None
            p = self.pendings[op[1] % len(self.pendings)]
            if op[0] == "post":
                amount = max(1, p.amount * op[2] // 1000)
                return post_pending(p, transfer_id=tid, created_at=NOW, amount=amount)
            return void_pending(p, transfer_id=tid, created_at=NOW)
        except errors.SelfTransfer:
            return None

    def expect(self, t: Transfer) -> type[Exception] | None:
        """The error the ledger must raise for ``t`` in the current state, or None if it must apply."""
        if t.pending_id is not None and t.pending_id in self.resolved:
            return errors.PendingAlreadyResolved
        d, _ = effects(t)
        if d.requires_available and self.balances.get(t.debit.owner, [0, 0, 0])[0] < d.requires_available:
            return errors.InsufficientFunds
        return None

    def apply(self, t: Transfer) -> None:
        for delta in effects(t):
            b = self.balances.setdefault(delta.account.owner, [0, 0, 0])
            b[0] += delta.available
            b[1] += delta.pending_out
            b[2] += delta.pending_in
        if t.kind is TransferKind.PENDING:
            self.pendings.append(t)
        if t.pending_id:
            self.resolved.add(t.pending_id)
