"""The WebSocket API end to end in the local runtime, with a real WebSocket client: connect with an account key,
subscribe, and receive each committed event of the account exactly once (and none of another account's)."""
from __future__ import annotations

import time

import pytest

from .conftest import Client, call, fan_out, new_account, subscribed_client, transfer, ws_url


def test_a_transfer_reaches_the_recipient_once_and_nobody_else(runtime):
    payer = new_account(runtime, "payer", fund_msat=100_000)
    owner, other = new_account(runtime, "owner"), new_account(runtime, "other")
    mine, theirs = subscribed_client(runtime, owner), subscribed_client(runtime, other)
    try:
        moved = transfer(runtime, payer, owner, 12_345)
        fan_out(runtime)
        got = mine.drain()
        assert [(m["type"], m["data"]["transfer_id"], m["data"]["direction"], m["account_id"]) for m in got] == [
            ("transfer.settled", moved["transfer_id"], "in", owner["account_id"])]
        assert set(got[0]) == {"id", "type", "created_at", "account_id", "data"}
        assert theirs.drain(0.2) == []
    finally:
        mine.close()
        theirs.close()


def _events(messages: list[dict]) -> list[dict]:
    return [m for m in messages if "." in str(m.get("type"))]


def _settle_invoice(runtime, account: dict, amount_msat: int) -> dict:
    from satflow_dev.runtime.sqs_poller import SqsPoller

    status, invoice = call(runtime, "POST", "/v1/invoices", key=account["api_key"],
                           body={"amount_msat": amount_msat, "memo": "ws"})
    assert status == 201, invoice
    status, paid = call(runtime, "POST", "/_sim/lightning/pay", body={"payment_request": invoice["payment_request"]})
    assert status == 200, paid
    runtime.service("schedules").fire("MonitorFunction", job="invoice_catchup")
    batches = runtime.service(SqsPoller).drain("InvoiceEventsQueue")
    assert batches and all(b.failed == [] and b.error is None for b in batches)
    return invoice


def _pay_external(runtime, account: dict, amount_msat: int) -> dict:
    status, external = call(runtime, "POST", "/_sim/lightning/invoices", body={"amount_msat": amount_msat})
    assert status == 201, external
    status, payment = call(runtime, "POST", "/v1/payments", key=account["api_key"],
                           headers={"Idempotency-Key": f"ws-pay-{external['payment_hash'][:16]}"},
                           body={"payment_request": external["payment_request"]})
    assert status == 202, payment
    deadline = time.monotonic() + 30
    while payment["status"] not in ("SUCCEEDED", "FAILED") and time.monotonic() < deadline:
        time.sleep(0.1)
        _, payment = call(runtime, "GET", f"/v1/payments/{payment['payment_id']}", key=account["api_key"])
    assert payment["status"] == "SUCCEEDED", payment
    return payment


def _confirm_deposit(runtime, account: dict, amount_sat: int) -> dict:
    status, address = call(runtime, "POST", "/v1/addresses", key=account["api_key"])
    assert status == 201, address
    status, sent = call(runtime, "POST", "/_sim/chain/send", body={"address": address["address"],
                                                                   "amount_sat": amount_sat})
    assert status == 200, sent
    status, mined = call(runtime, "POST", "/_sim/chain/mine", body={"blocks": 1})
    assert status == 200, mined
    return sent


def test_paid_invoice_settled_payment_confirmed_deposit_and_transfer_each_reach_the_owner_once(runtime):
    owner, other = new_account(runtime, "owner4"), new_account(runtime, "other4")
    payer = new_account(runtime, "payer4", fund_msat=100_000)
    mine, theirs = subscribed_client(runtime, owner), subscribed_client(runtime, other)
    try:
        invoice = _settle_invoice(runtime, owner, 60_000)
        payment = _pay_external(runtime, owner, 20_000)
        _confirm_deposit(runtime, owner, 50_000)
        moved = transfer(runtime, payer, owner, 7_000)
        fan_out(runtime)
        fan_out(runtime)  # a second pass finds nothing new: nothing is pushed twice
        got = _events(mine.drain(1.0))
        by_type: dict[str, list[dict]] = {}
        for message in got:
            by_type.setdefault(message["type"], []).append(message)
        assert [m["data"]["payment_hash"] for m in by_type["invoice.settled"]] == [invoice["payment_hash"]]
        assert [m["data"]["payment_id"] for m in by_type["payment.succeeded"]] == [payment["payment_id"]]
        assert [m["data"]["amount_sat"] for m in by_type["deposit.confirmed"]] == [50_000]
        assert [m["data"]["transfer_id"] for m in by_type["transfer.settled"]] == [moved["transfer_id"]]
        assert len({m["id"] for m in got}) == len(got)  # exactly once: no id twice
        assert {m["account_id"] for m in got} == {owner["account_id"]}
        assert theirs.drain(0.2) == []  # never another account's
    finally:
        mine.close()
        theirs.close()


