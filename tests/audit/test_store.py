"""The audit store on moto: records written in the ledger's own transaction, and tampering found in DynamoDB."""
from __future__ import annotations

import pytest

from satflow.adapters.dynamodb.audit import AuditChainBroken, AuditHeadMoved, head_pk, record_pk, seq_sk
from satflow.app.accounts import ADMIN
from satflow.app.audit import list_audit, record_admin_action, verify_audit, with_audit
from satflow.domain import errors
from satflow.domain.accounts import Principal, Scope
from satflow.domain.audit import GENESIS_HASH, AuditEntry, transfer_entry
from satflow.domain.templates import internal_transfer

from tests.conftest import SHARDS, TABLE

from .conftest import NOW, add_account

USER = Principal(account_id="acc_a", scopes=frozenset({Scope.READ, Scope.SEND}))


def entry(i: int, subject: str = "acc_a", **kw) -> AuditEntry:
    fields = dict(at=NOW, actor="admin", action="account.updated", subject_ids=(subject,), amount_msat=100 * i,
                  details={"i": i})
    fields.update(kw)
    return AuditEntry(**fields)


def fill(store, n: int, shard: int = 1):
    return [store.append(entry(i), shard=shard) for i in range(1, n + 1)]


def raw_record(ddb, shard: int, seq: int) -> dict:
    return ddb.get_item(TableName=TABLE, Key={"pk": {"S": record_pk(shard)}, "sk": {"S": seq_sk(seq)}})["Item"]


def put_raw(ddb, item: dict) -> None:
    ddb.put_item(TableName=TABLE, Item=item)


def delete_raw(ddb, pk: str, sk: str) -> None:
    ddb.delete_item(TableName=TABLE, Key={"pk": {"S": pk}, "sk": {"S": sk}})


def problem(store, shard: int = 1):
    r = store.verify(shard)
    return r.ok, r.first_bad_seq, r.problem


# ------------------------------------------------------------------ append / read
def test_append_chains_records_and_moves_the_head(store):
    written = fill(store, 5)
    assert [r.seq for r in written] == [1, 2, 3, 4, 5]
    assert written[0].prev_hash == GENESIS_HASH and all(b.prev_hash == a.hash for a, b in zip(written, written[1:]))
    assert store.head(1) == (5, written[-1].hash) and store.head(0) is None
    assert store.records(1) == written
    assert store.records(1, after_seq=2, limit=2) == written[2:4]
    assert store.records(1, after_seq=5) == []
    assert store.verify(1).ok and store.verify(0).ok


def test_default_shard_comes_from_the_first_subject(store):
    r1 = store.append(entry(1, subject="acc_zz"))
    r2 = store.append(entry(2, subject="acc_zz", actor="acc_zz"))
    assert r1.shard == r2.shard == store.shard_for(entry(1, subject="acc_zz"))
    assert (r1.seq, r2.seq) == (1, 2)


def test_head_moved_is_a_retryable_cancellation(store, ddb):
    from satflow.adapters.dynamodb.transaction import transact

    _, stale = store.prepare(entry(1), shard=1)
    store.append(entry(2), shard=1)  # a concurrent writer wins
    cancellation = transact(ddb, stale)
    assert cancellation is not None and cancellation.condition_failed("audit_head")
    err = stale[0].on_condition_failed(None)
    assert isinstance(err, AuditHeadMoved) and isinstance(err, errors.TransientError)
    assert store.head(1)[0] == 1 and store.verify(1).ok


# ------------------------------------------------------------------ tampering, directly in DynamoDB
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


def test_deleted_head_is_reported_and_blocks_the_chain(store, ddb):
    fill(store, 3)
    delete_raw(ddb, head_pk(1), "HEAD")
    assert problem(store) == (False, 1, "broken_link")
    with pytest.raises(AuditChainBroken):
        store.append(entry(9), shard=1)


def test_rolled_back_head_is_reported(store, ddb):
    written = fill(store, 4)
    ddb.update_item(TableName=TABLE, Key={"pk": {"S": head_pk(1)}, "sk": {"S": "HEAD"}},
                    UpdateExpression="SET seq = :s, #h = :h", ExpressionAttributeNames={"#h": "hash"},
                    ExpressionAttributeValues={":s": {"N": "4"}, ":h": {"S": written[2].hash}})
    assert problem(store) == (False, 4, "broken_link")


