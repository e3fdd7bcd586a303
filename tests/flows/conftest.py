"""Flow fixtures: one moto server per session (state machine execution on, Lambda answered in-process), the state
machines from statemachines/payment.asl.json and review.asl.json, and per test a fresh table, simulator and
Services graph. PaymentFunction and RiskFunction run functions/payment/app.py and functions/risk/app.py."""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from satflow import bootstrap
from satflow.app import accounts as accounts_app
from satflow.app import payments, transfers
from satflow.domain.accounts import ALL_SCOPES, Principal
from satflow.domain.payments import Payment

from satflow_dev.sim.clock import Clock  # moved to the simulation package (issue 14); re-exported here

from tests.conftest import create_table, recorded_ledger
from tests.handlers.conftest import load_handler_module

from .harness import (
    PAYMENT_ASL, PAYMENT_FUNCTION_ARN, REGION, REVIEW_ASL, RISK_FUNCTION_ARN, CountingTransport, ExecutionResult,
    LambdaContext, MotoStepFunctions,
)

SHARDS = 4
ADMIN_KEY = "admin-flow-key-0123456789"
SIM_URL = "http://lnd.sim"


@pytest.fixture(scope="session")
def moto_sfn():
    stack = MotoStepFunctions().start()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def payment_state_machine(moto_sfn) -> str:
    return moto_sfn.create_state_machine(PAYMENT_ASL, {"PaymentFunctionArn": PAYMENT_FUNCTION_ARN,
                                                       "RiskFunctionArn": RISK_FUNCTION_ARN})


@pytest.fixture(scope="session")
def review_state_machine(moto_sfn) -> str:
    return moto_sfn.create_state_machine(REVIEW_ASL, {"RiskFunctionArn": RISK_FUNCTION_ARN})


@pytest.fixture(scope="session")
def payment_handler():
    return load_handler_module("payment", "satflow_fn_payment").lambda_handler


@pytest.fixture(scope="session")
def risk_handler():
    return load_handler_module("risk", "satflow_fn_risk").lambda_handler


