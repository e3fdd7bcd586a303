"""Outbound payments under faults: a Lambda dying after LND took the payment, steps run twice, the same invoice
paid by two accounts at once, and requests that must be refused before anything is written.

Never send the same payment hash twice (design rule 6); every step is safe to run twice (rule 7)."""
from __future__ import annotations

import threading

import bolt11
import pytest
from bolt11 import Bolt11, MilliSatoshi, Tags, TagChar

from satflow.api.errors import status_for
from satflow.app import payments
from satflow.domain import errors
from satflow.domain.ids import derive_id
from satflow.domain.ledger import SystemAccount
from satflow.domain.payments import PaymentStatus, fee_reserve

from satflow_dev.simulators.lightning import PaymentScript
from satflow_dev.simulators.lightning_bolt11 import NodeKey

from .harness import LambdaContext, LambdaCrash

FUNDS = 100_000_000
AMOUNT = 50_000_000
RESERVE = fee_reserve(AMOUNT)
FEE = 2_000
LND_NODE = SystemAccount.LND_NODE.value


def _crash_once(flow, step: str, error: Exception):
    """After the real ``step`` ran (LND already called), its first invocation fails with ``error``."""
    crashed = []

    def hook(event, result):
        if not crashed:
            crashed.append(event)
            raise error

    flow.after_step[step] = hook
    return crashed


def _assert_posted(flow, principal, payment, fee=FEE):
    record = flow.payment(payment.payment_id)
    assert record.status is PaymentStatus.SUCCEEDED and record.fee_msat == fee and record.preimage
    assert flow.balance(principal.account_id) == (FUNDS - AMOUNT - fee, 0)
    assert flow.balance(LND_NODE)[0] == AMOUNT + fee
    flow.assert_invariants()


# ------------------------------------------------------------------------------------------------- crashes
def test_crash_between_send_and_record_is_finished_by_the_reconciler_without_a_second_send(flow):
    """The send step's Lambda times out after LND accepted the payment (so the outcome never reached the
    workflow): Send's Catch ends in NeedsReconciliation, still PENDING; the reconciler tracks and posts."""
    alice = flow.new_account(FUNDS)
    request = flow.sim.external_invoice(AMOUNT)
    payment_hash = flow.sim.payment_hash_of(request)
    flow.sim.script(PaymentScript.succeed(fee_msat=FEE), payment_hash)
    crashed = _crash_once(flow, "send", LambdaCrash("Sandbox.Timedout", "Task timed out after 60.00 seconds"))

    payment = flow.pay(alice, request)
    result = flow.wait(payment.payment_id)

    assert crashed and result.status == "SUCCEEDED"
    assert result.final_state == "NeedsReconciliation"
    assert flow.sim.payment_status(payment_hash) == "SUCCEEDED"  # LND paid it...
    record = flow.payment(payment.payment_id)
    assert record.status is PaymentStatus.PENDING and record.send_attempted_at  # ...we do not know yet
    assert flow.balance(alice.account_id) == (FUNDS - AMOUNT - RESERVE, AMOUNT + RESERVE)

    counts = payments.reconcile(flow.svc, min_age_s=0)
    assert counts["posted"] == 1
    _assert_posted(flow, alice, payment)
    assert flow.lnd.sends[payment_hash] == 1
    assert payments.reconcile(flow.svc, min_age_s=0)["checked"] == 0


def test_transient_crash_after_send_is_retried_and_the_rerun_tracks_instead_of_sending(flow):
    """A TransientError from Send is retried by the ASL; the re-run finds its own send claim and tracks."""
    alice = flow.new_account(FUNDS)
    request = flow.sim.external_invoice(AMOUNT)
    payment_hash = flow.sim.payment_hash_of(request)
    flow.sim.script(PaymentScript.succeed(fee_msat=FEE), payment_hash)
    _crash_once(flow, "send", errors.TransientError("DynamoDB is busy"))

    payment = flow.pay(alice, request)
    result = flow.wait(payment.payment_id)

    assert result.final_state == "Done"
    assert flow.step_calls == ["reserve", "send", "send", "post"]
    assert flow.lnd.sends[payment_hash] == 1
    assert flow.lnd.tracks == 1  # the re-run asked LND how the first send ended
    _assert_posted(flow, alice, payment)


