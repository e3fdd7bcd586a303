"""The webhook store on moto: outbox items in the ledger transaction (tags, TTL, conditions), delivery records."""
from __future__ import annotations

import pytest

from satflow.adapters.dynamodb.models import build_models
from satflow.adapters.dynamodb.webhooks import event_from_image, outbox_items, outbox_pk
from satflow.domain.templates import internal_transfer
from satflow.domain.webhooks import DEAD, DELIVERED, FAILED, PENDING, OutboxEvent, events_for_transfer, expires_at_unix

from tests.conftest import SHARDS, TABLE
from tests.webhooks.conftest import NOW, add_account

A, B = "acc_" + "a" * 26, "acc_" + "b" * 26


def test_outbox_items_are_tagged_conditional_puts_with_a_ttl(wsvc, ddb):
    add_account(wsvc, A, funds=10_000)
    add_account(wsvc, B)
    t = internal_transfer(transfer_id="trf_s1", sender=A, recipient=B, amount_msat=100, created_at=NOW, shards=SHARDS)
    events = events_for_transfer(t)
    items = outbox_items(build_models(TABLE, "us-east-1"), events)
    assert [i.tag for i in items] == [f"outbox:{e.event_id}" for e in events]
    assert all(i.op == "Put" and "attribute_not_exists" in i.params["ConditionExpression"] for i in items)
    assert not any("ConditionExpression" in i.params for i in outbox_items(build_models(TABLE, "us-east-1"), events,
                                                                            overwrite=True))
    wsvc.ledger.execute(t, items)
    raw = ddb.get_item(TableName=TABLE, Key={"pk": {"S": outbox_pk(events[0].event_id)}, "sk": {"S": "OUTBOX"}})["Item"]
    assert int(raw["ttl"]["N"]) == expires_at_unix(NOW)
    assert event_from_image(raw) == events[0]
    assert wsvc.webhooks.get_event(events[1].event_id) == events[1]
    # the identical transfer again is a replay (the transfer item decides), not an outbox collision
    assert wsvc.ledger.execute(t, items).replayed
    assert [i.params for i in wsvc.webhooks.transfer_outbox_items(t)] == [i.params for i in items]


def test_an_event_id_collision_is_never_silent(wsvc):
    """Two different transfers can never produce one event id; if one ever did, the transaction fails loudly."""
    add_account(wsvc, A, funds=10_000)
    add_account(wsvc, B)
    event = OutboxEvent("evt_" + "c" * 26, "transfer.settled", A, NOW, {})
    first = internal_transfer(transfer_id="trf_c1", sender=A, recipient=B, amount_msat=1, created_at=NOW, shards=SHARDS)
    second = internal_transfer(transfer_id="trf_c2", sender=A, recipient=B, amount_msat=1, created_at=NOW,
                               shards=SHARDS)
    wsvc.ledger.execute(first, wsvc.webhooks.outbox_items([event]))
    with pytest.raises(RuntimeError, match="cancelled unexpectedly"):
        wsvc.ledger.execute(second, wsvc.webhooks.outbox_items([event]))
    assert wsvc.ledger.get_transfer("trf_c2") is None


@pytest.mark.parametrize("image", [
    {}, {"pk": {"S": "TRANSFER#x"}},
    {"pk": {"S": "OUTBOX#e"}, "event_id": {"S": "e"}, "event_type": {"S": "t"}, "account_id": {"S": "a"},
     "created_at": {"S": NOW}, "data_json": {"S": "[1]"}},
    {"pk": {"S": "OUTBOX#e"}, "event_id": {"S": "e"}, "event_type": {"S": "t"}, "account_id": {"S": "a"},
     "created_at": {"S": NOW}},
])
def test_malformed_outbox_images_are_refused(image):
    with pytest.raises(ValueError):
        event_from_image(image)


def test_delivery_records(wsvc):
    store = wsvc.webhooks
    event = OutboxEvent("evt_" + "d" * 26, "transfer.settled", A, NOW, {})
    claim = store.claim("whk_1", event, now_unix=1000, lease_s=60, at=NOW)
    assert (claim.claimed, claim.attempts) == (True, 1)
    busy = store.claim("whk_1", event, now_unix=1030, lease_s=60, at=NOW)
    assert (busy.claimed, busy.busy_until) == (False, 1060)
    assert store.claim("whk_1", event, now_unix=1061, lease_s=60, at=NOW).attempts == 2  # the lease expired
    store.finish("whk_1", event.event_id, status=FAILED, at=NOW, error="HTTP 500\nmore", status_code=500)
    record = store.get_delivery("whk_1", event.event_id)
    assert (record.status, record.attempts, record.last_error, record.last_status_code) == (FAILED, 2,
                                                                                         "HTTP 500 more", 500)
    assert store.claim("whk_1", event, now_unix=1062, lease_s=60, at=NOW).attempts == 3  # released: no wait
    store.finish("whk_1", event.event_id, status=DELIVERED, at=NOW, status_code=204)
    assert store.claim("whk_1", event, now_unix=5000, lease_s=60, at=NOW).delivered
    store.finish("whk_1", event.event_id, status=DEAD, at=NOW, error="late")  # never downgrades DELIVERED
    assert store.get_delivery("whk_1", event.event_id).status == DELIVERED
    store.reset_for_replay("whk_1", event, NOW)
    record = store.get_delivery("whk_1", event.event_id)
    assert (record.status, record.attempts) == (PENDING, 3)
    with pytest.raises(ValueError):
        store.finish("whk_1", event.event_id, status=PENDING, at=NOW)


def test_delivery_listing_pages_through_a_status_filter(wsvc):
    store = wsvc.webhooks
    for n in range(7):
        event = OutboxEvent(f"evt_{n:0>26}".replace("0", "a"), "transfer.settled", A, NOW, {})
        store.claim("whk_2", event, now_unix=1, lease_s=1, at=NOW)
        store.finish("whk_2", event.event_id, status=DEAD if n % 2 else FAILED, at=NOW, error="x")
    page, cursor = store.deliveries("whk_2", status=DEAD, limit=2)
    seen = [d.event_id for d in page]
    while cursor:
        page, cursor = store.deliveries("whk_2", status=DEAD, limit=2, cursor=cursor)
        seen += [d.event_id for d in page]
    assert len(seen) == len(set(seen)) == 3
    assert len(store.deliveries("whk_2")[0]) == 7
