"""The webhook routes through the real API handler (moto, sample events from events/api): create shows the secret
once, owners see only their own subscriptions, URLs are vetted, replays are all-or-nothing."""
from __future__ import annotations

import ipaddress
import json

import pytest

from satflow.domain.webhooks import MAX_SUBSCRIPTIONS_PER_OWNER, events_for_transfer
from satflow.domain.templates import internal_transfer

from tests.conftest import ADMIN_KEY, SHARDS
from tests.handlers.conftest import Api, load_handler_module
from tests.webhooks.conftest import NOW

PUBLIC = {"hooks.example.com": ["93.184.216.34"], "dual.example.com": ["2606:4700::1111", "93.184.216.35"],
          "internal.example.com": ["10.0.0.7"], "rebind.example.com": ["93.184.216.34", "127.0.0.1"],
          "metadata.example.com": ["::ffff:169.254.169.254"]}


class FakeResolver:
    """DNS for the tests (no sockets): names above resolve as listed, IP literals to themselves."""

    def resolve(self, host: str, port: int) -> list[str]:
        from satflow.domain.webhooks import WebhookTransportError

        if host in PUBLIC:
            return PUBLIC[host]
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        raise WebhookTransportError(f"cannot resolve {host}")


@pytest.fixture
def api(wsvc):
    wsvc.webhook_allow_private = False
    wsvc.webhook_http = FakeResolver()
    module = load_handler_module("api", "satflow_fn_api")
    return Api(module.lambda_handler)


@pytest.fixture
def keys(api):
    out = []
    for ref in ("tg:wh-alice", "tg:wh-bob"):
        status, body = api.call("POST", "/v1/accounts", key=ADMIN_KEY, body={"external_ref": ref, "tier": 1})
        assert status == 201, body
        out.append((body["account_id"], body["api_key"]))
    return out


def create(api, key, url="https://hooks.example.com/satflow", events=("transfer.settled",)):
    return api.call("POST", "/v1/webhooks", key=key, body={"url": url, "events": list(events)})


def test_create_shows_the_secret_once(api, keys):
    (_, key), _ = keys
    status, body = create(api, key, events=["payment.failed", "transfer.settled"])
    assert status == 201, body
    assert set(body) == {"id", "url", "events", "created_at", "secret"}
    assert body["secret"].startswith("whsec_") and body["events"] == ["transfer.settled", "payment.failed"]
    status, got = api.call("GET", f"/v1/webhooks/{body['id']}", key=key, route="GET /v1/webhooks/{webhook_id}")
    assert status == 200 and "secret" not in got and got["url"] == "https://hooks.example.com/satflow"
    status, listed = api.call("GET", "/v1/webhooks", key=key)
    assert status == 200 and [s["id"] for s in listed["items"]] == [body["id"]]
    assert all("secret" not in s for s in listed["items"])


def test_owners_see_only_their_own(api, keys):
    (_, alice), (_, bob) = keys
    _, sub = create(api, alice)
    path = f"/v1/webhooks/{sub['id']}"
    for method, route in (("GET", "GET /v1/webhooks/{webhook_id}"), ("DELETE", "DELETE /v1/webhooks/{webhook_id}")):
        status, body = api.call(method, path, key=bob, route=route)
        assert (status, body["error"]["code"]) == (404, "WEBHOOK_NOT_FOUND")
    assert api.call("GET", "/v1/webhooks", key=bob)[1] == {"items": []}
    assert api.call("GET", "/v1/webhooks", key=ADMIN_KEY)[1] == {"items": []}  # the admin's own list
    status, body = api.call("DELETE", path, key=alice, route="DELETE /v1/webhooks/{webhook_id}")
    assert (status, body) == (200, {"id": sub["id"], "deleted": True})
    status, body = api.call("DELETE", path, key=alice, route="DELETE /v1/webhooks/{webhook_id}")
    assert status == 404


@pytest.mark.parametrize("url, fragment", [
    ("http://hooks.example.com/x", "https"),
    ("https://internal.example.com/x", "10.0.0.7"),
    ("https://rebind.example.com/x", "127.0.0.1"),
    ("https://metadata.example.com/x", "169.254.169.254"),
    ("https://127.0.0.1/x", "loopback"),
    ("https://[::1]/x", "loopback"),
    ("https://nowhere.example.com/x", "does not resolve"),
    ("https://me:pw@hooks.example.com/x", "credentials"),
])
def test_unsafe_urls_are_refused_and_nothing_is_written(api, keys, wsvc, url, fragment):
    (account, key), _ = keys
    status, body = create(api, key, url=url)
    assert (status, body["error"]["code"]) == (400, "WEBHOOK_URL_REJECTED"), body
    assert fragment in body["error"]["message"]
    assert wsvc.webhooks.list_subscriptions(account) == []


def test_a_name_with_public_v4_and_v6_answers_is_accepted(api, keys):
    (_, key), _ = keys
    assert create(api, key, url="https://dual.example.com:8443/in")[0] == 201


