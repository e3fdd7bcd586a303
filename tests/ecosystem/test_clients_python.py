"""The `lnurl` Python client (PyPI, 2.x) against the local runtime: a Lightning Address pay link resolved and paid
(the invoice credited by the inbound flow), and a withdraw link executed (paid through the payment workflow)."""
from __future__ import annotations

import asyncio
import hashlib
import json
import uuid

import pytest

from .runtime_helpers import available, call, credit_settled_invoices, new_account, started_runtime, wait_for

lnurl = pytest.importorskip("lnurl", reason="the lnurl client is a dev dependency (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def runtime():
    with started_runtime() as rt:
        yield rt


def test_lnurl_client_pays_a_lightning_address_and_the_invoice_is_credited(runtime):
    from lnurl.models import LnurlPayActionResponse, LnurlPayResponse

    bob = new_account(runtime, f"eco:bob-{uuid.uuid4().hex[:6]}")
    name = f"bob{uuid.uuid4().hex[:6]}"
    status, address = call(runtime, "POST", "/v1/lightning-address", key=bob["api_key"], body={"username": name})
    assert status == 201, address
    host = runtime.url.split("://", 1)[1]
    assert address["address"] == f"{name}@{host}"

    # LUD-16 at the HTTP level (the client hard-codes https for addresses): the well-known URL answers the same
    # pay request the bech32 LNURL points at
    status, well_known = call(runtime, "GET", f"/.well-known/lnurlp/{name}")
    assert status == 200 and well_known["tag"] == "payRequest"

    res = asyncio.run(lnurl.handle(address["lnurl"]))
    assert isinstance(res, LnurlPayResponse) and res.metadata == well_known["metadata"]
    assert res.metadata.h == hashlib.sha256(well_known["metadata"].encode()).hexdigest()
    paid = asyncio.run(lnurl.execute_pay_request(res, 150_000, comment="thanks!"))
    assert isinstance(paid, LnurlPayActionResponse)

    import bolt11

    invoice = bolt11.decode(paid.pr)
    assert invoice.amount_msat == 150_000 and invoice.description_hash == res.metadata.h
    status, body = call(runtime, "POST", "/_sim/lightning/pay", body={"payment_request": paid.pr})
    assert status == 200, body
    credit_settled_invoices(runtime)
    assert available(runtime, bob["api_key"]) == 150_000
    status, stored = call(runtime, "GET", f"/v1/invoices/{invoice.payment_hash}", key=bob["api_key"])
    assert stored["status"] == "SETTLED" and stored["metadata"]["comment"] == "thanks!"


def test_lnurl_client_executes_a_withdraw_link_through_the_payment_workflow(runtime):
    from lnurl.models import LnurlSuccessResponse, LnurlWithdrawResponse

    alice = new_account(runtime, f"eco:alice-{uuid.uuid4().hex[:6]}", fund_msat=1_000_000)
    status, link = call(runtime, "POST", "/v1/lnurl/withdraw-links", key=alice["api_key"],
                        body={"min_withdrawable_msat": 1_000, "max_withdrawable_msat": 100_000,
                              "description": "cash out"})
    assert status == 201, link

    res = asyncio.run(lnurl.handle(link["lnurl"]))
    assert isinstance(res, LnurlWithdrawResponse) and res.maxWithdrawable == 100_000
    status, external = call(runtime, "POST", "/_sim/lightning/invoices", body={"amount_msat": 40_000, "memo": "w"})
    assert status == 201, external
    done = asyncio.run(lnurl.execute_withdraw(res, external["payment_request"]))
    assert isinstance(done, LnurlSuccessResponse)

    sim = runtime.service("lightning").simulator
    assert wait_for(lambda: sim.invoice_state(external["payment_hash"]) == "SETTLED"), "the payment never landed"
    # amount + the routing fee actually paid; the rest of the reserve returned once the workflow posted
    settled = wait_for(lambda: (lambda b: b if b < 1_000_000 - 40_000 and b > 1_000_000 - 40_000 - 10_000 else None)(
        available(runtime, alice["api_key"])))
    assert settled, available(runtime, alice["api_key"])
    # a one-use link is used up: the client's second attempt is refused
    with pytest.raises(Exception):
        asyncio.run(lnurl.handle(link["lnurl"]))
    status, body = call(runtime, "GET", f"/lnurlw/{link['k1']}")
    assert (status, body["status"]) == (404, "ERROR")
