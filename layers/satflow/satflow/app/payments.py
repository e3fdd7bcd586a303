"""Use cases of outbound Lightning payments: the API call, the workflow's steps and the reconciler.

Workflow (statemachines/payment.asl.json): Risk (app/risk.py; review parks on a task token with the payment
IN_REVIEW, block refuses) -> Reserve -> Send -> Choice(next) -> Post | Void | Wait -> Track -> ... bounded, then
NeedsReconciliation (still PENDING; the reconciler finishes it). Each step takes and returns small JSON dicts so
Step Functions can carry them; every step is safe to run twice. Nothing is sent that the risk assessment did not
allow or a review approve (``step_send`` checks, and the send claim is conditional on PENDING).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from satflow.domain import errors
from satflow.domain.accounts import Principal, Scope
from satflow.domain.ids import derive_id, request_fingerprint
from satflow.domain.invoices import InvoiceStatus
from satflow.domain.ledger import post_pending, void_pending
from satflow.domain.lightning import PaymentOutcome, PaymentRejected, outcome_from_dict
from satflow.domain.payments import (
    Next, Payment, PaymentStatus, decide, decode_payment_request, failure_reason, fee_reserve, payable_amount,
)
from satflow.domain.templates import internal_invoice_payment, payment_reserved, routing_fee_overrun

from . import risk, send_reads, verdicts
from .accounts import require_scope
from .limits import admit_with_retry, precheck, release_with_retry
from .ports import Services
from .sanctions import screen_node
from .solvency import require_sends_open
from .transfers import validate_idempotency_key

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 60  # LND's pathfinding budget for one payment
SEND_WAIT_S = 20.0  # how long the Send step waits for a final status (well inside the Lambda timeout)
RECONCILER_SEND_WAIT_S = 3.0  # the reconciler may send many stranded payments in one 120 s run; it tracks later


# ---------------------------------------------------------------------------------------------- the API call
def create_payment(svc: Services, principal: Principal, idempotency_key: str | None, payment_request: object,
                   amount_msat: object = None, max_fee_msat: object = None) -> Payment:
    """Reads: the payment under this key, the invoice of its hash (ours? then it settles internally) and the
    account with its limit window, in one round trip; then the reserve, one transaction. The request is decoded
    first, its error raised only once no earlier payment answers the key (a retry after the invoice expired still
    returns the payment)."""
    account_id = require_scope(principal, Scope.SEND)
    key = validate_idempotency_key(idempotency_key)
    payment_id = derive_id("pay", account_id, "payment", key)
    fingerprint = request_fingerprint(payment_request, amount_msat, max_fee_msat)
    try:
        request, invalid = decode_payment_request(payment_request, svc.network, svc.unix_clock()), None
    except errors.SatflowError as exc:
        request, invalid = None, exc
    reads = None
    if request is None:
        existing, invoice = svc.lightning.get_payment(payment_id), None
    else:
        reads = send_reads.load(svc, account_id, scored=False, extra=[
            svc.lightning.payment_read(payment_id), svc.lightning.invoice_read(request.payment_hash)])
        existing, invoice = reads.extra
    if existing is not None:  # a retry: the same request returns the payment as it is now
        if existing.request_hash != fingerprint:
            raise errors.IdempotencyKeyReused("this Idempotency-Key was already used with a different request")
        if existing.internal and existing.status is PaymentStatus.PENDING:
            return _resume_internal(svc, existing, invoice)  # its first run did not finish: finish it now
        return existing
    if invalid is not None:
        raise invalid
    assert request is not None
    # Before anything is reserved or asked of the node: a listed payee is refused (403) and audited.
    screen_node(svc, request.destination, actor=account_id, context=f"payment:{payment_id}")
    amount = payable_amount(request, amount_msat)
    now = svc.clock()
    payment = Payment(
        payment_id=payment_id, account_id=account_id, payment_hash=request.payment_hash,
        payment_request=request.payment_request, destination=request.destination, amount_msat=amount,
        fee_reserve_msat=fee_reserve(amount, max_fee_msat), request_hash=fingerprint,
        invoice_expires_at=request.expires_at, internal=False, status=PaymentStatus.PENDING,
        amountless=request.amount_msat is None, created_at=now,
        updated_at=now,
    )
    if invoice is not None:
        return _pay_internal(svc, payment, invoice)
    require_sends_open(svc)  # the solvency breaker: 503 SENDS_PAUSED before anything is reserved (internal pays above)
    reserve(svc, payment, reads)  # synchronous: insufficient funds or a hash in use is a 4xx now, not a FAILED later
    svc.start_payment(payment_id)
    return payment


def _pay_internal(svc: Services, payment: Payment, invoice) -> Payment:
    """Another satflow account's invoice: settled on the ledger at once, free. Three writes, in this order:

    1. the intent, one transaction: the payment PENDING (record, hash lock, pending index), the invoice OPEN ->
       ACCEPTED claimed by it, the risk assessment — before anything is asked of the node;
    2. the node cancels the invoice, so nobody can pay it outside afterwards (if the node says it was already paid,
       the external payment wins and this one fails);
    3. the ledger transaction: the money, the invoice SETTLED, the payment SUCCEEDED, all at once.

    An invocation that dies anywhere after 1 leaves a PENDING payment that the payer's retry (same Idempotency-Key)
    or the payment reconciler finishes through the same ``_settle_internal``: an invoice is never left claimed, nor
    OPEN here while the node has cancelled it."""
    if invoice.account_id == payment.account_id:
        raise errors.SelfPayment("you cannot pay your own invoice")
    if invoice.status is not InvoiceStatus.OPEN or invoice.expires_at_unix <= svc.unix_clock():
        status = "being paid" if invoice.status is InvoiceStatus.ACCEPTED else invoice.status.value.lower()
        raise errors.InvoiceNotPayable(f"the invoice is {status}")
    if invoice.amount_msat and payment.amount_msat != invoice.amount_msat:
        raise errors.AmountNotAllowed("the amount differs from the invoice's")
    # Pre-checks only (the ledger transaction's conditions are the real guards): they keep a payment the ledger
    # would refuse from claiming the invoice and cancelling it on the node.
    _precheck_internal(svc, payment, invoice.account_id)
    assessed = _assess_internal(svc, payment, invoice.account_id)  # before the intent: refusals undo nothing
    intent = replace(payment, internal=True, status=PaymentStatus.PENDING, fee_reserve_msat=0)
    svc.lightning.run(svc.lightning.claim_invoice_items(invoice, intent.payment_id)
                      + svc.lightning.new_payment_items(intent) + risk.allow_items(svc, assessed))
    return _settle_internal(svc, intent, invoice)


def _resume_internal(svc: Services, payment: Payment, invoice=None) -> Payment:
    """A PENDING internal payment whose invocation did not finish it (it died, or its ledger write kept failing):
    the payer's retry and the reconciler resume it here, with the steps and rules of the first run."""
    invoice = invoice if invoice is not None else svc.lightning.get_invoice(payment.payment_hash)
    if invoice is None:  # the intent and the invoice's claim were one transaction: this cannot be
        raise errors.InvoiceNotFound(f"invoice {payment.payment_hash} of internal payment {payment.payment_id}")
    return _settle_internal(svc, payment, invoice)


