"""The audit store on moto: entries written in the mutation's own transaction without a read, sealed into chains
afterwards in order, and tampering (or an entry never sealed) found in DynamoDB."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from satflow.adapters.dynamodb.audit import AuditChainBroken, head_pk, marker_pk, queue_pk, queue_sk, record_pk, seq_sk
from satflow.app.accounts import ADMIN
from satflow.app.audit import (UNSEALED_BOUND_S, list_audit, record_admin_action, sweep, verify_audit, verify_step,
                               with_audit)
from satflow.domain import errors
from satflow.domain.accounts import Principal, Scope
from satflow.domain.audit import GENESIS_HASH, AuditEntry, transfer_entry
from satflow.domain.templates import internal_transfer

from tests.conftest import SHARDS, TABLE

from .conftest import NOW, add_account
from .helpers import seal_all

USER = Principal(account_id="acc_a", scopes=frozenset({Scope.READ, Scope.SEND}))


def entry(i: int, subject: str = "acc_a", **kw) -> AuditEntry:
    fields = dict(at=NOW, actor="admin", action="account.updated", subject_ids=(subject,), amount_msat=100 * i,
                  details={"i": i})
    fields.update(kw)
    return AuditEntry(**fields)


def fill(store, n: int, shard: int = 1):
    """n entries on one chain, then sealed: the chain's records."""
    pending = [store.append(entry(i), shard=shard) for i in range(1, n + 1)]
    seal_all(store)
    records = store.records(shard, 0, 1000)
    assert [r.entry_id for r in records[-n:]] == [p.entry_id for p in pending]  # sealed in written order
    return records


def raw_record(ddb, shard: int, seq: int) -> dict:
    return ddb.get_item(TableName=TABLE, Key={"pk": {"S": record_pk(shard)}, "sk": {"S": seq_sk(seq)}})["Item"]


def put_raw(ddb, item: dict) -> None:
    ddb.put_item(TableName=TABLE, Item=item)


def delete_raw(ddb, pk: str, sk: str) -> None:
    ddb.delete_item(TableName=TABLE, Key={"pk": {"S": pk}, "sk": {"S": sk}})


def problem(store, shard: int = 1):
    r = store.verify(shard)
    return r.ok, r.first_bad_seq, r.problem


# ------------------------------------------------------------------ write path: one item, no read
def test_prepare_reads_nothing_and_returns_one_entry_item(store, ddb):
    calls = []
    ddb.meta.events.register("before-send.dynamodb", lambda request, **kw: calls.append(request))
    p, items = store.prepare(entry(1), shard=1, entry_id="tr_x")
    assert calls == [] and [i.tag for i in items] == ["audit_entry"]
    assert items[0].params["Item"]["pk"] == {"S": queue_pk(1)}
    assert items[0].params["Item"]["sk"] == {"S": queue_sk(p.written_at, "tr_x")}
    assert p.intact() and p.entry_id == "tr_x" and store.head(1) is None


def test_seal_chains_entries_in_written_order_and_moves_the_head(store):
    written = fill(store, 5)
    assert [r.seq for r in written] == [1, 2, 3, 4, 5]
    assert written[0].prev_hash == GENESIS_HASH and all(b.prev_hash == a.hash for a, b in zip(written, written[1:]))
    assert store.head(1) == (5, written[-1].hash) and store.head(0) is None
    assert store.records(1, after_seq=2, limit=2) == written[2:4]
    assert store.pending(1) == [] and store.marker(written[2].entry_id) == (1, 3)
    assert store.verify(1).ok and store.verify(0).ok


def test_default_shard_comes_from_the_first_subject(store):
    p1 = store.append(entry(1, subject="acc_zz"))
    p2 = store.append(entry(2, subject="acc_zz", actor="acc_zz"))
    assert p1.shard == p2.shard == store.shard_for(entry(1, subject="acc_zz"))
    seal_all(store)
    assert [r.seq for r in store.records(p1.shard)] == [1, 2]


def test_an_entry_is_sealed_once_however_often_it_is_delivered(store):
    pending = [store.append(entry(i), shard=1) for i in range(1, 4)]
    first = store.seal(1, pending, from_stream=True)
    again = store.seal(1, pending, from_stream=True)  # a redelivered stream batch
    swept = seal_all(store)
    assert (len(first.sealed), len(again.sealed), len(again.duplicates), swept) == (3, 0, 3, 0)
    assert [r.seq for r in store.records(1)] == [1, 2, 3] and store.verify(1).ok


