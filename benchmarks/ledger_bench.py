"""The ledger's write path on DynamoDB Local: ops/s and p50/p99 latency at 1/4/8/16 threads for

  floor  a plain boto3 TransactWriteItems of exactly the items the wired ledger sends (built before timing),
  raw    the ledger adapter (DynamoLedger.execute: items built, classified on cancellation),
  wired  the ledger as production wires it (RecordedLedger: + the pending audit entry + the outbox event),
  head   the write path this replaced (a chain head read, then a conditional head update in the transaction),

with wired/floor and raw/floor measured in the same run; the hot-account case (8 threads sending from one account);
retries per operation; and the audit sealer's throughput behind the workload. Printed figures, not pass/fail.

DynamoDB Local executes transactions one at a time, so TransactionConflict never shows here (tooling notes): what
contention remains is counted as retries (the wired ledger retries transient cancellations) and reasoned about in
docs/audit.md. One section per function so other sections (e.g. DynamoDB calls per HTTP route) can be added.

Usage: python benchmarks/ledger_bench.py [--seconds 2.5] [--threads 1,4,8,16]   (needs `make regtest-build`)
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

NOW = "2026-12-04T12:00:00.000Z"
TABLE = "satflow-bench"
SHARDS, AUDIT_SHARDS = 8, 16
ACCOUNTS_PER_THREAD = 4
FUNDS = 10**15


@dataclass
class Context:
    client: Any
    models: Any
    raw: Any  # DynamoLedger
    wired: Any  # RecordedLedger as bootstrap wires it
    audit: Any  # DynamoAuditStore
    accounts: list[str]
    seconds: float
    ids: Any = field(default_factory=lambda: itertools.count())
    rows: list[dict] = field(default_factory=list)
    floor_rate_per_thread: float = 100.0  # ops/s, updated from every floor run
    floor_on_demand: int = 0
    legacy: Any = None  # LegacyHeadLedger

    def next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids)}"


@dataclass
class Run:
    ops: int
    elapsed: float
    latencies: list[float]
    retries: int = 0
    errors: int = 0

    @property
    def rate(self) -> float:
        return self.ops / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


# ---------------------------------------------------------------------------------------------- setup
def start(seconds: float) -> tuple[Context, Callable[[], None]]:
    from botocore.config import Config

    from satflow.adapters.dynamodb.audit import DynamoAuditStore
    from satflow.adapters.dynamodb.accounts import DynamoAccounts
    from satflow.adapters.dynamodb.ledger import DynamoLedger
    from satflow.adapters.dynamodb.models import build_models
    from satflow.adapters.dynamodb.webhooks import DynamoWebhookStore
    from satflow.app.recorded_ledger import RecordedLedger
    from satflow.domain.accounts import Account, AccountStatus, Scope
    from satflow.domain.templates import admin_adjustment
    from satflow_dev.regtest.dynamodb_local import DynamoDBLocal
    from satflow_dev.regtest.toolchain import dynamodb_local_built

    if not dynamodb_local_built():
        sys.exit("DynamoDB Local is not fetched: run `make regtest-build` first")
    server = DynamoDBLocal().start()
    client = server.client(config=Config(max_pool_connections=64, retries={"max_attempts": 1}))
    client.create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
    models = build_models(TABLE, "us-east-1", server.endpoint_url)
    raw = DynamoLedger(client, models, SHARDS)
    audit = DynamoAuditStore(client, models, shards=AUDIT_SHARDS)
    wired = RecordedLedger(DynamoLedger(client, models, SHARDS), audit,
                           outbox_items=DynamoWebhookStore(client, models).transfer_outbox_items)
    accounts_port = DynamoAccounts(client, models)
    accounts = [f"acc_bench{i:04d}" for i in range(16 * ACCOUNTS_PER_THREAD)]
    for i, acc in enumerate(accounts):
        accounts_port.create(Account(acc, f"bench:{i}", 3, AccountStatus.ACTIVE, NOW), f"hash{i}", "sk_", [Scope.SEND])
        raw.execute(admin_adjustment(transfer_id=f"fund{i}", account_id=acc, amount_msat=FUNDS, direction="credit",
                                     reason="bench", created_at=NOW, shards=SHARDS))
    return Context(client, models, raw, wired, audit, accounts, seconds), server.stop


def transfer(ctx: Context, sender: str, recipient: str, prefix: str) -> Any:
    from satflow.domain.templates import internal_transfer

    return internal_transfer(transfer_id=ctx.next_id(prefix), sender=sender, recipient=recipient, amount_msat=1,
                             created_at=NOW, shards=SHARDS)


def floor_params(ctx: Context, t: Any) -> list[dict]:
    """Exactly the items the wired ledger sends for ``t`` (ledger + outbox + audit entry), as boto3 parameters."""
    from satflow.domain.ledger import shard_for
    from satflow.app.recorded_ledger import audit_entry_for

    outbox = list(ctx.wired._outbox_items(t))
    _, audit_items = ctx.audit.prepare(audit_entry_for(t), shard_for(t.id, ctx.audit.shards), entry_id=t.id)
    return [{i.op: i.params} for i in ctx.raw._items(t) + outbox + audit_items]


class LegacyHeadLedger:
    """The write path this replaced, rebuilt for a same-run comparison: a consistent GetItem of one of 16 chain
    heads, then the ledger transaction carrying the head update (conditional on what was read) and the chained
    record; a moved head cancels everything and is retried (8 attempts, jittered backoff)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.retries = 0
        self._lock = threading.Lock()

    def execute(self, t: Any) -> Any:
        from satflow.adapters.dynamodb.transaction import TxItem
        from satflow.app.recorded_ledger import audit_entry_for
        from satflow.domain.audit import backoff_s
        from satflow.domain.errors import AuditHeadMoved
        from satflow.domain.ledger import shard_for

        ctx = self.ctx
        shard = shard_for(t.id, AUDIT_SHARDS)
        head_key = {"pk": {"S": f"LEGACYHEAD#{shard}"}, "sk": {"S": "HEAD"}}
        outbox = list(ctx.wired._outbox_items(t))
        for attempt in range(1, 9):
            raw = ctx.client.get_item(TableName=TABLE, Key=head_key, ConsistentRead=True).get("Item")
            seq = int(raw["seq"]["N"]) if raw else 0
            condition = {"ConditionExpression": "seq = :s", "ExpressionAttributeValues": {
                ":s": {"N": str(seq)}, ":n": {"N": str(seq + 1)}}} if raw else {
                "ConditionExpression": "attribute_not_exists(pk)", "ExpressionAttributeValues": {":n": {"N": "1"}}}
            head = TxItem("legacy_head", "Update", {"TableName": TABLE, "Key": head_key,
                                                    "UpdateExpression": "SET seq = :n", **condition},
                          lambda old: AuditHeadMoved("moved"))
            _, (entry,) = ctx.audit.prepare(audit_entry_for(t), shard, entry_id=t.id)
            item = {**entry.params["Item"], "pk": {"S": f"LEGACY#{shard}"}, "sk": {"S": f"{seq + 1:012d}"}}
            record = TxItem("legacy_record", "Put", {"TableName": TABLE, "Item": item,
                                                     "ConditionExpression": "attribute_not_exists(pk)"})
            try:
                return ctx.raw.execute(t, outbox + [head, record])
            except AuditHeadMoved:
                with self._lock:
                    self.retries += 1
                time.sleep(backoff_s(attempt))
        raise AuditHeadMoved("the chain head kept moving")


