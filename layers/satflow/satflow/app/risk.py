"""Use cases of the risk score and review: gathering features, assessing a send once, the review workflow's steps
and the admin's decisions.

Where each send is assessed:

* internal transfer (instant): synchronously in ``app.transfers.create_transfer``. allow -> posted as before;
  block -> 422 RISK_BLOCKED, nothing written; review -> a PENDING transfer (sender reserved, recipient pending_in,
  limits admitted) + the review, one transaction; ``statemachines/review.asl.json`` parks on a task token.
* Lightning payment: the ``Risk`` state of ``statemachines/payment.asl.json`` (:func:`step_assess_payment`), after
  the API's synchronous reserve. review -> the payment is IN_REVIEW (never claimed for sending) and the workflow
  parks on ``AwaitReview``; block -> voided with ``failure_reason`` RISK_BLOCKED.
* on-chain payout: synchronously in ``app.payouts.create_payout`` (the payout workflow runs per batch, so a
  per-payout decision has to come before batching). block -> 422, nothing reserved; review -> reserved but
  IN_REVIEW, which the batcher skips, parked on ``review.asl.json``.

A send is assessed ONCE: the assessment item (``RISK#<subject id>``) is written in the same transaction as what
its decision causes, and every replay reads it back instead of scoring again (a retried transfer would otherwise
be scored against a history that already holds it).

The review record is the single truth about a decision. The admin's approve/reject changes it (pending -> decided,
conditional, with its audit record, one transaction) and then wakes the workflow with the task token; whatever
wakes the workflow (the token, the ``ReviewAlreadyDecided`` of a late park, or the timeout, which itself rejects
a still-pending review), the ``Apply`` step reads the record and acts on it. Apply is idempotent (post/void ids
derive from the subject id), so the decision takes effect exactly once however often it runs.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from satflow.domain import errors
from satflow.domain.accounts import Principal
from satflow.domain.audit import AuditEntry
from satflow.domain.ledger import TransferKind
from satflow.domain.limits import usage
from satflow.domain.risk import (
    DEFAULT_POLICY,
    Decision,
    DestinationKind,
    Review,
    ReviewStatus,
    RiskAssessment,
    RiskFeatures,
    RiskPolicy,
    SubjectKind,
    assess,
    review_id_for,
    validate_note,
    validate_review_status,
)

from . import send_reads, verdicts
from .accounts import require_admin
from .limits import iso_to_unix, tier_limits
from .ports import Services
from .send_reads import SendReads

log = logging.getLogger(__name__)

PROCEED, DONE = "PROCEED", "DONE"
TIMEOUT_ACTOR = "system:timeout"
MAX_PAGE, DEFAULT_PAGE = 100, 50

Notify = Callable[[str, dict], str]  # (task token, output) -> "resumed" | "ended"


def _store(svc: Services) -> Any:
    store = getattr(svc, "risk", None)
    if store is None:  # fail closed: a composition root that forgot the store must not move money unscored
        raise RuntimeError("risk is not configured (svc.risk is None)")
    return store


def policy(svc: Services) -> RiskPolicy:
    return getattr(svc, "risk_policy", None) or DEFAULT_POLICY


# ============================================================================================== assessing
@dataclass(frozen=True)
class Send:
    """One send to be scored."""

    kind: SubjectKind
    subject_id: str  # the transfer, payment or payout id (what a review would hold)
    account_id: str
    destination_kind: DestinationKind
    destination: str  # recipient account id, payee node pubkey, or address
    amount_msat: int


@dataclass(frozen=True)
class Assessed:
    """An assessment of a send, stored or about to be."""

    send: Send
    assessment: RiskAssessment
    features: dict
    assessed_at: str
    stored: bool  # read back from an earlier request (a replay)

    @property
    def decision(self) -> Decision:
        return self.assessment.decision

    @property
    def review_id(self) -> str | None:
        return review_id_for(self.send.kind, self.send.subject_id) if self.decision is Decision.REVIEW else None


def load_reads(svc: Services, send: Send, extra: Sequence[Any] = ()) -> SendReads:
    """Everything scoring and admitting ``send`` needs, in one round trip (see ``app.send_reads``)."""
    if getattr(svc, "limits", None) is None:
        raise RuntimeError("limits are not configured (svc.limits is None)")
    _store(svc)  # fail closed before reading anything
    return send_reads.load(svc, send.account_id, subject_id=send.subject_id,
                           destination=(send.destination_kind, send.destination), extra=extra)


def features(svc: Services, send: Send, reads: SendReads | None = None) -> RiskFeatures:
    """From the request's reads (one round trip, :func:`load_reads`): the account, its limit window and recent
    sends, its last credit and its destination history. Without ``reads`` they are loaded here."""
    if reads is None:
        reads = load_reads(svc, send)
    account = reads.account
    if account is None:
        raise errors.AccountNotFound(f"account {send.account_id} not found", account_id=send.account_id)
    limits = tier_limits(svc, account.tier)
    now = svc.unix_clock()
    used = usage(reads.limits.window, now)
    # the send itself excluded (a payment's reserve is admitted before its Risk state)
    past = [amount for send_id, amount in reads.recent_sends(svc) if send_id != send.subject_id]
    credited_at = reads.last_credit.at if reads.last_credit.tracked else _last_credit_in(reads.history(svc))
    last_credit = None if credited_at is None else max(0, now - iso_to_unix(credited_at))
    seen = reads.destination_seen if reads.destination == (send.destination_kind, send.destination) else \
        _store(svc).destination_seen(send.account_id, send.destination_kind, send.destination)
    return RiskFeatures(
        account_age_s=max(0, now - iso_to_unix(account.created_at)), tier=account.tier,
        destination_kind=send.destination_kind,
        new_destination=not seen,
        amount_msat=send.amount_msat, per_tx_limit_msat=limits.per_tx_msat, past_sends=len(past),
        max_past_send_msat=max(past) if past else None, sends_last_hour=used.sends_last_hour,
        sends_per_hour_limit=limits.sends_per_hour, used_daily_msat=used.used_daily_msat,
        daily_limit_msat=limits.daily_msat, seconds_since_last_credit=last_credit,
    )


def _last_credit_in(entries: Sequence[Any]) -> str | None:
    """Legacy fallback: the newest posted credit among ledger history entries (newest first)."""
    for entry in entries:
        if entry.direction == "in" and entry.kind in (TransferKind.POSTED, TransferKind.POST_PENDING):
            return entry.created_at
    return None


def assess_send(svc: Services, send: Send, reads: SendReads | None = None) -> Assessed:
    """The stored assessment of this send if there is one (a replay), else a fresh one (not yet written).
    ``reads``: the request's reads of this send (:func:`load_reads`); without them they are loaded here."""
    if reads is None or reads.subject_id != send.subject_id:
        reads = load_reads(svc, send)
    stored = reads.assessment
    if stored is not None:
        return Assessed(send, stored.assessment, stored.features, stored.assessed_at, stored=True)
    found = features(svc, send, reads)
    assessment = assess(found, policy(svc))
    log.info("risk %s %s: score %d -> %s", send.kind.value, send.subject_id, assessment.score,
             assessment.decision.value)
    return Assessed(send, assessment, found.to_dict(), svc.clock(), stored=False)


