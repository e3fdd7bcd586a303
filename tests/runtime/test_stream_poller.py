"""The runtime's DynamoDB stream event sources: filters, batches in order, retries on errors and reported failures,
records of cancelled transactions never delivered. A template of its own, driven with drain()."""
from __future__ import annotations

from pathlib import Path

import pytest

from satflow_dev.runtime.stream_poller import check_pattern, matches_pattern, passes_filters
from satflow_dev.runtime.template import TemplateError

STREAM_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Suffix: {Type: String, Default: st1}
Resources:
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Sub "stream-${Suffix}"
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
      StreamSpecification: {StreamViewType: NEW_AND_OLD_IMAGES}
  Reader:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/reader/
      Handler: app.handler
      Events:
        Changes:
          Type: DynamoDB
          Properties:
            Stream: !GetAtt Table.StreamArn
            StartingPosition: TRIM_HORIZON
            BatchSize: 2
            MaximumRetryAttempts: 2
            FunctionResponseTypes: [ReportBatchItemFailures]
            FilterCriteria:
              Filters:
                - Pattern: '{"eventName": ["INSERT"], "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "OUT#"}]}}}}'
"""

READER = '''\
SEEN = []
SCRIPT = {}  # pk -> "raise" | "fail" (how many times: SCRIPT_LEFT)
LEFT = {}


def handler(event, context):
    failures = []
    for record in event["Records"]:
        pk = record["dynamodb"]["Keys"]["pk"]["S"]
        action = SCRIPT.get(pk)
        if action and LEFT.get(pk, 0) > 0:
            LEFT[pk] -= 1
            if action == "raise":
                raise RuntimeError("whole batch refused")
            failures.append({"itemIdentifier": record["dynamodb"]["SequenceNumber"]})
            continue
        SEEN.append(pk)
    return {"batchItemFailures": failures}
'''


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    from satflow_dev.runtime.local_runtime import LocalRuntime
    from satflow_dev.runtime.stream_poller import StreamPoller

    root: Path = tmp_path_factory.mktemp("streams")
    (root / "functions" / "reader").mkdir(parents=True)
    (root / "functions" / "reader" / "app.py").write_text(READER)
    (root / "template.yaml").write_text(STREAM_TEMPLATE)
    with LocalRuntime(root / "template.yaml", port=0, parameter_overrides={"Suffix": root.name},
                      service_factories=[lambda rt: StreamPoller.from_runtime(rt, background=False,
                                                                              retry_interval_s=0)],
                      # The tests script the handler's module state (SCRIPT, LEFT) and read what it saw (SEEN).
                      write_admin_key_file=False, invocation="in-process") as rt:
        yield rt


@pytest.fixture
def reader(runtime):
    """The handler module the invoker loaded (one warm execution environment), its state reset."""
    import sys

    (module,) = [m for name, m in sys.modules.items() if name.startswith("_satflow_local_Reader_")]
    module.SEEN.clear()
    module.SCRIPT.clear()
    module.LEFT.clear()
    return module


@pytest.fixture
def table(runtime):
    from satflow_dev.runtime.resources import aws_client

    client = aws_client("dynamodb", runtime.moto_url)
    name = runtime.model.tables[0].name

    def put(*pks: str) -> None:
        for pk in pks:
            client.put_item(TableName=name, Item={"pk": {"S": pk}})

    put.client, put.name = client, name  # type: ignore[attr-defined]
    return put


def poller(runtime):
    from satflow_dev.runtime.stream_poller import StreamPoller

    return runtime.service(StreamPoller)


def test_only_matching_inserts_arrive_in_order_in_batches(runtime, reader, table):
    table("OUT#1", "OTHER#1", "OUT#2", "OUT#3")
    table("OUT#1")  # a MODIFY: filtered out
    results = poller(runtime).drain("Reader")
    assert reader.SEEN == ["OUT#1", "OUT#2", "OUT#3"]
    assert [len(r.sequence_numbers) for r in results] == [2, 1]
    assert poller(runtime).drain("Reader") == []


def test_a_raising_handler_gets_the_same_batch_again(runtime, reader, table):
    table("OUT#r1")
    reader.SCRIPT["OUT#r1"], reader.LEFT["OUT#r1"] = "raise", 1
    (failed,) = poller(runtime).drain("Reader")
    assert failed.error and reader.SEEN == []
    poller(runtime).drain("Reader")
    assert reader.SEEN == ["OUT#r1"]


def test_a_reported_failure_restarts_from_that_record(runtime, reader, table):
    table("OUT#f1", "OUT#f2", "OUT#f3")
    reader.SCRIPT["OUT#f2"], reader.LEFT["OUT#f2"] = "fail", 1
    first = poller(runtime).drain("Reader")
    assert first[-1].failed_from == first[-1].sequence_numbers[1]
    poller(runtime).drain("Reader")
    assert reader.SEEN == ["OUT#f1", "OUT#f2", "OUT#f3"]  # f1 once: it was done before the failure


def test_maximum_retry_attempts_then_the_batch_is_skipped(runtime, reader, table):
    table("OUT#m1")
    reader.SCRIPT["OUT#m1"], reader.LEFT["OUT#m1"] = "raise", 10
    results = []
    for _ in range(3):
        results += poller(runtime).drain("Reader")
    assert [r.skipped for r in results] == [False, False, True]  # the first try and 2 retries
    table("OUT#m2")
    poller(runtime).drain("Reader")
    assert reader.SEEN == ["OUT#m2"]


def test_records_of_a_cancelled_transaction_never_arrive(runtime, reader, table):
    from botocore.exceptions import ClientError

    table("EXISTS#1")
    with pytest.raises(ClientError):
        table.client.transact_write_items(TransactItems=[
            {"Put": {"TableName": table.name, "Item": {"pk": {"S": "OUT#phantom"}}}},
            {"Put": {"TableName": table.name, "Item": {"pk": {"S": "EXISTS#1"}},
                     "ConditionExpression": "attribute_not_exists(pk)"}}])
    table("OUT#after")
    poller(runtime).drain("Reader")
    assert reader.SEEN == ["OUT#after"]


# ---------------------------------------------------------------------------------------------- filters


def test_filter_patterns():
    pattern = {"eventName": ["INSERT"], "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "OUTBOX#"}]}}}}
    insert = {"eventName": "INSERT", "dynamodb": {"Keys": {"pk": {"S": "OUTBOX#evt"}}}}
    assert matches_pattern(pattern, insert)
    assert not matches_pattern(pattern, {**insert, "eventName": "MODIFY"})
    assert not matches_pattern(pattern, {"eventName": "INSERT", "dynamodb": {"Keys": {"pk": {"S": "X#1"}}}})
    assert not matches_pattern(pattern, {"eventName": "INSERT"})
    assert matches_pattern({"a": [{"exists": False}]}, {}) and not matches_pattern({"a": [{"exists": False}]}, {"a": 1})
    assert matches_pattern({"a": [{"anything-but": ["x"]}]}, {"a": "y"})
    assert not matches_pattern({"a": [{"anything-but": "x"}]}, {"a": "x"})
    assert passes_filters([], {"anything": 1})
    assert passes_filters([{"a": [1]}, {"a": [2]}], {"a": 2})
    check_pattern(pattern)
    for unsupported in ({"a": [{"numeric": [">", 1]}]}, {"a": "INSERT"}, {"a": [{"suffix": "x"}]}):
        with pytest.raises(TemplateError):
            check_pattern(unsupported)
