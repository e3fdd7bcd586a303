"""payout.broadcast: written in the transaction that records a batch's broadcast (one event per payout), and again
with the new txid when a fee bump replaces the transaction. Runs the real payout ASL (see conftest)."""
from __future__ import annotations

import pytest

from satflow.adapters.dynamodb.models import build_models
from satflow.adapters.dynamodb.webhooks import DynamoWebhookStore, event_from_image
from satflow.app import payouts
from satflow.domain.payouts import BatchStatus

from .conftest import ADMIN, REGION
from .test_payout_fee_bump import _broadcast_batch


@pytest.fixture
def wflow(flow):
    models = build_models(flow.svc.ledger._m.table_name, REGION, flow.moto.url)
    flow.svc.webhooks = DynamoWebhookStore(flow.moto.client("dynamodb"), models)
    return flow


def broadcast_events(flow):
    client = flow.moto.client("dynamodb")
    items = client.scan(TableName=flow.svc.ledger._m.table_name, FilterExpression="begins_with(pk, :p)",
                        ExpressionAttributeValues={":p": {"S": "OUTBOX#"}})["Items"]
    return [e for e in map(event_from_image, items) if e.type == "payout.broadcast"]


def test_broadcast_and_fee_bump_announce_the_txid(wflow):
    batch_id, users, ps = _broadcast_batch(wflow, 100_000, 150_000)
    original = wflow.batch(batch_id).current
    events = broadcast_events(wflow)
    assert sorted((e.account_id, e.data["payout_id"], e.data["txid"], e.data["amount_sat"]) for e in events) == sorted(
        (u.account_id, p.payout_id, original.txid, p.amount_sat) for u, p in zip(users, ps))
    assert all("replaces_txid" not in e.data for e in events)

    bumped = payouts.bump_fee(wflow.svc, ADMIN, batch_id, 20).current
    events = broadcast_events(wflow)
    replaced = [e for e in events if e.data["txid"] == bumped.txid]
    assert len(events) == 4 and len(replaced) == 2
    assert {e.data["replaces_txid"] for e in replaced} == {original.txid}
    assert len({e.event_id for e in events}) == 4

    wflow.confirm()
    assert wflow.wait(batch_id).final_state == "Done"
    assert wflow.batch(batch_id).status is BatchStatus.CONFIRMED
    assert len(broadcast_events(wflow)) == 4  # confirmation is the ledger's payout.confirmed, not another broadcast
