"""Webhook delivery: one signed POST per message of the delivery queue (ReportBatchItemFailures).

A message whose attempt failed is reported as a batch item failure after its visibility was set to the retry
backoff, so it comes back then; the last attempt (the queue's maxReceiveCount) marks the delivery DEAD and sets
its visibility to 0, so SQS moves it to the dead-letter queue on the next receive. Messages left when the
function is about to time out are returned untouched (they come back after the queue's visibility timeout)."""
from __future__ import annotations

import json

from aws_lambda_powertools import Logger

from satflow import bootstrap
from satflow.app import webhooks

logger = Logger(service="satflow")

TIME_RESERVE_MS = 10_000  # one more POST (5 s timeout) plus its bookkeeping must fit before the deadline


def _receive_count(record: dict) -> int:
    try:
        return max(1, int((record.get("attributes") or {}).get("ApproximateReceiveCount", "1")))
    except ValueError:
        return 1


def _deliver(svc, record: dict) -> bool:
    """True when the message is done (delete it), False when it must come back."""
    try:
        message = json.loads(record["body"])
        outcome = webhooks.deliver(svc, message, _receive_count(record))
    except ValueError:
        logger.exception("malformed webhook delivery message", extra={"message_id": record.get("messageId")})
        return False  # retried, then dead-lettered: kept for an operator to look at
    except Exception:
        logger.exception("webhook delivery failed", extra={"message_id": record.get("messageId")})
        return False  # the queue's visibility timeout brings it back
    logger.info("webhook delivery", extra={"outcome": outcome.outcome, "attempt": outcome.attempt,
                                           "status_code": outcome.status_code, "error": outcome.error,
                                           "retry_in_s": outcome.retry_in_s})
    if outcome.done:
        return True
    try:
        svc.webhook_queue.delay(record["receiptHandle"], outcome.retry_in_s)
    except Exception:
        logger.exception("could not set the retry delay; the queue's visibility timeout applies")
    return False


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event, context):
    svc = bootstrap.services()
    failures = []
    for record in event.get("Records") or []:
        if context is not None and context.get_remaining_time_in_millis() < TIME_RESERVE_MS:
            failures.append({"itemIdentifier": record["messageId"]})
            continue
        if not _deliver(svc, record):
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
