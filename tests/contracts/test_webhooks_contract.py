"""template.yaml <-> webhook code: the delivery queue's redrive matches the attempt limit, the relay's stream filter
lets exactly outbox INSERTs through, samples parse, and the webhook functions hold only what they use."""
from __future__ import annotations

import json

from satflow.app.webhooks import LEASE_S, parse_message
from satflow.adapters.dynamodb.webhooks import event_from_image
from satflow.domain.webhooks import MAX_ATTEMPTS

from .conftest import ROOT, function_statements

EVENTS = ROOT / "events"


def test_delivery_queue_redrive_and_timeouts(template, functions):
    queue = template["Resources"]["WebhookDeliveryQueue"]["Properties"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] == MAX_ATTEMPTS
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["WebhookDeliveryDLQ", "Arn"]}
    timeout = functions["WebhookDeliveryFunction"]["Properties"]["Timeout"]
    assert queue["VisibilityTimeout"] >= 6 * timeout  # AWS's advice for SQS event sources
    assert LEASE_S >= timeout  # a claim outlives the invocation that made it
    event = functions["WebhookDeliveryFunction"]["Properties"]["Events"]["Deliveries"]["Properties"]
    assert event["Queue"] == {"Fn::GetAtt": ["WebhookDeliveryQueue", "Arn"]}
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_relay_stream_filter_lets_only_outbox_inserts_through(template, functions):
    from satflow_dev.runtime.stream_poller import passes_filters

    assert template["Resources"]["LedgerTable"]["Properties"]["StreamSpecification"]["StreamViewType"] in (
        "NEW_IMAGE", "NEW_AND_OLD_IMAGES")
    event = functions["WebhookRelayFunction"]["Properties"]["Events"]["Outbox"]
    props = event["Properties"]
    assert event["Type"] == "DynamoDB" and props["Stream"] == {"Fn::GetAtt": ["LedgerTable", "StreamArn"]}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    patterns = [json.loads(f["Pattern"]) for f in props["FilterCriteria"]["Filters"]]
    samples = json.loads((EVENTS / "webhook_relay" / "outbox_inserts.json").read_text())["Records"]
    assert samples and all(passes_filters(patterns, r) for r in samples)
    for record in samples:
        event_from_image(record["dynamodb"]["NewImage"])
    modify = {**samples[0], "eventName": "MODIFY"}
    other = {**samples[0], "dynamodb": {**samples[0]["dynamodb"], "Keys": {"pk": {"S": "TRANSFER#x"},
                                                                          "sk": {"S": "TRANSFER"}}}}
    assert not passes_filters(patterns, modify) and not passes_filters(patterns, other)


def test_samples_parse_with_the_event_models():
    from aws_lambda_powertools.utilities.parser.models import DynamoDBStreamModel, SqsModel

    DynamoDBStreamModel(**json.loads((EVENTS / "webhook_relay" / "outbox_inserts.json").read_text()))
    batch = json.loads((EVENTS / "webhook_delivery" / "delivery_batch.json").read_text())
    SqsModel(**batch)
    for record in batch["Records"]:
        parse_message(json.loads(record["body"]))


def test_webhook_functions_are_least_privilege(template, functions):
    table = {"Fn::GetAtt": ["LedgerTable", "Arn"]}
    queue = {"Fn::GetAtt": ["WebhookDeliveryQueue", "Arn"]}
    tracing = (["xray:PutTraceSegments", "xray:PutTelemetryRecords"], "*")

    def logs(fn):
        return ["logs:CreateLogStream", "logs:PutLogEvents"], {"Fn::GetAtt": [f"{fn}LogGroup", "Arn"]}

    relay = function_statements(template, functions["WebhookRelayFunction"])
    assert [(s["Action"], s["Resource"]) for s in relay] == [
        (["dynamodb:Query"], table), (["sqs:SendMessage"], queue),
        (["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"],
         {"Fn::Sub": "${LedgerTable.Arn}/stream/*"}),
        (["sqs:SendMessage"], {"Fn::GetAtt": ["StreamFailuresQueue", "Arn"]}),
        logs("WebhookRelayFunction"), tracing]
    delivery = function_statements(template, functions["WebhookDeliveryFunction"])
    assert [(s["Action"], s["Resource"]) for s in delivery] == [
        (["dynamodb:GetItem", "dynamodb:UpdateItem"], table),
        (["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"], queue),
        (["sqs:ChangeMessageVisibility"], queue), logs("WebhookDeliveryFunction"), tracing]
    api_sqs = [s for s in function_statements(template, functions["ApiFunction"])
               if any(a.startswith("sqs:") for a in s["Action"])]
    assert [(s["Action"], s["Resource"]) for s in api_sqs] == [(["sqs:SendMessage"], queue)]