def test_subscribing_to_one_invoice_receives_only_that_invoice(runtime):
    owner = new_account(runtime, "one-invoice")
    status, invoice = call(runtime, "POST", "/v1/invoices", key=owner["api_key"], body={"amount_msat": 5_000})
    assert status == 201, invoice
    watcher = subscribed_client(runtime, owner, invoice=invoice["payment_hash"])
    try:
        _settle_invoice(runtime, owner, 6_000)  # another invoice of the same account
        status, paid = call(runtime, "POST", "/_sim/lightning/pay",
                            body={"payment_request": invoice["payment_request"]})
        assert status == 200, paid
        runtime.service("schedules").fire("MonitorFunction", job="invoice_catchup")
        from satflow_dev.runtime.sqs_poller import SqsPoller

        runtime.service(SqsPoller).drain("InvoiceEventsQueue")
        fan_out(runtime)
        got = _events(watcher.drain())
        assert [(m["type"], m["data"]["payment_hash"]) for m in got] == [("invoice.settled", invoice["payment_hash"])]
    finally:
        watcher.close()


@pytest.mark.parametrize("how", ["query", "subprotocol", "header"])
def test_each_key_form_connects_and_the_key_is_never_logged(runtime, how, caplog, capfd):
    import logging

    account = new_account(runtime, f"form-{how}")
    key = account["api_key"]
    caplog.set_level(logging.DEBUG)
    url = ws_url(runtime)
    if how == "query":
        client = Client(url + f"?key={key}")
    elif how == "subprotocol":
        client = Client(url, subprotocols=["satflow.v1", f"key.{key}"])
        assert client.socket.subprotocol == "satflow.v1"  # the key's entry is never echoed
    else:
        client = Client(url, additional_headers={"Authorization": f"Bearer {key}"})
    try:
        client.send({"action": "subscribe"})
        assert client.next()["type"] == "subscribed"
    finally:
        client.close()
    out, err = capfd.readouterr()
    # Everything the server side logged, at DEBUG (the test's own client library logs its request line: not ours).
    server_logs = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records
                            if not r.name.startswith("websockets.client"))
    assert server_logs and key not in server_logs and key not in out and key not in err
    assert "websocket connected" in server_logs  # the handler did log the connection, without the key


@pytest.mark.parametrize("key_of", ["unknown", "admin", "none", "no_read_scope_subprotocol"])
def test_a_bad_key_is_refused_at_connect(runtime, key_of):
    from websockets.exceptions import InvalidStatus

    url = ws_url(runtime)
    kwargs: dict = {}
    if key_of == "unknown":
        url += "?key=sk_" + "x" * 43
    elif key_of == "admin":
        url += f"?key={runtime.admin_key}"
    elif key_of == "no_read_scope_subprotocol":  # the key's subprotocol entry without satflow.v1
        kwargs["subprotocols"] = [f"key.{new_account(runtime, 'nosp')['api_key']}"]
    before = set(runtime.service("websocket").connection_ids())
    with pytest.raises(InvalidStatus) as refused:
        Client(url, **kwargs)
    expected = 400 if key_of == "no_read_scope_subprotocol" else 401
    assert refused.value.response.status_code == expected
    # Nothing was registered (earlier tests' connections may still be closing, so compare additions only).
    assert set(runtime.service("websocket").connection_ids()) - before == set()


def test_reconnect_with_the_last_id_replays_the_gap(runtime):
    payer = new_account(runtime, "gap-payer", fund_msat=100_000)
    owner = new_account(runtime, "gap-owner")
    client = subscribed_client(runtime, owner)
    first = transfer(runtime, payer, owner, 1_000)
    fan_out(runtime)
    (seen,) = _events(client.drain())
    assert seen["data"]["transfer_id"] == first["transfer_id"]
    client.close()

    missed = [transfer(runtime, payer, owner, 2_000 + i)["transfer_id"] for i in range(3)]
    fan_out(runtime)  # pushed to nobody: the owner is offline
    again = Client(ws_url(runtime, owner["api_key"]))
    try:
        again.send({"action": "subscribe", "after": seen["id"]})
        got = again.until("subscribed")
        replayed, ack = got[:-1], got[-1]
        assert [m["data"]["transfer_id"] for m in replayed] == missed  # the gap, oldest first, without the last seen
        assert (ack["replay"], ack["replayed"], ack["topic"]) == ("complete", 3, "*")
        # Live again: the next event arrives once.
        later = transfer(runtime, payer, owner, 9_000)
        fan_out(runtime)
        assert [m["data"]["transfer_id"] for m in _events(again.drain())] == [later["transfer_id"]]
    finally:
        again.close()


