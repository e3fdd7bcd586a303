"""One JSON call to a running local runtime's HTTP API, for the end-to-end tests (stdlib only, like a client)."""
from __future__ import annotations

import itertools
import json
import os
import urllib.error
import urllib.request
from typing import Any

_stacks = itertools.count(1)


def fresh_stack_name() -> str:
    """A stack name of its own for each runtime a test starts: moto's state outlives a runtime in the test process,
    so runtimes sharing `satflow-local-LedgerTable` would inherit each other's invoice cursor and chain tip."""
    return f"satflow-t{os.getpid()}-{next(_stacks)}"


def call(runtime, method: str, path: str, *, key: str | None = None, body: dict | None = None,
         headers: dict | None = None, timeout: float = 30) -> tuple[int, Any]:
    """(status, decoded JSON body); an HTTP error status is returned, not raised."""
    request = urllib.request.Request(runtime.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
