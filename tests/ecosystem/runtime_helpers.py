"""The real template on the local runtime (what `make run` serves), for the third-party client tests: Lightning
simulator, SQS poller and schedules driven by hand, so a credit happens exactly when the test fires it."""
from __future__ import annotations

import contextlib
import time

from tests.runtime.conftest import REAL_TEMPLATE
from tests.runtime_http import call, fresh_stack_name


@contextlib.contextmanager
def started_runtime():
    from satflow_dev.runtime.local_runtime import LocalRuntime
    from satflow_dev.runtime.services import lightning_service_factory, schedule_runner_factory
    from satflow_dev.runtime.sqs_poller import SqsPoller

    factories = [lightning_service_factory, lambda rt: SqsPoller.from_runtime(rt, background=False),
                 schedule_runner_factory]
    with LocalRuntime(REAL_TEMPLATE, port=0, service_factories=factories, write_admin_key_file=False,
                      stack_name=fresh_stack_name(),
                      environ={"SATFLOW_SCHEDULE_SCALE": "0", "SATFLOW_WORKFLOW_WAIT_S": "1"}) as rt:
        yield rt


def new_account(runtime, ref: str, fund_msat: int = 0) -> dict:
    status, account = call(runtime, "POST", "/v1/accounts", key=runtime.admin_key,
                           body={"external_ref": ref, "tier": 1}, headers={"Idempotency-Key": f"create-{ref}"})
    assert status == 201, account
    if fund_msat:
        status, body = call(runtime, "POST", "/v1/admin/adjustments", key=runtime.admin_key,
                            headers={"Idempotency-Key": f"fund-{ref}"},
                            body={"account_id": account["account_id"], "amount_msat": fund_msat,
                                  "direction": "credit", "reason": "test funding"})
        assert status == 201, body
    return account


def available(runtime, key: str) -> int:
    status, body = call(runtime, "GET", "/v1/balance", key=key)
    assert status == 200, body
    return body["balances"][0]["available_msat"]


def credit_settled_invoices(runtime) -> None:
    """What the schedules do in `make run`: the catch-up poll publishes settlements, the credit handler runs."""
    from satflow_dev.runtime.sqs_poller import SqsPoller

    runtime.service("schedules").fire("MonitorFunction", job="invoice_catchup")
    batches = runtime.service(SqsPoller).drain("InvoiceEventsQueue")
    assert all(b.failed == [] and b.error is None for b in batches), batches


def wait_for(predicate, timeout_s: float = 15.0, step_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step_s)
