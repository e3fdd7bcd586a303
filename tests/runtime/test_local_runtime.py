"""The runtime wires what the template declares: resources in moto, handlers in-process, Step Functions tasks,
background services, and it leaves the process environment as it found it."""
from __future__ import annotations

import json
import os
import time
import urllib.request

import pytest

from satflow_dev.runtime.local_runtime import LocalRuntime
from satflow_dev.runtime.resources import aws_client


def _wait_for_execution(sfn, execution_arn: str, timeout_s: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        described = sfn.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING" or time.monotonic() > deadline:
            return described
        time.sleep(0.02)


def test_resources_are_created_as_declared(tiny_runtime):
    model = tiny_runtime.model
    ddb = aws_client("dynamodb", tiny_runtime.moto_url)
    table = model.tables[0]
    described = ddb.describe_table(TableName=table.name)["Table"]
    assert described["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    ttl = ddb.describe_time_to_live(TableName=table.name)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")
    # The secret named by SATFLOW_ADMIN_KEY_SECRET_ID holds the admin key (from SATFLOW_ADMIN_KEY here).
    secrets = aws_client("secretsmanager", tiny_runtime.moto_url)
    assert secrets.get_secret_value(SecretId=model.secrets[0].name)["SecretString"] == "tiny-admin-key"
    assert tiny_runtime.admin_key == "tiny-admin-key"
    sqs = aws_client("sqs", tiny_runtime.moto_url)
    url = sqs.get_queue_url(QueueName=model.queues[0].name)["QueueUrl"]
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"] == {
        "VisibilityTimeout": "30"}


def test_state_machine_tasks_run_our_handler(tiny_runtime):
    sfn = aws_client("stepfunctions", tiny_runtime.moto_url)
    arn = tiny_runtime.resources.state_machine_arns["Flow"]
    item = f"item-{time.time_ns()}"
    done = sfn.start_execution(stateMachineArn=arn, name=f"ok-{item}", input=json.dumps({"id": item}))
    result = _wait_for_execution(sfn, done["executionArn"])
    assert (result["status"], json.loads(result["output"])) == ("SUCCEEDED", {"stored": item})
    # The handler wrote through moto while moto was running the execution: no deadlock on the moto lock.
    ddb = aws_client("dynamodb", tiny_runtime.moto_url)
    assert "Item" in ddb.get_item(TableName=tiny_runtime.model.tables[0].name, Key={"pk": {"S": item}})
    # A Python exception's class name is what ASL Catch matches on.
    rejected = sfn.start_execution(stateMachineArn=arn, name=f"no-{item}", input=json.dumps({"reject": True}))
    result = _wait_for_execution(sfn, rejected["executionArn"])
    assert (result["status"], json.loads(result["output"])) == ("SUCCEEDED", {"outcome": "rejected"})


def test_concurrent_invocations_get_separate_execution_environments(tiny_runtime):
    """A handler module's globals serve one invocation at a time (as in Lambda); concurrent requests run in further
    worker processes instead of sharing one, so a module-level "current event" never leaks between callers."""
    import threading

    answers: dict[int, object] = {}
    start = threading.Barrier(6)

    def caller(n: int) -> None:
        start.wait()
        with urllib.request.urlopen(f"{tiny_runtime.url}/proxy/slow-echo?id={n}", timeout=5) as response:
            answers[n] = json.loads(response.read())["id"]

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == {n: str(n) for n in range(6)}


class _RecordingService:
    name = "recorder"

    def __init__(self, runtime: LocalRuntime, events: list[str]) -> None:
        self.events = events
        runtime.gateway.register_dev_route("/_sim/recorder", lambda m, p, b: (200, {"events": list(events)}))

    def start(self) -> None:
        self.events.append("start")

    def stop(self) -> None:
        self.events.append("stop")


def test_services_start_and_stop_with_the_runtime_and_env_is_restored(tiny_template):
    before = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "TABLE", "MODE")}
    events: list[str] = []
    runtime = LocalRuntime(tiny_template, port=0, parameter_overrides={"Suffix": "svc"},
                           service_factories=[lambda rt: _RecordingService(rt, events), lambda rt: None],
                           environ={})
    with runtime:
        assert os.environ["AWS_ENDPOINT_URL"] == runtime.moto_url
        assert os.environ["TABLE"] == "satflow-local-tiny-svc"
        with urllib.request.urlopen(runtime.url + "/_sim/recorder", timeout=5) as response:
            assert json.loads(response.read()) == {"events": ["start"]}
        key = runtime.admin_key
        assert key and len(key) >= 40  # generated: secrets.token_urlsafe(32)
        assert runtime.admin_key_file.read_text().strip() == key
        assert runtime.admin_key_file.stat().st_mode & 0o777 == 0o600
    assert events == ["start", "stop"]
    assert {k: os.environ.get(k) for k in before} == before


def test_a_second_runtime_on_a_busy_port_fails_before_touching_anything(tiny_runtime):
    second = LocalRuntime(tiny_runtime.template_path, port=tiny_runtime.gateway.port,
                          parameter_overrides={"Suffix": "busy"}, service_factories=[])
    key_file = second.admin_key_file
    key_before = key_file.read_text() if key_file.exists() else None
    with pytest.raises(OSError):
        second.start()
    assert second.resources is None and second.moto_url == ""
    assert (key_file.read_text() if key_file.exists() else None) == key_before
