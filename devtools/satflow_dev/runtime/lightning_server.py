"""The Lightning simulator served over HTTP as our LND node, plus `/_sim/lightning` routes for the outside world.

LightningHttpServer: a ThreadingHTTPServer on 127.0.0.1:<free port> handing each request to
`LightningSimulator.handle`. Unary answers carry a Content-Length (keep-alive); streams (`/v1/invoices/subscribe`,
`/v2/router/send`, `/v2/router/track/...`) are chunked, one chunk per newline-terminated JSON line, written as the
simulator yields them. Like LND's REST gateway, the status line and headers go out with the first message, so an
idle subscription sends nothing at all. When the simulator stalls (`SimulatedReadTimeout`: a scripted send
timeout, or no news within `stream_idle_s`) the server writes nothing more and holds the connection until the
client gives up, which is what a client sees from a real node: its own read timeout. A stream whose client went
away is noticed within 0.1 s; the simulator's subscription is released at its next event (or idle timeout).

Plain http on loopback only: the server binds 127.0.0.1 and the secret's URL is `http://127.0.0.1:<port>`;
`LndRestClient` accepts an http URL (and does not itself restrict http to loopback hosts).

LightningService (a BackgroundService, started when the template declares the LND secret - the secret named by
the functions' SATFLOW_LND_SECRET_ID, else the resource `LndSecret`): starts the server, writes the secret
`{"url": "http://127.0.0.1:<port>", "macaroon_hex": <the simulator's>, "tls_cert_pem": null}` in moto's Secrets
Manager, and registers the dev routes on the API port:

  GET  /_sim/lightning                  {"url", "node_pubkey", "external_pubkey", "balance_msat", "invoice_subscribers"}
  POST /_sim/lightning/pay              {"payment_request", "amount_msat"?} -> 200 {"preimage", "payment_hash"}
                                        (the external network pays OUR invoice; refused -> 422 PAYMENT_REJECTED)
  POST /_sim/lightning/invoices         {"amount_msat": int|null, "memo"?, "expiry_s"?, "payee"?: "sanctioned"}
                                        -> 201 {"payment_request", "payment_hash"} (an external invoice for us to pay)
  POST /_sim/lightning/script           {"outcome": "succeed"|"fail"|"hold", "reason"?: "NO_ROUTE", "fee_msat"?,
                                         "in_flight_tracks"?, "send_timeout"?: "before_node"|"after_node",
                                         "payment_hash"?} -> 200 {"scripted": <hash>|"default"}
                                        (per payment hash, or without one for every later unscripted send)
  POST /_sim/lightning/resolve          {"payment_hash", "status": "SUCCEEDED"|"FAILED", "reason"?, "fee_msat"?}
                                        ends a held / in-flight payment -> 200 {"payment_hash", "status"}

Errors are `{"error": {"code", "message"}}`: 400 VALIDATION_ERROR, 404 NOT_FOUND, 405 METHOD_NOT_ALLOWED,
409 NOT_IN_FLIGHT, 422 PAYMENT_REJECTED.

Environment: SATFLOW_LND_SIM_PORT (default 0: a free port), SATFLOW_LND_SIM_STREAM_IDLE_S (default 300: how long
a stream waits for news before it stalls for good).
"""
from __future__ import annotations

import json
import logging
import queue
import re
import select
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .background_http import BackgroundHttpServer
from .dev_http import DevRouteInvalid, dev_error, dispatch, only_fields, read_body, required_string
from .resources import aws_client, put_secret
from .template import SecretSpec, TemplateModel

if TYPE_CHECKING:
    from satflow_dev.simulators.lightning import LightningSimulator

    from .local_runtime import LocalRuntime

log = logging.getLogger(__name__)

LND_SECRET_ENV = "SATFLOW_LND_SECRET_ID"
LND_SECRET_LOGICAL_ID = "LndSecret"
DEFAULT_STREAM_IDLE_S = 300.0
_WAIT_SLICE_S = 0.1


# ---------------------------------------------------------------------------------------------- HTTP server


class _Stop:
    """Pump messages other than a line."""


_END, _STALL = _Stop(), _Stop()


