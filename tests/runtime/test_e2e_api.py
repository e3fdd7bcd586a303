"""The real template and the real API handler behind the local runtime, over HTTP."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import pytest

from tests.runtime_http import fresh_stack_name

from .conftest import REAL_TEMPLATE

API_HANDLER = REAL_TEMPLATE.parent / "functions" / "api" / "app.py"

pytestmark = pytest.mark.skipif(not API_HANDLER.exists(), reason="functions/api/app.py is not written yet")


@pytest.fixture(scope="module")
def api_runtime():
    from satflow_dev.runtime.local_runtime import LocalRuntime

    with LocalRuntime(REAL_TEMPLATE, port=0, service_factories=[], write_admin_key_file=False,
                      stack_name=fresh_stack_name()) as runtime:
        yield runtime


def _call(runtime, method: str, path: str, *, key: str | None = None, body: dict | None = None):
    request = urllib.request.Request(runtime.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health(api_runtime):
    assert _call(api_runtime, "GET", "/v1/health") == (200, {"status": "ok"})


def test_admin_key_from_the_secret_creates_an_account(api_runtime):
    # Unless SATFLOW_ADMIN_KEY is set, the key was generated at start and the handler reads it from Secrets Manager.
    ref = f"e2e:runtime-{uuid.uuid4().hex[:8]}"  # moto's state is process-wide: never reuse a ref
    status, body = _call(api_runtime, "POST", "/v1/accounts", key=api_runtime.admin_key,
                         body={"external_ref": ref, "tier": 1})
    assert status == 201, body
    assert body["external_ref"] == ref and body["api_key"]
    status, balance = _call(api_runtime, "GET", "/v1/balance", key=body["api_key"])
    assert status == 200 and balance["balances"][0]["available_msat"] == 0



def test_the_demo_runs_clean(api_runtime, capsys):
    """`make demo` against the runtime: funding, transfer, idempotent replay, balances, history."""
    from satflow_dev.demo import Api, DemoFailure, run_demo

    run_demo(Api(api_runtime.url), api_runtime.admin_key)
    assert "alice pays bob" in capsys.readouterr().out
    with pytest.raises(DemoFailure, match="expected HTTP 201, got 401"):
        run_demo(Api(api_runtime.url), "not-the-admin-key")
