"""Fixtures for the local runtime's tests: a tiny SAM template with its own handler (so these tests do not depend
on the API's code), and a runtime started from it on free ports."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REAL_TEMPLATE = ROOT / "template.yaml"

# Everything the runtime wires, in miniature: intrinsics, a condition, a table with TTL and a stream, a secret,
# a queue, routes with path parameters and a greedy proxy, SQS/Schedule events, an ignored resource type and
# event type, and a state machine whose Task calls the function through DefinitionSubstitutions.
TINY_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Suffix: {Type: String, Default: t1}
  Mode: {Type: String, Default: fast, AllowedValues: [fast, slow]}
Conditions:
  IsFast: !Equals [!Ref Mode, fast]
Globals:
  Function:
    Timeout: 5
    Environment:
      Variables:
        TABLE: !Ref Table
        QUEUE_URL: !Ref Queue
        MODE: !If [IsFast, "quick", "careful"]
        SUBBED: !Sub "${AWS::StackName}-${Suffix}-${Table.Arn}"
Resources:
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Sub "${AWS::StackName}-tiny-${Suffix}"
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
      TimeToLiveSpecification: {AttributeName: expires_at, Enabled: true}
      StreamSpecification: {StreamViewType: NEW_IMAGE}
  Secret:
    Type: AWS::SecretsManager::Secret
    Properties:
      Name: !Sub "tiny-admin-${Suffix}"
      GenerateSecretString: {PasswordLength: 20}
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "tiny-${Suffix}"
      VisibilityTimeout: 30
  Topic:
    Type: AWS::SNS::Topic
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/echo/
      Handler: app.handler
      MemorySize: 256
      Environment:
        Variables:
          SATFLOW_ADMIN_KEY_SECRET_ID: !Ref Secret
      Events:
        GetItem: {Type: HttpApi, Properties: {Method: GET, Path: "/items/{item_id}"}}
        GetSpecial: {Type: HttpApi, Properties: {Method: GET, Path: /items/special}}
        PostItem: {Type: HttpApi, Properties: {Method: post, Path: /items}}
        Proxy: {Type: HttpApi, Properties: {Method: ANY, Path: "/proxy/{rest+}"}}
        Work: {Type: SQS, Properties: {Queue: !GetAtt Queue.Arn, BatchSize: 5,
                                       FunctionResponseTypes: [ReportBatchItemFailures]}}
        Tick: {Type: Schedule, Properties: {Schedule: rate(1 minute), Input: '{"tick": true}'}}
        Sns: {Type: SNS, Properties: {Topic: !Ref Topic}}
  Flow:
    Type: AWS::Serverless::StateMachine
    Properties:
      DefinitionUri: statemachines/flow.asl.json
      DefinitionSubstitutions:
        EchoArn: !GetAtt EchoFunction.Arn
"""

FLOW_ASL = """\
{"StartAt": "Work", "States": {
  "Work": {"Type": "Task", "Resource": "${EchoArn}", "Next": "Done",
           "Catch": [{"ErrorEquals": ["ItemRejected"], "ResultPath": "$.error", "Next": "Rejected"}]},
  "Rejected": {"Type": "Pass", "Result": {"outcome": "rejected"}, "End": true},
  "Done": {"Type": "Succeed"}}}
"""

ECHO_HANDLER = '''\
import base64
import json
import os
import time

import boto3

_current_event = None  # module state, like Powertools' resolver keeps the event it is resolving


class ItemRejected(Exception):
    pass


def handler(event, context):
    global _current_event
    _current_event = event
    if event.get("rawPath") == "/proxy/slow-echo":
        time.sleep(0.05)  # other requests arrive meanwhile
        return {"id": _current_event["queryStringParameters"]["id"]}
    if "routeKey" not in event:  # a Step Functions task: write to moto from inside an invocation
        if event.get("reject"):
            raise ItemRejected("rejected on purpose")
        boto3.client("dynamodb").put_item(TableName=os.environ["TABLE"], Item={"pk": {"S": event["id"]}})
        return {"stored": event["id"]}
    path = event["rawPath"]
    if path == "/proxy/plain":
        return {"hello": "world"}  # no statusCode: API Gateway answers 200 with this as JSON
    if path == "/proxy/binary":
        return {"statusCode": 201, "headers": {"content-type": "application/octet-stream"},
                "multiValueHeaders": {"x-multi": ["1", "2"]}, "cookies": ["a=1", "b=2"],
                "body": base64.b64encode(bytes([255, 0, 1])).decode(), "isBase64Encoded": True}
    if path == "/proxy/crash":
        raise RuntimeError("boom")
    names = ("TABLE", "QUEUE_URL", "MODE", "SUBBED", "SATFLOW_ADMIN_KEY_SECRET_ID", "AWS_ENDPOINT_URL")
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": json.dumps({"event": event, "env": {k: os.environ.get(k) for k in names},
                                "context": {"function_name": context.function_name,
                                            "memory": context.memory_limit_in_mb,
                                            "remaining_ms": context.get_remaining_time_in_millis()}})}
'''


