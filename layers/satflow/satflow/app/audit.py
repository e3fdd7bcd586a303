"""Use cases: recording audit records with a mutation, listing and verifying the audit log (admin).

``svc.audit`` is a ``DynamoAuditStore`` (prepare / append / records / verify / verify_all, attribute ``shards``).
"""
from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

from satflow.domain import errors
from satflow.domain.accounts import Principal, require_admin
from satflow.domain.audit import AuditEntry, AuditRecord, backoff_s

from .ports import Services

T = TypeVar("T")
MAX_PAGE = 100
DEFAULT_PAGE = 50


def _store(svc: Services) -> Any:
    store = getattr(svc, "audit", None)
    if store is None:  # fail closed: a money mutation is never written without its audit record
        raise RuntimeError("the audit store is not configured (Services.audit)")
    return store


def with_audit(svc: Services, entry: AuditEntry, execute: Callable[[Sequence[Any]], T], attempts: int = 5, *,
               shard: int | None = None, retry_on: tuple[type[BaseException], ...] = (errors.TransientError,),
               sleep: Callable[[float], None] = time.sleep) -> T:
    """Run ``execute(extra)`` - ONE transaction that must include ``extra`` - with ``entry`` appended to its audit
    chain inside it. On a retryable error (the chain head moved under a concurrent writer, a transaction conflict,
    throttling) the record is prepared again on the new head and the whole transaction retried, at most
    ``attempts`` times; the last error propagates.

    ``execute`` must be idempotent across retries (ledger operations are: the transfer id is the key, and a
    replay cancels the whole transaction, so it appends no second record). For a non-idempotent ``execute`` pass
    ``retry_on=(AuditHeadMoved,)``: that one is raised only for a definitely cancelled transaction."""
    return append_in_transaction(_store(svc), entry, execute, attempts, shard=shard, retry_on=retry_on, sleep=sleep)


def append_in_transaction(store: Any, entry: AuditEntry, execute: Callable[[Sequence[Any]], T], attempts: int = 5, *,
                          shard: int | None = None,
                          retry_on: tuple[type[BaseException], ...] = (errors.TransientError,),
                          sleep: Callable[[float], None] = time.sleep) -> T:
    """:func:`with_audit` on an audit store itself (the recorded ledger holds the store, not the services)."""
    for attempt in range(1, attempts + 1):
        try:
            _record, extra = store.prepare(entry, shard)
            return execute(extra)
        except retry_on:
            if attempt >= attempts:
                raise
            sleep(backoff_s(attempt))
    raise AssertionError("unreachable")  # attempts >= 1


def record_admin_action(svc: Services, entry: AuditEntry) -> AuditRecord:
    """An admin action with no ledger transaction of its own (e.g. account.updated): appended on its own."""
    return _store(svc).append(entry)


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


def verify_audit(svc: Services, principal: Principal) -> dict[str, Any]:
    """Verify every chain against its head. ``ok`` is false when any chain shows an altered, missing, reordered
    or unlinked record; each bad chain names its first bad seq."""
    require_admin(principal)
    reports = _store(svc).verify_all()
    shards = [{"shard": shard, **report.to_dict()} for shard, report in sorted(reports.items())]
    return {"ok": all(r.ok for r in reports.values()), "records": sum(r.last_seq for r in reports.values()),
            "shards": shards}


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
