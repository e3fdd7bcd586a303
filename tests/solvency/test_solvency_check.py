"""The solvency check and its breaker on the simulators (LND REST simulator + Bitcoin Core RPC simulator, moto):
steady state has no unexplained drift; in-flight payments, payments the node finished before the ledger posted
them, invoices settled but not yet credited and unconfirmed deposits are explained, not drift; a payment made on
our node outside satflow is found, booked to suspense as foreign, trips the breaker; sends get 503 SENDS_PAUSED
with nothing reserved while internal transfers continue; assign + resume reopen sends."""
from __future__ import annotations

import pytest

from satflow.adapters.bitcoind import BitcoinRpcClient
from satflow.adapters.dynamodb.chain import DynamoChainStore, forget_index_cache
from satflow.adapters.dynamodb.lightning import DynamoLightningStore
from satflow.adapters.dynamodb.models import build_models
from satflow.adapters.dynamodb.solvency import DynamoSolvencyStore
from satflow.adapters.dynamodb.utxos import DynamoUtxoStore
from satflow.adapters.lnd import LndRestClient
from satflow.app import invoices, payments, solvency, transfers
from satflow.app.accounts import ADMIN, create_account
from satflow.app.deposits import forget_mempool_cache
from satflow.domain import errors
from satflow.domain.accounts import ALL_SCOPES, Principal
from satflow.domain.solvency import LIGHTNING, ONCHAIN, PART_INVOICES_NOT_CREDITED, PART_PAYMENTS_NOT_POSTED
from satflow.domain.templates import admin_adjustment
from satflow_dev.simulators.chain import ChainSimulator
from satflow_dev.simulators.lightning import LightningSimulator, PaymentScript

from tests.conftest import SHARDS, TABLE, build_services

TPUB = ("tpubDC8msFGeGuwnKG9Upg7DM2b4DaRqg3CUZa5g8v2SRQ6K4NSkxUgd7HsL2XVWbVm39yBA4LAxysQAm397zwQSQoQgewGiYZqrA9DsP4z"
        "bQ1M")


@pytest.fixture
def lsim() -> LightningSimulator:
    return LightningSimulator(our_balance_msat=2_000_000_000)


@pytest.fixture
def csim() -> ChainSimulator:
    return ChainSimulator(seed=11)


@pytest.fixture
def svc(ddb, lsim, csim):
    forget_index_cache()
    forget_mempool_cache()
    solvency.forget_breaker_cache()
    svc = build_services(ddb)
    models = build_models(TABLE, "us-east-1")
    svc.lightning = DynamoLightningStore(ddb, models)
    lnd = LndRestClient.from_secret(lsim.secret(), transport=lsim.transport())
    svc.lnd = lambda: lnd
    rpc = BitcoinRpcClient("http://chain-sim:18443/", "satflow", "sim", transport=csim.transport())
    svc.bitcoind = lambda: rpc
    svc.chain = DynamoChainStore(ddb, models)
    svc.utxos = DynamoUtxoStore(ddb, models)
    svc.deposit_account_key = TPUB
    svc.solvency = DynamoSolvencyStore(ddb, TABLE)
    svc.breaker_cache_s = 0  # every read sees the item (the 10-s container cache is tested on its own)
    svc.start_payment = lambda payment_id: None  # the workflow is driven by hand below
    metrics: list = []
    svc.emit_metric = lambda name, value=1, **dims: metrics.append((name, value, dims))
    svc.metrics = metrics
    yield svc
    forget_index_cache()
    forget_mempool_cache()


def principal(account_id: str) -> Principal:
    return Principal(account_id=account_id, scopes=frozenset(ALL_SCOPES))


@pytest.fixture
def alice(svc) -> str:
    return create_account(svc, ADMIN, "tg:alice", 3)[0].account_id


@pytest.fixture
def bob(svc) -> str:
    return create_account(svc, ADMIN, "tg:bob", 3)[0].account_id


