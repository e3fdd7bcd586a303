"""The connection and feed items on moto and on DynamoDB Local (real-node tier): the topic set's bound and its
conditions (a string set's size and contains), both connection items written and deleted together, expiry, and
the feed's order and bound."""
from __future__ import annotations

import pytest

from satflow.adapters.dynamodb.realtime import DynamoRealtimeStore
from satflow.domain.realtime import feed_sort_key
from satflow.domain.webhooks import OutboxEvent

from tests.conftest import TABLE

A = "acc_" + "a" * 26
NOW_UNIX = 1_795_000_000


@pytest.fixture
def ddb(ddb_on_backend):
    return ddb_on_backend


@pytest.fixture
def store(ddb):
    return DynamoRealtimeStore(ddb, TABLE)


def test_topics_are_a_bounded_set_on_a_live_connection(store):
    store.add_connection("c1", A, connected_at="2026-12-04T12:00:00.000Z", ttl=NOW_UNIX + 60)
    assert [store.add_topic(A, "c1", f"t{n}", 3) for n in range(3)] == ["added"] * 3
    assert store.add_topic(A, "c1", "t1", 3) == "added"  # already there: no growth, no refusal
    assert store.add_topic(A, "c1", "t9", 3) == "full"
    assert store.add_topic(A, "nope", "*", 3) == "gone"  # never creates a connection item
    assert store.connections_for(A, NOW_UNIX) == [("c1", frozenset({"t0", "t1", "t2"}))]
    assert store.connections_for(A, NOW_UNIX + 60) == []  # expired, even before TTL deletes it


def test_both_connection_items_go_together(store):
    store.add_connection("c1", A, connected_at="2026-12-04T12:00:00.000Z", ttl=NOW_UNIX + 60)
    assert store.connection_account("c1") == A
    assert store.remove_connection("c1") is True
    assert store.connection_account("c1") is None and store.connections_for(A, NOW_UNIX) == []
    assert store.remove_connection("c1") is False  # idempotent
    assert store.add_topic(A, "c1", "*", 3) == "gone"


def test_the_feed_is_ordered_idempotent_and_bounded(store):
    events = [OutboxEvent(f"evt_{n:026d}", "transfer.settled", A, f"2026-12-04T12:00:0{n}.000Z", {"n": n})
              for n in (3, 1, 2, 4)]
    for event in events + events[:2]:  # a duplicated stream record writes the same item again
        store.append_feed(event)
    found, more = store.feed_from(A, "2026-12-04T12:00:02", 2)
    assert [e.data["n"] for e in found] == [2, 3] and more is True
    found, more = store.feed_from(A, feed_sort_key(events[0]), 10)
    assert [e.data["n"] for e in found] == [3, 4] and more is False
