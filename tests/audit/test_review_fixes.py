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

from tests.audit.test_sealer_function import handler  # noqa: F401  (the sealer function, a fixture)
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


# ------------------------------------------------------------------ 1: a pre-made seal marker drops nothing
def test_a_premade_seal_marker_does_not_drop_a_genuine_record(asvc, ddb, handler, capsys):
    """Transfer ids are predictable (deposits by txid:vout, inbound by payment hash, payments by idempotency key):
    a table writer may create AUDITID#<id> before the mutation commits. The genuine entry must not be taken for
    already sealed: it is reported as changed (the AuditEntriesChanged alarm) and kept pending for the operator."""
    from satflow.app.accounts import ADMIN

    svc = asvc
    predicted = "dep_txid0123:0"
    ddb.put_item(TableName=TABLE, Item={"pk": {"S": marker_pk(predicted)}, "sk": {"S": "SEALED"},
                                        "shard": {"N": "0"}, "seq": {"N": "1"}, "sealed_at": {"S": "x"}})
    entry = AuditEntry(at=AT, actor="system", action="ledger.deposit_credit.posted",
                       subject_ids=("acc_victim", "system", predicted), amount_msat=5_000_000)
    _p, items = svc.audit.prepare(entry, 0, entry_id=predicted)
    run_or_raise(ddb, items)  # the mutation's transaction
    [image] = pending_items(ddb, svc.audit.shards)

    report = audit.seal_entries(svc, [("seq-1", pending_from_image(image))], from_stream=True)

    assert report.changed == 1 and report.duplicates == 0 and report.sealed == 0
    assert all_records(svc) == [] and len(pending_items(ddb, svc.audit.shards)) == 1  # kept, not deleted
    v = audit.verify_step(svc, 10_000, rescan_budget=10_000, unsealed_bound_s=0)
    assert not v["ok"] and v["shards"][0]["problem"] == "unsealed"
    # the sweeper meets it again (alarm again), never seals it under the fake marker, never deletes it
    swept = audit.sweep(svc, grace_s=0)
    assert swept.changed == 1 and swept.sealed == 0 and len(pending_items(ddb, svc.audit.shards)) == 1
    # and the sealer function turns it into the AuditEntriesChanged metric
    handler._publish(report)
    handler.metrics.flush_metrics()
    assert "AuditEntriesChanged" in capsys.readouterr().out


def test_a_redelivered_entry_is_still_a_plain_duplicate(asvc, ddb):
    svc = asvc
    audit.record_admin_action(svc, AuditEntry(at=AT, actor="admin", action="account.updated", subject_ids=("acc_a",)))
    [image] = pending_items(ddb, svc.audit.shards)
    first = audit.seal_entries(svc, [("seq-1", pending_from_image(image))], from_stream=True)
    again = audit.seal_entries(svc, [("seq-1", pending_from_image(image)), ("seq-1", pending_from_image(image))],
                               from_stream=True)
    assert (first.sealed, again.duplicates, again.changed) == (1, 2, 0)
    forged = pending_from_image({**image, "amount_msat": {"N": "7"}})
    forged = forged.__class__(**{**forged.__dict__, "entry_hash": pending_hash(forged)})
    assert audit.seal_entries(svc, [("seq-2", forged)], from_stream=True).changed == 1  # same id, other content


# ------------------------------------------------------------------ 2: the sweeper sealing a forged copy first
def test_a_forged_entry_sealed_by_the_sweeper_first_is_reported_when_the_stream_image_arrives(asvc, ddb):
    svc = asvc
    audit.record_admin_action(svc, AuditEntry(at=AT, actor="admin", action="adjustment.credit",
                                              subject_ids=("acc_victim",), amount_msat=1_000))
    [item] = pending_items(ddb, svc.audit.shards)
    committed_image = copy.deepcopy(item)  # what the stream carries (the attacker cannot touch it)
    p = pending_from_image(item)  # a table writer changes the amount and recomputes the (unkeyed) entry_hash
    forged = p.__class__(**{**p.__dict__, "amount_msat": 999_999_000, "entry_hash": ""})
    item["amount_msat"] = {"N": str(forged.amount_msat)}
    item["entry_hash"] = {"S": pending_hash(forged)}
    ddb.put_item(TableName=TABLE, Item=item)
    sweep = audit.sweep(svc, grace_s=0)  # the stream lags: the sweeper seals the stored (forged) copy first
    assert sweep.sealed == 1

    report = audit.seal_entries(svc, [("seq-1", pending_from_image(committed_image))], from_stream=True)

    assert report.changed == 1 and report.duplicates == 0  # was a silent "duplicate" before the fix


