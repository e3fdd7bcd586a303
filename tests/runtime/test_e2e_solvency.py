"""The real template on the local runtime with the Lightning and chain simulators: the runtime books the node's
opening capital at start (the runbook's first step), the solvency_check schedule finds no drift; a payment made on
the node outside satflow is found, booked to suspense, trips the breaker; POST /v1/payments answers 503
SENDS_PAUSED; the admin sees it in GET /v1/admin/solvency and /v1/admin/suspense, assigns it and resumes."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.runtime_http import fresh_stack_name

from .conftest import REAL_TEMPLATE


@pytest.fixture(scope="module")
def runtime():
    from satflow_dev.runtime.local_runtime import LocalRuntime
    from satflow_dev.runtime.services import chain_service_factory, lightning_service_factory, schedule_runner_factory

    factories = [lightning_service_factory, chain_service_factory, schedule_runner_factory]
    with LocalRuntime(REAL_TEMPLATE, port=0, service_factories=factories, write_admin_key_file=False,
                      stack_name=fresh_stack_name(),
                      environ={"SATFLOW_SCHEDULE_SCALE": "0", "SATFLOW_BREAKER_CACHE_S": "0"}) as rt:
        yield rt


def _call(runtime, method: str, path: str, *, key: str | None = None, body: dict | None = None,
          headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(runtime.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
    request.add_header("Authorization", f"Bearer {key or runtime.admin_key}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _check(runtime) -> dict:
    result = runtime.service("schedules").fire("MonitorFunction", job="solvency_check")
    assert result["ok"], result
    status, view = _call(runtime, "GET", "/v1/admin/solvency")
    assert status == 200, view
    return view


def test_foreign_payment_pauses_sends_until_assigned_and_resumed(runtime):
    sim = runtime.service("lightning").simulator
    view = _check(runtime)
    lightning = next(s for s in view["latest"]["sources"] if s["source"] == "lightning")
    drift = lightning["unexplained_msat"]
    if drift:
        # moto's backend is per process: runtimes of earlier test modules left their ledger in this table, but
        # their simulated nodes are gone. Reconcile as an operator would, then the steady state holds.
        status, body = _call(runtime, "POST", "/v1/admin/solvency/capital", headers={"Idempotency-Key": "e2e-rec"},
                             body={"source": "lightning", "amount_msat": abs(drift),
                                   "direction": "in" if drift > 0 else "out", "reason": "shared test process"})
        assert status == 201, body
        if view["breaker"]["sends"] == "paused":
            _call(runtime, "POST", "/v1/admin/solvency/resume", body={"reason": "reconciled"})
        view = _check(runtime)
        lightning = next(s for s in view["latest"]["sources"] if s["source"] == "lightning")
    assert lightning["unexplained_msat"] == 0 and view["breaker"]["sends"] == "open", view

    status, account = _call(runtime, "POST", "/v1/accounts", body={"external_ref": "tg:solv", "tier": 3})
    assert status == 201, account
    _call(runtime, "POST", "/v1/admin/adjustments", headers={"Idempotency-Key": "f1"},
          body={"account_id": account["account_id"], "amount_msat": 5_000_000, "direction": "credit",
                "reason": "test funding"})

    sim.foreign_pay(40_000_000)
    view = _check(runtime)
    assert view["breaker"]["sends"] == "paused" and view["latest"]["breaches"], view
    status, body = _call(runtime, "POST", "/v1/payments", key=account["api_key"],
                         headers={"Idempotency-Key": "p1"}, body={"payment_request": sim.external_invoice(1_000)})
    assert (status, body["error"]["code"]) == (503, "SENDS_PAUSED"), body
    status, body = _call(runtime, "GET", "/v1/admin/suspense", key=account["api_key"])
    assert status == 403, body

    status, listed = _call(runtime, "GET", "/v1/admin/suspense?status=open")
    [item] = listed["items"]
    assert item["kind"] == "foreign_payment" and item["amount_msat"] >= 40_000_000
    status, assigned = _call(runtime, "POST", f"/v1/admin/suspense/{item['id']}/assign",
                             body={"to": "expense", "reason": "written off"})
    assert status == 200 and assigned["status"] == "assigned", assigned
    status, resumed = _call(runtime, "POST", "/v1/admin/solvency/resume", body={"reason": "reconciled"})
    assert status == 200 and resumed["breaker"]["sends"] == "open", resumed
    status, body = _call(runtime, "POST", "/v1/admin/solvency/resume", body={"reason": "again"})
    assert status == 409, body
    view = _check(runtime)
    assert view["breaker"]["sends"] == "open" and not view["latest"]["breaches"], view
    assert view["history"][0]["check_id"] == view["latest"]["check_id"] and len(view["history"]) >= 3
