"""The Lightning simulator: real signed regtest invoices, and LND's behaviour end to end through our adapter."""
from __future__ import annotations

import hashlib
import json
import threading
import time

import bolt11
import pytest

from satflow.adapters.lnd import LndRestClient
from satflow.domain.lightning import (
    FailureReason,
    InvoiceState,
    LightningInvoiceAlreadySettled,
    LightningInvoiceNotFound,
    LightningNodeError,
    PaymentAlreadyPaid,
    PaymentFailed,
    PaymentInFlight,
    PaymentNotFound,
    PaymentRejected,
    PaymentSucceeded,
    PaymentUnknown,
    RejectionReason,
    bolt11_network,
)
from satflow_dev.simulators.lightning import (
    SIM_BASE_URL,
    ExternalPaymentError,
    LightningSimulator,
    PaymentScript,
    SimulatedReadTimeout,
)
from satflow_dev.simulators.lightning_bolt11 import NodeKey, encode_invoice

START = 1_731_400_000
FEE_LIMIT = 10_000


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock) -> LightningSimulator:
    return LightningSimulator(clock=clock)


@pytest.fixture
def lnd(sim) -> LndRestClient:
    return LndRestClient.from_secret(sim.secret(), transport=sim.transport())


def sha256_hex(preimage_hex: str) -> str:
    return hashlib.sha256(bytes.fromhex(preimage_hex)).hexdigest()


# --- invoices are real BOLT11 ------------------------------------------------------------------------------------
def test_our_invoices_decode_with_bolt11(sim, lnd):
    result = lnd.add_invoice(1_234_000, memo="coffee", expiry_s=600)
    decoded = bolt11.decode(result.payment_request)  # verifies the signature by recovering the payee key
    assert decoded.payee == sim.our_node.pubkey_hex
    assert decoded.currency == "bcrt" and decoded.is_regtest() and bolt11_network(result.payment_request) == "regtest"
    assert decoded.amount_msat == 1_234_000 and decoded.payment_hash == result.payment_hash_hex
    assert (decoded.description, decoded.expiry, decoded.date) == ("coffee", 600, START)
    assert decoded.payment_secret and decoded.features.readable["payment_secret"] == "required"


def test_amountless_and_description_hash_invoices(sim, lnd):
    description_hash = hashlib.sha256(b"lnurl metadata").digest()
    result = lnd.add_invoice(None, description_hash=description_hash)
    decoded = bolt11.decode(result.payment_request)
    assert decoded.amount_msat is None and decoded.description_hash == description_hash.hex()
    assert lnd.lookup_invoice(result.payment_hash_hex).expiry == 3600


def test_external_invoices_are_signed_by_the_external_node(sim):
    decoded = bolt11.decode(sim.external_invoice(21_000, "a coffee elsewhere"))
    assert decoded.payee == sim.external_node.pubkey_hex and decoded.amount_msat == 21_000


def test_node_info(sim, lnd):
    info = lnd.get_info()
    assert (info.identity_pubkey, info.network) == (sim.our_node.pubkey_hex, "regtest")


def test_decode_pay_req(sim, lnd):
    payment_request = sim.external_invoice(55_000, "decode me")
    decoded = lnd.decode_pay_req(payment_request)
    assert decoded.destination == sim.external_node.pubkey_hex and decoded.amount_msat == 55_000
    assert decoded.payment_hash == sim.payment_hash_of(payment_request) and decoded.description == "decode me"


def test_wrong_macaroon_is_refused(sim):
    stranger = LndRestClient(SIM_BASE_URL, "ab" * 32, transport=sim.transport())
    with pytest.raises(LightningNodeError):
        stranger.get_info()


# --- receiving ---------------------------------------------------------------------------------------------------
def test_add_invoice_external_pay_lookup_settled(sim, lnd, clock):
    result = lnd.add_invoice(250_000, memo="deposit")
    assert lnd.lookup_invoice(result.payment_hash_hex).state is InvoiceState.OPEN
    balance = sim.our_balance_msat
    clock.now += 30
    preimage = sim.external_pay(result.payment_request)
    invoice = lnd.lookup_invoice(result.payment_hash_hex)
    assert sha256_hex(preimage) == result.payment_hash_hex
    assert (invoice.state, invoice.settle_index, invoice.amt_paid_msat) == (InvoiceState.SETTLED, 1, 250_000)
    assert invoice.settle_date == START + 30 and invoice.add_index == result.add_index == 1
    assert sim.our_balance_msat == balance + 250_000


