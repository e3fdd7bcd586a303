"""Authorization comes before the body, on every route the API serves; and the admin key can never be mistaken
for an account key (or the other way round)."""
from __future__ import annotations

import base64
import copy
import json
import re

import pytest

from satflow.api.openapi import ROUTES
from satflow.app import accounts
from satflow.domain import errors

from tests.handlers.conftest import LambdaContext, load_handler_module, sample_events


def _served_routes() -> list[tuple[str, str]]:
    """(method, path with {params}) of every route the API handler's resolver serves."""
    app = load_handler_module("api", "satflow_fn_api").app
    return sorted({(r.method, r.openapi_path) for r in app._dynamic_routes + app._static_routes})


DECLARED = {(r.method, r.path): r.auth for r in ROUTES}
ADMIN_ROUTES = [route for route in _served_routes() if DECLARED.get(route) == "admin"]


def test_every_served_route_declares_its_auth():
    assert [route for route in _served_routes() if route not in DECLARED] == []
    assert len(ADMIN_ROUTES) >= 10 and ("POST", "/v1/accounts") in ADMIN_ROUTES


def _event(method: str, path: str, key: str, raw_body: str | None) -> dict:
    event = copy.deepcopy(next(iter(sample_events().values())))
    concrete = re.sub(r"\{[^}]+\}", "x1", path)
    event.update(routeKey=f"{method} {path}", rawPath=concrete, rawQueryString="", queryStringParameters=None,
                 pathParameters={name: "x1" for name in re.findall(r"\{([^}]+)\}", path)} or None)
    event["requestContext"].update(routeKey=f"{method} {path}")
    event["requestContext"]["http"].update(method=method, path=concrete)
    event["headers"] = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    if raw_body is None:
        event.pop("body", None)
        event["isBase64Encoded"] = False
    else:
        event["body"], event["isBase64Encoded"] = base64.b64encode(raw_body.encode()).decode(), True
    return event


@pytest.fixture
def customer_key(api, admin):
    status, account = api.call("POST", "/v1/accounts", key=admin, body={"external_ref": "authz:1", "tier": 1})
    assert status == 201, account
    return account["api_key"]


@pytest.mark.parametrize("raw_body", [None, "", "{", "[]", '{"unexpected": 1}'], ids=["none", "empty", "broken",
                                                                                     "array", "unknown-field"])
def test_a_customer_key_on_any_admin_route_is_403_whatever_the_body(api, customer_key, raw_body):
    handler = load_handler_module("api", "satflow_fn_api").lambda_handler
    answers = {}
    for method, path in ADMIN_ROUTES:
        response = handler(_event(method, path, customer_key, raw_body), LambdaContext())
        answers[f"{method} {path}"] = (response["statusCode"], json.loads(response["body"])["error"]["code"])
    assert answers == {f"{m} {p}": (403, "FORBIDDEN") for m, p in ADMIN_ROUTES}


def test_an_unknown_or_malformed_key_is_401_before_the_body_too(api):
    handler = load_handler_module("api", "satflow_fn_api").lambda_handler
    for method, path in ADMIN_ROUTES:
        response = handler(_event(method, path, "sk_" + "u" * 40, None), LambdaContext())
        assert response["statusCode"] == 401, (method, path, response)


class _Services:
    def __init__(self, admin_key: str, account_keys: dict[str, tuple[str, frozenset]] | None = None) -> None:
        self._admin_key = admin_key
        self.accounts = self
        self._keys = account_keys or {}
        self.admin_key_reads = 0

    def admin_key(self) -> str:
        self.admin_key_reads += 1
        return accounts.check_admin_key(self._admin_key)

    def api_key(self, key_hash: str):
        return self._keys.get(key_hash)


def test_authentication_tells_the_admin_key_and_account_keys_apart_by_the_prefix():
    from satflow.domain.accounts import ALL_SCOPES, hash_api_key

    account_key = "sk_" + "a" * 43
    svc = _Services("plain-admin-key-0123456789", {hash_api_key(account_key): ("acc_1", frozenset(ALL_SCOPES), "key_1")})
    assert accounts.authenticate(svc, "Bearer plain-admin-key-0123456789").is_admin
    assert accounts.authenticate(svc, f"Bearer {account_key}").account_id == "acc_1"
    assert svc.admin_key_reads == 1  # a customer's request never reads the admin secret
    with pytest.raises(errors.Unauthorized):
        accounts.authenticate(svc, "Bearer sk_short")  # account-shaped, not a valid account key: never the admin


def test_an_account_shaped_admin_secret_is_refused_with_a_typed_error_not_a_puzzling_401():
    """Before: an admin secret starting with sk_ was treated as an account key and answered 401, locking the
    operator out with no hint. Now the secret is refused where it is loaded, and the operator presenting it gets
    the typed error (500 + log line), not 'invalid API key'."""
    shaped = "sk_" + "b" * 43
    svc = _Services(shaped)
    with pytest.raises(accounts.AdminKeyMisconfigured, match="prefix of account API keys"):
        accounts.authenticate(svc, f"Bearer {shaped}")
    with pytest.raises(accounts.AdminKeyMisconfigured):
        accounts.authenticate(svc, "Bearer some-other-token")
    assert shaped not in str(pytest.raises(accounts.AdminKeyMisconfigured, svc.admin_key).value)


def test_the_bootstrap_provider_refuses_an_account_shaped_admin_key(monkeypatch):
    from satflow import bootstrap, config

    monkeypatch.setenv("SATFLOW_ADMIN_KEY", "sk_" + "c" * 43)
    config.reset()
    try:
        provider = bootstrap._admin_key_provider()
        with pytest.raises(accounts.AdminKeyMisconfigured):
            provider()
        monkeypatch.setenv("SATFLOW_ADMIN_KEY", "fine-admin-key-0123456789")
        config.reset()
        assert bootstrap._admin_key_provider()() == "fine-admin-key-0123456789"
    finally:
        monkeypatch.delenv("SATFLOW_ADMIN_KEY")
        config.reset()
