"""statemachines/*.asl.json <-> template.yaml <-> satflow.domain.errors, and each ASL runs in moto.

cfn-lint does not look inside a DefinitionUri file, so these are the checks a broken ASL would otherwise only
meet at deploy time (or in production): references and substitutions, structure, the error-name contract
(Python exception class names are what Retry/Catch match), retry policy, and a real create + execution."""
from __future__ import annotations

import importlib
import json
import pkgutil
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.flows.harness import MotoStepFunctions, placeholders, render_asl

from .conftest import ROOT, resources_of

STATEMACHINES = ROOT / "statemachines"
ASL_FILES = sorted(STATEMACHINES.glob("*.asl.json"))
ASL_IDS = [p.name for p in ASL_FILES]

# Every Task state is either a forward step (moves money or talks to a node: retries only transient errors) or an
# idempotent compensation/finisher (may retry every error). A new Task state must be classified here.
TASK_KINDS: dict[str, dict[str, set[str]]] = {
    "payment.asl.json": {"forward": {"Risk", "AwaitReview", "Reserve", "Send", "Track"},
                         "idempotent": {"ReviewTimedOut", "ApplyRisk", "Post", "Void"}},
    "review.asl.json": {"forward": {"AwaitDecision"}, "idempotent": {"TimedOut", "Apply"}},
    "payout.asl.json": {"forward": {"Prepare", "SignHot", "AwaitSignature", "Broadcast", "CheckConfirmations"},
                        "idempotent": {"Post", "Abandon"}},
}
STUB_FUNCTION = "ContractStubFunction"
STUB_ARN = f"arn:aws:lambda:us-east-1:123456789012:function:{STUB_FUNCTION}"


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _states(definition: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every state, including those nested in Parallel branches and Map iterators."""
    for name, state in definition.get("States", {}).items():
        yield name, state
        for branch in state.get("Branches", []):
            yield from _states(branch)
        for key in ("Iterator", "ItemProcessor"):
            if key in state:
                yield from _states(state[key])


def _error_names(state: dict[str, Any]) -> Iterator[str]:
    for rule in (*state.get("Retry", []), *state.get("Catch", [])):
        yield from rule["ErrorEquals"]


def _domain_errors() -> dict[str, type]:
    import satflow.domain
    from satflow.domain import errors

    for module in pkgutil.iter_modules(satflow.domain.__path__):
        importlib.import_module(f"satflow.domain.{module.name}")  # every error class defined anywhere is loaded
    return {cls.__name__: cls for cls in errors.all_error_classes()}


@pytest.fixture(scope="module")
def state_machines(template) -> dict[str, dict[str, Any]]:
    return resources_of(template, "AWS::Serverless::StateMachine")


# ------------------------------------------------------------------------------------------------ template
def test_there_is_at_least_one_asl_file():
    assert ASL_FILES, "statemachines/ holds no *.asl.json"


@pytest.mark.parametrize("path", ASL_FILES, ids=ASL_IDS)
def test_each_asl_file_is_referenced_by_exactly_one_state_machine(path, state_machines):
    referencing = [lid for lid, sm in state_machines.items()
                   if sm.get("Properties", {}).get("DefinitionUri") == f"statemachines/{path.name}"]
    assert len(referencing) == 1, f"{path.name} is referenced by {referencing or 'no state machine'}"


def test_every_state_machine_uses_a_definition_uri_in_statemachines(state_machines):
    for lid, sm in state_machines.items():
        props = sm.get("Properties", {})
        assert "Definition" not in props, f"{lid}: definitions live in statemachines/, never inline"
        uri = props.get("DefinitionUri")
        assert isinstance(uri, str) and uri.startswith("statemachines/") and uri.endswith(".asl.json"), lid
        assert (ROOT / uri).is_file(), f"{lid}: {uri} does not exist"


@pytest.mark.parametrize("path", ASL_FILES, ids=ASL_IDS)
def test_definition_substitutions_cover_every_placeholder_and_nothing_more(path, state_machines):
    (sm,) = [sm for sm in state_machines.values()
             if sm.get("Properties", {}).get("DefinitionUri") == f"statemachines/{path.name}"]
    given = set(sm["Properties"].get("DefinitionSubstitutions", {}))
    needed = placeholders(path.read_text())
    assert given == needed, f"{path.name}: missing {sorted(needed - given)}, unused {sorted(given - needed)}"


# ------------------------------------------------------------------------------------------------ structure
@pytest.mark.parametrize("path", ASL_FILES, ids=ASL_IDS)
def test_every_transition_names_a_state_and_every_state_is_reachable(path):
    definition = _load(path)
    states = definition["States"]
    assert definition["StartAt"] in states
    edges: dict[str, set[str]] = {}
    for name, state in states.items():
        targets = {state[k] for k in ("Next", "Default") if k in state}
        targets |= {choice["Next"] for choice in state.get("Choices", [])}
        targets |= {catch["Next"] for catch in state.get("Catch", [])}
        unknown = targets - set(states)
        assert not unknown, f"{path.name}: {name} goes to unknown states {sorted(unknown)}"
        terminal = state["Type"] in ("Succeed", "Fail") or state.get("End") is True
        assert terminal or targets, f"{path.name}: {name} has no way out"
        edges[name] = targets
    seen, todo = set(), [definition["StartAt"]]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(edges[name])
    assert seen == set(states), f"{path.name}: unreachable states {sorted(set(states) - seen)}"


# ------------------------------------------------------------------------------------------------ errors
# Lambda's own invoke failures (throttling, service errors): AWS recommends retrying them on every Lambda task.
LAMBDA_SERVICE_ERRORS = {"Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
                         "Lambda.TooManyRequestsException"}
LAMBDA_THROTTLED = "Lambda.TooManyRequestsException"


@pytest.mark.parametrize("path", ASL_FILES, ids=ASL_IDS)
def test_error_names_are_domain_error_classes(path):
    known = _domain_errors()
    for name, state in _states(_load(path)):
        for error in _error_names(state):
            if error.startswith("States.") or error in LAMBDA_SERVICE_ERRORS:
                continue
            assert error in known, f"{path.name}: {name} names {error!r}, which is not in satflow.domain.errors"


@pytest.mark.parametrize("path", ASL_FILES, ids=ASL_IDS)
def test_every_task_state_is_classified_forward_or_idempotent(path):
    kinds = TASK_KINDS.get(path.name)
    assert kinds is not None, f"{path.name}: classify its Task states in TASK_KINDS"
    tasks = {name for name, state in _states(_load(path)) if state["Type"] == "Task"}
    assert tasks == kinds["forward"] | kinds["idempotent"], path.name
    assert not kinds["forward"] & kinds["idempotent"]


@pytest.mark.parametrize("path", ASL_FILES, ids=ASL_IDS)
def test_forward_steps_retry_only_transient_errors(path):
    from satflow.domain.errors import TransientError

    known = _domain_errors()
    states = dict(_states(_load(path)))
    for name in TASK_KINDS.get(path.name, {}).get("forward", ()):
        for rule in states[name].get("Retry", []):
            for error in rule["ErrorEquals"]:
                if error == LAMBDA_THROTTLED:  # the function was not invoked at all: retrying repeats nothing
                    continue
                assert error in known and issubclass(known[error], TransientError), (
                    f"{path.name}: forward step {name} retries {error!r}; only TransientError subclasses may be "
                    "retried where a retry could move money or reach a node twice")
        # Lambda reports the concrete class name, so a subclass is retried only if it is listed itself.
        family = {cls.__name__ for cls in known.values() if issubclass(cls, TransientError)}
        for rule in states[name].get("Retry", []):
            if "TransientError" in rule["ErrorEquals"]:
                missing = family - set(rule["ErrorEquals"])
                assert not missing, f"{path.name}: {name} retries TransientError but not its subclasses {missing}"


# ------------------------------------------------------------------------------------------------ moto
@pytest.fixture(scope="module")
def moto():
    stack = MotoStepFunctions().start()
    yield stack
    stack.stop()


def _substitutions(path: Path) -> dict[str, str]:
    # Every substitution here is a function ARN; a non-Lambda one would need its own stub.
    needed = placeholders(path.read_text())
    assert all(name.endswith("FunctionArn") for name in needed), f"{path.name}: teach this test {sorted(needed)}"
    return {name: STUB_ARN for name in needed}


@pytest.mark.parametrize("path", ASL_FILES, ids=ASL_IDS)
def test_asl_creates_in_moto_and_an_execution_reaches_a_terminal_state(path, moto):
    """Every task fails with an error no Retry names: the execution must still end (Catch or fail), quickly."""
    calls: list[dict] = []

    def stub(event):
        calls.append(event)
        raise RuntimeError("contract stub")

    moto.functions[STUB_FUNCTION] = stub
    try:
        arn = moto.create_state_machine(path, _substitutions(path))
        moto.client("stepfunctions").start_execution(stateMachineArn=arn, name="contract-1",
                                                     input=json.dumps({"payment_id": "pay_contract",
                                                                       "batch_id": "bat_contract",
                                                                       "review_id": "rev_contract"}))
        result = moto.wait(moto.execution_arn(arn, "contract-1"), timeout_s=20)
    finally:
        moto.functions.pop(STUB_FUNCTION, None)
    assert result.status in ("SUCCEEDED", "FAILED"), result
    assert calls, "no Task ran"


ALLOWED = {"payment_id": "pay_x", "decision": "allow", "score": 10, "review_id": None}


def _payment_stub(answers: dict[str, Any], calls: list[dict]):
    def stub(event):
        calls.append(event)
        answer = answers[event["step"]]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return stub


@pytest.mark.parametrize("error, final_state, status", [
    ("InsufficientFunds", "Rejected", "FAILED"),
    ("PaymentHashInFlight", "Rejected", "FAILED"),
])
def test_payment_reserve_refusals_are_caught_by_their_class_name(moto, error, final_state, status):
    from satflow.domain import errors

    calls: list[dict] = []
    moto.functions[STUB_FUNCTION] = _payment_stub({"assess_payment": ALLOWED, "reserve": getattr(errors, error)("no")},
                                                  calls)
    try:
        arn = moto.create_state_machine(STATEMACHINES / "payment.asl.json", _substitutions(
            STATEMACHINES / "payment.asl.json"))
        moto.client("stepfunctions").start_execution(stateMachineArn=arn, name="refused",
                                                     input=json.dumps({"payment_id": "pay_x"}))
        result = moto.wait(moto.execution_arn(arn, "refused"))
    finally:
        moto.functions.pop(STUB_FUNCTION, None)
    assert (result.final_state, result.status, result.error) == (final_state, status, "PaymentRejected")
    assert [c["step"] for c in calls] == ["assess_payment", "reserve"]


def test_payment_production_input_gets_the_default_wait_and_track_bound(moto):
    """The API starts executions with {"payment_id"} only: Wait's SecondsPath and Track's max_tracks must come
    from the ASL's defaults, else the first Wait is a States.Runtime failure."""
    path = STATEMACHINES / "payment.asl.json"
    calls: list[dict] = []
    outcome = {"status": "IN_FLIGHT", "detail": ""}
    moto.functions[STUB_FUNCTION] = _payment_stub({
        "assess_payment": ALLOWED,
        "reserve": {"payment_id": "pay_x", "status": "PENDING"},
        "send": {"payment_id": "pay_x", "next": "WAIT", "outcome": outcome, "attempt": 0},
    }, calls)
    sfn = moto.client("stepfunctions")
    arn = moto.create_state_machine(path, _substitutions(path))
    execution = moto.execution_arn(arn, "production-input")
    try:
        sfn.start_execution(stateMachineArn=arn, name="production-input", input=json.dumps({"payment_id": "pay_x"}))
        deadline = time.monotonic() + 10
        wait_input = None
        while wait_input is None and time.monotonic() < deadline:
            for event in sfn.get_execution_history(executionArn=execution)["events"]:
                details = event.get("stateEnteredEventDetails")
                if details and details["name"] == "Wait":
                    wait_input = json.loads(details["input"])
            time.sleep(0.02)
        assert wait_input is not None, "the execution never reached Wait"
        assert wait_input["wait_s"] == 15 and wait_input["max_tracks"] == 20
        assert wait_input["review_timeout_s"] == 86400  # a day for an admin to decide, then rejected
        time.sleep(0.2)
        assert sfn.describe_execution(executionArn=execution)["status"] == "RUNNING"  # waiting, not failed
    finally:
        sfn.stop_execution(executionArn=execution)
        moto.functions.pop(STUB_FUNCTION, None)
    assert [c["step"] for c in calls] == ["assess_payment", "reserve", "send"]


def test_payment_input_values_override_the_defaults(moto):
    path = STATEMACHINES / "payment.asl.json"
    calls: list[dict] = []
    outcome = {"status": "IN_FLIGHT", "detail": ""}
    moto.functions[STUB_FUNCTION] = _payment_stub({
        "assess_payment": ALLOWED,
        "reserve": {"payment_id": "pay_y", "status": "PENDING"},
        "send": {"payment_id": "pay_y", "next": "WAIT", "outcome": outcome, "attempt": 0},
        "track": {"payment_id": "pay_y", "next": "RECONCILE", "outcome": outcome, "attempt": 1},
    }, calls)
    try:
        arn = moto.create_state_machine(path, _substitutions(path))
        moto.client("stepfunctions").start_execution(
            stateMachineArn=arn, name="fast", input=json.dumps({"payment_id": "pay_y", "wait_s": 0, "max_tracks": 7}))
        result = moto.wait(moto.execution_arn(arn, "fast"))
    finally:
        moto.functions.pop(STUB_FUNCTION, None)
    assert result.final_state == "NeedsReconciliation" and result.status == "SUCCEEDED"
    track = calls[-1]
    assert track == {"step": "track", "payment_id": "pay_y", "attempt": 0, "max_tracks": 7}
