"""The hash-chained audit log on DynamoDB: written without a read, sealed afterwards in order.

Items (pk / sk), declared here on ``models.BaseItem`` (models.py stays the shared contract):
  AUDITQ#<shard>    / <written_at>#<entry_id>   a pending entry: the chain's UNSEALED INDEX (time-ordered)
  AUDITHEAD#<shard> / HEAD                      the chain head: seq and hash of the chain's last sealed record
  AUDIT#<shard>     / <seq:012d>                a sealed record (every AuditRecord field; details as canonical JSON)
  AUDITID#<entry_id> / SEALED                   the seal marker: which (shard, seq) an entry became, at most once
  AUDITCHECK#<shard> / STATE                    the verifier's checkpoint (seq + hash verified so far, last verdict)
  AUDITCHECK#<shard> / RESCAN                   the from-genesis re-verification's cursor (and its last verdict)
  AUDITCHECK#<shard> / SEALED                   the sealed mark: the highest (seq, hash) the sealer ever sealed;
                                                only moves forward (a head below it: the chain's end was cut off)

Write path (``prepare``): ONE item in the mutation's own TransactWriteItems, a Put of the pending entry with
``attribute_not_exists(pk)``; nothing is read first and no item is shared between writers, so money movement never
serialises on a chain head (design rule 8). ``entry_id`` is unique to the mutation (a ledger transfer's id, whose
own ``attribute_not_exists`` makes a replay cancel the whole transaction, entry included).

Seal path (``seal``, called by the sealer function from the table's stream, and by the sweeper from the index): per
chain, one TransactWriteItems per chunk of up to 33 entries:
  [head]   Update AUDITHEAD#s: seq = :seq AND hash = :hash (attribute_not_exists(pk) for genesis)
  per entry:  Put AUDIT#s/<seq>   attribute_not_exists(pk)   (a record beyond the head: AuditChainBroken)
              Put AUDITID#<id>    attribute_not_exists(pk)   (already sealed: never sealed twice; a duplicate
                                                             only if the marker's record IS this entry sealed,
                                                             else ``changed`` and the entry is kept)
              Delete AUDITQ#s/... entry_hash = :h            (the entry as committed; else it changed or vanished)
The head is read once (consistent GetItem) per chunk; only sealers write it, so its condition only ever meets
another sealer (the stream path against the sweeper): re-read and retry.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterator, Sequence

from pynamodb.attributes import ListAttribute, NumberAttribute, UnicodeAttribute

from satflow.domain import errors
from satflow.domain.errors import AuditChainBroken, AuditHeadMoved  # noqa: F401  (re-exported)
from satflow.domain.audit import (
    GENESIS_HASH,
    Checkpoint,
    epoch_of,
    iso_us,
    AuditEntry,
    AuditRecord,
    PendingEntry,
    VerifyReport,
    audit_shard,
    backoff_s,
    canonical_json,
    is_sealed_form,
    pending_entry,
    seal_record,
    verify_chain,
)
from satflow.domain.ids import new_id

from .models import BaseItem, Models, key, model_meta
from .transaction import TRANSIENT_CODES, TxItem, delete, put, transact, update

log = logging.getLogger(__name__)

HEAD_SK = "HEAD"
MARKER_SK = "SEALED"
CHECK_SK = "STATE"
RESCAN_SK = "RESCAN"
SEALED_MARK_SK = "SEALED"
SEQ_DIGITS = 12
SEAL_CHUNK = 33  # 1 head + 3 items per entry <= 100 items per TransactWriteItems


def head_pk(shard: int) -> str:
    return f"AUDITHEAD#{shard}"


def record_pk(shard: int) -> str:
    return f"AUDIT#{shard}"


def queue_pk(shard: int) -> str:
    return f"AUDITQ#{shard}"


def marker_pk(entry_id: str) -> str:
    return f"AUDITID#{entry_id}"


def check_pk(shard: int) -> str:
    return f"AUDITCHECK#{shard}"


def seq_sk(seq: int) -> str:
    return f"{seq:0{SEQ_DIGITS}d}"


def queue_sk(written_at: str, entry_id: str) -> str:
    return f"{written_at}#{entry_id}"


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
            entry_id = UnicodeAttribute(null=True)
            written_at = UnicodeAttribute(null=True)

        class AuditPending(BaseItem):
            Meta = meta()
            shard = NumberAttribute()
            entry_id = UnicodeAttribute()
            written_at = UnicodeAttribute()
            at = UnicodeAttribute()
            actor = UnicodeAttribute()
            action = UnicodeAttribute()
            subject_ids = ListAttribute(of=UnicodeAttribute)
            amount_msat = NumberAttribute(null=True)
            details_json = UnicodeAttribute()
            entry_hash = UnicodeAttribute()

        class AuditMarker(BaseItem):
            Meta = meta()
            shard = NumberAttribute()
            seq = NumberAttribute()
            sealed_at = UnicodeAttribute()

        self.Head, self.Record, self.Pending, self.Marker = AuditHead, AuditItem, AuditPending, AuditMarker


_MODELS: dict[tuple, AuditModels] = {}


def audit_models(models: Models) -> AuditModels:
    meta = models.Account.Meta
    cache_key = (models.table_name, meta.region, getattr(meta, "host", None))
    if cache_key not in _MODELS:
        _MODELS[cache_key] = AuditModels(*cache_key)
    return _MODELS[cache_key]


@dataclass
class SealOutcome:
    """What one ``seal`` call did on one chain."""

    sealed: list[AuditRecord] = field(default_factory=list)
    duplicates: list[PendingEntry] = field(default_factory=list)  # already sealed as itself (a redelivery, the other path)
    # the stored entry differed from (or lacked) the image, or a marker exists whose record is not this entry
    changed: list[PendingEntry] = field(default_factory=list)
    refused: list[PendingEntry] = field(default_factory=list)  # not intact: left unsealed, for verify to report
    head_retries: int = 0


class DynamoAuditStore:
    def __init__(self, client: Any, models: Models, shards: int = 16,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self._client = client
        self._table = models.table_name
        self._m = audit_models(models)
        self.shards = shards
        self.clock = clock
        self._sleep = sleep

    # ------------------------------------------------------------------ write path (no read)
    def shard_for(self, entry: AuditEntry) -> int:
        return audit_shard(entry, self.shards)

    def prepare(self, entry: AuditEntry, shard: int | None = None, tag: str = "audit", *,
                entry_id: str | None = None) -> tuple[PendingEntry, list[TxItem]]:
        """The ONE item that records ``entry`` in the caller's single TransactWriteItems: a Put of the pending
        entry in its chain's unsealed index. Nothing is read. ``entry_id``: unique to the mutation (default a fresh
        ``aud_`` id); the entry is sealed at most once under it."""
        shard = self.shard_for(entry) if shard is None else self._check_shard(shard)
        p = pending_entry(entry, shard=shard, entry_id=entry_id or new_id("aud"), written_at=iso_us(self.clock()))

        def exists(old: dict | None) -> errors.SatflowError:
            return errors.Conflict(f"audit entry {p.entry_id} was already written at {p.written_at}")

        # Built as wire format directly (not through pynamodb): this runs on every money operation.
        item: dict[str, Any] = {
            "pk": {"S": queue_pk(shard)}, "sk": {"S": queue_sk(p.written_at, p.entry_id)},
            "shard": {"N": str(shard)}, "entry_id": {"S": p.entry_id}, "written_at": {"S": p.written_at},
            "at": {"S": p.at}, "actor": {"S": p.actor}, "action": {"S": p.action},
            "subject_ids": {"L": [{"S": x} for x in p.subject_ids]},
            "details_json": {"S": canonical_json(dict(p.details))}, "entry_hash": {"S": p.entry_hash},
        }
        if p.amount_msat is not None:
            item["amount_msat"] = {"N": str(p.amount_msat)}
        params = {"TableName": self._table, "Item": item, "ConditionExpression": "attribute_not_exists (#0)",
                  "ExpressionAttributeNames": {"#0": "pk"}, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
        return p, [TxItem(f"{tag}_entry", "Put", params, exists)]

    def append(self, entry: AuditEntry, shard: int | None = None) -> PendingEntry:
        """Record on its own (an admin action with no transaction of its own, e.g. sanctions.blocked): one
        TransactWriteItems of the one entry item. A transport error propagates as TransientError."""
        p, items = self.prepare(entry, shard)
        from .transaction import run_or_raise

        run_or_raise(self._client, items)
        return p

    # ------------------------------------------------------------------ seal path (single writer per chain)
    def seal(self, shard: int, entries: Sequence[PendingEntry], *, from_stream: bool,
             attempts: int = 8) -> SealOutcome:
        """Append ``entries`` (pending entries of chain ``shard``, in the order to seal them) to the chain.

        ``from_stream``: the entries are stream images, i.e. exactly what the mutation's transaction committed.
        Their stored copy is deleted only if unchanged (``entry_hash``); a copy changed or deleted meanwhile does
        not stop the committed entry from being sealed (it is reported in ``changed``). From the sweeper (the
        stored copies), an entry whose hash does not match its content is refused and left in the index.
        Already sealed entries (a marker exists) are skipped as ``duplicates`` only when the marker's record is
        this entry sealed (same id, chain and content hash); a marker without such a record (made in advance under
        a predictable id, or a forged copy sealed first by the sweeper) is ``changed``: nothing is sealed and the
        pending entry is kept for the operator. Raises AuditChainBroken when the chain holds a
        record beyond its head (nothing more is sealed there until an operator repairs it), TransientError when
        the head kept moving or DynamoDB stayed busy (nothing of the failed chunk was written)."""
        shard = self._check_shard(shard)
        outcome = SealOutcome()
        todo: list[tuple[PendingEntry, bool]] = []
        first_hash: dict[str, str] = {}
        for p in entries:
            if p.shard != shard or not p.intact():
                outcome.refused.append(p)
            elif p.entry_id in first_hash:  # one marker per id: a second entry under the same id is never sealed
                (outcome.duplicates if first_hash[p.entry_id] == p.entry_hash else outcome.changed).append(p)
            else:
                first_hash[p.entry_id] = p.entry_hash
                todo.append((p, True))
        failures = 0
        while todo:
            chunk = todo[:SEAL_CHUNK]
            head = self.head(shard)
            items, records = self._seal_items(shard, head, chunk)
            cancellation = transact(self._client, items)
            if cancellation is None:
                outcome.sealed.extend(records)
                self._raise_sealed_mark(shard, records[-1])
                todo = todo[len(chunk):]
                failures = 0
                continue
            if cancellation.condition_failed("head") or cancellation.first_transient():
                failures += 1
                if failures >= attempts:
                    raise errors.TransientError(f"audit chain {shard}: sealing kept failing ({cancellation.failures})")
                outcome.head_retries += cancellation.condition_failed("head")
                self._sleep(backoff_s(failures))
                continue
            if any(cancellation.condition_failed(f"record_{i}") for i in range(len(chunk))):
                seq = (head[0] if head else 0) + 1
                raise AuditChainBroken(f"audit chain {shard} already has a record {seq} beyond its head",
                                       shard=shard, seq=seq)
            done = {i for i in range(len(chunk)) if cancellation.condition_failed(f"marker_{i}")}
            for i in sorted(done):
                p, delete_entry = chunk[i]
                if self._sealed_as(p):  # a redelivery, or the other path sealed this very entry first
                    outcome.duplicates.append(p)
                    if delete_entry:
                        self._delete_entry_if_unchanged(p)  # a stray copy of a sealed entry
                else:  # a marker made in advance, or a forged copy sealed first: tampering, the entry is kept
                    outcome.changed.append(p)
            changed = {i for i in range(len(chunk)) if i not in done and cancellation.condition_failed(f"entry_{i}")}
            if not done and not changed:
                raise RuntimeError(f"audit seal of chain {shard} cancelled unexpectedly: {cancellation.failures}")
            rest = []
            for i, (p, delete_entry) in enumerate(chunk):
                if i in done:
                    continue
                if i in changed:
                    if not from_stream:
                        continue  # sealed or changed by someone else meanwhile: the next sweep reads it again
                    outcome.changed.append(p)
                    delete_entry = False  # seal what was committed; the changed copy is left for the verifier
                rest.append((p, delete_entry))
            todo = rest + todo[len(chunk):]  # each pass removes a cause (sealed, or no longer deleted): it ends
        return outcome

    def _seal_items(self, shard: int, head: tuple[int, str] | None,
                    chunk: Sequence[tuple[PendingEntry, bool]]) -> tuple[list[TxItem], list[AuditRecord]]:
        H, R, M, Q = self._m.Head, self._m.Record, self._m.Marker, self._m.Pending
        seq, prev_hash = head if head is not None else (0, GENESIS_HASH)
        condition = H.pk.does_not_exist() if head is None else (H.seq == seq) & (H.hash == prev_hash)
        sealed_at = iso_us(self.clock())
        items: list[TxItem] = []
        records: list[AuditRecord] = []
        for i, (p, delete_entry) in enumerate(chunk):
            r = seal_record(p, seq=seq + 1 + i, prev_hash=prev_hash)
            prev_hash = r.hash
            records.append(r)
            items.append(put(R(record_pk(shard), seq_sk(r.seq), v=r.version, shard=shard, seq=r.seq, at=r.at,
                               actor=r.actor, action=r.action, subject_ids=list(r.subject_ids),
                               amount_msat=r.amount_msat, details_json=canonical_json(dict(r.details)),
                               prev_hash=r.prev_hash, hash=r.hash, entry_id=r.entry_id, written_at=r.written_at),
                             R.pk.does_not_exist(), f"record_{i}"))
            items.append(put(M(marker_pk(p.entry_id), MARKER_SK, shard=shard, seq=r.seq, sealed_at=sealed_at),
                             M.pk.does_not_exist(), f"marker_{i}"))
            if delete_entry:
                items.append(delete(Q(queue_pk(shard), queue_sk(p.written_at, p.entry_id)),
                                    Q.entry_hash == p.entry_hash, f"entry_{i}"))
        last = records[-1]
        items.insert(0, update(H(head_pk(shard), HEAD_SK),
                               [H.shard.set(shard), H.seq.set(last.seq), H.hash.set(last.hash),
                                H.updated_at.set(sealed_at)], condition, "head"))
        return items, records

    def _raise_sealed_mark(self, shard: int, last: AuditRecord) -> None:
        """Move the chain's sealed mark forward to ``last`` (never back: conditional on a lower seq). Written after
        the seal transaction, so it trails the head by at most a crash (a lower bound, which is all verify needs);
        kept out of the transaction so that a mark an attacker moved ahead cannot stop sealing."""
        from botocore.exceptions import ClientError

        try:
            self._call("update_item", TableName=self._table, Key=key(check_pk(shard), SEALED_MARK_SK),
                       UpdateExpression="SET #c = :shard, #s = :seq, #h = :hash, #t = :at",
                       ConditionExpression="attribute_not_exists(#pk) OR #s < :seq",
                       ExpressionAttributeNames={"#pk": "pk", "#c": "shard", "#s": "seq", "#h": "hash",
                                                 "#t": "sealed_at"},
                       ExpressionAttributeValues={":shard": {"N": str(shard)}, ":seq": {"N": str(last.seq)},
                                                  ":hash": {"S": last.hash}, ":at": {"S": iso_us(self.clock())}})
        except errors.TransientError as exc:  # the records are sealed; the next chunk moves the mark past them
            log.warning("audit sealed mark not moved", extra={"shard": shard, "seq": last.seq, "error": str(exc)})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    def sealed_mark(self, shard: int) -> tuple[int, str] | None:
        """The highest (seq, hash) the sealer ever sealed on this chain, or None before its first record."""
        raw = self._get(check_pk(self._check_shard(shard)), SEALED_MARK_SK)
        if raw is None:
            return None
        return _number(raw.get("seq")), _s(raw, "hash")  # type: ignore[return-value]

    def _sealed_as(self, p: PendingEntry) -> bool:
        """Whether ``p``'s seal marker points at a record that is ``p`` sealed (two consistent reads, only on a
        duplicate). A marker with no record, or a record with other content, is not a seal of ``p``."""
        raw = self._get(marker_pk(p.entry_id), MARKER_SK)
        shard, seq = (_number(raw.get("shard")), _number(raw.get("seq"))) if raw else (None, None)
        if shard != p.shard or isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            return False
        record = self._get(record_pk(p.shard), seq_sk(seq))
        return record is not None and is_sealed_form(_record_from_raw(record), p)

    def _delete_entry_if_unchanged(self, p: PendingEntry) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client.delete_item(
                TableName=self._table, Key=key(queue_pk(p.shard), queue_sk(p.written_at, p.entry_id)),
                ConditionExpression="entry_hash = :h", ExpressionAttributeValues={":h": {"S": p.entry_hash}})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    # ------------------------------------------------------------------ reads
    def head(self, shard: int) -> tuple[int, str] | None:
        """(seq, hash) of the chain's last sealed record, or None before its first record."""
        raw = self._get(head_pk(self._check_shard(shard)), HEAD_SK)
        if raw is None:
            return None
        return _number(raw.get("seq")), raw.get("hash", {}).get("S", "")  # type: ignore[return-value]

    def records(self, shard: int, after_seq: int = 0, limit: int = 100) -> list[AuditRecord]:
        """Up to ``limit`` sealed records of one chain with seq > ``after_seq``, ascending. Fewer: the end."""
        return list(self._iter(self._check_shard(shard), after_seq, None, limit))

    def pending(self, shard: int, limit: int = 100, written_before: str | None = None) -> list[PendingEntry]:
        """Up to ``limit`` unsealed entries of one chain, oldest first (optionally only those written before an
        ISO time)."""
        hi = "~" if written_before is None else written_before  # '~' sorts after every timestamp
        kwargs: dict[str, Any] = dict(
            TableName=self._table, KeyConditionExpression="pk = :pk AND sk < :hi",
            ExpressionAttributeValues={":pk": {"S": queue_pk(self._check_shard(shard))}, ":hi": {"S": hi}},
            ConsistentRead=True, Limit=limit)
        return [pending_from_image(raw) for raw in self._call("query", **kwargs).get("Items", [])]

    def marker(self, entry_id: str) -> tuple[int, int] | None:
        """(shard, seq) an entry was sealed as, or None."""
        raw = self._get(marker_pk(entry_id), MARKER_SK)
        if raw is None:
            return None
        return _number(raw.get("shard")), _number(raw.get("seq"))  # type: ignore[return-value]

    def verify(self, shard: int) -> VerifyReport:
        """The whole chain from genesis against its head (tests and small chains; the admin route and the
        monitor use ``verify_range`` from a checkpoint). A missing head with records present is reported."""
        head = self.head(shard)
        if head is None:
            return verify_chain(self._iter(shard, 0, None, None), head=(0, GENESIS_HASH))
        if not isinstance(head[0], int) or head[0] < 0:
            return VerifyReport(False, 1, "broken_link")
        return verify_chain(self._iter(shard, 0, head[0], None), head=head)

    def verify_all(self) -> dict[int, VerifyReport]:
        return {shard: self.verify(shard) for shard in range(self.shards)}

    def verify_range(self, shard: int, after_seq: int, after_hash: str,
                     limit: int) -> tuple[VerifyReport, tuple[int, str] | None]:
        """At most ``limit`` records after a checkpoint (``after_seq`` hashing to ``after_hash``); checked against
        the head when they reach it. Returns the verdict and the head read."""
        shard = self._check_shard(shard)
        head = self.head(shard)
        if head is not None and (not isinstance(head[0], int) or head[0] < 0):
            return VerifyReport(False, after_seq + 1, "broken_link", 0, after_seq, after_hash), head
        head_seq = head[0] if head is not None else 0
        if head is None and after_seq == 0:  # no head: no record may exist either
            return verify_chain(self._iter(shard, 0, None, 1), head=(0, GENESIS_HASH)), head
        if head_seq < after_seq:  # the head went back behind a verified checkpoint: rolled back
            return VerifyReport(False, head_seq + 1, "broken_link", 0, after_seq, after_hash), head
        upto = min(head_seq, after_seq + limit)
        report = verify_chain(self._iter(shard, after_seq, upto, None),
                              head=head if upto == head_seq and head is not None else None,
                              start_seq=after_seq + 1, start_hash=after_hash)
        return report, head

    def verify_segment(self, shard: int, after_seq: int, after_hash: str, upto_seq: int) -> VerifyReport:
        """Records ``after_seq``+1 .. ``upto_seq`` against each other, from a known (seq, hash); no head check."""
        return verify_chain(self._iter(self._check_shard(shard), after_seq, upto_seq, None),
                            start_seq=after_seq + 1, start_hash=after_hash)

    def checkpoint(self, shard: int, kind: str = CHECK_SK) -> Checkpoint:
        raw = self._get(check_pk(self._check_shard(shard)), kind)
        if raw is None:
            return Checkpoint()
        s = lambda name: raw.get(name, {}).get("S")  # noqa: E731
        return Checkpoint(seq=_number(raw.get("seq")) or 0, hash=s("hash") or GENESIS_HASH,  # type: ignore[arg-type]
                          verified_at=s("verified_at"), problem=s("problem"),
                          first_bad_seq=_number(raw.get("first_bad_seq")),  # type: ignore[arg-type]
                          version=_number(raw.get("version")) or 0)  # type: ignore[arg-type]

    def save_checkpoint(self, shard: int, new: Checkpoint, previous: Checkpoint, kind: str = CHECK_SK) -> bool:
        """Store ``new`` if the stored checkpoint is still ``previous`` (False: another verifier moved it).
        ``kind``: STATE (the incremental checkpoint) or RESCAN (the from-genesis pass's cursor)."""
        from botocore.exceptions import ClientError

        item = {"pk": {"S": check_pk(shard)}, "sk": {"S": kind}, "shard": {"N": str(shard)},
                "seq": {"N": str(new.seq)}, "hash": {"S": new.hash}, "version": {"N": str(previous.version + 1)},
                "verified_at": {"S": new.verified_at or iso_us(self.clock())}}
        if new.problem:
            item["problem"] = {"S": new.problem}
        if new.first_bad_seq is not None:
            item["first_bad_seq"] = {"N": str(new.first_bad_seq)}
        kwargs: dict[str, Any] = dict(TableName=self._table, Item=item)
        if previous.version:
            kwargs.update(ConditionExpression="version = :v", ExpressionAttributeValues={":v": {"N": str(previous.version)}})
        else:
            kwargs.update(ConditionExpression="attribute_not_exists(pk)")
        try:
            self._call("put_item", **kwargs)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise

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


