"""Solvency items in the ledger table (raw DynamoDB client; bodies as JSON).

  SOLVCHECK   / <at>#<check_id>   one solvency check (history; TTL 90 days), newest first by query
  SOLVINV     / <at>              one daily ledger invariant run (TTL 400 days)
  SOLVENCY    / BREAKER           the breaker: the ONE item the send path reads (sends open|paused, last success)
  SOLVENCY    / LNDPAYCURSOR      LND payment_index below which every node payment was accounted for, and
                                  history_end: the node's latest payment at the first check (older ones without
                                  our hash lock are the operator's history, not foreign)
  SOLVENCY    / LNDINVSCAN        LND invoice add_index up to which every invoice is final and fully credited
  SUSPENSE    / <suspense_id>     money booked against the suspense account, open until an admin assigns it

The check and the breaker are written rarely (every 5 minutes, on a trip, on a resume): single partitions are
fine. Nothing here is on a money path except the breaker read.
"""
from __future__ import annotations

import json
from typing import Any, Iterable

from satflow.domain import errors
from satflow.domain.onchain import Utxo, UtxoStatus
from satflow.domain.solvency import SENDS_OPEN, SENDS_PAUSED, BreakerState, SolvencyCheck, SuspenseItem

from .paging import all_items, decode_cursor, encode_cursor
from .transaction import TxItem, run_or_raise
from .utxos import UTXO_SHARDS

CHECK_TTL_S = 90 * 86_400
INVARIANT_TTL_S = 400 * 86_400


def _s(v: str) -> dict:
    return {"S": v}


def _n(v: int) -> dict:
    return {"N": str(int(v))}


