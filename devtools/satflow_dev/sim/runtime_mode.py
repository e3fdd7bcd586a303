"""The simulation's workload through the real local runtime, with concurrent HTTP clients (issue 14, issue 10).

    python -m satflow_dev.sim.runtime_mode --seed 1 --ops 200 --workers 8 [--dynamodb local|moto] [--url URL]

The deterministic simulator (run.py) calls the handlers in one thread of one process: it cannot see a bug of the
local runtime itself (how the HTTP gateway, the worker processes and the pollers run the handlers). This mode starts
the runtime as `make run` does (``LocalRuntime`` with the same services, DynamoDB Local by default: a fresh
in-memory database per run) - or talks to one already running (``--url``) - and drives it with W client threads
over HTTP.

What is deterministic and what is not: each client's sequence of requests (kinds, amounts, recipients, invoices,
replays, bad requests) is fixed by the seed; the INTERLEAVING is real (OS threads against a threaded HTTP server
and worker processes, not the simulator's scheduler), so a seed replays the same requests, not the same schedule.
A bug that depends on the schedule shows up on most seeds or on none: run a few.

Workload per client (each client owns its accounts and their keys; every amount and memo is unique per
client and operation, so a response carrying another request's values is recognisable):
transfers to accounts of other clients, invoices (some paid from outside by the Lightning simulator), payments to
the simulator's external invoices (some scripted to fail), payments of invoices of other clients' accounts
(internal), idempotent replays (same Idempotency-Key and body), "who am I" reads, and bad requests that must be
refused with their own error code and change nothing (self transfer, zero amount, unknown recipient, missing
Idempotency-Key, an overdraft, an Idempotency-Key reused with another body, a garbage payment request).
A 5xx or a timeout is an unknown outcome: the client retries the same request with the same Idempotency-Key.

Oracle (``check``), after every payment and inbound invoice reached a final state:
- each response matches ITS OWN request (transfer: recipient and amount; invoice: amount and memo; payment: hash
  and amount; /v1/accounts/me: the key's own account); a 4xx for a valid request is an anomaly; a bad request
  gets its own error code; a replay returns the original id;
- each account's balance (read with its own key) equals the reference model built from the accepted responses;
- each account's history holds exactly the transfers its client sent (ids, amounts, memos) and received, and no
  memo of a refused request: no money moved under a key that did not send the request;
- payments and invoices are visible to their owner's key only, with their own hash/memo, in the expected state;
- the ledger invariant job (fired now) reports no violation (GET /v1/admin/solvency -> ledger_invariants), and
  GET /v1/admin/audit/verify says the audit chain is intact.
A failure prints the seed and a one-line replay command.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import random
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Tier 3 with amounts within x1.3 of each other: the risk score of every send stays below review (see
# domain/risk.py: at most ~55 points), and the tier's 120 sends per hour are never reached (SENDS_PER_ACCOUNT).
TIER = 3
FUNDING_MSAT = 50_000_000
SENDS_PER_ACCOUNT = 80
REQUEST_TIMEOUT_S = 90.0
UNKNOWN_RETRIES = 4
SETTLE_DEADLINE_S = 180.0
# What `make run` sets (Makefile `run:`): workflows wait 2 s, webhook retries start at 2 s.
MAKE_RUN_ENV = {"SATFLOW_WORKFLOW_WAIT_S": "2", "SATFLOW_WEBHOOK_RETRY_BASE_S": "2"}

# Operation mix (weights).
MIX = {"transfer": 40, "replay": 10, "invoice": 8, "invoice_paid_outside": 7, "pay_external": 10,
       "pay_internal": 10, "whoami": 5, "bad": 10}
BAD_KINDS = ("self_transfer", "zero_amount", "unknown_recipient", "missing_idempotency_key", "overdraft",
             "idempotency_key_reused", "garbage_payment_request")
# Each bad request's expected (status, error code).
BAD_EXPECT = {"self_transfer": (422, "SELF_TRANSFER"), "zero_amount": (400, "VALIDATION_ERROR"),
              "unknown_recipient": (404, "ACCOUNT_NOT_FOUND"), "missing_idempotency_key": (400, "VALIDATION_ERROR"),
              "overdraft": (422, "INSUFFICIENT_FUNDS"), "idempotency_key_reused": (409, "IDEMPOTENCY_KEY_REUSED"),
              "garbage_payment_request": (400, "INVALID_PAYMENT_REQUEST")}


# ============================================================================================== the plan
@dataclass
class Op:
    client: int
    index: int
    kind: str
    account: int  # the sending/owning account (global index)
    amount: int = 0
    to: int | None = None  # transfer recipient (global account index)
    bad: str | None = None
    replay_of: int | None = None  # index of an earlier op of the same client
    invoice: int | None = None  # index into Plan.invoices (pay_internal / pay_external)
    memo: str = ""
    # Filled while running:
    status: int | None = None
    body: Any = None
    accepted: bool = False
    attempts: int = 0
    final: Any = None  # the payment / invoice once final (wait_for_final_states)


@dataclass
class SetupInvoice:
    """An invoice made before the clients start: internal ones on a payee account (paid by another client), or
    the Lightning simulator's external ones (some scripted to fail)."""
    kind: str  # "internal" | "external"
    amount: int
    payee: int | None = None  # internal: the account that issued it
    fail: bool = False  # external: the node fails the payment
    payment_request: str = ""
    payment_hash: str = ""