def opening_capital(svc, lsim) -> None:
    """At deployment the operator books the node's channel funds (its own money) against equity."""
    solvency.book_capital(svc, ADMIN, "capital-1", "lightning", lsim.our_balance_msat, "in", "channels at start")


def receive(svc, lsim, account_id: str, amount_msat: int, credit: bool = True) -> str:
    inv = invoices.create_invoice(svc, principal(account_id), amount_msat=amount_msat)
    lsim.external_pay(inv.payment_request)
    if credit:
        invoices.credit_settled_invoice(svc, payment_hash=inv.payment_hash, amount_paid_msat=amount_msat)
    return inv.payment_hash


def figures(check, source):
    s = check.source(source)
    assert s is not None and s.error is None, s
    return s


def test_steady_state_has_no_unexplained_drift(svc, lsim, alice):
    opening_capital(svc, lsim)
    receive(svc, lsim, alice, 5_000_000)
    check = solvency.run_check(svc)
    ln = figures(check, LIGHTNING)
    assert check.ok and check.breaches == ()
    assert ln.ledger_msat == ln.node_msat == 2_005_000_000 and ln.unexplained_msat == 0 and ln.foreign_msat == 0
    assert figures(check, ONCHAIN).unexplained_msat == 0
    assert check.liabilities_msat == 5_000_000  # derived from the system accounts, no user account read
    assert solvency.sends_blocked_because(svc) is None
    view = solvency.solvency_view(svc, ADMIN)
    assert view["latest"]["check_id"] == check.check_id and view["breaker"]["sends"] == "open"
    assert ("SolvencyUnexplainedDriftMsat", 0, {"Source": "lightning"}) in svc.metrics


def test_without_the_opening_capital_the_node_shows_drift(svc, lsim):
    """The regression the capital booking exists for: the node's own funds are not in the ledger. Drift seen by one
    check is recorded; the breaker trips when the next check sees it too."""
    check = solvency.run_check(svc)
    assert figures(check, LIGHTNING).unexplained_msat == 2_000_000_000
    assert check.breaches and solvency.sends_blocked_because(svc) is None
    again = solvency.run_check(svc)
    assert again.breaches and solvency.sends_blocked_because(svc)


def test_drift_seen_by_one_check_only_does_not_trip(svc, lsim, alice):
    """Both readings of one check torn by credits landing between them (the simulation's soak seed 6020: 16 clients,
    invoice credits between the ledger read and the node scans): recorded as a breach, alarmed through the drift
    metric, no pause; the next check reads clean and nothing ever paused sends."""
    from dataclasses import replace

    opening_capital(svc, lsim)
    client = svc.lnd()
    real = client.node_balances
    calls = []

    def torn_twice():
        figures = real()
        calls.append(1)
        return replace(figures, local_msat=figures.local_msat + 95_010_000) if len(calls) <= 2 else figures

    client.node_balances = torn_twice
    first = solvency.run_check(svc)
    assert len(calls) == 2 and first.breaches and solvency.sends_blocked_because(svc) is None
    second = solvency.run_check(svc)
    assert not second.breaches and solvency.sends_blocked_because(svc) is None