def test_a_second_sealer_racing_for_the_head_retries_on_the_new_head(store, monkeypatch):
    a, b = store.append(entry(1), shard=1), store.append(entry(2), shard=1)
    real_head, calls = store.head, []

    def stale_head(shard):  # the first read sees the chain before another sealer appended b
        calls.append(shard)
        head = real_head(shard)
        if len(calls) == 1:
            store.seal(1, [b], from_stream=True)
        return head

    monkeypatch.setattr(store, "head", stale_head)
    outcome = store.seal(1, [a], from_stream=True)
    assert outcome.head_retries == 1 and len(outcome.sealed) == 1
    assert [r.entry_id for r in store.records(1)] == [b.entry_id, a.entry_id] and store.verify(1).ok


# ------------------------------------------------------------------ tampering with pending entries
def test_an_entry_deleted_before_sealing_is_still_sealed_from_the_stream_image(store, ddb):
    p = store.append(entry(1), shard=1)
    delete_raw(ddb, queue_pk(1), queue_sk(p.written_at, p.entry_id))
    outcome = store.seal(1, [p], from_stream=True)
    assert len(outcome.sealed) == 1 and outcome.changed == [p]
    (record,) = store.records(1)
    assert (record.entry_id, record.amount_msat) == (p.entry_id, 100) and store.verify(1).ok


def test_an_entry_rewritten_before_sealing_is_sealed_as_committed(store, ddb):
    """The attacker changes the amount and recomputes the entry hash: the stream image (what the mutation
    committed) is what gets sealed; the rewritten copy is evidence: its id's record is not it, so every sweep reports
    it as changed and leaves it for the operator (never sealed, never deleted)."""
    from satflow.domain.audit import pending_hash

    p = store.append(entry(1), shard=1)
    forged = type(p)(**{**p.__dict__, "amount_msat": 1})
    item = ddb.get_item(TableName=TABLE, Key={"pk": {"S": queue_pk(1)}, "sk": {"S": queue_sk(p.written_at, p.entry_id)}})["Item"]
    put_raw(ddb, {**item, "amount_msat": {"N": "1"}, "entry_hash": {"S": pending_hash(forged)}})
    outcome = store.seal(1, [p], from_stream=True)
    assert outcome.changed == [p] and [r.amount_msat for r in store.records(1)] == [100]
    swept = sweep(SimpleNamespace(audit=store), grace_s=0)  # the sweeper meets the rewritten copy: sealed under its id as other content
    assert swept.changed == 1 and swept.sealed == 0 and swept.duplicates == 0
    assert [p.amount_msat for p in store.pending(1)] == [1] and [r.amount_msat for r in store.records(1)] == [100]
    assert store.verify(1).ok


def test_the_sweeper_refuses_an_altered_entry_and_verify_reports_it_unsealed(asvc, ddb):
    store = asvc.audit
    p = store.append(entry(1), shard=1)
    key = {"pk": {"S": queue_pk(1)}, "sk": {"S": queue_sk(p.written_at, p.entry_id)}}
    ddb.update_item(TableName=TABLE, Key=key, UpdateExpression="SET amount_msat = :a",
                    ExpressionAttributeValues={":a": {"N": "1"}})
    assert seal_all(store) == 0 and len(store.pending(1)) == 1 and store.records(1) == []
    assert verify_step(asvc, 1000)["ok"]  # within the seal bound: not (yet) a problem
    now = store.clock()
    store.clock = lambda: now + UNSEALED_BOUND_S + 1
    report = verify_step(asvc, 1000)
    assert not report["ok"] and report["shards"][1]["problem"] == "unsealed"
    assert report["shards"][1]["oldest_unsealed_at"] == p.written_at


def test_an_entry_never_sealed_is_reported_after_the_bound_and_clears_once_sealed(asvc):
    store = asvc.audit
    store.append(entry(1), shard=2)
    now = store.clock()
    store.clock = lambda: now + UNSEALED_BOUND_S + 1
    report = verify_audit(asvc, ADMIN)
    assert not report["ok"] and [s["shard"] for s in report["shards"] if not s["ok"]] == [2]
    assert report["shards"][2]["problem"] == "unsealed"
    seal_all(store)
    report = verify_audit(asvc, ADMIN)
    assert report["ok"] and report["complete"] and report["records"] == 1


