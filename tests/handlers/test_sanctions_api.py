"""GET /v1/admin/sanctions: the stored list's status, admin only."""
from tests.conftest import sample_sanctions_list
from tests.handlers.test_api import new_account


def test_status_shows_the_stored_list(api, admin):
    status, body = api.call("GET", "/v1/admin/sanctions", key=admin)
    expected = sample_sanctions_list()
    assert status == 200 and body["loaded"] is True and body["when_unloaded"] == "block"
    assert (body["version"], body["addresses"], body["node_pubkeys"]) == (1, 8, 2)
    assert body["list_sha256"] == expected.list_sha256
    assert body["loaded_at"] == body["checked_at"] == "2026-11-21T00:00:00.000Z"
    (source,) = body["sources"]
    assert source["label"] == "sdn" and source["entries"] == 6 and source["invalid_ids"] == 4
    assert source["sha256"] == expected.sources[0].sha256 and source["publish_date"] == "11/20/2026"


def test_status_before_any_list(api, admin, ddb):
    ddb.delete_item(TableName="satflow-test", Key={"pk": {"S": "SANCTIONS"}, "sk": {"S": "HEAD"}})
    status, body = api.call("GET", "/v1/admin/sanctions", key=admin)
    assert status == 200 and body["loaded"] is False and body["version"] is None and body["sources"] == []


def test_status_is_admin_only(api, admin):
    alice = new_account(api, admin, "tg:alice")
    status, body = api.call("GET", "/v1/admin/sanctions", key=alice["api_key"])
    assert status == 403 and body["error"]["code"] == "FORBIDDEN"
    assert api.call("GET", "/v1/admin/sanctions")[0] == 401