def test_settled_not_credited_and_in_flight_payments_are_explained(svc, lsim, alice):
    opening_capital(svc, lsim)
    receive(svc, lsim, alice, 50_000_000)
    # settled on the node, the listener has not credited it yet: explained, not drift
    pending_hash = receive(svc, lsim, alice, 3_000_000, credit=False)
    check = solvency.run_check(svc)
    ln = figures(check, LIGHTNING)
    assert ln.parts == {PART_INVOICES_NOT_CREDITED: 3_000_000} and ln.unexplained_msat == 0 and not check.breaches
    invoices.credit_settled_invoice(svc, payment_hash=pending_hash, amount_paid_msat=3_000_000)

    # an outbound payment: reserved, then in flight on the node (HTLC out), then SUCCEEDED on the node but not
    # yet posted by the workflow
    pr = lsim.external_invoice(20_000_000)
    lsim.script(PaymentScript.succeed(hold=True), lsim.payment_hash_of(pr))
    payment = payments.create_payment(svc, principal(alice), "pay-1", pr)
    assert figures(solvency.run_check(svc), LIGHTNING).unexplained_msat == 0  # reserved, not sent
    svc.lnd().send_payment(pr, fee_limit_msat=payment.fee_reserve_msat, timeout_seconds=10, wait_s=0)
    check = solvency.run_check(svc)
    ln = figures(check, LIGHTNING)
    assert ln.details["htlcs_out_msat"] > 0 and ln.unexplained_msat == 0 and not check.breaches
    lsim.resolve(payment.payment_hash, "SUCCEEDED")
    check = solvency.run_check(svc)
    ln = figures(check, LIGHTNING)
    assert ln.parts.get(PART_PAYMENTS_NOT_POSTED, 0) < 0 and ln.unexplained_msat == 0 and not check.breaches
    # the workflow posts it: nothing left to explain
    payments.step_post(svc, payment.payment_id, payments.step_track(svc, payment.payment_id)["outcome"])
    ln = figures(solvency.run_check(svc), LIGHTNING)
    assert ln.parts == {} and ln.unexplained_msat == 0


def test_a_settlement_published_but_not_yet_credited_is_explained_not_drift(svc, lsim, alice):
    """Soak seed 1006 (issue 14): the catch-up advances its cursor once it has PUBLISHED a settlement, before
    InvoiceFunction credits it. Between the two (a backlog, a failing consumer) the node holds the money and the
    ledger does not; the check used to look only after the catch-up's cursor, saw neither side explain it, and
    one large inbound payment paused every send."""
    opening_capital(svc, lsim)
    receive(svc, lsim, alice, 5_000_000)
    published: list = []
    svc.publish_invoice_event = published.append
    big = receive(svc, lsim, alice, 90_000_000, credit=False)
    assert invoices.catch_up(svc) == 2 and svc.lightning.invoice_cursor()[0] == 2  # published, cursor past both
    check = solvency.run_check(svc)
    ln = figures(check, LIGHTNING)
    assert ln.parts == {PART_INVOICES_NOT_CREDITED: 90_000_000} and ln.unexplained_msat == 0
    assert ln.details["invoice_credits_in_transit"] == 1
    assert not check.breaches and solvency.sends_blocked_because(svc) is None
    assert svc.solvency.invoice_watermark() == 1  # held before the credit in transit

    # the consumer delivers the message: nothing left in transit, the watermark moves past both
    [event] = [e for e in published if e["payment_hash"] == big]
    invoices.credit_settled_invoice(svc, payment_hash=big, amount_paid_msat=event["amount_paid_msat"])
    ln = figures(solvency.run_check(svc), LIGHTNING)
    assert ln.parts == {} and ln.unexplained_msat == 0 and svc.solvency.invoice_watermark() == 2


def test_the_invoice_scan_starts_at_its_watermark_held_by_open_invoices(svc, lsim, alice):
    """The check's invoice scan is O(invoices not yet final and credited), not O(the node's history)."""
    opening_capital(svc, lsim)
    for amount in (1_000_000, 2_000_000, 3_000_000):
        receive(svc, lsim, alice, amount)
    client = svc.lnd()
    real = client.list_invoices
    offsets: list = []

    def recording(index_offset=0, num_max_invoices=100, **kw):
        offsets.append(index_offset)
        return real(index_offset, num_max_invoices, **kw)

    client.list_invoices = recording
    solvency.run_check(svc)  # the first run: from 0, once
    assert offsets == [0] and svc.solvency.invoice_watermark() == 3
    still_open = invoices.create_invoice(svc, principal(alice), amount_msat=4_000_000)  # add_index 4
    receive(svc, lsim, alice, 5_000_000)  # add_index 5, settled and credited
    offsets.clear()
    assert figures(solvency.run_check(svc), LIGHTNING).unexplained_msat == 0
    assert offsets == [3] and svc.solvency.invoice_watermark() == 3  # the open invoice holds it
    lsim.external_pay(still_open.payment_request)  # settled, not credited yet: still held
    offsets.clear()
    ln = figures(solvency.run_check(svc), LIGHTNING)
    assert ln.parts == {PART_INVOICES_NOT_CREDITED: 4_000_000} and ln.unexplained_msat == 0 and offsets == [3]
    invoices.credit_settled_invoice(svc, payment_hash=still_open.payment_hash, amount_paid_msat=4_000_000)
    solvency.run_check(svc)
    offsets.clear()
    solvency.run_check(svc)
    assert offsets == [5] and svc.solvency.invoice_watermark() == 5


