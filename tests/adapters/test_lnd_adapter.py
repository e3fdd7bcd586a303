"""LND REST adapter against recorded LND JSON (tests/adapters/fixtures/lnd), served through httpx.MockTransport.

Each case checks both sides: the domain result AND the request we sent (method, path, encodings, macaroon
header, JSON body with int64 as strings, bounded timeouts).
"""
from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from satflow.adapters import lnd_errors
from satflow.adapters.lnd import MACAROON_HEADER, LndRestClient
from satflow.domain.errors import TransientError, ValidationError
from satflow.domain.lightning import (
    FailureReason,
    InvalidPaymentRequest,
    InvoiceState,
    LightningInvoiceAlreadySettled,
    LightningInvoiceNotFound,
    LightningNodeError,
    LightningNodeUnavailable,
    PaymentAlreadyPaid,
    PaymentFailed,
    PaymentInFlight,
    PaymentNotFound,
    PaymentRejected,
    PaymentSucceeded,
    PaymentUnknown,
    RejectionReason,
)

FIXTURES = Path(__file__).parent / "fixtures" / "lnd"
BASE_URL = "https://lnd.internal:8080"
MACAROON = "0201036c6e6402f801030a1022" + "ab" * 40


def fixture(name: str):
    return json.loads((FIXTURES / name).read_text())


ERRORS = fixture("errors.json")
SEND_OK = fixture("router_send_succeeded.json")
PAYMENT = SEND_OK[-1]["result"]
PAY_REQ, PAY_HASH, PAY_PREIMAGE = PAYMENT["payment_request"], PAYMENT["payment_hash"], PAYMENT["payment_preimage"]


class StallingStream(httpx.SyncByteStream):
    """Stream messages, then behave as a node that says nothing more: the client's read times out."""

    def __init__(self, messages: list, request: httpx.Request, stall: bool = True) -> None:
        self.messages, self.request, self.stall = messages, request, stall

    def __iter__(self) -> Iterator[bytes]:
        for message in self.messages:
            yield json.dumps(message).encode() + b"\n"
        if self.stall:
            raise httpx.ReadTimeout("read timed out", request=self.request)


class Node:
    """A MockTransport answering with ``respond`` and recording every request it saw."""

    def __init__(self, respond: Callable[[httpx.Request], httpx.Response]) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.respond(request)

    def client(self, **kwargs) -> LndRestClient:
        return LndRestClient(BASE_URL, MACAROON, None, transport=httpx.MockTransport(self), **kwargs)

    @property
    def request(self) -> httpx.Request:
        assert len(self.requests) == 1, self.requests
        return self.requests[0]

    def body(self) -> dict:
        return json.loads(self.request.content)


def json_reply(data, status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, json=data)


def error_reply(name: str) -> Callable[[httpx.Request], httpx.Response]:
    case = ERRORS[name]
    if "raw" in case:
        return lambda request: httpx.Response(case["http_status"], content=case["raw"].encode())
    return json_reply(case["body"], case["http_status"])


def stream_reply(messages: list, stall: bool = False) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(200, stream=StallingStream(messages, request, stall))