@dataclass
class Flow:
    moto: MotoStepFunctions
    state_machine_arn: str
    svc: Any
    sim: Any
    lnd: CountingTransport
    clock: Clock
    handler: Callable[[dict, Any], Any]
    risk_handler: Callable[[dict, Any], Any] | None = None
    review_state_machine_arn: str = ""
    wait_s: int = 0
    max_tracks: int = 3
    review_timeout_s: int = 60
    started: list[str] = field(default_factory=list)
    step_calls: list[str] = field(default_factory=list)
    risk_calls: list[str] = field(default_factory=list)
    reviews_started: list[str] = field(default_factory=list)
    # fault hooks per step: called with (event, result) after the real step ran; may raise (LambdaCrash, ...)
    after_step: dict[str, Callable[[dict, Any], None]] = field(default_factory=dict)
    published: list[dict] = field(default_factory=list)  # invoice events the listener/poller published
    node: Any = None  # lightning_flow only: the backend (tests/flows/backends.py)
    _accounts: int = 0

    # -- the payment Lambda, as the state machine invokes it
    def invoke_step(self, event: dict) -> Any:
        self.step_calls.append(event["step"])
        result = self.handler(event, LambdaContext())
        hook = self.after_step.get(event["step"])
        if hook is not None:
            hook(event, result)
        return result

    # -- the risk Lambda, as the state machines invoke it
    def invoke_risk(self, event: dict) -> Any:
        self.risk_calls.append(event["step"])
        assert self.risk_handler is not None
        return self.risk_handler(event, LambdaContext(function_name="RiskFunction",
                                                      invoked_function_arn=RISK_FUNCTION_ARN))

    # -- the workflow starters (what bootstrap._execution_starter does, plus the fast-test timings)
    def start_payment(self, payment_id: str) -> None:
        self.started.append(payment_id)
        self._start(self.state_machine_arn, payment_id,
                    {"payment_id": payment_id, "wait_s": self.wait_s, "max_tracks": self.max_tracks,
                     "review_timeout_s": self.review_timeout_s})

    def start_review(self, review_id: str) -> None:
        self.reviews_started.append(review_id)
        self._start(self.review_state_machine_arn, review_id,
                    {"review_id": review_id, "review_timeout_s": self.review_timeout_s})

    def _start(self, state_machine_arn: str, name: str, payload: dict) -> None:
        from botocore.exceptions import ClientError

        try:
            self.moto.client("stepfunctions").start_execution(stateMachineArn=state_machine_arn, name=name,
                                                              input=json.dumps(payload))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                raise

    # -- reviews
    def decide(self, review_id: str, approve: bool, note: str | None = None):
        from satflow.app import risk

        return risk.decide_review(self.svc, accounts_app.ADMIN, review_id, approve, note,
                                  notify=risk.sfn_notifier(self.moto.client("stepfunctions")))

    def review(self, review_id: str):
        found = self.svc.risk.get_review(review_id)
        assert found is not None, review_id
        return found

    def wait_parked(self, review_id: str, timeout_s: float = 15.0):
        """Until the workflow stored its task token on the review (it is waiting for the admin)."""
        deadline = time.monotonic() + timeout_s
        while True:
            review = self.svc.risk.get_review(review_id)
            if review is not None and review.task_token:
                return review
            if time.monotonic() > deadline:
                raise AssertionError(f"review {review_id} never parked")
            time.sleep(0.05)

    def wait_review(self, review_id: str, timeout_s: float = 20.0) -> ExecutionResult:
        return self.moto.wait(self.moto.execution_arn(self.review_state_machine_arn, review_id), timeout_s)

    def execution_status(self, state_machine_arn: str, name: str) -> str:
        return self.moto.client("stepfunctions").describe_execution(
            executionArn=self.moto.execution_arn(state_machine_arn, name))["status"]

    # -- drivers
    def new_account(self, funds_msat: int = 0, tier: int = 1) -> Principal:
        self._accounts += 1
        account, _key = accounts_app.create_account(self.svc, accounts_app.ADMIN, f"flow:user{self._accounts}",
                                                    tier)
        if funds_msat:
            transfers.adjust(self.svc, accounts_app.ADMIN, f"fund-{account.account_id}", account.account_id,
                             funds_msat, "credit", "flow test funding")
        return Principal(account_id=account.account_id, scopes=frozenset(ALL_SCOPES))

    def pay(self, principal: Principal, payment_request: str, *, key: str | None = None, **kwargs: Any) -> Payment:
        return payments.create_payment(self.svc, principal, key or f"k-{uuid.uuid4().hex}", payment_request,
                                       **kwargs)

    def wait(self, payment_id: str, timeout_s: float = 20.0) -> ExecutionResult:
        return self.moto.wait(self.moto.execution_arn(self.state_machine_arn, payment_id), timeout_s)

    def payment(self, payment_id: str) -> Payment:
        found = self.svc.lightning.get_payment(payment_id)
        assert found is not None, payment_id
        return found

    def balance(self, owner: str) -> tuple[int, int]:
        """(available, pending_out) in msat."""
        found = [b for b in self.svc.ledger.balances(owner) if b.account.asset == "BTC"]
        return (found[0].available, found[0].pending_out) if found else (0, 0)

    def assert_invariants(self) -> None:
        report = self.svc.ledger.check_invariants()
        assert report.ok, report.violations

    def item_count(self) -> int:
        ddb = self.moto.client("dynamodb")
        return ddb.scan(TableName=self.svc.lightning._m.table_name, Select="COUNT")["Count"]


@pytest.fixture(scope="session")
def invoice_handler():
    return load_handler_module("invoice", "satflow_fn_invoice").lambda_handler


