"""API keys with scopes (issue, list by prefix, rotate, revoke) and idempotent account creation."""
from __future__ import annotations

import pytest

from satflow import bootstrap

from tests.audit.helpers import seal_all
from tests.handlers.test_api import fund, new_account


def _create_key(api, key, scopes, label=None):
    body = {"scopes": scopes} if label is None else {"scopes": scopes, "label": label}
    return api.call("POST", "/v1/keys", key=key, body=body)


def test_a_read_only_key_reads_and_cannot_send_or_receive(api, admin):
    alice = new_account(api, admin, "tg:alice")
    status, ro = _create_key(api, alice["api_key"], ["read"], "dashboard")
    assert status == 201 and ro["scopes"] == ["read"] and ro["api_key"].startswith("sk_")
    assert ro["prefix"] == ro["api_key"][:10] and ro["label"] == "dashboard"
    assert api.call("GET", "/v1/balance", key=ro["api_key"])[0] == 200
    status, err = api.call("POST", "/v1/invoices", key=ro["api_key"], body={"amount_msat": 1000})
    assert (status, err["error"]["code"]) == (403, "FORBIDDEN")
    status, err = api.call("POST", "/v1/transfers", key=ro["api_key"], body={"to": "tg:alice", "amount_msat": 1},
                           headers={"Idempotency-Key": "t1"})
    assert status == 403


def test_a_receive_only_key_creates_invoices_and_reads_nothing(api, admin):
    alice = new_account(api, admin, "tg:alice")
    _, pos = _create_key(api, alice["api_key"], ["receive"])
    assert api.call("POST", "/v1/invoices", key=pos["api_key"], body={"amount_msat": 1000})[0] == 201
    assert api.call("GET", "/v1/balance", key=pos["api_key"])[0] == 403


def test_only_a_full_key_manages_keys(api, admin):
    alice = new_account(api, admin, "tg:alice")
    _, ro = _create_key(api, alice["api_key"], ["read", "receive"])
    status, err = _create_key(api, ro["api_key"], ["read", "receive", "send"])
    assert (status, err["error"]["code"]) == (403, "FORBIDDEN")  # no escalation from a partial key
    status, _ = api.call("DELETE", f"/v1/keys/{ro['key_id']}", key=ro["api_key"], route="DELETE /v1/keys/{key_id}")
    assert status == 403


def test_list_shows_prefixes_only_and_rotate_and_revoke(api, admin):
    alice = new_account(api, admin, "tg:alice")
    _, extra = _create_key(api, alice["api_key"], ["read", "send"], "bot")
    status, listed = api.call("GET", "/v1/keys", key=alice["api_key"])
    assert status == 200 and len(listed["items"]) == 2  # the account's first key is listed too
    text = repr(listed)
    assert extra["api_key"] not in text and alice["api_key"] not in text and "key_hash" not in text
    initial = next(k for k in listed["items"] if k["key_id"] == alice["key_id"])
    assert initial["scopes"] == ["read", "receive", "send"] and initial["prefix"] == alice["api_key"][:10]

    status, rotated = api.call("POST", f"/v1/keys/{extra['key_id']}/rotate", key=alice["api_key"],
                               route="POST /v1/keys/{key_id}/rotate")
    assert status == 201 and rotated["scopes"] == ["read", "send"] and rotated["label"] == "bot"
    assert api.call("GET", "/v1/balance", key=extra["api_key"])[0] == 401  # the old key stopped at once
    assert api.call("GET", "/v1/balance", key=rotated["api_key"])[0] == 200

    status, revoked = api.call("DELETE", f"/v1/keys/{rotated['key_id']}", key=alice["api_key"],
                               route="DELETE /v1/keys/{key_id}")
    assert (status, revoked["status"]) == (200, "revoked")
    assert api.call("GET", "/v1/balance", key=rotated["api_key"])[0] == 401
    status, again = api.call("DELETE", f"/v1/keys/{rotated['key_id']}", key=alice["api_key"],
                             route="DELETE /v1/keys/{key_id}")
    assert (status, again) == (200, revoked)  # DELETE is idempotent: the end state, unchanged


def test_keys_of_another_account_are_not_found(api, admin):
    alice = new_account(api, admin, "tg:alice")
    bob = new_account(api, admin, "tg:bob")
    status, err = api.call("DELETE", f"/v1/keys/{bob['key_id']}", key=alice["api_key"],
                           route="DELETE /v1/keys/{key_id}")
    assert (status, err["error"]["code"]) == (404, "API_KEY_NOT_FOUND")
    assert api.call("GET", "/v1/balance", key=bob["api_key"])[0] == 200


@pytest.mark.parametrize("body", [{"scopes": []}, {"scopes": ["admin"]}, {"scopes": ["read", "read"]},
                                  {"scopes": "read"}, {"scopes": ["read"], "label": "x" * 65}])