# ---------------------------------------------------------------------------------------------- runner
def run_threads(ctx: Context, threads: int, make_op: Callable[[int], Callable[[], None]]) -> Run:
    """``threads`` workers each calling its op for ``ctx.seconds``; every call's latency recorded."""
    ops = [make_op(i) for i in range(threads)]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    barrier = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def worker(i: int) -> None:
        barrier.wait()
        op, mine = ops[i], latencies[i]
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            try:
                op()
            except Exception:  # noqa: BLE001 - counted and printed
                errors[i] += 1
                continue
            mine.append(time.perf_counter() - t0)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for th in pool:
        th.start()
    stop_at[0] = time.perf_counter() + ctx.seconds
    t0 = time.perf_counter()
    barrier.wait()
    for th in pool:
        th.join()
    elapsed = time.perf_counter() - t0
    flat = [x for lat in latencies for x in lat]
    return Run(len(flat), elapsed, flat, errors=sum(errors))


def prebuilt(ctx: Context, make_transfer: Callable[[], Any], threads: int) -> Any:
    """Floor item lists built before timing: twice what the floor managed per thread so far (so only the round
    trip is timed), then built on demand - counted in ``ctx.floor_on_demand`` and printed."""
    want = int(ctx.floor_rate_per_thread * ctx.seconds * 2) + 20
    ready = [floor_params(ctx, make_transfer()) for _ in range(want)]

    def on_demand() -> Any:
        while True:
            ctx.floor_on_demand += 1
            yield floor_params(ctx, make_transfer())

    return itertools.chain(ready, on_demand())