def test_subscribe_replays_settlements_after_the_stored_settle_index(sim, lnd):
    first, second = lnd.add_invoice(1_000), lnd.add_invoice(2_000)
    sim.external_pay(first.payment_request)
    sim.external_pay(second.payment_request)
    events = list(lnd.subscribe_invoices(settle_index=1))
    assert [(e.payment_hash, e.settle_index, e.state) for e in events] == [
        (second.payment_hash_hex, 2, InvoiceState.SETTLED)
    ]
    assert [e.add_index for e in lnd.subscribe_invoices(add_index=1)] == [2]
    assert list(lnd.subscribe_invoices()) == []  # zero indexes: no backlog, as in LND


def test_subscribe_sees_a_live_settlement(clock):
    sim = LightningSimulator(clock=clock, stream_idle_s=2.0)
    lnd = LndRestClient.from_secret(sim.secret(), transport=sim.transport())
    result = lnd.add_invoice(9_000, memo="live")
    received = []

    def listen() -> None:
        for invoice in lnd.subscribe_invoices(settle_index=0):
            received.append(invoice)
            return  # closing the stream unsubscribes

    listener = threading.Thread(target=listen)
    listener.start()
    deadline = time.monotonic() + 2
    while sim.invoice_subscribers == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    sim.external_pay(result.payment_request)
    listener.join(timeout=3)
    assert [(i.payment_hash, i.settle_index, i.state) for i in received] == [
        (result.payment_hash_hex, 1, InvoiceState.SETTLED)
    ]
    assert sim.invoice_subscribers == 0


def test_settled_since_through_the_simulator(sim, lnd):
    invoices = [lnd.add_invoice(1_000 * n) for n in range(1, 5)]
    for invoice in (invoices[2], invoices[0], invoices[3]):
        sim.external_pay(invoice.payment_request)
    settled = lnd.settled_since(1, page_size=2)
    assert [(i.add_index, i.settle_index) for i in settled] == [(1, 2), (4, 3)]
    assert [i.add_index for i in lnd.list_invoices(0, 2).invoices] == [1, 2]


def test_amountless_invoice_takes_the_payers_amount(sim, lnd):
    result = lnd.add_invoice(None)
    with pytest.raises(ExternalPaymentError):
        sim.external_pay(result.payment_request)
    sim.external_pay(result.payment_request, amount_msat=777_000)
    assert lnd.lookup_invoice(result.payment_hash_hex).amt_paid_msat == 777_000


@pytest.mark.parametrize("amount_msat", [999, 2_001])
def test_external_pay_refuses_wrong_amounts(sim, lnd, amount_msat):
    with pytest.raises(ExternalPaymentError):
        sim.external_pay(lnd.add_invoice(1_000).payment_request, amount_msat=amount_msat)


def test_cancel_invoice(sim, lnd):
    result = lnd.add_invoice(5_000)
    lnd.cancel_invoice(result.payment_hash_hex)
    lnd.cancel_invoice(result.payment_hash_hex)  # idempotent, as in LND
    assert lnd.lookup_invoice(result.payment_hash_hex).state is InvoiceState.CANCELED
    with pytest.raises(ExternalPaymentError):
        sim.external_pay(result.payment_request)
    paid = lnd.add_invoice(5_000)
    sim.external_pay(paid.payment_request)
    with pytest.raises(LightningInvoiceAlreadySettled):
        lnd.cancel_invoice(paid.payment_hash_hex)
    with pytest.raises(LightningInvoiceNotFound):
        lnd.cancel_invoice("ab" * 32)
    with pytest.raises(LightningInvoiceNotFound):
        lnd.lookup_invoice("ab" * 32)


def test_invoices_expire_by_the_injected_clock(sim, lnd, clock):
    result = lnd.add_invoice(5_000, expiry_s=60)
    clock.now += 60
    assert lnd.lookup_invoice(result.payment_hash_hex).state is InvoiceState.CANCELED
    with pytest.raises(ExternalPaymentError):
        sim.external_pay(result.payment_request)