class DynamoSolvencyStore:
    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self.table_name = table_name

    # ------------------------------------------------------------------ checks
    def save_check(self, check: SolvencyCheck, now_unix: int) -> None:
        self._client.put_item(TableName=self.table_name, Item={
            "pk": _s("SOLVCHECK"), "sk": _s(f"{check.at}#{check.check_id}"),
            "data": _s(json.dumps(check.to_dict(), sort_keys=True)), "ttl": _n(now_unix + CHECK_TTL_S)})

    def checks(self, limit: int, cursor: str | None = None) -> tuple[list[dict], str | None]:
        return self._page("SOLVCHECK", limit, cursor)

    def save_invariants(self, summary: dict, now_unix: int) -> None:
        self._client.put_item(TableName=self.table_name, Item={
            "pk": _s("SOLVINV"), "sk": _s(summary["at"]), "data": _s(json.dumps(summary, sort_keys=True)),
            "ttl": _n(now_unix + INVARIANT_TTL_S)})

    def invariant_runs(self, limit: int, cursor: str | None = None) -> tuple[list[dict], str | None]:
        return self._page("SOLVINV", limit, cursor)

    def _page(self, pk: str, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
        kwargs: dict[str, Any] = dict(TableName=self.table_name, KeyConditionExpression="pk = :pk",
                                      ExpressionAttributeValues={":pk": _s(pk)}, ScanIndexForward=False, Limit=limit)
        if cursor:
            kwargs["ExclusiveStartKey"] = {"pk": _s(pk), "sk": _s(decode_cursor(cursor))}
        resp = self._client.query(**kwargs)
        last = resp.get("LastEvaluatedKey")
        return ([json.loads(raw["data"]["S"]) for raw in resp.get("Items", [])],
                encode_cursor(last["sk"]["S"]) if last else None)

    # ------------------------------------------------------------------ the breaker
    def breaker(self, consistent: bool = False) -> BreakerState:
        """One GetItem (eventually consistent on the send path: 0.5 RCU)."""
        raw = self._client.get_item(TableName=self.table_name, Key={"pk": _s("SOLVENCY"), "sk": _s("BREAKER")},
                                    ConsistentRead=consistent).get("Item")
        if not raw:
            return BreakerState()

        def num(name: str) -> int | None:
            return int(raw[name]["N"]) if name in raw else None

        def text(name: str) -> str | None:
            return raw[name]["S"] if name in raw else None

        return BreakerState(sends=text("sends") or SENDS_OPEN, reasons=tuple(json.loads(text("reasons") or "[]")),
                            changed_at=text("changed_at"), last_success_at=num("last_success_at"),
                            resumed_at=num("resumed_at"), resumed_by=text("resumed_by"), reason=text("reason"))

    def record_success(self, now_unix: int) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client.update_item(
                TableName=self.table_name, Key={"pk": _s("SOLVENCY"), "sk": _s("BREAKER")},
                UpdateExpression="SET last_success_at = :t, sends = if_not_exists(sends, :open)",
                ConditionExpression="attribute_not_exists(last_success_at) OR last_success_at < :t",
                ExpressionAttributeValues={":t": _n(now_unix), ":open": _s(SENDS_OPEN)})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    def trip_item(self, reasons: Iterable[str], at: str) -> TxItem:
        """Open -> paused (the condition makes the audit record and the announcement happen once per trip)."""
        return TxItem("breaker", "Update", {
            "TableName": self.table_name, "Key": {"pk": _s("SOLVENCY"), "sk": _s("BREAKER")},
            "UpdateExpression": "SET sends = :paused, reasons = :r, changed_at = :at",
            "ConditionExpression": "attribute_not_exists(sends) OR sends <> :paused",
            "ExpressionAttributeValues": {":paused": _s(SENDS_PAUSED), ":r": _s(json.dumps(list(reasons))),
                                          ":at": _s(at)},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD"},
            lambda old: errors.Conflict("the breaker is already paused"))

    def resume_item(self, *, admin: str, reason: str, at: str, now_unix: int, stale_before: int) -> TxItem:
        """Paused -> open; or, when sends are blocked only because the last success is older than the limit (the
        job is not running), an admin's override: ``resumed_at`` buys one more period."""
        return TxItem("breaker", "Update", {
            "TableName": self.table_name, "Key": {"pk": _s("SOLVENCY"), "sk": _s("BREAKER")},
            "UpdateExpression": ("SET sends = :open, reasons = :none, changed_at = :at, resumed_at = :t, "
                                 "resumed_by = :who, reason = :why"),
            "ConditionExpression": ("sends = :paused OR (last_success_at < :stale AND "
                                    "(attribute_not_exists(resumed_at) OR resumed_at < :stale))"),
            "ExpressionAttributeValues": {":open": _s(SENDS_OPEN), ":paused": _s(SENDS_PAUSED), ":none": _s("[]"),
                                          ":at": _s(at), ":t": _n(now_unix), ":who": _s(admin), ":why": _s(reason),
                                          ":stale": _n(stale_before)},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD"},
            lambda old: errors.Conflict("sends are not paused"))

    def run(self, items: list[TxItem]) -> None:
        run_or_raise(self._client, items)

    # ------------------------------------------------------------------ LND payment cursor
    def payment_scan(self) -> tuple[int, int] | None:
        """(cursor, history_end); None before the first check ever ran against the node. An item written before
        history_end existed has none: 0 (its first check had already skipped the history)."""
        raw = self._client.get_item(TableName=self.table_name, Key={"pk": _s("SOLVENCY"), "sk": _s("LNDPAYCURSOR")},
                                    ConsistentRead=True).get("Item")
        if not raw:
            return None
        return int(raw["payment_index"]["N"]), int(raw["history_end"]["N"]) if "history_end" in raw else 0

    def start_payment_scan(self, history_end: int) -> None:
        """The first check: the scan starts at the node's first payment; ``history_end`` is fixed once (a
        concurrent first check loses the condition and reads the winner's item)."""
        from botocore.exceptions import ClientError

        try:
            self._client.put_item(
                TableName=self.table_name,
                Item={"pk": _s("SOLVENCY"), "sk": _s("LNDPAYCURSOR"), "payment_index": _n(0),
                      "history_end": _n(history_end)},
                ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    def advance_payment_cursor(self, payment_index: int) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client.update_item(
                TableName=self.table_name, Key={"pk": _s("SOLVENCY"), "sk": _s("LNDPAYCURSOR")},
                UpdateExpression="SET payment_index = :i",
                ConditionExpression="attribute_not_exists(payment_index) OR payment_index < :i",  # 0 creates it
                ExpressionAttributeValues={":i": _n(payment_index)})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    # ------------------------------------------------------------------ LND invoice scan watermark
    def invoice_watermark(self) -> int | None:
        """The check's own invoice scan start (not the catch-up's cursor: that one moves when a settlement is
        published, before it is credited). None before the first check ever scanned the node's invoices."""
        raw = self._client.get_item(TableName=self.table_name, Key={"pk": _s("SOLVENCY"), "sk": _s("LNDINVSCAN")},
                                    ConsistentRead=True).get("Item")
        return int(raw["add_index"]["N"]) if raw else None

    def advance_invoice_watermark(self, add_index: int) -> None:
        """Forward only: a late or concurrent check never moves it back (0 creates it)."""
        from botocore.exceptions import ClientError

        try:
            self._client.update_item(
                TableName=self.table_name, Key={"pk": _s("SOLVENCY"), "sk": _s("LNDINVSCAN")},
                UpdateExpression="SET add_index = :i",
                ConditionExpression="attribute_not_exists(add_index) OR add_index < :i",
                ExpressionAttributeValues={":i": _n(add_index)})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    def payment_owner(self, payment_hash: str) -> str | None:
        """The satflow payment id that holds this hash's lock (PAYHASH#, written by every send we make)."""
        raw = self._client.get_item(TableName=self.table_name, Key={"pk": _s(f"PAYHASH#{payment_hash}"),
                                                                     "sk": _s("LOCK")}).get("Item")
        return raw["ref"]["S"] if raw and "ref" in raw else None

    # ------------------------------------------------------------------ on-chain
    def tracked_utxos(self) -> list[Utxo]:
        """Every output satflow holds (AVAILABLE or RESERVED): one query per UTXO shard."""
        out: list[Utxo] = []
        for shard in range(UTXO_SHARDS):
            for raw in all_items(self._client.query, TableName=self.table_name, KeyConditionExpression="pk = :pk",
                                 FilterExpression="#s <> :spent", ExpressionAttributeNames={"#s": "status"},
                                 ExpressionAttributeValues={":pk": _s(f"UTXO#{shard}"),
                                                            ":spent": _s(UtxoStatus.SPENT.value)},
                                 ConsistentRead=True):
                out.append(Utxo(txid=raw["txid"]["S"], vout=int(raw["vout"]["N"]),
                                value_sat=int(raw["value_sat"]["N"]), script_pubkey_hex=raw["script_pubkey_hex"]["S"],
                                chain=int(raw["chain"]["N"]), index=int(raw["index"]["N"]),
                                height=int(raw["height"]["N"]), status=UtxoStatus(raw["status"]["S"]),
                                reserved_by=raw["reserved_by"]["S"] if "reserved_by" in raw else None))
        return out

    def foreign_spend_item(self, utxo: Utxo, spending_txid: str) -> TxItem:
        """Our output spent by a transaction we did not make: SPENT, with the spender, in the booking's tx."""
        from satflow.domain.ledger import shard_for

        return TxItem(f"utxo:{utxo.outpoint}", "Update", {
            "TableName": self.table_name,
            "Key": {"pk": _s(f"UTXO#{shard_for(utxo.outpoint, UTXO_SHARDS)}"), "sk": _s(utxo.outpoint)},
            "UpdateExpression": "SET #s = :spent, foreign_spend_txid = :tx",
            "ConditionExpression": "#s IN (:a, :r)", "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":spent": _s(UtxoStatus.SPENT.value), ":tx": _s(spending_txid),
                                          ":a": _s(UtxoStatus.AVAILABLE.value), ":r": _s(UtxoStatus.RESERVED.value)},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD"},
            lambda old: errors.Conflict(f"output {utxo.outpoint} changed meanwhile"))

    # ------------------------------------------------------------------ suspense
    def new_suspense_item(self, item: SuspenseItem) -> TxItem:
        return TxItem("suspense", "Put", {
            "TableName": self.table_name,
            "Item": {"pk": _s("SUSPENSE"), "sk": _s(item.suspense_id), "status": _s(item.status),
                     "data": _s(json.dumps(item.to_dict(), sort_keys=True))},
            "ConditionExpression": "attribute_not_exists(pk)", "ReturnValuesOnConditionCheckFailure": "ALL_OLD"},
            lambda old: errors.Conflict(f"suspense item {item.suspense_id} exists"))

    def assign_suspense_item(self, item: SuspenseItem) -> TxItem:
        return TxItem("suspense", "Update", {
            "TableName": self.table_name, "Key": {"pk": _s("SUSPENSE"), "sk": _s(item.suspense_id)},
            "UpdateExpression": "SET #s = :assigned, #d = :data", "ConditionExpression": "#s = :open",
            "ExpressionAttributeNames": {"#s": "status", "#d": "data"},
            "ExpressionAttributeValues": {":assigned": _s("assigned"), ":open": _s("open"),
                                          ":data": _s(json.dumps(item.to_dict(), sort_keys=True))},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD"},
            lambda old: errors.SuspenseAlreadyAssigned(f"suspense item {item.suspense_id} is already assigned"))

    def get_suspense(self, suspense_id: str) -> SuspenseItem | None:
        raw = self._client.get_item(TableName=self.table_name, Key={"pk": _s("SUSPENSE"), "sk": _s(suspense_id)},
                                    ConsistentRead=True).get("Item")
        return None if raw is None else _suspense(raw)

    def suspense_items(self, status: str | None = None) -> list[SuspenseItem]:
        kwargs: dict[str, Any] = dict(TableName=self.table_name, KeyConditionExpression="pk = :pk",
                                      ExpressionAttributeValues={":pk": _s("SUSPENSE")}, ConsistentRead=True)
        if status:
            kwargs.update(FilterExpression="#s = :st", ExpressionAttributeNames={"#s": "status"})
            kwargs["ExpressionAttributeValues"][":st"] = _s(status)
        return sorted((_suspense(raw) for raw in all_items(self._client.query, **kwargs)),
                      key=lambda i: (i.created_at, i.suspense_id), reverse=True)


def _suspense(raw: dict) -> SuspenseItem:
    d = json.loads(raw["data"]["S"])
    return SuspenseItem(suspense_id=d["id"], kind=d["kind"], source=d["source"], direction=d["direction"],
                        amount_msat=int(d["amount_msat"]), reference=d["reference"], transfer_id=d["transfer_id"],
                        created_at=d["created_at"], details=d.get("details") or {}, status=d["status"],
                        assigned_to=d.get("assigned_to"), assigned_by=d.get("assigned_by"),
                        assigned_at=d.get("assigned_at"), assign_reason=d.get("reason"),
                        assign_transfer_id=d.get("assign_transfer_id"))