def _settle_internal(svc: Services, payment: Payment, invoice) -> Payment:
    """Steps 2 and 3 of an internal payment whose intent is written (``payment`` PENDING, the invoice ACCEPTED by
    it); each is safe to run again, by the first run, a retry or the reconciler, even concurrently:

    * the node cancel is idempotent; "already settled" means an outside payer paid first: this payment FAILS
      (INVOICE_NOT_PAYABLE) and the invoice is left to the inbound credit, which settles it from ACCEPTED;
    * the ledger transaction's id is the payment id (a replay is success); it is conditional on the payment being
      PENDING and the invoice ACCEPTED by it. Refused (funds, limits, frozen payer, closed payee): the node has
      cancelled the invoice and nothing moved, so the payment FAILS and the invoice becomes CANCELED (one
      transaction); the refusal is raised. Still failing transiently (unknown): the payment stays PENDING and the
      error is raised (503): unknown is not failed; a retry or the reconciler resumes it.
    Whoever finishes second finds the payment no longer PENDING and returns it as the first one left it."""
    try:
        svc.lnd().cancel_invoice(payment.payment_hash)
    except errors.LightningInvoiceAlreadySettled as exc:
        refused = errors.InvoiceNotPayable("the invoice was just paid from outside")
        return _fail_internal(svc, payment, invoice, refused, cancel_invoice=False, cause=exc)
    now = svc.clock()
    done = replace(payment, status=PaymentStatus.SUCCEEDED, fee_msat=0, updated_at=now)
    # created_at (the intent's time), not now: a resumed run must build the identical transfer, or it is no replay
    transfer = internal_invoice_payment(payment_id=payment.payment_id, payer=payment.account_id,
                                        payee=invoice.account_id, amount_msat=payment.amount_msat,
                                        payment_hash=payment.payment_hash, created_at=payment.created_at,
                                        shards=svc.system_shards)
    extra = (svc.lightning.settle_invoice_items(invoice, amount_received_msat=payment.amount_msat,
                                                settled_at=payment.created_at, settled_by=payment.payment_id)
             + svc.lightning.finish_payment_items(payment, PaymentStatus.SUCCEEDED, now, fee_msat=0))
    # admit_with_retry already retries the ledger's plain transient errors (same transfer id: a replay is safe).
    try:
        admit_with_retry(svc, payment.account_id, payment.amount_msat,
                         lambda limit_items: svc.ledger.execute(transfer, extra + list(limit_items)),
                         send_id=payment.payment_id)
    except errors.TransientError:
        log.warning("internal payment %s: ledger write still failing; left PENDING for a retry or the reconciler",
                    payment.payment_id)
        raise
    except errors.SatflowError as exc:
        # The invoice follows the node (CANCELED) unless the refusal is that it is no longer ours to settle.
        return _fail_internal(svc, payment, invoice, exc,
                              cancel_invoice=not isinstance(exc, errors.InvoiceNotPayable))
    return done