def test_crash_after_post_is_retried_idempotently(flow):
    """Post commits, then its Lambda fails: the ASL retries Post (States.ALL), which finds it finished."""
    alice = flow.new_account(FUNDS)
    request = flow.sim.external_invoice(AMOUNT)
    flow.sim.script(PaymentScript.succeed(fee_msat=FEE), flow.sim.payment_hash_of(request))
    _crash_once(flow, "post", errors.TransientError("lost the response"))

    payment = flow.pay(alice, request)
    result = flow.wait(payment.payment_id, timeout_s=30)

    assert result.final_state == "Done"
    assert flow.step_calls.count("post") == 2
    _assert_posted(flow, alice, payment)


def test_a_workflow_that_never_started_is_sent_once_by_the_reconciler(flow):
    """Step Functions refused the start (throttled) after the reservation committed: the API call fails, its
    retry returns the reserved payment, and the reconciler, finding no send claim, makes the single send."""
    from botocore.exceptions import ClientError

    alice = flow.new_account(FUNDS)
    request = flow.sim.external_invoice(AMOUNT)
    payment_hash = flow.sim.payment_hash_of(request)
    flow.sim.script(PaymentScript.succeed(fee_msat=FEE), payment_hash)

    def throttled(payment_id):
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "StartExecution")

    flow.svc.start_payment = throttled
    with pytest.raises(ClientError):
        flow.pay(alice, request, key="stranded")
    payment = flow.pay(alice, request, key="stranded")  # the client's retry: the same payment, reserved once
    assert payment.status is PaymentStatus.PENDING and payment.send_attempted_at is None
    assert flow.balance(alice.account_id) == (FUNDS - AMOUNT - RESERVE, AMOUNT + RESERVE)

    counts = payments.reconcile(flow.svc, min_age_s=0)
    assert counts["posted"] == 1
    assert flow.lnd.sends[payment_hash] == 1
    _assert_posted(flow, alice, payment)


def test_a_late_workflow_after_the_reconciler_sent_tracks_and_never_resends(flow):
    """The reconciler sent (no claim yet) and the payment is still in flight; then the workflow runs after all:
    its Send finds the reconciler's claim and tracks."""
    flow.max_tracks = 2
    alice = flow.new_account(FUNDS)
    request = flow.sim.external_invoice(AMOUNT)
    payment_hash = flow.sim.payment_hash_of(request)
    flow.sim.script(PaymentScript.succeed(fee_msat=FEE, in_flight_tracks=1), payment_hash)
    late = []
    flow.svc.start_payment = late.append
    payment = flow.pay(alice, request)

    assert payments.reconcile(flow.svc, min_age_s=0)["still_pending"] == 1  # sent, in flight
    flow.svc.start_payment = flow.start_payment
    flow.start_payment(late[0])
    result = flow.wait(payment.payment_id)

    assert result.final_state == "Done"
    assert flow.lnd.sends[payment_hash] == 1
    _assert_posted(flow, alice, payment)


# ------------------------------------------------------------------------------------------------- steps twice
@pytest.fixture
def no_workflow(flow):
    """Payments are reserved but no execution starts: the test drives the Lambda itself."""
    flow.svc.start_payment = lambda payment_id: None
    return flow


def _step(flow, step, payment_id, **extra):
    return flow.handler({"step": step, "payment_id": payment_id, **extra}, LambdaContext())


