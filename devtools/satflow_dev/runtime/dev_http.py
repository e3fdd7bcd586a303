"""Small pieces shared by the local runtime's HTTP fronts and its development-only /_sim routes."""
from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body, whether sent with Content-Length or chunked (httpx streams chunked bodies)."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline().strip():  # trailers, then the blank line
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()  # the CRLF after each chunk
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


class DevRouteInvalid(ValueError):
    """A /_sim request the route cannot accept (answered with 400)."""


def dev_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


DevRoute = tuple[str, Callable[[dict[str, Any]], tuple[int, Any]]]  # (method, handler)


def dispatch(routes: dict[str, DevRoute], sub: str, method: str, path: str, body: Any, *,
             not_found: str | None = None, body_required: bool = False) -> tuple[int, Any]:
    """One /_sim request: 404 for an unknown route, 405 for the wrong method, 400 for a POST body that is not a JSON
    object (or missing, when ``body_required``) and for what the handler refuses (DevRouteInvalid)."""
    if sub not in routes:
        return 404, dev_error("NOT_FOUND", not_found or f"no route {path}")
    wanted, handler = routes[sub]
    if method != wanted:
        return 405, dev_error("METHOD_NOT_ALLOWED", f"{wanted} {path}")
    if wanted == "POST" and not isinstance(body, dict) and (body_required or body is not None):
        return 400, dev_error("VALIDATION_ERROR", "the body must be a JSON object")
    try:
        return handler(body or {})
    except DevRouteInvalid as exc:
        return 400, dev_error("VALIDATION_ERROR", str(exc))


def jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def only_fields(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise DevRouteInvalid(f"unknown field(s): {', '.join(unknown)}")


def required_string(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise DevRouteInvalid(f"{name} is required (a string)")
    return value