def _fail_internal(svc: Services, payment: Payment, invoice, refusal: errors.SatflowError, *, cancel_invoice: bool,
                   cause: Exception | None = None) -> Payment:
    """Record the refusal, one transaction: the payment PENDING -> FAILED (failure_reason: the refusal's code) and,
    when the node has cancelled the invoice, the invoice ACCEPTED -> CANCELED (it follows the node). Then raise
    the refusal — unless another run finished the payment first: its outcome is the answer."""
    items = svc.lightning.finish_payment_items(payment, PaymentStatus.FAILED, svc.clock(),
                                               failure_reason=refusal.code)
    if cancel_invoice:
        items += svc.lightning.cancel_claimed_invoice_items(invoice, payment.payment_id)
    try:
        svc.lightning.run(items)
    except errors.PendingAlreadyResolved:
        return _load(svc, payment.payment_id)
    if cause is not None:
        raise refusal from cause
    raise refusal


def _assess_internal(svc: Services, payment: Payment, payee_id: str) -> risk.Assessed:
    """An internal invoice payment settles at once, so it is assessed synchronously like a transfer. It cannot be
    held: the payee's invoice is cancelled on the node and settled in one go. A score in the review band is
    refused too (RISK_BLOCKED, saying so); the payer can use a transfer, which can be held."""
    from satflow.domain.risk import Decision, DestinationKind, SubjectKind

    assessed = risk.assess_send(svc, risk.Send(SubjectKind.PAYMENT, payment.payment_id, payment.account_id,
                                               DestinationKind.INTERNAL, payee_id, payment.amount_msat))
    if assessed.decision is Decision.BLOCK:
        raise risk.refuse_blocked(svc, assessed)
    if assessed.decision is Decision.REVIEW:
        refused = risk.refuse_blocked(svc, assessed)
        raise errors.RiskBlocked(f"{refused.message}: it needs a review, and internal invoice payments cannot be "
                                 "held for one", score=assessed.assessment.score, decision="review")
    return assessed


