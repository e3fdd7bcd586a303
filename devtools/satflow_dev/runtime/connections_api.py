"""``@connections/{connection_id}`` on the runtime's AWS endpoint: the API Gateway management API
(``apigatewaymanagementapi``: PostToConnection, GetConnection, DeleteConnection) for the local WebSocket API.

boto3 clients of the functions reach it through AWS_ENDPOINT_URL (the moto server hands these paths here), so
a handler runs the same code as on AWS. A connection that is not open answers 410 GoneException, as AWS does.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from .local_runtime import LocalRuntime
    from .websocket_gateway import WebSocketGateway

PATH = re.compile(r"^(?:/[^/@]+)?/@connections/(?P<id>[^/]+)/?$")  # an optional stage segment first
MAX_MESSAGE_BYTES = 128 * 1024  # API Gateway's WebSocket frame limit


def is_connections_path(path: str) -> bool:
    return "/@connections/" in path


class ConnectionsEndpoint:
    """WSGI-style handler; finds the runtime's started WebSocket gateway per request."""

    def __init__(self, runtime: LocalRuntime) -> None:
        self._runtime = runtime

    def _gateway(self) -> WebSocketGateway | None:
        try:
            return self._runtime.service("websocket")
        except KeyError:
            return None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # The raw path: PATH_INFO is already percent-decoded, and connection ids may contain "/" (base64).
        raw = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO") or "")
        match = PATH.match(raw.split("?", 1)[0])
        method = environ.get("REQUEST_METHOD") or "GET"
        gateway = self._gateway()
        if match is None or gateway is None:
            return _answer(start_response, 404, {"message": "no WebSocket API here"}, "NotFoundException")
        connection_id = unquote(match["id"])
        if method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            data = environ["wsgi.input"].read(length) if length else b""
            if len(data) > MAX_MESSAGE_BYTES:
                return _answer(start_response, 413, {"message": "Message too long"}, "PayloadTooLargeException")
            if gateway.post(connection_id, data):
                return _answer(start_response, 200, None)
        elif method == "GET":
            info = gateway.info(connection_id)
            if info is not None:
                return _answer(start_response, 200, info)
        elif method == "DELETE":
            if gateway.close(connection_id):
                return _answer(start_response, 204, None)
        else:
            return _answer(start_response, 405, {"message": f"{method} is not allowed"}, "BadRequestException")
        return _answer(start_response, 410, {"message": None}, "GoneException")


def _answer(start_response: Callable[..., Any], status: int, body: Any, error_type: str | None = None
            ) -> list[bytes]:
    payload = b"" if body is None else json.dumps(body).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    if error_type:
        headers.append(("x-amzn-ErrorType", error_type))
    reasons = {200: "OK", 204: "No Content", 404: "Not Found", 405: "Method Not Allowed", 410: "Gone",
               413: "Payload Too Large"}
    start_response(f"{status} {reasons.get(status, 'Error')}", headers)
    return [payload]
