"""Counting the DynamoDB calls a piece of code makes, for tests and benchmarks (botocore
``before-parameter-build`` hook).

Every API call a botocore client makes passes the hook once, before its (possibly retried) HTTP send, so the count
is of calls the code made, not of retries botocore added. A call is "audit head" when it is a GetItem of an audit
chain head (``AUDITHEAD#...``): counted apart, because taking the chain head off the write path (issue 13 item 1)
removes exactly those."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator


@dataclass
class CallLog:
    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (operation, pks it names)

    @property
    def total(self) -> int:
        return len(self.calls)

    @property
    def audit_head_reads(self) -> int:
        return sum(1 for op, pks in self.calls if op == "GetItem" and pks and pks[0].startswith("AUDITHEAD#"))

    @property
    def excluding_audit_head(self) -> int:
        return self.total - self.audit_head_reads

    def describe(self) -> str:
        return ", ".join(f"{op}({'|'.join(p.split('#')[0] for p in pks)})" for op, pks in self.calls)


def _pks(operation: str, params: dict) -> tuple[str, ...]:
    def pk(k: dict) -> str:
        return k.get("pk", {}).get("S", "?")

    if operation in ("GetItem", "DeleteItem", "UpdateItem"):
        return (pk(params.get("Key", {})),)
    if operation == "PutItem":
        return (pk(params.get("Item", {})),)
    if operation == "BatchGetItem":
        return tuple(pk(k) for table in params.get("RequestItems", {}).values() for k in table.get("Keys", []))
    if operation == "Query":
        return tuple(v.get("S", "?") for name, v in params.get("ExpressionAttributeValues", {}).items()
                     if name == ":pk")
    if operation == "TransactWriteItems":
        out = []
        for item in params.get("TransactItems", []):
            (action, body), = item.items()
            out.append(pk(body.get("Key") or body.get("Item") or {}))
        return tuple(out)
    return ()


@contextmanager
def counting(client: Any) -> Iterator[CallLog]:
    """``with counting(ddb) as log: ...`` -> every DynamoDB call made through ``client`` inside the block."""
    log = CallLog()

    def record(model: Any, params: dict, **_: Any) -> None:
        log.calls.append((model.name, _pks(model.name, params)))

    client.meta.events.register("before-parameter-build.dynamodb", record, unique_id=f"ddb-calls-{id(log)}")
    try:
        yield log
    finally:
        client.meta.events.unregister("before-parameter-build.dynamodb", unique_id=f"ddb-calls-{id(log)}")
