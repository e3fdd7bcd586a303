"""WebSocket real-time updates in the local runtime on DynamoDB Local (`make regtest-build` first): time from a
committed transfer to the message on the recipient's connection, and the runtime's resident memory with 1,000
open, subscribed connections. Printed figures, not a pass/fail test; loopback only, bounded in count and time.

The runtime runs as its own process (`python -m satflow_dev.runtime --dynamodb local`, what `make run
DYNAMODB=local` starts), so its memory is measured apart from the clients'. Steps:
1. baseline RSS of the runtime's process tree (runtime + DynamoDB Local's JVM counted apart);
2. open N connections (--connections, default 1,000) over --accounts accounts with the `websockets` client, each
   authenticated at $connect and subscribed to its account's events; RSS again -> per-connection cost;
3. --transfers internal transfers (default 200) to one measured account while the N connections stay open: the
   latency from the API's 201 (the ledger transaction committed before it) to the message on that account's
   connection, p50/p99, printed next to the transfer call itself (the commit, same run) as the baseline ratio.
   The path is: outbox INSERT -> the runtime's stream poller (polls every SATFLOW_STREAM_POLL_INTERVAL_S,
   default 0.2 s: on AWS the stream->Lambda delay takes its place) -> WebSocketFanoutFunction -> @connections.

Usage: python benchmarks/ws_fanout.py [--connections 1000] [--accounts 50] [--transfers 200] [--poll 0.05]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 900  # the whole run stops by itself after this


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def _tree_rss(pid: int) -> tuple[int, int]:
    """(KiB of the runtime's Python processes, KiB of DynamoDB Local's JVM) under ``pid``."""
    python = jvm = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            cmdline = Path(f"/proc/{current}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"java" in cmdline.split(b"\0")[0]:
            jvm += _rss_kb(current)
        else:
            python += _rss_kb(current)
        stack += _children(current)
    return python, jvm


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Runtime:
    def __init__(self, poll_s: float) -> None:
        env = {**os.environ, "SATFLOW_STREAM_POLL_INTERVAL_S": str(poll_s), "SATFLOW_RUNTIME_LOG_LEVEL": "WARNING",
               "SATFLOW_WEBHOOK_RETRY_BASE_S": "2"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "satflow_dev.runtime", "--port", "0", "--dynamodb", "local",
             "--log-level", "WARNING"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, start_new_session=True)
        banner = []
        deadline = time.monotonic() + 180
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise SystemExit("the runtime exited: " + "".join(banner))
            banner.append(line)
            if line.startswith("Ctrl-C to stop"):
                break
        text = "".join(banner)
        # Keep reading: the functions' log lines would otherwise fill the pipe and block the runtime.
        threading.Thread(target=lambda: [None for _ in self.process.stdout], daemon=True).start()
        self.url = re.search(r"satflow local runtime on (http://\S+)", text)[1]
        self.ws_url = re.search(r"WebSocket API (ws://\S+)", text)[1]
        self.admin_key = re.search(r"admin key:\s+(\S+)", text)[1]

    def call(self, method: str, path: str, body: dict | None = None, key: str | None = None,
             headers: dict | None = None) -> dict:
        request = urllib.request.Request(self.url + path, method=method,
                                         data=None if body is None else json.dumps(body).encode())
        request.add_header("Authorization", f"Bearer {key or self.admin_key}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def account(self, fund_msat: int = 0) -> dict:
        account = self.call("POST", "/v1/accounts", {"external_ref": f"bench:{uuid.uuid4().hex[:12]}", "tier": 3})
        if fund_msat:
            self.call("POST", "/v1/admin/adjustments", {"account_id": account["account_id"], "amount_msat": fund_msat,
                                                        "direction": "credit", "reason": "bench"},
                      headers={"Idempotency-Key": f"fund-{account['account_id']}"})
        return account

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


async def _open(url: str, key: str, limiter: asyncio.Semaphore):
    from websockets.asyncio.client import connect

    async with limiter:
        socket = await connect(f"{url}?key={key}", open_timeout=60, ping_interval=None, compression=None)
        await socket.send(json.dumps({"action": "subscribe"}))
        ack = json.loads(await socket.recv())
        assert ack["type"] == "subscribed", ack
        return socket


async def _run(args: argparse.Namespace, rt: Runtime) -> None:
    loop = asyncio.get_running_loop()
    accounts = [await loop.run_in_executor(None, rt.account) for _ in range(args.accounts)]
    # Several payers: a tier's send velocity (sends per hour) would refuse one payer's 200 transfers.
    payers = [await loop.run_in_executor(None, rt.account, 10 ** 10) for _ in range(max(1, args.transfers // 20))]
    measured = await loop.run_in_executor(None, rt.account)
    await asyncio.sleep(1)
    base_py, base_jvm = _tree_rss(rt.process.pid)

    limiter = asyncio.Semaphore(16)
    started = time.perf_counter()
    sockets = await asyncio.gather(*(_open(rt.ws_url, accounts[i % len(accounts)]["api_key"], limiter)
                                     for i in range(args.connections)))
    connect_s = time.perf_counter() - started
    await asyncio.sleep(2)
    open_py, open_jvm = _tree_rss(rt.process.pid)

    watcher = await _open(rt.ws_url, measured["api_key"], asyncio.Semaphore(1))
    commit_ms, push_ms = [], []
    for n in range(args.transfers):
        t0 = time.perf_counter()
        moved = await loop.run_in_executor(None, lambda: rt.call(
            "POST", "/v1/transfers", {"to": measured["account_id"], "amount_msat": 1_000 + n},
            key=payers[n % len(payers)]["api_key"], headers={"Idempotency-Key": f"bench-{uuid.uuid4().hex}"}))
        t1 = time.perf_counter()
        while True:
            message = json.loads(await asyncio.wait_for(watcher.recv(), timeout=30))
            if message.get("data", {}).get("transfer_id") == moved["transfer_id"]:
                break
        t2 = time.perf_counter()
        commit_ms.append((t1 - t0) * 1000)
        push_ms.append((t2 - t1) * 1000)
    final_py, _ = _tree_rss(rt.process.pid)
    for socket in [*sockets, watcher]:
        await socket.close()

    per_conn = (open_py - base_py) / max(1, args.connections)
    print(f"connections: {args.connections} over {args.accounts} accounts, opened in {connect_s:.1f} s "
          f"({args.connections / connect_s:.0f}/s, each = $connect + subscribe through the handler)")
    print(f"runtime RSS (python): {base_py / 1024:.0f} MiB before -> {open_py / 1024:.0f} MiB with "
          f"{args.connections} open ({per_conn:.1f} KiB/connection; ratio {open_py / base_py:.2f}x); "
          f"{final_py / 1024:.0f} MiB after the transfers")
    print(f"DynamoDB Local JVM RSS: {base_jvm / 1024:.0f} -> {open_jvm / 1024:.0f} MiB (not the runtime)")
    p50c, p99c = statistics.median(commit_ms), _percentile(commit_ms, 0.99)
    p50p, p99p = statistics.median(push_ms), _percentile(push_ms, 0.99)
    print(f"transfers: {args.transfers}; stream poll interval {args.poll} s")
    print(f"  baseline, POST /v1/transfers (commit): p50 {p50c:.1f} ms  p99 {p99c:.1f} ms")
    print(f"  commit -> message on the connection:   p50 {p50p:.1f} ms  p99 {p99p:.1f} ms "
          f"(p50 ratio {p50p / p50c:.2f}x the commit)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--transfers", type=int, default=200)
    parser.add_argument("--poll", type=float, default=0.05, help="the runtime's stream poll interval (s)")
    args = parser.parse_args()
    if not 1 <= args.connections <= 5000 or not 1 <= args.transfers <= 2000:
        raise SystemExit("bounded: --connections 1..5000, --transfers 1..2000")
    rt = Runtime(args.poll)
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("benchmark deadline")))
    signal.alarm(DEADLINE_S)
    try:
        asyncio.run(_run(args, rt))
    finally:
        signal.alarm(0)
        rt.stop()


if __name__ == "__main__":
    main()