def test_every_step_run_twice_sends_once_and_moves_money_once(no_workflow):
    flow = no_workflow
    alice = flow.new_account(FUNDS)
    request = flow.sim.external_invoice(AMOUNT)
    flow.sim.script(PaymentScript.succeed(fee_msat=FEE), flow.sim.payment_hash_of(request))
    payment = flow.pay(alice, request)
    pid = payment.payment_id

    assert _step(flow, "send", pid)["next"] == "RECONCILE"  # never sent before risk has cleared it
    assert flow.lnd.sends[payment.payment_hash] == 0
    assessed = flow.invoke_risk({"step": "assess_payment", "payment_id": pid})
    assert flow.invoke_risk({"step": "assess_payment", "payment_id": pid}) == assessed  # stored once, read back
    assert assessed["decision"] == "allow"

    assert _step(flow, "reserve", pid) == _step(flow, "reserve", pid) == {"payment_id": pid, "status": "PENDING"}
    assert flow.balance(alice.account_id) == (FUNDS - AMOUNT - RESERVE, AMOUNT + RESERVE)  # reserved once

    first = _step(flow, "send", pid)
    second = _step(flow, "send", pid)  # a retried/duplicated invocation: tracks, never sends again
    assert first["next"] == second["next"] == "POST"
    assert first["outcome"] == second["outcome"]
    assert flow.lnd.sends[payment.payment_hash] == 1

    done = _step(flow, "post", pid, outcome=first["outcome"])
    assert _step(flow, "post", pid, outcome=first["outcome"]) == done == {"payment_id": pid, "next": "DONE",
                                                                          "status": "SUCCEEDED"}
    # A late void (e.g. a stale execution) changes nothing once the payment is final.
    assert _step(flow, "void", pid, outcome={"status": "FAILED", "reason": "NO_ROUTE"})["status"] == "SUCCEEDED"
    assert _step(flow, "send", pid)["next"] == "DONE"
    assert flow.lnd.sends[payment.payment_hash] == 1
    _assert_posted(flow, alice, payment)


def test_void_twice_releases_once(no_workflow):
    flow = no_workflow
    alice = flow.new_account(FUNDS)
    request = flow.sim.external_invoice(AMOUNT)
    flow.sim.script(PaymentScript.fail("NO_ROUTE"), flow.sim.payment_hash_of(request))
    payment = flow.pay(alice, request)
    flow.invoke_risk({"step": "assess_payment", "payment_id": payment.payment_id})
    sent = _step(flow, "send", payment.payment_id)
    assert sent["next"] == "VOID"
    _step(flow, "void", payment.payment_id, outcome=sent["outcome"])
    _step(flow, "void", payment.payment_id, outcome=sent["outcome"])
    assert flow.balance(alice.account_id) == (FUNDS, 0)
    assert flow.payment(payment.payment_id).failure_reason == "NO_ROUTE"
    flow.assert_invariants()


def test_starting_the_workflow_twice_runs_it_once(flow):
    alice = flow.new_account(FUNDS)
    request = flow.sim.external_invoice(AMOUNT)
    flow.sim.script(PaymentScript.succeed(fee_msat=FEE), flow.sim.payment_hash_of(request))
    payment = flow.pay(alice, request)
    flow.start_payment(payment.payment_id)  # e.g. a retried API call: the execution name is the payment id
    assert flow.wait(payment.payment_id).final_state == "Done"
    assert flow.step_calls == ["reserve", "send", "post"]
    _assert_posted(flow, alice, payment)


def test_the_same_idempotency_key_returns_the_payment_not_a_second_one(flow):
    alice = flow.new_account(FUNDS)
    request = flow.sim.external_invoice(AMOUNT)
    flow.sim.script(PaymentScript.succeed(fee_msat=FEE), flow.sim.payment_hash_of(request))
    payment = flow.pay(alice, request, key="pay-1")
    flow.wait(payment.payment_id)
    again = flow.pay(alice, request, key="pay-1")
    assert again.payment_id == payment.payment_id and again.status is PaymentStatus.SUCCEEDED
    with pytest.raises(errors.IdempotencyKeyReused):
        flow.pay(alice, flow.sim.external_invoice(AMOUNT), key="pay-1")
    assert flow.started == [payment.payment_id]
    _assert_posted(flow, alice, payment)


