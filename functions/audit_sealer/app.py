"""Audit sealer: the single writer of the audit chains (docs/audit.md).

- Stream (the table's stream, filtered to INSERTs of ``AUDITQ#`` pending entries, ParallelizationFactor 1): seals
  each chain's entries in stream order from the committed images. Records of one partition key (one chain's
  unsealed index) are on one stream shard in commit order, and Lambda runs one batch per stream shard at a time, so
  one chain's entries arrive in order; the chain head's condition makes any other writer (the sweeper, a
  redelivered batch) safe as well. A chain that fails transiently reports its first record as the batch item
  failure (Lambda retries from there; what was sealed meanwhile is skipped as already sealed).
- ``{"job": "sweep"}`` (every minute): seals whatever the stream path missed after a grace period, and publishes
  ``AuditSealLagSeconds`` (age of the oldest unsealed entry; the alarm).
- ``{"job": "verify"}`` (every 5 minutes): advances every chain's verified checkpoint (bounded), re-verifies from
  genesis up to the checkpoint in bounded stretches (a rewrite behind a checkpoint), and publishes
  ``AuditVerifyFailures``; the checkpoints are logged (the external anchor).
"""
from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from satflow import bootstrap
from satflow.app import audit

logger = Logger(service="satflow")
metrics = Metrics(namespace="satflow", service="satflow")


def _seal_stream(event: dict) -> dict:
    from satflow.adapters.dynamodb.audit import is_pending_key, pending_from_image  # with pynamodb: on first use

    entries = []
    for record in event.get("Records") or []:
        change = record.get("dynamodb") or {}
        if record.get("eventName") != "INSERT" or not is_pending_key(change.get("Keys") or {}):
            continue  # the filter should not let it through
        entries.append((change.get("SequenceNumber"), pending_from_image(change.get("NewImage") or {})))
    report = audit.seal_entries(bootstrap.services(), entries, from_stream=True)
    _publish(report)
    logger.info("audit entries sealed", extra=report.to_dict())
    return {"batchItemFailures": [{"itemIdentifier": seq} for seq in report.failed]}


def _publish(report: audit.SealReport) -> None:
    if report.sealed:
        metrics.add_metric(name="AuditSealLagSeconds", unit=MetricUnit.Seconds, value=report.lag_s)
    for name, value in (("AuditEntriesChanged", report.changed), ("AuditEntriesRefused", report.refused),
                        ("AuditChainsBroken", len(report.broken_shards))):
        if value:  # each means tampering or a bug: an alarm, not routine
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def _sweep() -> dict:
    report = audit.sweep(bootstrap.services())
    _publish(report)
    # Published on every sweep (0 when nothing waits): a missing datapoint is itself treated as breaching.
    metrics.add_metric(name="AuditSealLagSeconds", unit=MetricUnit.Seconds, value=report.lag_s)
    return report.to_dict()


def _verify() -> dict:
    result = audit.verify_step(bootstrap.services(), audit.JOB_VERIFY_BUDGET, rescan_budget=audit.JOB_RESCAN_BUDGET)
    bad = [s for s in result["shards"] if not s["ok"]]
    metrics.add_metric(name="AuditVerifyFailures", unit=MetricUnit.Count, value=len(bad))
    return {"ok": result["ok"], "complete": result["complete"], "records": result["records"],
            "bad": [{k: s[k] for k in ("shard", "problem", "first_bad_seq")} for s in bad]}


JOBS = {"sweep": _sweep, "verify": _verify}


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event, context):
    if isinstance(event, dict) and "Records" in event:
        return _seal_stream(event)
    job = event.get("job") if isinstance(event, dict) else None
    if job not in JOBS:
        raise ValueError(f"unknown audit sealer job {job!r} (known: {', '.join(JOBS)})")
    result = JOBS[job]()
    logger.info("audit job done", extra={"job": job, **{k: v for k, v in result.items() if k != "bad"}})
    return {"job": job, **result}
