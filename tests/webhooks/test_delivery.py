"""The delivery path end to end around the real handlers: outbox -> relay -> SQS (moto, real redrive policy) ->
delivery -> a real HTTP receiver. The issue's three webhook tests are here: the documented verification recipe
against a delivered request, retry -> dead letter -> replay, and a duplicated stream record delivered once."""
from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from satflow.app import webhooks
from satflow.domain.accounts import ALL_SCOPES, Principal
from satflow.domain.templates import internal_transfer
from satflow.domain.webhooks import DEAD, DELIVERED, FAILED, MAX_ATTEMPTS, events_for_transfer

from tests.conftest import SHARDS
from tests.webhooks.conftest import NOW, Context, add_account

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


def documented_recipe():
    """The verification function exactly as docs/webhooks.md shows it to clients."""
    text = DOCS.read_text()
    block = re.search(r"<!-- verify-recipe:start -->\s*```python\n(.*?)```\s*<!-- verify-recipe:end -->", text, re.S)
    assert block, "docs/webhooks.md lost its marked verification recipe"
    namespace: dict = {}
    exec(compile(block.group(1), str(DOCS), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace["verify_webhook"]


def principal(account_id: str) -> Principal:
    return Principal(account_id=account_id, scopes=frozenset(ALL_SCOPES))


def transfer(svc, transfer_id: str, sender: str, recipient: str, amount: int = 1_000) -> list[str]:
    """An internal transfer with its outbox events in the same transaction (what the ledger decorator does)."""
    t = internal_transfer(transfer_id=transfer_id, sender=sender, recipient=recipient, amount_msat=amount,
                          created_at=NOW, shards=SHARDS, memo="lunch")
    events = events_for_transfer(t)
    svc.ledger.execute(t, webhooks.outbox_items(svc, events))
    return [e.event_id for e in events]


@pytest.fixture
def alice_bob(wsvc):
    return add_account(wsvc, "acc_" + "a" * 26, funds=100_000), add_account(wsvc, "acc_" + "b" * 26)


def test_a_client_verifies_the_signature_with_the_documented_recipe(wsvc, pipeline, receiver, alice_bob):
    alice, bob = alice_bob
    sub = webhooks.create_webhook(wsvc, principal(bob), receiver.url, ["transfer.settled"])
    ids = transfer(wsvc, "trf_sig", alice, bob)
    pipeline.relay(pipeline.stream_records(ids))
    pipeline.drain()

    assert len(receiver.requests) == 1  # bob's event only: alice's belongs to alice
    headers, body = receiver.requests[0]
    verify = documented_recipe()
    assert verify(sub.secret, headers, body) is True
    assert headers["Satflow-Event-Id"] == ids[1] and headers["Content-Type"] == "application/json"
    assert f'"id":"{ids[1]}"'.encode() in body and b'"direction":"in"' in body
    # Anything else fails: another body, another secret, no signature, a stale timestamp (a replayed capture).
    assert verify(sub.secret, headers, body.replace(b"1000", b"9000")) is False
    assert verify("whsec_" + "x" * 43, headers, body) is False
    assert verify(sub.secret, {k: v for k, v in headers.items() if k != "Satflow-Signature"}, body) is False
    stale = int(headers["Satflow-Timestamp"]) - 600
    resigned = {**headers, "Satflow-Timestamp": str(stale),
                "Satflow-Signature": webhooks.sign(sub.secret, stale, body)}
    assert verify(sub.secret, resigned, body) is False
    # A rotation-style header with several signatures passes if one matches.
    assert verify(sub.secret, {**headers, "Satflow-Signature": "v1=00ff, " + headers["Satflow-Signature"]}, body)
    assert wsvc.webhooks.get_delivery(sub.subscription_id, ids[1]).status == DELIVERED


def test_a_failing_endpoint_is_retried_then_dead_lettered_and_replay_delivers_it(wsvc, pipeline, receiver,
                                                                                 alice_bob):
    alice, bob = alice_bob
    sub = webhooks.create_webhook(wsvc, principal(bob), receiver.url, ["transfer.settled"])
    receiver.always = 503
    event_id = transfer(wsvc, "trf_dead", alice, bob)[1]
    pipeline.relay(pipeline.stream_records([event_id]))

    pipeline.drain(max_batches=MAX_ATTEMPTS + 5)
    pipeline.drain()  # the receive after the last attempt moves the message to the dead-letter queue

    assert receiver.event_ids() == [event_id] * MAX_ATTEMPTS  # retried, MAX_ATTEMPTS POSTs in all
    record = wsvc.webhooks.get_delivery(sub.subscription_id, event_id)
    assert (record.status, record.attempts, record.last_error, record.last_status_code) == (
        DEAD, MAX_ATTEMPTS, "HTTP 503", 503)
    dead_letters = pipeline.dlq_bodies()
    assert [m["event"]["id"] for m in dead_letters] == [event_id]
    assert pipeline.deliver_once() == 0  # nothing left in the delivery queue

    receiver.always = None
    assert webhooks.replay(wsvc, principal(bob), sub.subscription_id) == [event_id]  # every DEAD one
    pipeline.drain()
    assert receiver.event_ids() == [event_id] * (MAX_ATTEMPTS + 1)
    record = wsvc.webhooks.get_delivery(sub.subscription_id, event_id)
    assert (record.status, record.attempts, record.last_error) == (DELIVERED, MAX_ATTEMPTS + 1, None)
    assert webhooks.replay(wsvc, principal(bob), sub.subscription_id) == []  # nothing dead any more


def test_a_transient_failure_is_retried_and_recorded(wsvc, pipeline, receiver, alice_bob):
    alice, bob = alice_bob
    sub = webhooks.create_webhook(wsvc, principal(bob), receiver.url, ["transfer.settled"])
    receiver.statuses.extend([500, 302])  # a redirect is not followed: it is a failure too
    event_id = transfer(wsvc, "trf_retry", alice, bob)[1]
    pipeline.relay(pipeline.stream_records([event_id]))

    assert pipeline.deliver_once() == 1
    record = wsvc.webhooks.get_delivery(sub.subscription_id, event_id)
    assert (record.status, record.attempts, record.last_error) == (FAILED, 1, "HTTP 500")
    pipeline.drain()
    assert receiver.event_ids() == [event_id] * 3
    assert wsvc.webhooks.get_delivery(sub.subscription_id, event_id).status == DELIVERED


def test_a_duplicated_stream_record_delivers_each_event_id_once(wsvc, pipeline, receiver, alice_bob):
    alice, bob = alice_bob
    sub = webhooks.create_webhook(wsvc, principal(alice), receiver.url, ["transfer.settled"])
    admin_sub = webhooks.create_webhook(wsvc, webhooks_admin(), receiver.url, ["transfer.settled"])
    ids = transfer(wsvc, "trf_dup", alice, bob)
    records = pipeline.stream_records(ids)

    pipeline.relay(records)
    pipeline.relay(records)  # the stream hands the same records over again (a retried batch)
    pipeline.drain()
    pipeline.relay(records[:1])  # ... and once more after everything was delivered
    pipeline.drain()

    # alice's subscription: her own event once; the admin's: both accounts' events, each once.
    seen = sorted(receiver.event_ids())
    assert seen == sorted([ids[0], ids[0], ids[1]])
    for sub_id, event_id in ((sub.subscription_id, ids[0]), (admin_sub.subscription_id, ids[0]),
                             (admin_sub.subscription_id, ids[1])):
        record = wsvc.webhooks.get_delivery(sub_id, event_id)
        assert (record.status, record.attempts) == (DELIVERED, 1)


def test_concurrent_copies_of_one_message_post_once(receiver):
    """Workers handed the same message at once (SQS is at-least-once): the conditional claim lets one POST. Over
    real HTTP against the locked moto server (in-process moto is not thread-safe)."""
    import boto3
    from botocore.config import Config

    from satflow.adapters.dynamodb.models import build_models
    from satflow.adapters.dynamodb.webhooks import DynamoWebhookStore
    from satflow.adapters.webhook_http import WebhookHttp
    from satflow_dev.runtime.moto_server import start_moto_server

    from tests.conftest import build_services, create_table

    table = "satflow-webhook-race"
    url, stop = start_moto_server(execute_state_machines=False)
    try:
        client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=url,
                              config=Config(max_pool_connections=16, retries={"max_attempts": 1}))
        create_table(client, table)
        svc = build_services(client, table=table)
        svc.webhooks = DynamoWebhookStore(client, build_models(table, "us-east-1"))
        svc.webhook_http, svc.webhook_allow_private = WebhookHttp(timeout_s=2), True
        bob = "acc_" + "b" * 26
        sub = webhooks.create_webhook(svc, principal(bob), receiver.url, ["transfer.settled"])
        event = events_for_transfer(internal_transfer(transfer_id="trf_race", sender="acc_" + "a" * 26,
                                                      recipient=bob, amount_msat=1_000, created_at=NOW,
                                                      shards=SHARDS))[1]
        message = webhooks.delivery_message(sub, event)
        outcomes: list = []
        barrier = threading.Barrier(6)

        def worker() -> None:
            barrier.wait()
            outcomes.append(webhooks.deliver(svc, message, receive_count=1).outcome)

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert receiver.event_ids() == [event.event_id]
        assert outcomes.count("delivered") == 1
        assert set(outcomes) <= {"delivered", "busy", "already_delivered"}
        assert webhooks.deliver(svc, message, receive_count=2).outcome == "already_delivered"
        assert svc.webhooks.get_delivery(sub.subscription_id, event.event_id).attempts == 1
    finally:
        stop()


def test_an_uncommitted_change_sends_nothing(wsvc, pipeline, receiver, alice_bob):
    """The outbox rides in the ledger transaction: a refused transfer leaves no event to relay."""
    from satflow.domain.errors import InsufficientFunds

    alice, bob = alice_bob
    webhooks.create_webhook(wsvc, principal(bob), receiver.url, ["transfer.settled"])
    with pytest.raises(InsufficientFunds):
        transfer(wsvc, "trf_broke", alice, bob, amount=10**9)
    t = internal_transfer(transfer_id="trf_broke", sender=alice, recipient=bob, amount_msat=10**9, created_at=NOW,
                          shards=SHARDS, memo="lunch")
    assert pipeline.stream_records([e.event_id for e in events_for_transfer(t)]) == []
    # A replayed (identical) transfer succeeds as a replay and writes nothing twice.
    ids = transfer(wsvc, "trf_ok", alice, bob)
    assert transfer(wsvc, "trf_ok", alice, bob) == ids
    pipeline.relay(pipeline.stream_records(ids))
    pipeline.drain()
    assert receiver.event_ids() == [ids[1]]


def test_a_deleted_subscription_stops_its_deliveries(wsvc, pipeline, receiver, alice_bob):
    alice, bob = alice_bob
    sub = webhooks.create_webhook(wsvc, principal(bob), receiver.url, ["transfer.settled"])
    ids = transfer(wsvc, "trf_gone", alice, bob)
    pipeline.relay(pipeline.stream_records(ids))
    webhooks.delete_webhook(wsvc, principal(bob), sub.subscription_id)
    pipeline.drain()
    assert receiver.requests == []
    assert pipeline.deliver_once() == 0  # dropped, not retried


def test_a_target_that_now_resolves_privately_is_not_posted(wsvc, pipeline, receiver, alice_bob, monkeypatch):
    """Re-vetted at delivery: a name that resolved publicly at subscription time and privately now (DNS rebinding)
    is a failed attempt, and nothing reaches the private address."""
    alice, bob = alice_bob
    wsvc.webhook_allow_private = False
    monkeypatch.setattr(wsvc.webhook_http, "resolve", lambda host, port: ["93.184.216.34"])
    sub = webhooks.create_webhook(wsvc, principal(bob), "https://hooks.example.com/x", ["transfer.settled"])
    monkeypatch.setattr(wsvc.webhook_http, "resolve", lambda host, port: ["127.0.0.1"])
    posted: list = []
    monkeypatch.setattr(wsvc.webhook_http, "post", lambda *a: posted.append(a) or 200)
    event_id = transfer(wsvc, "trf_rebind", alice, bob)[1]
    pipeline.relay(pipeline.stream_records([event_id]))
    pipeline.deliver_once()
    record = wsvc.webhooks.get_delivery(sub.subscription_id, event_id)
    assert record.status == FAILED and "127.0.0.1" in record.last_error and posted == []
    # Public again: the next attempt connects to the vetted address, with the name as Host/SNI.
    monkeypatch.setattr(wsvc.webhook_http, "resolve", lambda host, port: ["93.184.216.34"])
    pipeline.drain()
    (target, address, headers, body), = posted
    assert (target.host, address, target.url_for(address)) == ("hooks.example.com", "93.184.216.34",
                                                               "https://93.184.216.34:443/x")


def webhooks_admin() -> Principal:
    from satflow.app.accounts import ADMIN

    return ADMIN


def test_the_delivery_handler_returns_messages_when_time_runs_out(wsvc, pipeline, receiver, alice_bob):
    alice, bob = alice_bob
    webhooks.create_webhook(wsvc, principal(bob), receiver.url, ["transfer.settled"])
    event_id = transfer(wsvc, "trf_late", alice, bob)[1]
    pipeline.relay(pipeline.stream_records([event_id]))

    class Late(Context):
        @staticmethod
        def get_remaining_time_in_millis() -> int:
            return 1_000

    messages = pipeline.sqs.receive_message(QueueUrl=pipeline.queue, AttributeNames=["All"])["Messages"]
    records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "attributes": m["Attributes"]} for m in messages]
    result = pipeline.delivery_handler({"Records": records}, Late())
    assert result == {"batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}
    assert receiver.requests == []  # it comes back after the queue's visibility timeout


def test_the_relay_skips_what_is_not_an_outbox_insert(wsvc, pipeline, receiver, alice_bob, caplog):
    """A rewrite (MODIFY) is never sent again; a malformed item is logged and skipped (retrying cannot fix it,
    and a failing record would hold the whole shard back)."""
    alice, bob = alice_bob
    webhooks.create_webhook(wsvc, principal(bob), receiver.url, ["transfer.settled"])
    (out, into) = pipeline.stream_records(transfer(wsvc, "trf_skip", alice, bob))
    modify = {**into, "eventName": "MODIFY"}
    broken = {**into, "dynamodb": {**into["dynamodb"], "NewImage": {**into["dynamodb"]["NewImage"],
                                                                      "data_json": {"S": "not json"}}}}
    result = pipeline.relay([modify, broken, out])
    assert result == {"batchItemFailures": []}
    pipeline.drain()
    assert receiver.requests == []  # alice's own event went nowhere: bob subscribed, alice did not
    assert "malformed outbox item skipped" in caplog.text


def test_a_relay_that_cannot_enqueue_reports_the_record(wsvc, pipeline, alice_bob, receiver, monkeypatch):
    from satflow.domain.errors import TransientError

    alice, bob = alice_bob
    webhooks.create_webhook(wsvc, principal(bob), receiver.url, ["transfer.settled"])
    records = pipeline.stream_records(transfer(wsvc, "trf_sqs_down", alice, bob))

    def down(messages):
        raise TransientError("SQS is down")

    monkeypatch.setattr(wsvc.webhook_queue, "send", down)
    result = pipeline.relay(records)
    # alice's record needed no message; bob's failed: Lambda retries from its sequence number
    assert result == {"batchItemFailures": [{"itemIdentifier": records[1]["dynamodb"]["SequenceNumber"]}]}
