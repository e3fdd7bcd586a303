"""A Lightning simulator that speaks the LND REST subset satflow uses (development tool, not in the layer).

It models two parties:

* OUR master node: invoices (real signed regtest BOLT11, sha256 preimages/hashes, OPEN/SETTLED/CANCELED with
  add_index/settle_index counters, settle dates, amount-less invoices, expiry by an injectable clock), an
  outbound balance, and payments through ``/v2/router/send`` / ``/v2/router/track``.
* an EXTERNAL network: it pays our invoices (:meth:`LightningSimulator.external_pay`) and issues invoices for us
  to pay (:meth:`LightningSimulator.external_invoice`). How our payments end is scripted per payment hash or
  globally (:class:`PaymentScript`): success with a fee, failure with any LND failure reason, IN_FLIGHT for N
  track calls or until :meth:`LightningSimulator.resolve`, or a transport timeout.

LND behaviours reproduced: a second send of a hash answers "invoice is already paid" (succeeded) or "payment
is in transition" (in flight) with gRPC AlreadyExists; a failed hash may be sent again; tracking an unknown hash
answers "payment isn't initiated" (NotFound); ``fee_limit_msat`` is enforced (a dearer route fails NO_ROUTE);
expired invoices are refused before a payment is recorded; ``SubscribeInvoices`` replays adds/settlements after
non-zero indexes and then notifies adds and settlements only (LND does not notify cancels there).

Decision: paying one of OUR OWN invoices through our node fails the way LND does without
``allow_self_payment``: the request is refused with "self-payments not allowed" (gRPC Unknown, HTTP 500) before
any payment is recorded. The application must detect its own invoices and settle them internally.

Two ways in:

* :meth:`LightningSimulator.handle` ``(method, path, query, body, headers) -> (status, headers, body)`` where
  body is bytes or an iterator of newline-terminated lines (streams), for an HTTP server.
* :meth:`LightningSimulator.transport` returns an ``httpx.MockTransport`` serving the same routes in-process.

A stream that would wait for news that is not coming (an in-flight payment, an idle invoice subscription)
raises :class:`SimulatedReadTimeout` after ``stream_idle_s`` (default 0: at once); the transport turns it into
``httpx.ReadTimeout``, which is what a client with a read timeout sees from a real node. All state sits behind
one lock.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping
from urllib.parse import parse_qsl

import httpx

from . import lightning_lnd_json as lnd_json
from .lightning_bolt11 import DEFAULT_MIN_FINAL_CLTV, NodeKey, decode_invoice, encode_invoice

SIM_BASE_URL = "https://lnd.simulator:8080"
SIM_MACAROON_HEX = "0201036c6e6402f801030a10" + hashlib.sha256(b"satflow-simulator-macaroon").hexdigest()
DEFAULT_INVOICE_EXPIRY_S = 86_400  # lnd's default when a request leaves expiry at 0
DEFAULT_LIST_PAGE = 100  # lnd's default num_max_invoices
MAX_MEMO_BYTES = 639
FAILURE_REASONS = (
    "FAILURE_REASON_TIMEOUT",
    "FAILURE_REASON_NO_ROUTE",
    "FAILURE_REASON_ERROR",
    "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS",
    "FAILURE_REASON_INSUFFICIENT_BALANCE",
    "FAILURE_REASON_CANCELED",
)
FINAL_PAYMENT_STATUSES = ("SUCCEEDED", "FAILED")
SANCTIONED_NODE_LABEL = "sanctioned-node"  # its pubkey is listed in devtools/satflow_dev/fixtures/sdn_local.xml

Body = bytes | Iterator[bytes]
SimResponse = tuple[int, dict[str, str], Body]


class SimulatedReadTimeout(Exception):
    """The client would wait in vain: a real node keeps the connection open and says nothing."""


class ExternalPaymentError(Exception):
    """The external network could not pay (not our invoice, not open, expired, wrong amount)."""


class _RpcError(Exception):
    """An LND error answer: gRPC code + message, rendered as grpc-gateway does."""

    def __init__(self, grpc_code: int, message: str) -> None:
        super().__init__(message)
        self.grpc_code = grpc_code
        self.message = message


# --- scripts -----------------------------------------------------------------------------------------------------
def _failure_reason(reason: str) -> str:
    full = reason if reason.startswith("FAILURE_REASON_") else f"FAILURE_REASON_{reason}"
    if full not in FAILURE_REASONS:
        raise ValueError(f"unknown failure reason {reason!r}")
    return full


@dataclass(frozen=True)
class PaymentScript:
    """How an outbound payment to the external network ends.

    ``send_timeout``: "before_node" - the request never reaches the node (nothing recorded); "after_node" - the
    node records and proceeds with the payment but the client's read times out before any update.
    """

    status: Literal["SUCCEEDED", "FAILED"] = "SUCCEEDED"
    fee_msat: int | None = None  # the route's fee; None: the network's fee policy
    failure_reason: str = "FAILURE_REASON_NONE"
    in_flight_tracks: int = 0  # the first N track calls still see IN_FLIGHT
    hold: bool = False  # IN_FLIGHT until resolve()
    send_timeout: Literal["none", "before_node", "after_node"] = "none"

    @classmethod
    def succeed(cls, fee_msat: int | None = None, **kwargs: Any) -> "PaymentScript":
        return cls(status="SUCCEEDED", fee_msat=fee_msat, **kwargs)

    @classmethod
    def fail(cls, reason: str = "NO_ROUTE", **kwargs: Any) -> "PaymentScript":
        return cls(status="FAILED", failure_reason=_failure_reason(reason), **kwargs)


# --- state -------------------------------------------------------------------------------------------------------
@dataclass
class _Invoice:
    payment_hash: str
    preimage: str
    payment_addr: str
    payment_request: str
    value_msat: int  # 0: amount-less
    memo: str
    description_hash: str
    creation_date: int
    expiry: int
    cltv_expiry: int
    private: bool
    add_index: int = 0  # our node's invoices only
    state: str = "OPEN"
    settle_index: int = 0
    settle_date: int = 0
    amt_paid_msat: int = 0


@dataclass
class _Payment:
    payment_hash: str
    payment_request: str
    destination: str
    value_msat: int
    fee_msat: int
    creation_time_ns: int
    payment_index: int
    final_status: str  # what it becomes when it resolves
    final_reason: str
    tracks_left: int
    held: bool
    status: str = "IN_FLIGHT"
    failure_reason: str = "FAILURE_REASON_NONE"
    preimage: str = lnd_json.ZERO_PREIMAGE_HEX
    reserved_msat: int = 0
    resolve_time_ns: int = 0
    htlc_dispatched: bool = True  # False when pathfinding failed before any HTLC left


@dataclass
class _Request:
    query: dict[str, str]
    body: dict[str, Any]
    path_params: dict[str, str] = field(default_factory=dict)


def _hex_of_b64(value: object, field_name: str) -> str:
    """``bytes`` from JSON (standard base64) or a URL path (base64url): grpc-gateway accepts either."""
    text = str(value or "").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text, validate=True).hex()
    except (binascii.Error, ValueError) as exc:
        raise _RpcError(lnd_json.GRPC_INVALID_ARGUMENT, f"invalid base64 in {field_name}") from exc


def _int_field(data: Mapping[str, Any], name: str, default: int = 0) -> int:
    value = data.get(name, default)
    try:
        return int(value or 0)
    except (TypeError, ValueError) as exc:
        raise _RpcError(lnd_json.GRPC_INVALID_ARGUMENT, f"invalid value for integer field {name}: {value!r}") from exc


def _bool_field(data: Mapping[str, Any], name: str) -> bool:
    value = data.get(name, False)
    return value.lower() == "true" if isinstance(value, str) else bool(value)


def _is_final_payment(payment_json: Mapping[str, Any]) -> bool:
    return payment_json["status"] in FINAL_PAYMENT_STATUSES


def _go_time(unix: int) -> str:
    """How lnd prints a time in messages (Go's time.Time.String(), UTC): 2026-11-21 15:10:42 +0000 UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(unix))


def _check_network(payment_request: str) -> None:
    """lnd refuses another network's invoice (decode and send) before it looks at anything else in it."""
    text = payment_request.lower()
    if text.startswith("ln") and not text.startswith("lnbcrt"):
        raise _RpcError(lnd_json.GRPC_UNKNOWN, "invoice not for current active network 'regtest'")


class LightningSimulator:
    """Our LND node plus an external network, behind LND's REST routes. Thread-safe."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        our_node: NodeKey | None = None,
        external_node: NodeKey | None = None,
        our_balance_msat: int = 1_000_000_000_000,  # 10 BTC outbound
        fee_base_msat: int = 1_000,  # lnd's default forwarding policy: 1 sat + 1 ppm
        fee_rate_ppm: int = 1,
        block_height: int = 200,
        macaroon_hex: str = SIM_MACAROON_HEX,
        stream_idle_s: float = 0.0,
        randbytes: Callable[[int], bytes] = os.urandom,
        use_status_initiated: bool = False,
    ) -> None:
        self._clock = clock
        self.our_node = our_node or NodeKey.from_label("our-master-node")
        self.external_node = external_node or NodeKey.from_label("external-network")
        # A second outside node, listed in the local runtime's sanctions list (fixtures/sdn_local.xml): invoices
        # it issues show that a payment to a sanctioned node is refused before anything is reserved.
        self.sanctioned_node = NodeKey.from_label(SANCTIONED_NODE_LABEL)
        self._balance_msat = our_balance_msat
        self.fee_base_msat = fee_base_msat
        self.fee_rate_ppm = fee_rate_ppm
        self.block_height = block_height
        self.macaroon_hex = macaroon_hex
        self.stream_idle_s = stream_idle_s
        self._randbytes = randbytes
        # lnd reports a new payment as IN_FLIGHT unless started with routerrpc.usestatusinitiated=true.
        self.use_status_initiated = use_status_initiated
        self._lock = threading.RLock()
        self._our_invoices: dict[str, _Invoice] = {}  # by payment hash, insertion = add_index order
        self._external_invoices: dict[str, _Invoice] = {}
        self._payments: dict[str, _Payment] = {}
        self._default_script = PaymentScript.succeed()
        self._scripts: dict[str, PaymentScript] = {}
        self._add_index = 0
        self._settle_index = 0
        self._payment_index = 0
        self._invoice_watchers: list[queue.Queue[dict[str, Any]]] = []
        self._payment_watchers: dict[str, list[queue.Queue[dict[str, Any]]]] = {}
        self._routes: list[tuple[str, re.Pattern[str], Callable[[_Request], SimResponse], bool]] = [
            ("GET", re.compile(r"^/v1/getinfo$"), self._get_info, False),
            ("POST", re.compile(r"^/v1/invoices$"), self._add_invoice, False),
            ("GET", re.compile(r"^/v1/invoices$"), self._list_invoices, False),
            ("GET", re.compile(r"^/v1/invoices/subscribe$"), self._subscribe_invoices, True),
            ("GET", re.compile(r"^/v1/invoice/(?P<r_hash_str>[^/]+)$"), self._lookup_invoice, False),
            ("POST", re.compile(r"^/v2/invoices/cancel$"), self._cancel_invoice, False),
            ("POST", re.compile(r"^/v2/router/send$"), self._send_payment, True),
            ("GET", re.compile(r"^/v2/router/track/(?P<payment_hash>[^/]+)$"), self._track_payment, True),
            ("GET", re.compile(r"^/v1/payreq/(?P<pay_req>[^/]+)$"), self._decode_pay_req, False),
            ("GET", re.compile(r"^/v1/balance/channels$"), self._channel_balance, False),
            ("GET", re.compile(r"^/v1/balance/blockchain$"), self._wallet_balance, False),
            ("GET", re.compile(r"^/v1/channels$"), self._list_channels, False),
            ("GET", re.compile(r"^/v1/payments$"), self._list_payments, False),
            ("POST", re.compile(r"^/v1/channels/transactions$"), self._send_payment_sync, False),
        ]
        self.wallet_sat = 0  # the node's own on-chain wallet (lnd /v1/balance/blockchain): operator funds

    # --- wiring ------------------------------------------------------------------------------------------------
    def secret(self, base_url: str = SIM_BASE_URL) -> dict[str, Any]:
        """What Secrets Manager would hold for this node (for ``LndRestClient.from_secret``)."""
        return {"url": base_url, "macaroon_hex": self.macaroon_hex, "tls_cert_pem": None}

    def transport(self) -> httpx.MockTransport:
        """An httpx transport serving the REST routes in-process (no sockets)."""

        def handler(request: httpx.Request) -> httpx.Response:
            try:
                status, headers, body = self.handle(
                    request.method, request.url.path, request.url.query.decode(), request.read(),
                    dict(request.headers),
                )
            except SimulatedReadTimeout as exc:
                raise httpx.ReadTimeout(str(exc), request=request) from exc
            if isinstance(body, bytes):
                return httpx.Response(status, headers=headers, content=body)
            return httpx.Response(status, headers=headers, stream=_HttpxLineStream(body, request))

        return httpx.MockTransport(handler)

    def handle(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | str | None = None,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> SimResponse:
        """Serve one REST request. The macaroon is checked when ``headers`` are given.

        May raise :class:`SimulatedReadTimeout` (a scripted send timeout); a streamed body may raise it too.
        """
        for route_method, pattern, handler, streams in self._routes:
            match = pattern.match(path)
            if match is None or route_method != method.upper():
                continue
            try:
                self._authenticate(headers)
                request = _Request(query=self._query(query), body=self._json_body(body), path_params=match.groupdict())
                with self._lock:
                    self._expire_invoices()
                return handler(request)
            except _RpcError as exc:
                status = lnd_json.error_status(exc.grpc_code)
                render = lnd_json.stream_error_body if streams else lnd_json.unary_error_body
                return status, dict(lnd_json.JSON_HEADERS), render(exc.grpc_code, exc.message)
        return 404, dict(lnd_json.JSON_HEADERS), lnd_json.unary_error_body(lnd_json.GRPC_NOT_FOUND, "Not Found")

    def _authenticate(self, headers: Mapping[str, str] | None) -> None:
        if headers is None:
            return
        given = {key.lower(): value for key, value in headers.items()}.get("grpc-metadata-macaroon")
        if not given:
            raise _RpcError(lnd_json.GRPC_UNKNOWN, "expected 1 macaroon, got 0")
        if given != self.macaroon_hex:
            raise _RpcError(lnd_json.GRPC_UNKNOWN, "verification failed: signature mismatch after caveat verification")

    @staticmethod
    def _query(query: Mapping[str, str] | str | None) -> dict[str, str]:
        if query is None:
            return {}
        return dict(parse_qsl(query)) if isinstance(query, str) else dict(query)

    @staticmethod
    def _json_body(body: bytes) -> dict[str, Any]:
        if not body:
            return {}
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise _RpcError(lnd_json.GRPC_INVALID_ARGUMENT, "unexpected token in request body") from exc
        if not isinstance(data, dict):
            raise _RpcError(lnd_json.GRPC_INVALID_ARGUMENT, "request body must be a JSON object")
        return data

    def _now(self) -> int:
        return int(self._clock())

    def _now_ns(self) -> int:
        return int(self._clock() * 1_000_000_000)

    @staticmethod
    def _ok(data: Any) -> SimResponse:
        return 200, dict(lnd_json.JSON_HEADERS), lnd_json.dumps(data)

    # --- scripting and inspection (test drivers) ---------------------------------------------------------------
    def script(self, script: PaymentScript, payment_hash: str | None = None) -> None:
        """Script how payments end: for one payment hash, or (without a hash) for every unscripted one."""
        with self._lock:
            if payment_hash is None:
                self._default_script = script
            else:
                self._scripts[payment_hash.lower()] = script

    def resolve(
        self,
        payment_hash: str,
        status: Literal["SUCCEEDED", "FAILED"] = "SUCCEEDED",
        *,
        failure_reason: str = "NO_ROUTE",
        fee_msat: int | None = None,
    ) -> None:
        """End an in-flight payment now (held or waiting for tracks); track streams see the final update."""
        with self._lock:
            payment = self._payments.get(payment_hash.lower())
            if payment is None or payment.status != "IN_FLIGHT":
                raise ValueError(f"no in-flight payment with hash {payment_hash}")
            if fee_msat is not None:
                payment.fee_msat = fee_msat
            reason = "FAILURE_REASON_NONE" if status == "SUCCEEDED" else _failure_reason(failure_reason)
            self._finish_payment(payment, status, reason)

    @property
    def invoice_subscribers(self) -> int:
        """Open ``/v1/invoices/subscribe`` streams (lets a test wait until a listener is attached)."""
        with self._lock:
            return len(self._invoice_watchers)

    @property
    def our_balance_msat(self) -> int:
        with self._lock:
            return self._balance_msat

    def payment_status(self, payment_hash: str) -> str | None:
        with self._lock:
            payment = self._payments.get(payment_hash.lower())
            return payment.status if payment else None

    def invoice_state(self, payment_hash: str) -> str | None:
        """State of our invoice or of an external one with this hash."""
        with self._lock:
            self._expire_invoices()
            invoice = self._our_invoices.get(payment_hash.lower()) or self._external_invoices.get(payment_hash.lower())
            return invoice.state if invoice else None

    def foreign_pay(self, amount_msat: int, memo: str = "foreign") -> str:
        """Somebody pays out of OUR node without satflow (lncli payinvoice on the real node): an external invoice
        paid at once, recorded in the node's payment list. Returns the payment hash."""
        payment_request = self.external_invoice(amount_msat, memo)
        self.handle("POST", "/v1/channels/transactions", body=json.dumps({"payment_request": payment_request}).encode())
        return self.payment_hash_of(payment_request)

    # --- balances (the solvency check's view of the node) ------------------------------------------------------
    def _htlcs_out_msat(self) -> int:
        return sum(p.reserved_msat for p in self._payments.values() if p.status == "IN_FLIGHT")

    @staticmethod
    def _amount(msat: int) -> dict[str, str]:
        return {"sat": str(msat // 1000), "msat": str(msat)}

    def _channel_balance(self, request: _Request) -> SimResponse:
        with self._lock:
            out = self._htlcs_out_msat()
            zero = self._amount(0)
            return self._ok({
                "balance": str(self._balance_msat // 1000), "pending_open_balance": "0",
                "local_balance": self._amount(self._balance_msat), "remote_balance": zero,
                "unsettled_local_balance": self._amount(out), "unsettled_remote_balance": zero,
                "pending_open_local_balance": zero, "pending_open_remote_balance": zero})

    def _wallet_balance(self, request: _Request) -> SimResponse:
        with self._lock:
            return self._ok({"total_balance": str(self.wallet_sat), "confirmed_balance": str(self.wallet_sat),
                             "unconfirmed_balance": "0", "locked_balance": "0",
                             "reserved_balance_anchor_chan": "0", "account_balance": {}})

    def _list_channels(self, request: _Request) -> SimResponse:
        """One channel to the external network holding our whole balance (HTLC amounts in sat, as lnd shows)."""
        with self._lock:
            htlcs = [{"incoming": False, "amount": str(p.reserved_msat // 1000),
                      "hash_lock": base64.b64encode(bytes.fromhex(p.payment_hash)).decode(),
                      "expiration_height": self.block_height + 40, "htlc_index": str(p.payment_index),
                      "forwarding_channel": "0", "forwarding_htlc_index": "0"}
                     for p in self._payments.values() if p.status == "IN_FLIGHT" and p.reserved_msat]
            return self._ok({"channels": [{
                "active": True, "remote_pubkey": self.external_node.pubkey_hex, "chan_id": "1",
                "capacity": str(2 * self._balance_msat // 1000), "local_balance": str(self._balance_msat // 1000),
                "remote_balance": str(self._balance_msat // 1000), "commit_fee": "0",
                "unsettled_balance": str(self._htlcs_out_msat() // 1000), "pending_htlcs": htlcs}]})

    def _send_payment_sync(self, request: _Request) -> SimResponse:
        """lnd's SendPaymentSync (what ``lncli payinvoice`` does): a payment on our node that satflow may not know
        about. Errors come back in ``payment_error`` with HTTP 200, as lnd answers."""
        payment_request = str(request.body.get("payment_request") or "")
        decoded = self._decoded_for_send(payment_request)
        with self._lock:
            self._refuse_duplicate(str(decoded.payment_hash))
            amount = self._send_amount(decoded, _int_field(request.body, "amt_msat"))
            script = self._scripts.get(str(decoded.payment_hash), self._default_script)
            payment = self._start_payment(payment_request, decoded, amount, 10**15, script)
            ok = payment.status == "SUCCEEDED"
            return self._ok({"payment_error": "" if ok else payment.failure_reason,
                             "payment_preimage": base64.b64encode(bytes.fromhex(payment.preimage)).decode() if ok
                             else "", "payment_hash": base64.b64encode(bytes.fromhex(payment.payment_hash)).decode()})

    def _list_payments(self, request: _Request) -> SimResponse:
        """lnd's ListPayments: index_offset (exclusive), max_payments, reversed=false, include_incomplete."""
        try:
            offset = int(request.query.get("index_offset", "0") or 0)
            limit = int(request.query.get("max_payments", "100") or 100)
        except ValueError as exc:
            raise _RpcError(lnd_json.GRPC_INVALID_ARGUMENT, "index_offset and max_payments are integers") from exc
        incomplete = request.query.get("include_incomplete", "true") == "true"
        newest_first = request.query.get("reversed", "false") == "true"
        with self._lock:
            payments = [p for p in sorted(self._payments.values(), key=lambda p: p.payment_index)
                        if incomplete or p.status == "SUCCEEDED"]
            if newest_first:  # lnd: the page BEFORE index_offset (0: the end), still listed oldest first
                before = [p for p in payments if offset == 0 or p.payment_index < offset]
                chosen = before[-limit:] if limit else []
            else:
                chosen = [p for p in payments if p.payment_index > offset][:limit]
            listed = [self._payment_json(p) for p in chosen]
            return self._ok({"payments": listed,
                             "first_index_offset": str(chosen[0].payment_index if chosen else 0),
                             "last_index_offset": str(chosen[-1].payment_index if chosen else offset),
                             "total_num_payments": "0"})

    # --- the external network ----------------------------------------------------------------------------------
    def external_invoice(
        self, amount_msat: int | None, memo: str = "", *, expiry_s: int = 3600, payee: str = "external"
    ) -> str:
        """An invoice of the external network for our node to pay (amount-less when ``amount_msat`` is None);
        ``payee="sanctioned"`` has it issued by the sanctioned node instead."""
        if payee not in ("external", "sanctioned"):
            raise ValueError("payee must be 'external' or 'sanctioned'")
        with self._lock:
            invoice = self._new_invoice(
                key=self.external_node if payee == "external" else self.sanctioned_node,
                value_msat=amount_msat or 0, memo=memo, description_hash="",
                expiry=expiry_s, private=False, preimage=None,
            )
            self._external_invoices[invoice.payment_hash] = invoice
            return invoice.payment_request

    def external_pay(self, payment_request: str, amount_msat: int | None = None) -> str:
        """The external network pays one of OUR invoices: settle it and notify subscribers. Returns the preimage."""
        try:
            payment_hash = self.payment_hash_of(payment_request)
        except ValueError as exc:
            raise ExternalPaymentError(str(exc)) from exc
        with self._lock:
            self._expire_invoices()
            invoice = self._our_invoices.get(payment_hash)
            if invoice is None:
                raise ExternalPaymentError("not an invoice of our node")
            if invoice.state != "OPEN":
                raise ExternalPaymentError(f"invoice is {invoice.state}")
            paid = self._amount_to_pay(invoice, amount_msat)
            self._settle_our_invoice(invoice, paid)
            return invoice.preimage

    @staticmethod
    def payment_hash_of(payment_request: str) -> str:
        """The payment hash of any valid payment request (raises ValueError otherwise)."""
        try:
            return str(decode_invoice(payment_request.strip().lower()).payment_hash)
        except Exception as exc:  # bolt11 raises several unrelated types for a bad string
            raise ValueError(f"undecodable payment request: {exc}") from exc

    @staticmethod
    def _amount_to_pay(invoice: _Invoice, amount_msat: int | None) -> int:
        if invoice.value_msat == 0:
            if not amount_msat or amount_msat <= 0:
                raise ExternalPaymentError("an amount-less invoice needs an amount")
            return amount_msat
        paid = invoice.value_msat if amount_msat is None else amount_msat
        if not invoice.value_msat <= paid <= 2 * invoice.value_msat:  # lnd accepts overpayment up to 2x
            raise ExternalPaymentError(f"amount {paid} does not pay an invoice of {invoice.value_msat} msat")
        return paid

    def _settle_our_invoice(self, invoice: _Invoice, paid_msat: int) -> None:
        self._settle_index += 1
        invoice.state = "SETTLED"
        invoice.settle_index = self._settle_index
        invoice.settle_date = self._now()
        invoice.amt_paid_msat = paid_msat
        self._balance_msat += paid_msat  # inbound HTLCs move channel balance to our side
        self._notify_invoice(invoice)

    # --- invoices ----------------------------------------------------------------------------------------------
    def _new_invoice(
        self, *, key: NodeKey, value_msat: int, memo: str, description_hash: str, expiry: int, private: bool,
        preimage: str | None,
    ) -> _Invoice:
        preimage = preimage or self._randbytes(32).hex()
        payment_hash = hashlib.sha256(bytes.fromhex(preimage)).hexdigest()
        payment_addr = self._randbytes(32).hex()
        now = self._now()
        payment_request = encode_invoice(
            key=key, payment_hash_hex=payment_hash, payment_secret_hex=payment_addr, amount_msat=value_msat,
            timestamp=now, expiry_s=expiry, memo=memo, description_hash_hex=description_hash,
        )
        return _Invoice(
            payment_hash=payment_hash, preimage=preimage, payment_addr=payment_addr, payment_request=payment_request,
            value_msat=value_msat, memo=memo, description_hash=description_hash, creation_date=now, expiry=expiry,
            cltv_expiry=DEFAULT_MIN_FINAL_CLTV, private=private,
        )

    def _expire_invoices(self) -> None:
        """lnd's expiry watcher cancels OPEN invoices past their expiry (no SubscribeInvoices event)."""
        now = self._now()
        for invoice in (*self._our_invoices.values(), *self._external_invoices.values()):
            if invoice.state == "OPEN" and now >= invoice.creation_date + invoice.expiry:
                invoice.state = "CANCELED"

    def _invoice_json(self, invoice: _Invoice) -> dict[str, Any]:
        htlcs = []
        if invoice.state == "SETTLED":
            htlcs.append(
                lnd_json.invoice_htlc_json(
                    amt_msat=invoice.amt_paid_msat, accept_time=invoice.settle_date,
                    resolve_time=invoice.settle_date, block_height=self.block_height,
                )
            )
        return lnd_json.invoice_json(
            memo=invoice.memo, preimage_hex=invoice.preimage, payment_hash_hex=invoice.payment_hash,
            value_msat=invoice.value_msat, state=invoice.state, creation_date=invoice.creation_date,
            settle_date=invoice.settle_date, payment_request=invoice.payment_request,
            description_hash_hex=invoice.description_hash, expiry=invoice.expiry, cltv_expiry=invoice.cltv_expiry,
            private=invoice.private, add_index=invoice.add_index, settle_index=invoice.settle_index,
            amt_paid_msat=invoice.amt_paid_msat, payment_addr_hex=invoice.payment_addr, htlcs=htlcs,
        )

    def _notify_invoice(self, invoice: _Invoice) -> None:
        snapshot = self._invoice_json(invoice)
        for watcher in self._invoice_watchers:
            watcher.put(snapshot)

    def _get_info(self, request: _Request) -> SimResponse:
        return self._ok({
            "version": "0.18.5-beta commit=v0.18.5-beta",
            "commit_hash": "satflow-simulator",
            "identity_pubkey": self.our_node.pubkey_hex,
            "alias": "satflow-sim",
            "color": "#3399ff",
            "num_pending_channels": 0,
            "num_active_channels": 1,
            "num_inactive_channels": 0,
            "num_peers": 1,
            "block_height": self.block_height,
            "block_hash": hashlib.sha256(str(self.block_height).encode()).hexdigest(),
            "best_header_timestamp": str(self._now()),
            "synced_to_chain": True,
            "synced_to_graph": True,
            "testnet": False,
            "chains": [{"chain": "bitcoin", "network": "regtest"}],
            "uris": [],
            "features": lnd_json.INVOICE_FEATURES_JSON,
            "require_htlc_interceptor": False,
            "store_final_htlc_resolutions": False,
        })

    def _add_invoice(self, request: _Request) -> SimResponse:
        body = request.body
        value_msat = _int_field(body, "value_msat") or _int_field(body, "value") * 1000
        memo = str(body.get("memo") or "")
        if len(memo.encode()) > MAX_MEMO_BYTES:
            raise _RpcError(lnd_json.GRPC_UNKNOWN, f"memo too large (maxsize={MAX_MEMO_BYTES} bytes)")
        description_hash = _hex_of_b64(body.get("description_hash"), "description_hash")
        if description_hash and len(description_hash) != 64:
            raise _RpcError(lnd_json.GRPC_UNKNOWN, "description hash is not 32 bytes")
        preimage = _hex_of_b64(body.get("r_preimage"), "r_preimage") or None
        if value_msat < 0:
            raise _RpcError(lnd_json.GRPC_UNKNOWN, "payment of negative value is not allowed")
        with self._lock:
            if preimage and hashlib.sha256(bytes.fromhex(preimage)).hexdigest() in self._our_invoices:
                raise _RpcError(lnd_json.GRPC_UNKNOWN, "invoice with payment hash already exists")
            invoice = self._new_invoice(
                key=self.our_node, value_msat=value_msat, memo=memo, description_hash=description_hash,
                expiry=_int_field(body, "expiry") or DEFAULT_INVOICE_EXPIRY_S, private=_bool_field(body, "private"),
                preimage=preimage,
            )
            self._add_index += 1
            invoice.add_index = self._add_index
            self._our_invoices[invoice.payment_hash] = invoice
            self._notify_invoice(invoice)
            return self._ok({
                "r_hash": lnd_json.b64(invoice.payment_hash),
                "payment_request": invoice.payment_request,
                "add_index": str(invoice.add_index),
                "payment_addr": lnd_json.b64(invoice.payment_addr),
            })

    def _list_invoices(self, request: _Request) -> SimResponse:
        offset = _int_field(request.query, "index_offset")
        limit = _int_field(request.query, "num_max_invoices") or DEFAULT_LIST_PAGE
        pending_only = _bool_field(request.query, "pending_only")
        with self._lock:
            invoices = [
                invoice for invoice in self._our_invoices.values()
                if not pending_only or invoice.state in ("OPEN", "ACCEPTED")
            ]
            if _bool_field(request.query, "reversed"):
                before = [invoice for invoice in invoices if offset == 0 or invoice.add_index < offset]
                page = before[-limit:]
            else:
                page = [invoice for invoice in invoices if invoice.add_index > offset][:limit]
            return self._ok({
                "invoices": [self._invoice_json(invoice) for invoice in page],
                "last_index_offset": str(page[-1].add_index if page else 0),
                "first_index_offset": str(page[0].add_index if page else 0),
            })

    def _lookup_invoice(self, request: _Request) -> SimResponse:
        r_hash_str = request.path_params["r_hash_str"].lower()
        if not re.fullmatch(r"[0-9a-f]{64}", r_hash_str):
            raise _RpcError(lnd_json.GRPC_UNKNOWN, "payment hash must be exactly 32 bytes")
        with self._lock:
            invoice = self._our_invoices.get(r_hash_str)
            if invoice is None:
                raise _RpcError(lnd_json.GRPC_NOT_FOUND, "unable to locate invoice")
            return self._ok(self._invoice_json(invoice))

    def _cancel_invoice(self, request: _Request) -> SimResponse:
        payment_hash = _hex_of_b64(request.body.get("payment_hash"), "payment_hash")
        with self._lock:
            invoice = self._our_invoices.get(payment_hash)
            if invoice is None:
                raise _RpcError(lnd_json.GRPC_UNKNOWN, "unable to locate invoice")
            if invoice.state == "SETTLED":
                raise _RpcError(lnd_json.GRPC_UNKNOWN, "invoice already settled")
            invoice.state = "CANCELED"  # idempotent for an already cancelled invoice, as in lnd
            return self._ok({})

    def _decode_pay_req(self, request: _Request) -> SimResponse:
        _check_network(request.path_params["pay_req"])
        try:
            decoded = decode_invoice(request.path_params["pay_req"])
        except Exception as exc:  # bolt11 raises several unrelated types for a bad string
            raise _RpcError(lnd_json.GRPC_UNKNOWN, f"invalid payment request: {exc}") from exc
        return self._ok(
            lnd_json.pay_req_json(
                destination=str(decoded.payee), payment_hash_hex=decoded.payment_hash,
                amount_msat=int(decoded.amount_msat or 0), timestamp=decoded.date, expiry=decoded.expiry,
                description=decoded.description or "", description_hash_hex=decoded.description_hash or "",
                cltv_expiry=decoded.min_final_cltv_expiry, payment_addr_hex=decoded.payment_secret or "",
            )
        )

    def _subscribe_invoices(self, request: _Request) -> SimResponse:
        add_index = _int_field(request.query, "add_index")
        settle_index = _int_field(request.query, "settle_index")
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            backlog = []
            if add_index:  # zero means "no backlog", as in lnd
                # Adds in their current state; lnd's subscription drops any event whose invoice is neither OPEN
                # nor SETTLED (a cancelled invoice never appears, not even in the backlog).
                backlog += [self._invoice_json(i) for i in self._our_invoices.values()
                            if i.add_index > add_index and i.state in ("OPEN", "SETTLED")]
            if settle_index:
                settled = [i for i in self._our_invoices.values() if i.settle_index > settle_index]
                backlog += [self._invoice_json(i) for i in sorted(settled, key=lambda i: i.settle_index)]
            self._invoice_watchers.append(events)  # registered with the backlog: no event can slip between

        def unsubscribe() -> None:
            with self._lock:
                if events in self._invoice_watchers:
                    self._invoice_watchers.remove(events)

        return 200, dict(lnd_json.JSON_HEADERS), self._stream(backlog, events, unsubscribe, final=lambda _: False)

    def _stream(
        self,
        first: Iterable[dict[str, Any]],
        events: queue.Queue[dict[str, Any]] | None,
        unsubscribe: Callable[[], None],
        final: Callable[[dict[str, Any]], bool],
    ) -> Iterator[bytes]:
        """Yield ``first``, then live events until a final one; stall after ``stream_idle_s`` without news."""
        try:
            for result in first:
                yield lnd_json.line({"result": result})
            if events is None:
                return
            while True:
                try:
                    result = events.get(timeout=self.stream_idle_s) if self.stream_idle_s > 0 else events.get_nowait()
                except queue.Empty:
                    raise SimulatedReadTimeout("no update within the stream's idle time") from None
                yield lnd_json.line({"result": result})
                if final(result):
                    return
        finally:
            unsubscribe()

    # --- payments ----------------------------------------------------------------------------------------------
    def _send_payment(self, request: _Request) -> SimResponse:
        body = request.body
        payment_request = str(body.get("payment_request") or "").lower()
        if not payment_request:
            raise _RpcError(lnd_json.GRPC_UNKNOWN, "simulator: only payment_request sends are supported")
        if _int_field(body, "timeout_seconds") < 0:  # 0 is accepted since lnd 0.18 (no pathfinding deadline)
            raise _RpcError(lnd_json.GRPC_UNKNOWN, "timeout_seconds must not be negative")
        fee_limit_msat = self._fee_limit_msat(body)
        decoded = self._decoded_for_send(payment_request)
        amount_msat = self._send_amount(decoded, _int_field(body, "amt_msat") or _int_field(body, "amt") * 1000)
        if decoded.payee == self.our_node.pubkey_hex and not _bool_field(body, "allow_self_payment"):
            raise _RpcError(lnd_json.GRPC_UNKNOWN, "self-payments not allowed")
        payment_hash = decoded.payment_hash
        with self._lock:
            script = self._scripts.get(payment_hash, self._default_script)
            if script.send_timeout == "before_node":
                raise SimulatedReadTimeout("the send never reached the node")
            self._refuse_duplicate(payment_hash)
            payment = self._start_payment(payment_request, decoded, amount_msat, fee_limit_msat, script)
            if script.send_timeout == "after_node":
                raise SimulatedReadTimeout("the node took the payment; the client's read timed out")
            updates = [self._payment_json(payment, status="INITIATED" if self.use_status_initiated else "IN_FLIGHT",
                                          htlcs=False)]
            if payment.htlc_dispatched:
                updates.append(self._payment_json(payment, status="IN_FLIGHT"))
            if payment.status in FINAL_PAYMENT_STATUSES:
                updates.append(self._payment_json(payment))
            if _bool_field(body, "no_inflight_updates"):
                updates = [u for u in updates if u["status"] in FINAL_PAYMENT_STATUSES]
            return 200, dict(lnd_json.JSON_HEADERS), self._payment_stream(payment, updates)

    @staticmethod
    def _fee_limit_msat(body: Mapping[str, Any]) -> int:
        fee_limit_msat, fee_limit_sat = _int_field(body, "fee_limit_msat"), _int_field(body, "fee_limit_sat")
        if fee_limit_msat and fee_limit_sat:
            raise _RpcError(lnd_json.GRPC_UNKNOWN, "sat and msat arguments are mutually exclusive")
        return fee_limit_msat or fee_limit_sat * 1000  # 0: zero-fee routes only, as in lnd

    def _decoded_for_send(self, payment_request: str) -> Any:
        _check_network(payment_request)
        try:
            decoded = decode_invoice(payment_request)
        except Exception as exc:  # bolt11 raises several unrelated types for a bad string
            raise _RpcError(lnd_json.GRPC_UNKNOWN, f"invalid payment request: {exc}") from exc
        expires_at = decoded.date + decoded.expiry
        if self._now() >= expires_at:
            raise _RpcError(lnd_json.GRPC_UNKNOWN, f"invoice expired. Valid until {_go_time(expires_at)}")
        return decoded

    @staticmethod
    def _send_amount(decoded: Any, requested_msat: int) -> int:
        if decoded.amount_msat is None:
            if requested_msat <= 0:
                raise _RpcError(lnd_json.GRPC_UNKNOWN, "amount must be specified when paying a zero amount invoice")
            return requested_msat
        if requested_msat:
            raise _RpcError(
                lnd_json.GRPC_UNKNOWN, "amount must not be specified when paying a non-zero  amount invoice"
            )  # sic: lnd's message has the double space
        return int(decoded.amount_msat)

    def _refuse_duplicate(self, payment_hash: str) -> None:
        existing = self._payments.get(payment_hash)
        if existing is None or existing.status == "FAILED":  # lnd lets a failed payment be retried
            return
        if existing.status == "SUCCEEDED":
            raise _RpcError(lnd_json.GRPC_ALREADY_EXISTS, "invoice is already paid")
        raise _RpcError(lnd_json.GRPC_ALREADY_EXISTS, "payment is in transition")

    def _route_fee(self, amount_msat: int) -> int:
        return self.fee_base_msat + amount_msat * self.fee_rate_ppm // 1_000_000

    def _start_payment(
        self, payment_request: str, decoded: Any, amount_msat: int, fee_limit_msat: int, script: PaymentScript
    ) -> _Payment:
        self._payment_index += 1
        fee_msat = script.fee_msat if script.fee_msat is not None else self._route_fee(amount_msat)
        payment = _Payment(
            payment_hash=decoded.payment_hash, payment_request=payment_request, destination=str(decoded.payee),
            value_msat=amount_msat, fee_msat=fee_msat, creation_time_ns=self._now_ns(),
            payment_index=self._payment_index, final_status=script.status,
            final_reason=script.failure_reason if script.status == "FAILED" else "FAILURE_REASON_NONE",
            tracks_left=script.in_flight_tracks, held=script.hold,
        )
        self._payments[payment.payment_hash] = payment
        pathfinding_failure = self._pathfinding_failure(payment, fee_limit_msat)
        if pathfinding_failure:
            payment.htlc_dispatched = False
            self._finish_payment(payment, "FAILED", pathfinding_failure)
            return payment
        payment.reserved_msat = amount_msat + fee_msat
        self._balance_msat -= payment.reserved_msat
        if not payment.held and payment.tracks_left == 0:
            self._finish_payment(payment, payment.final_status, payment.final_reason)
        return payment

    def _pathfinding_failure(self, payment: _Payment, fee_limit_msat: int) -> str | None:
        """Failures lnd finds before any HTLC leaves: no known destination, fees above the limit, no balance."""
        invoice = self._external_invoices.get(payment.payment_hash)
        if invoice is None or payment.destination != self.external_node.pubkey_hex:
            return "FAILURE_REASON_NO_ROUTE"
        if payment.final_status == "SUCCEEDED" and payment.fee_msat > fee_limit_msat:
            return "FAILURE_REASON_NO_ROUTE"
        if payment.value_msat + payment.fee_msat > self._balance_msat:
            return "FAILURE_REASON_INSUFFICIENT_BALANCE"
        return None

    def _finish_payment(self, payment: _Payment, status: str, reason: str) -> None:
        invoice = self._external_invoices.get(payment.payment_hash)
        if status == "SUCCEEDED" and invoice is not None and invoice.state != "OPEN":
            status, reason = "FAILED", "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS"  # cancelled/expired meanwhile
        self._balance_msat += payment.reserved_msat  # release the reservation, then charge what was spent
        payment.reserved_msat = 0
        if status == "SUCCEEDED":
            assert invoice is not None
            self._balance_msat -= payment.value_msat + payment.fee_msat
            invoice.state, invoice.settle_date, invoice.amt_paid_msat = "SETTLED", self._now(), payment.value_msat
            payment.preimage = invoice.preimage
        payment.status, payment.failure_reason = status, reason
        payment.resolve_time_ns = self._now_ns()
        snapshot = self._payment_json(payment)
        for watcher in self._payment_watchers.get(payment.payment_hash, []):
            watcher.put(snapshot)

    def _payment_json(self, payment: _Payment, status: str | None = None, htlcs: bool = True) -> dict[str, Any]:
        """``htlcs=False``: the record before its first attempt (lnd's first stream update has no HTLCs)."""
        status = status or payment.status
        final = status in FINAL_PAYMENT_STATUSES
        attempts = []
        if htlcs and payment.htlc_dispatched and status != "INITIATED":
            htlc_status = {"SUCCEEDED": "SUCCEEDED", "FAILED": "FAILED"}.get(status, "IN_FLIGHT")
            attempts.append(
                lnd_json.htlc_attempt_json(
                    attempt_id=payment.payment_index, status=htlc_status, amount_msat=payment.value_msat,
                    fee_msat=payment.fee_msat, destination_pubkey=payment.destination,
                    attempt_time_ns=payment.creation_time_ns,
                    resolve_time_ns=payment.resolve_time_ns if final else 0,
                    preimage_hex=payment.preimage if status == "SUCCEEDED" else lnd_json.ZERO_PREIMAGE_HEX,
                    block_height=self.block_height,
                )
            )
        return lnd_json.payment_json(
            payment_hash_hex=payment.payment_hash,
            preimage_hex=payment.preimage if status == "SUCCEEDED" else lnd_json.ZERO_PREIMAGE_HEX,
            value_msat=payment.value_msat, fee_msat=payment.fee_msat if status == "SUCCEEDED" else 0,
            creation_time_ns=payment.creation_time_ns, payment_request=payment.payment_request, status=status,
            payment_index=payment.payment_index,
            failure_reason=payment.failure_reason if status == "FAILED" else "FAILURE_REASON_NONE", htlcs=attempts,
        )

    def _payment_stream(self, payment: _Payment, updates: list[dict[str, Any]]) -> Iterator[bytes]:
        """Updates so far; if not final yet, live updates (a resolve()) until final, else a stall."""
        if payment.status in FINAL_PAYMENT_STATUSES:
            return self._stream(updates, None, lambda: None, final=lambda _: True)
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        watchers = self._payment_watchers.setdefault(payment.payment_hash, [])
        watchers.append(events)

        def unsubscribe() -> None:
            with self._lock:
                if events in watchers:
                    watchers.remove(events)

        return self._stream(updates, events, unsubscribe, final=_is_final_payment)

    def _track_payment(self, request: _Request) -> SimResponse:
        payment_hash = _hex_of_b64(request.path_params["payment_hash"], "payment_hash")
        with self._lock:
            payment = self._payments.get(payment_hash)
            if payment is None:
                raise _RpcError(lnd_json.GRPC_NOT_FOUND, "payment isn't initiated")
            if payment.status == "IN_FLIGHT" and not payment.held:
                if payment.tracks_left == 0:
                    self._finish_payment(payment, payment.final_status, payment.final_reason)
                else:
                    payment.tracks_left -= 1
            updates = [self._payment_json(payment)]
            if _bool_field(request.query, "no_inflight_updates") and payment.status not in FINAL_PAYMENT_STATUSES:
                updates = []
            return 200, dict(lnd_json.JSON_HEADERS), self._payment_stream(payment, updates)


class _HttpxLineStream(httpx.SyncByteStream):
    """A simulator stream as an httpx body: stalls become the client's ReadTimeout; closing ends the stream."""

    def __init__(self, lines: Iterator[bytes], request: httpx.Request) -> None:
        self._lines = lines
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._lines
        except SimulatedReadTimeout as exc:
            raise httpx.ReadTimeout(str(exc), request=self._request) from exc

    def close(self) -> None:
        close = getattr(self._lines, "close", None)
        if close is not None:
            close()