def _precheck_internal(svc: Services, payment: Payment, payee_id: str) -> None:
    from satflow.domain.accounts import AccountStatus

    payer = svc.accounts.get(payment.account_id)
    if payer is None or payer.status is not AccountStatus.ACTIVE:
        raise errors.AccountFrozen("this account is not active and cannot send")
    payee = svc.accounts.get(payee_id)
    if payee is None or payee.status is AccountStatus.CLOSED:
        raise errors.AccountClosed("the invoice's account is closed")
    balance = next((b for b in svc.ledger.balances(payment.account_id) if b.account.asset == "BTC"), None)
    if balance is None or balance.available < payment.amount_msat:
        raise errors.InsufficientFunds("insufficient funds")
    precheck(svc, payment.account_id, payment.amount_msat)  # before the node-side cancel; the tx re-checks


def get_payment(svc: Services, principal: Principal, payment_id: object) -> Payment:
    account_id = require_scope(principal, Scope.READ)
    if not isinstance(payment_id, str) or not payment_id.startswith("pay_") or len(payment_id) > 64:
        raise errors.PaymentNotFound("no such payment")
    payment = svc.lightning.get_payment(payment_id)
    if payment is None or payment.account_id != account_id:
        raise errors.PaymentNotFound("no such payment")
    return payment


# ---------------------------------------------------------------------------------------------- workflow steps
def reserve(svc: Services, payment: Payment, reads: send_reads.SendReads | None = None) -> None:
    """Pending debit of amount + fee reserve, the payment record, the hash lock and the pending index: one
    transaction. Replays (same payment id) succeed without a second reservation. ``reads``: the request's reads
    of the account (the API call has them), else the limits read their own."""
    transfer = payment_reserved(payment_id=payment.payment_id, account_id=payment.account_id,
                                amount_msat=payment.amount_msat, fee_reserve_msat=payment.fee_reserve_msat,
                                payment_hash=payment.payment_hash, created_at=payment.created_at,
                                shards=svc.system_shards)
    items = svc.lightning.new_payment_items(payment)
    admit_with_retry(svc, payment.account_id, payment.amount_msat,
                     lambda extra: svc.ledger.execute(transfer, items + list(extra)), reads=reads,
                     send_id=payment.payment_id)


def step_reserve(svc: Services, payment_id: str) -> dict[str, Any]:
    payment = _load(svc, payment_id)
    if payment.status is PaymentStatus.PENDING:
        reserve(svc, payment)  # idempotent: normally the API already did it (and IN_REVIEW was reserved too)
    return {"payment_id": payment_id, "status": payment.status.value}


def step_send(svc: Services, payment_id: str, wait_s: float = SEND_WAIT_S) -> dict[str, Any]:
    """The one and only send of this payment hash. A re-run finds the claim and tracks instead."""
    payment = _load(svc, payment_id)
    if payment.status is not PaymentStatus.PENDING:
        return _finished(payment)
    if payment.send_attempted_at is None and not risk.cleared(svc, payment_id):
        # Never reached in the workflow's order (Risk first); the reconciler assesses before it sends. A guard
        # at the one place that sends, so no path can send what risk did not allow or a review approve.
        log.error("payment %s reached Send without a risk clearance; left to the reconciler", payment_id)
        return {"payment_id": payment_id, "next": "RECONCILE", "status": payment.status.value}
    if not svc.lightning.mark_send_attempted(payment_id, svc.clock()):
        return step_track(svc, payment_id)
    amount = payment.amount_msat if payment.amountless else None
    outcome = svc.lnd().send_payment(payment.payment_request, fee_limit_msat=payment.fee_reserve_msat,
                                     timeout_seconds=SEND_TIMEOUT_S, amount_msat=amount, wait_s=wait_s)
    if isinstance(outcome, PaymentRejected):
        svc.lightning.mark_send_rejected(payment_id)  # LND refused before routing: nothing left our node
        payment = replace(payment, send_rejected=True)
    return _decision(svc, payment, outcome)