# ------------------------------------------------------------------ tampering with sealed records
def test_tampered_amount_is_altered(store, ddb):
    fill(store, 5)
    ddb.update_item(TableName=TABLE, Key={"pk": {"S": record_pk(1)}, "sk": {"S": seq_sk(3)}},
                    UpdateExpression="SET amount_msat = :a", ExpressionAttributeValues={":a": {"N": "99999999"}})
    assert problem(store) == (False, 3, "altered")


def test_tampered_details_and_fractional_amount_are_altered(store, ddb):
    fill(store, 3)
    item = raw_record(ddb, 1, 2)
    put_raw(ddb, {**item, "details_json": {"S": '{"i":7}'}})
    assert problem(store) == (False, 2, "altered")
    put_raw(ddb, {**item, "amount_msat": {"N": "200.5"}})
    assert problem(store) == (False, 2, "altered")
    put_raw(ddb, {**item, "entry_id": {"S": "tr_other"}})  # the link to the mutation is hashed too
    assert problem(store) == (False, 2, "altered")


def test_deleted_middle_record_is_missing(store, ddb):
    fill(store, 5)
    delete_raw(ddb, record_pk(1), seq_sk(3))
    assert problem(store) == (False, 3, "missing")


def test_deleted_last_record_is_missing_against_the_head(store, ddb):
    fill(store, 5)
    delete_raw(ddb, record_pk(1), seq_sk(5))
    assert problem(store) == (False, 5, "missing")


def test_swapped_pair_is_reordered(store, ddb):
    """Two records exchange their contents (every attribute but the key)."""
    fill(store, 6)
    a, b = raw_record(ddb, 1, 2), raw_record(ddb, 1, 5)
    put_raw(ddb, {**b, "pk": a["pk"], "sk": a["sk"]})
    put_raw(ddb, {**a, "pk": b["pk"], "sk": b["sk"]})
    assert problem(store) == (False, 2, "reordered")


def test_swapped_pair_keeping_seq_attributes_is_reordered(store, ddb):
    fill(store, 6)
    a, b = raw_record(ddb, 1, 3), raw_record(ddb, 1, 4)
    put_raw(ddb, {**b, "pk": a["pk"], "sk": a["sk"], "seq": a["seq"]})
    put_raw(ddb, {**a, "pk": b["pk"], "sk": b["sk"], "seq": b["seq"]})
    assert problem(store) == (False, 3, "reordered")


def test_deleted_head_is_reported_and_stops_sealing_that_chain(store, ddb):
    fill(store, 3)
    delete_raw(ddb, head_pk(1), "HEAD")
    assert problem(store) == (False, 1, "broken_link")
    p = store.append(entry(9), shard=1)
    with pytest.raises(AuditChainBroken):
        store.seal(1, [p], from_stream=True)
    assert store.pending(1) == [p]  # fail closed: the entry waits (the lag alarm and verify report it)


def test_rolled_back_head_is_reported(store, ddb):
    written = fill(store, 4)
    ddb.update_item(TableName=TABLE, Key={"pk": {"S": head_pk(1)}, "sk": {"S": "HEAD"}},
                    UpdateExpression="SET seq = :s, #h = :h", ExpressionAttributeNames={"#h": "hash"},
                    ExpressionAttributeValues={":s": {"N": "4"}, ":h": {"S": written[2].hash}})
    assert problem(store) == (False, 4, "broken_link")


def test_a_deleted_seal_marker_does_not_let_an_entry_be_sealed_twice_unnoticed(store, ddb):
    (record,) = fill(store, 1)
    delete_raw(ddb, marker_pk(record.entry_id), "SEALED")
    assert store.verify(1).ok  # the chain itself is intact; markers only guard against double sealing


# ------------------------------------------------------------------ with the ledger
def test_with_audit_writes_the_entry_in_the_transfer_transaction(asvc, ddb):
    add_account(asvc, "acc_a", funds=10_000)
    add_account(asvc, "acc_b")
    t = internal_transfer(transfer_id="tr_1", sender="acc_a", recipient="acc_b", amount_msat=2_500, created_at=NOW,
                          shards=SHARDS, memo="lunch")
    e = transfer_entry(t, actor="acc_a", action="transfer.internal")
    calls = []
    ddb.meta.events.register("before-send.dynamodb", lambda request, **kw: calls.append(
        request.headers.get("X-Amz-Target", b"").split(b".")[-1]))
    result = with_audit(asvc, e, lambda extra: asvc.ledger.execute(t, extra))
    assert not result.replayed and calls == [b"TransactWriteItems"]
    shard = asvc.audit.shard_for(e)
    seal_all(asvc)
    (record,) = asvc.audit.records(shard)
    assert (record.action, record.amount_msat, record.subject_ids) == ("transfer.internal", 2_500,
                                                                        ("acc_a", "acc_b", "tr_1"))
    assert asvc.ledger.balances("acc_b")[0].available == 2_500
    assert asvc.audit.verify(shard).ok

    # a replay of the same transfer is cancelled as a whole: no second entry
    again = with_audit(asvc, e, lambda extra: asvc.ledger.execute(t, extra))
    assert again.replayed and asvc.audit.pending(shard) == [] and seal_all(asvc) == 0


