"""DynamoDB calls per money route (counted) and HTTP transfer latency against the ledger operation, on DynamoDB
Local, in one run. Printed figures, not a pass/fail test (tests/handlers/test_route_calls.py asserts the budgets).

What runs: the real API handler (functions/api/app.py) on the services the composition root builds
(``satflow.bootstrap``, production wiring: batch reads, recorded ledger with audit + outbox), pointed at a fresh
DynamoDB Local; Lightning is the in-process simulator (no DynamoDB calls), workflows are not started.

* calls per route: each route once to warm the container, then one fresh request counted with a botocore hook
  (``satflow_dev.ddb_calls``); audit chain head reads (``AUDITHEAD#`` GetItems) are shown apart.
* latency: POST /v1/transfers through the handler vs the ledger operation of the same transfer shape as wired
  (``svc.ledger.execute``: audit record + outbox) and raw (the DynamoDB adapter alone), interleaved in one loop so
  all three see the same machine load. p50/p99 in ms and the HTTP/ledger ratios (goal: HTTP within 2x).

Usage: python benchmarks/route_calls.py [--transfers 300]   (needs `make regtest-build` for DynamoDB Local)
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test helpers (event harness, sample sanctions list)

TABLE = "satflow-bench-routes"
CLEAN_ADDRESS = "bcrt1q50rtrmj2f8vl9tem8qpfw36ylw5jg9j2dkku3w"


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transfers", type=int, default=300)
    args = parser.parse_args()

    from satflow_dev.regtest.toolchain import dynamodb_local_built

    if not dynamodb_local_built():
        sys.exit("DynamoDB Local not fetched: run `make regtest-build`")
    from satflow_dev.regtest.dynamodb_local import DynamoDBLocal

    with DynamoDBLocal() as server:
        run(server, args.transfers)


def run(server, transfers: int) -> None:
    from tests.conftest import create_table, loaded_sanctions_store, simulated_lnd  # (it resets AWS_* variables)
    from tests.handlers.conftest import Api, load_handler_module

    os.environ.update(AWS_ENDPOINT_URL=server.endpoint_url, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x",
                      AWS_DEFAULT_REGION="us-east-1", SATFLOW_TABLE=TABLE, POWERTOOLS_SERVICE_NAME="bench",
                      SATFLOW_ADMIN_KEY="admin-bench-key-0123456789", SATFLOW_NETWORK="regtest",
                      POWERTOOLS_LOG_LEVEL="WARNING", SATFLOW_TIER_LIMITS="")
    import logging

    logging.disable(logging.INFO)
    from satflow import bootstrap
    from satflow.adapters.dynamodb.payouts import DynamoPayoutStore  # noqa: F401  (wired by bootstrap)
    from satflow.config import reset as reset_settings
    from satflow.domain.limits import TierLimits
    from satflow.domain.templates import internal_transfer
    from satflow_dev.ddb_calls import counting
    from satflow_dev.simulators.lightning import LightningSimulator

    reset_settings()
    client = server.client()
    create_table(client, TABLE)
    bootstrap.override(None)
    svc = bootstrap.services()
    sim = LightningSimulator()
    svc.lnd = simulated_lnd(sim)
    svc.start_payment = lambda payment_id: None
    svc.start_review = lambda review_id: None
    svc.sanctions = loaded_sanctions_store(svc.sanctions)
    huge = 10 ** 15
    svc.tier_limits = {t: TierLimits(t, huge, huge, huge, 10 ** 6) for t in range(4)}  # measure, not refuse
    ddb = svc.ledger.inner._client
    api = Api(load_handler_module("api", "satflow_fn_api_bench").lambda_handler)
    admin = "admin-bench-key-0123456789"

    def account(ref: str) -> dict:
        status, body = api.call("POST", "/v1/accounts", key=admin, body={"external_ref": ref, "tier": 3})
        assert status == 201, body
        return body

    alice, bob = account("bench:alice"), account("bench:bob")
    status, body = api.call("POST", "/v1/admin/adjustments", key=admin, headers={"Idempotency-Key": "fund"},
                            body={"account_id": alice["account_id"], "amount_msat": 10 ** 13, "direction": "credit",
                                  "reason": "bench"})
    assert status == 201, body

    def transfer(n: int, to: str):
        return api.call("POST", "/v1/transfers", key=alice["api_key"], headers={"Idempotency-Key": f"t{n}{to}"},
                        body={"to": to, "amount_msat": 1_000})

    routes = {
        "POST /v1/transfers": lambda n: transfer(n, bob["account_id"]),
        "POST /v1/transfers (to external_ref)": lambda n: transfer(n, "bench:bob"),
        "POST /v1/payments": lambda n: api.call(
            "POST", "/v1/payments", key=alice["api_key"], headers={"Idempotency-Key": f"p{n}"},
            body={"payment_request": sim.external_invoice(10_000, f"shop {n}")}),
        "POST /v1/payouts": lambda n: api.call(
            "POST", "/v1/payouts", key=alice["api_key"], headers={"Idempotency-Key": f"po{n}"},
            body={"address": CLEAN_ADDRESS, "amount_sat": 10_000}),
        "POST /v1/admin/adjustments": lambda n: api.call(
            "POST", "/v1/admin/adjustments", key=admin, headers={"Idempotency-Key": f"adj{n}"},
            body={"account_id": bob["account_id"], "amount_msat": 1_000, "direction": "credit", "reason": "r"}),
        "POST /v1/invoices": lambda n: api.call("POST", "/v1/invoices", key=bob["api_key"],
                                                body={"amount_msat": 1_000}),
    }
    print("DynamoDB calls per route (warm container, one fresh request; DynamoDB Local)")
    print(f"{'route':<38} {'calls':>5} {'audit head':>10} {'without':>8}  calls")
    for name, send in routes.items():
        status, body = send(0)
        assert status in (201, 202), (name, body)
        with counting(ddb) as log:
            status, body = send(1)
        assert status in (201, 202), (name, body)
        print(f"{name:<38} {log.total:>5} {log.audit_head_reads:>10} {log.excluding_audit_head:>8}  {log.describe()}")

    # Latency: interleaved so the three series share the machine's load.
    raw_ledger = svc.ledger.inner
    http_ms: list[float] = []
    wired_ms: list[float] = []
    raw_ms: list[float] = []

    def ledger_op(ledger, n: int, tag: str) -> None:
        t = internal_transfer(transfer_id=f"tr_bench{tag}{n}", sender=alice["account_id"],
                              recipient=bob["account_id"], amount_msat=1_000, memo=None, request_hash="x",
                              created_at=svc.clock(), shards=svc.system_shards)
        ledger.execute(t)

    for n in range(10):  # warm-up
        transfer(10_000 + n, bob["account_id"])
        ledger_op(svc.ledger, 10_000 + n, "w")
        ledger_op(raw_ledger, 10_000 + n, "r")
    for n in range(transfers):
        t0 = time.perf_counter()
        status, body = transfer(100 + n, bob["account_id"])
        http_ms.append((time.perf_counter() - t0) * 1000)
        assert status == 201, body
        t0 = time.perf_counter()
        ledger_op(svc.ledger, n, "w")
        wired_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        ledger_op(raw_ledger, n, "r")
        raw_ms.append((time.perf_counter() - t0) * 1000)

    print(f"\nPOST /v1/transfers vs the ledger operation ({transfers} each, interleaved, 1 client; DynamoDB Local)")
    print(f"{'what':<44} {'p50 ms':>7} {'p99 ms':>7} {'mean ms':>8}")
    rows = [("HTTP POST /v1/transfers (handler, as wired)", http_ms),
            ("ledger.execute as wired (audit + outbox)", wired_ms),
            ("ledger.execute raw (DynamoDB adapter)", raw_ms)]
    for name, samples in rows:
        print(f"{name:<44} {pct(samples, 0.5):>7.2f} {pct(samples, 0.99):>7.2f} {statistics.mean(samples):>8.2f}")
    print(f"ratio HTTP / ledger as wired: p50 {pct(http_ms, 0.5) / pct(wired_ms, 0.5):.2f}x, "
          f"p99 {pct(http_ms, 0.99) / pct(wired_ms, 0.99):.2f}x (goal <= 2x)")
    print(f"ratio HTTP / ledger raw:      p50 {pct(http_ms, 0.5) / pct(raw_ms, 0.5):.2f}x, "
          f"p99 {pct(http_ms, 0.99) / pct(raw_ms, 0.99):.2f}x")
    bootstrap.override(None)


if __name__ == "__main__":
    main()
