"""Regression tests for the wallet-ecosystem review (findings 4, 5, 7, 8, 9, 12): each failed before its fix."""
from __future__ import annotations

from satflow import bootstrap
from satflow.adapters.dynamodb.ecosystem import DynamoKeyStore, DynamoLnurlStore
from satflow.app import accounts as accounts_app, lnurl as lnurl_app, payments
from satflow.app.accounts import ADMIN
from satflow.domain import errors
from satflow.domain.accounts import ALL_SCOPES, Account, AccountStatus, hash_api_key, new_api_key
from satflow.domain.ids import new_id
from satflow.domain.lightning import FailureReason, PaymentFailed

from tests.audit.helpers import seal_all
from tests.ecosystem.test_lnurl import claim, new_link, withdraw
from tests.handlers.test_api import balance, fund, new_account

_REVOKE = "DELETE /v1/keys/{key_id}"
_ADMIN_REVOKE = "DELETE /v1/admin/accounts/{account_id}/keys/{key_id}"


def _links(api, who):
    return api.call("GET", "/v1/lnurl/withdraw-links", key=who["api_key"])[1]["items"]


def _disable(api, who, link):
    return api.call("DELETE", f"/v1/lnurl/withdraw-links/{link['link_id']}", key=who["api_key"],
                    route="DELETE /v1/lnurl/withdraw-links/{link_id}")


def _flaky_create_payment(monkeypatch, failures=1):
    """create_payment raises TransientError (before writing anything) ``failures`` times, then works."""
    real, calls = payments.create_payment, {"n": 0}

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] <= failures:
            raise errors.TransientError("DynamoDB busy")
        return real(*a, **kw)

    monkeypatch.setattr(payments, "create_payment", flaky)


def _audit_actions(api, admin, subject):
    seal_all(bootstrap.services())
    _, audit = api.call("GET", "/v1/admin/audit", key=admin, query={"limit": "100"})
    return [r["action"] for r in audit["items"] if subject in r["subject_ids"]]


# ------------------------------------------------------------------------------------------------ finding 4
def test_a_transient_error_before_the_payment_gives_the_use_back(api, admin, sim, started, monkeypatch):
    alice = new_account(api, admin, "tg:alice")
    fund(api, admin, alice["account_id"], 1_000_000)
    _, link = new_link(api, alice, uses=1)
    _flaky_create_payment(monkeypatch)
    assert withdraw(api, link["k1"], sim.external_invoice(20_000, "w"))[0] == 503
    assert _links(api, alice)[0]["remaining"] == 1 and started == []  # nothing paid: the use is back
    assert withdraw(api, link["k1"], sim.external_invoice(20_000, "w2")) == (200, {"status": "OK"})
    assert len(started) == 1 and _links(api, alice)[0]["remaining"] == 0


def test_a_disabled_link_does_not_pay_a_retried_callback_whose_payment_was_never_made(api, admin, sim, started,
                                                                                      monkeypatch):
    alice = new_account(api, admin, "tg:alice")
    fund(api, admin, alice["account_id"], 1_000_000)
    _, link = new_link(api, alice, uses=1)
    pr = sim.external_invoice(20_000, "w")
    _flaky_create_payment(monkeypatch)
    # the use stays held (the give-back itself failed), so the retry below is a replay of the use
    monkeypatch.setattr(DynamoLnurlStore, "release", lambda self, *a: (_ for _ in ()).throw(
        errors.TransientError("busy")))
    assert withdraw(api, link["k1"], pr)[0] == 503
    assert _disable(api, alice, link)[1]["status"] == "disabled"
    status, _ = withdraw(api, link["k1"], pr)
    assert status == 404 and started == []
    assert balance(api, alice["api_key"])["available_msat"] == 1_000_000


def test_a_retried_callback_of_a_paid_invoice_still_answers_after_disabling(api, admin, sim, started):
    alice = new_account(api, admin, "tg:alice")
    fund(api, admin, alice["account_id"], 1_000_000)
    _, link = new_link(api, alice, uses=2)
    pr = sim.external_invoice(20_000, "w")
    assert withdraw(api, link["k1"], pr) == (200, {"status": "OK"})
    _disable(api, alice, link)
    assert withdraw(api, link["k1"], pr) == (200, {"status": "OK"})  # the existing payment, not a new one
    assert len(started) == 1


