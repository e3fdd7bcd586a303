"""Webhooks in the local runtime with the real template: a deposit confirmed on the simulated chain (and then an
internal transfer) writes its outbox event -> the stream poller feeds WebhookRelayFunction (the template's filter applied) -> WebhookDeliveryQueue ->
WebhookDeliveryFunction POSTs to the runtime's own receiver (/_sim/webhooks/inbox), retried once after a scripted
failure. The received request verifies with the recipe from docs/webhooks.md. Services are driven by hand."""
from __future__ import annotations

import functools
import json
import uuid

import pytest

from tests.runtime_http import call, fresh_stack_name

from .conftest import REAL_TEMPLATE

ROOT = REAL_TEMPLATE.parent
pytestmark = pytest.mark.skipif("WebhookRelayFunction:" not in REAL_TEMPLATE.read_text(),
                                reason="the webhook functions are not in the template")


@pytest.fixture(scope="module")
def runtime():
    import os

    from satflow_dev.runtime.local_runtime import LocalRuntime
    from satflow_dev.runtime.services import chain_service_factory, schedule_runner_factory, webhook_sink_factory
    from satflow_dev.runtime.sqs_poller import SqsPoller
    from satflow_dev.runtime.stream_poller import StreamPoller

    factories = [chain_service_factory, webhook_sink_factory,
                 lambda rt: SqsPoller.from_runtime(rt, background=False),
                 lambda rt: StreamPoller.from_runtime(rt, background=False), schedule_runner_factory]
    previous = os.environ.get("SATFLOW_WEBHOOK_RETRY_BASE_S")
    os.environ["SATFLOW_WEBHOOK_RETRY_BASE_S"] = "0"  # a failed attempt comes back at once
    try:
        with LocalRuntime(REAL_TEMPLATE, port=0, service_factories=factories, write_admin_key_file=False,
                          stack_name=fresh_stack_name(), environ={"SATFLOW_SCHEDULE_SCALE": "0"}) as rt:
            yield rt
    finally:
        if previous is None:
            os.environ.pop("SATFLOW_WEBHOOK_RETRY_BASE_S", None)
        else:
            os.environ["SATFLOW_WEBHOOK_RETRY_BASE_S"] = previous


_call = functools.partial(call, timeout=10)


def test_a_confirmed_deposit_is_delivered_signed_to_the_local_receiver(runtime):
    from satflow_dev.runtime.sqs_poller import SqsPoller
    from satflow_dev.runtime.stream_poller import StreamPoller

    from tests.webhooks.test_delivery import documented_recipe

    sink = runtime.service("webhooks")
    status, account = _call(runtime, "POST", "/v1/accounts", key=runtime.admin_key,
                            body={"external_ref": f"e2e:wh-{uuid.uuid4().hex[:8]}", "tier": 1})
    assert status == 201, account
    key = account["api_key"]
    status, hook = _call(runtime, "POST", "/v1/webhooks", key=key,
                         body={"url": sink.inbox_url, "events": ["deposit.confirmed", "transfer.settled"]})
    assert status == 201, hook
    assert hook["url"].startswith("http://127.0.0.1:")  # only the local runtime accepts this

    status, address = _call(runtime, "POST", "/v1/addresses", key=key)
    assert status == 201, address
    status, sent = _call(runtime, "POST", "/_sim/chain/send", body={"address": address["address"],
                                                                    "amount_sat": 5_000_000})
    assert status == 200, sent
    sink.fail_next(1, 503)
    status, mined = _call(runtime, "POST", "/_sim/chain/mine", body={"blocks": 1})  # fires the chain monitor
    assert status == 200, mined

    relayed = runtime.service(StreamPoller).drain("WebhookRelayFunction")
    assert relayed and all(r.error is None and r.failed_from is None for r in relayed)
    batches = runtime.service(SqsPoller).drain("WebhookDeliveryQueue")
    assert [len(b.failed) for b in batches] == [1, 0]  # the scripted 503, then the retry

    received = [r for r in sink.received() if r["headers"]["satflow-event-type"] == "deposit.confirmed"]
    assert [r["answered"] for r in received] == [503, 200]
    first, second = received
    assert first["headers"]["satflow-event-id"] == second["headers"]["satflow-event-id"]
    event = json.loads(second["body"])
    assert (event["type"], event["account_id"], event["data"]["amount_sat"], event["data"]["confirmations"]) == (
        "deposit.confirmed", account["account_id"], 5_000_000, 1)
    assert documented_recipe()(hook["secret"], second["headers"], second["body"].encode()) is True
    status, checked = _call(runtime, "POST", "/_sim/webhooks/verify", body={"secret": hook["secret"]})
    assert status == 200 and {r["verified"] for r in checked["results"] if r["event_id"] == event["id"]} == {True}

    status, deliveries = _call(runtime, "GET", f"/v1/webhooks/{hook['id']}/deliveries", key=key)
    assert status == 200, deliveries
    assert [(d["event_id"], d["status"], d["attempts"]) for d in deliveries["items"]] == [
        (event["id"], "DELIVERED", 2)]
    # Nothing is relayed twice: the stream has no further outbox INSERT for this runtime's table.
    assert runtime.service(StreamPoller).drain("WebhookRelayFunction") == []

    # An internal transfer to this account: the ledger transaction itself carries transfer.settled (bootstrap
    # wires the outbox into the recorded ledger).
    status, payer = _call(runtime, "POST", "/v1/accounts", key=runtime.admin_key,
                          body={"external_ref": f"e2e:wh-payer-{uuid.uuid4().hex[:8]}", "tier": 1})
    assert status == 201, payer
    status, funded = _call(runtime, "POST", "/v1/admin/adjustments", key=runtime.admin_key,
                           headers={"Idempotency-Key": f"fund-{payer['account_id']}"},
                           body={"account_id": payer["account_id"], "amount_msat": 50_000, "direction": "credit",
                                 "reason": "e2e"})
    assert status == 201, funded
    status, moved = _call(runtime, "POST", "/v1/transfers", key=payer["api_key"],
                          headers={"Idempotency-Key": "wh-e2e-1"},
                          body={"to": account["account_id"], "amount_msat": 12_345, "memo": "thanks"})
    assert status == 201, moved
    runtime.service(StreamPoller).drain("WebhookRelayFunction")
    runtime.service(SqsPoller).drain("WebhookDeliveryQueue")
    (settled,) = [r for r in sink.received() if r["headers"]["satflow-event-type"] == "transfer.settled"]
    body = json.loads(settled["body"])
    assert (body["account_id"], body["data"]["transfer_id"], body["data"]["direction"], body["data"]["amount_msat"],
            body["data"]["counterparty"]) == (account["account_id"], moved["transfer_id"], "in", 12_345,
                                              payer["account_id"])
    assert documented_recipe()(hook["secret"], settled["headers"], settled["body"].encode()) is True
