"""Lightning Address + LNURL-pay and LNURL-withdraw through the real API handler (moto, Lightning simulator)."""
from __future__ import annotations

import copy
import hashlib
import json

import bolt11
import pytest

from satflow import bootstrap
from satflow.app import invoices, lnurl as lnurl_app
from satflow.domain.ecosystem import lnurl_encode

from tests.audit.helpers import seal_all
from tests.handlers.test_api import balance, fund, new_account

DOMAIN = "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"  # the sample events' API Gateway domain
BASE = f"https://{DOMAIN}"


def claim(api, who, username):
    return api.call("POST", "/v1/lightning-address", key=who["api_key"], body={"username": username})


def pay_request(api, username, ip=None):
    """``ip``: the client address as API Gateway sees it (requestContext.http.sourceIp; never a header, which any
    client could set)."""
    if ip is None:
        return api.call("GET", f"/.well-known/lnurlp/{username}", route="GET /.well-known/lnurlp/{username}")
    from tests.handlers.conftest import LambdaContext

    event = copy.deepcopy(api._samples["GET /.well-known/lnurlp/{username}"])
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/.well-known/lnurlp/{username}"
    event["requestContext"]["http"]["sourceIp"] = ip
    event["headers"]["x-forwarded-for"] = "192.0.2.1"  # spoofable: must not be what the limit counts
    response = api._handler(event, LambdaContext())
    return response["statusCode"], json.loads(response["body"])


def callback(api, username, **query):
    return api.call("GET", f"/lnurlp/{username}/callback", route="GET /lnurlp/{username}/callback",
                    query={k: str(v) for k, v in query.items()})


def test_claim_resolve_and_pay_a_lightning_address(api, admin, sim):
    bob = new_account(api, admin, "tg:bob")
    status, view = claim(api, bob, "Bob.Smith")
    assert status == 201 and view["username"] == "bob.smith" and view["address"] == f"bob.smith@{DOMAIN}"
    assert view["lnurl"] == lnurl_encode(f"{BASE}/.well-known/lnurlp/bob.smith")
    assert claim(api, bob, "bob.smith")[0] == 200  # the same claim again is a replay
    assert api.call("GET", "/v1/lightning-address", key=bob["api_key"]) == (200, view)

    status, req = pay_request(api, "bob.smith")
    assert status == 200 and req["tag"] == "payRequest" and req["callback"] == f"{BASE}/lnurlp/bob.smith/callback"
    assert req["minSendable"] == 1_000 and req["maxSendable"] == 1_000_000_000  # tier 1: 1M sat per transaction
    assert ["text/identifier", f"bob.smith@{DOMAIN}"] in json.loads(req["metadata"])

    status, answer = callback(api, "bob.smith", amount=150_000, comment="for the coffee")
    assert status == 200 and answer["routes"] == [] and answer["successAction"]["tag"] == "message"
    decoded = bolt11.decode(answer["pr"])
    assert decoded.amount_msat == 150_000
    assert decoded.description_hash == hashlib.sha256(req["metadata"].encode()).hexdigest()

    # the external network pays it; the existing inbound credit step credits bob (keyed by payment hash)
    sim.external_pay(answer["pr"])
    svc = bootstrap.services()
    assert invoices.credit_settled_invoice(svc, payment_hash=decoded.payment_hash,
                                           amount_paid_msat=150_000).outcome == "credited"
    assert balance(api, bob["api_key"])["available_msat"] == 150_000
    stored = svc.lightning.get_invoice(decoded.payment_hash)
    assert stored.account_id == bob["account_id"] and stored.metadata["comment"] == "for the coffee"