def _assessment_item(svc: Services, a: Assessed) -> Any:
    from satflow.adapters.dynamodb.risk import StoredAssessment  # the store's record type (no AWS import)

    return _store(svc).assessment_item(StoredAssessment(
        kind=a.send.kind, subject_id=a.send.subject_id, account_id=a.send.account_id, assessment=a.assessment,
        features=a.features, assessed_at=a.assessed_at, review_id=a.review_id))


def allow_items(svc: Services, a: Assessed) -> list[Any]:
    """For the send's own transaction: the assessment and the destination, now "seen"."""
    s = a.send
    return [_assessment_item(svc, a),
            _store(svc).destination_item(s.account_id, s.destination_kind, s.destination, a.assessed_at)]


def review_items(svc: Services, a: Assessed) -> list[Any]:
    """For the send's own transaction: the assessment, the pending review and whatever
    :func:`review_required_items` adds. Every held send (transfer, payment, payout) goes through here."""
    s = a.send
    review = Review(review_id=a.review_id or "", kind=s.kind, subject_id=s.subject_id, account_id=s.account_id,
                    amount_msat=s.amount_msat, destination=s.destination, assessment=a.assessment,
                    status=ReviewStatus.PENDING, created_at=a.assessed_at)
    return [_assessment_item(svc, a), *_store(svc).new_review_items(review), *review_required_items(svc, review)]