def test_bad_key_requests(api, admin, body):
    alice = new_account(api, admin, "tg:alice")
    status, err = api.call("POST", "/v1/keys", key=alice["api_key"], body=body)
    assert (status, err["error"]["code"]) == (400, "VALIDATION_ERROR")


def test_the_admin_issues_a_key_for_an_account(api, admin):
    alice = new_account(api, admin, "tg:alice")
    status, key = api.call("POST", f"/v1/admin/accounts/{alice['account_id']}/keys", key=admin,
                           body={"scopes": ["read"]}, route="POST /v1/admin/accounts/{account_id}/keys")
    assert status == 201
    status, me = api.call("GET", "/v1/accounts/me", key=key["api_key"])
    assert status == 200 and me["account_id"] == alice["account_id"]
    status, _ = api.call("POST", f"/v1/admin/accounts/{alice['account_id']}/keys", key=alice["api_key"],
                         body={"scopes": ["read"]}, route="POST /v1/admin/accounts/{account_id}/keys")
    assert status == 403


def _create(api, admin, ref, idem, tier=1):
    return api.call("POST", "/v1/accounts", key=admin, body={"external_ref": ref, "tier": tier},
                    headers={"Idempotency-Key": idem})


def test_a_retried_account_creation_returns_a_new_key_for_the_same_account(api, admin):
    status, first = _create(api, admin, "tg:carol", "create-carol-1")
    assert status == 201 and first["replayed"] is False
    status, again = _create(api, admin, "tg:carol", "create-carol-1")  # the first response was "lost"
    assert status == 201 and again["replayed"] is True
    assert again["account_id"] == first["account_id"] and again["api_key"] != first["api_key"]
    assert api.call("GET", "/v1/balance", key=again["api_key"])[0] == 200
    assert api.call("GET", "/v1/balance", key=first["api_key"])[0] == 401  # the lost key is revoked
    _, listed = api.call("GET", "/v1/keys", key=again["api_key"])
    assert sorted(k["status"] for k in listed["items"]) == ["active", "revoked"]
    # the audit chain records the creation and the reissue (sealed first, as the sealer function does)
    seal_all(bootstrap.services())
    status, audit = api.call("GET", "/v1/admin/audit", key=admin, query={"limit": "100"})
    actions = [r["action"] for r in audit["items"] if first["account_id"] in r["subject_ids"]]
    assert "account.created" in actions and "api_key.reissued" in actions


def test_same_idempotency_key_with_another_body_is_409_and_no_key_is_409_as_before(api, admin):
    assert _create(api, admin, "tg:dave", "create-dave")[0] == 201
    status, err = _create(api, admin, "tg:dave", "create-dave", tier=2)
    assert (status, err["error"]["code"]) == (409, "IDEMPOTENCY_KEY_REUSED")
    status, err = api.call("POST", "/v1/accounts", key=admin, body={"external_ref": "tg:dave", "tier": 1})
    assert (status, err["error"]["code"]) == (409, "ACCOUNT_EXISTS")
    status, err = _create(api, admin, "tg:dave", "another-key")  # the ref is taken by another request
    assert (status, err["error"]["code"]) == (409, "ACCOUNT_EXISTS")


def test_webhook_management_needs_more_than_read(api, admin):
    alice = new_account(api, admin, "tg:alice")
    _, ro = _create_key(api, alice["api_key"], ["read"])
    body = {"url": "https://example.com/hook", "events": ["transfer.settled"]}
    status, err = api.call("POST", "/v1/webhooks", key=ro["api_key"], body=body)
    assert (status, err["error"]["code"]) == (403, "FORBIDDEN")
    assert api.call("GET", "/v1/webhooks", key=ro["api_key"])[0] == 200  # reading stays possible


def test_a_concurrent_retry_that_loses_the_race_returns_the_winners_account(api, admin, monkeypatch):
    """Two attempts under one Idempotency-Key race: the loser read no marker, then its transaction is cancelled
    by the winner's items (ref and marker). It must answer with the winner's account (and a fresh key), not 409."""
    from satflow import bootstrap
    from satflow.app import accounts as accounts_app, keys as keys_app

    svc = bootstrap.services()
    winner = keys_app.create_account(svc, accounts_app.ADMIN, "tg:erin", 1, "create-erin")
    real = svc.keys.creation_marker
    calls = []

    def marker_not_yet_visible(key_hash):
        calls.append(key_hash)
        return None if len(calls) == 1 else real(key_hash)

    monkeypatch.setattr(svc.keys, "creation_marker", marker_not_yet_visible)
    loser = keys_app.create_account(svc, accounts_app.ADMIN, "tg:erin", 1, "create-erin")
    assert len(calls) == 2 and loser.replayed and loser.account.account_id == winner.account.account_id
    assert api.call("GET", "/v1/balance", key=loser.api_key)[0] == 200
