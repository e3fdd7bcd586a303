"""Double-entry, two-phase ledger rules (pure: no I/O).

Every transfer moves ``amount`` of one asset from a debit account to a credit account. Balances are kept per
ledger account as three integers:

* ``available``   - what the owner may spend now (credits posted - debits posted - debits reserved)
* ``pending_out`` - reserved by pending debits, not yet posted or voided
* ``pending_in``  - announced by pending credits, not yet posted or voided

Invariants (checked by :func:`check_invariants`): per asset, ``sum(available + pending_out) == 0`` and
``sum(pending_out) == sum(pending_in)``; no user account has a negative ``available``.

Two-phase, TigerBeetle style: a PENDING transfer reserves; exactly one POST_PENDING (for at most the pending
amount; the remainder returns to the debit account) or VOID_PENDING resolves it. Transfers are immutable; the id
is the idempotency key.
"""
from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

from .errors import PendingMismatch, SelfTransfer, ValidationError
from .money import validate_amount, validate_asset


class TransferKind(str, enum.Enum):
    POSTED = "POSTED"  # single-phase: moves funds at once
    PENDING = "PENDING"  # reserves funds
    POST_PENDING = "POST_PENDING"  # settles a pending transfer (fully or partially)
    VOID_PENDING = "VOID_PENDING"  # releases a pending transfer


class SystemAccount(str, enum.Enum):
    """System accounts stand opposite user liabilities. Sharded: every operation touches one shard only."""

    LND_NODE = "sys:lnd_node"  # asset: what our Lightning node holds
    ONCHAIN_HOT_WALLET = "sys:onchain_hot_wallet"  # asset: what our on-chain wallet holds
    ROUTING_FEE_EXPENSE = "sys:routing_fee_expense"
    ONCHAIN_FEE_EXPENSE = "sys:onchain_fee_expense"  # network fee a payout's reserve did not cover (we pay it)
    FEE_INCOME = "sys:fee_income"
    OWNER_EQUITY = "sys:owner_equity"
    # Money that moved without a business event we can attribute (a deposit to a closed account, a node payment or
    # a spend of our coins satflow did not make): booked here at once, never silently, until an admin assigns it.
    SUSPENSE = "sys:suspense"
    # Losses an operator writes off (a suspense item assigned to "expense", e.g. a theft that will not be recovered).
    LOSS_EXPENSE = "sys:loss_expense"


def is_system_owner(owner: str) -> bool:
    return owner.startswith("sys:")


@dataclass(frozen=True)
class LedgerAccount:
    owner: str  # a user account id (acc_...) or a SystemAccount value
    asset: str

    @property
    def is_system(self) -> bool:
        return is_system_owner(self.owner)

    def __str__(self) -> str:
        return f"{self.owner}/{self.asset}"