def review_required_items(svc: Services, review: Review) -> list[Any]:
    """The ``review.required`` webhook event, written in the same transaction that creates the review, so the event
    exists if and only if the review does (services built without an outbox announce nothing)."""
    if getattr(svc, "webhooks", None) is None:
        return []
    from satflow.domain.webhooks import review_required_event

    event = review_required_event(review.review_id, review.account_id, review.created_at, {
        "kind": review.kind.value, "subject_id": review.subject_id, "amount_msat": review.amount_msat,
        "score": review.assessment.score})
    return svc.webhooks.outbox_items([event])


def refuse_blocked(svc: Services, a: Assessed) -> errors.RiskBlocked:
    """A blocked send writes nothing but its audit record (when the audit log is wired). Returns the error."""
    s = a.send
    scored = {f.name: f.points for f in a.assessment.factors if f.points}
    _audit_if_configured(svc, AuditEntry(at=svc.clock(), actor="system", action="risk.blocked",
                                         subject_ids=(s.account_id, s.subject_id), amount_msat=s.amount_msat,
                                         details={"kind": s.kind.value, "score": a.assessment.score,
                                                  "factors": scored}))
    log.warning("risk blocked %s %s of %s: score %d %s", s.kind.value, s.subject_id, s.account_id,
                a.assessment.score, scored)
    return errors.RiskBlocked(f"this send was refused by risk controls (score {a.assessment.score})",
                              score=a.assessment.score)


def _audit_if_configured(svc: Services, entry: AuditEntry) -> None:
    store = getattr(svc, "audit", None)
    if store is None:
        log.warning("audit log not configured: %s of %s not recorded", entry.action, entry.subject_ids)
        return
    store.append(entry)


def cleared(svc: Services, subject_id: str) -> bool:
    """May this send go out? Allowed at assessment, or approved by its review."""
    stored = _store(svc).get_assessment(subject_id)
    if stored is None:
        return False
    if stored.assessment.decision is Decision.ALLOW:
        return True
    if stored.assessment.decision is Decision.REVIEW and stored.review_id:
        review = _store(svc).get_review(stored.review_id)
        return review is not None and review.status is ReviewStatus.APPROVED
    return False


# ============================================================================================== workflow steps
def step_assess_payment(svc: Services, payment_id: str) -> dict[str, Any]:
    """The payment workflow's ``Risk`` state. Writes the assessment once (with the review and PENDING ->
    IN_REVIEW when held); a re-run returns the stored decision."""
    from satflow.domain.payments import PaymentStatus

    payment = svc.lightning.get_payment(payment_id)
    if payment is None:
        raise errors.PaymentNotFound(f"payment {payment_id} not found")
    send = Send(SubjectKind.PAYMENT, payment_id, payment.account_id, DestinationKind.LIGHTNING, payment.destination,
                payment.amount_msat)
    a = assess_send(svc, send)
    if not a.stored:
        if payment.status is not PaymentStatus.PENDING or payment.send_attempted_at is not None:
            # Finished or already sent by another path: nothing to decide; the next steps see its status.
            return _risk_result(payment_id, Decision.ALLOW, a)
        items = [_assessment_item(svc, a)]
        if a.decision is Decision.ALLOW:
            items.append(_store(svc).destination_item(send.account_id, send.destination_kind, send.destination,
                                                      a.assessed_at))
        elif a.decision is Decision.REVIEW:
            items = review_items(svc, a) + svc.lightning.review_hold_items(payment, a.assessed_at)
        try:
            _store(svc).run(items)
        except errors.Conflict:
            stored = _store(svc).get_assessment(payment_id)  # a concurrent run (reconciler) assessed it first
            if stored is None:
                return _risk_result(payment_id, Decision.ALLOW, a)  # the payment moved on meanwhile
            a = Assessed(send, stored.assessment, stored.features, stored.assessed_at, stored=True)
    return _risk_result(payment_id, a.decision, a)


