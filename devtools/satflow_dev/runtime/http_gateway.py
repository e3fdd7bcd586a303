"""An API Gateway HTTP API (payload format 2.0) in front of the in-process handlers.

Each request becomes the v2 event API Gateway would send (routeKey from the template's routes, pathParameters,
comma-joined repeated query parameters and headers, cookies, base64 body for non-UTF-8 content), the owning
function is invoked, and its result is written back the way API Gateway interprets it. Unmatched routes get
API Gateway's 404 `{"message":"Not Found"}`, handler crashes its 500 `{"message":"Internal Server Error"}`.

Development-only routes (`/_sim/...`, e.g. a Lightning payer or block generator added by simulators) are
registered at runtime with `register_dev_route`; they are never declared in template.yaml.
"""
from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote

from .background_http import BackgroundHttpServer, write_response
from .dev_http import read_body
from .template import FunctionSpec, HttpRoute

log = logging.getLogger(__name__)

# (method, path below the prefix included, parsed JSON body or None) -> (status, JSON-able body)
DevRouteHandler = Callable[[str, str, Any], tuple[int, Any]]
# (method, path, request headers, raw body) -> (status, JSON-able body): for routes that need the exact request,
# e.g. the webhook sink verifying signatures over the raw body
RawDevRouteHandler = Callable[[str, str, list[tuple[str, str]], bytes], tuple[int, Any]]
# (function, event) -> the handler's return value (exceptions propagate)
InvokeFunction = Callable[[FunctionSpec, dict[str, Any]], Any]

DEV_ROUTE_PREFIX = "/_sim/"
NOT_FOUND = {"message": "Not Found"}
INTERNAL_ERROR = {"message": "Internal Server Error"}


# ---------------------------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class CompiledRoute:
    route: HttpRoute
    function: FunctionSpec
    pattern: re.Pattern[str]
    specificity: tuple[int, int, int, int]  # sort key: most specific first


@dataclass(frozen=True)
class RouteMatch:
    route: HttpRoute
    function: FunctionSpec
    path_parameters: dict[str, str]


_PARAM = re.compile(r"\{([A-Za-z0-9_.-]+)(\+?)\}")


def compile_route(route: HttpRoute, function: FunctionSpec) -> CompiledRoute:
    if route.path == "$default":
        return CompiledRoute(route, function, re.compile(r".*"), (1, 0, 0, 0))
    regex, last, params, greedy = "", 0, 0, 0
    for m in _PARAM.finditer(route.path):
        regex += re.escape(route.path[last:m.start()])
        name = m.group(1).replace(".", "_").replace("-", "_")
        regex += f"(?P<{name}>.+)" if m.group(2) else f"(?P<{name}>[^/]+)"
        params, greedy, last = params + 1, greedy + bool(m.group(2)), m.end()
    regex += re.escape(route.path[last:])
    # API Gateway prefers literal routes over parameterised ones, and greedy {proxy+} routes last;
    # a route for the exact method beats ANY.
    specificity = (0, greedy, params, int(route.method == "ANY"))
    return CompiledRoute(route, function, re.compile(f"^{regex}$"), specificity)


class RouteTable:
    def __init__(self, routes: Iterable[tuple[HttpRoute, FunctionSpec]]) -> None:
        compiled = [compile_route(route, fn) for route, fn in routes]
        seen: dict[str, str] = {}
        for c in compiled:
            owner = seen.setdefault(c.route.route_key, c.function.logical_id)
            if owner != c.function.logical_id:  # API Gateway would refuse to deploy this
                log.warning("route %s is declared by %s and %s; %s wins", c.route.route_key, owner,
                            c.function.logical_id, owner)
        self._routes = sorted(compiled, key=lambda c: c.specificity)
        # Real names of the path parameters ({payment-id} is a legal name but not a regex group name).
        self._names = {c.route: [m.group(1) for m in _PARAM.finditer(c.route.path)] for c in compiled}

    def match(self, method: str, path: str) -> RouteMatch | None:
        for c in self._routes:
            if c.route.method not in (method, "ANY"):
                continue
            m = c.pattern.match(path)
            if m:
                values = [unquote(v) for v in m.groups()]
                return RouteMatch(c.route, c.function, dict(zip(self._names[c.route], values)))
        return None


# ---------------------------------------------------------------------------------------------- the event


def _joined(pairs: Iterable[tuple[str, str]], lower: bool = False) -> dict[str, str]:
    """API Gateway v2 joins repeated headers and query parameters with commas."""
    out: dict[str, str] = {}
    for key, value in pairs:
        key = key.lower() if lower else key
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


