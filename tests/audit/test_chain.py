"""The hash chain itself: canonical hashing and the verifier's verdicts (pure, no I/O)."""
from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from satflow.domain.audit import (
    GENESIS_HASH,
    AuditEntry,
    audit_shard,
    canonical_json,
    chain_record,
    record_hash,
    transfer_entry,
    verify_chain,
)
from satflow.domain.errors import ValidationError
from satflow.domain.templates import admin_adjustment, internal_transfer

NOW = "2026-11-21T12:00:00.000Z"


def entry(i: int, **kw) -> AuditEntry:
    fields = dict(at=NOW, actor="acc_a", action="transfer.internal", subject_ids=("acc_a", "acc_b", f"tr_{i}"),
                  amount_msat=1000 + i, details={"memo": f"m{i}", "n": i})
    fields.update(kw)
    return AuditEntry(**fields)


def build(n: int, shard: int = 0):
    records, prev = [], GENESIS_HASH
    for i in range(1, n + 1):
        r = chain_record(entry(i), shard=shard, seq=i, prev_hash=prev)
        records.append(r)
        prev = r.hash
    return records


def head_of(records):
    return (records[-1].seq, records[-1].hash) if records else (0, GENESIS_HASH)


# ------------------------------------------------------------------ hashing
def test_genesis_and_hash_is_sha256_of_canonical_json_without_hash():
    r = chain_record(entry(1), shard=3, seq=1, prev_hash=GENESIS_HASH)
    assert r.prev_hash == "0" * 64
    body = canonical_json(r.hashed_fields())
    assert " " not in body and "hash\":\"" not in body.replace("prev_hash", "")
    assert list(r.hashed_fields()) != sorted(r.hashed_fields())  # ordering comes from sort_keys, not insertion
    assert body.index('"action"') < body.index('"actor"') < body.index('"amount_msat"')
    assert r.hash == hashlib.sha256(body.encode()).hexdigest() == record_hash(r)


@pytest.mark.parametrize("change", [
    {"seq": 2}, {"shard": 1}, {"prev_hash": "1" * 64}, {"amount_msat": 1002}, {"at": "2026-11-21T12:00:00.001Z"},
    {"actor": "admin"}, {"action": "transfer.other"}, {"subject_ids": ("acc_b", "acc_a", "tr_1")},
    {"details": {"memo": "m1", "n": 2}}, {"version": 2},
])
def test_every_field_is_covered_by_the_hash(change):
    r = chain_record(entry(1), shard=0, seq=1, prev_hash=GENESIS_HASH)
    assert record_hash(replace(r, **change)) != r.hash


def test_canonical_json_refuses_floats_and_non_json():
    assert canonical_json({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"\\u00e9"],"b":1}'
    for bad in ({"x": 1.0}, {"x": float("nan")}, {1: "x"}, {"x": b"raw"}, {"x": {"y": [0.5]}}):
        with pytest.raises(ValueError):
            canonical_json(bad)


@pytest.mark.parametrize("kw", [
    {"actor": "bob"}, {"actor": ""}, {"action": "Transfer"}, {"action": "transfer"}, {"amount_msat": 1.5},
    {"amount_msat": True}, {"amount_msat": -1}, {"details": {"fee": 0.1}}, {"details": {"x": "y" * 3000}},
    {"subject_ids": ("",)}, {"subject_ids": tuple(f"s{i}" for i in range(9))}, {"at": ""},
])
def test_entries_are_validated(kw):
    with pytest.raises(ValidationError):
        entry(1, **kw)


def test_shard_follows_the_first_subject_else_the_actor():
    a = entry(1, subject_ids=("acc_x", "acc_y", "tr_1"))
    b = entry(2, subject_ids=("acc_x", "acc_z", "tr_2"), actor="admin")
    assert audit_shard(a, 16) == audit_shard(b, 16)
    spread = {audit_shard(entry(1, subject_ids=(f"acc_{i}",)), 16) for i in range(200)}
    assert len(spread) == 16
    assert audit_shard(entry(1, subject_ids=(), actor="admin"), 16) == audit_shard(
        entry(9, subject_ids=("admin",)), 16)


def test_transfer_entry_puts_the_user_side_first():
    adj = admin_adjustment(transfer_id="adj_1", account_id="acc_u", amount_msat=5000, direction="credit",
                           reason="seed", created_at=NOW, shards=4)
    e = transfer_entry(adj, actor="admin", action="adjustment.credit", details={"reason": "seed"})
    assert e.subject_ids == ("acc_u", "sys:owner_equity", "adj_1") and e.amount_msat == 5000
    assert e.details == {"template": "adjustment_credit", "kind": "POSTED", "asset": "BTC", "reason": "seed"}
    tr = internal_transfer(transfer_id="tr_1", sender="acc_s", recipient="acc_r", amount_msat=7, created_at=NOW,
                           shards=4)
    assert transfer_entry(tr, actor="acc_s", action="transfer.internal").subject_ids == ("acc_s", "acc_r", "tr_1")


