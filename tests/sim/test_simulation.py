"""The deterministic simulation (devtools/satflow_dev/sim) over a fixed set of seeds, plus proofs that the
simulation is deterministic and that its oracle can fail. A failing seed prints its one-line replay command."""
from __future__ import annotations

import pytest

from satflow_dev.sim import run_seed
from satflow_dev.sim.asl import Execution, TaskError, load_definition
from satflow_dev.sim.world import ROOT

pytestmark = pytest.mark.slow

# Fixed CI seeds: each 30 operations with every fault class on. About 20-40 s per seed on a loaded 2-core box.
CI_SEEDS = [1, 2, 3, 4]
OPS, WORKERS = 30, 4


# Known failures on main, found by the simulation and fixed elsewhere: an anomaly carrying one of these tags is
# reported as an xfail naming the issue, never as a pass. Remove the entry when its fix lands.
# Issue 11 item 4 (an internal payment's transient ledger failure left the payee's invoice OPEN while the node had
# cancelled it) was listed here while main had it: seed 31 of test_internal_payments_under_transient_failures
# found it; the fix has landed.
# The crash window that seed 31 found next (the Lambda dying after the node cancelled the payee's invoice and
# before the ledger write: the invoice stayed OPEN here) was listed here too until the internal payment wrote its
# intent before the node call (payment PENDING + invoice ACCEPTED) and the payer's retry and the payment
# reconciler resume it (app/payments.py _settle_internal; tests/inbound/test_internal_payment_crashes.py).
# The on-chain workload's first finding (seed 2): an external batch times out (ABANDONED), its successor takes its
# inputs over, the signer broadcasts the abandoned transaction after all; the chain monitor asked only the batch
# holding the input and booked our own payout transaction as a FOREIGN SPEND (suspense, a breaker trip, an adoption
# that could never post), and the solvency check called the window until adoption drift. Listed here until both asked
# the payout side's supersedes chain (payouts.on_our_input_spent / abandoned_predecessors;
# tests/payouts/test_recovery_rules.py::test_the_chain_monitor_does_not_call_a_late_abandoned_transaction_...).
KNOWN_FAILURES: dict[str, str] = {}
# Anomalies that follow from a known failure in the same seed (allowed only when their cause's tag is present).
KNOWN_CONSEQUENCES: dict[str, tuple[str, ...]] = {}


def _judge(result):
    print(result.summary())
    anomalies = result.verdict.anomalies
    causes = [tag for tag in KNOWN_FAILURES if any(tag in a for a in anomalies)]
    allowed = tuple(causes) + tuple(c for tag in causes for c in KNOWN_CONSEQUENCES.get(tag, ()))
    unknown = [a for a in anomalies if not any(tag in a for tag in allowed)]
    assert not unknown, result.summary()
    if causes:
        pytest.xfail("; ".join(KNOWN_FAILURES[t] for t in causes) + f" — replay: {result.replay_command()}")


@pytest.mark.parametrize("seed", CI_SEEDS)
def test_seed_keeps_the_money_right(seed):
    result = run_seed(seed, OPS, WORKERS, "all")
    _judge(result)


# The on-chain half (deposits, reorgs, payouts, signer, bumps) in the non-interleaved mode: under interleaving it
# shows anomalies not triaged yet (README). Seed 2 found the foreign-spend bug (fixed).
ONCHAIN_SEEDS = [1, 2, 3, 5]


@pytest.mark.parametrize("seed", ONCHAIN_SEEDS)
def test_onchain_seed_keeps_the_money_right(seed):
    result = run_seed(seed, OPS, WORKERS, "all", interleave=False)
    assert result.mix.get("payouts_accepted") and result.mix.get("payout_batches"), result.mix
    _judge(result)


def test_internal_payments_under_transient_failures():
    """Aimed at internal payments (issue 11 item 4 and the crash window after the node cancel, both found by this
    seed on main): many internal payments, DynamoDB throttling/conflicts/crashes, clients that give up after a
    5xx. Any anomaly fails."""
    _judge(run_seed(31, 30, 4, "ddb_throttle=0.1,ddb_conflict=0.1,ddb_crash_after=0.03", internal_share=0.6))