@pytest.mark.parametrize("body", [
    {"url": "https://hooks.example.com/x", "events": []},
    {"url": "https://hooks.example.com/x", "events": ["transfer.settled", "balance.changed"]},
    {"url": "https://hooks.example.com/x", "events": "transfer.settled"},
    {"url": "https://hooks.example.com/x"},
    {"url": "https://hooks.example.com/x", "events": ["transfer.settled"], "secret": "mine"},
])
def test_bad_bodies(api, keys, body):
    (_, key), _ = keys
    status, answer = api.call("POST", "/v1/webhooks", key=key, body=body)
    assert (status, answer["error"]["code"]) == (400, "VALIDATION_ERROR")


def test_subscription_count_is_bounded(api, keys):
    (_, key), _ = keys
    for _ in range(MAX_SUBSCRIPTIONS_PER_OWNER):
        assert create(api, key)[0] == 201
    status, body = create(api, key)
    assert (status, body["error"]["code"]) == (422, "TOO_MANY_WEBHOOKS")


def test_webhook_ids_are_validated(api, keys):
    (_, key), _ = keys
    status, body = api.call("GET", "/v1/webhooks/nope", key=key, route="GET /v1/webhooks/{webhook_id}")
    assert (status, body["error"]["code"]) == (400, "VALIDATION_ERROR")


def test_replay_is_all_or_nothing_and_scoped(api, keys, wsvc, sqs):
    from satflow.app import webhooks

    client, queue, _ = sqs
    (alice, alice_key), (bob, bob_key) = keys
    wsvc.ledger.execute(*_funding(alice))
    t = internal_transfer(transfer_id="trf_api", sender=alice, recipient=bob, amount_msat=500, created_at=NOW,
                          shards=SHARDS)
    out, into = events_for_transfer(t)
    wsvc.ledger.execute(t, webhooks.outbox_items(wsvc, [out, into]))
    _, sub = create(api, bob_key)
    replay = f"/v1/webhooks/{sub['id']}/replay"
    route = "POST /v1/webhooks/{webhook_id}/replay"

    # alice's side of the transfer is not bob's to replay: 404, nothing queued
    status, body = api.call("POST", replay, key=bob_key, route=route,
                            body={"event_ids": [into.event_id, out.event_id]})
    assert (status, body["error"]["code"]) == (404, "WEBHOOK_EVENT_NOT_FOUND")
    assert client.receive_message(QueueUrl=queue).get("Messages") is None

    status, body = api.call("POST", replay, key=bob_key, route=route, body={"event_ids": [into.event_id]})
    assert (status, body) == (202, {"id": sub["id"], "replayed": [into.event_id]})
    (message,) = client.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    sent = json.loads(message["Body"])
    assert (sent["subscription_id"], sent["event"]["id"], sent["event"]["type"]) == (sub["id"], into.event_id,
                                                                                    "transfer.settled")
    status, body = api.call("GET", f"/v1/webhooks/{sub['id']}/deliveries", key=bob_key,
                            route="GET /v1/webhooks/{webhook_id}/deliveries")
    assert status == 200 and [(d["event_id"], d["status"]) for d in body["items"]] == [(into.event_id, "PENDING")]
    # No body: every DEAD delivery (there is none)
    status, body = api.call("POST", replay, key=bob_key, route=route)
    assert (status, body["replayed"]) == (202, [])
    status, body = api.call("POST", replay, key=alice_key, route=route, body={"event_ids": [out.event_id]})
    assert status == 404  # not alice's subscription


def test_admin_subscriptions_receive_every_account(api, keys, wsvc):
    (alice, _), (bob, _) = keys
    status, sub = create(api, ADMIN_KEY)
    assert status == 201
    owners = {s.owner for s in wsvc.webhooks.subscriptions_for(alice)}
    assert owners == {"admin"} and {s.owner for s in wsvc.webhooks.subscriptions_for(bob)} == {"admin"}


def _funding(account_id):
    from satflow.domain.templates import admin_adjustment

    return (admin_adjustment(transfer_id=f"fund-{account_id}", account_id=account_id, amount_msat=10_000,
                             direction="credit", reason="seed", created_at=NOW, shards=SHARDS),)


def test_numeric_host_forms_resolve_to_what_they_mean():
    """getaddrinfo turns "2130706433" or "0x7f.1" into 127.0.0.1: the check runs on the resolved address."""
    from satflow.adapters.webhook_http import WebhookHttp
    from satflow.domain.errors import WebhookUrlRejected
    from satflow.domain.webhooks import check_addresses

    resolver = WebhookHttp()
    for host in ("2130706433", "0x7f.1", "127.1"):
        addresses = resolver.resolve(host, 443)
        assert addresses == ["127.0.0.1"], (host, addresses)
        with pytest.raises(WebhookUrlRejected, match="loopback"):
            check_addresses(host, addresses)
