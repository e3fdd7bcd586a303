"""Webhook relay: the ledger table's stream (INSERTs of OUTBOX# items, filtered by the event source mapping) ->
one delivery-queue message per subscription that wants each event. Partial batch failures report the failed
record's SequenceNumber, so Lambda retries from there; a duplicated record is harmless (deliveries are
deduplicated by their records)."""
from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

from satflow import bootstrap
from satflow.app import webhooks

logger = Logger(service="satflow")
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


def record_handler(record) -> dict:
    from satflow.adapters.dynamodb.webhooks import OUTBOX_PREFIX, event_from_image  # with pynamodb: on first use

    raw = record.raw_event
    change = raw.get("dynamodb") or {}
    pk = (change.get("Keys") or {}).get("pk", {}).get("S", "")
    if raw.get("eventName") != "INSERT" or not pk.startswith(OUTBOX_PREFIX):
        return {"relayed": 0}  # the filter should not let it through; a rewrite (MODIFY) is never re-sent
    try:
        event = event_from_image(change.get("NewImage") or {})
    except ValueError:
        # Retrying cannot fix a malformed item, and a failing record would hold the whole shard back.
        logger.exception("malformed outbox item skipped", extra={"pk": pk})
        return {"relayed": 0}
    sent = webhooks.relay(bootstrap.services(), [event])
    logger.info("outbox event relayed", extra={"event_id": event.event_id, "type": event.type, "messages": sent})
    return {"relayed": sent}


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event, context):
    return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                    context=context)