def _risk_result(payment_id: str, decision: Decision, a: Assessed) -> dict[str, Any]:
    return {"payment_id": payment_id, "decision": decision.value, "score": a.assessment.score,
            "review_id": a.review_id if decision is Decision.REVIEW else None}


def step_await_review(svc: Services, review_id: str, task_token: str) -> dict[str, Any]:
    """Invoked with ``.waitForTaskToken``: store the token on the pending review and return; the workflow then
    waits for the admin's decision. Already decided (the admin was faster than the workflow):
    ``ReviewAlreadyDecided`` fails the task, and the ASL's Catch goes straight to Apply."""
    review = _load_review(svc, review_id)
    if review.status is ReviewStatus.PENDING and _store(svc).park(review_id, task_token):
        return {"review_id": review_id, "status": "parked"}
    review = _load_review(svc, review_id)
    raise errors.ReviewAlreadyDecided(f"review {review_id} is already {review.status.value}", review_id=review_id)


def step_review_timeout(svc: Services, review_id: str) -> dict[str, Any]:
    """Nobody decided within the review timeout: reject (the safe default; Apply then voids). A decision that
    landed meanwhile stands."""
    review = _load_review(svc, review_id)
    if review.status is ReviewStatus.PENDING:
        entry = AuditEntry(at=svc.clock(), actor="system", action="review.timed_out",
                           subject_ids=(review.account_id, review_id), amount_msat=review.amount_msat,
                           details={"kind": review.kind.value, "subject_id": review.subject_id})
        items = _store(svc).decide_items(review, ReviewStatus.REJECTED, TIMEOUT_ACTOR, entry.at,
                                         note="no decision before the review timeout")
        try:
            _run_with_audit(svc, entry, items, required=False)
        except errors.ReviewAlreadyDecided:
            pass
        review = _load_review(svc, review_id)
    return {"review_id": review_id, "status": review.status.value}


def step_apply(svc: Services, *, review_id: str | None = None, kind: str | None = None,
               subject_id: str | None = None) -> dict[str, Any]:
    """Act on the stored verdict of a send: allowed or approved -> proceed; blocked or rejected -> refuse (void,
    limits given back). Idempotent. Returns ``next``: PROCEED (a payment goes on to Reserve/Send) or DONE."""
    store = _store(svc)
    if review_id is not None:
        review = _load_review(svc, review_id)
        subject_kind, subject = review.kind, review.subject_id
    else:
        try:
            subject_kind = SubjectKind(kind)
        except ValueError:
            raise errors.ValidationError(f"unknown subject kind {kind!r}", field="kind") from None
        subject = str(subject_id)
        review = None
    stored = store.get_assessment(subject)
    if stored is None:
        raise errors.Conflict(f"{subject} has no risk assessment")
    if stored.assessment.decision is Decision.REVIEW and review is None:
        review = _load_review(svc, stored.review_id or "")
    if stored.assessment.decision is Decision.ALLOW:
        proceed, reason = True, None
    elif stored.assessment.decision is Decision.BLOCK:
        proceed, reason = False, "RISK_BLOCKED"
    else:
        assert review is not None
        if review.status is ReviewStatus.PENDING:
            raise errors.Conflict(f"review {review.review_id} is still pending")
        proceed = review.status is ReviewStatus.APPROVED
        reason = None if proceed else "RISK_REJECTED"
    destination = [store.destination_item(stored.account_id, _destination_kind(subject_kind),
                                          _destination(svc, subject_kind, subject), svc.clock())] if proceed else []
    nxt = verdicts.apply(svc, subject_kind, subject, proceed, reason, destination)
    if review is not None and review.status is not ReviewStatus.PENDING:
        store.mark_applied(review)
    return {"subject_id": subject, "kind": subject_kind.value, "verdict": "proceed" if proceed else "refuse",
            "next": nxt}


