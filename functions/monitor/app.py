"""Scheduled monitors. The schedule's Input names the job; each job is safe to run twice or concurrently."""
from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from satflow import bootstrap
from satflow.app import deposits, invoices, payments, payouts, sanctions

logger = Logger(service="satflow")
metrics = Metrics(namespace="satflow", service="satflow")


def _invoice_catchup(svc) -> dict:
    return {"published": invoices.catch_up(svc)}


def _invoice_expiry(svc) -> dict:
    return {"expired": invoices.expire_invoices(svc)}


def _payment_reconciler(svc) -> dict:
    counts = payments.reconcile(svc)
    if counts["past_cltv"]:
        metrics.add_metric(name="PaymentsInFlightPastCltv", unit=MetricUnit.Count, value=counts["past_cltv"])
    if counts["errors"]:
        metrics.add_metric(name="ReconcilerErrors", unit=MetricUnit.Count, value=counts["errors"])
    return counts


def _chain_scan(svc) -> dict:
    result = deposits.scan_chain(svc)
    for key, metric in (("reorgs", "ChainReorgs"), ("reversed", "DepositsReversed"), ("overdrafts", "AccountsOverdrawn"),
                        ("utxo_conflicts", "ReorgedReservedUtxos"), ("unattributed", "UnattributedDeposits")):
        if result.get(key):
            metrics.add_metric(name=metric, unit=MetricUnit.Count, value=result[key])
    _chain_scan_metrics(result)
    return result


def _sanctions_refresh(svc, accept_shrink: bool = False) -> dict:
    result = sanctions.refresh_sanctions_list(svc, accept_shrink=accept_shrink)
    status = result["status"]
    if status in ("refused", "failed"):  # the stored list stays; someone has to look at the source
        metrics.add_metric(name="SanctionsRefreshRefused" if status == "refused" else "SanctionsRefreshFailed",
                           unit=MetricUnit.Count, value=1)
    if status in ("stored", "unchanged"):
        metrics.add_metric(name="SanctionsListDestinations", unit=MetricUnit.Count,
                           value=result["addresses"] + result["node_pubkeys"])
    return result


def _review_sweeper(svc) -> dict:
    from satflow.app import risk

    counts = risk.sweep_reviews(svc)
    for key, metric in (("applied", "ReviewsAppliedBySweeper"), ("timed_out", "ReviewsTimedOutBySweeper"),
                        ("errors", "ReviewSweeperErrors")):
        if counts[key]:  # any of these means a review workflow was lost: an alarm, not routine
            metrics.add_metric(name=metric, unit=MetricUnit.Count, value=counts[key])
    return counts


def _solvency_check(svc) -> dict:
    from satflow.app import solvency

    check = solvency.run_check(svc)
    result = {"check_id": check.check_id, "ok": check.ok, "breaches": len(check.breaches)}
    for s in check.sources:
        result[f"{s.source}_unexplained_msat"] = None if s.error else s.unexplained_msat
        result[f"{s.source}_foreign_msat"] = None if s.error else s.foreign_msat
    return result


def _ledger_invariants(svc) -> dict:
    from satflow.app import solvency

    summary = solvency.run_invariants(svc)
    return {k: summary[k] for k in ("ok", "violation_count", "balance_items", "segments", "duration_ms")}


def _chain_scan_metrics(result: dict) -> None:
    if result.get("foreign_spends"):  # our coins spent by a transaction satflow did not make: an alarm
        metrics.add_metric(name="ForeignSpends", unit=MetricUnit.Count, value=result["foreign_spends"])


JOBS = {
    "chain_scan": _chain_scan,
    "payout_batcher": lambda svc: payouts.run_batcher(svc),
    "invoice_catchup": _invoice_catchup,
    "invoice_expiry": _invoice_expiry,
    "payment_reconciler": _payment_reconciler,
    "sanctions_refresh": _sanctions_refresh,
    "review_sweeper": _review_sweeper,
    "solvency_check": _solvency_check,
    "ledger_invariants": _ledger_invariants,
}
# Options a job reads from an operator's manual invocation (schedules send only {"job": ...}); booleans only.
JOB_OPTIONS = {"sanctions_refresh": ("accept_shrink",)}


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event, context):
    job = event.get("job") if isinstance(event, dict) else None
    if job not in JOBS:
        raise ValueError(f"unknown monitor job {job!r}; expected one of {sorted(JOBS)}")
    options = {name: event[name] for name in JOB_OPTIONS.get(job, ()) if event.get(name) is True}
    result = JOBS[job](bootstrap.services(), **options)
    metrics.add_dimension(name="job", value=job)
    metrics.add_metric(name="MonitorJobRuns", unit=MetricUnit.Count, value=1)  # a missing run is an alarm
    logger.info("monitor job done", extra={"job": job, **result})
    return {"job": job, **result}
