"""DynamoSanctionsStore on in-process moto: atomic replacement, versions, chunking, the per-container cache."""
from __future__ import annotations

import pytest

from satflow.adapters.dynamodb.sanctions import (
    CHUNK_PREFIX,
    PK,
    DynamoSanctionsStore,
    split_chunks,
)
from satflow.domain import errors
from satflow.domain.sanctions import SanctionsList, SanctionsListConflict, parse_sdn_xml

from tests.conftest import TABLE

from .conftest import NODE_PUBKEY, REGTEST_P2WPKH, SAMPLE_BYTES, UNLISTED_REGTEST

NOW = "2026-11-21T12:00:00.000Z"


def sample() -> SanctionsList:
    return parse_sdn_xml(SAMPLE_BYTES)


def generated(n: int, tag: str = "") -> SanctionsList:
    """n distinct (syntactically plausible) destinations: the store does not validate, it only keeps lines."""
    return SanctionsList({f"bcrt1q{tag}{i:040d}": f"sdn:{i}" for i in range(n)}, {})


def partition(ddb) -> list[str]:
    items = ddb.query(TableName=TABLE, KeyConditionExpression="pk = :pk",
                      ExpressionAttributeValues={":pk": {"S": PK}}, ConsistentRead=True)["Items"]
    return sorted(i["sk"]["S"] for i in items)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_nothing_stored_reads_as_none(store):
    assert store.head() is None and store.current() is None


def test_store_then_read_back_in_a_fresh_container(ddb, store):
    head = store.store(sample(), expected_version=0, now=NOW)
    assert (head.version, head.addresses, head.node_pubkeys, head.chunks) == (1, 8, 2, 1)
    fresh = DynamoSanctionsStore(ddb, TABLE)  # another container: nothing cached
    loaded = fresh.current()
    assert loaded.head == head and loaded.list == sample()
    assert loaded.list.lookup("node", NODE_PUBKEY) == "sdn:90003"
    assert loaded.head.sources[0].entries == 6 and loaded.head.sources[0].label == "sdn"


def test_versions_only_increase_and_a_stale_writer_loses(ddb, store):
    store.store(sample(), expected_version=0, now=NOW)
    with pytest.raises(SanctionsListConflict):
        store.store(generated(3), expected_version=0, now=NOW)  # a first list when one exists
    second = store.store(generated(3), expected_version=1, now=NOW)
    assert second.version == 2
    with pytest.raises(SanctionsListConflict):
        store.store(generated(4), expected_version=1, now=NOW)  # read v1, someone else wrote v2 meanwhile
    assert store.head().version == 2 and DynamoSanctionsStore(ddb, TABLE).current().list == generated(3)
    # the losers left no chunks behind: only v2's
    chunks = [sk for sk in partition(ddb) if sk.startswith(CHUNK_PREFIX)]
    assert chunks and all(sk.startswith(f"{CHUNK_PREFIX}{2:012d}#") for sk in chunks)


def test_old_chunks_are_deleted_after_the_flip(ddb, store):
    store.store(generated(50, "a"), expected_version=0, now=NOW)
    v1_chunks = [sk for sk in partition(ddb) if sk.startswith(CHUNK_PREFIX)]
    store.store(generated(60, "b"), expected_version=1, now=NOW)
    after = partition(ddb)
    assert not set(v1_chunks) & set(after)
    assert after[-1] == "HEAD" and all(sk.startswith(f"{CHUNK_PREFIX}{2:012d}#") for sk in after[:-1])


def test_orphans_of_a_crashed_writer_are_cleaned_but_newer_chunks_are_kept(ddb, store):
    store.store(generated(5), expected_version=0, now=NOW)
    for sk in (f"{CHUNK_PREFIX}{1:012d}#dead0001#00000", f"{CHUNK_PREFIX}{9:012d}#future01#00000"):
        ddb.put_item(TableName=TABLE, Item={"pk": {"S": PK}, "sk": {"S": sk}, "data": {"S": ""}})
    store.store(generated(6), expected_version=1, now=NOW)
    left = partition(ddb)
    assert f"{CHUNK_PREFIX}{1:012d}#dead0001#00000" not in left  # older than the new version
    assert f"{CHUNK_PREFIX}{9:012d}#future01#00000" in left  # a concurrent writer's newer version is not ours


def test_a_list_larger_than_one_chunk(ddb):
    store = DynamoSanctionsStore(ddb, TABLE)
    big = generated(9000)  # ~500 KB of lines: two chunks at the default 350 KB
    head = store.store(big, expected_version=0, now=NOW)
    assert head.chunks == 2
    loaded = DynamoSanctionsStore(ddb, TABLE).current()
    assert loaded.list == big and loaded.list.lookup("address", "bcrt1q" + f"{8999:040d}") == "sdn:8999"
    small = DynamoSanctionsStore(ddb, TABLE, chunk_bytes=300)
    head = small.store(sample(), expected_version=1, now=NOW)
    assert head.chunks > 1 and DynamoSanctionsStore(ddb, TABLE).current().list == sample()