def _details(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # hashes differently from any object: reported as altered / not intact


def _s(raw: dict, name: str) -> str:
    value = raw.get(name)
    return value.get("S", "") if isinstance(value, dict) else ""


def is_pending_key(keys: dict) -> bool:
    return _s(keys, "pk").startswith("AUDITQ#")


def pending_from_image(raw: dict) -> PendingEntry:
    """A pending entry from its item in DynamoDB's wire format (a Query item or a stream NewImage). Lenient: a
    malformed entry still becomes one, which is then not ``intact()``."""
    return PendingEntry(
        shard=_number(raw.get("shard")),  # type: ignore[arg-type]
        entry_id=_s(raw, "entry_id"), written_at=_s(raw, "written_at"), at=_s(raw, "at"), actor=_s(raw, "actor"),
        action=_s(raw, "action"),
        subject_ids=tuple(x.get("S", "") for x in (raw.get("subject_ids") or {}).get("L", [])),
        amount_msat=_number(raw.get("amount_msat")),  # type: ignore[arg-type]
        details=_details(_s(raw, "details_json")), entry_hash=_s(raw, "entry_hash"),
    )


def _record_from_raw(raw: dict) -> AuditRecord:
    """Lenient on purpose: a tampered or malformed item still becomes a record, which verify then reports."""
    return AuditRecord(
        shard=_number(raw.get("shard")),  # type: ignore[arg-type]
        seq=_number(raw.get("seq")),  # type: ignore[arg-type]  # non-integral -> verify reports "altered"
        at=_s(raw, "at"), actor=_s(raw, "actor"), action=_s(raw, "action"),
        subject_ids=tuple(x.get("S", "") for x in (raw.get("subject_ids") or {}).get("L", [])),
        amount_msat=_number(raw.get("amount_msat")),  # type: ignore[arg-type]
        details=_details(_s(raw, "details_json")), prev_hash=_s(raw, "prev_hash"), hash=_s(raw, "hash"),
        version=_number(raw.get("v")),  # type: ignore[arg-type]
        entry_id=_s(raw, "entry_id"), written_at=_s(raw, "written_at"),
    )


__all__ = ["DynamoAuditStore", "AuditHeadMoved", "AuditChainBroken", "AuditModels", "audit_models", "SealOutcome",
           "pending_from_image", "is_pending_key", "epoch_of"]