def test_a_further_settlement_not_yet_credited_is_explained_by_its_increase(svc, lsim, alice):
    """AMP: the node settles one hash again and reports the grown total; the credit of the increase is keyed by
    the new total. Until it is posted, exactly the increase is in transit."""
    opening_capital(svc, lsim)
    payment_hash = receive(svc, lsim, alice, 10_000_000)
    node_invoice = lsim._our_invoices[payment_hash]  # the simulator has no AMP: grow the total paid by hand
    node_invoice.amt_paid_msat += 7_000_000
    lsim._balance_msat += 7_000_000
    ln = figures(solvency.run_check(svc), LIGHTNING)
    assert ln.parts == {PART_INVOICES_NOT_CREDITED: 7_000_000} and ln.unexplained_msat == 0
    invoices.credit_settled_invoice(svc, payment_hash=payment_hash, amount_paid_msat=17_000_000)
    ln = figures(solvency.run_check(svc), LIGHTNING)
    assert ln.parts == {} and ln.unexplained_msat == 0


def test_credit_due_names_what_the_credit_writes(svc, lsim, alice):
    """One rule: for each branch of credit_settled_invoice, credit_due names the ledger entry it then writes and
    its amount, and nothing once it is written."""
    from satflow.domain.solvency import SUSPENSE_DOUBLE_SETTLEMENT

    def due(payment_hash, paid):
        return invoices.credit_due(svc.lightning.get_invoice(payment_hash), paid)

    inv = invoices.create_invoice(svc, principal(alice), amount_msat=0)
    assert due("ab" * 32, 5_000) is None  # not ours
    for paid in (10_000, 25_000):  # the first settlement, then a further one (AMP)
        transfer_id, amount = due(inv.payment_hash, paid)
        result = invoices.credit_settled_invoice(svc, payment_hash=inv.payment_hash, amount_paid_msat=paid)
        assert result.outcome == "credited" and result.transfer_id == transfer_id
        assert svc.ledger.get_transfer(transfer_id).amount == amount
        assert due(inv.payment_hash, paid) is None
    assert due(inv.payment_hash, 10_000) is None  # an older total: nothing

    # settled internally, then the node reports a payment too: the credit books it to SUSPENSE under that id
    internal = invoices.create_invoice(svc, principal(alice), amount_msat=3_000)
    svc.lightning.run(svc.lightning.claim_invoice_items(svc.lightning.get_invoice(internal.payment_hash),
                                                       "internal-pay"))  # the internal payment's intent
    record = svc.lightning.get_invoice(internal.payment_hash)
    svc.ledger.execute(admin_adjustment(transfer_id="internal-pay", account_id=alice, amount_msat=3_000,
                                        direction="credit", reason="stands for the internal payment",
                                        created_at=svc.clock(), shards=SHARDS),
                       svc.lightning.settle_invoice_items(record, amount_received_msat=3_000, settled_at=svc.clock(),
                                                          settled_by="internal-pay"))
    transfer_id, amount = due(internal.payment_hash, 3_000)
    assert invoices.credit_settled_invoice(svc, payment_hash=internal.payment_hash,
                                           amount_paid_msat=3_000).outcome == "conflict"
    booked = svc.ledger.get_transfer(transfer_id)
    assert booked is not None and booked.amount == amount == 3_000
    [item] = solvency.list_suspense(svc, ADMIN, "open")
    assert (item.kind, item.transfer_id) == (SUSPENSE_DOUBLE_SETTLEMENT, transfer_id)


