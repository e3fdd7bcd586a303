"""The template's WebSocket API (``AWS::ApiGatewayV2::Api`` with ``ProtocolType: WEBSOCKET``) served on 127.0.0.1.

What API Gateway does, and so this gateway:
- $connect: the handshake waits for the $connect route's function; a 2xx answer accepts (its
  ``Sec-WebSocket-Protocol`` header selects the subprotocol), anything else refuses with that status.
- Messages: the route is chosen by the API's RouteSelectionExpression (``$request.body.action``): the value at
  that JSON path if a route has that key, else ``$default`` if declared, else the client gets
  ``{"message": "Forbidden", ...}``. A function that fails gives ``{"message": "Internal server error", ...}``.
  No route response is configured, so a function's return value is not sent back; functions talk to the client
  through ``@connections``. Messages of one connection are handled one at a time, in order.
- $disconnect: after the connection is closed, by either side (the connection is already gone for @connections).
- ``@connections/{id}`` (POST a message, GET its info, DELETE to close) is served on the runtime's AWS endpoint
  (connections_api.py), answering 410 for a connection that is gone.

Functions are invoked through the runtime's invoke entry point (the one the HTTP gateway uses), from a thread
pool, so the event loop keeps serving the other connections meanwhile. The API key (query string or
Sec-WebSocket-Protocol) is never logged: this module logs connection ids and statuses only, and the websockets
library's logger is held at WARNING (its DEBUG lines include the request path).
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import itertools
import json
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qsl, urlsplit

from .template import FunctionSpec, Resolver, TemplateModel, load_template_document

if TYPE_CHECKING:
    from .local_runtime import LocalRuntime

log = logging.getLogger(__name__)
# The library's own logger, kept quiet: its debug output contains request lines (with ?key=...).
_PROTOCOL_LOG = logging.getLogger("satflow_dev.runtime.websocket_protocol")
_PROTOCOL_LOG.setLevel(logging.WARNING)

InvokeFunction = Callable[[FunctionSpec, dict[str, Any]], Any]
_SUB_REF = re.compile(r"\$\{([A-Za-z0-9]+)(?:\.Arn)?\}")
POST_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class WebSocketApiSpec:
    logical_id: str
    stage: str
    route_selection: str  # e.g. "$request.body.action"
    routes: dict[str, FunctionSpec]  # route key -> function


def websocket_api(model: TemplateModel) -> WebSocketApiSpec | None:
    """The template's first WEBSOCKET API with its routes (Route -> Integration -> function), or None."""
    raw = load_template_document(model.path)
    resources = raw.get("Resources") or {}
    resolver = Resolver(raw, dict(model.parameters), model.stack_name)
    by_type: dict[str, dict[str, dict]] = {}
    for lid, res in resources.items():
        by_type.setdefault(res.get("Type", ""), {})[lid] = res.get("Properties") or {}
    api_id = next((lid for lid, p in by_type.get("AWS::ApiGatewayV2::Api", {}).items()
                   if p.get("ProtocolType") == "WEBSOCKET"), None)
    if api_id is None:
        return None

    def for_api(props: dict) -> bool:
        return props.get("ApiId") == {"Ref": api_id}

    def referenced(value: Any) -> str | None:
        text = value.get("Fn::Sub") if isinstance(value, dict) else value
        if isinstance(text, list):
            text = text[0]
        found = _SUB_REF.findall(str(text or ""))
        return next((f for f in found if not f.startswith("AWS")), None)

    functions = {fn.logical_id: fn for fn in model.functions}
    routes: dict[str, FunctionSpec] = {}
    integrations = by_type.get("AWS::ApiGatewayV2::Integration", {})
    for props in by_type.get("AWS::ApiGatewayV2::Route", {}).values():
        if not for_api(props):
            continue
        integration = integrations.get(referenced(props.get("Target")) or "")
        function_id = referenced((integration or {}).get("IntegrationUri"))
        if function_id not in functions:
            raise ValueError(f"WebSocket route {props.get('RouteKey')}: no function behind its integration")
        routes[str(resolver.resolve(props["RouteKey"]))] = functions[function_id]
    stage = next((str(resolver.resolve(p.get("StageName"))) for p in by_type.get("AWS::ApiGatewayV2::Stage", {}).values()
                  if for_api(p)), "live")
    selection = str(resolver.resolve(by_type["AWS::ApiGatewayV2::Api"][api_id].get("RouteSelectionExpression")))
    return WebSocketApiSpec(api_id, stage, selection, routes)