def shard_for(transfer_id: str, shards: int) -> int:
    """Deterministic shard of a system account for a transfer: replays and resolutions land on the same item."""
    digest = hashlib.sha256(transfer_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") % shards


@dataclass(frozen=True)
class Transfer:
    id: str
    kind: TransferKind
    debit: LedgerAccount
    credit: LedgerAccount
    amount: int  # POST_PENDING: the amount posted; VOID_PENDING: the pending amount released
    template: str  # the business event that produced it (internal_transfer, adjustment_credit, ...)
    created_at: str
    pending_id: str | None = None
    pending_amount: int | None = None  # POST/VOID: the amount the pending reserved
    memo: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    debit_shard: int | None = None  # set for system accounts only
    credit_shard: int | None = None
    # An operator's action (admin adjustment): it may debit a frozen account, e.g. to claw funds back.
    operator: bool = False
    # May take a user account below zero (a reorg reversal of funds already spent). Never implicit: the caller
    # freezes the account in the same transaction.
    overdraft: bool = False

    @property
    def asset(self) -> str:
        return self.debit.asset

    def identity(self) -> tuple:
        """Everything a replay must repeat. ``created_at`` is excluded: a retry happens later."""
        return (
            self.id, self.kind, self.debit, self.credit, self.amount, self.template, self.pending_id,
            self.pending_amount, self.memo, tuple(sorted(self.metadata.items())), self.debit_shard,
            self.credit_shard, self.operator, self.overdraft,
        )

    def same_as(self, other: "Transfer") -> bool:
        return self.identity() == other.identity()


@dataclass(frozen=True)
class BalanceDelta:
    account: LedgerAccount
    shard: int | None
    available: int = 0
    pending_out: int = 0
    pending_in: int = 0
    # user accounts: the update is conditional on available >= this (0 = no funds condition)
    requires_available: int = 0


def _validate_pair(debit: LedgerAccount, credit: LedgerAccount) -> None:
    validate_asset(debit.asset)
    if debit.asset != credit.asset:
        raise ValidationError("a transfer moves one asset: debit and credit assets differ")
    if debit.owner == credit.owner:
        raise SelfTransfer("debit and credit accounts are the same")


def new_transfer(
    *,
    transfer_id: str,
    kind: TransferKind,
    debit: LedgerAccount,
    credit: LedgerAccount,
    amount: int,
    template: str,
    created_at: str,
    shards: int,
    memo: str | None = None,
    metadata: Mapping[str, str] | None = None,
    operator: bool = False,
    overdraft: bool = False,
) -> Transfer:
    """A POSTED or PENDING transfer, validated, with shards chosen for its system accounts."""
    if kind not in (TransferKind.POSTED, TransferKind.PENDING):
        raise ValueError("use post_pending()/void_pending() to resolve a pending transfer")
    validate_transfer_id(transfer_id)
    _validate_pair(debit, credit)
    validate_amount(amount, field="amount")
    return Transfer(
        id=transfer_id, kind=kind, debit=debit, credit=credit, amount=amount, template=template,
        created_at=created_at, memo=memo, metadata=validate_metadata(metadata),
        debit_shard=shard_for(transfer_id, shards) if debit.is_system else None,
        credit_shard=shard_for(transfer_id, shards) if credit.is_system else None, operator=operator,
        overdraft=overdraft,
    )


def post_pending(
    pending: Transfer, *, transfer_id: str, created_at: str, amount: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Transfer:
    """Settle ``pending`` for ``amount`` (default: all of it). The remainder returns to the debit account."""
    _require_pending(pending)
    validate_transfer_id(transfer_id)
    posted = pending.amount if amount is None else amount
    if isinstance(posted, bool) or not isinstance(posted, int) or not 0 < posted <= pending.amount:
        raise PendingMismatch(
            f"a post must be a positive integer no larger than the pending amount {pending.amount}",
            pending_id=pending.id,
        )
    return _resolution(pending, TransferKind.POST_PENDING, transfer_id, posted, created_at, metadata)


def void_pending(
    pending: Transfer, *, transfer_id: str, created_at: str, metadata: Mapping[str, str] | None = None
) -> Transfer:
    _require_pending(pending)
    validate_transfer_id(transfer_id)
    return _resolution(pending, TransferKind.VOID_PENDING, transfer_id, pending.amount, created_at, metadata)


def _require_pending(pending: Transfer) -> None:
    if pending.kind is not TransferKind.PENDING:
        raise PendingMismatch(f"transfer {pending.id} is not pending", pending_id=pending.id)


def _resolution(pending: Transfer, kind: TransferKind, transfer_id: str, amount: int, created_at: str,
                metadata: Mapping[str, str] | None) -> Transfer:
    if transfer_id == pending.id:
        raise ValidationError("a post or void needs an id of its own, not the pending transfer's", field="transfer_id")
    # Same accounts and the same shards as the pending: the reservation is released where it was made.
    return replace(
        pending, id=transfer_id, kind=kind, amount=amount, created_at=created_at, pending_id=pending.id,
        pending_amount=pending.amount, metadata=validate_metadata(metadata),
    )


def validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """String -> string only: what DynamoDB stores must read back identical, or a replay looks like a conflict."""
    out = dict(metadata or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in out.items()):
        raise ValueError("transfer metadata maps strings to strings")
    return out


def validate_transfer_id(transfer_id: object) -> str:
    if not isinstance(transfer_id, str) or not 1 <= len(transfer_id) <= 128 or "#" in transfer_id:
        raise ValidationError("a transfer id is 1-128 characters without '#'", field="transfer_id")
    return transfer_id


def effects(transfer: Transfer) -> tuple[BalanceDelta, BalanceDelta]:
    """The balance changes of a transfer: (debit side, credit side). Each side nets to the other (double entry)."""
    a = transfer.amount
    d, c = transfer.debit, transfer.credit
    ds, cs = transfer.debit_shard, transfer.credit_shard
    user_floor = 0 if (d.is_system or transfer.overdraft) else a
    if transfer.kind is TransferKind.POSTED:
        return (BalanceDelta(d, ds, available=-a, requires_available=user_floor),
                BalanceDelta(c, cs, available=a))
    if transfer.kind is TransferKind.PENDING:
        return (BalanceDelta(d, ds, available=-a, pending_out=a, requires_available=user_floor),
                BalanceDelta(c, cs, pending_in=a))
    p = transfer.pending_amount
    assert p is not None, "resolutions carry the pending amount"
    if transfer.kind is TransferKind.POST_PENDING:
        return (BalanceDelta(d, ds, available=p - a, pending_out=-p),
                BalanceDelta(c, cs, available=a, pending_in=-p))
    return (BalanceDelta(d, ds, available=p, pending_out=-p),
            BalanceDelta(c, cs, pending_in=-p))


@dataclass(frozen=True)
class Balance:
    account: LedgerAccount
    available: int = 0
    pending_out: int = 0
    pending_in: int = 0


@dataclass(frozen=True)
class InvariantReport:
    ok: bool
    violations: tuple[str, ...]
    totals: Mapping[str, int]  # per asset: sum(available + pending_out)


def check_invariants(balances: Iterable[Balance]) -> InvariantReport:
    """Sum to zero per asset; pendings match; no user account below zero. ``balances`` may hold shards."""
    totals: dict[str, int] = {}
    pend_out: dict[str, int] = {}
    pend_in: dict[str, int] = {}
    violations: list[str] = []
    for b in balances:
        asset = b.account.asset
        totals[asset] = totals.get(asset, 0) + b.available + b.pending_out
        pend_out[asset] = pend_out.get(asset, 0) + b.pending_out
        pend_in[asset] = pend_in.get(asset, 0) + b.pending_in
        if min(b.pending_out, b.pending_in) < 0:
            violations.append(f"{b.account}: negative pending ({b.pending_out}, {b.pending_in})")
        if not b.account.is_system and b.available < 0:
            violations.append(f"{b.account}: user available below zero ({b.available})")
    for asset, total in totals.items():
        if total != 0:
            violations.append(f"{asset}: balances sum to {total}, not zero")
        if pend_out[asset] != pend_in[asset]:
            violations.append(f"{asset}: pending out {pend_out[asset]} != pending in {pend_in[asset]}")
    return InvariantReport(ok=not violations, violations=tuple(violations), totals=totals)