# The review workflow's default timeout (statemachines/review.asl.json Defaults) and the sweeper's margins.
REVIEW_TIMEOUT_S = 86_400
SWEEP_APPLY_AFTER_S = 600  # a decision not applied 10 minutes later: its workflow is gone
SWEEP_TIMEOUT_GRACE_S = 3_600  # a review pending an hour past its timeout: its workflow is gone


def sweep_reviews(svc: Services, *, now_iso: str | None = None, limit: int = 100) -> dict[str, int]:
    """Monitor job ``review_sweeper``: finish what a lost review workflow cannot (it failed to start, was
    throttled into NeedsAttention, or its Apply kept failing). A decided review whose decision never reached its
    send is applied; a review still pending long after its timeout is rejected (as the timeout would) and
    applied. Both steps are the workflow's own idempotent steps, so a workflow still running alongside is
    harmless. Bounded: two queries of at most ``limit`` items."""
    from datetime import datetime, timedelta, timezone

    store = _store(svc)
    now = datetime.strptime(now_iso or svc.clock(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)

    def iso(delta_s: int) -> str:
        return (now - timedelta(seconds=delta_s)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    counts = {"applied": 0, "timed_out": 0, "errors": 0}
    for review_id in store.unapplied(iso(SWEEP_APPLY_AFTER_S), limit):
        try:
            step_apply(svc, review_id=review_id)
            counts["applied"] += 1
        except Exception:  # one bad review must not stop the others; the next run retries it
            log.exception("review sweeper could not apply a decision", extra={"review_id": review_id})
            counts["errors"] += 1
    stale_before = iso(REVIEW_TIMEOUT_S + SWEEP_TIMEOUT_GRACE_S)
    pending, _ = store.list_reviews(ReviewStatus.PENDING, limit)
    for review in pending:  # oldest first
        if review.created_at >= stale_before:
            break
        try:
            step_review_timeout(svc, review.review_id)
            step_apply(svc, review_id=review.review_id)
            counts["timed_out"] += 1
        except Exception:
            log.exception("review sweeper could not time out a review", extra={"review_id": review.review_id})
            counts["errors"] += 1
    return counts


def _destination_kind(kind: SubjectKind) -> DestinationKind:
    return {SubjectKind.TRANSFER: DestinationKind.INTERNAL, SubjectKind.PAYMENT: DestinationKind.LIGHTNING,
            SubjectKind.PAYOUT: DestinationKind.ONCHAIN}[kind]


def _destination(svc: Services, kind: SubjectKind, subject: str) -> str:
    if kind is SubjectKind.TRANSFER:
        transfer = svc.ledger.get_transfer(subject)
        return transfer.credit.owner if transfer else subject
    if kind is SubjectKind.PAYMENT:
        payment = svc.lightning.get_payment(subject)
        return payment.destination if payment else subject
    payout = svc.payouts.get_payout(subject)
    return payout.address if payout else subject


def _load_review(svc: Services, review_id: object) -> Review:
    if not isinstance(review_id, str) or not review_id.startswith("rev_") or len(review_id) > 64:
        raise errors.ReviewNotFound("no such review")
    review = _store(svc).get_review(review_id)
    if review is None:
        raise errors.ReviewNotFound(f"review {review_id} not found")
    return review


def _run_with_audit(svc: Services, entry: AuditEntry, items: list, *, required: bool) -> None:
    """The decision and its audit record in ONE transaction. ``required``: fail closed without an audit log
    (admin actions); otherwise the decision is written unaudited, with a warning."""
    if getattr(svc, "audit", None) is None and not required:
        log.warning("audit log not configured: %s of %s not recorded", entry.action, entry.subject_ids)
        _store(svc).run(items)
        return
    from .audit import with_audit

    with_audit(svc, entry, lambda extra: _store(svc).run(items + list(extra)))


# ============================================================================================== admin
def list_reviews(svc: Services, principal: Principal, status: object = None, limit: object = None,
                 cursor: object = None) -> tuple[list[Review], str | None]:
    """GET /v1/admin/reviews?status=pending|approved|rejected&limit=&cursor= - oldest first (a queue)."""
    require_admin(principal)
    wanted = validate_review_status(status)
    if limit is None:
        limit = DEFAULT_PAGE
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise errors.ValidationError(f"limit must be an integer from 1 to {MAX_PAGE}", field="limit")
    if cursor is not None and (not isinstance(cursor, str) or len(cursor) > 1024):
        raise errors.ValidationError("cursor is not valid", field="cursor")
    return _store(svc).list_reviews(wanted, limit, cursor or None)


@dataclass(frozen=True)
class DecisionOutcome:
    review: Review
    workflow: str  # resumed | not_parked_yet (it resumes itself on parking) | ended (it acts on the record)
    replayed: bool


def decide_review(svc: Services, principal: Principal, review_id: object, approve: bool, note: object = None, *,
                  notify: Notify | None = None) -> DecisionOutcome:
    """POST /v1/admin/reviews/{id}/approve|reject. pending -> approved|rejected exactly once, with its audit record
    in the same transaction; then the parked workflow is resumed with its task token. The same decision again is
    a replay (200, and the workflow is woken again in case the first wake-up was lost); the other decision, or
    any decision after the timeout rejected it, is 409 REVIEW_ALREADY_DECIDED."""
    require_admin(principal)
    note = validate_note(note)
    review = _load_review(svc, review_id)
    wanted = ReviewStatus.APPROVED if approve else ReviewStatus.REJECTED
    replayed = False
    if review.status is ReviewStatus.PENDING:
        entry = AuditEntry(at=svc.clock(), actor="admin", action=f"review.{wanted.value}",
                           subject_ids=(review.account_id, review.review_id), amount_msat=review.amount_msat,
                           details={"kind": review.kind.value, "subject_id": review.subject_id,
                                    "score": review.assessment.score, **({"note": note} if note else {})})
        try:
            _run_with_audit(svc, entry, _store(svc).decide_items(review, wanted, "admin", entry.at, note),
                            required=True)
        except errors.ReviewAlreadyDecided:
            replayed = True  # decided concurrently (or an earlier attempt of ours committed): judged below
        review = _load_review(svc, review.review_id)
    else:
        replayed = True
    if review.status is not wanted or review.decided_by != "admin":
        raise errors.ReviewAlreadyDecided(
            f"review {review.review_id} is already {review.status.value}"
            + (" (timed out)" if review.decided_by == TIMEOUT_ACTOR else ""),
            review_id=review.review_id, status=review.status.value)
    return DecisionOutcome(review, _wake(review, notify), replayed)


def _wake(review: Review, notify: Notify | None) -> str:
    if review.task_token is None:
        return "not_parked_yet"  # the workflow's park finds the decision and goes straight to Apply
    if notify is None:
        raise RuntimeError("no task notifier configured")
    try:
        return notify(review.task_token, {"review_id": review.review_id, "status": review.status.value})
    except errors.SatflowError:
        raise
    except Exception as exc:  # the decision is recorded; the same request again wakes the workflow
        log.exception("waking the workflow of review %s failed", review.review_id)
        raise errors.TransientError("the decision is recorded but the workflow could not be resumed; repeat the "
                                    "same request") from exc


def sfn_notifier(sfn_client: Any) -> Notify:
    """SendTaskSuccess over a boto3 Step Functions client. A token that is no longer live (the task timed out,
    or a second wake-up) is ``"ended"``: the workflow already moved on and acts on the stored decision."""

    def notify(token: str, output: dict) -> str:
        try:
            sfn_client.send_task_success(taskToken=token, output=json.dumps(output))
            return "resumed"
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("TaskTimedOut", "InvalidToken", "TaskDoesNotExist"):
                log.info("review task token no longer live (%s)", code)
                return "ended"
            raise

    return notify


def review_view(review: Review) -> dict[str, Any]:
    return review.to_view()


__all__ = ["Send", "Assessed", "features", "assess_send", "allow_items", "review_items", "refuse_blocked",
           "cleared", "step_assess_payment", "step_await_review", "step_review_timeout", "step_apply",
           "list_reviews", "decide_review", "DecisionOutcome", "sfn_notifier", "review_view", "policy"]