def raising(exc_type: type[httpx.TransportError]) -> Callable[[httpx.Request], httpx.Response]:
    def respond(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated transport failure", request=request)

    return respond


def assert_common(request: httpx.Request, method: str, path: str) -> None:
    assert request.method == method
    assert request.url.raw_path.decode().split("?")[0] == path
    assert request.headers[MACAROON_HEADER] == MACAROON
    timeout = request.extensions["timeout"]
    assert set(timeout) == {"connect", "read", "write", "pool"}
    assert all(isinstance(value, float) and value > 0 for value in timeout.values()), timeout


# --- node info ---------------------------------------------------------------------------------------------------
def test_get_info():
    node = Node(json_reply(fixture("getinfo.json")))
    info = node.client().get_info()
    assert_common(node.request, "GET", "/v1/getinfo")
    assert info.network == "regtest" and info.block_height == 2987 and info.synced_to_chain
    assert info.identity_pubkey == fixture("getinfo.json")["identity_pubkey"]
    assert info.num_active_channels == 3 and info.version.startswith("0.18.5-beta")


def test_get_info_calls_mainnet_bitcoin():
    data = fixture("getinfo.json") | {"chains": [{"chain": "bitcoin", "network": "mainnet"}]}
    assert Node(json_reply(data)).client().get_info().network == "bitcoin"


# --- invoices ----------------------------------------------------------------------------------------------------
def test_add_invoice_request_and_result():
    node = Node(json_reply(fixture("addinvoice.json")))
    result = node.client().add_invoice(250_000, memo="satflow deposit", expiry_s=3600)
    assert_common(node.request, "POST", "/v1/invoices")
    assert node.body() == {"memo": "satflow deposit", "value_msat": "250000", "expiry": "3600", "private": False}
    expected_hash = base64.b64decode(fixture("addinvoice.json")["r_hash"]).hex()
    assert (result.payment_hash_hex, result.add_index) == (expected_hash, 41)
    assert result.payment_request == fixture("addinvoice.json")["payment_request"]


def test_add_invoice_amountless_with_description_hash():
    node = Node(json_reply(fixture("addinvoice.json")))
    description_hash = hashlib.sha256(b'[["text/plain","lnurl"]]').digest()
    node.client().add_invoice(None, description_hash=description_hash, private=True)
    body = node.body()
    assert body["value_msat"] == "0" and body["private"] is True
    assert base64.b64decode(body["description_hash"]) == description_hash  # bytes travel as standard base64


@pytest.mark.parametrize("kwargs", [
    {"value_msat": 1.5}, {"value_msat": True}, {"value_msat": -1}, {"value_msat": 1, "memo": "x" * 640},
    {"value_msat": 1, "description_hash": b"short"}, {"value_msat": 1, "expiry_s": 0},
])
def test_add_invoice_refuses_bad_arguments_before_any_request(kwargs):
    node = Node(json_reply({}))
    with pytest.raises(ValidationError):
        node.client().add_invoice(**kwargs)
    assert node.requests == []


@pytest.mark.parametrize("name, state, settle_index, amt_paid", [
    ("lookupinvoice_open.json", InvoiceState.OPEN, 0, 0),
    ("lookupinvoice_settled.json", InvoiceState.SETTLED, 17, 250_000),
])
def test_lookup_invoice(name, state, settle_index, amt_paid):
    data = fixture(name)
    payment_hash = base64.b64decode(data["r_hash"]).hex()
    node = Node(json_reply(data))
    invoice = node.client().lookup_invoice(payment_hash.upper())
    assert_common(node.request, "GET", f"/v1/invoice/{payment_hash}")  # r_hash_str: hex in this path
    assert invoice.payment_hash == payment_hash and invoice.state is state
    assert (invoice.settle_index, invoice.amt_paid_msat, invoice.value_msat) == (settle_index, amt_paid, 250_000)
    assert (invoice.add_index, invoice.creation_date, invoice.expiry) == (41, 1731405600, 3600)
    assert invoice.memo == "satflow deposit" and invoice.payment_request.startswith("lnbcrt2500n1")


@pytest.mark.parametrize("error, expected", [
    ("invoice_not_found", LightningInvoiceNotFound),
    ("no_invoices", LightningInvoiceNotFound),
    ("unmapped_internal", LightningNodeUnavailable),
    ("server_starting", LightningNodeUnavailable),
    ("wallet_locked", LightningNodeUnavailable),
    ("unavailable", LightningNodeUnavailable),
    ("proxy_bad_gateway", LightningNodeUnavailable),
    ("macaroon_mismatch", LightningNodeError),
    ("permission_denied", LightningNodeError),
    ("route_not_found", LightningNodeError),
    ("unimplemented", LightningNodeError),
])
def test_lookup_invoice_errors(error, expected):
    with pytest.raises(expected) as excinfo:
        Node(error_reply(error)).client().lookup_invoice("ab" * 32)
    assert excinfo.value.details["operation"] == "lookup_invoice"
    assert issubclass(expected, TransientError) == (expected is LightningNodeUnavailable)


@pytest.mark.parametrize(
    "exc_type", [httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadTimeout, httpx.RemoteProtocolError]
)
def test_reads_turn_transport_failures_into_a_transient_error(exc_type):
    with pytest.raises(LightningNodeUnavailable) as excinfo:
        Node(raising(exc_type)).client().get_info()
    assert isinstance(excinfo.value, TransientError)


def test_unexpected_response_shape_is_a_node_error():
    with pytest.raises(LightningNodeError):
        Node(json_reply({"state": "OPEN"})).client().lookup_invoice("ab" * 32)  # no r_hash
    with pytest.raises(LightningNodeError):
        Node(lambda r: httpx.Response(200, content=b"<html>")).client().get_info()


def test_list_invoices_page():
    node = Node(json_reply(fixture("listinvoices_page.json")))
    page = node.client().list_invoices(index_offset=40, num_max_invoices=3)
    assert_common(node.request, "GET", "/v1/invoices")
    assert dict(node.request.url.params) == {
        "index_offset": "40", "num_max_invoices": "3", "reversed": "false", "pending_only": "false",
    }
    assert (page.first_index_offset, page.last_index_offset) == (41, 43)
    assert [(i.add_index, i.state, i.settle_index) for i in page.invoices] == [
        (41, InvoiceState.SETTLED, 17), (42, InvoiceState.SETTLED, 18), (43, InvoiceState.CANCELED, 0),
    ]
    amountless = page.invoices[1]
    assert amountless.is_amountless and amountless.amt_paid_msat == 1_234_567


def _paged(request: httpx.Request) -> httpx.Response:
    offset = int(request.url.params["index_offset"])
    return httpx.Response(200, json=fixture("listinvoices_page.json" if offset < 43 else "listinvoices_empty.json"))


def test_iter_invoices_pages_by_add_index_until_empty():
    node = Node(_paged)
    invoices = list(node.client().iter_invoices(40, page_size=3))
    assert [i.add_index for i in invoices] == [41, 42, 43]
    assert [r.url.params["index_offset"] for r in node.requests] == ["40", "43"]


def test_settled_since_filters_and_orders_by_settle_index():
    settled = Node(_paged).client().settled_since(17, from_add_index=40)
    assert [(i.add_index, i.settle_index) for i in settled] == [(42, 18)]


def test_subscribe_invoices_yields_backlog_then_ends_quietly_when_idle():
    node = Node(stream_reply(fixture("subscribe_invoices_stream.json"), stall=True))
    events = list(node.client().subscribe_invoices(add_index=43, settle_index=18, idle_timeout_s=2.5))
    assert_common(node.request, "GET", "/v1/invoices/subscribe")
    assert dict(node.request.url.params) == {"add_index": "43", "settle_index": "18"}
    assert node.request.extensions["timeout"]["read"] == 2.5
    assert [(e.add_index, e.state, e.settle_index) for e in events] == [
        (44, InvoiceState.OPEN, 0), (44, InvoiceState.SETTLED, 19),
    ]


def test_subscribe_invoices_read_timeout_before_headers_is_idle_too():
    assert list(Node(raising(httpx.ReadTimeout)).client().subscribe_invoices()) == []


def test_subscribe_invoices_stops_at_max_duration():
    ticks = iter([0.0, 100.0, 200.0])
    node = Node(stream_reply(fixture("subscribe_invoices_stream.json"), stall=True))
    events = list(node.client(monotonic=lambda: next(ticks)).subscribe_invoices(max_duration_s=50))
    assert len(events) == 1


def test_subscribe_invoices_errors_raise():
    stream_error = [fixture("subscribe_invoices_stream.json")[0], ERRORS["stream_unmapped"]["body"]]
    iterator = Node(stream_reply(stream_error)).client().subscribe_invoices()
    assert next(iterator).add_index == 44
    with pytest.raises(LightningNodeUnavailable):
        next(iterator)
    with pytest.raises(LightningNodeError):
        list(Node(error_reply("macaroon_mismatch")).client().subscribe_invoices())
    with pytest.raises(LightningNodeUnavailable):
        list(Node(raising(httpx.ConnectError)).client().subscribe_invoices())


def test_cancel_invoice():
    node = Node(json_reply(fixture("cancelinvoice.json")))
    payment_hash = "fb" * 32  # its base64 has "+" and "/": a body keeps standard base64
    assert node.client().cancel_invoice(payment_hash) is None
    assert_common(node.request, "POST", "/v2/invoices/cancel")
    assert node.body() == {"payment_hash": base64.b64encode(bytes.fromhex(payment_hash)).decode()}
    assert "+" in node.body()["payment_hash"] or "/" in node.body()["payment_hash"]


@pytest.mark.parametrize("error, expected", [
    ("invoice_already_settled", LightningInvoiceAlreadySettled),
    ("invoice_not_found", LightningInvoiceNotFound),
])
def test_cancel_invoice_errors(error, expected):
    with pytest.raises(expected):
        Node(error_reply(error)).client().cancel_invoice("ab" * 32)


def test_decode_pay_req():
    node = Node(json_reply(fixture("payreq.json")))
    decoded = node.client().decode_pay_req(f"lightning:{PAY_REQ.upper()}")
    assert_common(node.request, "GET", f"/v1/payreq/{PAY_REQ}")
    assert decoded.payment_hash == PAY_HASH and decoded.amount_msat == 100_000_000
    assert (decoded.timestamp, decoded.expiry, decoded.expires_at) == (1731406100, 3600, 1731409700)
    assert decoded.description == "invoice from carol" and decoded.cltv_expiry == 80


@pytest.mark.parametrize("error, expected", [
    ("decode_invalid", InvalidPaymentRequest),
    ("proxy_bad_gateway", LightningNodeUnavailable),
    ("unavailable", LightningNodeUnavailable),
    ("macaroon_mismatch", LightningNodeError),
])
def test_decode_pay_req_errors(error, expected):
    with pytest.raises(expected):
        Node(error_reply(error)).client().decode_pay_req(PAY_REQ)


def test_decode_pay_req_keeps_odd_characters_out_of_the_path():
    node = Node(json_reply({}))
    with pytest.raises(InvalidPaymentRequest):
        node.client().decode_pay_req("lnbcrt1/../../v1/getinfo")
    assert node.requests == []


# --- payments ----------------------------------------------------------------------------------------------------
def test_send_payment_request_and_success():
    node = Node(stream_reply(SEND_OK))
    outcome = node.client().send_payment(PAY_REQ, fee_limit_msat=200_000, timeout_seconds=60)
    assert_common(node.request, "POST", "/v2/router/send")
    assert node.body() == {
        "payment_request": PAY_REQ, "fee_limit_msat": "200000", "timeout_seconds": 60, "no_inflight_updates": False,
    }
    assert outcome == PaymentSucceeded(preimage_hex=PAY_PREIMAGE, fee_msat=100_100, amount_msat=100_000_000)
    assert hashlib.sha256(bytes.fromhex(outcome.preimage_hex)).hexdigest() == PAY_HASH


def test_send_payment_optional_fields_are_int64_strings():
    node = Node(stream_reply(SEND_OK))
    node.client().send_payment(PAY_REQ, fee_limit_msat=0, amount_msat=5_000, outgoing_chan_ids=[3284104131001345],
                               max_parts=4, timeout_seconds=30)
    body = node.body()
    assert (body["amt_msat"], body["fee_limit_msat"], body["outgoing_chan_ids"]) == ("5000", "0", ["3284104131001345"])
    assert (body["max_parts"], body["timeout_seconds"]) == (4, 30)


@pytest.mark.parametrize("kwargs", [
    {"fee_limit_msat": -1}, {"fee_limit_msat": 1.0}, {"fee_limit_msat": 1, "amount_msat": 0},
    {"fee_limit_msat": 1, "timeout_seconds": 0}, {"fee_limit_msat": 1, "wait_s": -1},
])
def test_send_payment_refuses_bad_arguments_before_any_request(kwargs):
    node = Node(stream_reply(SEND_OK))
    with pytest.raises(ValidationError):
        node.client().send_payment(PAY_REQ, **kwargs)
    assert node.requests == []


@pytest.mark.parametrize("lnd_reason, reason", [
    ("FAILURE_REASON_TIMEOUT", FailureReason.TIMEOUT),
    ("FAILURE_REASON_NO_ROUTE", FailureReason.NO_ROUTE),
    ("FAILURE_REASON_ERROR", FailureReason.ERROR),
    ("FAILURE_REASON_INCORRECT_PAYMENT_DETAILS", FailureReason.INCORRECT_PAYMENT_DETAILS),
    ("FAILURE_REASON_INSUFFICIENT_BALANCE", FailureReason.INSUFFICIENT_BALANCE),
    ("FAILURE_REASON_CANCELED", FailureReason.CANCELED),
])
def test_send_payment_failed_with_each_reason(lnd_reason, reason):
    node = Node(stream_reply(fixture("router_send_failed.json")[lnd_reason]))
    outcome = node.client().send_payment(PAY_REQ, fee_limit_msat=1_000)
    assert outcome == PaymentFailed(reason, detail=lnd_reason)


def test_send_payment_in_flight_then_read_timeout_is_in_flight():
    node = Node(stream_reply(fixture("router_send_in_flight.json"), stall=True))
    assert isinstance(node.client().send_payment(PAY_REQ, fee_limit_msat=1_000), PaymentInFlight)


def test_send_payment_in_flight_then_end_of_stream_is_in_flight():
    node = Node(stream_reply(fixture("router_send_in_flight.json"), stall=False))
    assert isinstance(node.client().send_payment(PAY_REQ, fee_limit_msat=1_000), PaymentInFlight)


@pytest.mark.parametrize("respond", [
    raising(httpx.ReadTimeout), raising(httpx.ConnectError), raising(httpx.WriteTimeout),
    raising(httpx.RemoteProtocolError), stream_reply([], stall=True), stream_reply([], stall=False),
])
def test_send_payment_without_any_update_is_unknown_not_failed(respond):
    outcome = Node(respond).client().send_payment(PAY_REQ, fee_limit_msat=1_000)
    assert isinstance(outcome, PaymentUnknown) and not outcome.is_final


def test_send_payment_stops_waiting_at_the_deadline():
    ticks = iter([0.0, 1.0, 10.0])  # start, after the first IN_FLIGHT (no HTLC yet), after the second
    node = Node(stream_reply(SEND_OK))
    outcome = node.client(monotonic=lambda: next(ticks)).send_payment(PAY_REQ, fee_limit_msat=1_000, wait_s=5)
    assert isinstance(outcome, PaymentInFlight)
    assert node.request.extensions["timeout"]["read"] == 10.0  # one read may wait max(wait_s, timeout_s)


def test_send_payment_mid_stream_error_keeps_what_was_known():
    messages = fixture("router_send_in_flight.json") + [ERRORS["stream_unmapped"]["body"]]
    assert isinstance(Node(stream_reply(messages)).client().send_payment(PAY_REQ, fee_limit_msat=1), PaymentInFlight)


def test_send_payment_unreadable_line_is_not_final():
    node = Node(lambda request: httpx.Response(200, content=b"{not json\n"))
    assert isinstance(node.client().send_payment(PAY_REQ, fee_limit_msat=1), PaymentUnknown)


@pytest.mark.parametrize("error, expected", [
    ("invoice_already_paid", PaymentAlreadyPaid("invoice is already paid")),
    ("payment_in_transition", PaymentInFlight("payment is in transition")),
    ("payment_already_exists", PaymentInFlight("payment already exists")),
    ("invoice_expired", PaymentRejected(RejectionReason.INVOICE_EXPIRED, "invoice expired")),
    ("self_payment", PaymentRejected(RejectionReason.SELF_PAYMENT, "self-payments not allowed")),
    ("amount_required", PaymentRejected(
        RejectionReason.AMOUNT_MISMATCH, "amount must be specified when paying a zero amount invoice")),
    ("amount_forbidden", PaymentRejected(
        RejectionReason.AMOUNT_MISMATCH, "amount must not be specified when paying a non-zero amount invoice")),
    ("no_path", PaymentFailed(FailureReason.NO_ROUTE, "unable to find a path")),
    ("insufficient_local_balance", PaymentFailed(FailureReason.INSUFFICIENT_BALANCE, "insufficient local balance")),
])
def test_send_payment_error_messages_map_through_the_table(error, expected):
    assert Node(error_reply(error)).client().send_payment(PAY_REQ, fee_limit_msat=1) == expected


@pytest.mark.parametrize("error", [
    "stream_unmapped", "unmapped_internal", "proxy_bad_gateway", "macaroon_mismatch", "unavailable", "route_not_found",
])
def test_send_payment_unmapped_errors_are_unknown(error):
    outcome = Node(error_reply(error)).client().send_payment(PAY_REQ, fee_limit_msat=1)
    assert isinstance(outcome, PaymentUnknown)


def test_track_payment_path_is_base64url_and_succeeded():
    node = Node(stream_reply(fixture("router_track_succeeded.json")))
    payment_hash = "fbff" * 16  # standard base64 would put "+" and "/" into the path
    outcome = node.client().track_payment(payment_hash)
    expected_segment = base64.urlsafe_b64encode(bytes.fromhex(payment_hash)).decode()
    assert "-" in expected_segment and "_" in expected_segment
    assert_common(node.request, "GET", f"/v2/router/track/{expected_segment}")
    assert dict(node.request.url.params) == {"no_inflight_updates": "false"}
    assert isinstance(outcome, PaymentSucceeded) and outcome.fee_msat == 100_100


def test_track_payment_in_flight_returns_after_the_current_state():
    node = Node(stream_reply(fixture("router_track_in_flight.json"), stall=True))
    assert isinstance(node.client().track_payment(PAY_HASH), PaymentInFlight)


@pytest.mark.parametrize("respond, expected", [
    (error_reply("payment_not_initiated"), PaymentNotFound),
    (raising(httpx.ReadTimeout), PaymentUnknown),
    (raising(httpx.ConnectError), PaymentUnknown),
    (error_reply("unmapped_internal"), PaymentUnknown),
])
def test_track_payment_edges(respond, expected):
    assert isinstance(Node(respond).client().track_payment(PAY_HASH), expected)


# --- the mapping table -------------------------------------------------------------------------------------------
def test_table_covers_every_lnd_status_and_failure_reason():
    statuses = {"UNKNOWN", "IN_FLIGHT", "SUCCEEDED", "FAILED", "INITIATED"}
    reasons = {"FAILURE_REASON_NONE", "FAILURE_REASON_TIMEOUT", "FAILURE_REASON_NO_ROUTE", "FAILURE_REASON_ERROR",
               "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS", "FAILURE_REASON_INSUFFICIENT_BALANCE",
               "FAILURE_REASON_CANCELED"}
    table = lnd_errors.LND_MEANINGS
    assert statuses == {text for kind, text in table if kind == lnd_errors.STATUS}
    assert reasons == {text for kind, text in table if kind == lnd_errors.FAILURE_REASON}


def test_unknown_is_never_mapped_to_failed():
    assert lnd_errors.status_meaning("UNKNOWN") is PaymentUnknown
    assert lnd_errors.status_meaning("IN_FLIGHT") is PaymentInFlight
    assert lnd_errors.status_meaning("SOMETHING_NEW") is None


# --- secrets, TLS, construction ----------------------------------------------------------------------------------
def test_from_secret_and_repr_never_show_the_macaroon():
    client = LndRestClient.from_secret({"url": BASE_URL, "macaroon_hex": MACAROON, "tls_cert_pem": ""})
    assert MACAROON not in repr(client) and MACAROON not in str(client)
    assert "tls_cert_pinned=False" in repr(client)
    with pytest.raises(ValueError) as excinfo:
        LndRestClient.from_secret({"url": BASE_URL, "macaroon_hex": ""})
    assert "macaroon_hex" in str(excinfo.value)
    with pytest.raises(ValueError) as excinfo:
        LndRestClient(BASE_URL, "not-hex-" + MACAROON)
    assert MACAROON not in str(excinfo.value)


@pytest.mark.parametrize("timeout_s", [0, -1, float("inf"), float("nan"), None, True])
def test_timeouts_are_always_bounded(timeout_s):
    with pytest.raises(ValueError):
        LndRestClient(BASE_URL, MACAROON, timeout_s=timeout_s)


def test_errors_do_not_carry_the_macaroon():
    with pytest.raises(LightningNodeError) as excinfo:
        Node(error_reply("macaroon_mismatch")).client().get_info()
    assert MACAROON not in str(excinfo.value) and MACAROON not in repr(excinfo.value.details)


def test_ssl_context_trusts_exactly_the_given_certificate():
    crypto = pytest.importorskip("cryptography")  # noqa: F841 - present in the dev venv (moto needs it)
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lnd autogenerated cert")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    context = LndRestClient(BASE_URL, MACAROON, pem).ssl_context()
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "lnd autogenerated cert"),),)]


def test_importing_the_adapter_does_not_import_httpx():
    code = "import sys, satflow.adapters.lnd; print('httpx' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
