"""Inbound Lightning credit handler: settled-invoice events from SQS, credited exactly once by payment hash.
Partial batch failures: only the records that failed come back (and reach the DLQ after maxReceiveCount)."""
from __future__ import annotations

import json

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

from satflow import bootstrap
from satflow.app import invoices

logger = Logger(service="satflow")
processor = BatchProcessor(event_type=EventType.SQS)

EVENT_TYPE = "invoice.settled"


def parse_event(body: str) -> tuple[str, int]:
    """(payment_hash, amount_paid_msat) of an ``invoice.settled`` message. Anything else raises, so the record
    fails and, after maxReceiveCount, rests in the DLQ: a money message is never guessed at (an amount of 1.9 or
    true must not become 1)."""
    event = json.loads(body)
    if not isinstance(event, dict) or event.get("type") != EVENT_TYPE:
        raise ValueError(f"not an {EVENT_TYPE} event")
    payment_hash, amount = event.get("payment_hash"), event.get("amount_paid_msat")
    if not isinstance(payment_hash, str):
        raise ValueError("payment_hash must be a string")
    if isinstance(amount, str) and amount.isascii() and amount.isdigit():
        amount = int(amount)  # LND's int64-as-string, should a producer pass it through
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValueError("amount_paid_msat must be an integer")
    return payment_hash, amount


def record_handler(record) -> dict:
    payment_hash, amount_paid_msat = parse_event(record.body)
    result = invoices.credit_settled_invoice(bootstrap.services(), payment_hash=payment_hash,
                                             amount_paid_msat=amount_paid_msat)
    logger.info("invoice event", extra={"payment_hash": payment_hash, "outcome": result.outcome})
    return {"outcome": result.outcome}


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event, context):
    return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                    context=context)
