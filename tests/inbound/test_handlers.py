"""functions/invoice (SQS, partial batch failures) and functions/monitor (scheduled jobs) driven by the sample
events in events/invoice and events/monitor, on moto and the simulated node."""
from __future__ import annotations

import copy
import hashlib
import json

import pytest

from satflow import bootstrap
from satflow.app import invoices
from satflow.domain.invoices import InvoiceStatus

from tests.handlers.conftest import ROOT, LambdaContext, load_handler_module

from .conftest import assert_invariants, available, credits

EVENTS = ROOT / "events"
MONITOR_JOBS = ("invoice_catchup", "invoice_expiry", "payment_reconciler", "chain_scan", "payout_batcher",
                "sanctions_refresh", "review_sweeper", "solvency_check", "ledger_invariants")

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def sample(path: str) -> dict:
    return json.loads((EVENTS / path).read_text())


@pytest.fixture
def handlers(svc):
    bootstrap.override(svc)
    yield (load_handler_module("invoice", "satflow_fn_invoice").lambda_handler,
           load_handler_module("monitor", "satflow_fn_monitor").lambda_handler)
    bootstrap.override(None)


def sqs_event(bodies: list[str]) -> dict:
    """An SQS event shaped like events/invoice/settled_batch.json, one record per body."""
    template = sample("invoice/settled_batch.json")["Records"][0]
    records = []
    for i, body in enumerate(bodies):
        record = copy.deepcopy(template)
        record.update(messageId=f"msg-{i}", receiptHandle=f"rh-{i}", body=body,
                      md5OfBody=hashlib.md5(body.encode()).hexdigest())
        records.append(record)
    return {"Records": records}


def settled_message(payment_hash: str, amount: object, settle_index: int = 1) -> str:
    return json.dumps({"type": "invoice.settled", "payment_hash": payment_hash, "amount_paid_msat": amount,
                       "settle_index": settle_index})


# --- sample events -----------------------------------------------------------------------------------------------
def test_the_invoice_sample_parses_as_an_sqs_event_of_settled_invoices():
    from aws_lambda_powertools.utilities.parser.models import SqsModel

    event = SqsModel(**sample("invoice/settled_batch.json"))
    assert len(event.Records) == 2
    for record in event.Records:
        body = json.loads(record.body)
        assert set(body) == {"type", "payment_hash", "amount_paid_msat", "settle_index"}
        assert body["type"] == "invoice.settled" and len(body["payment_hash"]) == 64
        assert type(body["amount_paid_msat"]) is int and type(body["settle_index"]) is int
        assert record.md5OfBody == hashlib.md5(record.body.encode()).hexdigest()


def test_the_monitor_samples_are_the_schedule_inputs_of_the_template():
    from tests.contracts.conftest import load_template

    fn = load_template()["Resources"]["MonitorFunction"]["Properties"]
    inputs = {json.loads(e["Properties"]["Input"])["job"] for e in fn["Events"].values() if e["Type"] == "Schedule"}
    samples = {path.stem: json.loads(path.read_text()) for path in (EVENTS / "monitor").glob("*.json")}
    assert set(samples) == set(MONITOR_JOBS) == inputs
    for name, event in samples.items():
        assert event == {"job": name}


def test_the_sample_batch_through_the_handler_ignores_hashes_that_are_not_ours(handlers, svc):
    invoice_handler, _ = handlers
    assert invoice_handler(sample("invoice/settled_batch.json"), LambdaContext()) == {"batchItemFailures": []}
    assert_invariants(svc)


# --- the credit handler ------------------------------------------------------------------------------------------
POISON = [
    "{not json",
    '"just a string"',
    json.dumps({"type": "invoice.settled", "payment_hash": "ab" * 32, "amount_paid_msat": 1.9}),
    json.dumps({"type": "invoice.settled", "payment_hash": "ab" * 32, "amount_paid_msat": True}),
    json.dumps({"type": "invoice.settled", "payment_hash": "ab" * 32, "amount_paid_msat": "12abc"}),
    json.dumps({"type": "invoice.settled", "payment_hash": "ab" * 32, "amount_paid_msat": None}),
    json.dumps({"type": "invoice.settled", "payment_hash": 42, "amount_paid_msat": 1000}),
    json.dumps({"type": "invoice.settled", "amount_paid_msat": 1000}),
    json.dumps({"type": "payment.sent", "payment_hash": "ab" * 32, "amount_paid_msat": 1000}),
]


@pytest.mark.parametrize("body", POISON)
def test_the_credit_handler_refuses_messages_it_cannot_read_exactly(body):
    module = load_handler_module("invoice", "satflow_fn_invoice")
    with pytest.raises(ValueError):
        module.parse_event(body)


@pytest.mark.parametrize("poison", [POISON[0], POISON[2], json.dumps({"type": "invoice.settled",
                                                                      "payment_hash": "xyz",
                                                                      "amount_paid_msat": 1000})],
                         ids=["bad-json", "float-amount", "bad-hash"])
