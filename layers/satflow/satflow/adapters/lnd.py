"""LND REST adapter (lnd v0.18/v0.19): invoices, payments and node info as domain types.

LND's REST gateway speaks protobuf JSON with proto field names:

* ``bytes`` fields are standard base64 in bodies and responses; in URL paths they are base64url (padded).
  ``Payment.payment_hash``/``payment_preimage`` and ``PayReq.payment_hash`` are hex *strings*, not bytes.
* ``int64``/``uint64`` are JSON strings; we send them as strings and parse them with ``int()``.
* Server streams (``/v2/router/send``, ``/v2/router/track``, ``/v1/invoices/subscribe``) are newline-delimited
  JSON: each line is ``{"result": ...}`` or ``{"error": {"code", "message", "details"}}``. An error before the
  first message arrives with a non-200 status and the same ``{"error": ...}`` body; unary calls return
  ``{"code", "message", "details"}``.

Two families of calls, two error contracts:

* Payment calls (:meth:`LndRestClient.send_payment`, :meth:`LndRestClient.track_payment`) never raise for node
  or transport trouble: they return a :data:`PaymentOutcome`. A timeout or a broken connection is
  ``PaymentUnknown`` (or ``PaymentInFlight`` if LND had already acknowledged the payment) - never ``FAILED``.
* Invoice and info calls raise typed errors: ``LightningNodeUnavailable`` (a TransientError: safe to retry) for
  timeouts, transport errors and unmapped 5xx; ``LightningNodeError`` for unmapped 4xx; mapped messages raise
  their own class (see :mod:`satflow.adapters.lnd_errors`).

httpx is imported on first use, not at import time (cold starts). Every request carries a bounded timeout.
"""
from __future__ import annotations

import base64
import json
import math
import re
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from satflow.domain.errors import SatflowError, ValidationError
from satflow.domain.lightning import (
    AddInvoiceResult,
    DecodedPayReq,
    InvalidPaymentRequest,
    InvoicePage,
    InvoiceState,
    LightningNodeError,
    LightningNodeUnavailable,
    NodeInfo,
    NodeInvoice,
    PaymentFailed,
    PaymentInFlight,
    PaymentOutcome,
    PaymentSucceeded,
    PaymentUnknown,
    validate_hash_hex,
)
from satflow.domain.money import MAX_AMOUNT_MSAT

from .lnd_errors import error_class_for_message, failure_reason_meaning, payment_outcome_for_message, status_meaning

if TYPE_CHECKING:  # pragma: no cover - typing only; httpx loads lazily
    import ssl

    import httpx

MACAROON_HEADER = "Grpc-Metadata-macaroon"
DEFAULT_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0  # an unreachable node should fail fast, whatever the read budget
MAX_MEMO_BYTES = 639  # the longest description a BOLT11 tagged field can carry
MAX_ERROR_BODY_CHARS = 300
_GRPC_UNAVAILABLE = 14
_GRPC_DEADLINE_EXCEEDED = 4
_GRPC_UNIMPLEMENTED = 12
_GRPC_LND_REJECTED = (2, 3)  # Unknown (LND's plain errors) and InvalidArgument
_PAY_REQ_RE = re.compile(r"^ln[a-z0-9]+$")
_HEX_RE = re.compile(r"^(?:[0-9a-fA-F]{2})+$")
_LND_NETWORK_NAMES = {"mainnet": "bitcoin"}  # LND says mainnet; our settings say bitcoin


def _httpx() -> Any:
    import httpx

    return httpx


# --- encodings ---------------------------------------------------------------------------------------------------
def b64_to_hex(value: object) -> str:
    """LND JSON ``bytes`` (standard base64) to hex; absent or empty is ""."""
    return base64.b64decode(str(value or "")).hex()


def hex_to_b64(value_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(value_hex)).decode()


def hex_to_b64url(value_hex: str) -> str:
    """For ``bytes`` in URL paths: grpc-gateway decodes padded base64url there (standard base64 has ``/``)."""
    return base64.urlsafe_b64encode(bytes.fromhex(value_hex)).decode()


def _int(value: object) -> int:
    # int64 arrive as strings; the gateway emits zero values, but an absent field still means zero.
    return int(value or 0)  # type: ignore[call-overload]


