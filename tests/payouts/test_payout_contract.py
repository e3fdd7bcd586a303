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
        assert (wait_input["wait_s"], wait_input["max_checks"], wait_input["signing_timeout_s"]) == (60, 1440, 604800)
        assert "confirmations" not in wait_input  # configuration, not workflow input (one source of truth)
        assert sfn.describe_execution(executionArn=execution)["status"] == "RUNNING"
    finally:
        sfn.stop_execution(executionArn=execution)
        payout_moto.functions.pop(STUB, None)
    assert [c["step"] for c in calls] == ["prepare"]


def test_one_confirmation_depth_for_the_workflow_and_the_recovery():
    """The depth lives in configuration only: the template's parameter feeds SATFLOW_PAYOUT_CONFIRMATIONS, config
    defaults to the same constant Services does, and the ASL carries no depth of its own."""
    from satflow import config
    from satflow.app.ports import Services
    from satflow.domain.onchain import PAYOUT_CONFIRMATIONS

    from tests.contracts.conftest import load_template

    template = load_template()
    assert template["Parameters"]["PayoutConfirmations"]["Default"] == PAYOUT_CONFIRMATIONS
    assert template["Globals"]["Function"]["Environment"]["Variables"]["SATFLOW_PAYOUT_CONFIRMATIONS"] == {
        "Ref": "PayoutConfirmations"}
    asl = json.loads(PAYOUT_ASL.read_text())
    assert "confirmations" not in asl["States"]["Defaults"]["Result"]
    assert "confirmations.$" not in asl["States"]["CheckConfirmations"]["Parameters"]
    config.reset()
    try:
        assert config.settings().payout_confirmations == PAYOUT_CONFIRMATIONS
    finally:
        config.reset()
    assert Services.__dataclass_fields__["payout_confirmations"].default == PAYOUT_CONFIRMATIONS >= 3