def spread_ops(ctx: Context, variant: str, threads: int) -> Callable[[int], Callable[[], None]]:
    """Thread i sends from its own accounts to another thread's: no balance item is shared between concurrent
    senders (the spread workload). ``floor`` items are built up front so only the round trip is timed."""
    def make(i: int) -> Callable[[], None]:
        senders = ctx.accounts[i * ACCOUNTS_PER_THREAD:(i + 1) * ACCOUNTS_PER_THREAD]
        others = [a for a in ctx.accounts if a not in senders]
        pairs = itertools.cycle([(s, others[(i * 7 + k) % len(others)]) for k, s in enumerate(senders)])
        if variant == "floor":
            batches = prebuilt(ctx, lambda: transfer(ctx, *next(pairs), "fl"), threads)
            return lambda: ctx.client.transact_write_items(TransactItems=next(batches))
        ledger = {"raw": ctx.raw, "wired": ctx.wired, "head": ctx.legacy}[variant]
        return lambda: ledger.execute(transfer(ctx, *next(pairs), variant[:2]))
    return make


def hot_ops(ctx: Context, variant: str) -> Callable[[int], Callable[[], None]]:
    """Every thread sends from ONE account (the hot-account case)."""
    hot = ctx.accounts[0]

    def make(i: int) -> Callable[[], None]:
        recipient = ctx.accounts[1 + i]
        if variant == "floor":
            batches = prebuilt(ctx, lambda: transfer(ctx, hot, recipient, "hf"), 8)
            return lambda: ctx.client.transact_write_items(TransactItems=next(batches))
        ledger = {"raw": ctx.raw, "wired": ctx.wired, "head": ctx.legacy}[variant]
        return lambda: ledger.execute(transfer(ctx, hot, recipient, "h" + variant[:1]))
    return make


# ---------------------------------------------------------------------------------------------- sections
def section_warm_up(ctx: Context) -> None:
    """The JVM behind DynamoDB Local compiles its hot paths during the first thousand requests: not measured."""
    seconds, ctx.seconds = ctx.seconds, 2.0
    for variant in ("floor", "wired"):
        run = run_threads(ctx, 4, spread_ops(ctx, variant, 4))
        if variant == "floor" and run.ops:
            ctx.floor_rate_per_thread = run.rate / 4
    ctx.seconds = seconds
    ctx.floor_on_demand = 0


ROUNDS = 3  # each cell is measured in rounds, variants interleaved: a shared machine's load hits all alike


def measure(ctx: Context, threads: int, ops_for: Callable[[str], Callable[[int], Callable[[], None]]]) -> dict[str, Run]:
    """floor / raw / wired / head, interleaved over ROUNDS rounds of ``seconds / ROUNDS`` each (rotated order)."""
    variants = ["floor", "raw", "wired", "head"]
    total = {v: Run(0, 0.0, []) for v in variants}
    seconds, ctx.seconds = ctx.seconds, ctx.seconds / ROUNDS
    try:
        for r in range(ROUNDS):
            for variant in variants[r % len(variants):] + variants[:r % len(variants)]:
                before = ctx.wired.retries + ctx.legacy.retries
                run = run_threads(ctx, threads, ops_for(variant))
                if variant == "floor" and run.ops:
                    ctx.floor_rate_per_thread = run.rate / threads
                acc = total[variant]
                acc.ops += run.ops
                acc.elapsed += run.elapsed
                acc.latencies += run.latencies
                acc.errors += run.errors
                acc.retries += ctx.wired.retries + ctx.legacy.retries - before
    finally:
        ctx.seconds = seconds
    return total


def print_rows(ctx: Context, label: str, threads: int, runs: dict[str, Run]) -> None:
    for variant, run in runs.items():
        ratio = run.rate / runs["floor"].rate if runs["floor"].rate else 0.0
        per_op = run.retries / run.ops if run.ops else 0.0
        print(f"{threads:>7} | {variant:>6} | {run.rate:>7.0f} | {run.pct(0.5):>7.1f} | {run.pct(0.99):>7.1f} | "
              f"{ratio:>7.2f} | {per_op:>10.3f} | {run.errors}")
        ctx.rows.append({"section": label, "threads": threads, "variant": variant, "ops_s": run.rate,
                         "ratio": ratio, "retries_per_op": per_op})


HEADER = f"{'threads':>7} | {'variant':>6} | {'ops/s':>7} | {'p50 ms':>7} | {'p99 ms':>7} | {'x floor':>7} | retries/op | errors"


