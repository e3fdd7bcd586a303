"""GET /v1/admin/audit and /v1/admin/audit/verify through the real API handler: money mutations and admin actions
made through the API are in the log, and tampering with the stored records is reported."""
import pytest

from satflow import bootstrap
from satflow.adapters.dynamodb.audit import record_pk, seq_sk

from tests.audit.helpers import seal_all
from tests.conftest import TABLE
from tests.handlers.test_api import fund, new_account, transfer


def audit_page(api, key, **query):
    return api.call("GET", "/v1/admin/audit", key=key, query={k: str(v) for k, v in query.items()} or None)


def everything(api, admin):
    items, cursor = [], None
    while True:
        status, page = audit_page(api, admin, limit=7, **({"cursor": cursor} if cursor else {}))
        assert status == 200, page
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


@pytest.fixture
def trail(api, admin):
    alice = new_account(api, admin, "tg:alice")
    bob = new_account(api, admin, "tg:bob")
    fund(api, admin, alice["account_id"], 1_000_000)
    assert transfer(api, alice, "tg:bob", 2_500)[0] == 201
    status, _ = api.call("PATCH", f"/v1/admin/accounts/{bob['account_id']}", key=admin, body={"tier": 2},
                         route="PATCH /v1/admin/accounts/{account_id}")
    assert status == 200
    seal_all(bootstrap.services())  # what the sealer function does from the stream
    return alice, bob


def test_api_mutations_and_admin_actions_are_in_the_log(api, admin, trail):
    alice, bob = trail
    items = everything(api, admin)
    actions = sorted(r["action"] for r in items)
    assert actions == sorted(["account.created", "account.created", "ledger.adjustment_credit.posted",
                              "ledger.internal_transfer.posted", "account.updated"])
    (t,) = [r for r in items if r["action"] == "ledger.internal_transfer.posted"]
    assert t["actor"] == alice["account_id"] and t["subject_ids"][:2] == [alice["account_id"], bob["account_id"]]
    assert t["amount_msat"] == 2_500 and len(t["hash"]) == 64 and len(t["prev_hash"]) == 64
    status, report = api.call("GET", "/v1/admin/audit/verify", key=admin)
    assert status == 200 and report["ok"] and report["records"] == len(items)


def test_the_audit_routes_are_admin_only_and_validate_queries(api, admin, trail):
    alice, _ = trail
    assert audit_page(api, alice["api_key"])[0] == 403
    assert api.call("GET", "/v1/admin/audit/verify", key=alice["api_key"])[0] == 403
    for query in ({"limit": 0}, {"limit": 101}, {"shard": 999}, {"shard": "x"}, {"cursor": "not-a-cursor"}):
        status, err = audit_page(api, admin, **query)
        assert (status, err["error"]["code"]) == (400, "VALIDATION_ERROR"), query


def test_a_tampered_record_is_reported_by_verify(api, admin, trail, ddb):
    (t,) = [r for r in everything(api, admin) if r["action"] == "ledger.internal_transfer.posted"]
    ddb.update_item(TableName=TABLE, Key={"pk": {"S": record_pk(t["shard"])}, "sk": {"S": seq_sk(t["seq"])}},
                    UpdateExpression="SET amount_msat = :a", ExpressionAttributeValues={":a": {"N": "1"}})
    status, report = api.call("GET", "/v1/admin/audit/verify", key=admin)
    assert status == 200 and not report["ok"]
    (bad,) = [s for s in report["shards"] if not s["ok"]]
    assert (bad["shard"], bad["first_bad_seq"], bad["problem"]) == (t["shard"], t["seq"], "altered")


def test_a_deleted_record_is_reported_by_verify(api, admin, trail, ddb):
    (t,) = [r for r in everything(api, admin) if r["action"] == "account.updated"]
    ddb.delete_item(TableName=TABLE, Key={"pk": {"S": record_pk(t["shard"])}, "sk": {"S": seq_sk(t["seq"])}})
    report = api.call("GET", "/v1/admin/audit/verify", key=admin)[1]
    (bad,) = [s for s in report["shards"] if not s["ok"]]
    assert bad["shard"] == t["shard"] and bad["problem"] == "missing"
    assert bootstrap.services().audit is not None