def test_replay_after_another_accounts_event_is_unavailable(runtime):
    payer = new_account(runtime, "gap2-payer", fund_msat=10_000)
    victim, snoop = new_account(runtime, "gap2-victim"), new_account(runtime, "gap2-snoop")
    watcher = subscribed_client(runtime, victim)
    transfer(runtime, payer, victim, 1_000)
    transfer(runtime, payer, victim, 1_001)
    fan_out(runtime)
    first, _second = _events(watcher.drain())
    watcher.close()
    client = Client(ws_url(runtime, snoop["api_key"]))
    try:
        client.send({"action": "subscribe", "after": first["id"]})
        (ack,) = client.until("subscribed")
        assert (ack["replay"], ack["replayed"]) == ("unavailable", 0)
    finally:
        client.close()


def test_a_gone_connection_is_removed(runtime):
    """A connection whose $disconnect never ran (best effort on AWS too): the fan-out's post answers 410, and its
    records are deleted."""
    import boto3

    from satflow.adapters.dynamodb.realtime import DynamoRealtimeStore, account_connections_pk

    payer = new_account(runtime, "gone-payer", fund_msat=10_000)
    owner = new_account(runtime, "gone-owner")
    dynamodb = boto3.client("dynamodb", endpoint_url=runtime.moto_url, region_name="us-east-1")
    table = next(t.name for t in runtime.model.tables)
    store = DynamoRealtimeStore(dynamodb, table)
    stale = "c3RhbGUvY29ubg="  # base64 with "/" and padding: the id must survive URL encoding
    store.add_connection(stale, owner["account_id"], connected_at="2026-01-01T00:00:00.000Z",
                         ttl=int(time.time()) + 3600)
    store.add_topic(owner["account_id"], stale, "*", 20)
    live = subscribed_client(runtime, owner)
    try:
        management = boto3.client("apigatewaymanagementapi", endpoint_url=runtime.moto_url, region_name="us-east-1")
        with pytest.raises(management.exceptions.GoneException):
            management.post_to_connection(ConnectionId=stale, Data=b"{}")
        transfer(runtime, payer, owner, 500)
        fan_out(runtime)
        assert len(_events(live.drain())) == 1  # the open connection still got it
        assert store.connection_account(stale) is None
        left = dynamodb.query(TableName=table, KeyConditionExpression="pk = :pk",
                              ExpressionAttributeValues={":pk": {"S": account_connections_pk(owner["account_id"])}},
                              ConsistentRead=True)["Items"]
        assert [i["connection_id"]["S"] for i in left] != [] and stale not in {i["connection_id"]["S"] for i in left}
    finally:
        live.close()


def test_connections_api_semantics_for_an_open_then_closed_connection(runtime):
    import boto3

    owner = new_account(runtime, "mgmt")
    client = subscribed_client(runtime, owner)
    gateway = runtime.service("websocket")
    (connection_id,) = [c for c in gateway.connection_ids() if c not in _others(runtime, owner)]
    management = boto3.client("apigatewaymanagementapi", endpoint_url=runtime.moto_url, region_name="us-east-1")
    info = management.get_connection(ConnectionId=connection_id)
    assert info["Identity"]["SourceIp"] == "127.0.0.1"
    management.post_to_connection(ConnectionId=connection_id, Data=b'{"type":"hello"}')
    assert client.next()["type"] == "hello"
    management.delete_connection(ConnectionId=connection_id)  # closes it; $disconnect removes its records
    client._reader.join(timeout=5)
    with pytest.raises(management.exceptions.GoneException):
        management.get_connection(ConnectionId=connection_id)
    with pytest.raises(management.exceptions.GoneException):
        management.post_to_connection(ConnectionId=connection_id, Data=b"{}")
    deadline = time.monotonic() + 5
    from satflow.adapters.dynamodb.realtime import DynamoRealtimeStore

    store = DynamoRealtimeStore(boto3.client("dynamodb", endpoint_url=runtime.moto_url, region_name="us-east-1"),
                                next(t.name for t in runtime.model.tables))
    while store.connection_account(connection_id) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.connection_account(connection_id) is None


def _others(runtime, owner) -> set[str]:
    """Connection ids that belong to other accounts (earlier tests' clients may still be closing)."""
    import boto3

    from satflow.adapters.dynamodb.realtime import DynamoRealtimeStore

    store = DynamoRealtimeStore(boto3.client("dynamodb", endpoint_url=runtime.moto_url, region_name="us-east-1"),
                                next(t.name for t in runtime.model.tables))
    return {c for c in runtime.service("websocket").connection_ids()
            if store.connection_account(c) != owner["account_id"]}


def test_route_selection_answers_unknown_actions_like_api_gateway(runtime):
    owner = new_account(runtime, "routes")
    client = Client(ws_url(runtime, owner["api_key"]))
    try:
        client.send({"action": "nope"})
        message = client.next()
        assert message["message"] == "Forbidden" and message["connectionId"]
        client.socket.send("not json")
        assert client.next()["message"] == "Forbidden"
        client.send({"action": "subscribe", "invoice": "xyz"})
        error = client.next()
        assert (error["type"], error["code"]) == ("error", "VALIDATION_ERROR")
    finally:
        client.close()