def test_split_chunks_keeps_lines_whole_and_in_order():
    lines = sample().lines()
    for size in (200, 300, 1000, 10**6):
        chunks = split_chunks(lines, size)
        assert "".join(chunks) == "".join(lines)
        assert all(len(c) <= size and c.endswith("\n") for c in chunks)
    with pytest.raises(ValueError):
        split_chunks(["x" * 300 + "\n"], 200)


def test_a_reader_never_sees_a_mix_across_a_flip(ddb, store):
    """The reader reads head v1, then the list is replaced (v1's chunks deleted) before it queries the chunks: it
    must end with v2 whole, never v1 partially or an empty list."""
    store.store(generated(40, "a"), expected_version=0, now=NOW)
    reader = DynamoSanctionsStore(ddb, TABLE, chunk_bytes=500)
    real_head = reader.head
    calls = {"n": 0}

    def head_then_flip():
        h = real_head()
        calls["n"] += 1
        if calls["n"] == 1:  # between the reader's head read and its chunk query
            DynamoSanctionsStore(ddb, TABLE, chunk_bytes=500).store(generated(45, "b"), expected_version=1, now=NOW)
        return h

    reader.head = head_then_flip  # type: ignore[method-assign]
    loaded = reader.current()
    assert loaded.head.version == 2 and loaded.list == generated(45, "b") and calls["n"] == 2


def test_a_chunk_that_does_not_match_the_head_digest_is_not_served(ddb, store):
    store.store(generated(10), expected_version=0, now=NOW)
    (chunk,) = [sk for sk in partition(ddb) if sk.startswith(CHUNK_PREFIX)]
    ddb.update_item(TableName=TABLE, Key={"pk": {"S": PK}, "sk": {"S": chunk}},
                    UpdateExpression="SET #d = :d", ExpressionAttributeNames={"#d": "data"},
                    ExpressionAttributeValues={":d": {"S": "a\tbcrt1qtampered\tsdn:1\n"}})
    with pytest.raises(errors.TransientError):
        DynamoSanctionsStore(ddb, TABLE).current()


def test_the_cache_rereads_the_head_every_n_seconds_and_the_chunks_only_on_a_new_version(ddb, store):
    clock = Clock()
    reader = DynamoSanctionsStore(ddb, TABLE, cache_s=60, monotonic=clock)
    store.store(generated(5, "a"), expected_version=0, now=NOW)
    assert reader.current().head.version == 1 and (reader.head_reads, reader.chunk_loads) == (1, 1)
    clock.t += 59
    reader.current()
    assert (reader.head_reads, reader.chunk_loads) == (1, 1)  # within the cache period: no DynamoDB call
    clock.t += 2
    reader.current()
    assert (reader.head_reads, reader.chunk_loads) == (2, 1)  # head re-read, same version: no chunk load
    store.store(generated(6, "b"), expected_version=1, now=NOW)
    assert reader.current().head.version == 1  # still cached
    clock.t += 61
    loaded = reader.current()
    assert loaded.head.version == 2 and loaded.list == generated(6, "b")
    assert (reader.head_reads, reader.chunk_loads) == (3, 2)


def test_the_writer_container_screens_with_its_new_list_at_once(ddb, store):
    clock = Clock()
    writer = DynamoSanctionsStore(ddb, TABLE, cache_s=3600, monotonic=clock)
    writer.store(generated(5, "a"), expected_version=0, now=NOW)
    assert writer.current().head.version == 1
    writer.store(generated(7, "b"), expected_version=1, now=NOW)
    assert writer.current().list == generated(7, "b") and writer.chunk_loads == 0


def test_a_cached_list_keeps_screening_when_dynamodb_is_unreachable(ddb, store):
    clock = Clock()
    reader = DynamoSanctionsStore(ddb, TABLE, cache_s=1, monotonic=clock)
    store.store(sample(), expected_version=0, now=NOW)
    assert reader.current().head.version == 1

    def down(**_kwargs):
        raise errors.TransientError("DynamoDB unreachable")

    reader._call = lambda op, **kw: down(**kw)  # type: ignore[method-assign]
    clock.t += 5
    assert reader.current().list.lookup("address", REGTEST_P2WPKH) == "sdn:90003"
    empty = DynamoSanctionsStore(ddb, TABLE)
    empty._call = lambda op, **kw: down(**kw)  # type: ignore[method-assign]
    with pytest.raises(errors.TransientError):
        empty.current()  # nothing cached: the caller must not screen against nothing


def test_touch_updates_checked_at_only_for_the_current_version(ddb, store):
    store.store(sample(), expected_version=0, now=NOW)
    newer = parse_sdn_xml(SAMPLE_BYTES.replace(b"11/20/2026", b"11/21/2026"))
    assert store.touch(1, now="2026-11-22T00:00:00.000Z", sources=newer.sources)
    head = store.head()
    assert head.checked_at == "2026-11-22T00:00:00.000Z" and head.loaded_at == NOW
    assert head.sources[0].publish_date == "11/21/2026" and head.version == 1
    assert not store.touch(7, now="2026-11-23T00:00:00.000Z", sources=newer.sources)
    assert store.head().checked_at == "2026-11-22T00:00:00.000Z"
    assert UNLISTED_REGTEST not in DynamoSanctionsStore(ddb, TABLE).current().list.addresses