def test_the_sweeper_grace_outlasts_the_seal_lag_alarm():
    """The sweeper seals the table's copy (which a table writer may have forged with a recomputed hash); it must
    only do so after the lag alarm (threshold x evaluation periods, template.yaml) has had time to fire."""
    from satflow_dev.runtime.template import load_template_document
    from tests.audit.test_sealer_function import ROOT

    alarm = load_template_document(ROOT / "template.yaml")["Resources"]["AuditSealLagAlarm"]["Properties"]
    fires_after = alarm["Threshold"] + alarm["Period"] * alarm.get("DatapointsToAlarm", alarm["EvaluationPeriods"])
    assert audit.SWEEP_GRACE_S > fires_after
    assert audit.SWEEP_GRACE_S < audit.UNSEALED_BOUND_S


# ------------------------------------------------------------------ 3: the end of a chain cut off ahead of verify
def test_cutting_off_the_end_of_a_chain_ahead_of_the_checkpoint_is_reported_truncated(asvc, ddb):
    from satflow.app.accounts import ADMIN

    svc = asvc
    seal_n(svc, 3)
    assert audit.verify_audit(svc, ADMIN)["ok"]  # the checkpoint is now at seq 3
    seal_n(svc, 2)  # seq 4 and 5: sealed, not yet verified
    shard = next(s for s in range(svc.audit.shards) if svc.audit.head(s))
    r4, r5 = svc.audit.records(shard, 3)
    # a table writer deletes record 5 and its marker and winds the head back to (4, hash 4): a consistent chain
    ddb.delete_item(TableName=TABLE, Key={"pk": {"S": record_pk(shard)}, "sk": {"S": seq_sk(5)}})
    ddb.delete_item(TableName=TABLE, Key={"pk": {"S": marker_pk(r5.entry_id)}, "sk": {"S": "SEALED"}})
    ddb.update_item(TableName=TABLE, Key={"pk": {"S": head_pk(shard)}, "sk": {"S": "HEAD"}},
                    UpdateExpression="SET seq = :s, #h = :h", ExpressionAttributeNames={"#h": "hash"},
                    ExpressionAttributeValues={":s": {"N": "4"}, ":h": {"S": r4.hash}})

    for _ in range(2):  # and it stays reported
        v = audit.verify_step(svc, 10_000, rescan_budget=10_000)
        [chain] = [s for s in v["shards"] if s["shard"] == shard]
        assert not v["ok"] and (chain["problem"], chain["first_bad_seq"]) == ("truncated", 5)

    # sealing on over the cut (a new record 5 with another hash): the mark does not move back, the tail differs
    seal_n(svc, 1)
    v = audit.verify_step(svc, 10_000, rescan_budget=10_000)
    [chain] = [s for s in v["shards"] if s["shard"] == shard]
    assert (chain["problem"], chain["first_bad_seq"]) == ("broken_link", 5)


def test_the_sealed_mark_only_moves_forward_and_an_honest_chain_verifies(asvc):
    svc = asvc
    seal_n(svc, 2)
    shard = next(s for s in range(svc.audit.shards) if svc.audit.head(s))
    [_, r2] = svc.audit.records(shard)
    svc.audit._raise_sealed_mark(shard, svc.audit.records(shard)[0])  # a late, lower update changes nothing
    assert svc.audit.sealed_mark(shard) == (2, r2.hash)
    assert audit.verify_step(svc, 10_000, rescan_budget=10_000)["ok"]
