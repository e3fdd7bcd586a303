"""A local webhook receiver on the gateway's port, so `make run` can show deliveries with curl.

Routes (development-only, never in template.yaml):
- `POST /_sim/webhooks/inbox[/<anything>]`: a webhook endpoint. Records the request (Satflow-* headers and the raw
  body) and answers 200, or the scripted failure status while failures are scripted.
- `GET /_sim/webhooks`: what was received, newest last (at most the last 200).
- `POST /_sim/webhooks/verify {"secret": "whsec_..."}`: checks every received request's signature with that secret
  (the same computation docs/webhooks.md documents for clients).
- `POST /_sim/webhooks/fail {"count": 3, "status": 503}`: the next `count` deliveries get `status`.
- `DELETE /_sim/webhooks`: forget everything.

The local runtime sets SATFLOW_WEBHOOK_ALLOW_PRIVATE, so `http://127.0.0.1:<port>/_sim/webhooks/inbox` is an
acceptable webhook URL there (and only there).
"""
from __future__ import annotations

import hmac
import json
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .dev_http import dev_error

if TYPE_CHECKING:
    from .local_runtime import LocalRuntime

PREFIX = "/_sim/webhooks"
WEBHOOK_QUEUE_ENV = "SATFLOW_WEBHOOK_QUEUE_URL"
_KEEP = 200


class WebhookSink:
    name = "webhooks"

    def __init__(self, base_url: str = "") -> None:
        self.base_url = base_url
        self._received: deque[dict[str, Any]] = deque(maxlen=_KEEP)
        self._fail_count = 0
        self._fail_status = 503
        self._lock = threading.Lock()

    @classmethod
    def from_runtime(cls, runtime: LocalRuntime) -> WebhookSink | None:
        assert runtime.model is not None
        if runtime.gateway is None or not any(WEBHOOK_QUEUE_ENV in fn.env for fn in runtime.model.functions):
            return None
        sink = cls(runtime.gateway.url)
        runtime.gateway.register_raw_dev_route(PREFIX, sink.route)
        return sink

    @property
    def inbox_url(self) -> str:
        return f"{self.base_url}{PREFIX}/inbox"

    def describe(self) -> list[str]:
        return [f"webhook receiver: {self.inbox_url}  (GET {PREFIX}: received; POST {PREFIX}/verify | /fail)"]

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    # -- for tests
    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._received)

    def fail_next(self, count: int, status: int = 503) -> None:
        with self._lock:
            self._fail_count, self._fail_status = count, status

    # -- the route
    def route(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> tuple[int, Any]:
        sub = path[len(PREFIX):].strip("/")
        if method == "POST" and (sub == "inbox" or sub.startswith("inbox/")):
            return self._receive(path, headers, body)
        if method == "GET" and sub == "":
            return 200, {"received": self.received(), "inbox_url": self.inbox_url}
        if method == "DELETE" and sub == "":
            with self._lock:
                self._received.clear()
                self._fail_count = 0
            return 200, {"cleared": True}
        if method == "POST" and sub in ("verify", "fail"):
            try:
                data = json.loads(body) if body.strip() else {}
            except ValueError:
                return 400, dev_error("VALIDATION_ERROR", "the body is not JSON")
            if not isinstance(data, dict):
                return 400, dev_error("VALIDATION_ERROR", "the body must be a JSON object")
            return self._verify(data) if sub == "verify" else self._script_failures(data)
        return 404, dev_error("NOT_FOUND", f"no route {method} {path} (POST {PREFIX}/inbox, GET {PREFIX}, "
                                           f"POST {PREFIX}/verify|fail, DELETE {PREFIX})")

    def _receive(self, path: str, headers: list[tuple[str, str]], body: bytes) -> tuple[int, Any]:
        satflow = {k.lower(): v for k, v in headers if k.lower().startswith("satflow-")}
        with self._lock:
            status = 200
            if self._fail_count > 0:
                self._fail_count -= 1
                status = self._fail_status
            self._received.append({"at": time.time(), "path": path, "headers": satflow,
                                   "body": body.decode("utf-8", "replace"), "answered": status})
        return status, {"received": status == 200}

    def _verify(self, data: dict[str, Any]) -> tuple[int, Any]:
        secret = data.get("secret")
        if not isinstance(secret, str) or not secret:
            return 400, dev_error("VALIDATION_ERROR", "secret is required (the whsec_... of the webhook)")
        results = []
        for item in self.received():
            headers = item["headers"]
            timestamp = headers.get("satflow-timestamp", "")
            expected = hmac.new(secret.encode(), f"{timestamp}.{item['body']}".encode(), "sha256").hexdigest()
            given = [part.strip()[3:] for part in headers.get("satflow-signature", "").split(",")
                     if part.strip().startswith("v1=")]
            results.append({"event_id": headers.get("satflow-event-id"), "type": headers.get("satflow-event-type"),
                            "verified": any(hmac.compare_digest(expected, g) for g in given)})
        return 200, {"results": results}

    def _script_failures(self, data: dict[str, Any]) -> tuple[int, Any]:
        count, status = data.get("count"), data.get("status", 503)
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 1000:
            return 400, dev_error("VALIDATION_ERROR", "count must be an integer 0-1000")
        if not isinstance(status, int) or isinstance(status, bool) or not 300 <= status <= 599:
            return 400, dev_error("VALIDATION_ERROR", "status must be an HTTP error status (300-599)")
        self.fail_next(count, status)
        return 200, {"failing_next": count, "status": status}
