"""DynamoDB calls per money route, counted through the real API handler (botocore hook), not estimated.

Each route is called once to warm the container (sanctions list cache, lazy imports), then counted on a second,
fresh request (another Idempotency-Key): what a warm Lambda container does per request. Audit chain head reads are
counted apart (``AUDITHEAD#`` GetItems): they leave the write path with the audit work of issue 13 item 1, and the
budgets below hold without them.

Budgets (synchronous calls, the single write included), and why:
  POST /v1/transfers (to an account id)    3: API key; one BatchGetItem of everything the send is decided on
                                              (account, limit window, stored assessment, destination, balance);
                                              the ledger transaction
  POST /v1/transfers (to an external_ref)  4: + the REF# lookup, which must precede the destination read
  POST /v1/payments (external invoice)     3: API key; one BatchGetItem (payment id, the invoice by hash,
                                              account, limit window); the reserve transaction
  POST /v1/payouts                         3: API key; one BatchGetItem (payout id, is the address ours?, the
                                              send inputs); the reserve transaction
  POST /v1/admin/adjustments               1: the ledger transaction (the admin key is not a DynamoDB read)
  POST /v1/invoices                        2: API key; the invoice transaction
"""
from __future__ import annotations

import pytest

from satflow import bootstrap
from satflow.adapters.dynamodb.models import build_models
from satflow.adapters.dynamodb.chain import DynamoChainStore
from satflow.adapters.dynamodb.payouts import DynamoPayoutStore
from satflow_dev.ddb_calls import counting

from tests.conftest import TABLE
from tests.handlers.test_api import fund, new_account

CLEAN_ADDRESS = "bcrt1q50rtrmj2f8vl9tem8qpfw36ylw5jg9j2dkku3w"

BUDGETS = {
    "POST /v1/transfers": 3,
    "POST /v1/transfers (external_ref)": 4,
    "POST /v1/payments": 3,
    "POST /v1/payouts": 3,
    "POST /v1/admin/adjustments": 1,
    "POST /v1/invoices": 2,
}


@pytest.fixture
def accounts(api, admin):
    svc = bootstrap.services()
    svc.payouts = DynamoPayoutStore(svc.ledger._client, build_models(TABLE, "us-east-1"))
    # as deployed: a payout to one of our own addresses is refused, from the same batch read
    svc.chain = DynamoChainStore(svc.ledger._client, build_models(TABLE, "us-east-1"))
    alice = new_account(api, admin, "tg:alice")
    bob = new_account(api, admin, "tg:bob")
    fund(api, admin, alice["account_id"], 100_000_000)
    return alice, bob


def _requests(api, admin, alice, bob, sim):
    """route -> a function making one fresh request of it (n: a counter for fresh keys and invoices)."""
    def transfer(n, to):
        return api.call("POST", "/v1/transfers", key=alice["api_key"], headers={"Idempotency-Key": f"t{n}{to}"},
                        body={"to": to, "amount_msat": 1_000})

    return {
        "POST /v1/transfers": lambda n: transfer(n, bob["account_id"]),
        "POST /v1/transfers (external_ref)": lambda n: transfer(n, "tg:bob"),
        "POST /v1/payments": lambda n: api.call(
            "POST", "/v1/payments", key=alice["api_key"], headers={"Idempotency-Key": f"p{n}"},
            body={"payment_request": sim.external_invoice(10_000, f"shop {n}")}),
        "POST /v1/payouts": lambda n: api.call(
            "POST", "/v1/payouts", key=alice["api_key"], headers={"Idempotency-Key": f"po{n}"},
            body={"address": CLEAN_ADDRESS, "amount_sat": 10_000}),
        "POST /v1/admin/adjustments": lambda n: api.call(
            "POST", "/v1/admin/adjustments", key=admin, headers={"Idempotency-Key": f"adj{n}"},
            body={"account_id": bob["account_id"], "amount_msat": 1_000, "direction": "credit", "reason": "r"}),
        "POST /v1/invoices": lambda n: api.call("POST", "/v1/invoices", key=bob["api_key"],
                                                body={"amount_msat": 1_000}),
    }


def count_route(api, admin, alice, bob, sim, route):
    ddb = bootstrap.services().ledger._client
    send = _requests(api, admin, alice, bob, sim)[route]
    status, body = send(0)
    assert status in (201, 202), body
    with counting(ddb) as log:
        status, body = send(1)
    assert status in (201, 202), body
    return log


@pytest.mark.parametrize("route", list(BUDGETS))
def test_each_money_route_stays_within_its_dynamodb_call_budget(api, admin, accounts, sim, route):
    alice, bob = accounts
    log = count_route(api, admin, alice, bob, sim, route)
    print(f"{route}: {log.total} calls ({log.audit_head_reads} audit head): {log.describe()}")
    assert log.excluding_audit_head <= BUDGETS[route], log.describe()
    read = [pk for op, pks in log.calls if op in ("GetItem", "BatchGetItem", "Query") for pk in pks]
    assert len(read) == len(set(read)), f"an item read twice: {log.describe()}"


def test_a_retry_is_answered_by_its_earlier_request_before_its_body_is_judged(api, admin, accounts, sim):
    """The routes read the earlier payment/payout in the same round trip as the send's inputs, after validating the
    body; a validation error still yields to the earlier request: a retry after the invoice expired returns the
    payment, and a reused key with an invalid body is 409, as before."""
    alice, _ = accounts
    svc = bootstrap.services()
    invoice = sim.external_invoice(10_000, "soon gone", expiry_s=60)
    status, first = api.call("POST", "/v1/payments", key=alice["api_key"], headers={"Idempotency-Key": "p-exp"},
                             body={"payment_request": invoice})
    assert status == 202, first
    later = svc.unix_clock() + 3_600
    svc.unix_clock = lambda: later  # the invoice has expired
    assert api.call("POST", "/v1/payments", key=alice["api_key"], headers={"Idempotency-Key": "p-exp"},
                    body={"payment_request": invoice}) == (202, first)
    status, err = api.call("POST", "/v1/payments", key=alice["api_key"], headers={"Idempotency-Key": "p-exp"},
                           body={"payment_request": "lnbcrt1garbage"})
    assert (status, err["error"]["code"]) == (409, "IDEMPOTENCY_KEY_REUSED")

    status, payout = api.call("POST", "/v1/payouts", key=alice["api_key"], headers={"Idempotency-Key": "po-x"},
                              body={"address": CLEAN_ADDRESS, "amount_sat": 10_000})
    assert status == 202, payout
    status, err = api.call("POST", "/v1/payouts", key=alice["api_key"], headers={"Idempotency-Key": "po-x"},
                           body={"address": "not-an-address", "amount_sat": 10_000})
    assert (status, err["error"]["code"]) == (409, "IDEMPOTENCY_KEY_REUSED")
    status, err = api.call("POST", "/v1/payouts", key=alice["api_key"], headers={"Idempotency-Key": "po-y"},
                           body={"address": "not-an-address", "amount_sat": 10_000})
    assert (status, err["error"]["code"]) == (400, "INVALID_ADDRESS")