def test_a_batch_reports_only_the_poison_record(handlers, svc, sim, users, poison):
    invoice_handler, _ = handlers
    alice, _ = users
    invoice = invoices.create_invoice(svc, alice, amount_msat=0)
    sim.external_pay(invoice.payment_request, amount_msat=12_345)
    good = settled_message(invoice.payment_hash, 12_345)
    event = sqs_event([good, good, poison])  # one good, one duplicate, one poison

    assert invoice_handler(event, LambdaContext()) == {"batchItemFailures": [{"itemIdentifier": "msg-2"}]}
    assert available(svc, alice.account_id) == 12_345 and len(credits(svc, alice.account_id)) == 1
    assert svc.lightning.get_invoice(invoice.payment_hash).status is InvoiceStatus.SETTLED

    # SQS redelivers (at least once): the same batch again credits nothing more
    assert invoice_handler(event, LambdaContext()) == {"batchItemFailures": [{"itemIdentifier": "msg-2"}]}
    assert available(svc, alice.account_id) == 12_345 and len(credits(svc, alice.account_id)) == 1
    assert_invariants(svc)


def test_an_int64_string_amount_is_accepted(handlers, svc, sim, users):
    invoice_handler, _ = handlers
    alice, _ = users
    invoice = invoices.create_invoice(svc, alice, amount_msat=2_000)
    sim.external_pay(invoice.payment_request)
    event = sqs_event([settled_message(invoice.payment_hash, "2000")])
    assert invoice_handler(event, LambdaContext()) == {"batchItemFailures": []}
    assert available(svc, alice.account_id) == 2_000


def test_poller_to_queue_to_credit_handler_through_moto_sqs(handlers, svc, sim, users, boto_session):
    """The real path: catch-up publishes to an SQS queue, the handler gets what SQS delivers."""
    invoice_handler, monitor_handler = handlers
    alice, bob = users
    sqs = boto_session.client("sqs")
    queue_url = sqs.create_queue(QueueName="satflow-invoice-events")["QueueUrl"]
    svc.publish_invoice_event = lambda e: sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(e))
    a = invoices.create_invoice(svc, alice, amount_msat=0)
    b = invoices.create_invoice(svc, bob, amount_msat=3_000)
    sim.external_pay(a.payment_request, amount_msat=999)
    sim.external_pay(b.payment_request)

    for _ in range(2):  # the poller runs twice before the handler: duplicates on the queue
        monitor_handler(sample("monitor/invoice_catchup.json"), LambdaContext())
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                   AttributeNames=["All"])["Messages"]
    event = {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": m["Attributes"], "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:satflow-invoice-events",
        "awsRegion": "us-east-1"} for m in messages]}
    assert len(event["Records"]) == 2  # the second poll found nothing new
    assert invoice_handler(event, LambdaContext()) == {"batchItemFailures": []}
    assert invoice_handler(event, LambdaContext()) == {"batchItemFailures": []}
    assert (available(svc, alice.account_id), available(svc, bob.account_id)) == (999, 3_000)
    assert_invariants(svc)


# --- the monitor -------------------------------------------------------------------------------------------------
def test_invoice_catchup_job(handlers, svc, sim, users, published):
    _, monitor_handler = handlers
    alice, _ = users
    invoice = invoices.create_invoice(svc, alice, amount_msat=1_000)
    sim.external_pay(invoice.payment_request)
    event = sample("monitor/invoice_catchup.json")
    assert monitor_handler(event, LambdaContext()) == {"job": "invoice_catchup", "published": 1}
    assert monitor_handler(event, LambdaContext()) == {"job": "invoice_catchup", "published": 0}
    assert [e["payment_hash"] for e in published] == [invoice.payment_hash]


def test_invoice_expiry_job(handlers, svc, users, clock):
    _, monitor_handler = handlers
    alice, _ = users
    invoice = invoices.create_invoice(svc, alice, amount_msat=1_000, expiry_s=60)
    clock.advance(61)
    event = sample("monitor/invoice_expiry.json")
    assert monitor_handler(event, LambdaContext()) == {"job": "invoice_expiry", "expired": 1}
    assert monitor_handler(event, LambdaContext()) == {"job": "invoice_expiry", "expired": 0}
    assert svc.lightning.get_invoice(invoice.payment_hash).status is InvoiceStatus.EXPIRED


def test_payment_reconciler_job_with_nothing_pending(handlers):
    _, monitor_handler = handlers
    result = monitor_handler(sample("monitor/payment_reconciler.json"), LambdaContext())
    assert result == {"job": "payment_reconciler", "checked": 0, "posted": 0, "voided": 0, "still_pending": 0,
                      "past_cltv": 0, "errors": 0, "internal_settled": 0, "internal_failed": 0}


@pytest.mark.parametrize("event", [{"job": "nope"}, {}, {"job": None}, ["invoice_catchup"]])
def test_unknown_job_is_an_error(handlers, event):
    _, monitor_handler = handlers
    with pytest.raises(ValueError, match="unknown monitor job"):
        monitor_handler(event, LambdaContext())
