"""Use cases: recording audit entries with a mutation, sealing them into their chains, listing and verifying the
audit log (admin). Design and threat model: docs/audit.md.

``svc.audit`` is a ``DynamoAuditStore`` (prepare / append / seal / pending / records / verify_range / checkpoint,
attribute ``shards``).
"""
from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

from satflow.domain import errors
from satflow.domain.accounts import Principal, require_admin
from satflow.domain.audit import GENESIS_HASH, AuditEntry, Checkpoint, PendingEntry, backoff_s, epoch_of, iso_us

from .ports import Services

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_PAGE = 100
DEFAULT_PAGE = 50
# The sweeper seals entries the stream path has not sealed after this long. It seals the TABLE's copy, which a table
# writer may have changed (recomputing its unkeyed entry_hash), so it only acts once the AuditSealLagSeconds alarm
# (> 300 s for 5 one-minute periods: about 600 s) has fired: a stream path down is then always an alarm first, and
# when the stream image arrives after all it is compared with what the sweeper sealed (AuditEntriesChanged).
SWEEP_GRACE_S = 660
UNSEALED_BOUND_S = 900  # an entry still unsealed after this long is a verification problem ("unsealed")
ROUTE_VERIFY_BUDGET = 2_000  # records one GET /v1/admin/audit/verify may read (spread over the chains)
JOB_VERIFY_BUDGET = 200_000  # records one scheduled verify run may read from the checkpoints on
JOB_RESCAN_BUDGET = 200_000  # and from genesis (the re-verification behind the checkpoints)


def _store(svc: Services) -> Any:
    store = getattr(svc, "audit", None)
    if store is None:  # fail closed: a money mutation is never written without its audit record
        raise RuntimeError("the audit store is not configured (Services.audit)")
    return store


def with_audit(svc: Services, entry: AuditEntry, execute: Callable[[Sequence[Any]], T], attempts: int = 5, *,
               shard: int | None = None, retry_on: tuple[type[BaseException], ...] = (errors.TransientError,),
               sleep: Callable[[float], None] = time.sleep) -> T:
    """Run ``execute(extra)`` - ONE transaction that must include ``extra`` - with ``entry`` recorded inside it
    (its pending entry: no read, sealed into the chain later). On a retryable error (throttling, a transaction
    conflict) the whole transaction is retried with a fresh entry, at most ``attempts`` times; the last error
    propagates.

    ``execute`` must be idempotent across retries. For a non-idempotent ``execute`` pass a ``retry_on`` that only
    names definite cancellations (e.g. ``(AuditHeadMoved,)``, which the write path no longer raises: no retry)."""
    store = _store(svc)
    for attempt in range(1, attempts + 1):
        try:
            _pending, extra = store.prepare(entry, shard)
            return execute(extra)
        except retry_on:
            if attempt >= attempts:
                raise
            sleep(backoff_s(attempt))
    raise AssertionError("unreachable")  # attempts >= 1


def record_admin_action(svc: Services, entry: AuditEntry) -> PendingEntry:
    """An admin action with no transaction of its own (e.g. sanctions.blocked): its entry written on its own."""
    return _store(svc).append(entry)


# ============================================================================================== sealing
@dataclass
class SealReport:
    sealed: int = 0
    duplicates: int = 0  # already sealed as itself (stream redelivery, or the other path got there first)
    changed: int = 0  # the stored entry was changed/deleted after commit, or its id's marker is not its record
    refused: int = 0  # not intact (hash does not match content): left unsealed, reported by verify
    broken_shards: list[int] = field(default_factory=list)  # a record beyond the head, a malformed head: not sealed
    failed: list[Any] = field(default_factory=list)  # the caller's ids of the first entry of each chain to retry
    lag_s: float = 0.0  # the oldest sealed (stream) or still unsealed (sweep) entry's age, in seconds
    head_retries: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"sealed": self.sealed, "duplicates": self.duplicates, "changed": self.changed,
                "refused": self.refused, "broken_shards": self.broken_shards, "failed": len(self.failed),
                "lag_s": round(self.lag_s, 3), "head_retries": self.head_retries}