def select_route(expression: str, body: str, routes: dict[str, Any]) -> str | None:
    """API Gateway's route selection for one message: ``$request.body.<path>`` evaluated on the JSON body."""
    key = None
    if expression.startswith("$request.body."):
        try:
            value: Any = json.loads(body)
            for part in expression[len("$request.body."):].split("."):
                value = value.get(part) if isinstance(value, dict) else None
            key = value if isinstance(value, str) else None
        except ValueError:
            key = None
    if key is not None and key in routes and not key.startswith("$"):
        return key
    return "$default" if "$default" in routes else None


def new_connection_id() -> str:
    """Shaped like API Gateway's (base64 with padding, so clients must URL-encode it)."""
    return base64.b64encode(os.urandom(11)).decode()


@dataclass
class _Connection:
    connection_id: str
    socket: Any  # websockets ServerConnection
    source_ip: str
    user_agent: str
    connected_at: float = field(default_factory=time.time)
    last_active_at: float = field(default_factory=time.time)


class WebSocketGateway:
    """``start()`` binds 127.0.0.1:<port> (0 = free) and serves in a daemon thread with its own event loop."""

    name = "websocket"

    def __init__(self, api: WebSocketApiSpec, invoke: InvokeFunction, host: str = "127.0.0.1", port: int = 0,
                 max_workers: int = 8) -> None:
        self.api = api
        self._invoke = invoke
        self.host, self._requested_port = host, port
        self.port = 0
        self._connections: dict[str, _Connection] = {}
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="ws-invoke")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._request_ids = itertools.count(1)

    @classmethod
    def from_runtime(cls, runtime: LocalRuntime, port: int | None = None) -> WebSocketGateway | None:
        assert runtime.model is not None
        api = websocket_api(runtime.model)
        if api is None:
            return None
        if port is None:
            port = int(runtime.environ.get("SATFLOW_WEBSOCKET_PORT") or 0)
        return cls(api, runtime._invoke, runtime.host, port)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/{self.api.stage}"

    def describe(self) -> list[str]:
        return [f"WebSocket API {self.url} (routes: {', '.join(sorted(self.api.routes))})"]

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="websocket-gateway", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        log.info("WebSocket API listening on %s", self.url)

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._thread is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
            self._ready.set()
            loop.run_forever()
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        from websockets.asyncio.server import serve

        self._server = await serve(self._handle, self.host, self._requested_port, process_request=self._on_handshake,
                                   select_subprotocol=self._select_subprotocol, logger=_PROTOCOL_LOG,
                                   compression=None, max_size=128 * 1024, ping_interval=None)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # ------------------------------------------------------------------ events
    def _context(self, connection_id: str, route: str, event_type: str, **extra: Any) -> dict[str, Any]:
        now = time.time()
        return {"routeKey": route, "eventType": event_type, "messageDirection": "IN", "stage": self.api.stage,
                "connectionId": connection_id, "requestId": f"ws-{next(self._request_ids)}-{uuid.uuid4().hex[:8]}",
                "apiId": "local", "domainName": f"{self.host}:{self.port}", "requestTimeEpoch": int(now * 1000),
                "requestTime": datetime.fromtimestamp(now, timezone.utc).strftime("%d/%b/%Y:%H:%M:%S +0000"),
                **extra}

    async def _call(self, route: str, event: dict[str, Any]) -> Any:
        function = self.api.routes[route]
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._invoke, function, event)

    # ------------------------------------------------------------------ handshake ($connect)
    async def _on_handshake(self, connection: Any, request: Any) -> Any:
        connection_id = new_connection_id()
        connection.satflow_id = connection_id
        connection.satflow_subprotocol = None
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") != f"/{self.api.stage}":
            return connection.respond(404, "Not Found\n")
        headers: dict[str, str] = {}
        multi: dict[str, list[str]] = {}
        for name, value in request.headers.raw_items():
            headers[name] = f"{headers[name]},{value}" if name in headers else value
            multi.setdefault(name, []).append(value)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        source_ip = str((connection.remote_address or ("127.0.0.1",))[0])
        identity = {"sourceIp": source_ip, "userAgent": headers.get("User-Agent", "")}
        event = {"headers": headers, "multiValueHeaders": multi, "isBase64Encoded": False,
                 "requestContext": self._context(connection_id, "$connect", "CONNECT", identity=identity,
                                                 connectedAt=int(time.time() * 1000))}
        if query:
            event["queryStringParameters"] = query
            event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
        if "$connect" in self.api.routes:
            try:
                result = await self._call("$connect", event)
            except Exception:
                log.exception("$connect function failed (connection %s)", connection_id)
                return connection.respond(500, "Internal server error\n")
            status = int((result or {}).get("statusCode", 200)) if isinstance(result, dict) else 200
            if not 200 <= status < 300:
                log.info("WebSocket connection refused with %d", status)
                return connection.respond(status, "Connection refused\n")
            answer = {k.lower(): v for k, v in ((result or {}).get("headers") or {}).items()}
            connection.satflow_subprotocol = answer.get("sec-websocket-protocol")
        with self._lock:
            self._connections[connection_id] = _Connection(connection_id, connection, source_ip,
                                                           identity["userAgent"])
        return None

    def _select_subprotocol(self, connection: Any, offered: Any) -> Any:
        chosen = getattr(connection, "satflow_subprotocol", None)
        return chosen if chosen in offered else None

    # ------------------------------------------------------------------ messages and $disconnect
    async def _handle(self, connection: Any) -> None:
        connection_id = connection.satflow_id
        close_code = 1006
        try:
            async for message in connection:
                with self._lock:
                    known = self._connections.get(connection_id)
                if known is not None:
                    known.last_active_at = time.time()
                body = message if isinstance(message, str) else message.decode("utf-8", "replace")
                await self._route_message(connection, connection_id, body)
            close_code = connection.close_code or 1000
        except Exception:
            close_code = getattr(connection, "close_code", None) or 1006
        finally:
            with self._lock:
                self._connections.pop(connection_id, None)
            if "$disconnect" in self.api.routes:
                event = {"headers": {}, "isBase64Encoded": False, "requestContext": self._context(
                    connection_id, "$disconnect", "DISCONNECT", disconnectStatusCode=close_code,
                    disconnectReason="")}
                try:
                    await self._call("$disconnect", event)
                except Exception:
                    log.exception("$disconnect function failed (connection %s)", connection_id)

    async def _route_message(self, connection: Any, connection_id: str, body: str) -> None:
        route = select_route(self.api.route_selection, body, self.api.routes)
        context = self._context(connection_id, route or "", "MESSAGE", messageId=uuid.uuid4().hex[:16])
        if route is None:
            await connection.send(json.dumps({"message": "Forbidden", "connectionId": connection_id,
                                              "requestId": context["requestId"]}))
            return
        event = {"requestContext": context, "body": body, "isBase64Encoded": False}
        try:
            await self._call(route, event)
        except Exception:
            log.exception("WebSocket route %s failed (connection %s)", route, connection_id)
            await connection.send(json.dumps({"message": "Internal server error", "connectionId": connection_id,
                                              "requestId": context["requestId"]}))

    # ------------------------------------------------------------------ @connections (called from other threads)
    def post(self, connection_id: str, data: bytes) -> bool:
        """Sends one message; False when the connection is gone (410)."""
        with self._lock:
            known = self._connections.get(connection_id)
        if known is None or self._loop is None:
            return False
        text = data.decode("utf-8") if _is_utf8(data) else None
        future = asyncio.run_coroutine_threadsafe(known.socket.send(text if text is not None else data), self._loop)
        try:
            future.result(timeout=POST_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            return True  # queued behind a slow reader: accepted, like API Gateway
        except Exception:
            return False  # closed while sending
        return True

    def info(self, connection_id: str) -> dict[str, Any] | None:
        with self._lock:
            known = self._connections.get(connection_id)
        if known is None:
            return None

        def iso(t: float) -> str:
            return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

        # The wire names of the management API's GetConnection (rest-json).
        return {"connectedAt": iso(known.connected_at), "lastActiveAt": iso(known.last_active_at),
                "identity": {"sourceIp": known.source_ip, "userAgent": known.user_agent}}

    def close(self, connection_id: str) -> bool:
        """Closes the connection (its $disconnect runs as usual); False when it is gone."""
        with self._lock:
            known = self._connections.pop(connection_id, None)
        if known is None or self._loop is None:
            return False
        asyncio.run_coroutine_threadsafe(known.socket.close(1000, "closed by the server"), self._loop)
        return True

    def connection_ids(self) -> list[str]:
        with self._lock:
            return list(self._connections)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
