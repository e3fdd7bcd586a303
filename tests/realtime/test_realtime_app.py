"""Real-time use cases on in-process moto with a recording @connections API: topics, the fan-out's order of
writes (the replay guarantee), gone and throttled connections, connection expiry, the topic bound, and the
handlers on the sample events. The same paths with a real WebSocket client: test_websocket_e2e.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from satflow.domain.realtime import ConnectionGone
from satflow.adapters.dynamodb.realtime import DynamoRealtimeStore
from satflow.app import realtime
from satflow.domain import errors
from satflow.domain.accounts import Account, AccountStatus, Scope, hash_api_key, new_api_key
from satflow.domain.realtime import (
    MAX_TOPICS_PER_CONNECTION,
    connect_credential,
    event_topics,
    parse_subscribe,
    replay_start,
)
from satflow.domain.webhooks import INVOICE_SETTLED, PAYMENT_SUCCEEDED, TRANSFER_SETTLED, OutboxEvent

from tests.conftest import TABLE, build_services

ROOT = Path(__file__).resolve().parents[2]
NOW = "2026-11-21T12:00:00.000Z"
HASH = "ab" * 32


class RecordingConnections:
    """@connections: records posts per connection; scripted gone / throttled connections."""

    def __init__(self) -> None:
        self.posts: dict[str, list[dict]] = {}
        self.gone: set[str] = set()
        self.throttled: set[str] = set()
        self.closed: list[str] = []

    def post(self, connection_id: str, data: bytes) -> None:
        if connection_id in self.gone:
            raise ConnectionGone(connection_id)
        if connection_id in self.throttled:
            raise errors.TransientError("LimitExceededException")
        self.posts.setdefault(connection_id, []).append(json.loads(data))

    def close(self, connection_id: str) -> None:
        self.closed.append(connection_id)

    def events(self, connection_id: str) -> list[dict]:
        return [m for m in self.posts.get(connection_id, []) if "." in m["type"]]


@pytest.fixture
def svc(ddb):
    services = build_services(ddb)
    services.realtime = DynamoRealtimeStore(ddb, TABLE)
    services.connections = RecordingConnections()
    services.unix_clock = lambda: 1_795_000_000
    return services


def _account(svc, account_id: str, scopes=(Scope.READ,)) -> str:
    key = new_api_key()
    svc.accounts.create(Account(account_id, f"ref:{account_id}", 1, AccountStatus.ACTIVE, NOW), hash_api_key(key),
                        key[:8], list(scopes))
    return key


def _event(account_id: str, n: int, event_type: str = TRANSFER_SETTLED, created_at: str = NOW,
           **data) -> OutboxEvent:
    from satflow.domain.webhooks import event_id

    return OutboxEvent(event_id(f"src{n}", event_type, account_id), event_type, account_id, created_at,
                       {"transfer_id": f"trf_{n}", **data})


def _commit(svc, event: OutboxEvent) -> None:
    """The outbox item as the change's transaction writes it (replay anchors are read from it)."""
    svc.ledger.inner._client.transact_write_items(TransactItems=[
        {item.op: item.params} for item in svc.webhooks.outbox_items([event])])


A, B = "acc_" + "a" * 26, "acc_" + "b" * 26


# ------------------------------------------------------------------------------------------------ pure rules
def test_credentials_come_from_the_header_the_subprotocol_or_the_query():
    assert connect_credential({"Authorization": "Bearer sk_x"}, {"key": "sk_y"}).key == "sk_x"
    via_protocol = connect_credential({"Sec-WebSocket-Protocol": "satflow.v1, key.sk_z"}, None)
    assert (via_protocol.key, via_protocol.subprotocol) == ("sk_z", "satflow.v1")
    assert connect_credential({}, {"key": "sk_q"}).key == "sk_q"
    assert connect_credential(None, None).key is None
    with pytest.raises(errors.ValidationError):  # echoing key.<key> would send the key back
        connect_credential({"sec-websocket-protocol": "key.sk_z"}, None)
    assert "sk_" not in repr(via_protocol)