def test_usernames_are_unique_validated_and_one_per_account(api, admin):
    alice = new_account(api, admin, "tg:alice")
    bob = new_account(api, admin, "tg:bob")
    assert claim(api, alice, "alice")[0] == 201
    status, err = claim(api, bob, "ALICE")
    assert (status, err["error"]["code"]) == (409, "USERNAME_TAKEN")
    status, err = claim(api, alice, "alice2")
    assert (status, err["error"]["code"]) == (409, "LIGHTNING_ADDRESS_EXISTS")
    for bad in ("a b", "ä", ".x", "x..y", "a" * 65, "admin", "", "a/b"):
        status, err = claim(api, bob, bad)
        assert (status, err["error"]["code"]) == (400, "VALIDATION_ERROR"), bad
    ro = api.call("POST", "/v1/keys", key=bob["api_key"], body={"scopes": ["read"]})[1]
    assert claim(api, ro, "bobby")[0] == 403  # claiming an address to receive needs the receive scope


def test_admin_changes_a_username_and_the_old_one_is_retired(api, admin):
    alice = new_account(api, admin, "tg:alice")
    bob = new_account(api, admin, "tg:bob")
    claim(api, alice, "alice")
    route = "PUT /v1/admin/accounts/{account_id}/lightning-address"
    status, view = api.call("PUT", f"/v1/admin/accounts/{alice['account_id']}/lightning-address", key=admin,
                            body={"username": "alice.w"}, route=route)
    assert status == 200 and view["username"] == "alice.w"
    assert pay_request(api, "alice.w")[0] == 200
    assert pay_request(api, "alice")[0] == 404  # retired: resolves to nothing
    status, err = claim(api, bob, "alice")  # and is never given to someone else
    assert (status, err["error"]["code"]) == (409, "USERNAME_TAKEN")
    status, _ = api.call("PUT", f"/v1/admin/accounts/{alice['account_id']}/lightning-address",
                         key=alice["api_key"], body={"username": "x"}, route=route)
    assert status == 403
    seal_all(bootstrap.services())  # what the audit sealer does from the stream
    _, audit = api.call("GET", "/v1/admin/audit", key=admin, query={"limit": "100"})
    changed = [r for r in audit["items"] if r["action"] == "lightning_address.changed"]
    assert changed and changed[0]["details"] == {"from": "alice", "to": "alice.w"}


def test_unknown_retired_and_closed_addresses_are_the_same_404(api, admin):
    carol = new_account(api, admin, "tg:carol")
    claim(api, carol, "carol")
    api.call("PATCH", f"/v1/admin/accounts/{carol['account_id']}", key=admin, body={"status": "closed"},
             route="PATCH /v1/admin/accounts/{account_id}")
    answers = [pay_request(api, name) for name in ("carol", "nobody", "UPPER..bad")]
    assert all(a == (404, {"status": "ERROR", "reason": "no such Lightning Address"}) for a in answers), answers
    assert callback(api, "nobody", amount=1000) == answers[0]


@pytest.mark.parametrize("query", [{"amount": "999"}, {"amount": "1000000001"}, {"amount": "1e6"},
                                   {"amount": "-5"}, {}, {"amount": "5000", "comment": "x" * 141}])
def test_bad_callbacks_are_lnurl_errors(api, admin, query):
    bob = new_account(api, admin, "tg:bob")
    claim(api, bob, "bob")
    status, body = callback(api, "bob", **query)
    assert status == 400 and body["status"] == "ERROR" and body["reason"]


def test_public_routes_are_throttled_per_client_address(api, admin, monkeypatch):
    monkeypatch.setattr(lnurl_app, "PUBLIC_RATE_PER_MINUTE", 3)
    bob = new_account(api, admin, "tg:bob")
    claim(api, bob, "bob")
    assert [pay_request(api, "bob", ip="198.51.100.7")[0] for _ in range(4)] == [200, 200, 200, 429]
    assert pay_request(api, "bob", ip="198.51.100.8")[0] == 200  # another address has its own window


# ------------------------------------------------------------------------------------------------ withdraw
def new_link(api, who, **body):
    body = {"min_withdrawable_msat": 1_000, "max_withdrawable_msat": 50_000, **body}
    return api.call("POST", "/v1/lnurl/withdraw-links", key=who["api_key"], body=body)


def withdraw(api, k1, pr):
    return api.call("GET", f"/lnurlw/{k1}/callback", route="GET /lnurlw/{k1}/callback", query={"pr": pr})