# --- paying ------------------------------------------------------------------------------------------------------
def test_send_success_with_the_network_fee(sim, lnd):
    payment_request = sim.external_invoice(50_000_000, "bill")
    payment_hash = sim.payment_hash_of(payment_request)
    balance = sim.our_balance_msat
    outcome = lnd.send_payment(payment_request, fee_limit_msat=FEE_LIMIT)
    assert outcome == PaymentSucceeded(preimage_hex=outcome.preimage_hex, fee_msat=1_050, amount_msat=50_000_000)
    assert sha256_hex(outcome.preimage_hex) == payment_hash
    assert sim.our_balance_msat == balance - 50_001_050
    assert sim.invoice_state(payment_hash) == "SETTLED"
    assert lnd.track_payment(payment_hash) == outcome


def test_send_success_with_a_scripted_fee(sim, lnd):
    payment_request = sim.external_invoice(10_000, "bill")
    sim.script(PaymentScript.succeed(fee_msat=2_500), sim.payment_hash_of(payment_request))
    outcome = lnd.send_payment(payment_request, fee_limit_msat=FEE_LIMIT)
    assert isinstance(outcome, PaymentSucceeded) and outcome.fee_msat == 2_500 and outcome.total_msat == 12_500


@pytest.mark.parametrize("fee_limit_msat", [0, 1_049])
def test_fee_limit_is_enforced(sim, lnd, fee_limit_msat):
    payment_request = sim.external_invoice(50_000_000, "bill")
    balance = sim.our_balance_msat
    outcome = lnd.send_payment(payment_request, fee_limit_msat=fee_limit_msat)
    assert outcome == PaymentFailed(FailureReason.NO_ROUTE, "FAILURE_REASON_NO_ROUTE")
    assert sim.our_balance_msat == balance and sim.invoice_state(sim.payment_hash_of(payment_request)) == "OPEN"


@pytest.mark.parametrize("reason", list(FailureReason))
def test_scripted_failure_with_each_reason(sim, lnd, reason):
    sim.script(PaymentScript.fail(reason.value))
    balance = sim.our_balance_msat
    outcome = lnd.send_payment(sim.external_invoice(20_000, "bill"), fee_limit_msat=FEE_LIMIT)
    assert isinstance(outcome, PaymentFailed) and outcome.reason is reason
    assert sim.our_balance_msat == balance  # the reservation is released


def test_insufficient_balance(clock):
    sim = LightningSimulator(clock=clock, our_balance_msat=10_000)
    lnd = LndRestClient.from_secret(sim.secret(), transport=sim.transport())
    outcome = lnd.send_payment(sim.external_invoice(9_500, "too much with the fee"), fee_limit_msat=FEE_LIMIT)
    assert isinstance(outcome, PaymentFailed) and outcome.reason is FailureReason.INSUFFICIENT_BALANCE


def test_unknown_destination_has_no_route(sim, lnd, clock):
    stranger = NodeKey.from_label("stranger")
    payment_request = encode_invoice(
        key=stranger, payment_hash_hex="11" * 32, payment_secret_hex="22" * 32, amount_msat=1_000,
        timestamp=int(clock()), expiry_s=3600, memo="nobody knows me",
    )
    outcome = lnd.send_payment(payment_request, fee_limit_msat=FEE_LIMIT)
    assert isinstance(outcome, PaymentFailed) and outcome.reason is FailureReason.NO_ROUTE


def test_held_payment_stays_in_flight_until_resolved(sim, lnd):
    payment_request = sim.external_invoice(30_000, "slow")
    payment_hash = sim.payment_hash_of(payment_request)
    sim.script(PaymentScript.succeed(hold=True), payment_hash)
    balance = sim.our_balance_msat
    assert isinstance(lnd.send_payment(payment_request, fee_limit_msat=FEE_LIMIT), PaymentInFlight)
    for _ in range(3):
        assert isinstance(lnd.track_payment(payment_hash), PaymentInFlight)
    assert sim.our_balance_msat == balance - 31_000  # reserved while in flight
    sim.resolve(payment_hash, fee_msat=700)
    outcome = lnd.track_payment(payment_hash)
    assert isinstance(outcome, PaymentSucceeded) and outcome.fee_msat == 700
    assert sim.our_balance_msat == balance - 30_700