# ------------------------------------------------------------------------------------------------- concurrency
def test_the_same_invoice_paid_by_two_accounts_at_once_is_paid_once(flow):
    alice, bob = flow.new_account(FUNDS), flow.new_account(FUNDS)
    request = flow.sim.external_invoice(AMOUNT)
    payment_hash = flow.sim.payment_hash_of(request)
    flow.sim.script(PaymentScript.succeed(fee_msat=FEE), payment_hash)
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def pay(name, principal):
        barrier.wait()
        try:
            outcomes[name] = flow.pay(principal, request, key="same-key")
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcomes[name] = exc

    threads = [threading.Thread(target=pay, args=(n, p)) for n, p in (("alice", alice), ("bob", bob))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    refused = [(n, o) for n, o in outcomes.items() if isinstance(o, Exception)]
    paid = [(n, o) for n, o in outcomes.items() if not isinstance(o, Exception)]
    assert len(refused) == 1 and len(paid) == 1, outcomes
    (loser, exc), (winner, payment) = refused[0], paid[0]
    assert isinstance(exc, errors.PaymentHashInFlight) and status_for(exc) == 409
    assert flow.started == [payment.payment_id]
    assert flow.wait(payment.payment_id).final_state == "Done"

    by_name = {"alice": alice, "bob": bob}
    _assert_posted(flow, by_name[winner], payment)
    assert flow.balance(by_name[loser].account_id) == (FUNDS, 0)
    loser_payment = derive_id("pay", by_name[loser].account_id, "payment", "same-key")
    assert flow.svc.lightning.get_payment(loser_payment) is None
    assert flow.lnd.sends[payment_hash] == 1

    # Once SUCCEEDED the hash stays locked: paying it again is refused, nothing is sent.
    with pytest.raises(errors.PaymentHashInFlight):
        flow.pay(by_name[loser], request)
    assert flow.lnd.sends[payment_hash] == 1
    flow.assert_invariants()


# ------------------------------------------------------------------------------------------------- refused up front
def _mainnet_invoice(now: int) -> str:
    tags = Tags()
    tags.add(TagChar.payment_hash, "11" * 32)
    tags.add(TagChar.payment_secret, "22" * 32)
    tags.add(TagChar.description, "mainnet")
    tags.add(TagChar.expire_time, 3600)
    invoice = Bolt11(currency="bc", date=now, tags=tags, amount_msat=MilliSatoshi(AMOUNT))
    return bolt11.encode(invoice, NodeKey.from_label("mainnet-payee").private_key_hex)


def _expired_invoice(flow) -> str:
    flow.clock.offset = -7_200
    try:
        return flow.sim.external_invoice(AMOUNT, expiry_s=3_600)
    finally:
        flow.clock.offset = 0


def _tampered(flow) -> str:
    request = flow.sim.external_invoice(AMOUNT)
    i = len(request) // 2
    return request[:i] + ("q" if request[i] != "q" else "p") + request[i + 1:]  # checksum/signature breaks


INVALID = {
    "expired": (_expired_invoice, {}, errors.InvoiceExpired),
    "wrong network": (lambda flow: _mainnet_invoice(int(flow.clock())), {}, errors.WrongNetworkInvoice),
    "not bolt11": (lambda flow: "lnbcrt1notaninvoice", {}, errors.InvalidPaymentRequest),
    "tampered": (_tampered, {}, errors.InvalidPaymentRequest),
    "empty": (lambda flow: "", {}, errors.InvalidPaymentRequest),
    "not a string": (lambda flow: 12345, {}, errors.InvalidPaymentRequest),
    "amount-less without amount": (lambda flow: flow.sim.external_invoice(None), {}, errors.AmountRequired),
    "amount differs from the invoice's": (lambda flow: flow.sim.external_invoice(AMOUNT),
                                          {"amount_msat": AMOUNT + 1}, errors.AmountNotAllowed),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_requests_are_typed_400s_and_write_nothing(flow, case):
    make, kwargs, expected = INVALID[case]
    alice = flow.new_account(FUNDS)
    request = make(flow)
    before = flow.item_count()

    with pytest.raises(expected) as raised:
        flow.pay(alice, request, **kwargs)

    assert type(raised.value) is expected
    assert status_for(raised.value) == 400
    assert raised.value.code  # a stable error code for the API body
    assert flow.item_count() == before
    assert flow.started == [] and not flow.lnd.sends
    assert flow.balance(alice.account_id) == (FUNDS, 0)
    flow.assert_invariants()