def test_withdraw_pays_through_the_payment_path_once_per_invoice(api, admin, sim, started):
    alice = new_account(api, admin, "tg:alice")
    fund(api, admin, alice["account_id"], 1_000_000)
    status, link = new_link(api, alice, uses=2, description="refund")
    assert status == 201 and link["lnurl"] == lnurl_encode(link["url"]) and link["remaining"] == 2
    status, req = api.call("GET", f"/lnurlw/{link['k1']}", route="GET /lnurlw/{k1}")
    assert status == 200 and req == {"tag": "withdrawRequest", "callback": f"{link['url']}/callback",
                                     "k1": link["k1"], "minWithdrawable": 1_000, "maxWithdrawable": 50_000,
                                     "defaultDescription": "refund"}
    pr = sim.external_invoice(20_000, "withdraw")
    assert withdraw(api, link["k1"], pr) == (200, {"status": "OK"})
    assert withdraw(api, link["k1"], pr) == (200, {"status": "OK"})  # the wallet retried: nothing new
    assert len(started) == 1  # one payment workflow
    bal = balance(api, alice["api_key"])
    assert bal["available_msat"] == 1_000_000 - 20_000 - 10_000  # amount + fee reserve (10 sat minimum)
    _, links = api.call("GET", "/v1/lnurl/withdraw-links", key=alice["api_key"])
    assert links["items"][0]["remaining"] == 1

    assert withdraw(api, link["k1"], sim.external_invoice(5_000))[0] == 200  # the second use
    status, err = withdraw(api, link["k1"], sim.external_invoice(5_000))
    assert (status, err["status"]) == (404, "ERROR")  # used up
    assert len(started) == 2


def test_withdraw_limits_and_refusals_give_the_use_back(api, admin, sim, started):
    alice = new_account(api, admin, "tg:alice")
    fund(api, admin, alice["account_id"], 15_000)
    _, link = new_link(api, alice)
    status, err = withdraw(api, link["k1"], sim.external_invoice(60_000))
    assert (status, err["status"]) == (422, "ERROR")  # above the link's maximum
    status, err = withdraw(api, link["k1"], sim.external_invoice(None))
    assert status == 422  # an amount-less invoice cannot be bounded
    status, err = withdraw(api, link["k1"], sim.external_invoice(10_000))
    assert status == 422 and "insufficient" in err["reason"]  # 10,000 + 10,000 reserve > 15,000
    _, links = api.call("GET", "/v1/lnurl/withdraw-links", key=alice["api_key"])
    assert links["items"][0]["remaining"] == 1 and started == []  # the refused use was given back
    fund(api, admin, alice["account_id"], 100_000)
    assert withdraw(api, link["k1"], sim.external_invoice(10_000)) == (200, {"status": "OK"})


def test_withdraw_link_needs_send_scope_bounds_and_disabling(api, admin, sim):
    alice = new_account(api, admin, "tg:alice")
    fund(api, admin, alice["account_id"], 1_000_000)
    _, recv = api.call("POST", "/v1/keys", key=alice["api_key"], body={"scopes": ["read", "receive"]})
    assert new_link(api, recv)[0] == 403
    assert new_link(api, alice, min_withdrawable_msat=60_000)[0] == 400  # min > max
    assert new_link(api, alice, max_withdrawable_msat=2_000_000_000)[0] == 400  # above the tier's per-tx limit
    _, link = new_link(api, alice)
    status, off = api.call("DELETE", f"/v1/lnurl/withdraw-links/{link['link_id']}", key=alice["api_key"],
                           route="DELETE /v1/lnurl/withdraw-links/{link_id}")
    assert (status, off["status"]) == (200, "disabled")
    assert api.call("GET", f"/lnurlw/{link['k1']}", route="GET /lnurlw/{k1}")[0] == 404
    assert withdraw(api, link["k1"], sim.external_invoice(5_000))[0] == 404
    assert api.call("GET", f"/lnurlw/{'0' * 64}", route="GET /lnurlw/{k1}")[0] == 404