# ------------------------------------------------------------------ with the ledger
def test_with_audit_writes_the_record_in_the_transfer_transaction(asvc):
    add_account(asvc, "acc_a", funds=10_000)
    add_account(asvc, "acc_b")
    t = internal_transfer(transfer_id="tr_1", sender="acc_a", recipient="acc_b", amount_msat=2_500, created_at=NOW,
                          shards=SHARDS, memo="lunch")
    e = transfer_entry(t, actor="acc_a", action="transfer.internal")
    result = with_audit(asvc, e, lambda extra: asvc.ledger.execute(t, extra))
    assert not result.replayed
    shard = asvc.audit.shard_for(e)
    (record,) = asvc.audit.records(shard)
    assert (record.action, record.amount_msat, record.subject_ids) == ("transfer.internal", 2_500,
                                                                        ("acc_a", "acc_b", "tr_1"))
    assert asvc.ledger.balances("acc_b")[0].available == 2_500
    assert asvc.audit.verify(shard).ok

    # a replay of the same transfer is cancelled as a whole: no second record, head unchanged
    again = with_audit(asvc, e, lambda extra: asvc.ledger.execute(t, extra))
    assert again.replayed and asvc.audit.head(shard) == (1, record.hash)


def test_a_failing_transfer_writes_no_record_and_keeps_the_head(asvc):
    add_account(asvc, "acc_a", funds=1_000)
    add_account(asvc, "acc_b")
    ok = internal_transfer(transfer_id="tr_ok", sender="acc_a", recipient="acc_b", amount_msat=600,
                           created_at=NOW, shards=SHARDS)
    e_ok = transfer_entry(ok, actor="acc_a", action="transfer.internal")
    with_audit(asvc, e_ok, lambda extra: asvc.ledger.execute(ok, extra))
    shard = asvc.audit.shard_for(e_ok)
    head = asvc.audit.head(shard)

    too_much = internal_transfer(transfer_id="tr_big", sender="acc_a", recipient="acc_b", amount_msat=600,
                                 created_at=NOW, shards=SHARDS)
    calls = []

    def run(extra):
        calls.append(1)
        return asvc.ledger.execute(too_much, extra)

    with pytest.raises(errors.InsufficientFunds):
        with_audit(asvc, transfer_entry(too_much, actor="acc_a", action="transfer.internal"), run)
    assert len(calls) == 1  # a business rejection is not retried
    assert asvc.audit.head(shard) == head and len(asvc.audit.records(shard)) == 1
    assert asvc.audit.verify(shard).ok


def test_with_audit_re_prepares_when_another_writer_moved_the_head(asvc):
    add_account(asvc, "acc_a", funds=5_000)
    add_account(asvc, "acc_b")
    t = internal_transfer(transfer_id="tr_race", sender="acc_a", recipient="acc_b", amount_msat=100,
                          created_at=NOW, shards=SHARDS)
    e = transfer_entry(t, actor="acc_a", action="transfer.internal")
    shard = asvc.audit.shard_for(e)
    seen: list[Exception] = []

    def execute(extra):
        if not seen:  # first attempt: a concurrent writer appends to the same chain in between
            asvc.audit.append(entry(1, subject="acc_a"))
            try:
                return asvc.ledger.execute(t, extra)
            except AuditHeadMoved as exc:
                seen.append(exc)
                raise
        return asvc.ledger.execute(t, extra)

    result = with_audit(asvc, e, execute, sleep=lambda s: None)
    assert not result.replayed and len(seen) == 1
    assert [r.action for r in asvc.audit.records(shard)] == ["account.updated", "transfer.internal"]
    assert asvc.ledger.balances("acc_b")[0].available == 100 and asvc.audit.verify(shard).ok


def test_with_audit_gives_up_after_its_attempts(asvc):
    calls = []

    def always_moved(extra):
        calls.append(1)
        raise AuditHeadMoved("moved")

    with pytest.raises(AuditHeadMoved):
        with_audit(asvc, entry(1), always_moved, attempts=3, sleep=lambda s: None)
    assert len(calls) == 3


# ------------------------------------------------------------------ admin use cases
def test_list_audit_pages_through_all_shards_then_one(asvc):
    store = asvc.audit
    for shard, n in ((0, 2), (2, 3), (3, 1)):
        fill(store, n, shard=shard)
    record_admin_action(asvc, entry(7, subject="acc_q"))
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
                                     "details", "prev_hash", "hash"}


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
    assert report["ok"] and report["records"] == 5 and [s["shard"] for s in report["shards"]] == [0, 1, 2, 3]
    delete_raw(ddb, record_pk(3), seq_sk(1))
    report = verify_audit(asvc, ADMIN)
    assert not report["ok"]
    assert report["shards"][3] == {"shard": 3, "ok": False, "first_bad_seq": 1, "problem": "missing",
                                   "checked": 1, "last_seq": 0}
    assert report["shards"][1]["ok"]


def test_no_store_fails_closed(svc):
    svc.audit = None
    with pytest.raises(RuntimeError):
        with_audit(svc, entry(1), lambda extra: None)
