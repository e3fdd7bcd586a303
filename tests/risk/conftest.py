"""Risk fixtures. Payout reviews run on the payout flow's stack (tests/payouts/conftest.py: the real payout state
machine on a locked moto server, the chain simulator) plus the REAL review state machine and functions/risk/app.py."""
from __future__ import annotations

import pytest

from tests.flows.harness import REVIEW_ASL, RISK_FUNCTION_ARN, LambdaContext
from tests.handlers.conftest import load_handler_module
from tests.payouts.conftest import flow as payout_flow  # noqa: F401  (fixtures reused as they are)
from tests.payouts.conftest import payout_module, payout_moto, payout_state_machine  # noqa: F401


@pytest.fixture(scope="package")
def review_state_machine(payout_moto):  # noqa: F811
    return payout_moto.create_state_machine(REVIEW_ASL, {"RiskFunctionArn": RISK_FUNCTION_ARN})


@pytest.fixture
def payout_review(payout_flow, payout_moto, review_state_machine):  # noqa: F811
    """The payout flow with reviews wired: svc.start_review starts review.asl.json, RiskFunction runs in-process,
    admin decisions are audited."""
    import json

    from satflow.adapters.dynamodb.audit import DynamoAuditStore
    from satflow.adapters.dynamodb.models import build_models

    flow = payout_flow
    handler = load_handler_module("risk", "satflow_fn_risk").lambda_handler
    svc = flow.svc
    models_table = svc.payouts._table
    svc.audit = DynamoAuditStore(payout_moto.client("dynamodb"), build_models(models_table, "us-east-1",
                                                                              payout_moto.url), shards=2)
    flow.review_timeout_s = 60
    flow.review_state_machine_arn = review_state_machine

    def start_review(review_id: str) -> None:
        payout_moto.client("stepfunctions").start_execution(
            stateMachineArn=review_state_machine, name=review_id,
            input=json.dumps({"review_id": review_id, "review_timeout_s": flow.review_timeout_s}))

    svc.start_review = start_review
    payout_moto.functions["RiskFunction"] = lambda event: handler(event, LambdaContext(
        function_name="RiskFunction", invoked_function_arn=RISK_FUNCTION_ARN))
    yield flow
    payout_moto.functions.pop("RiskFunction", None)
