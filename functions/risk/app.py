"""Risk steps, invoked by statemachines/payment.asl.json (Risk, AwaitReview, ReviewTimedOut, ApplyRisk) and
statemachines/review.asl.json (AwaitDecision, TimedOut, Apply). Each call names its step; every step is safe to run
twice. Exceptions propagate: their class names are the ASL Retry/Catch contract (``ReviewAlreadyDecided`` from
await_review means "decided before the workflow parked": the ASL goes straight to Apply).

Events: {"step": "assess_payment", "payment_id"}
        {"step": "await_review", "review_id", "task_token"}     (lambda:invoke.waitForTaskToken)
        {"step": "review_timeout", "review_id"}
        {"step": "apply", "review_id"} | {"step": "apply", "kind": "payment", "subject_id"}

This function holds no Step Functions permission (the state machines reference it, so it cannot reference them);
only the API function answers task tokens."""
from __future__ import annotations

from aws_lambda_powertools import Logger

from satflow import bootstrap
from satflow.app import risk, verdicts
from satflow.domain.risk import SubjectKind

logger = Logger(service="satflow")

# A verdict reaches its send through the send's own use case (app.verdicts); each is imported on its first verdict,
# so a cold start of this function loads none of them (payouts would bring the on-chain modules).
for _kind, _module in ((SubjectKind.TRANSFER, "satflow.app.transfers"), (SubjectKind.PAYMENT, "satflow.app.payments"),
                       (SubjectKind.PAYOUT, "satflow.app.payouts")):
    verdicts.register_lazy(_kind, _module)

STEPS = {
    "assess_payment": lambda svc, e: risk.step_assess_payment(svc, e["payment_id"]),
    "await_review": lambda svc, e: risk.step_await_review(svc, e["review_id"], e["task_token"]),
    "review_timeout": lambda svc, e: risk.step_review_timeout(svc, e["review_id"]),
    "apply": lambda svc, e: risk.step_apply(svc, review_id=e.get("review_id"), kind=e.get("kind"),
                                            subject_id=e.get("subject_id")),
}


@logger.inject_lambda_context(clear_state=True)  # warm calls must not inherit another send's keys
def lambda_handler(event, context):
    step = STEPS[event["step"]]
    logger.append_keys(step=event["step"], review_id=event.get("review_id"),
                       subject_id=event.get("payment_id") or event.get("subject_id"))
    result = step(bootstrap.services(), event)
    logger.info("risk step", extra={"decision": result.get("decision"), "next": result.get("next")})
    return result
