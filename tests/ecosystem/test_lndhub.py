"""The LndHub-compatible API on the real handler (moto; the payment workflow is not run here: tests/flows runs it,
test_clients_npm.py runs it end to end): auth, scopes, error shapes, a payment reported pending truthfully."""
from __future__ import annotations

import pytest

from satflow.app import lndhub as lndhub_app

from tests.handlers.test_api import balance, fund, new_account


def wallet(api, who, scopes=None):
    status, body = api.call("POST", "/v1/lndhub", key=who["api_key"], body=None if scopes is None else
                            {"scopes": scopes})
    assert status == 201, body
    return body


def auth(api, login, password):
    return api.call("POST", "/lndhub/auth", body={"login": login, "password": password},
                    query={"type": "auth"})


def test_auth_gives_tokens_only_for_the_accounts_own_key(api, admin):
    alice = new_account(api, admin, "tg:alice")
    bob = new_account(api, admin, "tg:bob")
    w = wallet(api, alice)
    assert w["uri"].startswith(f"lndhub://{alice['account_id']}:sk_") and w["uri"].endswith("/lndhub")
    status, tokens = auth(api, alice["account_id"], w["password"])
    assert status == 200 and tokens["access_token"] and tokens["refresh_token"]
    status, again = api.call("POST", "/lndhub/auth", body={"refresh_token": tokens["refresh_token"]},
                             query={"type": "refresh_token"})
    assert status == 200 and again["access_token"] == tokens["access_token"]
    for login, password in ((bob["account_id"], w["password"]), (alice["account_id"], admin),
                            (alice["account_id"], "sk_" + "z" * 43), (alice["account_id"], None)):
        assert auth(api, login, password) == (401, {"error": True, "code": 1, "message": "bad auth"})


def test_balance_invoices_and_decode(api, admin, sim):
    alice = new_account(api, admin, "tg:alice")
    fund(api, admin, alice["account_id"], 123_456)
    key = wallet(api, alice)["password"]
    assert api.call("GET", "/lndhub/balance", key=key) == (200, {"BTC": {"AvailableBalance": 123}})
    status, inv = api.call("POST", "/lndhub/addinvoice", key=key, body={"amt": "21", "memo": "tip"})
    assert status == 200 and inv["payment_request"].startswith("lnbcrt210n")
    status, listed = api.call("GET", "/lndhub/getuserinvoices", key=key)
    assert status == 200 and [i["payment_hash"] for i in listed] == [inv["payment_hash"]]
    assert listed[0]["ispaid"] is False and listed[0]["amt"] == 21 and listed[0]["description"] == "tip"
    status, paid = api.call("GET", f"/lndhub/checkpayment/{inv['payment_hash']}", key=key,
                            route="GET /lndhub/checkpayment/{payment_hash}")
    assert (status, paid) == (200, {"paid": False})
    status, decoded = api.call("GET", "/lndhub/decodeinvoice", key=key, query={"invoice": inv["payment_request"]})
    assert status == 200 and decoded["num_satoshis"] == "21" and decoded["payment_hash"] == inv["payment_hash"]
    status, err = api.call("GET", "/lndhub/decodeinvoice", key=key, query={"invoice": "lnbc1nonsense"})
    assert status == 400 and err["error"] is True and err["code"] == 4
    status, err = api.call("POST", "/lndhub/addinvoice", key=key, body={"amt": "-1"})
    assert (status, err["code"]) == (400, 8)
    assert api.call("GET", "/lndhub/getbtc", key=key) == (200, [])


def test_payinvoice_reports_pending_truthfully_and_is_idempotent(api, admin, sim, started, monkeypatch):
    monkeypatch.setattr(lndhub_app, "PAY_WAIT_S", 0.3)  # the workflow does not run in handler tests
    alice = new_account(api, admin, "tg:alice")
    fund(api, admin, alice["account_id"], 1_000_000)
    key = wallet(api, alice)["password"]
    pr = sim.external_invoice(100_000, "shop")
    status, body = api.call("POST", "/lndhub/payinvoice", key=key, body={"invoice": pr})
    assert status == 200 and body["status"] == "pending" and body["payment_preimage"] is None
    assert body["payment_error"] == "" and len(started) == 1
    assert balance(api, alice["api_key"])["pending_out_msat"] == 100_000 + 10_000  # reserved, not failed
    status, pending = api.call("GET", "/lndhub/getpending", key=key)
    assert status == 200 and [p["payment_hash"] for p in pending] == [body["payment_hash"]]
    status, again = api.call("POST", "/lndhub/payinvoice", key=key, body={"invoice": pr})
    assert status == 200 and again["payment_id"] == body["payment_id"] and len(started) == 1  # no second send
    assert api.call("GET", "/lndhub/gettxs", key=key) == (200, [])  # only settled payments are transactions


def test_payinvoice_refusals_in_lndhub_shape(api, admin, sim, started):
    alice = new_account(api, admin, "tg:alice")
    fund(api, admin, alice["account_id"], 50_000)
    key = wallet(api, alice)["password"]
    status, err = api.call("POST", "/lndhub/payinvoice", key=key, body={"invoice": sim.external_invoice(45_000)})
    assert (status, err["error"], err["code"]) == (422, True, 2)  # 45,000 + 10,000 reserve > 50,000
    status, err = api.call("POST", "/lndhub/payinvoice", key=key, body={"invoice": "lntb1bad"})
    assert (status, err["code"]) == (400, 4)
    fund(api, admin, alice["account_id"], 3_000_000_000)
    status, err = api.call("POST", "/lndhub/payinvoice", key=key, body={"invoice": sim.external_invoice(2_000_000_000)})
    assert status == 422 and err["code"] == 6 and "limit" in err["message"].lower()  # tier limits apply
    assert started == []


def test_a_receive_only_wallet_cannot_pay(api, admin, sim, started):
    alice = new_account(api, admin, "tg:alice")
    fund(api, admin, alice["account_id"], 1_000_000)
    key = wallet(api, alice, scopes=["read", "receive"])["password"]
    assert api.call("POST", "/lndhub/addinvoice", key=key, body={"amt": 5})[0] == 200
    status, err = api.call("POST", "/lndhub/payinvoice", key=key, body={"invoice": sim.external_invoice(1_000)})
    assert (status, err["code"]) == (403, 1) and started == []
    ro = api.call("POST", "/v1/keys", key=alice["api_key"], body={"scopes": ["read"]})[1]
    assert api.call("POST", "/v1/lndhub", key=ro["api_key"])[0] == 403  # making a wallet takes a full key


def test_auth_is_throttled_per_client_address(api, admin, monkeypatch):
    from satflow.app import lnurl as lnurl_app

    monkeypatch.setattr(lnurl_app, "PUBLIC_RATE_PER_MINUTE", 2)
    alice = new_account(api, admin, "tg:alice")
    answers = [auth(api, alice["account_id"], "sk_" + "q" * 43)[0] for _ in range(3)]
    assert answers == [401, 401, 429]