def test_subscribe_requests_are_validated():
    assert parse_subscribe('{"action": "subscribe"}').topic == "*"
    assert parse_subscribe({"action": "subscribe", "invoice": HASH.upper()}).topic == f"invoice:{HASH}"
    assert parse_subscribe({"action": "subscribe", "payment": "trf_" + "a" * 26}).topic == "payment:trf_" + "a" * 26
    for bad in ("nope", [], {"action": "subscribe", "invoice": "xyz"}, {"action": "subscribe", "after": "evt_1"},
                {"action": "subscribe", "invoice": HASH, "payment": "trf_" + "a" * 26}, {"extra": 1}):
        with pytest.raises(errors.ValidationError):
            parse_subscribe(bad)


def test_event_topics():
    invoice = _event(A, 1, INVOICE_SETTLED, payment_hash=HASH)
    payment = _event(A, 2, PAYMENT_SUCCEEDED, payment_id="pay_1", payment_hash=HASH)
    assert event_topics(invoice) == {"*", f"invoice:{HASH}"}
    assert event_topics(payment) == {"*", "payment:pay_1"}  # its hash is the payee's invoice, not a topic here
    assert replay_start("2026-11-21T12:00:00.000Z", 60) == "2026-11-21T11:59:00.000Z"


# ------------------------------------------------------------------------------------------------ connect
def test_connect_needs_an_account_key_with_read_scope(svc):
    key = _account(svc, A)
    assert realtime.connect(svc, "c1", {}, {"key": key}).account_id == A
    assert svc.realtime.connection_account("c1") == A
    no_read = _account(svc, B, scopes=(Scope.SEND,))
    with pytest.raises(errors.Forbidden):
        realtime.connect(svc, "c2", {}, {"key": no_read})
    with pytest.raises(errors.Unauthorized):
        realtime.connect(svc, "c3", {}, {"key": "sk_" + "0" * 43})
    with pytest.raises(errors.Unauthorized):  # not an account key: refused without reading the admin secret
        svc.admin_key = lambda: pytest.fail("the admin key must not be read")
        realtime.connect(svc, "c4", {}, {"key": "admin-test-key-0123456789"})
    assert [svc.realtime.connection_account(c) for c in ("c2", "c3", "c4")] == [None, None, None]


# ------------------------------------------------------------------------------------------------ fan-out
def _connect(svc, account_id: str, connection_id: str, *topics: str) -> None:
    svc.realtime.add_connection(connection_id, account_id, connected_at=NOW, ttl=svc.unix_clock() + 3600)
    for topic in topics:
        assert svc.realtime.add_topic(account_id, connection_id, topic, MAX_TOPICS_PER_CONNECTION) == "added"


def test_fan_out_reaches_the_accounts_connections_by_topic_and_no_other_account(svc):
    _connect(svc, A, "all", "*")
    _connect(svc, A, "inv", f"invoice:{HASH}")
    _connect(svc, A, "idle")  # connected, never subscribed
    _connect(svc, B, "other", "*")
    paid = _event(A, 1, INVOICE_SETTLED, payment_hash=HASH)
    moved = _event(A, 2)
    assert realtime.fan_out(svc, paid).sent == 2
    assert realtime.fan_out(svc, moved).sent == 1
    c = svc.connections
    assert [m["id"] for m in c.events("all")] == [paid.event_id, moved.event_id]
    assert [m["id"] for m in c.events("inv")] == [paid.event_id]
    assert c.events("idle") == [] and c.events("other") == []
    assert c.events("all")[0] == paid.payload()  # the webhook envelope


def test_gone_connections_are_deleted_and_throttled_ones_do_not_block_the_others(svc):
    _connect(svc, A, "gone", "*")
    _connect(svc, A, "slow", "*")
    _connect(svc, A, "fine", "*")
    svc.connections.gone.add("gone")
    svc.connections.throttled.add("slow")
    result = realtime.fan_out(svc, _event(A, 1))
    assert (result.sent, result.gone, result.failed) == (1, 1, 1)
    assert svc.realtime.connection_account("gone") is None
    assert svc.realtime.connection_account("slow") == A  # kept: a throttled connection is not gone
    assert [c for c, _ in svc.realtime.connections_for(A, svc.unix_clock())] == ["fine", "slow"]