def test_our_payment_unresolved_at_the_first_check_is_still_explained(svc, lsim, alice):
    """The first check treats the node's earlier payments as history (the opening capital), not as foreign. It
    used to jump its payment cursor past ALL of them, ours included: a payment of ours in flight at that moment
    (an upgrade while sends run; soak seed 1006, where the first check ran late) that then succeeded before the
    workflow posted it was seen by no run, and the gap showed as unexplained drift that paused sends."""
    opening_capital(svc, lsim)
    receive(svc, lsim, alice, 80_000_000)
    history = lsim.foreign_pay(1_000_000)  # paid on the node before satflow's check ever ran: history
    solvency.book_capital(svc, ADMIN, "capital-2", "lightning", 1_000_000 + 1_000 + 1, "out", "paid before satflow")
    pr = lsim.external_invoice(30_000_000)
    lsim.script(PaymentScript.succeed(hold=True), lsim.payment_hash_of(pr))
    payment = payments.create_payment(svc, principal(alice), "pay-1", pr)
    svc.lnd().send_payment(pr, fee_limit_msat=payment.fee_reserve_msat, timeout_seconds=10, wait_s=0)

    check = solvency.run_check(svc)  # the first check: our payment is in flight on the node
    ln = figures(check, LIGHTNING)
    assert ln.unexplained_msat == 0 and ln.foreign_msat == 0 and not check.breaches
    assert solvency.list_suspense(svc, ADMIN) == [] and history  # history is not foreign
    lsim.resolve(payment.payment_hash, "SUCCEEDED")  # the node pays; the workflow has not posted yet
    check = solvency.run_check(svc)
    ln = figures(check, LIGHTNING)
    assert ln.parts.get(PART_PAYMENTS_NOT_POSTED) == -(30_000_000 + 1_000 + 30)
    assert ln.unexplained_msat == 0 and not check.breaches
    payments.step_post(svc, payment.payment_id, payments.step_track(svc, payment.payment_id)["outcome"])
    ln = figures(solvency.run_check(svc), LIGHTNING)
    assert ln.parts == {} and ln.unexplained_msat == 0
    assert solvency.list_suspense(svc, ADMIN) == []


def test_foreign_payment_trips_the_breaker_until_assigned_and_resumed(svc, lsim, alice, bob):
    opening_capital(svc, lsim)
    receive(svc, lsim, alice, 80_000_000)
    assert not solvency.run_check(svc).breaches
    foreign_hash = lsim.foreign_pay(30_000_000)  # lncli payinvoice on our node, outside satflow

    check = solvency.run_check(svc)
    ln = figures(check, LIGHTNING)
    assert ln.unexplained_msat == 0  # booked against suspense in this very run ...
    assert ln.foreign_msat == 30_000_000 + 1_000 + 30  # ... and shown as foreign (amount + the node's fee)
    assert check.breaches and "lightning" in check.breaches[0]
    [item] = solvency.list_suspense(svc, ADMIN, "open")
    assert item.kind == "foreign_payment" and item.reference == foreign_hash and item.direction == "out"
    assert solvency.run_check(svc).breaches  # found once, booked once, still counts until assigned
    assert len(solvency.list_suspense(svc, ADMIN)) == 1

    # new outbound sends are refused, nothing reserved; internal transfers continue
    before = svc.ledger.balances(alice)[0]
    with pytest.raises(errors.SendsPaused):
        payments.create_payment(svc, principal(alice), "pay-2", lsim.external_invoice(1_000_000))
    assert svc.ledger.balances(alice)[0] == before
    transfers.create_transfer(svc, principal(alice), "t-1", bob, 1_000, None)

    # the admin writes the loss off, then resumes
    with pytest.raises(errors.ValidationError):
        solvency.resume(svc, ADMIN, " ")
    solvency.assign_suspense(svc, ADMIN, item.suspense_id, "expense", "operator paid a vendor from the node")
    assert solvency.list_suspense(svc, ADMIN, "open") == []
    with pytest.raises(errors.SuspenseAlreadyAssigned):
        solvency.assign_suspense(svc, ADMIN, item.suspense_id, "equity", "changed my mind")
    state = solvency.resume(svc, ADMIN, "foreign payment written off")
    assert state.sends == "open" and solvency.sends_blocked_because(svc) is None
    with pytest.raises(errors.Conflict):
        solvency.resume(svc, ADMIN, "again")
    assert not solvency.run_check(svc).breaches
    payments.create_payment(svc, principal(alice), "pay-3", lsim.external_invoice(1_000_000))
    # audited: the trip and the resume are records of the audit log
    from tests.audit.helpers import sealed_records

    actions = {r.action for r in sealed_records(svc)}
    assert {"solvency.breaker_tripped", "solvency.sends_resumed", "ledger.suspense_assigned.posted",
            "ledger.suspense_foreign_payment.posted"} <= actions


