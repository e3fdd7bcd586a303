"""The real template in the local runtime with its WebSocket API, driven by a real WebSocket client (the
``websockets`` library's sync client). Pollers run on demand (background=False) so each test decides when the
outbox stream reaches the fan-out."""
from __future__ import annotations

import json
import queue
import threading
import uuid
from pathlib import Path

import pytest
from tests.runtime_http import call, fresh_stack_name

ROOT = Path(__file__).resolve().parents[2]
REAL_TEMPLATE = ROOT / "template.yaml"


@pytest.fixture(scope="module")
def runtime():
    from satflow_dev.runtime.local_runtime import LocalRuntime
    from satflow_dev.runtime.services import (
        chain_service_factory,
        lightning_service_factory,
        schedule_runner_factory,
        websocket_gateway_factory,
    )
    from satflow_dev.runtime.sqs_poller import SqsPoller
    from satflow_dev.runtime.stream_poller import StreamPoller

    factories = [lightning_service_factory, chain_service_factory,
                 lambda rt: SqsPoller.from_runtime(rt, background=False),
                 lambda rt: StreamPoller.from_runtime(rt, background=False), schedule_runner_factory,
                 websocket_gateway_factory]
    # In-process handlers: test_each_key_form_connects_and_the_key_is_never_logged reads the handlers' log records
    # with caplog (in worker processes they go to the worker's stdout; the other tests pass either way).
    with LocalRuntime(REAL_TEMPLATE, port=0, service_factories=factories, write_admin_key_file=False,
                      stack_name=fresh_stack_name(),
                      environ={"SATFLOW_SCHEDULE_SCALE": "0"}, invocation="in-process") as rt:
        yield rt




def new_account(runtime, label: str, fund_msat: int = 0) -> dict:
    status, account = call(runtime, "POST", "/v1/accounts", key=runtime.admin_key,
                           body={"external_ref": f"ws:{label}-{uuid.uuid4().hex[:8]}", "tier": 1})
    assert status == 201, account
    if fund_msat:
        status, funded = call(runtime, "POST", "/v1/admin/adjustments", key=runtime.admin_key,
                              headers={"Idempotency-Key": f"fund-{account['account_id']}"},
                              body={"account_id": account["account_id"], "amount_msat": fund_msat,
                                    "direction": "credit", "reason": "ws test"})
        assert status == 201, funded
    return account


def transfer(runtime, payer: dict, to: dict, amount_msat: int) -> dict:
    status, moved = call(runtime, "POST", "/v1/transfers", key=payer["api_key"],
                         headers={"Idempotency-Key": uuid.uuid4().hex},
                         body={"to": to["account_id"], "amount_msat": amount_msat})
    assert status == 201, moved
    return moved


def fan_out(runtime) -> None:
    """Run the stream consumer once over everything committed so far (both outbox consumers, like AWS)."""
    from satflow_dev.runtime.stream_poller import StreamPoller

    poller = runtime.service(StreamPoller)
    for name in ("WebSocketFanoutFunction", "WebhookRelayFunction"):
        results = poller.drain(name)
        assert all(r.error is None and r.failed_from is None for r in results), results


class Client:
    """A real WebSocket client whose received messages are collected by a reader thread."""

    def __init__(self, url: str, **kwargs) -> None:
        from websockets.sync.client import connect

        self.socket = connect(url, open_timeout=30, close_timeout=2, **kwargs)
        self.messages: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for message in self.socket:
                self.messages.put(json.loads(message))
        except ConnectionClosed:
            pass

    def send(self, payload: dict) -> None:
        self.socket.send(json.dumps(payload))

    def next(self, timeout: float = 10) -> dict:
        return self.messages.get(timeout=timeout)

    def until(self, kind: str, timeout: float = 10) -> list[dict]:
        """Messages up to and including the first of type ``kind``."""
        got = []
        while True:
            message = self.next(timeout)
            got.append(message)
            if message.get("type") == kind:
                return got

    def drain(self, quiet_s: float = 0.5) -> list[dict]:
        got = []
        while True:
            try:
                got.append(self.messages.get(timeout=quiet_s))
            except queue.Empty:
                return got

    def close(self) -> None:
        self.socket.close()
        self._reader.join(timeout=5)


def ws_url(runtime, key: str | None = None) -> str:
    gateway = runtime.service("websocket")
    return gateway.url + (f"?key={key}" if key else "")


def subscribed_client(runtime, account: dict, **subscribe) -> Client:
    client = Client(ws_url(runtime, account["api_key"]))
    client.send({"action": "subscribe", **subscribe})
    ack = client.next()
    assert ack["type"] == "subscribed", ack
    return client
