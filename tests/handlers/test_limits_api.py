"""GET /v1/limits, PATCH /v1/admin/accounts/{id}, and limits enforced on internal transfers through the API."""
import pytest

from tests.handlers.test_api import balance, fund, new_account, transfer


def patch_account(api, admin, account_id, **body):
    return api.call("PATCH", f"/v1/admin/accounts/{account_id}", key=admin, body=body,
                    route="PATCH /v1/admin/accounts/{account_id}")


@pytest.fixture
def pair(api, admin):
    alice = new_account(api, admin, "tg:alice", tier=0)
    bob = new_account(api, admin, "tg:bob")
    fund(api, admin, alice["account_id"], 5_000_000_000)
    return alice, bob


def test_limits_shape_and_usage(api, pair):
    alice, _ = pair
    status, body = api.call("GET", "/v1/limits", key=alice["api_key"])
    assert status == 200 and body["tier"] == 0 and body["used_daily_msat"] == 0 and body["sends_last_hour"] == 0
    assert set(body) == {"tier", "per_tx_msat", "daily_msat", "monthly_msat", "sends_per_hour", "used_daily_msat",
                         "used_monthly_msat", "sends_last_hour"}
    assert transfer(api, alice, "tg:bob", 1_000)[0] == 201
    used = api.call("GET", "/v1/limits", key=alice["api_key"])[1]
    assert used["used_daily_msat"] == 1_000 and used["sends_last_hour"] == 1


def test_a_transfer_over_the_per_tx_limit_is_422_and_changes_nothing(api, pair):
    alice, _ = pair
    per_tx = api.call("GET", "/v1/limits", key=alice["api_key"])[1]["per_tx_msat"]
    before = balance(api, alice["api_key"])
    status, err = transfer(api, alice, "tg:bob", per_tx + 1)
    assert (status, err["error"]["code"]) == (422, "LIMIT_EXCEEDED") and "per" in err["error"]["message"]
    assert balance(api, alice["api_key"]) == before


def test_tier_change_takes_effect_at_once(api, admin, pair):
    alice, _ = pair
    per_tx_0 = api.call("GET", "/v1/limits", key=alice["api_key"])[1]["per_tx_msat"]
    assert transfer(api, alice, "tg:bob", per_tx_0 + 1)[0] == 422
    status, body = patch_account(api, admin, alice["account_id"], tier=2)
    assert status == 200 and body["tier"] == 2
    assert transfer(api, alice, "tg:bob", per_tx_0 + 1, key="k2")[0] == 201


def test_admin_status_change_and_validation(api, admin, pair):
    alice, bob = pair
    assert patch_account(api, admin, alice["account_id"], status="frozen")[1]["status"] == "frozen"
    assert transfer(api, alice, "tg:bob", 1)[1]["error"]["code"] == "ACCOUNT_FROZEN"
    assert patch_account(api, admin, alice["account_id"], tier=9)[0] == 400
    assert patch_account(api, admin, alice["account_id"], status="asleep")[0] == 400
    assert patch_account(api, admin, alice["account_id"])[0] == 400
    assert patch_account(api, admin, "acc_" + "a" * 26, tier=1)[0] == 404
    assert patch_account(api, bob["api_key"], alice["account_id"], tier=3)[0] == 403