# --- response parsing --------------------------------------------------------------------------------------------
def parse_invoice(data: Mapping[str, Any]) -> NodeInvoice:
    return NodeInvoice(
        payment_hash=b64_to_hex(data.get("r_hash")),
        state=InvoiceState(data.get("state", "OPEN")),
        value_msat=_int(data.get("value_msat")),
        amt_paid_msat=_int(data.get("amt_paid_msat")),
        settle_index=_int(data.get("settle_index")),
        add_index=_int(data.get("add_index")),
        settle_date=_int(data.get("settle_date")),
        creation_date=_int(data.get("creation_date")),
        expiry=_int(data.get("expiry")),
        payment_request=str(data.get("payment_request") or ""),
        memo=str(data.get("memo") or ""),
        is_keysend=bool(data.get("is_keysend", False)),
    )


def outcome_from_payment(payment: Mapping[str, Any]) -> PaymentOutcome:
    """An ``lnrpc.Payment`` (router stream result) as a domain outcome, through the status table."""
    status = str(payment.get("status") or "")
    outcome_type = status_meaning(status)
    if outcome_type is PaymentSucceeded:
        return PaymentSucceeded(
            preimage_hex=str(payment.get("payment_preimage") or ""),
            fee_msat=_int(payment.get("fee_msat")),
            amount_msat=_int(payment.get("value_msat")),
        )
    if outcome_type is PaymentFailed:
        reason = str(payment.get("failure_reason") or "")
        return PaymentFailed(failure_reason_meaning(reason), detail=reason)
    if outcome_type is PaymentInFlight:
        return PaymentInFlight(f"LND status {status}")
    return PaymentUnknown(f"LND status {status or 'missing'}")


