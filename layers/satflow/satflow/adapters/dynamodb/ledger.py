"""The ledger on DynamoDB: exactly one TransactWriteItems per operation, no reads on the write path.

Items of one operation (tags in brackets):
  [transfer]         Put TRANSFER#id, attribute_not_exists(pk)   -> the id is the durable idempotency key
  [pending]          Update TRANSFER#pending_id (post/void only): still unresolved and as the caller saw it
  [debit_owner]      ConditionCheck ACCOUNT#owner: active           (user debits of new transfers only)
  [credit_owner]     ConditionCheck ACCOUNT#owner: exists, not closed (user credits of new transfers only)
  [debit_balance]    Update BAL#..: deltas, available >= amount for user debits
  [credit_balance]   Update BAL#..: deltas (+ last_credit_at on a user's posted credit: a risk input read with the
                     balance item instead of a history query)
  [debit_history] [credit_history]   Put HIST#.. entries
  + the caller's own items (limit counters, outbox, audit records), tagged by the caller.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from satflow.domain import errors
from satflow.domain.ledger import (
    Balance,
    BalanceDelta,
    InvariantReport,
    LedgerAccount,
    Transfer,
    TransferKind,
    check_invariants,
    effects,
    is_system_owner,
)

from .batch import ItemRead
from .models import Models, account_pk, balance_key, history_pk, key
from .paging import all_items, decode_cursor, encode_cursor
from .transaction import Cancellation, TxItem, check, put, transact, update

ACTIVE, FROZEN, CLOSED = "active", "frozen", "closed"


@dataclass(frozen=True)
class LedgerResult:
    transfer: Transfer  # the stored transfer: on a replay, the original (with its original created_at)
    replayed: bool


@dataclass(frozen=True)
class HistoryEntry:
    transfer_id: str
    kind: TransferKind
    template: str
    direction: str  # "in" | "out"
    amount: int
    pending_amount: int | None
    pending_id: str | None
    counterparty: str
    asset: str
    memo: str | None
    created_at: str


@dataclass(frozen=True)
class LastCredit:
    """When a user account was last credited (a posted credit), as its balance item records it. ``tracked`` False:
    the balance item predates the record (it was not credited since), so the ledger history has to say."""

    tracked: bool
    at: str | None


@dataclass(frozen=True)
class HistoryPage:
    items: list[HistoryEntry]
    next_cursor: str | None


class DynamoLedger:
    def __init__(self, client: Any, models: Models, system_shards: int) -> None:
        self._client = client  # a botocore DynamoDB client: every call of this adapter goes through it
        self._m = models
        self._shards = system_shards

    # ------------------------------------------------------------------ write path (one round trip)
    def execute(self, transfer: Transfer, extra: Sequence[TxItem] = ()) -> LedgerResult:
        items = self._items(transfer) + list(extra)
        cancellation = transact(self._client, items)
        if cancellation is None:
            return LedgerResult(transfer, replayed=False)
        return self._classify(transfer, cancellation)

    def _items(self, t: Transfer) -> list[TxItem]:
        M = self._m
        items = [put(self._transfer_model(t), M.Transfer.pk.does_not_exist(), "transfer")]
        if t.kind in (TransferKind.POST_PENDING, TransferKind.VOID_PENDING):
            items.append(self._resolve_pending_item(t))
        else:
            if not t.debit.is_system:
                # Frozen accounts cannot send; an operator may still debit them (never a closed or missing one).
                may_debit = M.Account.status.is_in(ACTIVE, FROZEN) if t.operator else M.Account.status == ACTIVE
                if t.overdraft:
                    # A transfer allowed to overdraw freezes the account in the same transaction: a negative
                    # balance must never be spendable (the item takes one operation, so the check rides along).
                    owner = M.Account(account_pk(t.debit.owner), "ACCOUNT")
                    items.append(update(owner, [M.Account.status.set(FROZEN), M.Account.updated_at.set(t.created_at)],
                                        may_debit, "debit_owner"))
                else:
                    items.append(check(M.Account, account_pk(t.debit.owner), "ACCOUNT", may_debit, "debit_owner"))
            if not t.credit.is_system:
                items.append(check(M.Account, account_pk(t.credit.owner), "ACCOUNT",
                                   M.Account.pk.exists() & (M.Account.status != CLOSED), "credit_owner"))
        debit_delta, credit_delta = effects(t)
        items.append(self._balance_item(debit_delta, "debit_balance"))
        credited_at = t.created_at if (not t.credit.is_system
                                       and t.kind in (TransferKind.POSTED, TransferKind.POST_PENDING)) else None
        items.append(self._balance_item(credit_delta, "credit_balance", credited_at))
        items.append(self._history_item(t, "out"))
        items.append(self._history_item(t, "in"))
        return items

    def _transfer_model(self, t: Transfer) -> Any:
        return self._m.Transfer(
            f"TRANSFER#{t.id}", "TRANSFER", transfer_id=t.id, kind=t.kind.value, debit_owner=t.debit.owner,
            credit_owner=t.credit.owner, asset=t.asset, amount=t.amount, template=t.template,
            created_at=t.created_at, pending_id=t.pending_id, pending_amount=t.pending_amount, memo=t.memo,
            metadata=dict(t.metadata) or None, debit_shard=t.debit_shard, credit_shard=t.credit_shard,
            operator=t.operator or None, overdraft=t.overdraft or None,
        )

    def _resolve_pending_item(self, t: Transfer) -> TxItem:
        T = self._m.Transfer
        pending = T(f"TRANSFER#{t.pending_id}", "TRANSFER")
        condition = (
            T.pk.exists() & (T.kind == TransferKind.PENDING.value) & T.resolved_by.does_not_exist()
            & (T.amount == t.pending_amount) & (T.debit_owner == t.debit.owner)
            & (T.credit_owner == t.credit.owner) & (T.asset == t.asset) & (T.template == t.template)
        )
        # The reservation must be released on the very shard items it was made on.
        for attr, shard in ((T.debit_shard, t.debit_shard), (T.credit_shard, t.credit_shard)):
            condition &= attr.does_not_exist() if shard is None else (attr == shard)
        return update(pending, [T.resolved_by.set(t.id), T.resolution.set(t.kind.value)], condition, "pending")

    def _balance_item(self, d: BalanceDelta, tag: str, credited_at: str | None = None) -> TxItem:
        B = self._m.Balance
        pk, sk = balance_key(d.account.owner, d.account.asset, d.shard)
        actions = [
            B.owner.set(d.account.owner), B.asset.set(d.account.asset),
            B.available.set((B.available | 0) + d.available),
            B.pending_out.set((B.pending_out | 0) + d.pending_out),
            B.pending_in.set((B.pending_in | 0) + d.pending_in),
        ]
        if d.shard is not None:
            actions.append(B.shard.set(d.shard))
        if credited_at is not None:
            actions.append(B.last_credit_at.set(credited_at))
        # DynamoDB conditions cannot do arithmetic: the floor is checked against the value before the SET.
        condition = (B.available >= d.requires_available) if d.requires_available else None
        return update(B(pk, sk), actions, condition, tag)

    def _history_item(self, t: Transfer, direction: str) -> TxItem:
        H = self._m.History
        own, other = (t.debit, t.credit) if direction == "out" else (t.credit, t.debit)
        shard = t.debit_shard if direction == "out" else t.credit_shard
        entry = H(
            history_pk(own.owner, own.asset, shard), f"{t.created_at}#{t.id}", transfer_id=t.id, kind=t.kind.value,
            template=t.template, direction=direction, amount=t.amount, pending_amount=t.pending_amount,
            pending_id=t.pending_id, counterparty=other.owner, asset=t.asset, memo=t.memo, created_at=t.created_at,
        )
        return put(entry, H.pk.does_not_exist(), "debit_history" if direction == "out" else "credit_history")

    def _classify(self, t: Transfer, c: Cancellation) -> LedgerResult:
        # Precedence matters: an existing transfer with this id decides everything (idempotent replay).
        if c.condition_failed("transfer"):
            existing = self._transfer_from_raw(c.old_image("transfer"))
            if existing is not None and existing.same_as(t):
                return LedgerResult(existing, replayed=True)
            raise errors.TransferExistsWithDifferentFields(
                f"transfer {t.id} already exists with different fields", transfer_id=t.id)
        transient = c.first_transient()
        if transient:
            raise errors.TransientError(f"DynamoDB cancelled the transaction ({transient}); retry it")
        if c.condition_failed("pending"):
            old = c.old_image("pending")
            if old is None:
                raise errors.TransferNotFound(f"pending transfer {t.pending_id} not found", transfer_id=t.pending_id)
            if "resolved_by" in old:
                raise errors.PendingAlreadyResolved(
                    f"pending transfer {t.pending_id} was already resolved by {old['resolved_by']['S']}",
                    transfer_id=t.pending_id)
            raise errors.PendingMismatch(f"transfer {t.pending_id} is not the pending transfer described",
                                         transfer_id=t.pending_id)
        if c.condition_failed("debit_owner"):
            if c.old_image("debit_owner") is None:
                raise errors.AccountNotFound(f"account {t.debit.owner} not found", account_id=t.debit.owner)
            raise errors.AccountFrozen(f"account {t.debit.owner} is not active and cannot send",
                                       account_id=t.debit.owner)
        if c.condition_failed("credit_owner"):
            if c.old_image("credit_owner") is None:
                raise errors.AccountNotFound(f"account {t.credit.owner} not found", account_id=t.credit.owner)
            raise errors.AccountClosed(f"account {t.credit.owner} is closed", account_id=t.credit.owner)
        if c.condition_failed("debit_balance"):
            raise errors.InsufficientFunds("insufficient funds", account_id=t.debit.owner)
        for item in c.items:
            if c.condition_failed(item.tag) and item.on_condition_failed is not None:
                raise item.on_condition_failed(c.old_image(item.tag))
        raise RuntimeError(f"transaction for {t.id} cancelled unexpectedly: {c.failures}")

    # ------------------------------------------------------------------ reads
    def get_transfer(self, transfer_id: str) -> Transfer | None:
        raw = self._client.get_item(TableName=self._m.table_name, Key=key(f"TRANSFER#{transfer_id}", "TRANSFER"),
                                    ConsistentRead=True).get("Item")
        return self._transfer_from_raw(raw)

    def pending_resolution(self, transfer_id: str) -> str | None:
        """The id of the post/void that resolved a pending transfer, or None while it is unresolved."""
        raw = self._client.get_item(TableName=self._m.table_name, Key=key(f"TRANSFER#{transfer_id}", "TRANSFER"),
                                    ConsistentRead=True).get("Item") or {}
        return raw.get("resolved_by", {}).get("S")

    def _transfer_from_raw(self, raw: dict | None) -> Transfer | None:
        if not raw:
            return None
        m = self._m.Transfer.from_raw_data(raw)
        metadata = m.metadata.as_dict() if m.metadata is not None else {}
        return Transfer(
            id=m.transfer_id, kind=TransferKind(m.kind), debit=LedgerAccount(m.debit_owner, m.asset),
            credit=LedgerAccount(m.credit_owner, m.asset), amount=int(m.amount), template=m.template,
            created_at=m.created_at, pending_id=m.pending_id,
            pending_amount=None if m.pending_amount is None else int(m.pending_amount), memo=m.memo,
            metadata={str(k): str(v) for k, v in metadata.items()},
            debit_shard=None if m.debit_shard is None else int(m.debit_shard),
            credit_shard=None if m.credit_shard is None else int(m.credit_shard), operator=bool(m.operator),
            overdraft=bool(m.overdraft),
        )

    def balances(self, owner: str) -> list[Balance]:
        """Balances of one owner per asset (system shards summed)."""
        totals: dict[str, list[int]] = {}
        for raw in self._query_all(f"BAL#{owner}"):
            b = self._m.Balance.from_raw_data(raw)
            t = totals.setdefault(b.asset, [0, 0, 0])
            t[0] += int(b.available or 0)
            t[1] += int(b.pending_out or 0)
            t[2] += int(b.pending_in or 0)
        return [Balance(LedgerAccount(owner, asset), *v) for asset, v in sorted(totals.items())]

    def last_credit_read(self, owner: str, asset: str) -> ItemRead[LastCredit]:
        """A user account's last posted credit, as one read of a batch (its balance item)."""
        pk, sk = balance_key(owner, asset, None)

        def parse(raw: dict | None) -> LastCredit:
            if raw is None:
                return LastCredit(True, None)  # never moved: never credited
            at = raw.get("last_credit_at", {}).get("S")
            return LastCredit(at is not None, at)

        return ItemRead(self._client, self._m.table_name, pk, sk, parse)

    def history(self, owner: str, asset: str, limit: int, cursor: str | None = None) -> HistoryPage:
        pk = history_pk(owner, asset, None)
        kwargs: dict[str, Any] = dict(
            TableName=self._m.table_name, KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": pk}}, ScanIndexForward=False, Limit=limit,
        )
        if cursor:
            kwargs["ExclusiveStartKey"] = key(pk, decode_cursor(cursor))
        resp = self._client.query(**kwargs)
        items = [self._history_from_raw(raw) for raw in resp.get("Items", [])]
        last = resp.get("LastEvaluatedKey")
        return HistoryPage(items, encode_cursor(last["sk"]["S"]) if last else None)

    def _history_from_raw(self, raw: dict) -> HistoryEntry:
        h = self._m.History.from_raw_data(raw)
        return HistoryEntry(
            transfer_id=h.transfer_id, kind=TransferKind(h.kind), template=h.template, direction=h.direction,
            amount=int(h.amount), pending_amount=None if h.pending_amount is None else int(h.pending_amount),
            pending_id=h.pending_id, counterparty=h.counterparty, asset=h.asset, memo=h.memo,
            created_at=h.created_at,
        )

    def all_balances(self) -> Iterable[Balance]:
        """Every balance item (user accounts and system shards). A full scan: for tests and the monitor."""
        kwargs: dict[str, Any] = dict(
            TableName=self._m.table_name, FilterExpression="begins_with(pk, :p)",
            ExpressionAttributeValues={":p": {"S": "BAL#"}}, ConsistentRead=True,
        )
        for raw in all_items(self._client.scan, **kwargs):
            b = self._m.Balance.from_raw_data(raw)
            yield Balance(LedgerAccount(b.owner, b.asset), int(b.available or 0), int(b.pending_out or 0),
                          int(b.pending_in or 0))

    def balance_segment(self, segment: int, total_segments: int) -> Iterable[Balance]:
        """The balance items of one parallel Scan segment (the daily invariant job reads all segments at once)."""
        kwargs: dict[str, Any] = dict(
            TableName=self._m.table_name, FilterExpression="begins_with(pk, :p)",
            ExpressionAttributeValues={":p": {"S": "BAL#"}}, Segment=segment, TotalSegments=total_segments,
        )
        for raw in all_items(self._client.scan, **kwargs):
            b = self._m.Balance.from_raw_data(raw)
            yield Balance(LedgerAccount(b.owner, b.asset), int(b.available or 0), int(b.pending_out or 0),
                          int(b.pending_in or 0))

    def check_invariants(self) -> InvariantReport:
        return check_invariants(self.all_balances())

    def _query_all(self, pk: str) -> Iterable[dict]:
        kwargs: dict[str, Any] = dict(
            TableName=self._m.table_name, KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": pk}}, ConsistentRead=True,
        )
        return all_items(self._client.query, **kwargs)


__all__ = ["DynamoLedger", "LedgerResult", "HistoryEntry", "HistoryPage", "LastCredit", "ACTIVE", "FROZEN", "CLOSED",
           "is_system_owner"]