def write_tiny_project(root: Path) -> Path:
    (root / "functions" / "echo").mkdir(parents=True)
    (root / "statemachines").mkdir()
    (root / "functions" / "echo" / "app.py").write_text(ECHO_HANDLER)
    (root / "statemachines" / "flow.asl.json").write_text(FLOW_ASL)
    template = root / "template.yaml"
    template.write_text(TINY_TEMPLATE)
    return template


@pytest.fixture(scope="module")
def tiny_template(tmp_path_factory) -> Path:
    return write_tiny_project(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tiny_runtime(tiny_template):
    from satflow_dev.runtime.local_runtime import LocalRuntime

    # A suffix per module: moto's state is process-wide, so names keep modules apart.
    runtime = LocalRuntime(tiny_template, port=0, parameter_overrides={"Suffix": tiny_template.parent.name},
                           service_factories=[], write_admin_key_file=False,
                           environ={"SATFLOW_ADMIN_KEY": "tiny-admin-key"})
    with runtime:
        yield runtime


# The background services' template: SQS event sources (one queue declared before its dead-letter queue, on
# purpose), schedules of both kinds, and the LND secret that switches the Lightning simulator on.
SERVICES_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Suffix: {Type: String, Default: s1}
Globals:
  Function:
    Timeout: 5
    Environment:
      Variables:
        SATFLOW_LND_SECRET_ID: !Ref LndSecret
Resources:
  WorkQueue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "work-${Suffix}"
      VisibilityTimeout: 1
      RedrivePolicy: {deadLetterTargetArn: !GetAtt WorkDLQ.Arn, maxReceiveCount: 2}
  WorkDLQ:
    Type: AWS::SQS::Queue
    Properties: {QueueName: !Sub "work-dlq-${Suffix}"}
  RawQueue:
    Type: AWS::SQS::Queue
    Properties: {QueueName: !Sub "raw-${Suffix}", VisibilityTimeout: 0}
  LndSecret:
    Type: AWS::SecretsManager::Secret
    Properties:
      Name: !Sub "lnd-${Suffix}"
      SecretString: '{"url": "https://set.by.the.runtime", "macaroon_hex": "00", "tls_cert_pem": null}'
  WorkerFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/worker/
      Handler: app.handler
      Events:
        Work: {Type: SQS, Properties: {Queue: !GetAtt WorkQueue.Arn, BatchSize: 10,
                                       FunctionResponseTypes: [ReportBatchItemFailures]}}
        Raw: {Type: SQS, Properties: {Queue: !GetAtt RawQueue.Arn, BatchSize: 3}}
  MonitorFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/worker/
      Handler: app.monitor
      Events:
        Catchup: {Type: Schedule, Properties: {Schedule: rate(1 minute), Input: '{"job":"invoice_catchup"}'}}
        Reconcile: {Type: ScheduleV2, Properties: {ScheduleExpression: rate(1 minute),
                                                   Input: '{"job":"payment_reconciler"}'}}
        Plain: {Type: Schedule, Properties: {Schedule: "cron(0/5 * * * ? *)"}}
        Named: {Type: ScheduleV2, Properties: {ScheduleExpression: rate(2 hours), Name: !Sub "nightly-${Suffix}"}}
        Broken: {Type: Schedule, Properties: {Schedule: rate(1 day), Input: '{"job":"explode"}', Enabled: false}}
"""

WORKER_HANDLER = '''\
import json


def handler(event, context):
    failures = []
    for record in event["Records"]:
        body = json.loads(record["body"])
        receives = int(record["attributes"]["ApproximateReceiveCount"])
        if receives < body.get("raise_until", 0):
            raise RuntimeError("the whole batch is refused")
        if body.get("fail"):
            failures.append({"itemIdentifier": record["messageId"]})
        if body.get("bad_id"):
            return {"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]}
    return {"batchItemFailures": failures, "records": event["Records"]}


def monitor(event, context):
    if isinstance(event, dict) and event.get("job") == "explode":
        raise ValueError("job exploded")
    return event
'''


def write_services_project(root: Path) -> Path:
    (root / "functions" / "worker").mkdir(parents=True)
    (root / "functions" / "worker" / "app.py").write_text(WORKER_HANDLER)
    template = root / "template.yaml"
    template.write_text(SERVICES_TEMPLATE)
    return template


@pytest.fixture(scope="module")
def services_runtime(tmp_path_factory):
    """The services template on a runtime whose services are deterministic: the SQS poller only drains when
    asked, schedules only fire by hand (SATFLOW_SCHEDULE_SCALE=0), the Lightning simulator is served."""
    from satflow_dev.runtime.local_runtime import LocalRuntime
    from satflow_dev.runtime.services import lightning_service_factory, schedule_runner_factory
    from satflow_dev.runtime.sqs_poller import SqsPoller

    root = tmp_path_factory.mktemp("services")
    template = write_services_project(root)
    runtime = LocalRuntime(template, port=0, parameter_overrides={"Suffix": root.name},
                           service_factories=[lightning_service_factory,
                                              lambda rt: SqsPoller.from_runtime(rt, background=False),
                                              schedule_runner_factory],
                           write_admin_key_file=False, environ={"SATFLOW_SCHEDULE_SCALE": "0"})
    with runtime:
        yield runtime