def step_track(svc: Services, payment_id: str) -> dict[str, Any]:
    payment = _load(svc, payment_id)
    if payment.status is not PaymentStatus.PENDING:
        return _finished(payment)
    return _decision(svc, payment, svc.lnd().track_payment(payment.payment_hash, wait_s=0))


def step_post(svc: Services, payment_id: str, outcome: dict) -> dict[str, Any]:
    """SUCCEEDED: post amount + actual fee; the rest of the reserve returns to the user."""
    payment = _load(svc, payment_id)
    if payment.status is not PaymentStatus.PENDING:
        return _finished(payment)
    result = outcome_from_dict(outcome)
    fee = getattr(result, "fee_msat", 0)
    now = svc.clock()
    if fee > payment.fee_reserve_msat:
        # LND enforces fee_limit_msat = the reserve; if it ever did not, we eat the difference, never the user.
        # Booked first (idempotent by id): a crash before the post cannot lose it, a re-run replays it.
        log.error("payment %s paid fee %d above its reserve %d", payment_id, fee, payment.fee_reserve_msat)
        svc.ledger.execute(routing_fee_overrun(payment_id=payment_id, amount_msat=fee - payment.fee_reserve_msat,
                                               created_at=now, shards=svc.system_shards))
        fee = payment.fee_reserve_msat
    pending = svc.ledger.get_transfer(payment_id)
    transfer = post_pending(pending, transfer_id=f"{payment_id}:post", created_at=now,
                            amount=payment.amount_msat + fee)
    extra = svc.lightning.finish_payment_items(payment, PaymentStatus.SUCCEEDED, now, fee_msat=fee,
                                               preimage=getattr(result, "preimage_hex", None))
    _resolve(svc, transfer, extra)
    return _finished(_load(svc, payment_id))


def step_void(svc: Services, payment_id: str, outcome: dict) -> dict[str, Any]:
    """FAILED (or provably never sent): release the whole reservation."""
    payment = _load(svc, payment_id)
    if payment.status is not PaymentStatus.PENDING:
        return _finished(payment)
    pending = svc.ledger.get_transfer(payment_id)
    now = svc.clock()
    transfer = void_pending(pending, transfer_id=f"{payment_id}:void", created_at=now)
    extra = svc.lightning.finish_payment_items(payment, PaymentStatus.FAILED, now,
                                               failure_reason=failure_reason(outcome_from_dict(outcome)))
    release_with_retry(svc, payment.account_id, payment.amount_msat, payment.created_at,
                       lambda limit_items: _resolve(svc, transfer, extra + list(limit_items)))
    return _finished(_load(svc, payment_id))


def apply_risk_verdict(svc: Services, payment_id: str, proceed: bool, reason: str | None, extra: list) -> str:
    """The risk verdict takes effect (``risk.step_apply``): approved -> IN_REVIEW back to PENDING (the workflow
    goes on to Reserve and Send; ``extra``: the destination, now seen); refused -> void the reservation with
    ``failure_reason`` (RISK_BLOCKED | RISK_REJECTED). Idempotent; never voids a payment whose send was claimed."""
    payment = _load(svc, payment_id)
    now = svc.clock()
    if proceed:
        if payment.status is PaymentStatus.IN_REVIEW:
            try:
                svc.risk.run(svc.lightning.review_release_items(payment, now) + list(extra))
            except errors.Conflict:
                pass  # released meanwhile (a re-run)
            payment = _load(svc, payment_id)
        return "PROCEED" if payment.status is PaymentStatus.PENDING else "DONE"
    if payment.status not in (PaymentStatus.PENDING, PaymentStatus.IN_REVIEW):
        return "DONE"
    if payment.send_attempted_at is not None:
        log.error("payment %s was refused by risk after its send was claimed; left to the reconciler", payment_id)
        return "DONE"
    pending = svc.ledger.get_transfer(payment_id)
    transfer = void_pending(pending, transfer_id=f"{payment_id}:void", created_at=now)
    items = svc.lightning.finish_payment_items(payment, PaymentStatus.FAILED, now, failure_reason=reason,
                                               from_statuses=(PaymentStatus.PENDING, PaymentStatus.IN_REVIEW))
    release_with_retry(svc, payment.account_id, payment.amount_msat, payment.created_at,
                       lambda limit_items: _resolve(svc, transfer, items + list(limit_items)))
    return "DONE"