# ------------------------------------------------------------------------------------------------ finding 5
def _legacy_account(ref):
    """An account and key as written before key records existed (issue 15): APIKEY# only, no key_id."""
    svc = bootstrap.services()
    account = Account(new_id("acc"), f"tg:{ref}", 1, AccountStatus.ACTIVE, svc.clock())
    key = new_api_key()
    svc.accounts.create(account, hash_api_key(key), key[:10], list(ALL_SCOPES))
    return account.account_id, key


def test_a_legacy_key_is_listed_and_the_admin_revokes_it(api, admin):
    account_id, legacy = _legacy_account("legacy")
    status, listed = api.call("GET", "/v1/keys", key=legacy)
    assert status == 200 and len(listed["items"]) == 1
    item = listed["items"][0]
    assert item["prefix"] == legacy[:10] and item["status"] == "active" and item["label"] == "legacy"
    assert api.call("GET", "/v1/keys", key=legacy)[1]["items"] == listed["items"]  # adopted once
    path = f"/v1/admin/accounts/{account_id}/keys/{item['key_id']}"
    assert api.call("DELETE", path, key=legacy, route=_ADMIN_REVOKE)[0] == 403  # admin route
    status, revoked = api.call("DELETE", path, key=admin, route=_ADMIN_REVOKE)
    assert (status, revoked["status"]) == (200, "revoked")
    assert api.call("GET", "/v1/accounts/me", key=legacy)[0] == 401
    assert api.call("DELETE", path, key=admin, route=_ADMIN_REVOKE) == (200, revoked)  # idempotent


def test_a_legacy_key_is_revoked_by_the_account_itself(api, admin):
    _, legacy = _legacy_account("legacy2")
    item = api.call("GET", "/v1/keys", key=legacy)[1]["items"][0]
    _, new = api.call("POST", "/v1/keys", key=legacy, body={"scopes": ["read", "receive", "send"]})
    assert api.call("DELETE", f"/v1/keys/{item['key_id']}", key=new["api_key"], route=_REVOKE)[0] == 200
    assert api.call("GET", "/v1/accounts/me", key=legacy)[0] == 401


def test_accounts_create_account_writes_the_key_record(api):
    account, key = accounts_app.create_account(bootstrap.services(), ADMIN, "tg:old-path", 1)
    listed = api.call("GET", "/v1/keys", key=key)[1]["items"]
    assert [k["prefix"] for k in listed] == [key[:10]] and listed[0]["label"] == "initial"


# ------------------------------------------------------------------------------------------------ finding 7
def test_revoking_or_rotating_a_key_stops_its_withdraw_links(api, admin, sim, started):
    alice = new_account(api, admin, "tg:alice")
    fund(api, admin, alice["account_id"], 1_000_000)
    _, k = api.call("POST", "/v1/keys", key=alice["api_key"], body={"scopes": ["read", "receive", "send"]})
    _, k2 = api.call("POST", "/v1/keys", key=alice["api_key"], body={"scopes": ["read", "send"]})
    _, link = new_link(api, k, uses=5)
    _, link2 = new_link(api, k2, uses=5)
    _, own = new_link(api, alice, uses=5)
    assert api.call("DELETE", f"/v1/keys/{k['key_id']}", key=alice["api_key"], route=_REVOKE)[0] == 200
    api.call("POST", f"/v1/keys/{k2['key_id']}/rotate", key=alice["api_key"], route="POST /v1/keys/{key_id}/rotate")
    for dead in (link, link2):
        assert withdraw(api, dead["k1"], sim.external_invoice(20_000))[0] == 404
        assert api.call("GET", f"/lnurlw/{dead['k1']}", route="GET /lnurlw/{k1}")[0] == 404
    status = {x["link_id"]: x["status"] for x in _links(api, alice)}
    assert status == {link["link_id"]: "disabled", link2["link_id"]: "disabled", own["link_id"]: "active"}
    assert started == []
    assert withdraw(api, own["k1"], sim.external_invoice(20_000)) == (200, {"status": "OK"})  # others unaffected