def seal_entries(svc: Services, entries: Sequence[tuple[Any, PendingEntry]], *, from_stream: bool) -> SealReport:
    """Seal pending entries, given in commit order with an id of the caller's (a stream sequence number), each
    chain on its own: a chain that fails transiently reports its first entry's id in ``failed`` (the stream
    retries from there; what was sealed meanwhile is skipped then as a duplicate); a broken chain - a record beyond
    its head, or any other error from that chain alone (a malformed head) - is logged and left: its entries stay
    pending (the sweeper tries again each minute; AuditChainsBroken, the lag alarm and verify report it), no batch
    item failure is reported for it, and the other chains are sealed as usual."""
    store = _store(svc)
    report = SealReport()
    by_shard: dict[int, list[tuple[Any, PendingEntry]]] = {}
    for ident, p in entries:
        if isinstance(p.shard, int) and not isinstance(p.shard, bool) and 0 <= p.shard < store.shards:
            by_shard.setdefault(p.shard, []).append((ident, p))
        else:
            report.refused += 1
            log.error("audit entry on no chain of ours left unsealed", extra={"entry_id": p.entry_id})
    now = store.clock()
    for shard, group in sorted(by_shard.items()):
        try:
            outcome = store.seal(shard, [p for _, p in group], from_stream=from_stream)
        except errors.AuditChainBroken as exc:
            report.broken_shards.append(shard)
            log.error("audit chain broken: sealing stopped", extra={"shard": shard, "error": str(exc)})
            continue
        except errors.TransientError as exc:
            report.failed.append(group[0][0])
            log.warning("audit sealing deferred", extra={"shard": shard, "error": str(exc)})
            continue
        except Exception as exc:  # noqa: BLE001 - one malformed chain (e.g. a head that is no hash) must not stop the others
            report.broken_shards.append(shard)
            log.exception("audit chain unsealable: sealing stopped", extra={"shard": shard, "error": repr(exc)})
            continue
        report.sealed += len(outcome.sealed)
        report.duplicates += len(outcome.duplicates)
        report.changed += len(outcome.changed)
        report.refused += len(outcome.refused)
        report.head_retries += outcome.head_retries
        for p in outcome.changed:
            log.error("audit entry changed after commit, or its seal marker is not its record; the committed "
                      "content is sealed or, if another record holds its id, the entry is kept for the operator",
                      extra={"shard": shard, "entry_id": p.entry_id})
        for p in outcome.refused:
            log.error("audit entry not intact; left unsealed", extra={"shard": shard, "entry_id": p.entry_id})
        if outcome.sealed:
            last = outcome.sealed[-1]
            # The external anchor: a log line per sealed chunk holds the chain's new head (docs/audit.md).
            log.info("audit chain sealed", extra={"shard": shard, "seq": last.seq, "hash": last.hash,
                                                  "sealed": len(outcome.sealed)})
            oldest = min((epoch_of(r.written_at) or now) for r in outcome.sealed)
            report.lag_s = max(report.lag_s, now - oldest)
    return report


def sweep(svc: Services, grace_s: float = SWEEP_GRACE_S, limit_per_chain: int = 1_000) -> SealReport:
    """The scheduled safety net: seal every entry written more than ``grace_s`` ago that the stream path has not
    sealed (stream records dropped after retries, a sealer outage), oldest first. ``lag_s`` is then the age of the
    oldest entry this sweep found unsealed in any chain, sealed by it or still waiting (the AuditSealLagSeconds
    metric). ``grace_s=0`` seals everything
    (tests)."""
    store = _store(svc)
    cutoff = iso_us(store.clock() - grace_s) if grace_s > 0 else None
    report = SealReport()
    for shard in range(store.shards):
        while True:
            batch = store.pending(shard, limit_per_chain, written_before=cutoff)
            if not batch:
                break
            step = seal_entries(svc, [(p.entry_id, p) for p in batch], from_stream=False)
            for name in ("sealed", "duplicates", "changed", "refused", "head_retries"):
                setattr(report, name, getattr(report, name) + getattr(step, name))
            report.broken_shards += step.broken_shards
            report.failed += step.failed
            report.lag_s = max(report.lag_s, step.lag_s)  # what the sweeper had to seal was waiting that long
            if len(batch) < limit_per_chain or step.sealed + step.duplicates == 0:
                break  # the end, or only entries this sweep cannot seal: the next sweep tries again
    now = store.clock()
    for shard in range(store.shards):
        oldest = store.pending(shard, 1)
        if oldest:
            report.lag_s = max(report.lag_s, now - (epoch_of(oldest[0].written_at) or 0))
    return report


