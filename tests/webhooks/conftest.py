"""Webhook fixtures: the store on in-process moto, a real HTTP receiver on 127.0.0.1, and a miniature of the AWS
wiring around the two real handlers: outbox items (read back from the table) as stream records -> the relay handler
-> an SQS queue with the template's redrive policy (moto) -> the delivery handler, deleting what it did not report
as failed (what Lambda's event source mappings do)."""
from __future__ import annotations

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from satflow import bootstrap
from satflow.adapters.dynamodb.models import build_models
from satflow.adapters.dynamodb.webhooks import DynamoWebhookStore, outbox_pk
from satflow.adapters.webhook_http import WebhookHttp
from satflow.adapters.webhook_queue import SqsWebhookQueue
from satflow.app.recorded_ledger import RecordedLedger
from satflow.domain.accounts import Account, AccountStatus, Scope
from satflow.domain.templates import admin_adjustment
from satflow.domain.webhooks import MAX_ATTEMPTS

from tests.conftest import SHARDS, TABLE, build_services
from tests.handlers.conftest import load_handler_module

NOW = "2026-11-21T12:00:00.000Z"


# ---------------------------------------------------------------------------------------------- the receiver
class Receiver:
    """A webhook endpoint: records every request (headers, raw body) and answers scripted statuses (200 after)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: deque[int] = deque()
        self.always: int | None = None
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append(({k: v for k, v in self.headers.items()}, body))
                    status = receiver.always or (receiver.statuses.popleft() if receiver.statuses else 200)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def event_ids(self) -> list[str]:
        with self._lock:
            return [headers["Satflow-Event-Id"] for headers, _ in self.requests]


@pytest.fixture
def receiver():
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


# ---------------------------------------------------------------------------------------------- services
def add_account(svc, account_id: str, funds: int = 0) -> str:
    svc.accounts.create(Account(account_id, f"ref:{account_id}", 1, AccountStatus.ACTIVE, NOW), f"h-{account_id}",
                        "sk_", [Scope.SEND, Scope.READ])
    if funds:
        svc.ledger.execute(admin_adjustment(transfer_id=f"fund-{account_id}", account_id=account_id,
                                            amount_msat=funds, direction="credit", reason="seed", created_at=NOW,
                                            shards=SHARDS))
    return account_id


@pytest.fixture
def sqs(aws):
    import boto3

    client = boto3.client("sqs", region_name="us-east-1")
    dlq = client.create_queue(QueueName="webhook-dlq")["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = client.create_queue(QueueName="webhook-deliveries", Attributes={
        "VisibilityTimeout": "360",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_ATTEMPTS})})["QueueUrl"]
    return client, queue, dlq


@pytest.fixture
def wsvc(ddb, sqs):
    """Services with the webhook ports: the real store, HTTP adapter and SQS queue; private targets allowed (the
    receiver is on 127.0.0.1) and no retry delay (the backoff schedule itself is unit-tested)."""
    client, queue, _ = sqs
    svc = build_services(ddb)
    # These tests put the outbox items into the ledger transaction by hand (what the recorded ledger does in
    # production, tested in tests/chain/test_deposit_webhooks.py and tests/runtime): an audited ledger without
    # the automatic outbox, so each event is written once.
    svc.ledger = RecordedLedger(svc.ledger.inner, svc.ledger.audit)
    svc.webhooks = DynamoWebhookStore(ddb, build_models(TABLE, "us-east-1"))
    svc.webhook_http = WebhookHttp(timeout_s=2)
    svc.webhook_queue = SqsWebhookQueue(lambda: client, lambda: queue)
    svc.webhook_allow_private = True
    svc.webhook_retry_base_s = 0
    bootstrap.override(svc)
    yield svc
    bootstrap.override(None)


# ---------------------------------------------------------------------------------------------- the wiring
class Context:
    function_name = "WebhookDeliveryFunction"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:WebhookDeliveryFunction"
    aws_request_id = "req-1"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000


class Pipeline:
    def __init__(self, svc, ddb, sqs) -> None:
        self.svc, self.ddb = svc, ddb
        self.sqs, self.queue, self.dlq = sqs
        self.relay_handler = load_handler_module("webhook_relay", "satflow_fn_webhook_relay").lambda_handler
        self.delivery_handler = load_handler_module("webhook_delivery", "satflow_fn_webhook_delivery").lambda_handler
        self._sequence = 0

    def stream_records(self, event_ids: list[str]) -> list[dict]:
        """Stream INSERT records of the outbox items as they are in the table (absent items: no record)."""
        records = []
        for event_id in event_ids:
            item = self.ddb.get_item(TableName=TABLE, Key={"pk": {"S": outbox_pk(event_id)}, "sk": {"S": "OUTBOX"}},
                                     ConsistentRead=True).get("Item")
            if item is None:
                continue
            self._sequence += 1
            records.append({
                "eventID": f"e{self._sequence}", "eventName": "INSERT", "eventVersion": "1.1",
                "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
                "dynamodb": {"Keys": {"pk": item["pk"], "sk": item["sk"]}, "NewImage": item,
                             "SequenceNumber": str(1000 + self._sequence), "SizeBytes": 100,
                             "StreamViewType": "NEW_AND_OLD_IMAGES"},
                "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/satflow-test/stream/x"})
        return records

    def relay(self, records: list[dict]) -> dict:
        return self.relay_handler({"Records": records}, Context())

    def deliver_once(self) -> int:
        """One delivery batch from the queue (as Lambda's SQS mapping: delete what did not fail). Returns how
        many messages were received."""
        response = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=5, WaitTimeSeconds=0,
                                            AttributeNames=["All"], MessageSystemAttributeNames=["All"])
        messages = response.get("Messages") or []
        if not messages:
            return 0
        records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                    "attributes": m.get("Attributes") or {}, "messageAttributes": {}, "md5OfBody": "",
                    "eventSource": "aws:sqs", "awsRegion": "us-east-1",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:webhook-deliveries"} for m in messages]
        result = self.delivery_handler({"Records": records}, Context())
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for m in messages:
            if m["MessageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=m["ReceiptHandle"])
        return len(messages)

    def drain(self, max_batches: int = 100) -> int:
        batches = 0
        while batches < max_batches and self.deliver_once():
            batches += 1
        return batches

    def dlq_bodies(self) -> list[dict]:
        response = self.sqs.receive_message(QueueUrl=self.dlq, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        return [json.loads(m["Body"]) for m in response.get("Messages") or []]


@pytest.fixture
def pipeline(wsvc, ddb, sqs):
    return Pipeline(wsvc, ddb, sqs)