# ------------------------------------------------------------------ verification
def test_an_intact_chain_verifies_with_and_without_its_head():
    records = build(6)
    assert verify_chain(records).ok
    report = verify_chain(records, head=head_of(records))
    assert report.ok and report.last_seq == 6 and report.checked == 6
    assert verify_chain([], head=(0, GENESIS_HASH)).ok
    assert verify_chain(records[3:], start_seq=4, start_hash=records[2].hash, head=head_of(records)).ok


def test_altered_record():
    records = build(5)
    records[2] = replace(records[2], amount_msat=999_999)
    assert verify_chain(records).to_dict() == {
        "ok": False, "first_bad_seq": 3, "problem": "altered", "checked": 3, "last_seq": 2}


def test_altered_record_with_recomputed_hash_breaks_the_next_link():
    records = build(5)
    forged = replace(records[2], amount_msat=999_999)
    records[2] = replace(forged, hash=record_hash(forged))
    report = verify_chain(records)
    assert (report.first_bad_seq, report.problem) == (4, "broken_link")
    # ... and forging the last one is caught by the head
    records = build(5)
    forged = replace(records[4], amount_msat=1)
    records[4] = replace(forged, hash=record_hash(forged))
    assert verify_chain(records).ok  # without the head, a re-hashed last record is indistinguishable
    report = verify_chain(records, head=head_of(build(5)))
    assert (report.first_bad_seq, report.problem) == (5, "broken_link")


def test_missing_middle_record():
    records = build(5)
    del records[2]
    report = verify_chain(records)
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 3, "missing")


def test_missing_last_record_is_seen_against_the_head():
    records = build(5)
    head = head_of(records)
    assert verify_chain(records[:-1]).ok  # a truncated chain is internally consistent ...
    report = verify_chain(records[:-1], head=head)  # ... the head is what proves its end
    assert (report.first_bad_seq, report.problem) == (5, "missing")


def test_missing_first_record():
    report = verify_chain(build(3)[1:])
    assert (report.first_bad_seq, report.problem) == (1, "missing")


def test_reordered_pair_by_position():
    records = build(6)
    records[2], records[4] = records[4], records[2]
    report = verify_chain(records, head=head_of(build(6)))
    assert (report.first_bad_seq, report.problem) == (3, "reordered")
    adjacent = build(6)
    adjacent[3], adjacent[4] = adjacent[4], adjacent[3]
    assert (verify_chain(adjacent).first_bad_seq, verify_chain(adjacent).problem) == (4, "reordered")


def test_reordered_contents_under_kept_seqs():
    """Two records exchange everything but their seq (e.g. seq kept as the storage key)."""
    records = build(6)
    a, b = records[1], records[4]
    records[1], records[4] = replace(b, seq=a.seq), replace(a, seq=b.seq)
    report = verify_chain(records)
    assert (report.first_bad_seq, report.problem) == (2, "reordered")


def test_duplicated_record_is_reported():
    records = build(4)
    records.insert(2, records[1])
    assert verify_chain(records).problem == "reordered"


def test_head_behind_the_records_or_with_another_hash():
    records = build(4)
    assert verify_chain(records, head=(3, records[2].hash)).problem == "broken_link"
    report = verify_chain(records, head=(4, "f" * 64))
    assert (report.first_bad_seq, report.problem) == (4, "broken_link")


def test_unencodable_stored_values_are_altered_not_a_crash():
    records = build(3)
    records[1] = replace(records[1], amount_msat=1.5)
    assert verify_chain(records).problem == "altered"
    records = build(3)
    records[1] = replace(records[1], details="{not json")
    assert verify_chain(records).problem == "altered"
    records = build(3)
    records[1] = replace(records[1], seq=None)
    assert (verify_chain(records).first_bad_seq, verify_chain(records).problem) == (2, "altered")


def test_chain_record_refuses_bad_chain_fields():
    for kw in ({"seq": 0}, {"shard": -1}, {"prev_hash": "xyz"}, {"seq": True}):
        args = {"shard": 0, "seq": 1, "prev_hash": GENESIS_HASH, **kw}
        with pytest.raises(ValueError):
            chain_record(entry(1), **args)