def test_a_failing_transfer_writes_no_entry(asvc):
    add_account(asvc, "acc_a", funds=1_000)
    add_account(asvc, "acc_b")
    too_much = internal_transfer(transfer_id="tr_big", sender="acc_a", recipient="acc_b", amount_msat=6_000,
                                 created_at=NOW, shards=SHARDS)
    calls = []

    def run(extra):
        calls.append(1)
        return asvc.ledger.execute(too_much, extra)

    e = transfer_entry(too_much, actor="acc_a", action="transfer.internal")
    with pytest.raises(errors.InsufficientFunds):
        with_audit(asvc, e, run)
    assert len(calls) == 1  # a business rejection is not retried
    assert asvc.audit.pending(asvc.audit.shard_for(e)) == [] and seal_all(asvc) == 0


def test_with_audit_retries_a_transient_failure_with_a_fresh_entry(asvc):
    calls = []

    def flaky(extra):
        calls.append(extra[0].params["Item"]["entry_id"]["S"])
        if len(calls) < 3:
            raise errors.TransientError("throttled")
        return "done"

    assert with_audit(asvc, entry(1), flaky, attempts=3, sleep=lambda s: None) == "done"
    assert len(calls) == 3 and len(set(calls)) == 3
    with pytest.raises(errors.TransientError):
        with_audit(asvc, entry(1), lambda extra: (_ for _ in ()).throw(errors.TransientError("x")), attempts=2,
                   sleep=lambda s: None)


