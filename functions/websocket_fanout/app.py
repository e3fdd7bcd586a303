"""WebSocket fan-out: the ledger table's stream (INSERTs of OUTBOX# items, the webhook relay's filter) -> the
account's replay feed -> ``@connections`` posts to the account's open connections that want each event.

A separate function from the webhook relay, on its own event source mapping: a slow or failing push path (many
connections, a throttled management API) never delays or retries webhook relaying, and vice versa. Partial
batch failures report the failed record's SequenceNumber; a retried record may push an event twice (clients
de-duplicate by id)."""
from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

from satflow import bootstrap
from satflow.app import realtime

logger = Logger(service="satflow")
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


def record_handler(record) -> dict:
    from satflow.adapters.dynamodb.webhooks import OUTBOX_PREFIX, event_from_image  # with pynamodb: on first use

    raw = record.raw_event
    change = raw.get("dynamodb") or {}
    pk = (change.get("Keys") or {}).get("pk", {}).get("S", "")
    if raw.get("eventName") != "INSERT" or not pk.startswith(OUTBOX_PREFIX):
        return {"sent": 0}  # the filter should not let it through
    try:
        event = event_from_image(change.get("NewImage") or {})
    except ValueError:
        logger.exception("malformed outbox item skipped", extra={"pk": pk})
        return {"sent": 0}
    result = realtime.fan_out(bootstrap.services(), event)
    logger.info("outbox event pushed", extra={"event_id": event.event_id, "type": event.type, "sent": result.sent,
                                              "gone": result.gone, "failed": result.failed})
    return {"sent": result.sent}


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event, context):
    return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                    context=context)
