"""moto's AWS services on a local HTTP port, one request at a time.

moto's backends are plain in-process dicts and are not thread-safe: with 8 concurrent clients the threaded
moto server answered HTTP 500 ("dictionary changed size during iteration") and duplicated a transaction record
(see tooling-notes.md). So every request runs under ONE process-wide lock, held until the response body has been
produced completely (moto may build it lazily while the WSGI iterable is consumed). Sockets stay threaded, so
slow clients do not block each other; only moto's work is serialised.

Lambda `Invoke` is the one exception: when a `lambda_invoker` is given, Invoke requests (e.g. from Step Functions
Task states executed by moto) never reach moto. They are answered by that callable outside the lock, because
our handlers call back into moto (DynamoDB, SQS, ...) and would otherwise deadlock on the lock they hold.

moto keeps its state in module globals, so every server started in one process shares the same AWS state;
tests that need isolation use distinct resource names. Importing this module is cheap; moto itself is imported
on the first start.

DynamoDB on DynamoDB Local (`make run DYNAMODB=local`): with a `dynamodb_endpoint`, every DynamoDB and DynamoDB
Streams request (told apart by its `X-Amz-Target`) is forwarded there unchanged, outside the lock, so the
functions, the runtime's pollers and moto's Step Functions tasks all reach the one table on DynamoDB Local while
keeping a single AWS endpoint (the layer's bootstrap uses one endpoint URL for every service).
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import threading
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

log = logging.getLogger(__name__)

# The single lock around moto. Module-level because moto's state is module-level: two servers in one process
# still share (and must serialise on) the same backends.
MOTO_LOCK = threading.Lock()

_LAMBDA_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<function>[^/]+)/invocations/?$")
_DYNAMODB_TARGETS = ("DynamoDB_20120810.", "DynamoDBStreams_20120810.")
# Hop-by-hop and recomputed headers are not forwarded.
_NOT_FORWARDED = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


@dataclass(frozen=True)
class LambdaInvokeResult:
    """What the Lambda Invoke API answers: status 200 (RequestResponse), 202 (Event) or 204 (DryRun)."""

    status: int
    payload: bytes = b""
    function_error: str | None = None  # "Unhandled" when the handler raised


# (function name or ARN, request payload, InvocationType) -> result, or None when the function is not ours
# (the request then goes on to moto's own Lambda backend).
LambdaInvoker = Callable[[str, bytes, str], "LambdaInvokeResult | None"]


class _SerialisedMotoApp:
    """WSGI app: moto's domain dispatcher behind MOTO_LOCK, plus the optional Lambda Invoke interception."""

    def __init__(self, moto_app: Any, lambda_invoker: LambdaInvoker | None,
                 dynamodb_endpoint: str | None = None, connections_api: Any = None) -> None:
        self._moto_app = moto_app
        self._lambda_invoker = lambda_invoker
        self._dynamodb_endpoint = dynamodb_endpoint
        self._connections_api = connections_api  # WebSocket @connections (connections_api.py), outside the lock

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self._connections_api is not None and "/@connections/" in (environ.get("PATH_INFO") or ""):
            return self._connections_api(environ, start_response)
        if self._dynamodb_endpoint and (environ.get("HTTP_X_AMZ_TARGET") or "").startswith(_DYNAMODB_TARGETS):
            return self._forward(self._dynamodb_endpoint, environ, start_response)
        if self._lambda_invoker is not None and environ.get("REQUEST_METHOD") == "POST":
            match = _LAMBDA_INVOKE_PATH.match(environ.get("PATH_INFO", ""))
            if match:
                answered = self._invoke_lambda(unquote(match["function"]), environ, start_response)
                if answered is not None:
                    return answered
        return self._call_moto_locked(environ, start_response)

    def _call_moto_locked(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        captured: dict[str, Any] = {}
        written: list[bytes] = []

        def capture_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"], captured["exc_info"] = status, headers, exc_info
            return written.append  # the legacy write() callable

        with MOTO_LOCK:
            result = self._moto_app(environ, capture_start_response)
            try:
                body = b"".join([*written, *result])  # consume the whole iterable while still locked
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        start_response(captured["status"], captured["headers"], captured["exc_info"])
        return [body]

    def _invoke_lambda(
        self, function: str, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> list[bytes] | None:
        assert self._lambda_invoker is not None
        length = int(environ.get("CONTENT_LENGTH") or 0)
        payload = environ["wsgi.input"].read(length) if length else b""
        invocation_type = environ.get("HTTP_X_AMZ_INVOCATION_TYPE") or "RequestResponse"
        result = self._lambda_invoker(function, payload, invocation_type)
        if result is None:
            # Not one of ours: let moto answer. The body has been consumed, so hand moto a fresh stream.
            environ["wsgi.input"] = io.BytesIO(payload)
            return None
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(result.payload))),
                   ("X-Amz-Executed-Version", "$LATEST")]
        if result.function_error:
            headers.append(("X-Amz-Function-Error", result.function_error))
        start_response(f"{result.status} {_REASONS.get(result.status, 'OK')}", headers)
        return [result.payload]


    @staticmethod
    def _forward(endpoint: str, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        import urllib.error

        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {key[5:].replace("_", "-").title(): value for key, value in environ.items()
                   if key.startswith("HTTP_") and key[5:].replace("_", "-").lower() not in _NOT_FORWARDED}
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        request = urllib.request.Request(endpoint.rstrip("/") + (environ.get("PATH_INFO") or "/"), data=body,
                                         headers=headers, method=environ.get("REQUEST_METHOD") or "POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, reason, answer, reply = response.status, response.reason, response.read(), response.headers
        except urllib.error.HTTPError as exc:  # DynamoDB's 400s (conditional check failed, ...) are answers
            status, reason, answer, reply = exc.code, exc.reason, exc.read(), exc.headers
        out = [(k, v) for k, v in reply.items() if k.lower() not in _NOT_FORWARDED]
        start_response(f"{status} {reason}", [*out, ("Content-Length", str(len(answer)))])
        return [answer]


_REASONS = {200: "OK", 202: "Accepted", 204: "No Content"}


def _quiet_request_handler() -> type:
    """moto's request handler without werkzeug's per-request access line on stderr (kept at DEBUG)."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    class QuietMotoRequestHandler(MotoRequestHandler):
        def log_request(self, code: Any = "-", size: Any = "-") -> None:
            log.debug("moto %s %s", self.requestline, code)

    return QuietMotoRequestHandler


def start_moto_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    lambda_invoker: LambdaInvoker | None = None,
    execute_state_machines: bool = True,
    dynamodb_endpoint: str | None = None,
    connections_api: Any = None,
) -> tuple[str, Callable[[], None]]:
    """Serve moto on host:port (0 = a free port) in a daemon thread. Returns (base URL, stop).

    ``dynamodb_endpoint``: forward DynamoDB (and Streams) requests there (DynamoDB Local) instead of moto."""
    from werkzeug.serving import make_server

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    app = _SerialisedMotoApp(DomainDispatcherApplication(create_backend_app), lambda_invoker, dynamodb_endpoint,
                             connections_api)
    server = make_server(host, port, app, threaded=True, request_handler=_quiet_request_handler())
    server.daemon_threads = True  # a hung client connection must not keep the process alive
    bound_port = server.server_address[1]
    url = f"http://{host}:{bound_port}"
    # A short poll interval: stop() waits for the serve loop to notice, 0.5 s by default.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"moto-server:{bound_port}", daemon=True)
    thread.start()

    # moto's Step Functions interpreter calls AWS services (Lambda Invoke, DynamoDB, SQS tasks) with boto3 at
    # http://localhost:$MOTO_PORT. Point it at this server (the last one started wins; normally there is one).
    os.environ["MOTO_PORT"] = str(bound_port)
    if execute_state_machines:
        configure_moto(url, {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}})

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    log.debug("moto server listening on %s", url)
    return url, stop


def configure_moto(url: str, config: dict[str, Any]) -> dict[str, Any]:
    """POST /moto-api/config (the documented server-mode switch). Returns moto's resulting config."""
    request = urllib.request.Request(
        f"{url}/moto-api/config", data=json.dumps(config).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())