def test_a_stale_check_pauses_sends(svc, lsim, alice):
    opening_capital(svc, lsim)
    solvency.run_check(svc)
    now = svc.unix_clock()
    svc.unix_clock = lambda: now + svc.solvency_max_check_age_s + 1
    reason = solvency.sends_blocked_because(svc)
    assert reason and "no successful solvency check" in reason
    with pytest.raises(errors.SendsPaused):
        payments.create_payment(svc, principal(alice), "pay-1", lsim.external_invoice(1_000))
    # the job is not running at all (the item still says open): an admin can override for one more period
    assert solvency.resume(svc, ADMIN, "the check is down, node reconciled by hand").sends == "open"
    assert solvency.sends_blocked_because(svc) is None
    with pytest.raises(errors.Conflict):
        solvency.resume(svc, ADMIN, "twice")
    svc.unix_clock = lambda: now + 3 * svc.solvency_max_check_age_s
    assert solvency.sends_blocked_because(svc)
    # a run that cannot read the node trips the breaker formally (audited) once the last success is too old
    svc.lnd = lambda: (_ for _ in ()).throw(errors.LightningNodeUnavailable("down"))
    check = solvency.run_check(svc)
    assert not check.ok and any("no successful" in r for r in check.breaches + tuple(
        solvency.solvency_view(svc, ADMIN)["breaker"]["reasons"]))
    assert svc.solvency.breaker(consistent=True).sends == "paused"


def test_breaker_read_is_cached_per_container(svc, lsim):
    calls = []
    store = svc.solvency
    real = store.breaker

    def counting(consistent=False):
        calls.append(consistent)
        return real(consistent)

    store.breaker = counting
    svc.breaker_cache_s = 10
    solvency.forget_breaker_cache()
    for _ in range(5):
        solvency.require_sends_open(svc)
    assert calls == [False]  # one eventually consistent GetItem for five sends


def test_invariant_job_reads_parallel_segments_and_stores_the_result(svc, lsim, alice):
    svc.ledger.execute(admin_adjustment(transfer_id="f1", account_id=alice, amount_msat=7_000, direction="credit",
                                        reason="t", created_at=svc.clock(), shards=SHARDS))
    summary = solvency.run_invariants(svc, segments=4)
    assert summary["ok"] and summary["segments"] == 4 and summary["balance_items"] >= 2
    assert solvency.solvency_view(svc, ADMIN)["ledger_invariants"]["at"] == summary["at"]
    assert ("LedgerInvariantViolations", 0, {}) in svc.metrics