def section_thread_scaling(ctx: Context, thread_counts: list[int]) -> None:
    print(f"\n## Spread workload: {ctx.seconds:.1f} s per cell ({ROUNDS} interleaved rounds), DynamoDB Local, "
          f"{AUDIT_SHARDS} audit chains, outbox on")
    print(HEADER)
    for threads in thread_counts:
        print_rows(ctx, "spread", threads, measure(ctx, threads, lambda v, n=threads: spread_ops(ctx, v, n)))


def section_hot_account(ctx: Context, threads: int = 8) -> None:
    print(f"\n## Hot account: {threads} threads sending from one account ({ctx.seconds:.1f} s per row)")
    print(HEADER)
    print_rows(ctx, "hot", threads, measure(ctx, threads, lambda v: hot_ops(ctx, v)))
    print("(DynamoDB Local serialises transactions, so no TransactionConflict can appear here; on DynamoDB the hot\n"
          " account's balance item is the only shared item - the audit path adds none, see docs/audit.md)")


def section_cpu(ctx: Context, n: int = 400) -> None:
    """Python CPU per operation, no I/O (one thread): what separates the adapter from the floor, whose items are
    built before timing. Under the GIL this caps a process's ops/s whatever DynamoDB does."""
    from satflow.app.recorded_ledger import audit_entry_for
    from satflow.domain.ledger import shard_for

    t = transfer(ctx, ctx.accounts[0], ctx.accounts[1], "cpu")
    parts = {
        "ledger items (DynamoLedger._items, pynamodb)": lambda: ctx.raw._items(t),
        "outbox event items": lambda: ctx.wired._outbox_items(t),
        "audit entry (prepare: no read)": lambda: ctx.audit.prepare(audit_entry_for(t), shard_for(t.id, 16),
                                                                    entry_id=t.id),
    }
    print(f"\n## Python CPU per operation ({n} builds each, this machine's load included)")
    for label, fn in parts.items():
        t0 = time.process_time()
        for _ in range(n):
            fn()
        print(f"{label:>46}: {(time.process_time() - t0) / n * 1e3:6.2f} ms")


def section_seal(ctx: Context, per_chain: int = 40) -> None:
    """The sealer behind the workload: everything the sections above wrote, sealed chain by chain."""
    from types import SimpleNamespace

    from satflow.app.audit import verify_step

    pending = sum(len(ctx.audit.pending(s, 10_000)) for s in range(ctx.audit.shards))
    batches = [(s, ctx.audit.pending(s, per_chain)) for s in range(ctx.audit.shards)]
    t0 = time.perf_counter()
    sealed = head_retries = 0
    for shard, entries in batches:
        outcome = ctx.audit.seal(shard, entries, from_stream=True)
        sealed, head_retries = sealed + len(outcome.sealed), head_retries + outcome.head_retries
    seal_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    verdict = verify_step(SimpleNamespace(audit=ctx.audit), 10**9)
    verify_s = time.perf_counter() - t0
    print(f"\n## Sealer: {sealed} of {pending} pending entries sealed in {seal_s:.1f} s ({sealed / seal_s:.0f} "
          f"records/s, one thread, up to 33 per TransactWriteItems), head retries {head_retries}; verified "
          f"{verdict['records']} sealed records from genesis in {verify_s:.1f} s "
          f"({verdict['records'] / verify_s:.0f}/s), ok={verdict['ok']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per cell and variant")
    parser.add_argument("--threads", default="1,4,8,16")
    args = parser.parse_args()
    thread_counts = [int(x) for x in args.threads.split(",")]
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop DynamoDB Local on the way out
    started = time.perf_counter()
    ctx, stop = start(args.seconds)
    ctx.legacy = LegacyHeadLedger(ctx)
    try:
        section_warm_up(ctx)
        section_thread_scaling(ctx, thread_counts)
        section_hot_account(ctx)
        section_cpu(ctx)
        section_seal(ctx)
    finally:
        stop()
    spread = [r for r in ctx.rows if r["variant"] == "wired" and r["section"] == "spread"]
    worst = min(spread, key=lambda r: r["ratio"])
    heads = [r for r in ctx.rows if r["variant"] == "head" and r["section"] == "spread"]
    print(f"\nfloor item lists built during timing (should be 0): {ctx.floor_on_demand}")
    print(f"head design (replaced): wired/head {statistics.median(w['ops_s'] / h['ops_s'] for w, h in zip(spread, heads) if h['ops_s']):.2f}x median, "
          f"retries/op up to {max(r['retries_per_op'] for r in heads):.3f}")
    print(f"wired/floor: min {worst['ratio']:.2f}x (at {worst['threads']} threads), "
          f"median {statistics.median(r['ratio'] for r in spread):.2f}x; "
          f"retries/op on the spread workload: {max(r['retries_per_op'] for r in spread):.3f}; "
          f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