def test_one_seed_replays_identically():
    """Same seed, same actions, same faults, same ids: a failure's replay command reproduces it."""
    first = run_seed(11, 12, 3, "all")
    again = run_seed(11, 12, 3, "all")
    assert first.injected, "the run injected no fault: nothing was shown"
    assert (first.trace_digest, first.injected, first.invocations, first.crashes) == \
        (again.trace_digest, again.injected, again.invocations, again.crashes)


def test_one_onchain_seed_replays_identically():
    """The on-chain half too (chain simulator, signer, bumps, reorgs are driven by the seed): same trace twice."""
    first = run_seed(11, 12, 3, "all", interleave=False)
    again = run_seed(11, 12, 3, "all", interleave=False)
    assert first.mix.get("payouts_accepted") or first.mix.get("deposits"), first.mix
    assert (first.trace_digest, first.injected, first.invocations) == \
        (again.trace_digest, again.injected, again.invocations)


def test_the_oracle_sees_money_appearing(monkeypatch):
    """The oracle is not a rubber stamp: an inbound credit applied twice (the invoice handler's dedup bypassed by
    crediting a second time under a fresh id) shows up as a balance the model does not explain."""
    from satflow.app import invoices

    original = invoices.credit_settled_invoice
    calls = []

    def credit_twice(svc, *, payment_hash, amount_paid_msat):
        result = original(svc, payment_hash=payment_hash, amount_paid_msat=amount_paid_msat)
        if not calls:
            calls.append(payment_hash)
            from satflow.app import transfers
            from satflow.app.accounts import ADMIN

            invoice = svc.lightning.get_invoice(payment_hash)
            transfers.adjust(svc, ADMIN, f"dup-{payment_hash[:16]}", invoice.account_id, amount_paid_msat,
                             "credit", "simulated double credit")
        return result

    monkeypatch.setattr(invoices, "credit_settled_invoice", credit_twice)
    for seed in range(15, 22):  # the first seed (of a few) whose workload pays an invoice from outside (15)
        found = run_seed(seed, 15, 3, "none")
        if calls:
            break
    assert calls, "no seed paid an invoice from outside"
    assert not found.ok
    assert any("model" in a for a in found.verdict.anomalies), found.summary()


def _machine(name):
    subs = {"PaymentFunctionArn": "arn:pay", "RiskFunctionArn": "arn:risk"}
    return load_definition(str(ROOT / "statemachines" / f"{name}.asl.json"), subs)


def test_interpreter_retries_then_catches_into_reconciliation():
    """Send raising a transient error retries (5 attempts, fake-clock backoff), then Catch -> NeedsReconciliation."""
    now = [0.0]
    steps = []

    def invoke(fn, payload):
        steps.append(payload["step"])
        if payload["step"] == "assess_payment":
            return {"decision": "allow"}
        if payload["step"] == "reserve":
            return {"status": "PENDING"}
        raise TaskError("TransientError", "node busy")

    e = Execution(machine="payment", name="p1", definition=_machine("payment"), data={"payment_id": "p1"},
                  invoke=invoke, now=lambda: now[0], resource_names={"arn:pay": "PaymentFunction",
                                                                     "arn:risk": "RiskFunction"})
    for _ in range(50):
        if e.status != "RUNNING":
            break
        if not e.runnable():
            now[0] = e.next_deadline()
        e.step()
    assert e.status == "SUCCEEDED" and e.history[-1] == "NeedsReconciliation"
    assert steps.count("send") == 6  # the first try + MaxAttempts 5
    assert now[0] == 1 + 2 + 4 + 8 + 16  # IntervalSeconds 1, BackoffRate 2, on the fake clock


def test_interpreter_times_out_a_parked_review():
    now = [0.0]

    def invoke(fn, payload):
        return {"decision": "review", "review_id": "r1"} if payload["step"] == "assess_payment" else \
            {"next": "DONE"}

    e = Execution(machine="payment", name="p2", definition=_machine("payment"),
                  data={"payment_id": "p2", "review_timeout_s": 600}, invoke=invoke, now=lambda: now[0],
                  resource_names={"arn:pay": "PaymentFunction", "arn:risk": "RiskFunction"})
    while e.token is None:
        e.step()
    assert e.state == "AwaitReview" and not e.runnable()
    now[0] = 600
    e.step()
    assert e.state == "ReviewTimedOut"