def test_expired_connections_are_skipped_before_ttl_deletes_them(svc):
    svc.realtime.add_connection("old", A, connected_at=NOW, ttl=svc.unix_clock() - 1)
    svc.realtime.add_topic(A, "old", "*", MAX_TOPICS_PER_CONNECTION)
    assert realtime.fan_out(svc, _event(A, 1)).sent == 0 and svc.connections.posts == {}


def test_an_event_fanned_out_while_the_subscription_is_stored_arrives_live_or_by_replay(svc):
    """The race the write order closes: the fan-out reads the connections just BEFORE the subscription is
    stored, so it pushes nothing; the subscribe that follows must replay the event. It does because the fan-out
    wrote the feed item before reading the connections (written after, the replay would miss it)."""
    _connect(svc, A, "c1", "*")
    seen = _event(A, 0, created_at="2026-11-21T11:59:59.000Z")
    _commit(svc, seen)
    realtime.fan_out(svc, seen)
    svc.connections.posts.clear()
    svc.realtime.remove_connection("c1")  # the client dropped and is reconnecting as "c2"
    _connect(svc, A, "c2")

    racing = _event(A, 1)
    _commit(svc, racing)
    store, inner_connections_for = svc.realtime, svc.realtime.connections_for

    def connections_then_subscribe(account_id, now):
        found = inner_connections_for(account_id, now)  # c2 has no topic yet: nothing to push
        store.connections_for = inner_connections_for
        realtime.subscribe(svc, "c2", {"action": "subscribe", "after": seen.event_id})
        return found

    store.connections_for = connections_then_subscribe
    assert realtime.fan_out(svc, racing).sent == 0
    assert [m["id"] for m in svc.connections.events("c2")] == [racing.event_id]


def test_replay_is_bounded_filtered_by_topic_and_limited_to_the_owner(svc):
    _connect(svc, A, "c1")
    anchor = _event(A, 0, created_at="2026-11-21T11:00:00.000Z")
    _commit(svc, anchor)
    realtime.fan_out(svc, anchor)
    later = [_event(A, n, INVOICE_SETTLED, created_at=f"2026-11-21T11:0{n}:00.000Z",
                    payment_hash=HASH if n == 3 else "cd" * 32) for n in range(1, 5)]
    for e in later:
        realtime.fan_out(svc, e)
    realtime.subscribe(svc, "c1", {"action": "subscribe", "invoice": HASH, "after": anchor.event_id})
    assert [m["id"] for m in svc.connections.events("c1")] == [later[2].event_id]
    assert svc.connections.posts["c1"][-1] == {"type": "subscribed", "topic": f"invoice:{HASH}",
                                               "replay": "complete", "replayed": 1}
    _connect(svc, B, "snoop")
    realtime.subscribe(svc, "snoop", {"action": "subscribe", "after": anchor.event_id})
    assert svc.connections.posts["snoop"] == [{"type": "subscribed", "topic": "*", "replay": "unavailable",
                                               "replayed": 0}]


def test_replay_stops_at_the_bound_and_says_truncated(svc, monkeypatch):
    monkeypatch.setattr(realtime, "MAX_REPLAY_EVENTS", 2)
    _connect(svc, A, "c1")
    anchor = _event(A, 0, created_at="2026-11-21T11:00:00.000Z")
    _commit(svc, anchor)
    realtime.fan_out(svc, anchor)
    for n in range(1, 5):
        realtime.fan_out(svc, _event(A, n, created_at=f"2026-11-21T11:0{n}:00.000Z"))
    result = realtime.subscribe(svc, "c1", {"action": "subscribe", "after": anchor.event_id})
    assert (result.replay, result.replayed) == ("truncated", 1)  # 2 read: the anchor itself and one more


