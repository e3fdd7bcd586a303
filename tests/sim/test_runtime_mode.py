"""The simulation through the real local runtime (devtools/satflow_dev/sim/runtime_mode.py): one small seed with
concurrent HTTP clients against `make run`'s runtime, and proofs that its oracle fails on a mixed-up request
(issue 10's bug: another client's body executed under this client's key) instead of rubber-stamping."""
from __future__ import annotations

import pytest

from satflow_dev.sim.runtime_mode import MIX, Op, Plan, RuntimeRunResult, _Run, make_plan, run_against_runtime

pytestmark = pytest.mark.slow


def test_one_seed_through_the_runtime_matches_every_response():
    """Seed 19: 16 requests from 4 client threads at once, every kind of request of the workload (a payment the
    node fails among them); 40-70 s with the runtime's start (~25 s of it) at load 8-10 on 2 cores. On the scratch
    branch that brings back issue 10's runtime (handler copies in threads of one process) it fails at once."""
    from satflow_dev.runtime.__main__ import choose_dynamodb

    plan = make_plan(19, 16, 4)
    assert {o.kind for ops in plan.clients for o in ops} == set(MIX) and any(i.fail for i in plan.invoices)
    engine, _ = choose_dynamodb("auto")  # DynamoDB Local when fetched (make dynamodb-local), else moto
    result = run_against_runtime(19, ops=16, workers=4, dynamodb=engine)
    print(result.summary())
    assert result.ok, result.summary()
    assert sum(result.counts.values()) == 16
    assert any("balances equal the reference model" in c for c in result.checks), result.checks


def test_the_plan_is_the_seeds():
    first, again, other = make_plan(7, 60, 4), make_plan(7, 60, 4), make_plan(8, 60, 4)

    def shape(plan):
        return [(o.kind, o.account, o.amount, o.to, o.bad, o.replay_of, o.memo) for ops in plan.clients for o in ops]

    assert shape(first) == shape(again) and first.digest() == again.digest()
    assert shape(first) != shape(other) and first.digest() != other.digest()
    assert len({(o.client, o.amount) for ops in first.clients for o in ops}) == 60  # unique per request
    assert all(first.owner(o.to) != o.client for ops in first.clients for o in ops if o.kind == "transfer")


# ------------------------------------------------------------------------------------- a fabricated runtime
class FakeRuntime:
    """Just enough of the API, in memory and correct, for transfers; ``mix`` makes it behave as the pre-fix runtime
    did: the request carrying memo X is executed with another request's body (under X's sender's key)."""

    def __init__(self, mix: dict[str, dict] | None = None) -> None:
        self.mix = mix or {}
        self.accounts: dict[str, dict] = {}  # key -> account
        self.transfers: dict[tuple[str, str], dict] = {}  # (sender, idempotency key) -> transfer

    def _by_id(self, account_id):
        return next(a for a in self.accounts.values() if a["id"] == account_id)

    def call(self, method, path, *, key=None, body=None, idempotency_key=None, timeout=0):
        if (method, path) == ("POST", "/v1/accounts"):
            n = len(self.accounts)
            account = {"id": f"acc_{n}", "ref": body["external_ref"], "balance": 0, "history": []}
            self.accounts[f"sk_{n}"] = account
            return 201, {"account_id": account["id"], "external_ref": body["external_ref"], "api_key": f"sk_{n}"}
        if (method, path) == ("POST", "/v1/admin/adjustments"):
            self._by_id(body["account_id"])["balance"] += body["amount_msat"]
            return 201, {"account_id": body["account_id"], "amount_msat": body["amount_msat"]}
        if (method, path) == ("POST", "/v1/transfers"):
            sender = self.accounts[key]
            body = self.mix.get(body.get("memo"), body)
            if body["to"] == sender["id"]:
                return 422, {"error": {"code": "SELF_TRANSFER", "message": "same account"}}
            done = self.transfers.get((sender["id"], idempotency_key))
            if done is None:
                done = {"transfer_id": f"tr_{len(self.transfers)}", "status": "SETTLED", "to": body["to"],
                        "amount_msat": body["amount_msat"]}
                self.transfers[sender["id"], idempotency_key] = done
                sender["balance"] -= body["amount_msat"]
                self._by_id(body["to"])["balance"] += body["amount_msat"]
                for account, direction, other in ((sender, "out", body["to"]),
                                                  (self._by_id(body["to"]), "in", sender["id"])):
                    account["history"].append({"transfer_id": done["transfer_id"], "type": "internal_transfer",
                                               "direction": direction, "amount_msat": body["amount_msat"],
                                               "status": "SETTLED", "counterparty": other, "memo": body["memo"]})
            return 201, done
        if (method, path) == ("GET", "/v1/accounts/me"):
            return 200, {"account_id": self.accounts[key]["id"]}
        if (method, path) == ("GET", "/v1/balance"):
            return 200, {"balances": [{"available_msat": self.accounts[key]["balance"], "pending_out_msat": 0}]}
        if method == "GET" and path.startswith("/v1/transactions"):
            return 200, {"items": list(self.accounts[key]["history"]), "next_cursor": None}
        if (method, path) == ("POST", "/_sim/schedules/fire"):
            return 200, {"result": {}}
        if (method, path) == ("GET", "/v1/admin/audit/verify"):
            return 200, {"ok": True, "complete": True}
        if (method, path) == ("GET", "/v1/admin/solvency"):
            total = sum(a["balance"] for a in self.accounts.values())
            return 200, {"ledger_invariants": {"ok": True, "violation_count": 0, "balance_items": total and 1}}
        raise AssertionError(f"the fake has no {method} {path}")