@dataclass
class Plan:
    seed: int
    workers: int
    accounts_per_client: int
    clients: list[list[Op]]
    invoices: list[SetupInvoice]

    @property
    def accounts(self) -> int:
        return self.workers * self.accounts_per_client

    def owner(self, account: int) -> int:
        return account // self.accounts_per_client

    def digest(self) -> str:
        """The requests the seed makes (not their timing): equal digests mean a replay sent the same requests."""
        shape = [(o.client, o.index, o.kind, o.account, o.amount, o.to, o.bad, o.replay_of, o.invoice, o.memo)
                 for ops in self.clients for o in ops]
        shape.append([(i.kind, i.amount, i.payee, i.fail) for i in self.invoices])  # type: ignore[arg-type]
        return hashlib.sha256(repr(shape).encode()).hexdigest()[:16]


def make_plan(seed: int, ops: int, workers: int) -> Plan:
    """Every client's requests from the seed alone (``ops`` in total, spread over the clients)."""
    if workers < 2:
        raise ValueError("at least 2 workers: transfers go to other clients' accounts")
    per_client = [ops // workers + (1 if c < ops % workers else 0) for c in range(workers)]
    per_account = max(1, math.ceil(max(per_client) / SENDS_PER_ACCOUNT))
    plan = Plan(seed, workers, per_account, [], [])
    kinds, weights = zip(*MIX.items())
    for c in range(workers):
        rng = random.Random(f"satflow-runtime-sim:{seed}:{c}")
        mine = [c * per_account + a for a in range(per_account)]
        others = [a for a in range(plan.accounts) if plan.owner(a) != c]
        client_ops: list[Op] = []
        for i in range(per_client[c]):
            kind = rng.choices(kinds, weights)[0]
            earlier_sends = [o for o in client_ops if o.kind in ("transfer", "pay_external", "pay_internal")]
            if kind == "replay" and not earlier_sends:
                kind = "transfer"
            # Unique per (client, op) and within x1.3 of each other (see TIER above).
            amount = 100_000 + c * 2_000 + i % 2_000 if i < 2_000 else 100_000 + c * 2_000 + rng.randrange(2_000)
            op = Op(c, i, kind, rng.choice(mine), amount, memo=f"s{seed}:c{c}:o{i}:{kind}")
            if kind == "transfer":
                op.to = rng.choice(others)
            elif kind == "replay":
                op.replay_of = rng.choice(earlier_sends).index
            elif kind == "pay_external":
                plan.invoices.append(SetupInvoice("external", amount, fail=rng.random() < 0.25))
                op.invoice = len(plan.invoices) - 1
            elif kind == "pay_internal":
                plan.invoices.append(SetupInvoice("internal", amount, payee=rng.choice(others)))
                op.invoice = len(plan.invoices) - 1
            elif kind == "bad":
                op.bad = rng.choice(BAD_KINDS)
                earlier = [o for o in client_ops if o.kind == "transfer"]
                if op.bad == "idempotency_key_reused" and not earlier:
                    op.bad = "self_transfer"
                if op.bad == "idempotency_key_reused":
                    op.replay_of = rng.choice(earlier).index
                op.to = rng.choice(others)
            client_ops.append(op)
        plan.clients.append(client_ops)
    return plan


# ============================================================================================== HTTP
class Api:
    """One JSON call to the runtime (stdlib only, like a client). A timeout or a broken connection is status 0."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def call(self, method: str, path: str, *, key: str | None = None, body: Any = None,
             idempotency_key: str | None = None, timeout: float = REQUEST_TIMEOUT_S) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, method=method,
                                         data=None if body is None else json.dumps(body).encode())
        request.add_header("content-type", "application/json")
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        if idempotency_key:
            request.add_header("Idempotency-Key", idempotency_key)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())
        except (OSError, ValueError) as exc:  # timeout, reset: the outcome is unknown
            return 0, {"error": {"code": "NO_RESPONSE", "message": repr(exc)}}


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return {"raw": raw[:200].decode(errors="replace")}


def _code(body: Any) -> str | None:
    return body.get("error", {}).get("code") if isinstance(body, dict) and isinstance(body.get("error"), dict) \
        else None


# ============================================================================================== result
@dataclass
class RuntimeRunResult:
    seed: int
    ops: int
    workers: int
    dynamodb: str
    anomalies: list[str] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)  # response, balance, history, ownership, ledger
    checks: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    seconds_start: float = 0.0  # runtime start
    seconds_setup: float = 0.0  # accounts, funding, invoices
    seconds_clients: float = 0.0  # the concurrent phase
    seconds_settle: float = 0.0  # payments and inbound invoices reaching a final state
    seconds_check: float = 0.0  # the oracle's reads
    seconds_total: float = 0.0
    first_anomaly_s: float | None = None  # from the clients' start
    retries: int = 0
    accounts: int = 0
    url: str | None = None  # a runtime that was already running (--url)
    plan_digest: str = ""

    @property
    def ok(self) -> bool:
        return not self.anomalies

    def replay_command(self) -> str:
        target = f"--url {self.url}" if self.url else f"--dynamodb {self.dynamodb}"
        return (f"python -m satflow_dev.sim.runtime_mode --seed {self.seed} --ops {self.ops} "
                f"--workers {self.workers} {target}")

    def ops_per_s(self) -> float:
        return self.ops / max(self.seconds_clients, 1e-9)

    def summary(self, max_per_category: int = 8) -> str:
        first = "" if self.first_anomaly_s is None else f", first anomaly {self.first_anomaly_s:.1f} s into the clients"
        lines = [f"runtime seed {self.seed}: {'OK' if self.ok else 'ANOMALIES'} - {self.ops} ops, {self.workers} "
                 f"client threads, {self.accounts} accounts, DynamoDB {self.dynamodb}; "
                 f"clients {self.seconds_clients:.1f} s "
                 f"({self.ops_per_s():.2f} ops/s), start {self.seconds_start:.1f} s, setup {self.seconds_setup:.1f} s, "
                 f"settle {self.seconds_settle:.1f} s, oracle {self.seconds_check:.1f} s, "
                 f"total {self.seconds_total:.1f} s, {self.retries} retries of unknown outcomes{first}",
                 f"  workload: {dict(sorted(self.counts.items()))}, plan {self.plan_digest}"]
        lines += [f"  checked: {c}" for c in self.checks]
        for category, found in self.categories.items():  # a few of each kind, not 200 of the first
            lines += [f"  ANOMALY ({category}): {a}" for a in found[:max_per_category]]
            if len(found) > max_per_category:
                lines.append(f"  ... {len(found) - max_per_category} more {category} anomalies")
        if not self.ok:
            lines.append(f"  replay: {self.replay_command()}")
        return "\n".join(lines)


# ============================================================================================== the runtime
@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if k not in os.environ or not os.environ[k]})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def local_runtime(dynamodb: str = "local", workers: int = 8) -> Iterator[Any]:
    """The runtime `make run` starts (same services, same environment), on free loopback ports, in this process;
    its handlers run wherever the runtime runs them (worker processes on main)."""
    from satflow_dev.runtime.local_runtime import LocalRuntime
    from satflow_dev.runtime.regtest_service import service_factories

    with _env(MAKE_RUN_ENV):
        # A stack name of its own: fresh table/queue names even where moto's state outlives a runtime (a test
        # process, --seeds on moto); DynamoDB Local is a fresh in-memory database per runtime anyway.
        runtime = LocalRuntime(port=0, service_factories=service_factories("simulators"), dynamodb=dynamodb,
                               write_admin_key_file=False, stack_name=f"satflow-rtsim-{uuid.uuid4().hex[:8]}")
        with runtime:
            prewarm = getattr(runtime.invoker, "prewarm", None)
            if callable(prewarm):  # provisioned concurrency: cold starts before the clients, not during
                prewarm("ApiFunction", workers)
            yield runtime


# ============================================================================================== running
class _Run:
    def __init__(self, api: Api, admin_key: str, plan: Plan, result: RuntimeRunResult) -> None:
        self.api, self.admin_key, self.plan, self.result = api, admin_key, plan, result
        self.nonce = uuid.uuid4().hex[:8]  # names only (a --url runtime keeps its tables): the workload is the seed's
        self.account_ids: list[str] = []
        self.keys: list[str] = []
        self.lock = threading.Lock()
        self.clients_started = 0.0
        self.account_of_id: dict[str, int] = {}

    def anomaly(self, text: str, category: str = "response") -> None:
        with self.lock:
            if self.result.first_anomaly_s is None and self.clients_started:
                self.result.first_anomaly_s = time.perf_counter() - self.clients_started
            self.result.anomalies.append(text)
            self.result.categories.setdefault(category, []).append(text)

    def checked(self, category: str, claim: str) -> None:
        """A check line that claims only what held: with anomalies of its category it says how many."""
        found = len(self.result.categories.get(category, []))
        self.result.checks.append(claim if not found else f"{category}: {found} anomalies ({claim}: NO)")

    def idem(self, op: Op) -> str:
        return f"rt-{self.nonce}-c{op.client}-o{op.index}"

    # -- setup (one thread: nothing here is under test yet, but every answer is still checked)
    def setup(self) -> None:
        for a in range(self.plan.accounts):
            ref = f"rtsim:{self.nonce}:{a}"
            status, body = self.api.call("POST", "/v1/accounts", key=self.admin_key,
                                         body={"external_ref": ref, "tier": TIER}, idempotency_key=f"acct-{ref}")
            if status != 201 or body.get("external_ref") != ref:
                raise RuntimeError(f"setup: account {a}: {status} {body}")
            self.account_ids.append(body["account_id"])
            self.keys.append(body["api_key"])
            self.account_of_id[body["account_id"]] = a
            status, body = self.api.call("POST", "/v1/admin/adjustments", key=self.admin_key,
                                         idempotency_key=f"fund-{ref}",
                                         body={"account_id": self.account_ids[a], "amount_msat": FUNDING_MSAT,
                                               "direction": "credit", "reason": "runtime simulation funding"})
            if status != 201 or body.get("account_id") != self.account_ids[a]:
                raise RuntimeError(f"setup: funding {a}: {status} {body}")
        for n, inv in enumerate(self.plan.invoices):
            if inv.kind == "internal":
                memo = f"rtsim:{self.nonce}:inv{n}"
                status, body = self.api.call("POST", "/v1/invoices", key=self.keys[inv.payee],
                                             body={"amount_msat": inv.amount, "memo": memo})
                if status != 201 or body.get("memo") != memo or body.get("amount_msat") != inv.amount:
                    raise RuntimeError(f"setup: internal invoice {n}: {status} {body}")
            else:
                status, body = self.api.call("POST", "/_sim/lightning/invoices",
                                             body={"amount_msat": inv.amount, "memo": f"ext{n}"})
                if status != 201:
                    raise RuntimeError(f"setup: external invoice {n}: {status} {body} (is the Lightning simulator on?)")
            inv.payment_request, inv.payment_hash = body["payment_request"], body["payment_hash"]
            if inv.kind == "external" and inv.fail:
                status, scripted = self.api.call("POST", "/_sim/lightning/script",
                                                 body={"outcome": "fail", "reason": "NO_ROUTE",
                                                       "payment_hash": inv.payment_hash})
                if status != 200:
                    raise RuntimeError(f"setup: scripting {n}: {status} {scripted}")

    # -- the clients
    def client(self, c: int, barrier: threading.Barrier) -> None:
        barrier.wait()
        for op in self.plan.clients[c]:
            try:
                self.execute(op)
            except Exception as exc:  # noqa: BLE001 - a client that crashed is an anomaly too
                self.anomaly(f"client {c} op {op.index} ({op.kind}): client crashed: {exc!r}")

    def send(self, method: str, path: str, key: str, body: Any, idem: str | None, op: Op) -> tuple[int, Any]:
        """Retries an unknown outcome (no answer, 5xx) with the same Idempotency-Key, as a careful client does."""
        for attempt in range(UNKNOWN_RETRIES + 1):
            op.attempts = attempt + 1
            status, answer = self.api.call(method, path, key=key, body=body, idempotency_key=idem)
            if status and status < 500:
                return status, answer
            if idem is None and method == "POST":
                return status, answer  # not idempotent: do not send it twice
            with self.lock:
                self.result.retries += 1
            time.sleep(0.2 * (attempt + 1))
        return status, answer

    def execute(self, op: Op) -> None:
        key = self.keys[op.account]
        mine = self.account_ids[op.account]
        kind = op.kind + (f"/{op.bad}" if op.bad else "")
        where = f"client {op.client} op {op.index} ({kind}, key of account {op.account})"
        if op.kind == "transfer":
            to = self.account_ids[op.to]
            status, body = self.send("POST", "/v1/transfers", key, {"to": to, "amount_msat": op.amount,
                                                                   "memo": op.memo}, self.idem(op), op)
            op.status, op.body = status, body
            if status in (201, 202) and isinstance(body, dict) and body.get("to") == to \
                    and body.get("amount_msat") == op.amount and body.get("status") in ("SETTLED", "IN_REVIEW"):
                op.accepted = True
            else:
                self.anomaly(f"{where}: sent to={to} amount_msat={op.amount}, got {status} {_short(body)}")
        elif op.kind == "replay":
            original = self.plan.clients[op.client][op.replay_of]
            self.replay(op, original, where)
        elif op.kind in ("invoice", "invoice_paid_outside"):
            status, body = self.send("POST", "/v1/invoices", key, {"amount_msat": op.amount, "memo": op.memo}, None, op)
            op.status, op.body = status, body
            if status == 201 and isinstance(body, dict) and body.get("memo") == op.memo \
                    and body.get("amount_msat") == op.amount:
                op.accepted = True
            else:
                self.anomaly(f"{where}: sent amount_msat={op.amount} memo={op.memo}, got {status} {_short(body)}")
                return
            if op.kind == "invoice_paid_outside":
                paid, answer = self.api.call("POST", "/_sim/lightning/pay",
                                             body={"payment_request": body["payment_request"]})
                if paid != 200:
                    self.anomaly(f"{where}: the outside payment of its invoice was refused: {paid} {_short(answer)}")
                    op.accepted = False
        elif op.kind in ("pay_external", "pay_internal"):
            inv = self.plan.invoices[op.invoice]
            status, body = self.send("POST", "/v1/payments", key, {"payment_request": inv.payment_request},
                                     self.idem(op), op)
            op.status, op.body = status, body
            if status == 202 and isinstance(body, dict) and body.get("payment_hash") == inv.payment_hash \
                    and body.get("amount_msat") == inv.amount:
                op.accepted = True
            else:
                self.anomaly(f"{where}: paid hash={inv.payment_hash[:16]} amount_msat={inv.amount}, got {status} "
                             f"{_short(body)}")
        elif op.kind == "whoami":
            status, body = self.send("GET", "/v1/accounts/me", key, None, None, op)
            op.status, op.body = status, body
            if status != 200 or not isinstance(body, dict) or body.get("account_id") != mine:
                self.anomaly(f"{where}: GET /v1/accounts/me with the key of {mine}, got {status} {_short(body)}")
        elif op.kind == "bad":
            self.bad(op, key, mine, where)
        else:
            raise AssertionError(op.kind)

    def replay(self, op: Op, original: Op, where: str) -> None:
        if not original.accepted:
            return  # its anomaly is reported already
        idem = self.idem(original)
        key = self.keys[original.account]
        if original.kind == "transfer":
            body = {"to": self.account_ids[original.to], "amount_msat": original.amount, "memo": original.memo}
            status, answer = self.send("POST", "/v1/transfers", key, body, idem, op)
            ok = status in (201, 202) and isinstance(answer, dict) \
                and answer.get("transfer_id") == original.body["transfer_id"]
            what = f"transfer_id {original.body['transfer_id']}"
        else:
            inv = self.plan.invoices[original.invoice]
            status, answer = self.send("POST", "/v1/payments", key, {"payment_request": inv.payment_request}, idem, op)
            # The replay of a payment tells its current state, under the same id.
            ok = status in (200, 201, 202) and isinstance(answer, dict) \
                and answer.get("payment_id") == original.body["payment_id"]
            what = f"payment_id {original.body['payment_id']}"
        op.status, op.body = status, answer
        if not ok:
            self.anomaly(f"{where}: replay of op {original.index} with Idempotency-Key {idem} must return {what}, "
                         f"got {status} {_short(answer)}")

    def bad(self, op: Op, key: str, mine: str, where: str) -> None:
        kind = op.bad
        path, idem = "/v1/transfers", self.idem(op)
        body: dict[str, Any] = {"to": self.account_ids[op.to], "amount_msat": op.amount, "memo": op.memo}
        if kind == "self_transfer":
            body["to"] = mine
        elif kind == "zero_amount":
            body["amount_msat"] = 0
        elif kind == "unknown_recipient":
            body["to"] = f"rtsim:{self.nonce}:nobody"
        elif kind == "missing_idempotency_key":
            idem = None
        elif kind == "overdraft":
            body["amount_msat"] = FUNDING_MSAT * self.plan.accounts + 1 + op.client  # more than all the money
        elif kind == "idempotency_key_reused":
            original = self.plan.clients[op.client][op.replay_of]
            idem = self.idem(original)
            key = self.keys[original.account]
            body = {"to": self.account_ids[original.to], "amount_msat": original.amount + 1, "memo": op.memo}
        elif kind == "garbage_payment_request":
            path, body = "/v1/payments", {"payment_request": f"lnbcrt1garbage{op.client}x{op.index}"}
        status, answer = self.send("POST", path, key, body, idem, op)
        op.status, op.body = status, answer
        expected = BAD_EXPECT[kind]
        if (status, _code(answer)) != expected:
            self.anomaly(f"{where}: a bad request ({kind}, body {_short(body)}) must be refused with "
                         f"{expected[0]} {expected[1]}, got {status} {_short(answer)}")

    # -- quiescence and the oracle
    def wait_for_final_states(self) -> None:
        """Payments reach SUCCEEDED/FAILED and invoices paid from outside reach SETTLED (workflows, pollers)."""
        deadline = time.monotonic() + SETTLE_DEADLINE_S
        next_catchup = time.monotonic() + 1
        pending = [o for ops in self.plan.clients for o in ops if o.accepted
                   and o.kind in ("pay_external", "pay_internal", "invoice_paid_outside")]
        while pending and time.monotonic() < deadline:
            still = []
            for op in pending:
                if op.kind == "invoice_paid_outside":
                    status, body = self.api.call("GET", f"/v1/invoices/{op.body['payment_hash']}",
                                                 key=self.keys[op.account])
                    final = status == 200 and body.get("status") == "SETTLED"
                else:
                    status, body = self.api.call("GET", f"/v1/payments/{op.body['payment_id']}",
                                                 key=self.keys[op.account])
                    final = status == 200 and body.get("status") in ("SUCCEEDED", "FAILED")
                if final:
                    op.final = body
                else:
                    still.append(op)
            pending = still
            if pending:
                time.sleep(0.5)
            if any(o.kind == "invoice_paid_outside" for o in pending) and time.monotonic() > next_catchup:
                # Settlements reach satflow through the invoice_catchup job (every minute in the template): run it
                # now rather than wait for the schedule.
                self.api.call("POST", "/_sim/schedules/fire", body={"function": "MonitorFunction",
                                                                    "job": "invoice_catchup"})
                next_catchup = time.monotonic() + 5
        for op in pending:
            self.anomaly(f"client {op.client} op {op.index} ({op.kind}): no final state after "
                         f"{SETTLE_DEADLINE_S:.0f} s", "outcome")
            op.accepted = False  # judged by its anomaly; kept out of the model

    def check(self) -> None:
        plan, res = self.plan, self.result
        n = plan.accounts
        available = [FUNDING_MSAT] * n
        pending_out = [0] * n
        out_transfers: list[dict[str, Op]] = [{} for _ in range(n)]
        in_transfers: list[dict[str, Op]] = [{} for _ in range(n)]
        ops = [o for client_ops in plan.clients for o in client_ops]
        counts: dict[str, int] = {}
        for op in ops:
            counts[op.kind if op.kind != "bad" else f"bad/{op.bad}"] = counts.get(
                op.kind if op.kind != "bad" else f"bad/{op.bad}", 0) + 1
        res.counts = counts

        # 1. Money, from the accepted responses.
        transfer_ids: dict[str, Op] = {}
        for op in ops:
            if not op.accepted:
                continue
            if op.kind == "transfer":
                tid = op.body["transfer_id"]
                if tid in transfer_ids:
                    self.anomaly(f"client {op.client} op {op.index}: transfer id {tid} also answered to client "
                                 f"{transfer_ids[tid].client} op {transfer_ids[tid].index}")
                    continue
                transfer_ids[tid] = op
                out_transfers[op.account][tid] = op
                if op.body["status"] == "SETTLED":
                    available[op.account] -= op.amount
                    available[op.to] += op.amount
                    in_transfers[op.to][tid] = op
                else:  # held by a risk review: reserved, not moved
                    available[op.account] -= op.amount
                    pending_out[op.account] += op.amount
            elif op.kind in ("pay_external", "pay_internal"):
                final = op.final
                inv = plan.invoices[op.invoice]
                if final.get("payment_hash") != inv.payment_hash or final.get("amount_msat") != inv.amount:
                    self.anomaly(f"client {op.client} op {op.index}: GET /v1/payments/{op.body['payment_id']} "
                                 f"shows another payment: {_short(final)}", "outcome")
                expected = "FAILED" if inv.kind == "external" and inv.fail else "SUCCEEDED"
                if final["status"] != expected:
                    self.anomaly(f"client {op.client} op {op.index}: payment {op.body['payment_id']} ended "
                                 f"{final['status']}, the node was scripted to {expected}: {_short(final)}", "outcome")
                if final["status"] == "SUCCEEDED":
                    available[op.account] -= inv.amount + int(final.get("fee_msat") or 0)
                    if inv.kind == "internal":
                        available[inv.payee] += inv.amount
            elif op.kind == "invoice_paid_outside":
                final = op.final
                if final.get("memo") != op.memo or final.get("amount_received_msat") != op.amount:
                    self.anomaly(f"client {op.client} op {op.index}: invoice {op.body['payment_hash'][:16]} paid "
                                 f"{op.amount} from outside reads {_short(final)}", "outcome")
                available[op.account] += op.amount
        self.checked("response", f"{sum(o.accepted for o in ops)} accepted requests matched their own request")
        self.checked("outcome", "payments ended as the node was scripted, invoices paid from outside credited once")

        # 2. Balances, each read with the account's own key.
        for a in range(n):
            status, body = self.api.call("GET", "/v1/balance", key=self.keys[a])
            if status != 200:
                self.anomaly(f"account {a}: GET /v1/balance {status} {_short(body)}", "balance")
                continue
            bal = body["balances"][0]
            got = (bal["available_msat"], bal["pending_out_msat"])
            if got != (available[a], pending_out[a]):
                self.anomaly(f"account {a} ({self.account_ids[a]}): balance available/pending_out {got}, the model "
                             f"from the accepted responses says {(available[a], pending_out[a])} "
                             f"(diff {got[0] - available[a]:+d} msat)", "balance")
        self.checked("balance", f"{n} balances equal the reference model")

        # 3. Histories: exactly the transfers each key sent and received; no refused request's memo.
        refused_memos = {o.memo for o in ops if o.kind == "bad"}
        for a in range(n):
            items = self.history(a)
            if items is None:
                continue
            outs = {h["transfer_id"]: h for h in items if h["type"] == "internal_transfer" and h["direction"] == "out"}
            ins = {h["transfer_id"]: h for h in items if h["type"] == "internal_transfer" and h["direction"] == "in"}
            for tid in set(outs) - set(out_transfers[a]):
                h = outs[tid]
                self.anomaly(f"account {a} ({self.account_ids[a]}): money left under its key for a request its client "
                             f"never had accepted: {tid} {h['amount_msat']} msat memo {h['memo']!r}", "history")
            for tid in set(out_transfers[a]) - set(outs):
                self.anomaly(f"account {a}: accepted transfer {tid} is missing from its history", "history")
            for tid in set(in_transfers[a]) ^ {t for t in ins if ins[t]["status"] == "SETTLED"}:
                self.anomaly(f"account {a}: incoming transfer {tid} differs from the model "
                             f"({'unexpected' if tid in ins else 'missing'})", "history")
            for tid, h in outs.items():
                op = out_transfers[a].get(tid)
                if op is not None and (h["memo"] != op.memo or h["amount_msat"] != op.amount
                                       or h["counterparty"] != self.account_ids[op.to]):
                    self.anomaly(f"account {a}: transfer {tid} booked as {h['amount_msat']} msat to "
                                 f"{h['counterparty']} memo {h['memo']!r}; its request was {op.amount} msat to "
                                 f"{self.account_ids[op.to]} memo {op.memo!r}", "history")
            for h in items:
                if h.get("memo") in refused_memos:
                    self.anomaly(f"account {a}: a refused request's memo {h['memo']!r} is in the ledger: "
                                 f"{_short(h)}", "history")
        self.checked("history", f"{n} histories hold exactly their own transfers, no refused request booked")

        # 4. Ownership: each invoice/payment readable with its owner's key, as sent; not with another client's key.
        for op in ops:
            if not op.accepted or op.kind not in ("invoice", "invoice_paid_outside", "pay_external", "pay_internal"):
                continue
            stranger = self.keys[(op.account + plan.accounts_per_client) % n]
            path = (f"/v1/invoices/{op.body['payment_hash']}" if op.kind.startswith("invoice")
                    else f"/v1/payments/{op.body['payment_id']}")
            status, body = self.api.call("GET", path, key=self.keys[op.account])
            if status != 200 or (op.kind.startswith("invoice") and body.get("memo") != op.memo):
                self.anomaly(f"client {op.client} op {op.index}: {path} with its owner's key: {status} "
                             f"{_short(body)}", "ownership")
            status, body = self.api.call("GET", path, key=stranger)
            if status != 404:
                self.anomaly(f"client {op.client} op {op.index}: {path} with another client's key: {status} "
                             f"{_short(body)} (want 404)", "ownership")
        for inv in plan.invoices:
            if inv.kind != "internal":
                continue
            paid = any(o.accepted and o.kind == "pay_internal" and plan.invoices[o.invoice] is inv for o in ops)
            status, body = self.api.call("GET", f"/v1/invoices/{inv.payment_hash}", key=self.keys[inv.payee])
            want = "SETTLED" if paid else "OPEN"
            if status != 200 or body.get("status") != want:
                self.anomaly(f"internal invoice {inv.payment_hash[:16]} of account {inv.payee}: {status} "
                             f"{_short(body)} (want {want})", "ownership")
        self.checked("ownership", "invoices and payments belong to their own key only, in their expected state")

        # 5. The ledger invariants, run now by the monitor job that runs daily in production.
        status, fired = self.api.call("POST", "/_sim/schedules/fire",
                                      body={"function": "MonitorFunction", "job": "ledger_invariants"})
        if status != 200:
            res.checks.append(f"ledger invariants NOT checked: firing the job gave {status} {_short(fired)}")
            return
        status, solvency = self.api.call("GET", "/v1/admin/solvency", key=self.admin_key)
        run = solvency.get("ledger_invariants") if isinstance(solvency, dict) else None
        if status != 200 or not run:
            self.anomaly(f"GET /v1/admin/solvency: {status} {_short(solvency)}", "ledger")
        elif not run.get("ok") or run.get("violation_count"):
            self.anomaly(f"ledger invariants violated: {run.get('violations')}", "ledger")
        else:
            res.checks.append(f"ledger invariants hold over {run.get('balance_items')} balance items")

        # 6. The audit chain (every admin funding and every money movement writes one), verified from genesis in
        # bounded steps.
        for _ in range(20):
            status, verdict = self.api.call("GET", "/v1/admin/audit/verify", key=self.admin_key)
            if status != 200 or not isinstance(verdict, dict) or not verdict.get("ok"):
                self.anomaly(f"GET /v1/admin/audit/verify: {status} {_short(verdict)}", "ledger")
                return
            if verdict.get("complete"):
                res.checks.append("the audit chain verifies")
                return
        res.checks.append("audit verify NOT complete after 20 steps (no verdict)")

    def history(self, a: int) -> list[dict] | None:
        items: list[dict] = []
        cursor = None
        while True:
            path = "/v1/transactions?limit=100" + (f"&cursor={urllib.request.quote(cursor)}" if cursor else "")
            status, body = self.api.call("GET", path, key=self.keys[a])
            if status != 200:
                self.anomaly(f"account {a}: GET /v1/transactions {status} {_short(body)}", "history")
                return None
            items += body["items"]
            cursor = body.get("next_cursor")
            if not cursor:
                return items


def _short(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit] + "..."


def run_against_runtime(seed: int, ops: int = 200, workers: int = 8, *, dynamodb: str = "local",
                        url: str | None = None, admin_key: str | None = None) -> RuntimeRunResult:
    """One seed through a local runtime: started here as `make run` starts it, or the one at ``url``."""
    started = time.perf_counter()
    plan = make_plan(seed, ops, workers)
    result = RuntimeRunResult(seed, ops, workers, dynamodb if url is None else "as started", accounts=plan.accounts,
                              url=url, plan_digest=plan.digest())
    with contextlib.ExitStack() as stack:
        if url is None:
            runtime = stack.enter_context(local_runtime(dynamodb, workers))
            url, admin_key = runtime.url, runtime.admin_key
        if not admin_key:
            raise ValueError("an admin key is needed (--admin-key, SATFLOW_ADMIN_KEY or .build/local-admin-key)")
        result.seconds_start = time.perf_counter() - started
        run = _Run(Api(url), admin_key, plan, result)
        t = time.perf_counter()
        run.setup()
        result.seconds_setup = time.perf_counter() - t
        barrier = threading.Barrier(workers)
        threads = [threading.Thread(target=run.client, args=(c, barrier), name=f"rtsim-client-{c}")
                   for c in range(workers)]
        run.clients_started = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        result.seconds_clients = time.perf_counter() - run.clients_started
        t = time.perf_counter()
        run.wait_for_final_states()
        result.seconds_settle = time.perf_counter() - t
        t = time.perf_counter()
        run.check()
        result.seconds_check = time.perf_counter() - t
    result.seconds_total = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m satflow_dev.sim.runtime_mode", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seeds", type=int, default=1, help="run seeds seed .. seed+N-1 (a fresh runtime each)")
    p.add_argument("--ops", type=int, default=200, help="requests in total, spread over the clients")
    p.add_argument("--workers", type=int, default=8, help="concurrent client threads")
    p.add_argument("--dynamodb", choices=("local", "moto"), default="local",
                   help="local (default): DynamoDB Local, a fresh in-memory database per run; moto: the fallback")
    p.add_argument("--url", help="drive a runtime that is already running (e.g. `make run`) instead of starting one")
    p.add_argument("--admin-key", default=os.environ.get("SATFLOW_ADMIN_KEY"),
                   help="with --url: its admin key (default $SATFLOW_ADMIN_KEY or .build/local-admin-key)")
    p.add_argument("--runtime-log", default=os.path.join(tempfile.gettempdir(), "satflow-runtime-sim.log"),
                   help="where the handlers' log lines go (default %(default)s; - for the terminal)")
    p.add_argument("--stop-at-first", action="store_true", help="with --seeds: stop at the first failing seed")
    args = p.parse_args(argv)
    if args.url and not args.admin_key:
        key_file = Path(__file__).resolve().parents[3] / ".build" / "local-admin-key"
        args.admin_key = key_file.read_text().strip() if key_file.exists() else None
    import logging

    logging.basicConfig(level=logging.WARNING)
    with _handler_output_to(args.runtime_log) as out:
        return _run_seeds(args, out)


@contextlib.contextmanager
def _handler_output_to(path: str) -> Iterator[Any]:
    """The handlers' JSON log lines (the worker processes inherit fd 1) go to ``path``; what is yielded is the
    terminal, for the verdicts. fd 1 is put back afterwards (main() may be called from another CLI)."""
    if path == "-":
        yield sys.stdout
        return
    sys.stdout.flush()
    saved = os.dup(1)
    out = os.fdopen(os.dup(1), "w", buffering=1)
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log_fd, 1)
    os.close(log_fd)
    print(f"handler and runtime output: {path}", file=out, flush=True)
    try:
        yield out
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        out.close()


def _run_seeds(args: argparse.Namespace, out: Any) -> int:
    failures = seeds_run = 0
    started = time.perf_counter()
    total_ops = 0
    for seed in range(args.seed, args.seed + args.seeds):
        result = run_against_runtime(seed, args.ops, args.workers, dynamodb=args.dynamodb, url=args.url,
                                     admin_key=args.admin_key)
        print(result.summary(), file=out, flush=True)
        total_ops += args.ops
        seeds_run += 1
        failures += not result.ok
        if failures and args.stop_at_first:
            break
    if args.seeds > 1:
        print(f"{seeds_run} seed(s), {total_ops} ops, {args.workers} client threads, "
              f"{time.perf_counter() - started:.1f} s; failing seeds: {failures}", file=out, flush=True)
    return 1 if failures else 0

if __name__ == "__main__":
    sys.exit(main())
