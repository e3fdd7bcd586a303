"""The hash-chained audit log on DynamoDB.

Items (pk / sk), declared here on ``models.BaseItem`` (models.py stays the shared contract):
  AUDITHEAD#<shard> / HEAD          the chain head: seq and hash of the chain's last record
  AUDIT#<shard>     / <seq:012d>    one record (attributes: every AuditRecord field; details as canonical JSON)

Writing a record is two items in the SAME TransactWriteItems as the mutation it describes (``prepare`` returns
them for ``DynamoLedger.execute(transfer, extra)``; ``append`` sends them alone for admin actions without money):
  [audit_head]    Update AUDITHEAD#s: seq = :seq AND hash = :hash (attribute_not_exists(pk) for genesis)
                  -> SET seq = :seq + 1, hash = <new hash>
  [audit_record]  Put AUDIT#s / <seq+1>: attribute_not_exists(pk)
The head is read once (consistent GetItem) before. A writer that lost the race to the same shard fails the head
condition -> ``AuditHeadMoved`` (a TransientError): nothing was written, prepare again and retry
(``satflow.app.audit.with_audit`` does). A free head slot whose record already exists (head deleted or rolled
back) -> ``AuditChainBroken``: writes to that shard stop (fail closed) until an operator repairs it.

Shard choice (``satflow.domain.audit.audit_shard``): sha256(first subject id, else actor) mod shards, so one
account's records stay in one chain; ``shards`` (default 16) may only grow.
"""
from __future__ import annotations

import json
import time
from decimal import Decimal, InvalidOperation
from typing import Any, Iterator

from pynamodb.attributes import ListAttribute, NumberAttribute, UnicodeAttribute

from satflow.domain import errors
from satflow.domain.errors import AuditChainBroken, AuditHeadMoved  # noqa: F401  (re-exported)
from satflow.domain.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditRecord,
    VerifyReport,
    audit_shard,
    backoff_s,
    canonical_json,
    chain_record,
    verify_chain,
)

from .models import BaseItem, Models, key, model_meta
from .transaction import TRANSIENT_CODES, TxItem, put, transact, update

HEAD_SK = "HEAD"
SEQ_DIGITS = 12


# --- errors (to move into satflow.domain.errors; HTTP: AuditHeadMoved 503, AuditChainBroken 500) ----------------
def head_pk(shard: int) -> str:
    return f"AUDITHEAD#{shard}"


def record_pk(shard: int) -> str:
    return f"AUDIT#{shard}"


def seq_sk(seq: int) -> str:
    return f"{seq:0{SEQ_DIGITS}d}"


class AuditModels:
    """The pynamodb item classes of this store, bound to one table."""

    def __init__(self, table_name: str, region: str, host: str | None) -> None:
        def meta() -> type:
            return model_meta(table_name, region, host)

        class AuditHead(BaseItem):
            Meta = meta()
            shard = NumberAttribute()
            seq = NumberAttribute()
            hash = UnicodeAttribute()
            updated_at = UnicodeAttribute(null=True)

        class AuditItem(BaseItem):
            Meta = meta()
            v = NumberAttribute()
            shard = NumberAttribute()
            seq = NumberAttribute()
            at = UnicodeAttribute()
            actor = UnicodeAttribute()
            action = UnicodeAttribute()
            subject_ids = ListAttribute(of=UnicodeAttribute)
            amount_msat = NumberAttribute(null=True)
            details_json = UnicodeAttribute()
            prev_hash = UnicodeAttribute()
            hash = UnicodeAttribute()

        self.Head, self.Record = AuditHead, AuditItem


_MODELS: dict[tuple, AuditModels] = {}


def audit_models(models: Models) -> AuditModels:
    meta = models.Account.Meta
    cache_key = (models.table_name, meta.region, getattr(meta, "host", None))
    if cache_key not in _MODELS:
        _MODELS[cache_key] = AuditModels(*cache_key)
    return _MODELS[cache_key]