def _register_verdict_applier() -> None:
    from satflow.domain.risk import SubjectKind

    verdicts.register(SubjectKind.PAYMENT, apply_risk_verdict)


_register_verdict_applier()


def _resolve(svc: Services, transfer, extra) -> None:
    try:
        svc.ledger.execute(transfer, extra)
    except errors.PendingAlreadyResolved:
        pass  # a concurrent run (reconciler vs workflow) resolved it first: the record says how


def _decision(svc: Services, payment: Payment, outcome: PaymentOutcome) -> dict[str, Any]:
    nxt = decide(outcome, send_rejected=payment.send_rejected, invoice_expires_at=payment.invoice_expires_at,
                 now=svc.unix_clock())
    return {"payment_id": payment.payment_id, "next": nxt.value, "outcome": outcome.to_dict()}


def _finished(payment: Payment) -> dict[str, Any]:
    return {"payment_id": payment.payment_id, "next": "DONE", "status": payment.status.value}


def _load(svc: Services, payment_id: str) -> Payment:
    payment = svc.lightning.get_payment(payment_id)
    if payment is None:
        raise errors.PaymentNotFound(f"payment {payment_id} not found")
    return payment


# ---------------------------------------------------------------------------------------------- the reconciler
# An HTLC can stay locked until its CLTV expiry; LND's default ceiling is 2016 blocks (about 14 days).
MAX_IN_FLIGHT_S = 2016 * 600


def reconcile(svc: Services, *, min_age_s: int = 60) -> dict[str, int]:
    """Track every PENDING external payment until LND reports a terminal state. Never voids on unknown.
    A payment whose send was never claimed (its workflow did not start or died before Send) is sent here.
    A PENDING internal payment (its API invocation died after writing the intent, or its ledger write kept
    failing) is resumed through the very steps of the API call (``_settle_internal``): settled or failed.
    ``min_age_s`` (60 s, four times the API function's 15 s timeout): the invocation that wrote it is gone."""
    counts = {"checked": 0, "posted": 0, "voided": 0, "still_pending": 0, "past_cltv": 0, "errors": 0,
              "internal_settled": 0, "internal_failed": 0}
    now_iso = svc.clock()
    for payment_id in svc.lightning.pending_payment_ids():
        try:
            _reconcile_one(svc, payment_id, now_iso, min_age_s, counts)
        except Exception:  # one bad payment must not starve the others; it is retried next run
            counts["errors"] += 1
            log.exception("reconciling payment %s failed", payment_id)
    return counts