class _Pump:
    """Iterates a simulator stream in its own thread, so the connection thread can watch its socket meanwhile."""

    def __init__(self, lines: Iterator[bytes], name: str) -> None:
        self._lines = lines
        self.items: queue.Queue[Any] = queue.Queue()
        self._cancelled = threading.Event()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        from satflow_dev.simulators.lightning import SimulatedReadTimeout

        try:
            for line in self._lines:
                if self._cancelled.is_set():
                    break
                self.items.put(line)
            else:
                self.items.put(_END)
                return
        except SimulatedReadTimeout:
            self.items.put(_STALL)
            return
        except Exception as exc:  # a simulator bug: end the response abruptly, log it
            log.exception("lightning simulator stream failed")
            self.items.put(exc)
            return
        close = getattr(self._lines, "close", None)
        if close is not None:
            close()  # runs the simulator's unsubscribe

    def cancel(self) -> None:
        self._cancelled.set()


class LightningHttpServer(BackgroundHttpServer):
    """Serves one LightningSimulator's LND REST routes on host:port (0 = a free port)."""
    thread_name = "lnd-sim-http"

    def __init__(self, simulator: LightningSimulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.simulator = simulator
        self._stopping = threading.Event()
        self._streams_lock = threading.Lock()
        self._open_streams = 0
        super().__init__(_make_handler(self), host, port)


    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def open_streams(self) -> int:
        """Streamed responses still being served (a client that left is noticed within 0.1 s)."""
        with self._streams_lock:
            return self._open_streams

    def _count_stream(self, delta: int) -> None:
        with self._streams_lock:
            self._open_streams += delta


def _make_handler(server: LightningHttpServer) -> type[BaseHTTPRequestHandler]:
    class LndRequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _dispatch(self) -> None:
            from satflow_dev.simulators.lightning import SimulatedReadTimeout

            body = read_body(self)
            path, _, query = self.path.partition("?")
            try:
                status, headers, payload = server.simulator.handle(
                    self.command, unquote(path), query, body, dict(self.headers.items()))
            except SimulatedReadTimeout:
                log.debug("lnd-sim: %s %s stalls (scripted timeout)", self.command, path)
                self._hold_until_client_leaves()
                return
            if isinstance(payload, bytes):
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            else:
                self._stream(status, headers, payload, path)
            log.debug("lnd-sim: %s %s -> %d", self.command, path, status)

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _dispatch

        def _stream(self, status: int, headers: dict[str, str], lines: Iterator[bytes], path: str) -> None:
            pump = _Pump(lines, name=f"lnd-sim-stream:{path}")
            headers_sent = ended = False
            server._count_stream(1)
            try:
                while True:
                    item = self._next_item(pump)
                    if item is None:  # the client went away, or the server stops
                        return
                    if item is _STALL:
                        self._hold_until_client_leaves()
                        return
                    if isinstance(item, Exception):
                        return  # ends the connection without the last chunk: the client sees a broken stream
                    if not headers_sent:
                        self.send_response(status)
                        for name, value in headers.items():
                            self.send_header(name, value)
                        self.send_header("Transfer-Encoding", "chunked")
                        self.end_headers()
                        headers_sent = True
                    if item is _END:
                        self.wfile.write(b"0\r\n\r\n")
                        ended = True
                        return
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(item), item))
            except (BrokenPipeError, ConnectionResetError):
                return
            finally:
                pump.cancel()
                server._count_stream(-1)
                if not ended:  # keep-alive only after a complete chunked body
                    self.close_connection = True

        def _next_item(self, pump: _Pump) -> Any:
            while True:
                try:
                    return pump.items.get(timeout=_WAIT_SLICE_S)
                except queue.Empty:
                    if server.stopping or self._client_left():
                        self.close_connection = True
                        return None

        def _hold_until_client_leaves(self) -> None:
            """A real node stays silent: the client's read timeout decides. Then drop the connection."""
            self.close_connection = True
            while not server.stopping and not self._client_left():
                select.select([], [], [], _WAIT_SLICE_S)

        def _client_left(self) -> bool:
            try:
                readable, _, _ = select.select([self.connection], [], [], 0)
                if not readable:
                    return False
                return self.connection.recv(1, socket.MSG_PEEK) == b""
            except (OSError, ValueError):
                return True


        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
            log.debug("lnd-sim: " + format, *args)

    return LndRequestHandler