class DynamoAuditStore:
    def __init__(self, client: Any, models: Models, shards: int = 16) -> None:
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self._client = client
        self._table = models.table_name
        self._m = audit_models(models)
        self.shards = shards

    # ------------------------------------------------------------------ write path
    def shard_for(self, entry: AuditEntry) -> int:
        return audit_shard(entry, self.shards)

    def prepare(self, entry: AuditEntry, shard: int | None = None, tag: str = "audit") -> tuple[AuditRecord, list[TxItem]]:
        """One consistent read of the chain head, then the two tagged items that append ``entry`` as the chain's
        next record, for the caller's single TransactWriteItems. Head first: when another writer moved the head,
        the ledger's classification meets ``<tag>_head`` first and raises AuditHeadMoved."""
        shard = self.shard_for(entry) if shard is None else self._check_shard(shard)
        head = self.head(shard)
        seq, prev_hash = head if head is not None else (0, GENESIS_HASH)
        record = chain_record(entry, shard=shard, seq=seq + 1, prev_hash=prev_hash)
        H, R = self._m.Head, self._m.Record
        condition = H.pk.does_not_exist() if head is None else (H.seq == seq) & (H.hash == prev_hash)

        def moved(old: dict | None) -> errors.SatflowError:
            return AuditHeadMoved(f"audit chain {shard} moved past seq {seq}; retry", shard=shard, seq=seq)

        def broken(old: dict | None) -> errors.SatflowError:
            return AuditChainBroken(f"audit chain {shard} already has a record {record.seq} beyond its head",
                                    shard=shard, seq=record.seq)

        head_item = update(
            H(head_pk(shard), HEAD_SK),
            [H.shard.set(shard), H.seq.set(record.seq), H.hash.set(record.hash), H.updated_at.set(entry.at)],
            condition, f"{tag}_head", moved)
        item = R(record_pk(shard), seq_sk(record.seq), v=record.version, shard=shard, seq=record.seq, at=record.at,
                 actor=record.actor, action=record.action, subject_ids=list(record.subject_ids),
                 amount_msat=record.amount_msat, details_json=canonical_json(dict(record.details)),
                 prev_hash=record.prev_hash, hash=record.hash)
        return record, [head_item, put(item, R.pk.does_not_exist(), f"{tag}_record", broken)]

    def append(self, entry: AuditEntry, shard: int | None = None, attempts: int = 5) -> AuditRecord:
        """Append on its own (admin actions that move no money). Retries only definite cancellations (head moved,
        transaction conflict): nothing was written then. Transport errors propagate as TransientError (outcome
        unknown: a blind retry could append the record twice)."""
        for attempt in range(1, attempts + 1):
            record, items = self.prepare(entry, shard)
            cancellation = transact(self._client, items)
            if cancellation is None:
                return record
            if cancellation.condition_failed("audit_head") or cancellation.first_transient():
                if attempt < attempts:
                    time.sleep(backoff_s(attempt))
                continue
            if cancellation.condition_failed("audit_record"):
                raise items[1].on_condition_failed(None)  # type: ignore[misc]
            raise RuntimeError(f"audit append cancelled unexpectedly: {cancellation.failures}")
        raise AuditHeadMoved(f"audit chain kept moving after {attempts} attempts; retry")

    # ------------------------------------------------------------------ reads
    def head(self, shard: int) -> tuple[int, str] | None:
        """(seq, hash) of the chain's last record, or None before its first record."""
        raw = self._get(head_pk(self._check_shard(shard)), HEAD_SK)
        if raw is None:
            return None
        return _number(raw.get("seq")), raw.get("hash", {}).get("S", "")  # type: ignore[return-value]

    def records(self, shard: int, after_seq: int = 0, limit: int = 100) -> list[AuditRecord]:
        """Up to ``limit`` records of one chain with seq > ``after_seq``, ascending. Fewer means the chain's end."""
        return list(self._iter(self._check_shard(shard), after_seq, None, limit))

    def verify(self, shard: int) -> VerifyReport:
        """Read the head, then every record up to the head's seq (records appended meanwhile are not read), and
        check the chain. A missing head with records present is reported (the head is what proves the end)."""
        head = self.head(shard)
        if head is None:
            return verify_chain(self._iter(shard, 0, None, None), head=(0, GENESIS_HASH))
        if not isinstance(head[0], int) or head[0] < 0:
            return VerifyReport(False, 1, "broken_link")
        return verify_chain(self._iter(shard, 0, head[0], None), head=head)

    def verify_all(self) -> dict[int, VerifyReport]:
        return {shard: self.verify(shard) for shard in range(self.shards)}

    # ------------------------------------------------------------------ helpers
    def _check_shard(self, shard: object) -> int:
        if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < self.shards:
            raise errors.ValidationError(f"shard must be an integer from 0 to {self.shards - 1}", field="shard")
        return shard

    def _iter(self, shard: int, after_seq: int, upto_seq: int | None, limit: int | None) -> Iterator[AuditRecord]:
        if upto_seq is not None and upto_seq <= after_seq:
            return
        kwargs: dict[str, Any] = dict(
            TableName=self._table, KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
            ExpressionAttributeValues={
                ":pk": {"S": record_pk(shard)}, ":lo": {"S": seq_sk(after_seq + 1)},
                ":hi": {"S": seq_sk(upto_seq) if upto_seq is not None else "9" * SEQ_DIGITS}},
            ConsistentRead=True,
        )
        remaining = limit
        while True:
            if remaining is not None:
                kwargs["Limit"] = remaining
            resp = self._call("query", **kwargs)
            for raw in resp.get("Items", []):
                yield _record_from_raw(raw)
                if remaining is not None:
                    remaining -= 1
                    if remaining == 0:
                        return
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def _get(self, pk: str, sk: str) -> dict | None:
        return self._call("get_item", TableName=self._table, Key=key(pk, sk), ConsistentRead=True).get("Item")

    def _call(self, op: str, **kwargs: Any) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, op)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in TRANSIENT_CODES or code in ("ProvisionedThroughputExceededException", "ServiceUnavailable",
                                                   "ThrottlingException", "InternalServerError"):
                raise errors.TransientError(f"DynamoDB is busy ({code}); retry") from exc
            raise
        except BotoCoreError as exc:
            raise errors.TransientError(f"DynamoDB unreachable: {type(exc).__name__}") from exc


