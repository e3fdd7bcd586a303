"""SQS event sources: real Lambda SQS batches, ReportBatchItemFailures, redelivery after the visibility timeout,
the dead-letter queue after maxReceiveCount, and the background threads."""
from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest

from satflow_dev.runtime.resources import aws_client, create_queue, dead_letter_queues_first
from satflow_dev.runtime.sqs_poller import SqsPoller


@pytest.fixture(scope="module")
def sqs(services_runtime):
    return aws_client("sqs", services_runtime.moto_url)


@pytest.fixture(scope="module")
def poller(services_runtime) -> SqsPoller:
    return services_runtime.service(SqsPoller)


def _url(sqs, runtime, logical_id: str) -> str:
    queue = next(q for q in runtime.model.queues if q.logical_id == logical_id)
    return sqs.get_queue_url(QueueName=queue.name)["QueueUrl"]


@pytest.fixture(autouse=True)
def _fresh_queues(services_runtime, sqs):
    """Every test starts with empty queues (PurgeQueue is limited to once a minute: recreate them instead)."""
    yield
    for queue in services_runtime.model.queues:
        sqs.delete_queue(QueueUrl=_url(sqs, services_runtime, queue.logical_id))
    for queue in dead_letter_queues_first(services_runtime.model.queues):
        create_queue(sqs, queue)


def _send(sqs, url: str, bodies: list[dict], **extra) -> list[str]:
    return [sqs.send_message(QueueUrl=url, MessageBody=json.dumps(b), **extra)["MessageId"] for b in bodies]


def test_the_handler_gets_a_lambda_sqs_event(services_runtime, sqs, poller):
    url = _url(sqs, services_runtime, "WorkQueue")
    body = json.dumps({"n": 1})
    sent = sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes={
        "kind": {"DataType": "String", "StringValue": "invoice"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"}})["MessageId"]
    (batch,) = poller.drain("WorkQueue")
    (record,) = batch.response["records"]
    assert record["messageId"] == sent and record["body"] == body and record["receiptHandle"]
    assert record["md5OfBody"] == hashlib.md5(body.encode()).hexdigest()
    assert (record["eventSource"], record["awsRegion"]) == ("aws:sqs", "us-east-1")
    assert record["eventSourceARN"] == next(q.arn for q in services_runtime.model.queues
                                            if q.logical_id == "WorkQueue")
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(record["attributes"])
    assert record["messageAttributes"]["kind"] == {"stringValue": "invoice", "stringListValues": [],
                                                   "binaryListValues": [], "dataType": "String"}
    assert base64.b64decode(record["messageAttributes"]["blob"]["binaryValue"]) == b"\x00\xff"
    assert record["md5OfMessageAttributes"]
    assert (batch.received, batch.deleted, batch.failed, batch.error) == ([sent], [sent], [], None)


def test_partial_batch_failures_are_redelivered_then_dead_lettered(services_runtime, sqs, poller):
    """WorkQueue: VisibilityTimeout 1 s, maxReceiveCount 2, ReportBatchItemFailures."""
    url = _url(sqs, services_runtime, "WorkQueue")
    ok = _send(sqs, url, [{"n": 1}, {"n": 2}])
    bad = _send(sqs, url, [{"fail": True}, {"fail": True}])
    (first,) = poller.drain("WorkQueue")
    assert sorted(first.received) == sorted(ok + bad)
    assert (sorted(first.deleted), sorted(first.failed)) == (sorted(ok), sorted(bad))
    assert poller.drain("WorkQueue") == []  # the failed ones are invisible until the timeout

    time.sleep(1.1)
    (second,) = poller.drain("WorkQueue")
    assert sorted(second.received) == sorted(bad) and sorted(second.failed) == sorted(bad)
    assert {r["attributes"]["ApproximateReceiveCount"] for r in second.response["records"]} == {"2"}

    time.sleep(1.1)
    assert poller.drain("WorkQueue") == []  # received twice = maxReceiveCount: moto moves them to the DLQ
    dlq = _url(sqs, services_runtime, "WorkDLQ")
    moved = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
    assert sorted(m["MessageId"] for m in moved) == sorted(bad)


def test_an_invalid_item_identifier_fails_the_whole_batch(services_runtime, sqs, poller):
    url = _url(sqs, services_runtime, "WorkQueue")
    ids = _send(sqs, url, [{"n": 1}, {"bad_id": True}])
    (batch,) = poller.drain("WorkQueue")
    assert sorted(batch.failed) == sorted(ids) and batch.deleted == []
    assert "whole batch failed" in batch.error


def test_a_raised_exception_deletes_nothing_and_success_without_reporting_deletes_all(services_runtime, sqs,
                                                                                      poller):
    """RawQueue: VisibilityTimeout 0 (redelivered at once), BatchSize 3, no ReportBatchItemFailures."""
    url = _url(sqs, services_runtime, "RawQueue")
    ids = _send(sqs, url, [{"n": 1}, {"raise_until": 2}])
    (refused,) = poller.drain("RawQueue", max_batches=1)
    assert refused.error == "RuntimeError: the whole batch is refused"
    assert (sorted(refused.failed), refused.deleted) == (sorted(ids), [])
    (accepted,) = poller.drain("RawQueue")  # second receive: the handler succeeds, the whole batch goes
    assert sorted(accepted.deleted) == sorted(ids) and accepted.failed == []
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"]) == (
        "0", "0")


def test_batch_size_caps_each_batch(services_runtime, sqs, poller):
    url = _url(sqs, services_runtime, "RawQueue")
    _send(sqs, url, [{"n": n} for n in range(7)])
    batches = poller.drain("RawQueue")
    assert [len(b.received) for b in batches] == [3, 3, 1]


def test_unknown_queue_names_the_known_ones(poller):
    with pytest.raises(KeyError, match="WorkQueue"):
        poller.drain("NoSuchQueue")


def test_background_threads_consume_the_queue(services_runtime, sqs):
    background = SqsPoller.from_runtime(services_runtime, poll_interval_s=0.05)
    url = _url(sqs, services_runtime, "WorkQueue")
    background.start()
    try:
        _send(sqs, url, [{"n": n} for n in range(3)])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            if attributes["ApproximateNumberOfMessages"] == attributes["ApproximateNumberOfMessagesNotVisible"] == "0":
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the background poller left messages: {attributes}")
    finally:
        background.stop()
