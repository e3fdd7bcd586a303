"""The solvency check's duration and DynamoDB reads with 10 and with 10,000 accounts, on DynamoDB Local; the daily
ledger invariant job (a full scan of balance items, parallel segments) beside it for contrast. Printed figures,
not a pass/fail test.

The check reads the system accounts (one Query per system owner: their shards), the open suspense items, the
breaker, the LND payment cursor, the tracked UTXOs (one Query per UTXO shard) and writes one check item: nothing in
it depends on the number of accounts. Accounts are written directly (account item + balance item, balanced by the
owner-equity shards) with BatchWriteItem, so setting up 10,000 takes seconds, not a ledger transaction each.
The Lightning node and the chain are the in-process simulators (the same work in both runs).

Usage: python benchmarks/solvency_check.py [--accounts 10,10000,10] [--repeat 5] [--segments 8] [--warmup 15]
"""
from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
from typing import Any

TABLE = "satflow-bench"
SHARDS = 8
READS = ("get_item", "query", "scan", "batch_get_item")


class CountingClient:
    """A DynamoDB client proxy counting calls per operation and the items they returned."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: collections.Counter[str] = collections.Counter()
        self.items: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr) or name.startswith("_") or name in ("exceptions", "meta", "get_paginator"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            result = attr(*args, **kwargs)
            if isinstance(result, dict):
                self.items[name] += len(result.get("Items", [])) + (1 if result.get("Item") else 0)
            return result

        return call

    def reset(self) -> None:
        self.calls.clear()
        self.items.clear()


def _seed(client: Any, accounts: int) -> None:
    """``accounts`` active accounts with 1,000 msat each, owner equity's shards holding the opposite."""
    from satflow.domain.ledger import SystemAccount

    requests = []
    for i in range(accounts):
        account_id = "acc_" + f"{i:026d}".translate(str.maketrans("0123456789", "abcdefghij"))
        requests.append({"PutRequest": {"Item": {
            "pk": {"S": f"ACCOUNT#{account_id}"}, "sk": {"S": "ACCOUNT"}, "account_id": {"S": account_id},
            "external_ref": {"S": f"bench:{i}"}, "tier": {"N": "1"}, "status": {"S": "active"},
            "created_at": {"S": "2026-12-04T00:00:00.000Z"}}}})
        requests.append({"PutRequest": {"Item": {
            "pk": {"S": f"BAL#{account_id}"}, "sk": {"S": "BTC"}, "owner": {"S": account_id},
            "asset": {"S": "BTC"}, "available": {"N": "1000"}, "pending_out": {"N": "0"},
            "pending_in": {"N": "0"}}}})
    per_shard, rest = divmod(accounts * 1000, SHARDS)
    for shard in range(SHARDS):
        requests.append({"PutRequest": {"Item": {
            "pk": {"S": f"BAL#{SystemAccount.OWNER_EQUITY.value}"}, "sk": {"S": f"BTC#{shard}"},
            "owner": {"S": SystemAccount.OWNER_EQUITY.value}, "asset": {"S": "BTC"}, "shard": {"N": str(shard)},
            "available": {"N": str(-(per_shard + (rest if shard == 0 else 0)))}, "pending_out": {"N": "0"},
            "pending_in": {"N": "0"}}}})
    for start in range(0, len(requests), 25):
        batch = {TABLE: requests[start:start + 25]}
        while batch:
            batch = client.batch_write_item(RequestItems=batch).get("UnprocessedItems") or None


def _fresh_table(client: Any) -> None:
    """The table as template.yaml declares it (pk/sk), empty."""
    try:
        client.delete_table(TableName=TABLE)
    except client.exceptions.ResourceNotFoundException:
        pass
    client.create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])


