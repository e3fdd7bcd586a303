"""Payment workflow steps, invoked by statemachines/payment.asl.json. Each call names its step; every step is
safe to run twice. Exceptions propagate: their class names are the ASL Retry/Catch contract."""
from __future__ import annotations

from aws_lambda_powertools import Logger

from satflow import bootstrap
from satflow.app import payments

logger = Logger(service="satflow")

DEFAULT_MAX_TRACKS = 20


def _track(svc, event: dict) -> dict:
    attempt = int(event.get("attempt") or 0) + 1
    result = payments.step_track(svc, event["payment_id"])
    if result.get("next") == "WAIT" and attempt >= int(event.get("max_tracks") or DEFAULT_MAX_TRACKS):
        result["next"] = "RECONCILE"  # bounded: the reconciler takes over, the payment stays PENDING
    result["attempt"] = attempt
    return result


STEPS = {
    "reserve": lambda svc, e: payments.step_reserve(svc, e["payment_id"]),
    "send": lambda svc, e: {**payments.step_send(svc, e["payment_id"]), "attempt": 0},
    "track": _track,
    "post": lambda svc, e: payments.step_post(svc, e["payment_id"], e["outcome"]),
    "void": lambda svc, e: payments.step_void(svc, e["payment_id"], e["outcome"]),
}


@logger.inject_lambda_context(clear_state=True)  # warm calls must not inherit another payment's keys
def lambda_handler(event, context):
    step = STEPS[event["step"]]
    logger.append_keys(payment_id=event.get("payment_id"), step=event["step"])
    result = step(bootstrap.services(), event)
    logger.info("payment step", extra={"next": result.get("next"), "status": result.get("status")})
    return result