def _transfers_plan() -> Plan:
    """Two clients, one account each, sending each other transfers at the same time, one replay, one bad request."""
    ops = [[Op(0, 0, "transfer", 0, 100_000, to=1, memo="c0:o0"), Op(0, 1, "replay", 0, replay_of=0),
            Op(0, 2, "whoami", 0)],
           [Op(1, 0, "transfer", 1, 102_000, to=0, memo="c1:o0"),
            Op(1, 1, "bad", 1, 102_001, to=0, bad="self_transfer", memo="c1:o1:bad")]]
    return Plan(seed=0, workers=2, accounts_per_client=1, clients=ops, invoices=[])


def _run(fake: FakeRuntime) -> RuntimeRunResult:
    plan = _transfers_plan()
    result = RuntimeRunResult(0, 5, 2, "fake", accounts=plan.accounts)
    run = _Run(fake, "admin", plan, result)  # type: ignore[arg-type]
    run.setup()
    for ops in plan.clients:
        for op in ops:
            run.execute(op)
    run.wait_for_final_states()
    run.check()
    return result


def test_the_oracle_passes_a_correct_runtime():
    result = _run(FakeRuntime())
    assert result.ok, result.summary()


def test_the_oracle_fails_a_response_mixed_with_another_clients_request():
    """Client 1's transfer body executed under client 0's key (what Powertools' shared current_event did in the
    pre-fix runtime): a response that does not echo its own request, money moved under the wrong key, balances off
    the model."""
    fake = FakeRuntime(mix={"c0:o0": {"to": "acc_1", "amount_msat": 102_000, "memo": "c1:o0"},
                            "c1:o1:bad": {"to": "acc_0", "amount_msat": 100_000, "memo": "c0:o0"}})
    result = _run(fake)
    print(result.summary())
    assert not result.ok
    assert any("client 0 op 0 (transfer" in a and "amount_msat=100000" in a and '"amount_msat": 102000' in a
               for a in result.categories["response"]), result.summary()
    # A request that must be refused (a self transfer) executed with another client's valid body instead:
    assert any("must be refused with 422 SELF_TRANSFER, got 201" in a for a in result.categories["response"])
    assert any("money left under its key" in a and "'c0:o0'" in a for a in result.categories["history"])
    assert result.categories.get("balance"), result.summary()
    assert "replay" in result.summary()


def test_the_oracle_fails_money_moved_under_a_key_that_did_not_send_it():
    """Client 0's request answered as sent, but the ledger moved it as client 1's body would have: the history and
    the balances catch what the response hides."""

    class Lying(FakeRuntime):
        def call(self, method, path, **kw):
            status, body = super().call(method, path, **kw)
            if (method, path) == ("POST", "/v1/transfers") and kw["body"].get("memo") == "c0:o0":
                body = {**body, "to": "acc_1", "amount_msat": 100_000}
            return status, body

    result = _run(Lying(mix={"c0:o0": {"to": "acc_1", "amount_msat": 102_000, "memo": "c1:o0"}}))
    print(result.summary())
    assert not result.ok
    assert result.categories.get("balance"), result.summary()
    assert any("booked as 102000 msat" in a or "money left under its key" in a
               for a in result.categories.get("history", [])), result.summary()