def test_a_revoked_keys_link_refuses_even_if_disabling_never_ran(api, admin, sim, started, monkeypatch):
    alice = new_account(api, admin, "tg:alice")
    fund(api, admin, alice["account_id"], 1_000_000)
    _, k = api.call("POST", "/v1/keys", key=alice["api_key"], body={"scopes": ["read", "receive", "send"]})
    _, link = new_link(api, k, uses=5)
    monkeypatch.setattr(lnurl_app, "disable_links_of_key", lambda *a: 0, raising=False)  # crash after revoking
    assert api.call("DELETE", f"/v1/keys/{k['key_id']}", key=alice["api_key"], route=_REVOKE)[0] == 200
    assert withdraw(api, link["k1"], sim.external_invoice(20_000))[0] == 404 and started == []


# ------------------------------------------------------------------------------------------------ finding 8
def test_a_failed_withdraw_payment_gives_its_use_back(api, admin, sim, started):
    alice = new_account(api, admin, "tg:alice")
    fund(api, admin, alice["account_id"], 1_000_000)
    _, link = new_link(api, alice, uses=1)
    assert withdraw(api, link["k1"], sim.external_invoice(20_000, "a")) == (200, {"status": "OK"})
    svc = bootstrap.services()
    payments.step_void(svc, started[0], PaymentFailed(reason=FailureReason.NO_ROUTE).to_dict())
    assert svc.lightning.get_payment(started[0]).status.value == "FAILED"
    assert withdraw(api, link["k1"], sim.external_invoice(20_000, "b")) == (200, {"status": "OK"})
    assert len(started) == 2
    assert withdraw(api, link["k1"], sim.external_invoice(20_000, "c"))[0] == 404  # still one use at a time


# ------------------------------------------------------------------------------------------------ finding 9
def test_link_creation_disabling_and_address_claims_are_audited(api, admin):
    alice = new_account(api, admin, "tg:alice")
    _, link = new_link(api, alice, uses=1)
    _disable(api, alice, link)
    assert _disable(api, alice, link)[0] == 200  # a repeat changes nothing
    assert claim(api, alice, "alice")[0] == 201
    assert claim(api, alice, "alice")[0] == 200
    actions = _audit_actions(api, admin, alice["account_id"])
    assert actions.count("withdraw_link.created") == 1 and actions.count("withdraw_link.disabled") == 1
    assert actions.count("lightning_address.claimed") == 1


# ------------------------------------------------------------------------------------------------ finding 12
def _commit_then_lose_the_answer(monkeypatch, cls, name):
    real, calls = getattr(cls, name), {"n": 0}

    def once_unknown(self, *a, **kw):
        result = real(self, *a, **kw)
        calls["n"] += 1
        if calls["n"] == 1:
            raise errors.TransientError("DynamoDB unreachable: ReadTimeoutError")  # committed, answer lost
        return result

    monkeypatch.setattr(cls, name, once_unknown)


def test_revoke_retried_after_an_unknown_commit_succeeds(api, admin, monkeypatch):
    alice = new_account(api, admin, "tg:alice")
    _, k = api.call("POST", "/v1/keys", key=alice["api_key"], body={"scopes": ["read"]})
    _commit_then_lose_the_answer(monkeypatch, DynamoKeyStore, "run")
    status, body = api.call("DELETE", f"/v1/keys/{k['key_id']}", key=alice["api_key"], route=_REVOKE)
    assert (status, body["status"]) == (200, "revoked")
    assert _audit_actions(api, admin, k["key_id"]).count("api_key.revoked") == 1


def test_admin_set_address_retried_after_an_unknown_commit_succeeds(api, admin, monkeypatch):
    alice = new_account(api, admin, "tg:alice")
    claim(api, alice, "alice")
    _commit_then_lose_the_answer(monkeypatch, DynamoLnurlStore, "change")
    status, view = api.call("PUT", f"/v1/admin/accounts/{alice['account_id']}/lightning-address", key=admin,
                            body={"username": "alice.w"}, route="PUT /v1/admin/accounts/{account_id}/lightning-address")
    assert (status, view["username"]) == (200, "alice.w")