def _reconcile_one(svc: Services, payment_id: str, now_iso: str, min_age_s: int, counts: dict[str, int]) -> None:
    """One pending payment: send it if never claimed, else track it; post, void or leave it pending."""
    payment = svc.lightning.get_payment(payment_id)
    if payment is None:
        return
    if payment.internal:
        _reconcile_internal(svc, payment, now_iso, min_age_s, counts)
        return
    if payment.status is PaymentStatus.IN_REVIEW:
        _reconcile_review(svc, payment, now_iso, counts)
        return
    if payment.status is not PaymentStatus.PENDING:
        return
    if _age_s(payment.created_at, now_iso) < min_age_s:
        return  # the workflow is most likely still on it
    counts["checked"] += 1
    if payment.send_attempted_at is None:
        # The workflow never claimed the send (it failed to start, or died before Send): send now, once risk has
        # cleared it (assessed here if the workflow never got to its Risk state). The claim inside step_send keeps
        # it the single send even if a late workflow reaches Send too.
        if not risk.cleared(svc, payment_id):
            verdict = risk.step_assess_payment(svc, payment_id)
            if verdict["decision"] == "block":
                risk.step_apply(svc, kind="payment", subject_id=payment_id)
                counts["voided"] += 1
                return
            if verdict["decision"] == "review":
                svc.start_review(verdict["review_id"])  # nobody else will park it: the review workflow does
                counts["still_pending"] += 1
                return
        decision = step_send(svc, payment_id, wait_s=RECONCILER_SEND_WAIT_S)
    else:
        decision = step_track(svc, payment_id)
    if decision.get("next") == Next.POST.value:
        step_post(svc, payment_id, decision["outcome"])
        counts["posted"] += 1
    elif decision.get("next") == Next.VOID.value:
        step_void(svc, payment_id, decision["outcome"])
        counts["voided"] += 1
    else:
        counts["still_pending"] += 1
        if _age_s(payment.created_at, now_iso) > MAX_IN_FLIGHT_S:
            # Past the CLTV horizon and still not final: an operator must look. Funds stay reserved.
            counts["past_cltv"] += 1
            log.error("payment %s still in flight past its CLTV expiry horizon", payment_id)


def _reconcile_internal(svc: Services, payment: Payment, now_iso: str, min_age_s: int,
                        counts: dict[str, int]) -> None:
    """An internal payment left PENDING: resume it (the payer's retry would do the same). A transient failure
    leaves it PENDING for the next run; a refusal has been recorded (FAILED, invoice CANCELED) by the steps."""
    if payment.status is not PaymentStatus.PENDING or _age_s(payment.created_at, now_iso) < min_age_s:
        return
    counts["checked"] += 1
    try:
        final = _resume_internal(svc, payment)
    except errors.TransientError:
        counts["still_pending"] += 1
        log.warning("internal payment %s: still unfinished, retried next run", payment.payment_id, exc_info=True)
        return
    except errors.SatflowError as refusal:
        if _load(svc, payment.payment_id).status is PaymentStatus.PENDING:
            raise  # not a refusal the steps recorded (e.g. the node answered an error): counted as an error
        counts["internal_failed"] += 1
        log.warning("internal payment %s resumed and refused: %s", payment.payment_id, refusal.code)
        return
    counts["internal_settled" if final.status is PaymentStatus.SUCCEEDED else "internal_failed"] += 1
    log.warning("internal payment %s resumed by the reconciler: %s", payment.payment_id, final.status.value)


REVIEW_RECOVER_AFTER_S = 600


def _reconcile_review(svc: Services, payment: Payment, now_iso: str, counts: dict[str, int]) -> None:
    """A payment still IN_REVIEW although its review was decided a while ago: its workflow is gone (stopped or
    failed); apply the decision here. Pending reviews wait for an admin or their workflow's timeout."""
    stored = svc.risk.get_assessment(payment.payment_id)
    review = svc.risk.get_review(stored.review_id) if stored is not None and stored.review_id else None
    if review is None or review.decided_at is None or _age_s(review.decided_at, now_iso) < REVIEW_RECOVER_AFTER_S:
        return
    counts["checked"] += 1
    result = risk.step_apply(svc, review_id=review.review_id)
    if result["verdict"] == "refuse":
        counts["voided"] += 1
    else:
        counts["still_pending"] += 1  # back to PENDING: the next run sends it


def _age_s(created_at: str, now_iso: str) -> float:
    from datetime import datetime

    def parse(s: str) -> datetime:
        return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ")

    return (parse(now_iso) - parse(created_at)).total_seconds()
