"""The seeded workload: logical clients ("workers") issuing requests, the outside world acting (external payers,
the node resolving payments), and the platform (workflow steps, queue polls, monitor schedules, time) — one
action at a time, chosen by the seed. Each client request that the API accepted is recorded in the reference
model; what the outside world decides (a payment's fate) is read from the simulator at the end."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from .world import ADMIN_KEY, World

MAX_ATTEMPTS = 40  # a client retries a 5xx (a crashed invocation) with the same Idempotency-Key, boundedly
ABANDON = 0.15  # after a 5xx, the chance the client stops retrying for now
MONITOR_JOBS = ("invoice_catchup", "invoice_expiry", "payment_reconciler", "review_sweeper")
CHAIN_JOBS = ("chain_scan", "payout_batcher")  # scheduled only when the workload is on-chain
ONCHAIN_SHARE = 0.45  # share of client operations that are on-chain (addresses, deposits, payouts, signer, bumps)


def onchain_default(interleave: bool) -> float:
    """On-chain operations by default only without interleaved invocations: with them the on-chain workload shows
    anomalies not triaged yet (README, open findings); ``--onchain-share`` runs it anyway."""
    return 0.0 if interleave else ONCHAIN_SHARE


_CONCURRENT = ("worker", "step", "deliver", "monitor", "sealer")  # actions that run Lambda invocations


def _task_key(kind: str, arg: Any) -> str:
    return f"{kind}:{arg}"


@dataclass
class Model:
    """What every user balance must be once the system is quiet."""

    balance: dict[str, int] = field(default_factory=dict)
    transfers: list[dict] = field(default_factory=list)  # accepted, possibly held (resolved at the end)
    payments: list[dict] = field(default_factory=list)  # accepted (202/201): outcome read at the end
    refused_payments: list[dict] = field(default_factory=list)
    invoices: list[dict] = field(default_factory=list)  # ours: {"account", "amount", "payment_request", "hash"}
    external_credits: dict[str, int] = field(default_factory=dict)  # our invoice hash -> paid by the outside
    replays: list[dict] = field(default_factory=list)  # {"kind", "first", "again"} ids that must be equal
    anomalies: list[str] = field(default_factory=list)


@dataclass
class Op:
    kind: str
    args: dict
    attempts: int = 0
    done: bool = False
    result: Any = None
    last: Any = None  # the last (status, body) the client got


class Workload:
    def __init__(self, world: World, seed: int, ops: int, workers: int, accounts: int,
                 internal_share: float = 0.0, onchain_share: float = ONCHAIN_SHARE) -> None:
        self.w = world
        self.onchain_share = onchain_share
        self.internal_share = internal_share  # extra share of internal payments (to aim a search at them)
        self.rng = random.Random(f"workload:{seed}")
        self.ops_target = ops
        self.ops_issued = 0
        self.workers: list[Op | None] = [None] * workers
        self.n_accounts = accounts
        self.accounts: list[tuple[str, str]] = []  # (account_id, api key)
        self.model = Model()
        self.trace: list[str] = []
        self.counts: dict[str, int] = {}
        self.refusals: dict[str, int] = {}
        self.abandoned: list[Op] = []
        from .onchain import Onchain

        self.onchain = Onchain(self)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_op_") and "onchain" in self.__dict__:  # the on-chain operations live in onchain.py
            return getattr(self.__dict__["onchain"], name)
        raise AttributeError(name)

    # ------------------------------------------------------------------ setup (no faults)
    def setup(self) -> None:
        for i in range(self.n_accounts):
            status, body = self.w.api_call("POST", "/v1/accounts", key=ADMIN_KEY,
                                           body={"external_ref": f"sim-user-{i}", "tier": 2},
                                           idempotency_key=f"acct-{i}")
            assert status == 201, (status, body)
            self.accounts.append((body["account_id"], body["api_key"]))
            self.model.balance[body["account_id"]] = 0
        if "solvency_check" in self.w.monitor_jobs():
            # Issue 12: the node's opening liquidity is the operator's capital, booked as such (else the solvency
            # check rightly calls the whole node balance unexplained).
            status, body = self.w.api_call("POST", "/v1/admin/solvency/capital", key=ADMIN_KEY,
                                           idempotency_key="sim-opening-liquidity",
                                           body={"source": "lightning", "amount_msat": self.w.node.our_balance_msat,
                                                 "direction": "in", "reason": "simulated node opening liquidity"})
            assert status == 201, (status, body)
        if self.onchain_share:
            self.w.chain_jobs = True
            self.onchain.setup()

    def mix(self) -> dict[str, int]:
        m = self.model
        return {"transfers_accepted": len(m.transfers),
                "transfers_held": sum(t["status"] != "SETTLED" for t in m.transfers),
                "payments_accepted": sum(not p["internal"] for p in m.payments),
                "internal_payments": sum(p["internal"] for p in m.payments),
                "payments_refused": len(m.refused_payments), "invoices": len(m.invoices),
                "invoices_paid_outside": len(m.external_credits), "replays": len(m.replays),
                "node_sends": sum(self.w.node_sends.values()), **self.onchain.mix(), **self.refusals}

    # ------------------------------------------------------------------ the scheduler
    def actions(self) -> list[tuple[float, str, Any]]:
        acts: list[tuple[float, str, Any]] = [(3.0, "resume", key) for key in self.w.sched.suspended()]
        busy = self.w.sched.busy
        for i, current in enumerate(self.workers):
            if (current is not None or self.ops_issued < self.ops_target) and not busy(_task_key("worker", i)):
                acts.append((3.0, "worker", i))
        for key, execution in self.w.executions.items():
            if execution.runnable() and not busy(_task_key("step", key)):
                acts.append((3.0, "step", key))
        if self.w.invoice_queue and not busy(_task_key("deliver", None)):
            acts.append((2.0, "deliver", None))
        for job in self.w.monitor_jobs():
            if not busy(_task_key("monitor", job)):
                acts.append((0.3, "monitor", job))
        if self.w.sealer_fn is not None and not busy(_task_key("sealer", "sweep")):
            acts.append((0.3, "sealer", "sweep"))
        acts.append((0.4, "advance", None))
        if self.onchain_share:  # the chain moves only where the workload uses it
            acts += self.onchain.actions()
        if self._in_flight_hashes():
            acts.append((0.5, "resolve", None))
        return acts

    def busy(self) -> bool:
        # Clients still working (an op in flight keeps its worker set). Suspended monitor/workflow invocations are
        # drained by quiescence: counting them would never end a run whose scheduled jobs keep starting.
        return self.ops_issued < self.ops_target or any(op is not None for op in self.workers)

    def tick(self) -> None:
        acts = self.actions()
        total = sum(a[0] for a in acts)
        pick = self.rng.random() * total
        for weight, kind, arg in acts:
            pick -= weight
            if pick <= 0:
                break
        self.do(kind, arg)

    def do(self, kind: str, arg: Any) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "resume":
            self.trace.append(f"resume {arg}")
            self.w.sched.resume(arg)
        elif self.w.interleave and kind in _CONCURRENT:
            # A concurrent invocation: runs until its first DynamoDB/node call, then waits to be resumed.
            self.w.sched.spawn(_task_key(kind, arg), lambda: self._do(kind, arg))
        else:
            self._do(kind, arg)

    def drain(self) -> None:
        """Let every suspended invocation finish (in a seeded order)."""
        self.w.sched.drain(lambda keys: self.rng.choice(keys))

    def _do(self, kind: str, arg: Any) -> None:
        if kind == "worker":
            self._worker(arg)
        elif kind == "step":
            execution = self.w.executions[arg]
            self.trace.append(f"step {arg} {execution.state}")
            execution.step()
        elif kind == "deliver":
            self.trace.append(f"deliver {len(self.w.invoice_queue)}")
            self.w.deliver_invoice_batch(self.rng.choice([1, 2, 5]))
        elif kind == "monitor":
            self.trace.append(f"monitor {arg}")
            self.w.run_monitor(arg)
        elif kind == "sealer":
            self.trace.append(f"sealer {arg}")
            self.w.run_sealer(arg)
        elif kind == "advance":
            seconds = self.rng.choice([1, 5, 15, 60, 300, 900])
            self.trace.append(f"advance {seconds}")
            self.w.clock.advance(seconds)
        elif kind in ("mine", "reorg", "fees"):
            self.onchain.do(kind)
        elif kind == "resolve":
            hashes = self._in_flight_hashes()
            h = self.rng.choice(hashes)
            ok = self.rng.random() < 0.5
            self.trace.append(f"resolve {h[:12]} {'ok' if ok else 'fail'}")
            self.w.node.resolve(h, "SUCCEEDED" if ok else "FAILED", failure_reason=self.rng.choice(
                ["NO_ROUTE", "TIMEOUT", "ERROR", "INCORRECT_PAYMENT_DETAILS", "INSUFFICIENT_BALANCE"]))

    def _in_flight_hashes(self) -> list[str]:
        return [p["hash"] for p in self.model.payments + self.model.refused_payments
                if p.get("hash") and self.w.node.payment_status(p["hash"]) == "IN_FLIGHT"]

    # ------------------------------------------------------------------ clients
    def _worker(self, i: int) -> None:
        op = self.workers[i]
        if op is None:
            op = self._new_op()
            self.workers[i] = op
            self.ops_issued += 1
        self.trace.append(f"w{i} {op.kind} #{op.attempts}")
        op.attempts += 1
        getattr(self, f"_op_{op.kind}")(op)
        op.last = self.w.last_answer()
        if op.done:
            self.workers[i] = None
        elif op.result is None and self.rng.random() < ABANDON:
            # The client gives up after a 5xx (a phone loses signal): whatever half-happened stays as it is
            # until the user tries again — at the end, with the same key (see oracle.quiesce).
            self.trace.append(f"w{i} abandons {op.kind}")
            self.abandoned.append(op)
            self.workers[i] = None
        elif op.attempts >= MAX_ATTEMPTS:
            self.model.anomalies.append(f"liveness: {op.kind} {op.args} never answered in {MAX_ATTEMPTS} attempts "
                                        f"(last answer {op.last})")
            self.workers[i] = None

    def _account(self) -> tuple[str, str]:
        return self.rng.choice(self.accounts)

    def _new_op(self) -> Op:
        r = self.rng.random()
        n = self.ops_issued
        if self.internal_share and n >= len(self.accounts) and self.rng.random() < self.internal_share:
            if not self.model.invoices or self.rng.random() < 0.4:
                return Op("invoice", {"account": self._account(), "amount": self.rng.choice([10_000, 2_500_000]),
                                      "expiry": 3600})
            return self._pay_internal_op(n)
        if self.onchain_share and n >= len(self.accounts) and self.rng.random() < self.onchain_share:
            return self.onchain.new_op(n)
        if r < 0.14 or n < len(self.accounts):
            acct = self.accounts[n % len(self.accounts)] if n < len(self.accounts) else self._account()
            return Op("fund", {"account": acct, "amount": self.rng.choice([50_000_000, 200_000_000, 1_000_000_000]),
                               "key": f"fund-{n}", "replay": self.rng.random() < 0.2})
        if r < 0.40:
            a = self._account()
            b = self.rng.choice([x for x in self.accounts if x != a])
            return Op("transfer", {"from": a, "to": b[0], "amount": self.rng.choice(
                [1_000, 150_000, 20_000_000, 400_000_000, 3_000_000_000]), "key": f"tr-{n}",
                "replay": self.rng.random() < 0.25})
        if r < 0.55:
            return Op("invoice", {"account": self._account(), "amount": self.rng.choice([10_000, 2_500_000, 90_000_000]),
                                  "expiry": self.rng.choice([120, 900, 3600])})
        if r < 0.68 and self.model.invoices:
            inv = self.rng.choice(self.model.invoices)
            return Op("external_pay", {"invoice": inv, "twice": self.rng.random() < 0.2})
        if r < 0.84:
            return Op("pay_external", {"account": self._account(), "key": f"pay-{n}",
                                       "amount": self.rng.choice([5_000, 1_200_000, 30_000_000, 250_000_000]),
                                       "script": self._script(), "expiry": self.rng.choice([300, 1800, 7200]),
                                       "replay": self.rng.random() < 0.2})
        if r < 0.95 and self.model.invoices:
            return self._pay_internal_op(n)
        return Op("review", {})

    def _pay_internal_op(self, n: int) -> Op:
        """Mostly a recent invoice nobody paid yet, by someone else; sometimes any invoice (paid, expired, own)."""
        invoice = self.rng.choice(self.model.invoices)
        if self.rng.random() < 0.8:
            invoice = self.model.invoices[-1 - int(self.rng.random() * min(3, len(self.model.invoices)))]
        payers = [a for a in self.accounts if a[0] != invoice["account"]] if self.rng.random() < 0.9 else self.accounts
        return Op("pay_internal", {"account": self.rng.choice(payers), "invoice": invoice, "key": f"ipay-{n}"})

    def _script(self) -> Any:
        from satflow_dev.simulators.lightning import PaymentScript

        r = self.rng.random()
        if r < 0.35:
            return PaymentScript.succeed()
        if r < 0.55:
            return PaymentScript.fail(self.rng.choice(["NO_ROUTE", "TIMEOUT", "ERROR", "INCORRECT_PAYMENT_DETAILS",
                                                       "INSUFFICIENT_BALANCE"]))
        if r < 0.70:
            status = self.rng.choice(["SUCCEEDED", "FAILED"])
            return PaymentScript(status=status, in_flight_tracks=self.rng.randint(1, 8),
                                 failure_reason="FAILURE_REASON_NONE" if status == "SUCCEEDED"
                                 else "FAILURE_REASON_NO_ROUTE")
        if r < 0.85:
            return PaymentScript.succeed(hold=True)
        return PaymentScript(status=self.rng.choice(["SUCCEEDED", "FAILED"]),
                             failure_reason="FAILURE_REASON_NONE",
                             send_timeout=self.rng.choice(["before_node", "after_node"]))

    # -- the operations (one attempt each; a 5xx leaves the op for another attempt with the same key)
    def _op_fund(self, op: Op) -> None:
        (acct, _key), a = op.args["account"], op.args
        status, body = self.w.api_call("POST", "/v1/admin/adjustments", key=ADMIN_KEY, idempotency_key=a["key"],
                                       body={"account_id": acct, "amount_msat": a["amount"], "direction": "credit",
                                             "reason": "sim funding"})
        if status >= 500:
            return
        if status != 201:
            self.model.anomalies.append(f"funding refused: {status} {body}")
            op.done = True
            return
        self._echo("funding", body, {"account_id": acct, "amount_msat": a["amount"]})
        if op.result is None:
            op.result = body["adjustment_id"]
            self.model.balance[acct] += a["amount"]
            if a["replay"]:
                return  # the client "lost" the answer and sends the same request again
        else:
            self.model.replays.append({"kind": "fund", "first": op.result, "again": body["adjustment_id"]})
        op.done = True

    def _op_transfer(self, op: Op) -> None:
        a = op.args
        sender, key = a["from"]
        status, body = self.w.api_call("POST", "/v1/transfers", key=key, idempotency_key=a["key"],
                                       body={"to": a["to"], "amount_msat": a["amount"]})
        if status >= 500:
            return
        if status in (201, 202):
            self._echo("transfer", body, {"to": a["to"], "amount_msat": a["amount"]})
            if op.result is None:
                op.result = body["transfer_id"]
                self.model.transfers.append({"from": sender, "key": key, "to": a["to"], "amount": a["amount"],
                                             "idempotency_key": a["key"], "id": body["transfer_id"],
                                             "status": body["status"]})
                if a["replay"]:
                    return
            else:
                self.model.replays.append({"kind": "transfer", "first": op.result, "again": body["transfer_id"]})
        elif op.result is None:
            self._refused("transfer", status, body)
        elif op.result is not None:
            self.model.anomalies.append(f"transfer replay {a['key']} answered {status} {body} after acceptance")
        op.done = True

    def _refused(self, kind: str, status: int, body: dict) -> None:
        code = body.get("error", {}).get("code") if isinstance(body.get("error"), dict) else body.get("error")
        name = f"refused_{kind}_{status}_{code}"
        self.refusals[name] = self.refusals.get(name, 0) + 1
        if code == "VALIDATION_ERROR":  # the workload only sends well-formed requests
            self.model.anomalies.append(f"a well-formed {kind} request was refused as malformed: {status} {body}")

    def _echo(self, kind: str, body: dict, sent: dict) -> None:
        """A response describes its own request (issue 10: concurrent requests once got each other's answers)."""
        wrong = {k: (body.get(k), v) for k, v in sent.items() if body.get(k) != v}
        if wrong:
            self.model.anomalies.append(f"{kind} response does not match its request (got, sent): {wrong}")

    def _op_invoice(self, op: Op) -> None:
        acct, key = op.args["account"]
        status, body = self.w.api_call("POST", "/v1/invoices", key=key,
                                       body={"amount_msat": op.args["amount"], "expiry_s": op.args["expiry"]})
        if status >= 500:
            return
        if status == 201:
            self._echo("invoice", body, {"amount_msat": op.args["amount"]})
            self.model.invoices.append({"account": acct, "amount": op.args["amount"], "hash": body["payment_hash"],
                                        "payment_request": body["payment_request"]})
        op.done = True

    def _op_external_pay(self, op: Op) -> None:
        from satflow_dev.simulators.lightning import ExternalPaymentError

        inv = op.args["invoice"]
        for _ in range(2 if op.args["twice"] else 1):
            try:
                self.w.node.external_pay(inv["payment_request"])
            except ExternalPaymentError:
                continue
            self.model.external_credits[inv["hash"]] = self.model.external_credits.get(inv["hash"], 0) + inv["amount"]
            self.model.balance[inv["account"]] += inv["amount"]
        op.done = True

    def _op_pay_external(self, op: Op) -> None:
        a = op.args
        acct, key = a["account"]
        if "request" not in a:
            a["request"] = self.w.node.external_invoice(a["amount"], expiry_s=a["expiry"])
            a["hash"] = self.w.node.payment_hash_of(a["request"])
            self.w.node.script(a["script"], a["hash"])
        status, body = self.w.api_call("POST", "/v1/payments", key=key, idempotency_key=a["key"],
                                       body={"payment_request": a["request"]})
        if status >= 500:
            return
        if status in (200, 201, 202):
            self._echo("payment", body, {"payment_hash": a["hash"], "amount_msat": a["amount"]})
            if op.result is None:
                op.result = body["payment_id"]
                self.model.payments.append({"account": acct, "key": key, "id": body["payment_id"], "hash": a["hash"],
                                            "amount": a["amount"], "internal": False})
                if a["replay"]:
                    return
            else:
                self.model.replays.append({"kind": "payment", "first": op.result, "again": body["payment_id"]})
        elif op.result is None:
            self._refused("payment", status, body)
            self.model.refused_payments.append({"account": acct, "hash": a["hash"], "status": status,
                                                "code": body.get("error", body)})
        op.done = True

    def _op_pay_internal(self, op: Op) -> None:
        a = op.args
        acct, key = a["account"]
        inv = a["invoice"]
        status, body = self.w.api_call("POST", "/v1/payments", key=key, idempotency_key=a["key"],
                                       body={"payment_request": inv["payment_request"]})
        if status >= 500:
            return
        if status not in (200, 201, 202) and op.result is None:
            self._refused("internal_payment", status, body)
        if status in (200, 201, 202):
            self._echo("internal payment", body, {"payment_hash": inv["hash"], "amount_msat": inv["amount"]})
        if status in (200, 201, 202) and op.result is None:
            op.result = body["payment_id"]
            self.model.payments.append({"account": acct, "key": key, "id": body["payment_id"], "hash": inv["hash"],
                                        "amount": inv["amount"], "internal": True, "payee": inv["account"]})
        op.done = True

    def _op_review(self, op: Op) -> None:
        status, body = self.w.api_call("GET", "/v1/admin/reviews", key=ADMIN_KEY, query={"status": "PENDING"})
        if status >= 500:
            return
        items = body.get("items", []) if status == 200 else []
        if items:
            review = self.rng.choice(items)
            verb = "approve" if self.rng.random() < 0.6 else "reject"
            status, _ = self.w.api_call("POST", f"/v1/admin/reviews/{review['review_id']}/{verb}", key=ADMIN_KEY,
                                        body={"note": "sim"})
            if status >= 500:
                return
        op.done = True
