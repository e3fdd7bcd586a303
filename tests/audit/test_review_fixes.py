"""Regression tests for the audit review's findings (each failed before its fix):

1. a pre-made seal marker (entry ids are predictable) made the sealer drop a genuine entry as a "duplicate";
2. an entry forged in the table and sealed by the sweeper first made the genuine stream image a "duplicate";
3. cutting off the end of a chain ahead of the verified checkpoint (record + marker deleted, head wound back) passed;
6. one malformed chain head stopped sealing of every chain.
"""
from __future__ import annotations

import copy

from satflow.adapters.dynamodb.audit import (head_pk, marker_pk, pending_from_image, queue_pk, record_pk,
                                             seq_sk)
from satflow.adapters.dynamodb.transaction import run_or_raise
from satflow.app import audit
from satflow.domain.audit import AuditEntry, pending_hash
from satflow.domain.ledger import shard_for

from tests.conftest import TABLE

AT = "2026-12-04T10:00:00.000Z"


def pending_items(client, shards: int) -> list[dict]:
    out: list[dict] = []
    for s in range(shards):
        out += client.query(TableName=TABLE, KeyConditionExpression="pk = :p",
                            ExpressionAttributeValues={":p": {"S": queue_pk(s)}})["Items"]
    return out


def all_records(svc) -> list:
    return [r for s in range(svc.audit.shards) for r in svc.audit.records(s)]


def seal_n(svc, n: int, subject: str = "acc_x") -> None:
    for i in range(n):
        audit.record_admin_action(svc, AuditEntry(at=AT, actor="admin", action="account.updated",
                                                  subject_ids=(subject,), details={"i": i}))
    audit.sweep(svc, grace_s=0)


# ------------------------------------------------------------------ 6: one malformed chain stops no other chain
def test_a_malformed_chain_head_breaks_only_that_chain(asvc, ddb):
    svc = asvc
    subject = next(f"acc_{i}" for i in range(100) if shard_for(f"acc_{i}", svc.audit.shards) == 0)
    seal_n(svc, 1, subject=subject)
    ddb.update_item(TableName=TABLE, Key={"pk": {"S": head_pk(0)}, "sk": {"S": "HEAD"}},
                    UpdateExpression="SET #h = :h", ExpressionAttributeNames={"#h": "hash"},
                    ExpressionAttributeValues={":h": {"S": "not-a-hash"}})  # seal_record raises ValueError on it
    for i in range(40):  # new entries on every chain
        audit.record_admin_action(svc, AuditEntry(at=AT, actor="admin", action="account.updated",
                                                  subject_ids=(f"acc_{i}",)))
    on_chain_0 = len(svc.audit.pending(0, 100))
    assert on_chain_0 and all(svc.audit.pending(s, 100) for s in range(1, svc.audit.shards))

    report = audit.sweep(svc, grace_s=0)  # raised ValueError before the fix, leaving every later chain unsealed

    assert report.broken_shards == [0] and report.failed == []
    assert report.sealed == 40 - on_chain_0
    assert len(svc.audit.pending(0, 100)) == on_chain_0  # kept for the operator
    assert all(svc.audit.pending(s, 100) == [] for s in range(1, svc.audit.shards))
    # the stream path: only the broken chain is left out, and no batch item failure makes Lambda retry the others
    audit.record_admin_action(svc, AuditEntry(at=AT, actor="admin", action="account.updated", subject_ids=(subject,)))
    other = next(f"acc_{i}" for i in range(100) if shard_for(f"acc_{i}", svc.audit.shards) == 1)
    audit.record_admin_action(svc, AuditEntry(at=AT, actor="admin", action="account.updated", subject_ids=(other,)))
    images = sorted(pending_items(ddb, svc.audit.shards), key=lambda i: i["written_at"]["S"])[-2:]
    stream = audit.seal_entries(svc, [(f"seq-{n}", pending_from_image(i)) for n, i in enumerate(images)],
                                from_stream=True)
    assert stream.broken_shards == [0] and stream.failed == [] and stream.sealed == 1
