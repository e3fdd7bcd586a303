"""The review routes and the risk answers of POST /v1/transfers through the API handler (functions/api/app.py):
admin key only, typed errors, paging. The workflows themselves run in tests/flows and tests/risk."""
from __future__ import annotations

import pytest

from satflow import bootstrap
from satflow.domain.risk import RiskPolicy

from tests.handlers.conftest import admin, api, sim, started  # noqa: F401  (fixtures)
from tests.handlers.test_api import balance, fund, new_account, transfer

REVIEW_ALL = RiskPolicy(review_at=20, block_at=101)


@pytest.fixture
def wired(api):  # noqa: F811
    from satflow.adapters.dynamodb.audit import DynamoAuditStore
    from satflow.adapters.dynamodb.models import build_models

    svc = bootstrap.services()
    svc.audit = DynamoAuditStore(svc.ledger._client, build_models("satflow-test", "us-east-1"), shards=2)
    reviews_started: list[str] = []
    svc.start_review = reviews_started.append
    svc.risk_policy = REVIEW_ALL
    return api, reviews_started


@pytest.fixture
def people(wired, admin):
    api, _ = wired
    alice, bob = new_account(api, admin, "tg:alice"), new_account(api, admin, "tg:bob")
    fund(api, admin, alice["account_id"], 50_000_000)
    return alice, bob


def reviews(api, key, **query):
    return api.call("GET", "/v1/admin/reviews", key=key, query={k: str(v) for k, v in query.items()} or None)


def decide(api, key, review_id, verb, body=None):
    return api.call("POST", f"/v1/admin/reviews/{review_id}/{verb}", key=key, body=body,
                    route=f"POST /v1/admin/reviews/{{review_id}}/{verb}")


def test_a_held_transfer_is_202_in_review_and_listed_for_the_admin(wired, people, admin):
    api, started_reviews = wired
    alice, bob = people
    status, body = transfer(api, alice, "tg:bob", 1_000_000)
    assert status == 202 and body["status"] == "IN_REVIEW" and body["review_id"].startswith("rev_")
    assert started_reviews == [body["review_id"]]
    assert balance(api, alice["api_key"])["pending_out_msat"] == 1_000_000
    assert transfer(api, alice, "tg:bob", 1_000_000) == (202, body)  # the same Idempotency-Key: the same answer

    status, listed = reviews(api, admin)
    assert status == 200 and listed["next_cursor"] is None
    (item,) = listed["items"]
    assert item["review_id"] == body["review_id"] and item["kind"] == "transfer" and item["status"] == "pending"
    assert item["subject_id"] == body["transfer_id"] and item["amount_msat"] == 1_000_000
    assert item["account_id"] == alice["account_id"] and item["destination"] == bob["account_id"]
    assert sum(f["points"] for f in item["factors"]) == item["score"] and "task_token" not in item


def test_review_routes_need_the_admin_key(wired, people):
    api, _ = wired
    alice, _bob = people
    _, held = transfer(api, alice, "tg:bob", 1_000_000)
    assert reviews(api, alice["api_key"])[1]["error"]["code"] == "FORBIDDEN"
    for verb in ("approve", "reject"):
        status, err = decide(api, alice["api_key"], held["review_id"], verb, body={"bogus": 1})
        assert (status, err["error"]["code"]) == (403, "FORBIDDEN")
    assert api.call("GET", "/v1/admin/reviews")[0] == 401


def test_decisions_through_the_api(wired, people, admin):
    api, _ = wired
    alice, _bob = people
    _, held = transfer(api, alice, "tg:bob", 1_000_000)
    rid = held["review_id"]

    assert decide(api, admin, rid, "approve", body={"nope": 1})[0] == 400
    status, body = decide(api, admin, rid, "approve", body={"note": "ok by phone"})
    assert status == 200 and body["status"] == "approved" and body["decided_by"] == "admin"
    assert body["note"] == "ok by phone" and body["workflow"] == "not_parked_yet"  # no workflow ran here
    assert decide(api, admin, rid, "approve")[0] == 200  # a retry of the same decision
    status, err = decide(api, admin, rid, "reject")
    assert (status, err["error"]["code"]) == (409, "REVIEW_ALREADY_DECIDED")
    status, err = decide(api, admin, "rev_" + "b" * 26, "approve")
    assert (status, err["error"]["code"]) == (404, "REVIEW_NOT_FOUND")
    assert decide(api, admin, "not-a-review", "reject")[1]["error"]["code"] == "REVIEW_NOT_FOUND"

    assert reviews(api, admin)[1]["items"] == []
    (approved,) = reviews(api, admin, status="approved")[1]["items"]
    assert approved["review_id"] == rid
    assert reviews(api, admin, status="maybe")[1]["error"]["code"] == "VALIDATION_ERROR"


def test_review_list_pages_oldest_first(wired, people, admin):
    api, _ = wired
    alice, _bob = people
    ids = [transfer(api, alice, "tg:bob", 1_000_000 + n, key=f"k{n}")[1]["review_id"] for n in range(3)]
    seen, cursor = [], None
    while True:
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        status, page = reviews(api, admin, **query)
        assert status == 200 and len(page["items"]) <= 2
        seen += [r["review_id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    assert reviews(api, admin, limit=0)[0] == 400 and reviews(api, admin, cursor="garbage")[0] == 400


def test_a_blocked_transfer_is_422_risk_blocked_and_moves_nothing(wired, people):
    api, _ = wired
    alice, _bob = people
    bootstrap.services().risk_policy = RiskPolicy(review_at=20, block_at=20)
    before = balance(api, alice["api_key"])
    status, err = transfer(api, alice, "tg:bob", 1_000_000)
    assert (status, err["error"]["code"]) == (422, "RISK_BLOCKED") and "score" in err["error"]["message"]
    assert balance(api, alice["api_key"]) == before