def test_a_transient_difference_is_read_again_before_it_trips(svc, lsim, alice):
    """The ledger and the node are read one after the other: a credit landing in between must not pause sends."""
    from dataclasses import replace

    opening_capital(svc, lsim)
    client = svc.lnd()
    real = client.node_balances
    readings = []

    def racing():
        figures = real()
        readings.append(figures)
        return replace(figures, local_msat=figures.local_msat + 50_000_000) if len(readings) == 1 else figures

    client.node_balances = racing
    check = solvency.run_check(svc)
    assert len(readings) == 2 and not check.breaches and figures(check, LIGHTNING).unexplained_msat == 0
    assert solvency.sends_blocked_because(svc) is None


def test_the_solvency_alarms_watch_metrics_the_jobs_emit_with_their_dimensions(svc, lsim, alice, capsys,
                                                                                monkeypatch):
    """An alarm on another name or dimension set would never fire: run the jobs through MonitorFunction's handler
    and read the EMF lines they print."""
    import json
    from pathlib import Path

    from satflow import bootstrap
    from satflow.adapters.metrics import emit_metric
    from satflow_dev.runtime.template import load_template_document

    from tests.handlers.conftest import LambdaContext, load_handler_module

    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "satflow")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "satflow")
    svc.emit_metric = emit_metric
    handler = load_handler_module("monitor", "monitor_app_solvency")
    opening_capital(svc, lsim)
    bootstrap.override(svc)
    try:
        handler.lambda_handler({"job": "solvency_check"}, LambdaContext())
        lsim.foreign_pay(30_000_000)
        handler.lambda_handler({"job": "solvency_check"}, LambdaContext())  # books suspense, trips the breaker
        handler.lambda_handler({"job": "ledger_invariants"}, LambdaContext())
    finally:
        bootstrap.override(None)
    emitted = set()
    for line in capsys.readouterr().out.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        for directive in (doc.get("_aws") or {}).get("CloudWatchMetrics", []):
            for dims in directive["Dimensions"]:
                for metric in directive["Metrics"]:
                    emitted.add((directive["Namespace"], metric["Name"], frozenset((d, doc[d]) for d in dims)))
    template = load_template_document(Path(__file__).resolve().parents[2] / "template.yaml")
    alarms = {k: v["Properties"] for k, v in template["Resources"].items()
              if v.get("Type") == "AWS::CloudWatch::Alarm" and k in (
                  "SolvencyBreakerTrippedAlarm", "SolvencyCheckAlarm", "SuspenseBookedAlarm", "LedgerInvariantsAlarm")}
    assert len(alarms) == 4
    for name, a in alarms.items():
        key = (a["Namespace"], a["MetricName"], frozenset((d["Name"], d["Value"]) for d in a["Dimensions"]))
        assert key in emitted, (name, sorted(emitted, key=str))


def test_the_foreign_spends_alarm_watches_what_chain_scan_emits(svc, capsys, monkeypatch):
    import json
    from pathlib import Path

    from satflow import bootstrap
    from satflow.app import deposits
    from satflow_dev.runtime.template import load_template_document

    from tests.handlers.conftest import LambdaContext, load_handler_module

    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "satflow")
    handler = load_handler_module("monitor", "monitor_app_solvency")
    monkeypatch.setattr(deposits, "scan_chain", lambda svc: {"height": 1, "caught_up": True, "foreign_spends": 1})
    bootstrap.override(svc)
    try:
        handler.lambda_handler({"job": "chain_scan"}, LambdaContext())
    finally:
        bootstrap.override(None)
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"ForeignSpends"' in line]
    a = load_template_document(Path(__file__).resolve().parents[2] / "template.yaml")["Resources"][
        "ForeignSpendsAlarm"]["Properties"]
    wanted = {d["Name"]: d["Value"] for d in a["Dimensions"]}
    assert any(set(dims) == set(wanted) and all(doc[k] == v for k, v in wanted.items())
               for doc in docs for directive in doc["_aws"]["CloudWatchMetrics"] for dims in directive["Dimensions"]
               if any(m["Name"] == a["MetricName"] for m in directive["Metrics"])), docs
