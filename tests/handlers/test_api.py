"""The HTTP contract of the API function (shapes, statuses, idempotency), through API Gateway v2 events."""
import pytest

from satflow import bootstrap


def new_account(api, admin, ref, tier=1):
    status, body = api.call("POST", "/v1/accounts", key=admin, body={"external_ref": ref, "tier": tier})
    assert status == 201, body
    return body


def fund(api, admin, account_id, amount):
    status, body = api.call("POST", "/v1/admin/adjustments", key=admin, body={
        "account_id": account_id, "amount_msat": amount, "direction": "credit", "reason": "test funding"},
        headers={"Idempotency-Key": f"fund-{account_id}-{amount}"})
    assert status == 201, body
    return body


def balance(api, key):
    status, body = api.call("GET", "/v1/balance", key=key)
    assert status == 200
    return body["balances"][0]


def table_snapshot():
    ddb = bootstrap.services().ledger._client
    items = ddb.scan(TableName="satflow-test", ConsistentRead=True)["Items"]
    return sorted(repr(sorted(i.items())) for i in items)


@pytest.fixture
def pair(api, admin):
    alice = new_account(api, admin, "tg:alice")
    bob = new_account(api, admin, "tg:bob")
    fund(api, admin, alice["account_id"], 100_000)
    return alice, bob


def transfer(api, sender, to, amount, key="k1", memo=None):
    body = {"to": to, "amount_msat": amount}
    if memo is not None:
        body["memo"] = memo
    return api.call("POST", "/v1/transfers", key=sender["api_key"], body=body, headers={"Idempotency-Key": key})


def test_health_needs_no_auth(api):
    assert api.call("GET", "/v1/health") == (200, {"status": "ok"})


def test_create_account_shape_and_key_shown_once(api, admin):
    body = new_account(api, admin, "tg:12345", tier=2)
    assert set(body) == {"account_id", "external_ref", "tier", "status", "api_key", "key_id", "replayed"}
    assert body["api_key"].startswith("sk_") and body["status"] == "active" and body["tier"] == 2
    status, me = api.call("GET", "/v1/accounts/me", key=body["api_key"])
    assert status == 200 and me == {k: body[k] for k in ("account_id", "external_ref", "tier", "status")}
    assert api.call("POST", "/v1/accounts", key=admin, body={"external_ref": "tg:12345", "tier": 0})[1][
        "error"]["code"] == "ACCOUNT_EXISTS"


def test_auth_errors(api, admin, pair):
    alice, _ = pair
    assert api.call("GET", "/v1/balance")[0] == 401
    assert api.call("GET", "/v1/balance", key="sk_" + "x" * 43)[0] == 401
    assert api.call("GET", "/v1/balance", key="garbage")[0] == 401
    status, body = api.call("POST", "/v1/accounts", key=alice["api_key"], body={"external_ref": "x:1", "tier": 0})
    assert (status, body["error"]["code"]) == (403, "FORBIDDEN")
    assert api.call("GET", "/v1/balance", key=admin)[0] == 403  # the admin is not an account


def test_transfer_shape_balances_and_history(api, admin, pair):
    alice, bob = pair
    status, body = transfer(api, alice, "tg:bob", 25_000, memo="lunch")
    assert status == 201
    assert set(body) == {"transfer_id", "status", "amount_msat", "to", "created_at"}
    assert body["status"] == "SETTLED" and body["amount_msat"] == 25_000 and body["to"] == bob["account_id"]
    assert balance(api, alice["api_key"]) == {"asset": "BTC", "available_msat": 75_000, "pending_out_msat": 0,
                                              "pending_in_msat": 0}
    assert balance(api, bob["api_key"])["available_msat"] == 25_000
    status, page = api.call("GET", "/v1/transactions", key=alice["api_key"], query={"limit": "1"})
    assert status == 200 and page["items"][0]["transfer_id"] == body["transfer_id"]
    assert page["items"][0]["direction"] == "out" and page["items"][0]["memo"] == "lunch"
    status, page2 = api.call("GET", "/v1/transactions", key=alice["api_key"],
                             query={"limit": "1", "cursor": page["next_cursor"]})
    assert page2["items"][0]["type"] == "adjustment_credit"


def test_transfer_by_account_id(api, pair):
    alice, bob = pair
    assert transfer(api, alice, bob["account_id"], 1)[0] == 201


def test_same_key_same_body_replays_the_same_body(api, pair):
    alice, _ = pair
    first = transfer(api, alice, "tg:bob", 10_000)
    again = transfer(api, alice, "tg:bob", 10_000)
    assert first == again
    assert balance(api, alice["api_key"])["available_msat"] == 90_000