def test_topics_are_bounded_per_connection(svc):
    _connect(svc, A, "c1")
    for n in range(MAX_TOPICS_PER_CONNECTION):
        realtime.subscribe(svc, "c1", {"action": "subscribe", "invoice": f"{n:064x}"})
    realtime.subscribe(svc, "c1", {"action": "subscribe", "invoice": f"{0:064x}"})  # already there: fine
    with pytest.raises(errors.ValidationError):
        realtime.subscribe(svc, "c1", {"action": "subscribe", "invoice": "f" * 64})
    assert svc.connections.posts["c1"][-1]["type"] == "error"


def test_subscribe_on_an_unknown_connection_closes_it(svc):
    assert realtime.subscribe(svc, "ghost", {"action": "subscribe"}).replay == "gone"
    assert svc.connections.closed == ["ghost"]


# ------------------------------------------------------------------------------------------------ handlers
class Context:
    function_name = "WebSocketFunction"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:WebSocketFunction"
    aws_request_id = "req-1"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 10_000


def test_the_handlers_on_the_sample_events(svc):
    from satflow import bootstrap

    from tests.handlers.conftest import load_handler_module

    routes = load_handler_module("websocket", "websocket_app_under_test")
    fanout = load_handler_module("websocket_fanout", "websocket_fanout_app_under_test")
    samples = ROOT / "events"
    bootstrap.override(svc)
    try:
        connect = json.loads((samples / "websocket" / "connect_subprotocol_key.json").read_text())
        assert routes.lambda_handler(connect, Context())["statusCode"] == 401  # the placeholder key is unknown
        key = _account(svc, A)
        protocol = f"satflow.v1, key.{key}"
        connect["headers"]["Sec-WebSocket-Protocol"] = protocol
        accepted = routes.lambda_handler(connect, Context())
        assert accepted == {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": "satflow.v1"}}
        connection_id = connect["requestContext"]["connectionId"]
        subscribe = json.loads((samples / "websocket" / "subscribe_all.json").read_text())
        assert routes.lambda_handler(subscribe, Context()) == {"statusCode": 200}

        stream = json.loads((samples / "websocket_fanout" / "outbox_inserts.json").read_text())
        for record in stream["Records"]:  # the sample events belong to acc_aaa...: this account
            record["dynamodb"]["NewImage"]["account_id"]["S"] = A
        assert fanout.lambda_handler(stream, Context()) == {"batchItemFailures": []}
        assert len(svc.connections.events(connection_id)) == len(stream["Records"])

        disconnect = json.loads((samples / "websocket" / "disconnect.json").read_text())
        assert routes.lambda_handler(disconnect, Context()) == {"statusCode": 200}
        assert svc.realtime.connection_account(connection_id) is None
    finally:
        bootstrap.override(None)


def test_the_connect_handler_never_logs_its_event_even_when_powertools_is_told_to(svc, monkeypatch, caplog, capsys):
    """POWERTOOLS_LOGGER_LOG_EVENT=true makes Powertools log every incoming event; the $connect event carries the
    API key (query string or Sec-WebSocket-Protocol), so the handler pins log_event=False."""
    import logging

    from satflow import bootstrap

    from tests.handlers.conftest import load_handler_module

    monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", "true")
    routes = load_handler_module("websocket", "websocket_app_log_event_under_test")
    key = _account(svc, A)
    connect = json.loads((ROOT / "events" / "websocket" / "connect_query_key.json").read_text())
    connect["queryStringParameters"] = {"key": key}
    connect["multiValueQueryStringParameters"] = {"key": [key]}
    caplog.set_level(logging.DEBUG)
    bootstrap.override(svc)
    try:
        assert routes.lambda_handler(connect, Context())["statusCode"] == 200
    finally:
        bootstrap.override(None)
    out, err = capsys.readouterr()
    logged = caplog.text + out + err
    assert "websocket connected" in logged
    assert key not in logged