def _services(client: Any) -> Any:
    from satflow.adapters.bitcoind import BitcoinRpcClient
    from satflow.adapters.dynamodb.chain import DynamoChainStore
    from satflow.adapters.dynamodb.lightning import DynamoLightningStore
    from satflow.adapters.dynamodb.models import build_models
    from satflow.adapters.dynamodb.payouts import DynamoPayoutStore
    from satflow.adapters.dynamodb.solvency import DynamoSolvencyStore
    from satflow.adapters.dynamodb.utxos import DynamoUtxoStore
    from satflow.adapters.lnd import LndRestClient
    from satflow.app.ports import Services
    from satflow_dev.simulators.chain import ChainSimulator
    from satflow_dev.simulators.lightning import LightningSimulator

    from satflow.adapters.dynamodb.audit import DynamoAuditStore
    from satflow.adapters.dynamodb.ledger import DynamoLedger
    from satflow.adapters.dynamodb.webhooks import DynamoWebhookStore
    from satflow.app.recorded_ledger import RecordedLedger

    models = build_models(TABLE, "us-east-1")
    webhooks = DynamoWebhookStore(client, models)
    audit = DynamoAuditStore(client, models, shards=4)
    ledger = RecordedLedger(DynamoLedger(client, models, SHARDS), audit, outbox_items=webhooks.transfer_outbox_items)
    lsim = LightningSimulator(our_balance_msat=0)
    lnd = LndRestClient.from_secret(lsim.secret(), transport=lsim.transport())
    csim = ChainSimulator(seed=1)
    rpc = BitcoinRpcClient("http://chain-sim:18443/", "u", "p", transport=csim.transport())
    return Services(
        ledger=ledger, accounts=None, admin_key=lambda: "x", system_shards=SHARDS, audit=audit, webhooks=webhooks, lightning=DynamoLightningStore(client, models), lnd=lambda: lnd,
        bitcoind=lambda: rpc, utxos=DynamoUtxoStore(client, models), chain=DynamoChainStore(client, models),
        payouts=DynamoPayoutStore(client, models), solvency=DynamoSolvencyStore(client, TABLE),
        solvency_thresholds_sat={"lightning": 10**9, "onchain": 10**9})


def main() -> int:
    parser = argparse.ArgumentParser()
    # 10 again at the end: the first size also pays DynamoDB Local's warm-up; the last row per size is compared
    parser.add_argument("--accounts", default="10,10000,10")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=15, help="unmeasured runs first (DynamoDB Local's JVM warms up)")
    args = parser.parse_args()
    sizes = [int(x) for x in args.accounts.split(",")]
    for name, value in (("AWS_ACCESS_KEY_ID", "local"), ("AWS_SECRET_ACCESS_KEY", "local"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(name, value)  # DynamoDB Local only: never real credentials

    from satflow.app import solvency
    from satflow_dev.regtest.dynamodb_local import DynamoDBLocal
    from satflow_dev.regtest.toolchain import dynamodb_local_built

    if not dynamodb_local_built():
        print("DynamoDB Local is not fetched: run `make regtest-build` first", file=sys.stderr)
        return 2
    rows = []
    with DynamoDBLocal() as server:
        for accounts in sizes:
            raw = server.client()
            _fresh_table(raw)
            t0 = time.perf_counter()
            _seed(raw, accounts)
            seed_s = time.perf_counter() - t0
            client = CountingClient(raw)
            svc = _services(client)
            for _ in range(1 + (args.warmup if accounts == sizes[0] else 0)):
                solvency.run_check(svc)  # the first run initialises the payment cursor; then the JVM warms up
            durations, reads, items = [], [], []
            for _ in range(args.repeat):
                client.reset()
                t = time.perf_counter()
                check = solvency.run_check(svc)
                durations.append(time.perf_counter() - t)
                reads.append(sum(client.calls[op] for op in READS))
                items.append(sum(client.items[op] for op in READS))
            assert check.ok and check.liabilities_msat == accounts * 1000, check.to_dict()
            client.reset()
            t = time.perf_counter()
            summary = solvency.run_invariants(svc, segments=args.segments)
            inv_s = time.perf_counter() - t
            assert summary["ok"], summary
            rows.append((accounts, seed_s, statistics.median(durations), max(reads), max(items),
                         dict(client.calls), inv_s, summary["balance_items"]))
    print(f"solvency_check on DynamoDB Local ({args.repeat} runs each; simulators for LND and the chain)")
    print(f"{'accounts':>9} {'check ms (median)':>18} {'reads/check':>12} {'items read':>11} "
          f"{'invariants ms':>14} {'balance items scanned':>22}")
    for accounts, _seed_s, med, n_reads, n_items, _calls, inv_s, scanned in rows:
        print(f"{accounts:>9} {med * 1000:>18.1f} {n_reads:>12} {n_items:>11} {inv_s * 1000:>14.1f} {scanned:>22}")
    last = {row[0]: row for row in rows}
    if len(last) >= 2:
        small, big = last[min(last)], last[max(last)]
        print(f"ratio {big[0]}/{small[0]} accounts: check time x{big[2] / small[2]:.2f}, reads x{big[3] / small[3]:.2f}, "
              f"items read x{big[4] / small[4]:.2f}; invariant job time x{big[6] / small[6]:.1f} (it scans "
              f"every balance item, once a day, off every request path)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
