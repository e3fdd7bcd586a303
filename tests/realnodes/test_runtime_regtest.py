"""`make run BACKEND=regtest`: the local runtime with the regtest stack in place of the simulators (RegtestService),
driven through HTTP only: an invoice of ours paid by the external lnd (/_sim/lightning/pay fires the catch-up job
-> InvoiceEventsQueue -> InvoiceFunction), a payment to the external lnd's invoice (/_sim/lightning/invoices ->
POST /v1/payments -> PaymentStateMachine -> PaymentFunction -> the real master lnd), and the miner's routes.

The runtime shares the session's stack (``RegtestService(stack=...)``) rather than starting a second one; `python
-m satflow_dev.runtime --backend regtest` starts its own the same way the session fixture does.
"""
from __future__ import annotations

import functools
import time
import uuid

import pytest

from tests.runtime.conftest import REAL_TEMPLATE
from tests.runtime_http import call, fresh_stack_name

pytestmark = [pytest.mark.realnodes, pytest.mark.filterwarnings("ignore:No application metrics to publish")]


@pytest.fixture(scope="module")
def runtime(regtest_stack):
    from satflow_dev.runtime.local_runtime import LocalRuntime
    from satflow_dev.runtime.regtest_service import RegtestService
    from satflow_dev.runtime.services import schedule_runner_factory
    from satflow_dev.runtime.sqs_poller import SqsPoller

    factories = [lambda rt: RegtestService.from_runtime(rt, stack=regtest_stack),
                 lambda rt: SqsPoller.from_runtime(rt, background=False), schedule_runner_factory]
    with LocalRuntime(REAL_TEMPLATE, port=0, service_factories=factories, write_admin_key_file=False,
                      stack_name=fresh_stack_name(), environ={"SATFLOW_SCHEDULE_SCALE": "0"}) as rt:
        yield rt


_call = functools.partial(call, timeout=60)


def _available(runtime, key: str) -> int:
    status, body = _call(runtime, "GET", "/v1/balance", key=key)
    assert status == 200, body
    return body["balances"][0]["available_msat"]


def test_inbound_and_outbound_lightning_through_http_on_the_real_nodes(runtime, regtest_stack):
    from satflow_dev.runtime.sqs_poller import SqsPoller

    status, state = _call(runtime, "GET", "/_sim/lightning")
    assert status == 200 and state["backend"] == "regtest" and state["node_pubkey"] == regtest_stack.master.pubkey
    status, account = _call(runtime, "POST", "/v1/accounts", key=runtime.admin_key,
                            body={"external_ref": f"e2e:regtest-{uuid.uuid4().hex[:8]}", "tier": 1})
    assert status == 201, account
    key = account["api_key"]

    # in: our invoice (created on the real master lnd), paid by the external lnd
    status, invoice = _call(runtime, "POST", "/v1/invoices", key=key, body={"amount_msat": 50_000, "memo": "in"})
    assert status == 201, invoice
    assert invoice["payment_request"].startswith("lnbcrt")
    status, paid = _call(runtime, "POST", "/_sim/lightning/pay", body={"payment_request": invoice["payment_request"]})
    assert status == 200, paid
    assert paid["payment_hash"] == invoice["payment_hash"] and paid["invoice_catchup"]["fired"]
    batches = runtime.service(SqsPoller).drain("InvoiceEventsQueue")
    assert batches and all(b.failed == [] and b.error is None for b in batches)
    status, settled = _call(runtime, "GET", f"/v1/invoices/{invoice['payment_hash']}", key=key)
    assert (status, settled["status"]) == (200, "SETTLED")
    assert _available(runtime, key) == 50_000
    status, again = _call(runtime, "POST", "/_sim/lightning/pay", body={"payment_request": invoice["payment_request"]})
    assert status == 422 and again["error"]["code"] == "PAYMENT_REJECTED"  # lnd: already paid

    # out: the external lnd's invoice, paid by the state machine through the master lnd
    status, external = _call(runtime, "POST", "/_sim/lightning/invoices", body={"amount_msat": 20_000, "memo": "out"})
    assert status == 201, external
    status, payment = _call(runtime, "POST", "/v1/payments", key=key, headers={"Idempotency-Key": "regtest-pay-1"},
                            body={"payment_request": external["payment_request"]})
    assert status == 202, payment
    deadline = time.monotonic() + 60
    while payment["status"] not in ("SUCCEEDED", "FAILED") and time.monotonic() < deadline:
        time.sleep(0.2)
        _, payment = _call(runtime, "GET", f"/v1/payments/{payment['payment_id']}", key=key)
    assert payment["status"] == "SUCCEEDED", payment
    assert payment["fee_msat"] == 0  # the direct channel: a peer charges no fee
    lookup = regtest_stack.external.rest("GET", f"/v1/invoice/{external['payment_hash']}")
    assert lookup["state"] == "SETTLED"
    assert _available(runtime, key) == 50_000 - 20_000

    # the unscripted outside world says so
    status, refused = _call(runtime, "POST", "/_sim/lightning/script", body={"outcome": "fail"})
    assert status == 501 and refused["error"]["code"] == "NOT_SUPPORTED_ON_REGTEST"


def test_the_miner_routes_pay_an_address_and_mine_it(runtime, regtest_stack):
    status, chain = _call(runtime, "GET", "/_sim/chain")
    assert status == 200 and chain["faucet_address"] == regtest_stack.miner.address
    outside = "bcrt1q50rtrmj2f8vl9tem8qpfw36ylw5jg9j2dkku3w"
    status, sent = _call(runtime, "POST", "/_sim/chain/send", body={"address": outside, "amount_sat": 12_345})
    assert status == 200, sent
    status, chain = _call(runtime, "GET", "/_sim/chain")
    assert sent["txid"] in chain["mempool"]
    status, mined = _call(runtime, "POST", "/_sim/chain/mine", body={"blocks": 1})
    assert status == 200, mined
    assert sent["txid"] in mined["confirmed_txids"] and mined["height"] == chain["height"] + 1
    assert mined["chain_scan"]["fired"] and "error" not in mined["chain_scan"], mined["chain_scan"]
    status, bad = _call(runtime, "POST", "/_sim/chain/send", body={"address": "bc1qnotregtest", "amount_sat": 1})
    assert status == 400
