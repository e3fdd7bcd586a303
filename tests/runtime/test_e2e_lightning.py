"""The real template with the Lightning simulator, the SQS poller and the schedules: money in through an invoice
the outside world pays (catch-up job -> InvoiceEventsQueue -> InvoiceFunction), money out through a payment
(PaymentStateMachine -> PaymentFunction -> the simulator over HTTP). Services are driven by hand for determinism."""
from __future__ import annotations

import functools
import time
import uuid

import pytest

from tests.runtime_http import call, fresh_stack_name

from .conftest import REAL_TEMPLATE

ROOT = REAL_TEMPLATE.parent
NEEDED = [ROOT / "functions" / name / "app.py" for name in ("api", "invoice", "monitor", "payment")]

pytestmark = pytest.mark.skipif(
    not all(p.exists() for p in NEEDED) or "InvoiceFunction:" not in REAL_TEMPLATE.read_text(),
    reason="the Lightning functions are not in the template yet")


@pytest.fixture(scope="module")
def runtime():
    from satflow_dev.runtime.local_runtime import LocalRuntime
    from satflow_dev.runtime.services import lightning_service_factory, schedule_runner_factory
    from satflow_dev.runtime.sqs_poller import SqsPoller

    factories = [lightning_service_factory, lambda rt: SqsPoller.from_runtime(rt, background=False),
                 schedule_runner_factory]
    with LocalRuntime(REAL_TEMPLATE, port=0, service_factories=factories, write_admin_key_file=False,
                      stack_name=fresh_stack_name(), environ={"SATFLOW_SCHEDULE_SCALE": "0"}) as rt:
        yield rt


_call = functools.partial(call, timeout=10)


def _available(runtime, key: str) -> int:
    status, body = _call(runtime, "GET", "/v1/balance", key=key)
    assert status == 200, body
    return body["balances"][0]["available_msat"]


def test_receive_then_pay_through_the_simulator(runtime):
    from satflow_dev.runtime.sqs_poller import SqsPoller

    status, account = _call(runtime, "POST", "/v1/accounts", key=runtime.admin_key,
                            body={"external_ref": f"e2e:ln-{uuid.uuid4().hex[:8]}", "tier": 1})
    assert status == 201, account
    key = account["api_key"]

    status, invoice = _call(runtime, "POST", "/v1/invoices", key=key, body={"amount_msat": 50_000, "memo": "in"})
    assert status == 201, invoice
    status, paid = _call(runtime, "POST", "/_sim/lightning/pay", body={"payment_request": invoice["payment_request"]})
    assert status == 200, paid

    runtime.service("schedules").fire("MonitorFunction", job="invoice_catchup")
    batches = runtime.service(SqsPoller).drain("InvoiceEventsQueue")
    assert batches and all(b.failed == [] and b.error is None for b in batches)
    status, settled = _call(runtime, "GET", f"/v1/invoices/{invoice['payment_hash']}", key=key)
    assert (status, settled["status"]) == (200, "SETTLED")
    assert _available(runtime, key) == 50_000

    status, external = _call(runtime, "POST", "/_sim/lightning/invoices", body={"amount_msat": 20_000, "memo": "out"})
    assert status == 201, external
    status, payment = _call(runtime, "POST", "/v1/payments", key=key, headers={"Idempotency-Key": "e2e-pay-1"},
                            body={"payment_request": external["payment_request"]})
    assert status == 202, payment
    deadline = time.monotonic() + 10
    while payment["status"] not in ("SUCCEEDED", "FAILED") and time.monotonic() < deadline:
        time.sleep(0.1)
        _, payment = _call(runtime, "GET", f"/v1/payments/{payment['payment_id']}", key=key)
    assert payment["status"] == "SUCCEEDED", payment
    sim = runtime.service("lightning").simulator
    assert sim.invoice_state(external["payment_hash"]) == "SETTLED"
    assert _available(runtime, key) == 50_000 - 20_000 - payment["fee_msat"]