def build_http_api_event(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    match: RouteMatch,
    source_ip: str = "127.0.0.1",
    request_id: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    now = time.time() if now is None else now
    header_map = _joined(headers, lower=True)
    cookie_header = header_map.pop("cookie", None)
    header_map.setdefault("x-forwarded-for", source_ip)
    header_map.setdefault("x-forwarded-proto", "http")
    request_id = request_id or uuid.uuid4().hex[:16]
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": match.route.route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": header_map,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": header_map.get("host", "localhost"),
            "domainPrefix": header_map.get("host", "localhost").split(".")[0],
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": header_map.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": match.route.route_key,
            "stage": "$default",
            "time": datetime.fromtimestamp(now, timezone.utc).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    # API Gateway leaves out the keys that would be empty.
    if cookie_header:
        event["cookies"] = [c.strip() for c in cookie_header.split(";") if c.strip()]
    if raw_query:
        event["queryStringParameters"] = _joined(parse_qsl(raw_query, keep_blank_values=True))
    if match.path_parameters:
        event["pathParameters"] = match.path_parameters
    if body:
        try:
            event["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    return event


# ---------------------------------------------------------------------------------------------- the response


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def json_response(status: int, payload: Any) -> HttpResponse:
    return HttpResponse(status, [("content-type", "application/json")], json.dumps(payload).encode())


def response_from_result(result: Any) -> HttpResponse:
    """Interpret a handler's return value as API Gateway does for payload format 2.0."""
    if not (isinstance(result, dict) and "statusCode" in result):
        # No statusCode: API Gateway assumes 200 and a JSON body (a string is passed through as the body).
        body = result if isinstance(result, str) else json.dumps(result)
        return HttpResponse(200, [("content-type", "application/json")], body.encode())
    headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
    for key, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((str(key), str(v)) for v in values)
    headers.extend(("set-cookie", str(c)) for c in result.get("cookies") or [])
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
    return HttpResponse(int(result["statusCode"]), headers, body)


# ---------------------------------------------------------------------------------------------- the server


class HttpGateway(BackgroundHttpServer):
    """ThreadingHTTPServer on host:port (0 = a free port) that feeds v2 events to `invoke`."""
    thread_name = "http-gateway"

    def __init__(self, routes: RouteTable, invoke: InvokeFunction, host: str = "127.0.0.1", port: int = 3000) -> None:
        self.routes = routes
        self.invoke = invoke
        self._dev_routes: dict[str, DevRouteHandler] = {}
        self._raw_dev_routes: dict[str, RawDevRouteHandler] = {}
        super().__init__(_make_request_handler(self), host, port)


    def register_dev_route(self, prefix: str, handler: DevRouteHandler) -> None:
        """Serve every method under `prefix` (which must start with /_sim/) with a development-only handler."""
        if not prefix.startswith(DEV_ROUTE_PREFIX):
            raise ValueError(f"development routes live under {DEV_ROUTE_PREFIX}, got {prefix!r}")
        self._dev_routes[prefix] = handler

    def register_raw_dev_route(self, prefix: str, handler: RawDevRouteHandler) -> None:
        """Like register_dev_route, but the handler gets the request headers and the raw body bytes."""
        if not prefix.startswith(DEV_ROUTE_PREFIX):
            raise ValueError(f"development routes live under {DEV_ROUTE_PREFIX}, got {prefix!r}")
        self._raw_dev_routes[prefix] = handler

    def dev_route(self, path: str) -> DevRouteHandler | None:
        # Longest prefix wins, so /_sim/lnd/payer can sit next to /_sim/lnd.
        for prefix in sorted(self._dev_routes, key=len, reverse=True):
            if path.startswith(prefix):
                return self._dev_routes[prefix]
        return None


    # -- request handling (called from the server's request threads)

    def handle(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, source_ip: str
               ) -> HttpResponse:
        raw_path, _, raw_query = target.partition("?")
        if raw_path.startswith(DEV_ROUTE_PREFIX):
            for prefix in sorted(self._raw_dev_routes, key=len, reverse=True):
                if raw_path.startswith(prefix):
                    return self._handle_raw_dev_route(self._raw_dev_routes[prefix], method, raw_path, headers, body)
        dev = self.dev_route(raw_path) if raw_path.startswith(DEV_ROUTE_PREFIX) else None
        if dev is not None:
            return self._handle_dev_route(dev, method, raw_path, body)
        match = self.routes.match(method, raw_path)
        if match is None:
            return json_response(404, NOT_FOUND)
        event = build_http_api_event(method=method, raw_path=raw_path, raw_query=raw_query, headers=headers,
                                     body=body, match=match, source_ip=source_ip)
        try:
            return response_from_result(self.invoke(match.function, event))
        except Exception:
            log.exception("%s failed on %s", match.function.logical_id, match.route.route_key)
            return json_response(500, INTERNAL_ERROR)

    @staticmethod
    def _handle_raw_dev_route(handler: RawDevRouteHandler, method: str, path: str, headers: list[tuple[str, str]],
                              body: bytes) -> HttpResponse:
        try:
            status, result = handler(method, path, headers, body)
        except Exception:
            log.exception("development route %s failed", path)
            return json_response(500, INTERNAL_ERROR)
        return json_response(status, result)

    @staticmethod
    def _handle_dev_route(handler: DevRouteHandler, method: str, path: str, body: bytes) -> HttpResponse:
        try:
            payload = json.loads(body) if body.strip() else None
        except ValueError:
            return json_response(400, {"message": "body is not JSON"})
        try:
            status, result = handler(method, path, payload)
        except Exception:
            log.exception("development route %s failed", path)
            return json_response(500, INTERNAL_ERROR)
        return json_response(status, result)


def _make_request_handler(gateway: HttpGateway) -> type[BaseHTTPRequestHandler]:
    class GatewayRequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; every response carries a Content-Length

        def _dispatch(self) -> None:
            started = time.perf_counter()
            response = gateway.handle(self.command, self.path, list(self.headers.items()), read_body(self),
                                      self.client_address[0])
            write_response(self, response.status,
                           [(name, value) for name, value in response.headers
                            if name.lower() not in ("content-length", "connection", "transfer-encoding")],
                           response.body)
            log.info("%s %s -> %d (%.0f ms)", self.command, self.path, response.status,
                     (time.perf_counter() - started) * 1000)


        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
            log.debug("http-gateway: " + format, *args)

    return GatewayRequestHandler