def _number(attr: dict | None) -> int | float | None:
    """A DynamoDB number as int when integral; else float (which canonical JSON refuses: reported as altered)."""
    if not attr or "N" not in attr:
        return None
    text = attr["N"]
    try:
        return int(text)
    except ValueError:
        try:
            value = Decimal(text)
        except InvalidOperation:
            return None
        return float(value)


def _record_from_raw(raw: dict) -> AuditRecord:
    """Lenient on purpose: a tampered or malformed item still becomes a record, which verify then reports."""
    def s(name: str) -> str:
        return raw.get(name, {}).get("S", "")

    details_text = s("details_json")
    try:
        details: Any = json.loads(details_text)
    except ValueError:
        details = details_text  # hashes differently from any object: reported as altered
    seq = _number(raw.get("seq"))
    return AuditRecord(
        shard=_number(raw.get("shard")),  # type: ignore[arg-type]
        seq=seq,  # type: ignore[arg-type]  # non-integral -> verify reports "altered"
        at=s("at"), actor=s("actor"), action=s("action"),
        subject_ids=tuple(x.get("S", "") for x in raw.get("subject_ids", {}).get("L", [])),
        amount_msat=_number(raw.get("amount_msat")),  # type: ignore[arg-type]
        details=details, prev_hash=s("prev_hash"), hash=s("hash"),
        version=_number(raw.get("v")),  # type: ignore[arg-type]
    )


__all__ = ["DynamoAuditStore", "AuditHeadMoved", "AuditChainBroken", "AuditModels", "audit_models"]
