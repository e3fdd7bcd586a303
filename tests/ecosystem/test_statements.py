"""GET /v1/invoices (status and date filters, cursor) and the CSV export of transactions."""
from __future__ import annotations

import csv
import io

from satflow import bootstrap
from satflow.app import invoices

from tests.handlers.test_api import fund, new_account, transfer


def _invoices(api, who, **query):
    return api.call("GET", "/v1/invoices", key=who["api_key"], query={k: str(v) for k, v in query.items()})


def test_list_invoices_newest_first_with_status_filter_and_cursor(api, admin, sim):
    bob = new_account(api, admin, "tg:bob")
    alice = new_account(api, admin, "tg:alice")
    made = [api.call("POST", "/v1/invoices", key=bob["api_key"], body={"amount_msat": 1000 * (i + 1)})[1]
            for i in range(5)]
    api.call("POST", "/v1/invoices", key=alice["api_key"], body={"amount_msat": 7})  # not bob's
    sim.external_pay(made[1]["payment_request"])
    invoices.credit_settled_invoice(bootstrap.services(), payment_hash=made[1]["payment_hash"],
                                    amount_paid_msat=2000)

    status, page = _invoices(api, bob, limit=3)
    assert status == 200 and [i["payment_hash"] for i in page["items"]] == [m["payment_hash"] for m in made[:1:-1]]
    status, rest = _invoices(api, bob, limit=3, cursor=page["next_cursor"])
    assert [i["payment_hash"] for i in rest["items"]] == [made[1]["payment_hash"], made[0]["payment_hash"]]
    assert rest["next_cursor"] is None

    status, settled = _invoices(api, bob, status="SETTLED")
    assert [i["payment_hash"] for i in settled["items"]] == [made[1]["payment_hash"]]
    assert settled["items"][0]["amount_received_msat"] == 2000


def test_invoice_date_filters_and_bad_queries(api, admin):
    bob = new_account(api, admin, "tg:bob")
    _, inv = api.call("POST", "/v1/invoices", key=bob["api_key"], body={"amount_msat": 1000})
    day = inv["created_at"][:10]
    assert len(_invoices(api, bob, **{"from": day})[1]["items"]) == 1
    assert _invoices(api, bob, to=day)[1]["items"] == []  # `to` is exclusive: the day starts at 00:00
    assert _invoices(api, bob, **{"from": "2000-01-01", "to": "2000-01-02"})[1]["items"] == []
    for query in ({"status": "PAID"}, {"from": "yesterday"}, {"from": "2026-12-02", "to": "2026-12-01"},
                  {"limit": "0"}, {"limit": "101"}, {"cursor": "not-a-cursor"}):
        status, err = _invoices(api, bob, **query)
        assert (status, err["error"]["code"]) == (400, "VALIDATION_ERROR"), query


def test_csv_export_of_transactions(api, admin):
    alice = new_account(api, admin, "tg:alice")
    bob = new_account(api, admin, "tg:bob")
    fund(api, admin, alice["account_id"], 100_000)
    transfer(api, alice, "tg:bob", 1_234, key="t1", memo="=HYPERLINK(\"http://evil\")")
    transfer(api, alice, "tg:bob", 5, key="t2", memo="lunch, with \"quotes\"")
    import base64

    from tests.handlers.conftest import LambdaContext
    import copy

    event = copy.deepcopy(api._samples["GET /v1/transactions/export"])
    event["headers"]["authorization"] = f"Bearer {alice['api_key']}"
    event.pop("queryStringParameters", None)
    event["rawQueryString"] = ""
    response = api._handler(event, LambdaContext())
    assert response["statusCode"] == 200 and response["headers"]["Content-Type"].startswith("text/csv")
    body = base64.b64decode(response["body"]).decode() if response.get("isBase64Encoded") else response["body"]
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [r["amount_msat"] for r in rows] == ["5", "1234", "100000"]
    assert [r["direction"] for r in rows] == ["out", "out", "in"]
    assert rows[0]["memo"] == "lunch, with \"quotes\"" and rows[0]["counterparty"] == bob["account_id"]
    assert rows[1]["memo"].startswith("'=")  # a formula is never handed to a spreadsheet as a formula
    assert all(r["status"] == "SETTLED" for r in rows)