def test_in_flight_for_n_tracks_then_fails(sim, lnd):
    payment_request = sim.external_invoice(30_000, "slow")
    payment_hash = sim.payment_hash_of(payment_request)
    sim.script(PaymentScript.fail("TIMEOUT", in_flight_tracks=2), payment_hash)
    assert isinstance(lnd.send_payment(payment_request, fee_limit_msat=FEE_LIMIT), PaymentInFlight)
    outcomes = [lnd.track_payment(payment_hash) for _ in range(3)]
    assert [type(o) for o in outcomes] == [PaymentInFlight, PaymentInFlight, PaymentFailed]
    assert outcomes[-1].reason is FailureReason.TIMEOUT


def test_a_waiting_track_sees_a_live_resolution(clock):
    sim = LightningSimulator(clock=clock, stream_idle_s=2.0)
    lnd = LndRestClient.from_secret(sim.secret(), transport=sim.transport())
    payment_request = sim.external_invoice(30_000, "slow")
    payment_hash = sim.payment_hash_of(payment_request)
    sim.script(PaymentScript.succeed(hold=True), payment_hash)
    assert isinstance(lnd.send_payment(payment_request, fee_limit_msat=FEE_LIMIT, wait_s=0), PaymentInFlight)
    resolver = threading.Timer(0.05, sim.resolve, args=(payment_hash,))
    resolver.start()
    outcome = lnd.track_payment(payment_hash, wait_s=1.5)
    resolver.join()
    assert isinstance(outcome, PaymentSucceeded)


def test_timeout_after_the_node_took_it_is_unknown_and_tracks_to_the_truth(sim, lnd):
    payment_request = sim.external_invoice(40_000, "flaky link")
    payment_hash = sim.payment_hash_of(payment_request)
    sim.script(PaymentScript.succeed(send_timeout="after_node"), payment_hash)
    outcome = lnd.send_payment(payment_request, fee_limit_msat=FEE_LIMIT)
    assert isinstance(outcome, PaymentUnknown) and not isinstance(outcome, PaymentFailed)
    assert isinstance(lnd.track_payment(payment_hash), PaymentSucceeded)
    assert isinstance(lnd.send_payment(payment_request, fee_limit_msat=FEE_LIMIT), PaymentAlreadyPaid)


def test_timeout_before_the_node_is_unknown_and_not_initiated(sim, lnd):
    payment_request = sim.external_invoice(40_000, "never arrived")
    payment_hash = sim.payment_hash_of(payment_request)
    sim.script(PaymentScript.succeed(send_timeout="before_node"), payment_hash)
    assert isinstance(lnd.send_payment(payment_request, fee_limit_msat=FEE_LIMIT), PaymentUnknown)
    assert isinstance(lnd.track_payment(payment_hash), PaymentNotFound)


def test_track_of_an_unknown_hash_is_not_initiated(lnd):
    outcome = lnd.track_payment("ab" * 32)
    assert outcome == PaymentNotFound("payment isn't initiated")


def test_second_send_of_a_hash(sim, lnd):
    paid = sim.external_invoice(1_000, "once")
    lnd.send_payment(paid, fee_limit_msat=FEE_LIMIT)
    assert lnd.send_payment(paid, fee_limit_msat=FEE_LIMIT) == PaymentAlreadyPaid("invoice is already paid")

    held = sim.external_invoice(1_000, "held")
    sim.script(PaymentScript.succeed(hold=True), sim.payment_hash_of(held))
    lnd.send_payment(held, fee_limit_msat=FEE_LIMIT)
    assert lnd.send_payment(held, fee_limit_msat=FEE_LIMIT) == PaymentInFlight("payment is in transition")


def test_a_failed_hash_may_be_sent_again_as_in_lnd(sim, lnd):
    payment_request = sim.external_invoice(1_000, "retry")
    payment_hash = sim.payment_hash_of(payment_request)
    sim.script(PaymentScript.fail("NO_ROUTE"), payment_hash)
    assert isinstance(lnd.send_payment(payment_request, fee_limit_msat=FEE_LIMIT), PaymentFailed)
    sim.script(PaymentScript.succeed(), payment_hash)
    assert isinstance(lnd.send_payment(payment_request, fee_limit_msat=FEE_LIMIT), PaymentSucceeded)