# ---------------------------------------------------------------------------------------------- the service


def lnd_secret_spec(model: TemplateModel) -> SecretSpec | None:
    """The secret the functions read LND's URL and macaroon from, if the template declares one."""
    names = {fn.env[LND_SECRET_ENV] for fn in model.functions if LND_SECRET_ENV in fn.env}
    for secret in model.secrets:
        if secret.name in names:
            return secret
    for secret in model.secrets:
        if secret.logical_id == LND_SECRET_LOGICAL_ID:
            return secret
    return None


class LightningService:
    """The Lightning simulator as our LND node (BackgroundService). `simulator` is the live instance: flow tests
    script payments and inspect invoices through it, or through the `/_sim/lightning` routes."""

    name = "lightning"

    def __init__(
        self,
        simulator: LightningSimulator | None = None,
        *,
        moto_url: str = "",
        secret: SecretSpec | None = None,
        port: int = 0,
        stream_idle_s: float = DEFAULT_STREAM_IDLE_S,
    ) -> None:
        if simulator is None:
            from satflow_dev.simulators.lightning import LightningSimulator

            simulator = LightningSimulator(stream_idle_s=stream_idle_s)
        self.simulator = simulator
        self.moto_url = moto_url
        self.secret = secret
        self.server = LightningHttpServer(simulator, "127.0.0.1", port)

    @classmethod
    def from_runtime(cls, runtime: LocalRuntime, **kwargs: Any) -> LightningService | None:
        assert runtime.model is not None
        secret = lnd_secret_spec(runtime.model)
        if secret is None:
            return None
        env = runtime.environ
        kwargs.setdefault("port", int(env.get("SATFLOW_LND_SIM_PORT") or 0))
        kwargs.setdefault("stream_idle_s", float(env.get("SATFLOW_LND_SIM_STREAM_IDLE_S") or DEFAULT_STREAM_IDLE_S))
        service = cls(moto_url=runtime.moto_url, secret=secret, **kwargs)
        if runtime.gateway is not None:
            runtime.gateway.register_dev_route("/_sim/lightning", service.dev_route)
        return service

    @property
    def url(self) -> str:
        return self.server.url

    def secret_value(self) -> dict[str, Any]:
        return self.simulator.secret(self.url)

    def describe(self) -> list[str]:
        where = f"; secret {self.secret.name}" if self.secret else ""
        return [f"LND REST simulator on {self.url}{where}",
                "POST /_sim/lightning/pay | /invoices | /script | /resolve   (GET /_sim/lightning: node state)"]

    def start(self) -> None:
        self.server.start()
        if self.secret is not None and self.moto_url:
            put_secret(aws_client("secretsmanager", self.moto_url), self.secret, json.dumps(self.secret_value()))

    def stop(self) -> None:
        self.server.stop()

    # -- dev routes

    def dev_route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        sub = path[len("/_sim/lightning"):].strip("/")
        routes = {"": ("GET", self._state), "pay": ("POST", self._pay), "invoices": ("POST", self._invoice),
                  "script": ("POST", self._script), "resolve": ("POST", self._resolve)}
        return dispatch(routes, sub, method, path, body, body_required=True,
                        not_found=f"no route {path} (GET /_sim/lightning, POST /_sim/lightning/"
                                  "pay|invoices|script|resolve)")

    def _state(self, _: dict[str, Any]) -> tuple[int, Any]:
        sim = self.simulator
        return 200, {"url": self.url, "node_pubkey": sim.our_node.pubkey_hex,
                     "external_pubkey": sim.external_node.pubkey_hex, "balance_msat": sim.our_balance_msat,
                     "invoice_subscribers": sim.invoice_subscribers}

    def _pay(self, body: dict[str, Any]) -> tuple[int, Any]:
        from satflow_dev.simulators.lightning import ExternalPaymentError

        only_fields(body, {"payment_request", "amount_msat"})
        payment_request = required_string(body, "payment_request")
        amount = _optional_int(body, "amount_msat", minimum=1)
        try:
            preimage = self.simulator.external_pay(payment_request, amount)
        except ExternalPaymentError as exc:
            return 422, dev_error("PAYMENT_REJECTED", str(exc))
        return 200, {"preimage": preimage, "payment_hash": self.simulator.payment_hash_of(payment_request)}

    def _invoice(self, body: dict[str, Any]) -> tuple[int, Any]:
        only_fields(body, {"amount_msat", "memo", "expiry_s", "payee"})
        if "amount_msat" not in body:
            raise DevRouteInvalid("amount_msat is required (null for an amount-less invoice)")
        amount = _optional_int(body, "amount_msat", minimum=1)
        memo = body.get("memo", "")
        if not isinstance(memo, str) or len(memo.encode()) > 639:
            raise DevRouteInvalid("memo must be a string of at most 639 bytes")
        expiry = _optional_int(body, "expiry_s", minimum=1)
        payee = body.get("payee", "external")
        if payee not in ("external", "sanctioned"):
            raise DevRouteInvalid('payee must be "external" or "sanctioned" (a node on the local sanctions list)')
        payment_request = self.simulator.external_invoice(amount, memo, expiry_s=expiry or 3600, payee=payee)
        return 201, {"payment_request": payment_request,
                     "payment_hash": self.simulator.payment_hash_of(payment_request)}

    def _script(self, body: dict[str, Any]) -> tuple[int, Any]:
        from satflow_dev.simulators.lightning import PaymentScript

        only_fields(body, {"outcome", "reason", "fee_msat", "in_flight_tracks", "send_timeout", "payment_hash"})
        outcome = body.get("outcome", "succeed")
        fee = _optional_int(body, "fee_msat", minimum=0)
        tracks = _optional_int(body, "in_flight_tracks", minimum=0) or 0
        send_timeout = body.get("send_timeout", "none")
        if send_timeout not in ("none", "before_node", "after_node"):
            raise DevRouteInvalid("send_timeout must be none, before_node or after_node")
        payment_hash = body.get("payment_hash")
        if payment_hash is not None and not (isinstance(payment_hash, str) and re.fullmatch(r"[0-9a-fA-F]{64}",
                                                                                            payment_hash)):
            raise DevRouteInvalid("payment_hash must be 64 hex characters")
        common = {"in_flight_tracks": tracks, "send_timeout": send_timeout}
        if outcome == "succeed":
            script = PaymentScript.succeed(fee, **common)
        elif outcome == "hold":
            script = PaymentScript.succeed(fee, hold=True, **common)
        elif outcome == "fail":
            try:
                script = PaymentScript.fail(str(body.get("reason", "NO_ROUTE")), **common)
            except ValueError as exc:
                raise DevRouteInvalid(str(exc)) from exc
        else:
            raise DevRouteInvalid("outcome must be succeed, fail or hold")
        self.simulator.script(script, payment_hash)
        return 200, {"scripted": payment_hash.lower() if payment_hash else "default"}

    def _resolve(self, body: dict[str, Any]) -> tuple[int, Any]:
        only_fields(body, {"payment_hash", "status", "reason", "fee_msat"})
        payment_hash = required_string(body, "payment_hash")
        status = body.get("status", "SUCCEEDED")
        if status not in ("SUCCEEDED", "FAILED"):
            raise DevRouteInvalid("status must be SUCCEEDED or FAILED")
        fee = _optional_int(body, "fee_msat", minimum=0)
        try:
            self.simulator.resolve(payment_hash, status, failure_reason=str(body.get("reason", "NO_ROUTE")),
                                   fee_msat=fee)
        except ValueError as exc:
            code = "NOT_IN_FLIGHT" if "in-flight" in str(exc) else "VALIDATION_ERROR"
            return (409 if code == "NOT_IN_FLIGHT" else 400), dev_error(code, str(exc))
        return 200, {"payment_hash": payment_hash.lower(), "status": self.simulator.payment_status(payment_hash)}


def _optional_int(body: dict[str, Any], name: str, *, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DevRouteInvalid(f"{name} must be an integer >= {minimum}")
    return value
