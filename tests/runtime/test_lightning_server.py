"""The Lightning simulator over real HTTP: the secret the functions read, our LND adapter against it, streams
that deliver lines as they happen, stalls that look like a silent node, and the /_sim/lightning routes."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import httpx
import pytest

from satflow.adapters.lnd import LndRestClient
from satflow.domain.lightning import InvoiceState, PaymentFailed, PaymentInFlight, PaymentSucceeded, PaymentUnknown
from satflow_dev.runtime.lightning_server import LightningService
from satflow_dev.runtime.resources import aws_client

FEE_LIMIT = 10_000


@pytest.fixture(scope="module")
def service(services_runtime) -> LightningService:
    return services_runtime.service("lightning")


@pytest.fixture(scope="module")
def secret(services_runtime, service) -> dict:
    name = services_runtime.model.function("WorkerFunction").env["SATFLOW_LND_SECRET_ID"]
    return json.loads(aws_client("secretsmanager", services_runtime.moto_url)
                      .get_secret_value(SecretId=name)["SecretString"])


@pytest.fixture
def client(secret):
    with LndRestClient.from_secret(secret, timeout_s=0.5) as lnd:
        yield lnd


def _sim_call(runtime, method: str, path: str, body=None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(runtime.url + path, method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _wait_for(condition, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.01)


def test_the_secret_points_at_the_served_simulator(secret, service):
    assert secret == {"url": service.url, "macaroon_hex": service.simulator.macaroon_hex, "tls_cert_pem": None}
    assert secret["url"].startswith("http://127.0.0.1:")


def test_our_adapter_talks_to_it_over_http(client, service):
    assert client.get_info().identity_pubkey == service.simulator.our_node.pubkey_hex
    added = client.add_invoice(21_000, memo="over http")
    invoice = client.lookup_invoice(added.payment_hash_hex)
    assert (invoice.state, invoice.value_msat, invoice.memo) == (InvoiceState.OPEN, 21_000, "over http")


def test_the_macaroon_is_checked(service):
    response = httpx.get(service.url + "/v1/getinfo", headers={"Grpc-Metadata-macaroon": "00"})
    assert response.status_code == 500 and "verification failed" in response.json()["message"]


def test_subscription_lines_arrive_while_the_stream_is_open(services_runtime, service, secret):
    sim = service.simulator
    headers = {"Grpc-Metadata-macaroon": secret["macaroon_hex"]}
    lines: list[dict] = []
    finished = threading.Event()

    def subscriber() -> None:
        with httpx.Client(timeout=5) as http, http.stream("GET", service.url + "/v1/invoices/subscribe",
                                                          headers=headers) as response:
            assert response.headers["transfer-encoding"] == "chunked"
            for line in response.iter_lines():
                lines.append(json.loads(line)["result"])
                if len(lines) == 2:
                    break
        finished.set()

    before = sim.invoice_subscribers
    thread = threading.Thread(target=subscriber, daemon=True)
    thread.start()
    _wait_for(lambda: sim.invoice_subscribers == before + 1)
    added = httpx.post(service.url + "/v1/invoices", headers=headers, json={"value_msat": "5000", "memo": "live"})
    _wait_for(lambda: len(lines) == 1)
    assert lines[0]["state"] == "OPEN" and lines[0]["memo"] == "live"
    assert not finished.is_set()  # the first event came through a stream that is still open

    status, paid = _sim_call(services_runtime, "POST", "/_sim/lightning/pay",
                             {"payment_request": added.json()["payment_request"]})
    assert status == 200 and len(paid["preimage"]) == 64
    assert finished.wait(3)
    assert lines[1]["state"] == "SETTLED" and lines[1]["amt_paid_msat"] == "5000"
    # The client went away: the server notices at once, the simulator's subscription ends at its next event.
    _wait_for(lambda: service.server.open_streams == 0)
    httpx.post(service.url + "/v1/invoices", headers=headers, json={"value_msat": "1", "memo": "wake"})
    _wait_for(lambda: sim.invoice_subscribers == before)


def test_an_idle_subscription_is_a_silent_node(client):
    started = time.monotonic()
    assert list(client.subscribe_invoices(add_index=0, idle_timeout_s=0.3)) == []  # no event: a quiet read timeout
    assert 0.25 < time.monotonic() - started < 2


def test_payments_scripted_through_the_dev_routes(services_runtime, client, service):
    status, external = _sim_call(services_runtime, "POST", "/_sim/lightning/invoices",
                                 {"amount_msat": 40_000, "memo": "coffee"})
    assert status == 201 and external["payment_request"].startswith("lnbcrt")
    status, scripted = _sim_call(services_runtime, "POST", "/_sim/lightning/script",
                                 {"outcome": "hold", "payment_hash": external["payment_hash"]})
    assert (status, scripted) == (200, {"scripted": external["payment_hash"]})

    started = time.monotonic()
    outcome = client.send_payment(external["payment_request"], fee_limit_msat=FEE_LIMIT, wait_s=0.2)
    assert isinstance(outcome, PaymentInFlight) and time.monotonic() - started < 2

    status, resolved = _sim_call(services_runtime, "POST", "/_sim/lightning/resolve",
                                 {"payment_hash": external["payment_hash"], "status": "SUCCEEDED"})
    assert (status, resolved["status"]) == (200, "SUCCEEDED")
    tracked = client.track_payment(external["payment_hash"])
    assert isinstance(tracked, PaymentSucceeded) and tracked.amount_msat == 40_000
    status, again = _sim_call(services_runtime, "POST", "/_sim/lightning/resolve",
                              {"payment_hash": external["payment_hash"]})
    assert (status, again["error"]["code"]) == (409, "NOT_IN_FLIGHT")

    _, other = _sim_call(services_runtime, "POST", "/_sim/lightning/invoices", {"amount_msat": None})
    _sim_call(services_runtime, "POST", "/_sim/lightning/script",
              {"outcome": "fail", "reason": "INSUFFICIENT_BALANCE", "payment_hash": other["payment_hash"]})
    failed = client.send_payment(other["payment_request"], fee_limit_msat=FEE_LIMIT, amount_msat=7_000)
    assert isinstance(failed, PaymentFailed) and failed.detail == "FAILURE_REASON_INSUFFICIENT_BALANCE"


def test_a_scripted_send_timeout_is_a_read_timeout_for_the_client(services_runtime, client, service):
    _, external = _sim_call(services_runtime, "POST", "/_sim/lightning/invoices", {"amount_msat": 3_000})
    _sim_call(services_runtime, "POST", "/_sim/lightning/script",
              {"outcome": "succeed", "send_timeout": "after_node", "payment_hash": external["payment_hash"]})
    started = time.monotonic()
    outcome = client.send_payment(external["payment_request"], fee_limit_msat=FEE_LIMIT, wait_s=0)
    assert isinstance(outcome, PaymentUnknown) and 0.4 < time.monotonic() - started < 2
    # The node did take the payment: tracking finds it.
    assert isinstance(client.track_payment(external["payment_hash"]), PaymentSucceeded)


def test_dev_route_errors(services_runtime, client):
    def call(method, path, body=None):
        status, answer = _sim_call(services_runtime, method, path, body)
        return status, answer.get("error", {}).get("code")

    assert call("POST", "/_sim/lightning/pay", {"payment_request": "lnbcrt1garbage"}) == (422, "PAYMENT_REJECTED")
    ours = client.add_invoice(1_000)
    assert call("POST", "/_sim/lightning/pay", {"payment_request": ours.payment_request, "amount_msat": 999}) == (
        422, "PAYMENT_REJECTED")  # under the invoice's amount
    assert call("POST", "/_sim/lightning/pay", {"payment_request": ours.payment_request})[0] == 200
    assert call("POST", "/_sim/lightning/pay", {"payment_request": ours.payment_request}) == (
        422, "PAYMENT_REJECTED")  # already settled
    assert call("POST", "/_sim/lightning/pay", {}) == (400, "VALIDATION_ERROR")
    assert call("POST", "/_sim/lightning/invoices", {"amount_msat": "100"}) == (400, "VALIDATION_ERROR")
    assert call("POST", "/_sim/lightning/invoices", {"memo": "no amount"}) == (400, "VALIDATION_ERROR")
    assert call("POST", "/_sim/lightning/script", {"outcome": "fail", "reason": "BAD"}) == (400, "VALIDATION_ERROR")
    assert call("POST", "/_sim/lightning/script", {"outcome": "maybe"}) == (400, "VALIDATION_ERROR")
    assert call("GET", "/_sim/lightning/pay") == (405, "METHOD_NOT_ALLOWED")
    assert call("POST", "/_sim/lightning/nothing", {}) == (404, "NOT_FOUND")
    status, state = _sim_call(services_runtime, "GET", "/_sim/lightning")
    assert status == 200 and state["url"].startswith("http://127.0.0.1:") and state["balance_msat"] > 0