# ============================================================================================== reading
@dataclass(frozen=True)
class AuditPage:
    items: list[AuditRecord]
    next_cursor: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"items": [r.to_dict() for r in self.items], "next_cursor": self.next_cursor}


def list_audit(svc: Services, principal: Principal, shard: object = None, limit: object = None,
               cursor: object = None) -> AuditPage:
    """GET /v1/admin/audit?shard=&limit=&cursor= - records in chain order (shard ascending, then seq ascending).
    With ``shard`` only that chain; without, all chains one after another. ``cursor`` is opaque."""
    require_admin(principal)
    store = _store(svc)
    limit = _parse_int(limit, "limit", DEFAULT_PAGE)
    if not 1 <= limit <= MAX_PAGE:
        raise errors.ValidationError(f"limit must be an integer from 1 to {MAX_PAGE}", field="limit")
    fixed = None if shard is None or shard == "" else _parse_int(shard, "shard", 0)
    if fixed is not None and not 0 <= fixed < store.shards:
        raise errors.ValidationError(f"shard must be an integer from 0 to {store.shards - 1}", field="shard")
    current, after = (fixed or 0), 0
    if cursor is not None and cursor != "":
        current, after = _decode_cursor(cursor, store.shards)
        if fixed is not None and current != fixed:
            raise errors.ValidationError("cursor belongs to another shard", field="cursor")
    last_shard = fixed if fixed is not None else store.shards - 1
    items: list[AuditRecord] = []
    while True:
        want = limit - len(items)
        page = store.records(current, after, want)
        items.extend(page)
        if len(page) == want:  # full: there may be more in this chain
            return AuditPage(items, _encode_cursor(current, page[-1].seq))
        if current >= last_shard:
            return AuditPage(items, None)
        current, after = current + 1, 0


def verify_audit(svc: Services, principal: Principal, budget: int = ROUTE_VERIFY_BUDGET) -> dict[str, Any]:
    """GET /v1/admin/audit/verify: one bounded verification step from each chain's stored checkpoint (at most
    ``budget`` records in all), then the stored state of every chain. ``complete`` is false while some chain is
    not yet verified up to its head: call again (the scheduled job keeps checkpoints near the heads)."""
    require_admin(principal)
    return verify_step(svc, budget)


