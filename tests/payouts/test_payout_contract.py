"""statemachines/payout.asl.json <-> functions/payout/app.py <-> satflow errors <-> events/payout: the checks
tests/contracts applies to every ASL, plus the payout-specific ones (until the lead wires PayoutStateMachine into
template.yaml and TASK_KINDS)."""
from __future__ import annotations

import importlib
import json
import pkgutil
import time

import pytest

from satflow.domain.payouts import PayoutBatchNotFound

from tests.flows.harness import LambdaContext, placeholders

from .conftest import PAYOUT_ASL, ROOT

EVENTS = sorted((ROOT / "events" / "payout").glob("*.json"))
FORWARD = {"Prepare", "SignHot", "AwaitSignature", "Broadcast", "CheckConfirmations"}
IDEMPOTENT = {"Post", "Abandon"}
STUB = "PayoutContractStub"
STUB_ARN = f"arn:aws:lambda:us-east-1:123456789012:function:{STUB}"


def _definition() -> dict:
    return json.loads(PAYOUT_ASL.read_text())


def _domain_errors() -> dict[str, type]:
    import satflow.domain
    from satflow.domain import errors

    for module in pkgutil.iter_modules(satflow.domain.__path__):
        importlib.import_module(f"satflow.domain.{module.name}")
    return {cls.__name__: cls for cls in errors.all_error_classes()}


def test_placeholders_are_the_function_arn_only():
    assert placeholders(PAYOUT_ASL.read_text()) == {"PayoutFunctionArn"}


def test_every_state_is_reachable_and_every_transition_known():
    definition = _definition()
    states = definition["States"]
    edges = {}
    for name, state in states.items():
        targets = {state[k] for k in ("Next", "Default") if k in state}
        targets |= {c["Next"] for c in state.get("Choices", [])} | {c["Next"] for c in state.get("Catch", [])}
        assert targets <= set(states), name
        edges[name] = targets
    seen, todo = set(), [definition["StartAt"]]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(edges[name])
    assert seen == set(states)


def test_error_names_and_retry_policy():
    known = _domain_errors()
    from satflow.domain.errors import TransientError

    family = {n for n, cls in known.items() if issubclass(cls, TransientError)}
    states = _definition()["States"]
    assert {n for n, s in states.items() if s["Type"] == "Task"} == FORWARD | IDEMPOTENT
    for name, state in states.items():
        for rule in (*state.get("Retry", []), *state.get("Catch", [])):
            for error in rule["ErrorEquals"]:
                assert error.startswith("States.") or error in known, (name, error)
    for name in FORWARD:
        for rule in states[name].get("Retry", []):
            assert set(rule["ErrorEquals"]) == family, name  # transient only, every subclass listed


def test_sample_events_are_what_the_handler_reads(flow, payout_module):
    assert {json.loads(p.read_text())["step"] for p in EVENTS} == set(payout_module.STEPS)
    for path in EVENTS:
        event = json.loads(path.read_text())
        with pytest.raises(PayoutBatchNotFound):  # parsed and routed; the sample batch does not exist
            payout_module.lambda_handler(event, LambdaContext(function_name="PayoutFunction"))


def test_asl_runs_in_moto_and_ends_when_every_task_fails(payout_moto):
    calls = []

    def stub(event):
        calls.append(event)
        raise RuntimeError("contract stub")

    payout_moto.functions[STUB] = stub
    try:
        arn = payout_moto.create_state_machine(PAYOUT_ASL, {"PayoutFunctionArn": STUB_ARN})
        payout_moto.client("stepfunctions").start_execution(stateMachineArn=arn, name="contract-1",
                                                            input=json.dumps({"batch_id": "bat_contract"}))
        result = payout_moto.wait(payout_moto.execution_arn(arn, "contract-1"))
    finally:
        payout_moto.functions.pop(STUB, None)
    assert result.status in ("SUCCEEDED", "FAILED") and calls and result.final_state == "NeedsAttention"


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
                wait_input["signing_timeout_s"]) == (60, 1440, 1, 604800)
        assert sfn.describe_execution(executionArn=execution)["status"] == "RUNNING"
    finally:
        sfn.stop_execution(executionArn=execution)
        payout_moto.functions.pop(STUB, None)
    assert [c["step"] for c in calls] == ["prepare"]