def test_same_key_other_body_is_409(api, pair):
    alice, _ = pair
    transfer(api, alice, "tg:bob", 10_000)
    status, body = transfer(api, alice, "tg:bob", 10_001)
    assert (status, body["error"]["code"]) == (409, "IDEMPOTENCY_KEY_REUSED")
    assert balance(api, alice["api_key"])["available_msat"] == 90_000


@pytest.mark.parametrize("amount,code,status", [
    (0, "VALIDATION_ERROR", 400), (-1, "VALIDATION_ERROR", 400), (1.5, "VALIDATION_ERROR", 400),
    (1.0, "VALIDATION_ERROR", 400), ("100", "VALIDATION_ERROR", 400), (True, "VALIDATION_ERROR", 400),
    (None, "VALIDATION_ERROR", 400), (10**30, "VALIDATION_ERROR", 400),
    (100_001, "INSUFFICIENT_FUNDS", 422),
])
def test_bad_amounts_are_rejected_and_change_nothing(api, pair, amount, code, status):
    alice, _ = pair
    before = table_snapshot()
    got_status, body = transfer(api, alice, "tg:bob", amount)
    assert (got_status, body["error"]["code"]) == (status, code)
    assert table_snapshot() == before


@pytest.mark.parametrize("call,status,code", [
    (dict(raw_body="{not json"), 400, "VALIDATION_ERROR"),
    (dict(raw_body="[1,2]"), 400, "VALIDATION_ERROR"),
    (dict(body={"amount_msat": 5}), 400, "VALIDATION_ERROR"),
    (dict(body={"to": "tg:bob", "amount_msat": 5, "amount_sat": 5}), 400, "VALIDATION_ERROR"),
    (dict(body={"to": "tg:bob", "amount_msat": 5}, headers={}), 400, "VALIDATION_ERROR"),  # no Idempotency-Key
    (dict(body={"to": "tg:bob", "amount_msat": 5, "memo": "x" * 281}), 400, "VALIDATION_ERROR"),
    (dict(body={"to": "tg:alice", "amount_msat": 5}), 422, "SELF_TRANSFER"),
    (dict(body={"to": "tg:nobody", "amount_msat": 5}), 404, "ACCOUNT_NOT_FOUND"),
    (dict(body={"to": "acc_" + "a" * 26, "amount_msat": 5}), 404, "ACCOUNT_NOT_FOUND"),
    (dict(body={"to": "acc_" + "a" * 3000, "amount_msat": 5}), 400, "VALIDATION_ERROR"),
    (dict(body={"to": {"nested": 1}, "amount_msat": 5}), 400, "VALIDATION_ERROR"),
    (dict(body={"to": "tg:bob", "amount_msat": 5, "memo": "\ud800"}), 400, "VALIDATION_ERROR"),
    (dict(raw_body='{"to":"tg:bob","amount_msat":1,"amount_msat":2}'), 400, "VALIDATION_ERROR"),
    (dict(raw_body='{"to":"tg:bob","amount_msat":NaN}'), 400, "VALIDATION_ERROR"),
    (dict(raw_body='{"to":"tg:bob","amount_msat":' + "9" * 5000 + "}"), 400, "VALIDATION_ERROR"),
    (dict(body={"to": "", "amount_msat": 5}), 400, "VALIDATION_ERROR"),
    (dict(body={"to": 12, "amount_msat": 5}), 400, "VALIDATION_ERROR"),
])
def test_bad_transfer_requests(api, pair, call, status, code):
    alice, _ = pair
    headers = call.pop("headers", {"Idempotency-Key": "bad-1"})
    before = table_snapshot()
    got, body = api.call("POST", "/v1/transfers", key=alice["api_key"], headers=headers, **call)
    assert (got, body["error"]["code"]) == (status, code), body
    assert set(body) == {"error"} and body["error"]["message"]
    assert table_snapshot() == before


def test_frozen_account_cannot_send(api, pair):
    from satflow.domain.accounts import AccountStatus

    alice, _ = pair
    bootstrap.services().accounts.update(alice["account_id"], updated_at="2026-11-21T00:00:00.000Z",
                                         status=AccountStatus.FROZEN)
    status, body = transfer(api, alice, "tg:bob", 1)
    assert (status, body["error"]["code"]) == (403, "ACCOUNT_FROZEN")
    assert api.call("GET", "/v1/accounts/me", key=alice["api_key"])[1]["status"] == "frozen"