def verify_step(svc: Services, budget: int, *, unsealed_bound_s: float = UNSEALED_BOUND_S,
                rescan_budget: int = 0) -> dict[str, Any]:
    """Advance every chain's verified checkpoint by at most ``budget // shards`` records (alteration, removal,
    reordering, a broken link, a head behind its checkpoint), and report an entry left unsealed longer than
    ``unsealed_bound_s``, and a head below the chain's sealed mark (``truncated``: the end of the chain cut off,
    the head wound back, even ahead of the checkpoint). A chain with a problem keeps its last good checkpoint and is verified again from there
    on every step (a repaired chain clears). The checkpoint is published in the log (the external anchor).

    ``rescan_budget`` (the scheduled job): also move each chain's from-genesis re-verification by at most
    ``rescan_budget // shards`` records; arriving at the checkpoint, its hash must equal the checkpoint's, else the
    history behind the checkpoint was rewritten. A problem it finds stays reported until a later pass is clean."""
    store = _store(svc)
    per_chain = max(1, budget // store.shards)
    now = store.clock()
    shards = []
    for shard in range(store.shards):
        cp = store.checkpoint(shard)
        mark = store.sealed_mark(shard)  # read BEFORE the head: honestly, the head is then never below it
        report, head = store.verify_range(shard, cp.seq, cp.hash, per_chain)
        head_seq = head[0] if head is not None and isinstance(head[0], int) else 0
        problem, first_bad = report.problem, report.first_bad_seq
        if report.ok and mark is not None:
            problem, first_bad = _check_sealed_mark(store, shard, mark, head_seq)
        new = cp
        if report.ok:
            new = Checkpoint(report.last_seq, report.last_hash, iso_us(now), None, None, cp.version)
        rescan = _rescan(store, shard, new, rescan_budget // store.shards, now) if rescan_budget else \
            store.checkpoint(shard, "RESCAN")
        if report.ok and not problem and rescan.problem:
            problem, first_bad = rescan.problem, rescan.first_bad_seq
        oldest = store.pending(shard, 1)
        oldest_at = oldest[0].written_at if oldest else None
        if report.ok and not problem and oldest and now - (epoch_of(oldest_at) or 0) > unsealed_bound_s:
            problem = "unsealed"
        if problem:
            new = Checkpoint(new.seq, new.hash, iso_us(now), problem, first_bad, cp.version)
            log.error("audit chain verification failed", extra={"shard": shard, "problem": problem,
                                                                "first_bad_seq": first_bad, "oldest_unsealed_at": oldest_at})
        if new != cp and store.save_checkpoint(shard, new, cp):
            log.info("audit checkpoint", extra={"shard": shard, "seq": new.seq, "hash": new.hash})
        shards.append({"shard": shard, "ok": problem is None, "first_bad_seq": first_bad, "problem": problem,
                       "checked": report.checked, "last_seq": new.seq, "head_seq": head_seq,
                       "complete": problem is None and new.seq == head_seq, "oldest_unsealed_at": oldest_at})
    return {"ok": all(s["ok"] for s in shards), "complete": all(s["complete"] for s in shards),
            "records": sum(s["last_seq"] for s in shards), "shards": shards}


def _check_sealed_mark(store: Any, shard: int, mark: tuple[Any, str], head_seq: int) -> tuple[str | None, int | None]:
    """The chain against the highest (seq, hash) its sealer ever sealed (the sealed mark, which only moves forward):
    a head below it means records were cut off the end and the head wound back (``truncated``); the record at the
    mark must still carry the mark's hash (else ``broken_link``: the tail was rewritten). One read per chain."""
    seq, mark_hash = mark
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        return "truncated", 1  # a mark that is no seq: someone wrote it
    if head_seq < seq:
        return "truncated", head_seq + 1
    at_mark = store.records(shard, seq - 1, 1)
    if not at_mark or at_mark[0].seq != seq or at_mark[0].hash != mark_hash:
        return "broken_link", seq
    return None, None


def _rescan(store: Any, shard: int, checkpoint: Checkpoint, limit: int, now: float) -> Checkpoint:
    """One bounded stretch of the from-genesis pass of one chain; returns its stored state."""
    cursor = store.checkpoint(shard, "RESCAN")
    if checkpoint.seq == 0 or limit < 1:
        return cursor
    start = cursor if cursor.seq < checkpoint.seq else Checkpoint(problem=cursor.problem,
                                                                   first_bad_seq=cursor.first_bad_seq,
                                                                   version=cursor.version)
    upto = min(checkpoint.seq, start.seq + limit)
    report = store.verify_segment(shard, start.seq, start.hash, upto)
    if not report.ok:  # found behind the checkpoint: sticky until a clean pass
        new = Checkpoint(0, GENESIS_HASH, iso_us(now),
                         report.problem, report.first_bad_seq, cursor.version)
        log.error("audit chain rewritten behind its checkpoint", extra={"shard": shard, "problem": report.problem,
                                                                         "first_bad_seq": report.first_bad_seq})
    elif upto == checkpoint.seq and report.last_hash != checkpoint.hash:
        new = Checkpoint(0, GENESIS_HASH, iso_us(now), "broken_link", checkpoint.seq, cursor.version)
        log.error("audit chain rewritten behind its checkpoint", extra={"shard": shard, "seq": checkpoint.seq})
    elif upto == checkpoint.seq:  # a clean pass up to the checkpoint: start over, problem cleared
        new = Checkpoint(0, GENESIS_HASH, iso_us(now), None, None, cursor.version)
    else:
        new = Checkpoint(report.last_seq, report.last_hash, iso_us(now), start.problem, start.first_bad_seq,
                         cursor.version)
    store.save_checkpoint(shard, new, cursor, "RESCAN")
    return new


def _parse_int(value: object, name: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise errors.ValidationError(f"{name} must be an integer", field=name)


def _encode_cursor(shard: int, seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"s": shard, "q": seq}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: object, shards: int) -> tuple[int, int]:
    try:
        if not isinstance(cursor, str) or len(cursor) > 200:
            raise ValueError(cursor)
        data = json.loads(base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode()))
        shard, seq = data["s"], data["q"]
        for v in (shard, seq):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(v)
        if shard >= shards:
            raise ValueError(shard)
        return shard, seq
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.ValidationError("cursor is not valid", field="cursor") from exc