# ------------------------------------------------------------------ admin use cases
def test_list_audit_pages_through_all_shards_then_one(asvc):
    store = asvc.audit
    for shard, n in ((0, 2), (2, 3), (3, 1)):
        fill(store, n, shard=shard)
    record_admin_action(asvc, entry(7, subject="acc_q"))
    seal_all(asvc)
    total = 7
    seen, cursor = [], None
    while True:
        page = list_audit(asvc, ADMIN, limit=2, cursor=cursor)
        seen += [(r.shard, r.seq) for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == total and seen == sorted(seen)
    only = list_audit(asvc, ADMIN, shard="2", limit="10")
    assert [(r.shard, r.seq) for r in only.items] == [(2, 1), (2, 2), (2, 3)] and only.next_cursor is None
    body = only.to_dict()
    assert set(body["items"][0]) == {"v", "shard", "seq", "at", "actor", "action", "subject_ids", "amount_msat",
                                     "details", "prev_hash", "hash", "entry_id", "written_at"}


@pytest.mark.parametrize("kw", [{"limit": 0}, {"limit": 101}, {"limit": "x"}, {"shard": 4}, {"shard": "-1"},
                                {"cursor": "not-a-cursor"}, {"shard": 1, "cursor": "eyJzIjogMiwgInEiOiAxfQ"}])
def test_list_audit_validates(asvc, kw):
    with pytest.raises(errors.ValidationError):
        list_audit(asvc, ADMIN, **kw)


def test_admin_only(asvc):
    with pytest.raises(errors.Forbidden):
        list_audit(asvc, USER)
    with pytest.raises(errors.Forbidden):
        verify_audit(asvc, USER)


def test_verify_audit_reports_every_shard(asvc, ddb):
    fill(asvc.audit, 3, shard=1)
    fill(asvc.audit, 2, shard=3)
    report = verify_audit(asvc, ADMIN)
    assert report["ok"] and report["complete"] and report["records"] == 5
    assert [s["shard"] for s in report["shards"]] == [0, 1, 2, 3]
    delete_raw(ddb, record_pk(1), seq_sk(2))  # behind chain 1's checkpoint (3): the incremental step does not
    delete_raw(ddb, "AUDITCHECK#3", "STATE")  # re-read it; chain 3 is re-verified from genesis
    delete_raw(ddb, record_pk(3), seq_sk(1))
    report = verify_audit(asvc, ADMIN)
    assert not report["ok"]
    bad = report["shards"][3]
    assert (bad["ok"], bad["first_bad_seq"], bad["problem"], bad["last_seq"]) == (False, 1, "missing", 0)
    assert report["shards"][1]["ok"] and problem(asvc.audit, 1) == (False, 2, "missing")  # a full pass finds it


def test_verify_is_incremental_and_bounded_per_call(asvc, ddb):
    """Each call reads at most budget // shards records per chain from its checkpoint; tampering ahead of the
    checkpoint is found, a head rolled back behind it too."""
    store = asvc.audit
    written = fill(store, 10, shard=1)
    reads = []
    ddb.meta.events.register("before-send.dynamodb", lambda request, **kw: reads.append(request))
    first = verify_step(asvc, budget=3 * store.shards)
    assert first["shards"][1]["last_seq"] == 3 and not first["complete"] and first["shards"][1]["checked"] == 3
    put_raw(ddb, {**raw_record(ddb, 1, 5), "amount_msat": {"N": "7"}})
    second = verify_step(asvc, budget=3 * store.shards)
    assert second["shards"][1]["problem"] == "altered" and second["shards"][1]["first_bad_seq"] == 5
    assert second["shards"][1]["last_seq"] == 3  # the checkpoint stays at the last good record
    put_raw(ddb, {**raw_record(ddb, 1, 5), "amount_msat": {"N": str(written[4].amount_msat)}})  # repaired
    while not (result := verify_step(asvc, budget=3 * store.shards))["complete"]:
        assert result["ok"]
    assert result["shards"][1]["last_seq"] == 10
    ddb.update_item(TableName=TABLE, Key={"pk": {"S": head_pk(1)}, "sk": {"S": "HEAD"}},
                    UpdateExpression="SET seq = :s, #h = :h", ExpressionAttributeNames={"#h": "hash"},
                    ExpressionAttributeValues={":s": {"N": "8"}, ":h": {"S": written[7].hash}})
    rolled = verify_step(asvc, budget=3 * store.shards)
    assert rolled["shards"][1]["problem"] == "broken_link"


def test_no_store_fails_closed(svc):
    svc.audit = None
    with pytest.raises(RuntimeError):
        with_audit(svc, entry(1), lambda extra: None)


def test_the_rescan_from_genesis_finds_a_rewrite_behind_the_checkpoint_and_keeps_reporting_it(asvc, ddb):
    store = asvc.audit
    written = fill(store, 6, shard=1)
    assert verify_step(asvc, 1000)["complete"]  # checkpoint at 6
    put_raw(ddb, {**raw_record(ddb, 1, 2), "amount_msat": {"N": "1"}})  # behind the checkpoint
    assert verify_step(asvc, 1000)["ok"]  # the incremental step does not re-read it
    budget = 2 * store.shards  # 2 records per chain and step
    first = verify_step(asvc, 1000, rescan_budget=budget)
    assert first["shards"][1]["problem"] == "altered" and first["shards"][1]["first_bad_seq"] == 2
    assert not verify_step(asvc, 1000)["ok"]  # sticky until a clean pass
    put_raw(ddb, {**raw_record(ddb, 1, 2), "amount_msat": {"N": str(written[1].amount_msat)}})  # repaired
    results = [verify_step(asvc, 1000, rescan_budget=budget) for _ in range(4)]
    assert results[-1]["ok"]


def test_the_rescan_finds_a_consistently_rewritten_history_at_the_checkpoint(asvc, ddb):
    """Records 1..3 rewritten with recomputed hashes and links (a consistent forgery), the head left alone: the
    pass reaches the checkpoint with another hash than the one verified before."""
    from dataclasses import replace as dc_replace

    from satflow.domain.audit import GENESIS_HASH, record_hash

    store = asvc.audit
    fill(store, 3, shard=1)
    assert verify_step(asvc, 1000)["complete"]
    prev = GENESIS_HASH
    for seq in (1, 2, 3):
        item = raw_record(ddb, 1, seq)
        from satflow.adapters.dynamodb.audit import _record_from_raw

        forged = dc_replace(_record_from_raw(item), amount_msat=1, prev_hash=prev, hash="")
        forged = dc_replace(forged, hash=record_hash(forged))
        prev = forged.hash
        put_raw(ddb, {**item, "amount_msat": {"N": "1"}, "prev_hash": {"S": forged.prev_hash},
                      "hash": {"S": forged.hash}})
    result = verify_step(asvc, 1000, rescan_budget=1000)
    assert result["shards"][1]["problem"] == "broken_link" and result["shards"][1]["first_bad_seq"] == 3