def test_admin_adjustments(api, admin, pair):
    alice, _ = pair
    status, body = api.call("POST", "/v1/admin/adjustments", key=admin, body={
        "account_id": alice["account_id"], "amount_msat": 40_000, "direction": "debit", "reason": "correction"},
        headers={"Idempotency-Key": "d1"})
    assert status == 201 and body["direction"] == "debit" and body["amount_msat"] == 40_000
    assert balance(api, alice["api_key"])["available_msat"] == 60_000
    status, body = api.call("POST", "/v1/admin/adjustments", key=admin, body={
        "account_id": alice["account_id"], "amount_msat": 60_001, "direction": "debit", "reason": "too much"},
        headers={"Idempotency-Key": "d2"})
    assert (status, body["error"]["code"]) == (422, "INSUFFICIENT_FUNDS")
    status, body = api.call("POST", "/v1/admin/adjustments", key=alice["api_key"], body={
        "account_id": alice["account_id"], "amount_msat": 1, "direction": "credit", "reason": "self-service"},
        headers={"Idempotency-Key": "d3"})
    assert status == 403
    adj = {"account_id": alice["account_id"], "amount_msat": 5, "direction": "credit", "reason": "retry-safe"}
    first = api.call("POST", "/v1/admin/adjustments", key=admin, body=adj, headers={"Idempotency-Key": "a1"})
    second = api.call("POST", "/v1/admin/adjustments", key=admin, body=adj, headers={"Idempotency-Key": "a1"})
    assert first == second and balance(api, alice["api_key"])["available_msat"] == 60_005


def test_adjustment_keys_are_required_and_scoped_to_the_admin(api, admin, pair):
    alice, bob = pair
    adj = {"account_id": alice["account_id"], "amount_msat": 5, "direction": "credit", "reason": "x"}
    status, body = api.call("POST", "/v1/admin/adjustments", key=admin, body=adj)
    assert (status, body["error"]["code"]) == (400, "VALIDATION_ERROR")
    assert api.call("POST", "/v1/admin/adjustments", key=admin, body=adj, headers={"Idempotency-Key": "k"})[0] == 201
    other = dict(adj, account_id=bob["account_id"])
    status, body = api.call("POST", "/v1/admin/adjustments", key=admin, body=other, headers={"Idempotency-Key": "k"})
    assert (status, body["error"]["code"]) == (409, "IDEMPOTENCY_KEY_REUSED")
    assert balance(api, bob["api_key"])["available_msat"] == 0


def test_replay_with_memo_returns_the_same_body(api, pair):
    alice, _ = pair
    assert transfer(api, alice, "tg:bob", 7, memo="caf\u00e9 \u2615") == transfer(api, alice, "tg:bob", 7,
                                                                                memo="caf\u00e9 \u2615")


@pytest.mark.parametrize("raw", ["bm90IGpzb24=", "!!!notbase64", "//79"])
def test_undecodable_bodies_are_400(api, pair, raw):
    alice, _ = pair
    from tests.handlers.conftest import sample_events, LambdaContext
    import copy

    event = copy.deepcopy(sample_events()["POST /v1/transfers"])
    event["headers"]["authorization"] = f"Bearer {alice['api_key']}"
    event["body"], event["isBase64Encoded"] = raw, True
    from tests.handlers.conftest import load_handler_module

    resp = load_handler_module("api", "satflow_fn_api").lambda_handler(event, LambdaContext())
    assert resp["statusCode"] == 400, resp


def test_customer_keys_do_not_need_secrets_manager(api, pair):
    alice, _ = pair

    def broken():
        raise RuntimeError("Secrets Manager is down")

    svc = bootstrap.services()
    svc.admin_key, saved = broken, svc.admin_key
    try:
        assert api.call("GET", "/v1/balance", key=alice["api_key"])[0] == 200
    finally:
        svc.admin_key = saved


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"limit": "\u00b2"},
                                   {"cursor": "zzz"}])
def test_bad_history_queries(api, pair, query):
    alice, _ = pair
    status, body = api.call("GET", "/v1/transactions", key=alice["api_key"], query=query)
    assert (status, body["error"]["code"]) == (400, "VALIDATION_ERROR")


def test_unknown_route_is_404_json(api):
    status, body = api.call("GET", "/v1/nope", route="GET /v1/health")
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"


def test_openapi_documents_every_route(api):
    status, doc = api.call("GET", "/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    from tests.handlers.conftest import load_handler_module

    module = load_handler_module("api", "satflow_fn_api")
    served = {(method, route.rule if hasattr(route, "rule") else route) for route, method in _routes(module.app)}
    assert documented == served


def _routes(app):
    import re

    for route in app._static_routes + app._dynamic_routes:
        yield re.sub(r"<(\w+)>", r"{\1}", route.path), route.method