def test_paying_our_own_invoice_is_refused_like_lnd(sim, lnd):
    own = lnd.add_invoice(3_000, memo="mine")
    outcome = lnd.send_payment(own.payment_request, fee_limit_msat=FEE_LIMIT)
    assert outcome == PaymentRejected(RejectionReason.SELF_PAYMENT, "self-payments not allowed")
    assert lnd.lookup_invoice(own.payment_hash_hex).state is InvoiceState.OPEN
    assert isinstance(lnd.track_payment(own.payment_hash_hex), PaymentNotFound)


def test_expired_external_invoice_is_rejected_before_any_payment(sim, lnd, clock):
    payment_request = sim.external_invoice(1_000, "stale", expiry_s=60)
    clock.now += 61
    outcome = lnd.send_payment(payment_request, fee_limit_msat=FEE_LIMIT)
    assert isinstance(outcome, PaymentRejected) and outcome.reason is RejectionReason.INVOICE_EXPIRED
    assert isinstance(lnd.track_payment(sim.payment_hash_of(payment_request)), PaymentNotFound)


def test_amounts_for_amountless_and_fixed_invoices(sim, lnd):
    amountless = sim.external_invoice(None, "any amount")
    assert lnd.send_payment(amountless, fee_limit_msat=FEE_LIMIT).reason is RejectionReason.AMOUNT_MISMATCH
    outcome = lnd.send_payment(amountless, fee_limit_msat=FEE_LIMIT, amount_msat=4_200)
    assert isinstance(outcome, PaymentSucceeded) and outcome.amount_msat == 4_200
    fixed = sim.external_invoice(1_000, "fixed")
    outcome = lnd.send_payment(fixed, fee_limit_msat=FEE_LIMIT, amount_msat=1_000)
    assert isinstance(outcome, PaymentRejected) and outcome.reason is RejectionReason.AMOUNT_MISMATCH


# --- the plain handle() entry point -------------------------------------------------------------------------------
def test_handle_serves_plain_requests(sim):
    status, headers, body = sim.handle("GET", "/v1/getinfo", {}, b"")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["chains"] == [{"chain": "bitcoin", "network": "regtest"}]
    status, _, body = sim.handle("GET", "/v1/nope", "", b"")
    assert status == 404 and json.loads(body)["code"] == 5
    status, _, body = sim.handle("GET", "/v1/getinfo", None, b"", headers={"grpc-metadata-macaroon": "00"})
    assert status == 500 and "verification failed" in json.loads(body)["message"]


def test_handle_streams_lines_and_stalls(sim):
    payment_request = sim.external_invoice(1_000, "stream")
    sim.script(PaymentScript.succeed(hold=True))
    body = json.dumps({"payment_request": payment_request, "fee_limit_msat": "5000", "timeout_seconds": 60}).encode()
    status, _, lines = sim.handle("POST", "/v2/router/send", None, body)
    assert status == 200
    first = json.loads(next(lines))["result"]
    assert (first["status"], first["htlcs"]) == ("IN_FLIGHT", [])  # lnd's default: no INITIATED on the wire
    second = json.loads(next(lines))["result"]
    assert (second["status"], len(second["htlcs"])) == ("IN_FLIGHT", 1)
    with pytest.raises(SimulatedReadTimeout):
        next(lines)
    status, _, body = sim.handle("GET", f"/v2/router/track/{'q' * 43}=", "no_inflight_updates=false", b"")
    assert status == 404 and json.loads(body) == {
        "error": {"code": 5, "message": "payment isn't initiated", "details": []}
    }


def test_concurrent_external_payments_get_unique_settle_indexes(sim, lnd):
    invoices = [lnd.add_invoice(1_000 + n) for n in range(12)]
    balance = sim.our_balance_msat
    threads = [threading.Thread(target=sim.external_pay, args=(i.payment_request,)) for i in invoices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    settled = lnd.settled_since(0)
    assert sorted(i.settle_index for i in settled) == list(range(1, 13))
    assert sim.our_balance_msat == balance + sum(1_000 + n for n in range(12))
