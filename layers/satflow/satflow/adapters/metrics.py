"""Alert metrics emitted from use cases, outside any handler's ``@metrics.log_metrics`` flush.

Powertools' ``single_metric`` writes one CloudWatch Embedded Metric Format line to stdout when its block ends, so a
use case can raise an alarm even when its request then fails with an error (a blocked payment is a 403: the
handler's own metric flush is not where the alert should depend on). Imported on first use only.
"""
from __future__ import annotations

import os


def emit_metric(name: str, value: int = 1, **dimensions: str) -> None:
    """One Count metric in the service namespace, with optional dimensions."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "satflow"
    with single_metric(name=name, unit=MetricUnit.Count, value=value, namespace=namespace) as metric:
        for key, dim in sorted(dimensions.items()):
            metric.add_dimension(name=key, value=dim)


__all__ = ["emit_metric"]
