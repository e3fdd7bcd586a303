"""`make run DYNAMODB=local`: the local runtime with its table on DynamoDB Local. The AWS endpoint stays moto's
(the functions use one endpoint URL for every service); DynamoDB and DynamoDB Streams requests are forwarded to
DynamoDB Local by that endpoint. Money in and out through HTTP, and the table really is on DynamoDB Local."""
from __future__ import annotations

import time
import uuid

import pytest

from tests.realnodes.session_stack import unavailable
from tests.realnodes.test_runtime_regtest import _available, _call
from tests.runtime.conftest import REAL_TEMPLATE
from tests.runtime_http import fresh_stack_name

pytestmark = [pytest.mark.realnodes, pytest.mark.filterwarnings("ignore:No application metrics to publish")]


@pytest.fixture(scope="module")
def runtime():
    from satflow_dev.regtest.toolchain import dynamodb_local_built
    from satflow_dev.runtime.local_runtime import LocalRuntime
    from satflow_dev.runtime.services import lightning_service_factory, schedule_runner_factory
    from satflow_dev.runtime.sqs_poller import SqsPoller
    from satflow_dev.runtime.stream_poller import StreamPoller

    if not dynamodb_local_built():
        unavailable("DynamoDB Local", "run `make regtest-build` (python -m satflow_dev.regtest build)")
    factories = [lightning_service_factory, lambda rt: SqsPoller.from_runtime(rt, background=False),
                 lambda rt: StreamPoller.from_runtime(rt, background=False), schedule_runner_factory]
    with LocalRuntime(REAL_TEMPLATE, port=0, service_factories=factories, write_admin_key_file=False,
                      stack_name=fresh_stack_name(), environ={"SATFLOW_SCHEDULE_SCALE": "0"}, dynamodb="local") as rt:
        yield rt


def test_money_in_and_out_with_the_table_on_dynamodb_local(runtime):
    from satflow_dev.runtime.sqs_poller import SqsPoller

    status, account = _call(runtime, "POST", "/v1/accounts", key=runtime.admin_key,
                            body={"external_ref": f"e2e:ddb-{uuid.uuid4().hex[:8]}", "tier": 1})
    assert status == 201, account
    key = account["api_key"]
    status, invoice = _call(runtime, "POST", "/v1/invoices", key=key, body={"amount_msat": 50_000})
    assert status == 201, invoice
    status, _ = _call(runtime, "POST", "/_sim/lightning/pay", body={"payment_request": invoice["payment_request"]})
    assert status == 200
    runtime.service("schedules").fire("MonitorFunction", job="invoice_catchup")
    assert all(b.failed == [] and b.error is None for b in runtime.service(SqsPoller).drain("InvoiceEventsQueue"))
    assert _available(runtime, key) == 50_000

    status, external = _call(runtime, "POST", "/_sim/lightning/invoices", body={"amount_msat": 20_000})
    status, payment = _call(runtime, "POST", "/v1/payments", key=key, headers={"Idempotency-Key": "ddb-1"},
                            body={"payment_request": external["payment_request"]})
    assert status == 202, payment
    deadline = time.monotonic() + 30
    while payment["status"] not in ("SUCCEEDED", "FAILED") and time.monotonic() < deadline:
        time.sleep(0.2)
        _, payment = _call(runtime, "GET", f"/v1/payments/{payment['payment_id']}", key=key)
    assert payment["status"] == "SUCCEEDED", payment
    assert _available(runtime, key) == 50_000 - 20_000 - payment["fee_msat"]

    # The items are on DynamoDB Local, and moto has no such table.
    local = runtime.dynamodb_local.client()
    (table,) = [t for t in local.list_tables()["TableNames"] if t.endswith("LedgerTable")]
    assert local.scan(TableName=table, Select="COUNT")["Count"] > 0
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends  # the runtime's moto server runs in this process

    assert table not in dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].tables