def _build_flow(moto_sfn, payment_state_machine, review_state_machine, payment_handler, risk_handler, *,
                clock: Clock, lnd: Any, counting: CountingTransport, sim: Any) -> Flow:
    from satflow.adapters.dynamodb.accounts import DynamoAccounts
    from satflow.adapters.dynamodb.lightning import DynamoLightningStore
    from satflow.adapters.dynamodb.models import build_models
    from satflow.app.ports import Services

    table = f"flow-{uuid.uuid4().hex[:12]}"
    client = moto_sfn.client("dynamodb")
    create_table(client, table)
    models = build_models(table, REGION, moto_sfn.url)
    ledger = recorded_ledger(client, models, SHARDS)
    svc = Services(ledger=ledger, audit=ledger.audit, webhooks=ledger.webhooks, accounts=DynamoAccounts(client, models),
                   admin_key=lambda: ADMIN_KEY, system_shards=SHARDS, network="regtest",
                   unix_clock=lambda: int(clock()), lightning=DynamoLightningStore(client, models),
                   lnd=lambda: lnd)
    from satflow.adapters.dynamodb.limits import DynamoLimitStore
    svc.limits = DynamoLimitStore(client, models)
    from satflow.adapters.dynamodb.sanctions import DynamoSanctionsStore
    from tests.conftest import loaded_sanctions_store
    svc.sanctions = loaded_sanctions_store(DynamoSanctionsStore(client, table))
    from satflow.adapters.dynamodb.risk import DynamoRiskStore
    svc.risk = DynamoRiskStore(client, models)
    from tests.conftest import _ecosystem_stores
    for name, store in _ecosystem_stores(client, table).items():  # accounts are created with their key records
        setattr(svc, name, store)
    f = Flow(moto=moto_sfn, state_machine_arn=payment_state_machine, svc=svc, sim=sim, lnd=counting, clock=clock,
             handler=payment_handler, risk_handler=risk_handler, review_state_machine_arn=review_state_machine)
    svc.start_payment = f.start_payment
    svc.start_review = f.start_review
    svc.publish_invoice_event = f.published.append
    moto_sfn.functions["PaymentFunction"] = f.invoke_step
    moto_sfn.functions["RiskFunction"] = f.invoke_risk
    bootstrap.override(svc)
    return f


def _teardown_flow(moto_sfn) -> None:
    bootstrap.override(None)
    moto_sfn.functions.pop("PaymentFunction", None)
    moto_sfn.functions.pop("RiskFunction", None)


@pytest.fixture
def flow(moto_sfn, payment_state_machine, review_state_machine, payment_handler, risk_handler):
    """A flow against the Lightning simulator (scripted outcomes: ``flow.sim.script(...)``)."""
    from satflow.adapters.lnd import LndRestClient

    from satflow_dev.simulators.lightning import LightningSimulator

    clock = Clock()
    sim = LightningSimulator(clock=clock)
    counting = CountingTransport(sim.transport(), sim)
    lnd = LndRestClient(base_url=SIM_URL, macaroon_hex=sim.macaroon_hex, transport=counting.transport)
    yield _build_flow(moto_sfn, payment_state_machine, review_state_machine, payment_handler, risk_handler,
                      clock=clock, lnd=lnd, counting=counting, sim=sim)
    _teardown_flow(moto_sfn)
    lnd.close()


@pytest.fixture(scope="session")
def regtest_stack(request: pytest.FixtureRequest):
    """The session's one regtest stack (the same object tests/realnodes uses)."""
    from tests.realnodes.session_stack import session_stack

    return session_stack(request)


@pytest.fixture(params=["simulator", pytest.param("lnd", marks=pytest.mark.realnodes)])
def lightning_flow(request, moto_sfn, payment_state_machine, review_state_machine, payment_handler, risk_handler):
    """One suite, two backends: a flow whose Lightning node is the simulator, then the real regtest master lnd
    (the external lnd playing the outside world). ``flow.node`` is the backend (tests/flows/backends.py); nothing
    is scripted, so the same test body holds on both."""
    from .backends import lnd_lightning, simulator_lightning

    clock = Clock()
    if request.param == "simulator":
        node = simulator_lightning(clock)
    else:
        node = lnd_lightning(request.getfixturevalue("regtest_stack"))
    f = _build_flow(moto_sfn, payment_state_machine, review_state_machine, payment_handler, risk_handler,
                    clock=clock, lnd=node.client, counting=node.counting, sim=node.sim)
    f.node = node
    # Real HTLCs take a moment: let Track wait for news instead of spinning through max_tracks.
    f.wait_s, f.max_tracks = (0, 3) if node.sim is not None else (1, 10)
    yield f
    _teardown_flow(moto_sfn)
    node.close()
