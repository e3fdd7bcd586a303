"""Soak of the local runtime (`python -m satflow_dev.runtime`, what `make run` starts) through its HTTP API, on
DynamoDB Local and on moto. Printed figures, not pass/fail.

For each engine: start the runtime as a subprocess on a free loopback port, create and fund accounts, then
1. 1 client and 8 clients: GET /v1/health (the baseline: gateway + one warm worker, no table) and
   POST /v1/transfers, each on keep-alive connections: requests/s, p50 and p99, and the ratio transfer/health
   measured in the same run;
2. a soak of `--writes` transfers (default 10,000) with 8 clients, bounded by `--max-seconds`: resident memory of
   the runtime's process tree (runtime process, worker processes, DynamoDB Local's JVM) before and after, and every
   `--rss-every` writes.

Limits and risk review are switched off for the run (TierLimits/RiskThresholds parameters): 10,000 sends from 16
accounts would otherwise hit the velocity limit and be held for review, and this measures the runtime, not the
policy. Every transfer must answer 201; other answers are counted as errors, by status.

Usage: python benchmarks/runtime_soak.py [--engines local,moto] [--writes 10000] [--max-seconds 900] [--requests 200]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[1]
ADMIN_KEY = "bench-admin-" + uuid.uuid4().hex
FUNDING_MSAT = 10**12


# ---------------------------------------------------------------------------------------------- process tree RSS

def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in pathlib.Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(c) for c in task.read_text().split()]
        except OSError:
            pass
    return out


def _rss_kb(pid: int) -> int:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cmdline(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def tree_rss(root: int) -> dict[str, float]:
    """MB per part: the runtime process, its worker processes (sum and count), the DynamoDB Local JVM."""
    parts = {"runtime": _rss_kb(root) / 1024, "workers": 0.0, "worker_count": 0, "jvm": 0.0}
    pending = _children(root)
    while pending:
        pid = pending.pop()
        pending += _children(pid)
        cmd = _cmdline(pid)
        if "satflow_dev.runtime.worker" in cmd:
            parts["workers"] += _rss_kb(pid) / 1024
            parts["worker_count"] += 1
        elif "java" in cmd:
            parts["jvm"] += _rss_kb(pid) / 1024
    parts["total"] = parts["runtime"] + parts["workers"] + parts["jvm"]
    return parts


def fmt_rss(p: dict[str, float]) -> str:
    return (f"total {p['total']:.0f} MB = runtime {p['runtime']:.0f} + {p['worker_count']} workers "
            f"{p['workers']:.0f} + JVM {p['jvm']:.0f}")


# ---------------------------------------------------------------------------------------------- HTTP

class Client:
    """One keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call(self, method: str, path: str, key: str | None = None, body: dict | None = None,
             idempotency_key: str | None = None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        data = None if body is None else json.dumps(body)
        try:
            self.connection.request(method, path, body=data, headers=headers)
            response = self.connection.getresponse()
            raw = response.read()
        except (http.client.HTTPException, OSError):
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            raise
        return response.status, json.loads(raw) if raw else {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_runtime(engine: str) -> tuple[subprocess.Popen, int, pathlib.Path]:
    port = _free_port()
    log = pathlib.Path(f"/tmp/satflow-bench-runtime-{engine}-{port}.log")
    env = {**os.environ, "SATFLOW_ADMIN_KEY": ADMIN_KEY, "SATFLOW_SCHEDULE_SCALE": "0",
           "SATFLOW_RUNTIME_LOG_LEVEL": "WARNING", "POWERTOOLS_LOG_LEVEL": "WARNING"}
    unlimited = {tier: {"per_tx_sat": 10**7, "daily_sat": 10**13, "monthly_sat": 10**14, "sends_per_hour": 10**6}
                 for tier in ("0", "1", "2", "3")}
    process = subprocess.Popen([sys.executable, "-m", "satflow_dev.runtime", "--port", str(port), "--dynamodb", engine,
                                "--parameter", f"TierLimits={json.dumps(unlimited)}",
                                "--parameter", 'RiskThresholds={"review":101,"block":101}'],
                               cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the runtime exited ({process.returncode}); see {log}")
        try:
            if Client(port).call("GET", "/v1/health")[0] == 200 and "Ctrl-C to stop" in log.read_text():
                return process, port, log
        except OSError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"the runtime did not start in 300 s; see {log}")


# ---------------------------------------------------------------------------------------------- load

def run_clients(n: int, per_client: int, make_request) -> tuple[float, list[float], int]:
    """n threads, each with its own connection, `per_client` requests each. Returns (requests/s, latencies, errors)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = threading.Barrier(n + 1)

    def worker(i: int) -> None:
        client = Client(PORT)
        mine: list[float] = []
        bad = 0
        start.wait()
        for j in range(per_client):
            t = time.perf_counter()
            try:
                ok = make_request(client, i, j)
            except Exception:  # noqa: BLE001 - counted
                ok = False
            mine.append(time.perf_counter() - t)
            bad += not ok
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    return len(latencies) / elapsed, latencies, errors[0]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


PORT = 0


def bench_engine(engine: str, args: argparse.Namespace) -> dict:
    global PORT
    process, PORT, log = start_runtime(engine)
    try:
        admin = Client(PORT)
        accounts = []
        for i in range(16):
            status, account = admin.call("POST", "/v1/accounts", ADMIN_KEY, {"external_ref": f"bench:{uuid.uuid4().hex[:8]}",
                                                                             "tier": 3})
            assert status == 201, account
            status, funded = admin.call("POST", "/v1/admin/adjustments", ADMIN_KEY,
                                        {"account_id": account["account_id"], "amount_msat": FUNDING_MSAT,
                                         "direction": "credit", "reason": "bench funding"}, uuid.uuid4().hex)
            assert status == 201, funded
            accounts.append(account)

        def health(client: Client, i: int, j: int) -> bool:
            return client.call("GET", "/v1/health")[0] == 200

        statuses: dict[int, int] = {}

        def transfer(client: Client, i: int, j: int) -> bool:
            sender = accounts[(2 * i + j) % 16]
            receiver = accounts[(2 * i + j + 1 + j % 7) % 16]
            status, _ = client.call("POST", "/v1/transfers", sender["api_key"],
                                    {"to": receiver["account_id"], "amount_msat": 1000 + j % 1000}, uuid.uuid4().hex)
            if status != 201:
                statuses[status] = statuses.get(status, 0) + 1
            return status == 201

        run_clients(8, 5, health)  # warm: start the API function's environments before measuring
        run_clients(8, 2, transfer)
        result: dict = {"engine": engine, "phases": {}}
        for clients in (1, 8):
            per = max(1, args.requests // clients)
            h_rate, h_lat, h_err = run_clients(clients, per, health)
            t_rate, t_lat, t_err = run_clients(clients, per, transfer)
            result["phases"][clients] = {
                "health": (h_rate, pct(h_lat, 0.5), pct(h_lat, 0.99), h_err),
                "transfer": (t_rate, pct(t_lat, 0.5), pct(t_lat, 0.99), t_err),
            }
            print(f"[{engine}] {clients} client(s): health {h_rate:.0f}/s p50 {pct(h_lat, .5):.1f} ms p99 "
                  f"{pct(h_lat, .99):.1f} ms | transfer {t_rate:.1f}/s p50 {pct(t_lat, .5):.1f} ms p99 "
                  f"{pct(t_lat, .99):.1f} ms (errors {h_err}/{t_err})", flush=True)

        before = tree_rss(process.pid)
        print(f"[{engine}] RSS before soak: {fmt_rss(before)}", flush=True)
        done = [0]
        errors = [0]
        stop_at = time.monotonic() + args.max_seconds
        lock = threading.Lock()
        samples: list[tuple[int, float, dict]] = []
        next_sample = [args.rss_every]
        soak_started = time.monotonic()

        def soak_worker(i: int) -> None:
            client = Client(PORT)
            j = 0
            while True:
                with lock:
                    if done[0] >= args.writes or time.monotonic() > stop_at:
                        return
                    done[0] += 1
                    n = done[0]
                try:
                    ok = transfer(client, i, j)
                except Exception:  # noqa: BLE001 - counted
                    ok = False
                j += 1
                with lock:
                    errors[0] += not ok
                    if n >= next_sample[0]:
                        next_sample[0] += args.rss_every
                        samples.append((n, time.monotonic() - soak_started, tree_rss(process.pid)))
                        print(f"[{engine}]   {n} writes in {samples[-1][1]:.0f} s: {fmt_rss(samples[-1][2])}",
                              flush=True)

        threads = [threading.Thread(target=soak_worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - soak_started
        after = tree_rss(process.pid)
        result.update(before=before, after=after, writes=done[0], soak_errors=errors[0], soak_s=elapsed,
                      samples=samples, statuses=dict(statuses))
        print(f"[{engine}] RSS after {done[0]} writes ({elapsed:.0f} s, {done[0] / elapsed:.1f}/s, "
              f"errors {errors[0]}): {fmt_rss(after)}; non-201 answers over the run: {statuses}", flush=True)
        return result
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="local,moto")
    parser.add_argument("--writes", type=int, default=10_000)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="bound on each soak's duration")
    parser.add_argument("--requests", type=int, default=200, help="requests per measured phase")
    parser.add_argument("--rss-every", type=int, default=1000)
    args = parser.parse_args()
    results = [bench_engine(engine, args) for engine in args.engines.split(",")]

    print("\nsummary (ratio = transfer/health in the same run; p50/p99 in ms)")
    for r in results:
        for clients, phase in r["phases"].items():
            h, t = phase["health"], phase["transfer"]
            print(f"  {r['engine']:<5} {clients} client(s): transfer {t[0]:7.1f}/s  p50 {t[1]:7.1f}  p99 {t[2]:7.1f} | "
                  f"health {h[0]:7.1f}/s  p50 {h[1]:6.1f}  p99 {h[2]:6.1f} | ratio: rate {t[0] / h[0]:.3f}, "
                  f"p50 x{t[1] / h[1]:.1f}, p99 x{t[2] / h[2]:.1f}")
        print(f"  {r['engine']:<5} soak: {r['writes']} writes in {r['soak_s']:.0f} s ({r['writes'] / r['soak_s']:.1f}/s, "
              f"errors {r['soak_errors']}); RSS before {fmt_rss(r['before'])}; after {fmt_rss(r['after'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