def _error_fields(raw: bytes) -> tuple[int | None, str]:
    """(gRPC code, message) from an error body: unary ``{"code",...}`` or stream ``{"error": {...}}``."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None, raw[:MAX_ERROR_BODY_CHARS].decode("utf-8", "replace")
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        data = data["error"]
    if not isinstance(data, dict):
        return None, str(data)[:MAX_ERROR_BODY_CHARS]
    code = data.get("code")
    return (code if isinstance(code, int) else None), str(data.get("message") or "")


def _json_object(raw: bytes, operation: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise LightningNodeError(f"LND {operation}: response is not JSON", operation=operation) from exc
    if not isinstance(data, dict):
        raise LightningNodeError(f"LND {operation}: response is not a JSON object", operation=operation)
    return data


def _parsed(operation: str, parse: Callable[..., Any], *args: Any) -> Any:
    """Run a response parser; a shape we do not understand is a node error, not a crash with a KeyError."""
    try:
        return parse(*args)
    except (KeyError, TypeError, ValueError, ValidationError) as exc:
        raise LightningNodeError(f"LND {operation}: unexpected response shape", operation=operation) from exc


# --- argument checks (before any I/O) ----------------------------------------------------------------------------
def _non_negative_int(value: object, field: str, maximum: int = MAX_AMOUNT_MSAT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ValidationError(f"{field} must be an integer from 0 to {maximum}", field=field)
    return value


def _positive_int(value: object, field: str, maximum: int = 2**31 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= maximum:
        raise ValidationError(f"{field} must be an integer from 1 to {maximum}", field=field)
    return value


def _positive_seconds(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{field} must be a positive, finite number of seconds")
    return float(value)


def _wait_budget(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValidationError("wait_s must be a finite number of seconds >= 0", field="wait_s")
    return float(value)


def _pay_req_path_segment(payment_request: object) -> str:
    text = payment_request.strip().lower() if isinstance(payment_request, str) else ""
    text = text[len("lightning:"):] if text.startswith("lightning:") else text
    if not _PAY_REQ_RE.match(text):  # bech32 is alphanumeric: nothing else may reach the URL path
        raise InvalidPaymentRequest("payment_request is not a BOLT11 string", field="payment_request")
    return text


class LndRestClient:
    """A client for one LND node's REST API. Holds the macaroon; never shows it."""

    def __init__(
        self,
        base_url: str,
        macaroon_hex: str,
        tls_cert_pem: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: "httpx.BaseTransport | None" = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("https://", "http://")):
            raise ValueError("base_url must be an http(s) URL")
        if base_url.startswith("http://") and transport is None and not _is_loopback_url(base_url):
            # The macaroon is a bearer credential: plain http only to a node on this host (local runtime).
            raise ValueError("base_url must be https unless the node is on loopback")
        if not isinstance(macaroon_hex, str) or not _HEX_RE.match(macaroon_hex):
            raise ValueError("macaroon_hex must be a non-empty hex string")  # never echo the value
        self._base_url = base_url.rstrip("/")
        self._macaroon_hex = macaroon_hex
        self._tls_cert_pem = tls_cert_pem or None
        self._timeout_s = _positive_seconds(timeout_s, "timeout_s")
        self._transport = transport
        self._monotonic = monotonic
        self._client: "httpx.Client | None" = None

    @classmethod
    def from_secret(
        cls,
        secret: Mapping[str, Any],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: "httpx.BaseTransport | None" = None,
    ) -> "LndRestClient":
        """From the Secrets Manager secret ``{"url", "macaroon_hex", "tls_cert_pem"}`` (cert optional)."""
        missing = [key for key in ("url", "macaroon_hex") if not secret.get(key)]
        if missing:
            raise ValueError(f"LND secret lacks {', '.join(missing)}")
        return cls(
            base_url=str(secret["url"]),
            macaroon_hex=str(secret["macaroon_hex"]),
            tls_cert_pem=secret.get("tls_cert_pem") or None,
            timeout_s=timeout_s,
            transport=transport,
        )

    def __repr__(self) -> str:
        return (
            f"LndRestClient(base_url={self._base_url!r}, tls_cert_pinned={self._tls_cert_pem is not None}, "
            f"timeout_s={self._timeout_s})"
        )

    # --- lifecycle -------------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> "LndRestClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def ssl_context(self) -> "ssl.SSLContext":
        """TLS that trusts exactly LND's (usually self-signed) certificate when one is given, else system CAs."""
        import ssl

        if self._tls_cert_pem is None:
            return ssl.create_default_context()
        return ssl.create_default_context(cadata=self._tls_cert_pem)

    def _timeout(self, read_s: float) -> "httpx.Timeout":
        return _httpx().Timeout(
            connect=min(CONNECT_TIMEOUT_S, self._timeout_s), read=read_s, write=self._timeout_s, pool=self._timeout_s
        )

    def _http(self) -> "httpx.Client":
        if self._client is None:
            httpx = _httpx()
            self._client = httpx.Client(
                base_url=self._base_url,
                headers={MACAROON_HEADER: self._macaroon_hex, "Accept": "application/json"},
                # With an injected transport (tests, simulator) TLS is the transport's business.
                verify=self.ssl_context() if self._transport is None else True,
                timeout=self._timeout(self._timeout_s),
                transport=self._transport,
                follow_redirects=False,
            )
        return self._client

    # --- unary calls -----------------------------------------------------------------------------------------------
    def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
        rejected_as: type[SatflowError] | None = None,
    ) -> dict[str, Any]:
        httpx = _httpx()
        try:
            response = self._http().request(method, path, params=params, json=json_body)
        except httpx.TransportError as exc:  # connect/read/write/pool timeouts included
            raise LightningNodeUnavailable(
                f"LND {operation}: {type(exc).__name__}", operation=operation
            ) from exc
        if response.status_code != 200:
            raise self._error_for(operation, response.status_code, response.content, rejected_as)
        return _json_object(response.content, operation)

    @staticmethod
    def _error_for(
        operation: str, http_status: int, raw: bytes, rejected_as: type[SatflowError] | None = None
    ) -> SatflowError:
        grpc_code, message = _error_fields(raw)
        details = {"operation": operation, "http_status": http_status, "grpc_code": grpc_code}
        text = f"LND {operation}: {message or f'HTTP {http_status}'}"
        mapped = error_class_for_message(message)
        if mapped is not None:
            return mapped(text, **details)
        if rejected_as is not None and grpc_code in _GRPC_LND_REJECTED:
            return rejected_as(text, **details)
        if grpc_code == _GRPC_UNIMPLEMENTED or http_status == 501:
            return LightningNodeError(text, **details)  # e.g. LND built without a sub-server: config, not load
        if http_status >= 500 or grpc_code in (_GRPC_UNAVAILABLE, _GRPC_DEADLINE_EXCEEDED):
            return LightningNodeUnavailable(text, **details)
        return LightningNodeError(text, **details)

    def get_info(self) -> NodeInfo:
        data = self._call("get_info", "GET", "/v1/getinfo")
        return _parsed("get_info", _node_info, data)

    # --- solvency (read-only figures) ---------------------------------------------------------------------------
    def node_balances(self) -> "NodeBalances":
        """Channel local balances, outgoing/incoming HTLCs and the node's on-chain wallet (three GETs)."""
        from satflow.domain.solvency import NodeBalances

        channels = self._call("channel_balance", "GET", "/v1/balance/channels")
        wallet = self._call("wallet_balance", "GET", "/v1/balance/blockchain")
        listed = self._call("list_channels", "GET", "/v1/channels")

        def msat(amount: object) -> int:
            if not isinstance(amount, Mapping):
                return 0
            return _int(amount.get("msat")) or _int(amount.get("sat")) * 1000

        htlcs_in = htlcs_out = commit_fee = 0
        for channel in listed.get("channels") or []:
            commit_fee += _int(channel.get("commit_fee")) * 1000
            for htlc in channel.get("pending_htlcs") or []:
                if htlc.get("incoming"):
                    htlcs_in += _int(htlc.get("amount")) * 1000
                else:
                    htlcs_out += _int(htlc.get("amount")) * 1000
        # unsettled_local_balance is the node's own sum of outgoing HTLCs; the per-HTLC list is in whole sat.
        unsettled = msat(channels.get("unsettled_local_balance"))
        return NodeBalances(
            local_msat=msat(channels.get("local_balance")),
            pending_open_local_msat=msat(channels.get("pending_open_local_balance")),
            htlcs_out_msat=unsettled or htlcs_out, htlcs_in_msat=htlcs_in,
            wallet_msat=_int(wallet.get("total_balance")) * 1000, commit_fee_msat=commit_fee)

    def list_payments(self, index_offset: int = 0, max_payments: int = 100,
                      newest_first: bool = False) -> tuple[list["NodePayment"], int]:
        """Payments after ``index_offset`` in index order (incomplete ones included); returns (payments, the last
        index offset of the page). ``newest_first`` with offset 0: the latest payments (lnd's ``reversed``)."""
        from satflow.domain.solvency import NodePayment

        data = self._call("list_payments", "GET", "/v1/payments", params={
            "include_incomplete": "true", "index_offset": str(int(index_offset)),
            "max_payments": str(int(max_payments)), "reversed": "true" if newest_first else "false"})
        out = [NodePayment(payment_hash=str(p.get("payment_hash") or ""), status=str(p.get("status") or ""),
                           value_msat=_int(p.get("value_msat")), fee_msat=_int(p.get("fee_msat")),
                           payment_index=_int(p.get("payment_index")),
                           creation_time_ns=_int(p.get("creation_time_ns")))
               for p in data.get("payments") or []]
        return out, _int(data.get("last_index_offset"))

    def add_invoice(
        self,
        value_msat: int | None,
        *,
        memo: str = "",
        description_hash: bytes | None = None,
        expiry_s: int = 3600,
        private: bool = False,
    ) -> AddInvoiceResult:
        """A new invoice on our node. ``value_msat`` None (or 0) makes an amount-less invoice.

        Not idempotent: a retry after a timeout may leave one extra OPEN invoice on the node, which expires.
        With ``description_hash`` the invoice carries the hash (LNURL) and ``memo`` stays node-side only.
        """
        body: dict[str, Any] = {
            "memo": self._checked_memo(memo),
            "value_msat": str(_non_negative_int(value_msat or 0, "value_msat")),
            "expiry": str(_positive_int(expiry_s, "expiry_s")),
            "private": bool(private),
        }
        if description_hash is not None:
            if not isinstance(description_hash, bytes) or len(description_hash) != 32:
                raise ValidationError("description_hash must be 32 bytes", field="description_hash")
            body["description_hash"] = base64.b64encode(description_hash).decode()
        data = self._call("add_invoice", "POST", "/v1/invoices", json_body=body)
        return _parsed(
            "add_invoice",
            lambda d: AddInvoiceResult(
                payment_hash_hex=b64_to_hex(d["r_hash"]),
                payment_request=str(d["payment_request"]),
                add_index=_int(d.get("add_index")),
            ),
            data,
        )

    @staticmethod
    def _checked_memo(memo: object) -> str:
        if not isinstance(memo, str) or len(memo.encode()) > MAX_MEMO_BYTES:
            raise ValidationError(f"memo must be a string of at most {MAX_MEMO_BYTES} bytes", field="memo")
        return memo

    def lookup_invoice(self, payment_hash_hex: str) -> NodeInvoice:
        """Raises LightningInvoiceNotFound when the node has no such invoice."""
        payment_hash = validate_hash_hex(payment_hash_hex)
        data = self._call("lookup_invoice", "GET", f"/v1/invoice/{payment_hash}")  # r_hash_str: hex in this path
        return _parsed("lookup_invoice", parse_invoice, data)

    def list_invoices(
        self, index_offset: int = 0, num_max_invoices: int = 100, *, pending_only: bool = False
    ) -> InvoicePage:
        """Invoices with ``add_index > index_offset``, oldest first (LND pages by add_index only)."""
        params = {
            "index_offset": str(_non_negative_int(index_offset, "index_offset", 2**63 - 1)),
            "num_max_invoices": str(_positive_int(num_max_invoices, "num_max_invoices", 10_000)),
            "reversed": "false",
            "pending_only": "true" if pending_only else "false",
        }
        data = self._call("list_invoices", "GET", "/v1/invoices", params=params)
        return _parsed("list_invoices", _invoice_page, data)

    def iter_invoices(self, from_add_index: int = 0, *, page_size: int = 100) -> Iterator[NodeInvoice]:
        """Every invoice with ``add_index > from_add_index``, page by page, oldest first."""
        offset = from_add_index
        while True:
            page = self.list_invoices(offset, page_size)
            if not page.invoices or page.last_index_offset <= offset:  # done (or a node not advancing: stop)
                return
            yield from page.invoices
            offset = page.last_index_offset

    def settled_since(
        self, settle_index: int, *, from_add_index: int = 0, page_size: int = 100
    ) -> list[NodeInvoice]:
        """Invoices settled after ``settle_index``, in settle order: the catch-up poller's question.

        LND cannot page by settle_index, so this scans by add_index from ``from_add_index``. Keep that watermark
        at the lowest add_index that was still OPEN at the last poll (everything below it is settled, cancelled
        or expired), or the scan grows with the node's history.
        """
        _non_negative_int(settle_index, "settle_index", 2**63 - 1)
        settled = [
            invoice for invoice in self.iter_invoices(from_add_index, page_size=page_size)
            if invoice.state is InvoiceState.SETTLED and invoice.settle_index > settle_index
        ]
        return sorted(settled, key=lambda invoice: invoice.settle_index)

    def cancel_invoice(self, payment_hash_hex: str) -> None:
        """Cancel an OPEN/ACCEPTED invoice (idempotent on LND for an already cancelled one).

        Raises LightningInvoiceAlreadySettled if it was paid meanwhile: then it must be credited, not cancelled.
        """
        body = {"payment_hash": hex_to_b64(validate_hash_hex(payment_hash_hex))}
        self._call("cancel_invoice", "POST", "/v2/invoices/cancel", json_body=body)

    def decode_pay_req(self, payment_request: str) -> DecodedPayReq:
        """The node's reading of a payment request. Raises InvalidPaymentRequest when LND cannot decode it."""
        segment = _pay_req_path_segment(payment_request)
        data = self._call("decode_pay_req", "GET", f"/v1/payreq/{segment}", rejected_as=InvalidPaymentRequest)
        return _parsed("decode_pay_req", _decoded_pay_req, data)

    # --- invoice subscription --------------------------------------------------------------------------------------
    def subscribe_invoices(
        self,
        add_index: int = 0,
        settle_index: int = 0,
        *,
        idle_timeout_s: float | None = None,
        max_duration_s: float = 60.0,
    ) -> Iterator[NodeInvoice]:
        """Invoice events from ``/v1/invoices/subscribe``: first the backlog after the given indexes, then live.

        LND replays adds after a non-zero ``add_index`` and settlements after a non-zero ``settle_index`` (0 means
        "no backlog"). The iterator ends quietly after ``idle_timeout_s`` without an event (default: the client
        timeout) or once ``max_duration_s`` has passed; the caller then resubscribes from its stored indexes.
        A broken stream raises LightningNodeUnavailable.
        """
        httpx = _httpx()
        read_s = _positive_seconds(idle_timeout_s or self._timeout_s, "idle_timeout_s")
        deadline = self._monotonic() + _positive_seconds(max_duration_s, "max_duration_s")
        params = {
            "add_index": str(_non_negative_int(add_index, "add_index", 2**63 - 1)),
            "settle_index": str(_non_negative_int(settle_index, "settle_index", 2**63 - 1)),
        }
        try:
            with self._http().stream(
                "GET", "/v1/invoices/subscribe", params=params, timeout=self._timeout(read_s)
            ) as response:
                if response.status_code != 200:
                    raise self._error_for("subscribe_invoices", response.status_code, response.read())
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    yield self._invoice_event(line)
                    if self._monotonic() >= deadline:
                        return
        except httpx.ReadTimeout:
            # LND writes nothing (not even headers) until an event exists: a quiet stream is not an error.
            return
        except httpx.TransportError as exc:
            raise LightningNodeUnavailable(
                f"LND subscribe_invoices: {type(exc).__name__}", operation="subscribe_invoices"
            ) from exc

    @staticmethod
    def _invoice_event(line: str) -> NodeInvoice:
        data = _json_object(line.encode(), "subscribe_invoices")
        if "error" in data:
            _, message = _error_fields(line.encode())
            # A mid-stream error ends the stream; unless the table knows better, resubscribing is the remedy.
            error_class = error_class_for_message(message) or LightningNodeUnavailable
            raise error_class(f"LND subscribe_invoices: {message}", operation="subscribe_invoices")
        return _parsed("subscribe_invoices", parse_invoice, data.get("result"))

    # --- payments --------------------------------------------------------------------------------------------------
    def send_payment(
        self,
        payment_request: str,
        *,
        fee_limit_msat: int,
        timeout_seconds: int = 60,
        amount_msat: int | None = None,
        wait_s: float | None = None,
        outgoing_chan_ids: Sequence[int] = (),
        max_parts: int | None = None,
    ) -> PaymentOutcome:
        """Pay a BOLT11 request through ``/v2/router/send``; read the stream until a final status or ``wait_s``.

        ``fee_limit_msat`` is required (0 means zero-fee routes only). ``timeout_seconds`` is LND's pathfinding
        budget; ``wait_s`` (default: the client timeout) is how long this call waits for a final status. A read
        waits at most ``max(wait_s, timeout_s)``, so the call returns within about ``wait_s`` plus one read.
        ``amount_msat`` only for amount-less invoices (LND rejects it otherwise).

        Returns SUCCEEDED/FAILED when LND finishes in time; IN_FLIGHT if LND acknowledged the payment but did
        not finish; UNKNOWN on a timeout or transport error before any acknowledgement. Never raises for node or
        transport trouble; call it at most once per payment hash and track afterwards.
        """
        body: dict[str, Any] = {
            "payment_request": _pay_req_path_segment(payment_request),
            "fee_limit_msat": str(_non_negative_int(fee_limit_msat, "fee_limit_msat")),
            "timeout_seconds": _positive_int(timeout_seconds, "timeout_seconds", 3600),
            # In-flight updates on: the first one is LND's acknowledgement that the payment exists, which turns
            # a later read timeout into IN_FLIGHT instead of UNKNOWN.
            "no_inflight_updates": False,
        }
        if amount_msat is not None:
            body["amt_msat"] = str(_positive_int(amount_msat, "amount_msat", MAX_AMOUNT_MSAT))
        if outgoing_chan_ids:
            body["outgoing_chan_ids"] = [
                str(_positive_int(chan_id, "outgoing_chan_ids", 2**64 - 1)) for chan_id in outgoing_chan_ids
            ]
        if max_parts is not None:
            body["max_parts"] = _positive_int(max_parts, "max_parts", 1000)
        budget = self._timeout_s if wait_s is None else _wait_budget(wait_s)
        return self._payment_stream("send_payment", "POST", "/v2/router/send", budget, json_body=body)

    def track_payment(self, payment_hash_hex: str, *, wait_s: float = 0.0) -> PaymentOutcome:
        """The payment's current outcome from ``/v2/router/track/{hash}``; waits up to ``wait_s`` for a final one.

        LND sends the current state first, so ``wait_s=0`` answers after one line. NOT_FOUND means LND has no
        record of the hash ("payment isn't initiated"). Like send, never raises for node or transport trouble.
        """
        path = f"/v2/router/track/{hex_to_b64url(validate_hash_hex(payment_hash_hex))}"
        params = {"no_inflight_updates": "false"}  # true would withhold the current in-flight state
        return self._payment_stream("track_payment", "GET", path, _wait_budget(wait_s), params=params)

    def _payment_stream(
        self,
        operation: str,
        method: str,
        path: str,
        wait_s: float,
        *,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> PaymentOutcome:
        httpx = _httpx()
        deadline = self._monotonic() + wait_s
        read_s = max(wait_s, self._timeout_s)
        latest: PaymentOutcome | None = None  # the last non-final update: IN_FLIGHT beats UNKNOWN
        try:
            with self._http().stream(
                method, path, params=params, json=json_body, timeout=self._timeout(read_s)
            ) as response:
                if response.status_code != 200:
                    return self._payment_error(operation, response.status_code, response.read())
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    outcome = self._payment_update(operation, line, latest)
                    if not isinstance(outcome, (PaymentInFlight, PaymentUnknown)):
                        return outcome  # final, or a definite answer about this hash (not found, already paid...)
                    latest = outcome if latest is None or isinstance(outcome, PaymentInFlight) else latest
                    if self._monotonic() >= deadline:
                        return latest
        except httpx.TransportError as exc:  # read timeout, reset, connect failure: the outcome is not known
            return latest or PaymentUnknown(f"{operation}: {type(exc).__name__}")
        return latest or PaymentUnknown(f"{operation}: stream ended without a payment update")

    @staticmethod
    def _payment_update(operation: str, line: str, latest: PaymentOutcome | None) -> PaymentOutcome:
        try:
            data = json.loads(line)
            if "error" in data:
                _, message = _error_fields(line.encode())
                mapped = payment_outcome_for_message(message)
                # An unmapped mid-stream error breaks the stream, not the payment: keep what we knew.
                return mapped or latest or PaymentUnknown(f"{operation}: {message}")
            return outcome_from_payment(data["result"])
        except (KeyError, TypeError, ValueError, ValidationError):
            return PaymentUnknown(f"{operation}: unreadable stream line")

    @staticmethod
    def _payment_error(operation: str, http_status: int, raw: bytes) -> PaymentOutcome:
        _, message = _error_fields(raw)
        mapped = payment_outcome_for_message(message)
        if mapped is not None:
            return mapped
        # Unmapped: LND may or may not have recorded the payment. Unknown keeps the reservation.
        return PaymentUnknown(f"{operation}: HTTP {http_status}: {message}")


def _node_info(data: Mapping[str, Any]) -> NodeInfo:
    chains = data.get("chains") or [{}]
    network = str(chains[0].get("network") or "")
    return NodeInfo(
        identity_pubkey=str(data["identity_pubkey"]),
        alias=str(data.get("alias") or ""),
        version=str(data.get("version") or ""),
        network=_LND_NETWORK_NAMES.get(network, network),
        block_height=_int(data.get("block_height")),
        synced_to_chain=bool(data.get("synced_to_chain")),
        synced_to_graph=bool(data.get("synced_to_graph")),
        num_active_channels=_int(data.get("num_active_channels")),
    )


def _invoice_page(data: Mapping[str, Any]) -> InvoicePage:
    return InvoicePage(
        invoices=tuple(parse_invoice(item) for item in data.get("invoices") or ()),
        first_index_offset=_int(data.get("first_index_offset")),
        last_index_offset=_int(data.get("last_index_offset")),
    )


def _decoded_pay_req(data: Mapping[str, Any]) -> DecodedPayReq:
    return DecodedPayReq(
        destination=str(data["destination"]),
        payment_hash=str(data["payment_hash"]),  # a hex string in PayReq, not bytes
        amount_msat=_int(data.get("num_msat")),
        timestamp=_int(data.get("timestamp")),
        expiry=_int(data.get("expiry")),
        description=str(data.get("description") or ""),
        description_hash=str(data.get("description_hash") or ""),  # hex string too
        cltv_expiry=_int(data.get("cltv_expiry")),
    )


def _is_loopback_url(url: str) -> bool:
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")
