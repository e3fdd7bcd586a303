"""Payout-specific contract checks: events/payout <-> functions/payout/app.py, and the ASL's defaults for the
production input. The checks every ASL gets (placeholders, reachability, error names, retry policy, runs in moto)
live in tests/contracts/test_statemachines.py."""
from __future__ import annotations

import json
import time

import pytest

from satflow.domain.payouts import PayoutBatchNotFound

from tests.flows.harness import LambdaContext

from .conftest import PAYOUT_ASL, ROOT

EVENTS = sorted((ROOT / "events" / "payout").glob("*.json"))
STUB = "PayoutContractStub"
STUB_ARN = f"arn:aws:lambda:us-east-1:123456789012:function:{STUB}"


def test_sample_events_are_what_the_handler_reads(flow, payout_module):
    assert {json.loads(p.read_text())["step"] for p in EVENTS} == set(payout_module.STEPS)
    for path in EVENTS:
        event = json.loads(path.read_text())
        with pytest.raises(PayoutBatchNotFound):  # parsed and routed; the sample batch does not exist
            payout_module.lambda_handler(event, LambdaContext(function_name="PayoutFunction"))


def test_production_input_gets_the_defaults(payout_moto):
    """Executions start with {"batch_id"} only: Wait's SecondsPath and the check bounds come from Defaults."""
    calls = []

    def stub(event):
        calls.append(event)
        return {"batch_id": event["batch_id"], "next": "CHECK", "attempt": 0}

    payout_moto.functions[STUB] = stub
    sfn = payout_moto.client("stepfunctions")
    arn = payout_moto.create_state_machine(PAYOUT_ASL, {"PayoutFunctionArn": STUB_ARN})
    execution = payout_moto.execution_arn(arn, "production")
    try:
        sfn.start_execution(stateMachineArn=arn, name="production", input=json.dumps({"batch_id": "bat_p"}))
        deadline, wait_input = time.monotonic() + 10, None
        while wait_input is None and time.monotonic() < deadline:
            for event in sfn.get_execution_history(executionArn=execution)["events"]:
                details = event.get("stateEnteredEventDetails")
                if details and details["name"] == "Wait":
                    wait_input = json.loads(details["input"])
            time.sleep(0.02)
        assert wait_input is not None
        assert (wait_input["wait_s"], wait_input["max_checks"], wait_input["confirmations"],
                wait_input["signing_timeout_s"]) == (60, 1440, 3, 604800)
        assert sfn.describe_execution(executionArn=execution)["status"] == "RUNNING"
    finally:
        sfn.stop_execution(executionArn=execution)
        payout_moto.functions.pop(STUB, None)
    assert [c["step"] for c in calls] == ["prepare"]
