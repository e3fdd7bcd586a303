"""Several clients at once through the local runtime's HTTP API, each with its own account key: transfers, invoices
and Lightning payments. Every answer must match its own request, and the final ledger must equal what the
accepted requests imply. (The thread-based runtime failed this: Powertools keeps the current request on a class
attribute, so concurrent invocations in one process executed each other's bodies under the wrong key.)"""
from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

from tests.runtime_http import fresh_stack_name

from .conftest import REAL_TEMPLATE

ROOT = REAL_TEMPLATE.parent
NEEDED = [ROOT / "functions" / name / "app.py" for name in ("api", "payment")]
pytestmark = pytest.mark.skipif(not all(p.exists() for p in NEEDED), reason="the API/payment functions are missing")

CLIENTS = 4  # = the API function's local concurrency: no client waits for an environment
ROUNDS = 2
FUNDING_MSAT = 10_000_000


@pytest.fixture(scope="module")
def runtime():
    from satflow_dev.runtime.local_runtime import LocalRuntime
    from satflow_dev.runtime.services import lightning_service_factory

    with LocalRuntime(REAL_TEMPLATE, port=0, service_factories=[lightning_service_factory],
                      stack_name=fresh_stack_name(), write_admin_key_file=False,
                      # Timeouts stay enforced, with room for a test machine at load 15 on 2 cores.
                      environ={**os.environ, "SATFLOW_LOCAL_CONCURRENCY": str(CLIENTS),
                               "SATFLOW_LOCAL_TIMEOUT_SCALE": "4"},
                      invocation=os.environ.get("SATFLOW_TEST_INVOCATION", "process")) as rt:
        if rt.invocation == "process":
            assert rt.invoker.prewarm("ApiFunction", CLIENTS) == CLIENTS  # cold starts before the clients start
        yield rt


def _call(runtime, method: str, path: str, *, key: str | None = None, body: dict | None = None,
          idempotency_key: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(runtime.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if idempotency_key:
        request.add_header("Idempotency-Key", idempotency_key)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _balance(runtime, key: str) -> dict:
    status, body = _call(runtime, "GET", "/v1/balance", key=key)
    assert status == 200, body
    return body["balances"][0]


def test_concurrent_clients_get_their_own_answers_and_the_ledger_adds_up(runtime):
    run = uuid.uuid4().hex[:8]
    accounts = []
    for i in range(CLIENTS):
        status, account = _call(runtime, "POST", "/v1/accounts", key=runtime.admin_key,
                                body={"external_ref": f"conc:{run}:{i}", "tier": 3})
        assert status == 201, account
        status, funded = _call(runtime, "POST", "/v1/admin/adjustments", key=runtime.admin_key,
                               idempotency_key=f"fund-{run}-{i}",
                               body={"account_id": account["account_id"], "amount_msat": FUNDING_MSAT,
                                     "direction": "credit", "reason": "test funding"})
        assert status == 201, funded
        accounts.append(account)
    # External invoices for the payments, made up front so the clients only talk to the API.
    externals = {}
    for i in range(CLIENTS):
        for r in range(ROUNDS):
            status, inv = _call(runtime, "POST", "/_sim/lightning/invoices",
                                body={"amount_msat": 2_000 + 100 * i + r, "memo": f"ext-{i}-{r}"})
            assert status == 201, inv
            externals[i, r] = {**inv, "amount_msat": 2_000 + 100 * i + r}

    mismatches: list[str] = []
    sent: dict[int, list[tuple[str, int, int]]] = {i: [] for i in range(CLIENTS)}  # (transfer id, to index, amount)
    payments: dict[int, list[str]] = {i: [] for i in range(CLIENTS)}
    start = threading.Barrier(CLIENTS)

    def client(i: int) -> None:
        start.wait()
        try:
            rounds(i)
        except Exception as exc:  # noqa: BLE001 - a client that crashed is a mismatch too
            mismatches.append(f"client {i}: {exc!r}")

    def rounds(i: int) -> None:
        key = accounts[i]["api_key"]
        for r in range(ROUNDS):
            to = (i + 1 + r) % CLIENTS
            if to == i:
                to = (to + 1) % CLIENTS
            amount = 10_000 + 1_000 * i + r  # unique per (client, round): the answer must carry it
            status, t = _call(runtime, "POST", "/v1/transfers", key=key, idempotency_key=f"t-{run}-{i}-{r}",
                              body={"to": accounts[to]["account_id"], "amount_msat": amount, "memo": f"{run}:{i}:{r}"})
            if status != 201 or t.get("amount_msat") != amount or t.get("to") != accounts[to]["account_id"]:
                mismatches.append(f"transfer {i}/{r}: {status} {t}")
            else:
                sent[i].append((t["transfer_id"], to, amount))

            memo = f"inv-{run}-{i}-{r}"
            status, inv = _call(runtime, "POST", "/v1/invoices", key=key, body={"amount_msat": 5_000 + i, "memo": memo})
            if status != 201 or inv.get("memo") != memo or inv.get("amount_msat") != 5_000 + i:
                mismatches.append(f"invoice {i}/{r}: {status} {inv}")

            external = externals[i, r]
            status, p = _call(runtime, "POST", "/v1/payments", key=key, idempotency_key=f"p-{run}-{i}-{r}",
                              body={"payment_request": external["payment_request"]})
            if status != 202 or p.get("payment_hash") != external["payment_hash"] \
                    or p.get("amount_msat") != external["amount_msat"]:
                mismatches.append(f"payment {i}/{r}: {status} {p}")
            else:
                payments[i].append(p["payment_id"])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert mismatches == []

    # Every payment reaches a final state (the payment workflow runs in PaymentFunction's workers).
    paid_msat = {i: 0 for i in range(CLIENTS)}
    deadline = time.monotonic() + 120
    for i, ids in payments.items():
        for payment_id in ids:
            while True:
                status, p = _call(runtime, "GET", f"/v1/payments/{payment_id}", key=accounts[i]["api_key"])
                assert status == 200, p
                if p["status"] in ("SUCCEEDED", "FAILED") or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert p["status"] == "SUCCEEDED", p
            paid_msat[i] += p["amount_msat"] + p["fee_msat"]

    for i, account in enumerate(accounts):
        received = sum(amount for j in range(CLIENTS) for _, to, amount in sent[j] if to == i)
        expected = FUNDING_MSAT - sum(a for _, _, a in sent[i]) + received - paid_msat[i]
        balance = _balance(runtime, account["api_key"])
        assert (balance["available_msat"], balance["pending_out_msat"]) == (expected, 0), (i, balance)
        # The history of each account holds exactly its own transfers, with its own memos.
        status, history = _call(runtime, "GET", "/v1/transactions?limit=100", key=account["api_key"])
        assert status == 200, history
        outgoing = {h["transfer_id"]: h for h in history["items"] if h["type"] == "internal_transfer" and h["direction"] == "out"}
        assert set(outgoing) == {tid for tid, _, _ in sent[i]}
        assert all(h["memo"].startswith(f"{run}:{i}:") for h in outgoing.values())
