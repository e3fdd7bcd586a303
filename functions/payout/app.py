"""Payout workflow steps, invoked by statemachines/payout.asl.json. Each call names its step; every step is safe to
run twice. Exceptions propagate: their class names are the ASL Retry/Catch contract.

Events: {"step": "prepare" | "sign_hot" | "broadcast" | "abandon", "batch_id"}
        {"step": "await_signature", "batch_id", "task_token"}          (lambda:invoke.waitForTaskToken)
        {"step": "check", "batch_id", "attempt", "max_checks"}   (the depth is configuration: SATFLOW_PAYOUT_CONFIRMATIONS)
        {"step": "post", "batch_id", "txid"}
Every result carries "next" (the ASL's Route reads it) and "attempt".

Admin operations (not ASL steps; for an API that invokes this function so that the signer key and the node
credentials stay out of the API function): {"step": "admin_bump_fee", "batch_id", "sat_per_vb"} and
{"step": "admin_submit_psbt", "batch_id", "psbt"} -> the batch view."""
from __future__ import annotations

from aws_lambda_powertools import Logger

from satflow import bootstrap
from satflow.app import payouts
from satflow.app.accounts import ADMIN

logger = Logger(service="satflow")

DEFAULT_MAX_CHECKS = 1440
_sender: list = []


def send_task_success(token: str, output: dict) -> None:
    """Answers a waiting AwaitSignature task (only when the batch no longer needs a signature)."""
    if not _sender:
        _sender.append(payouts.sfn_task_success_sender(bootstrap.aws_client("stepfunctions")))
    _sender[0](token, output)


def _check(svc, event: dict) -> dict:
    attempt = int(event.get("attempt") or 0)
    result = payouts.step_check(svc, event["batch_id"], attempt)
    if result.get("next") == "WAIT" and result["attempt"] >= int(event.get("max_checks") or DEFAULT_MAX_CHECKS):
        result["next"] = "RECONCILE"  # bounded: the batcher's recovery finishes it; nothing is undone
    return result


STEPS = {
    "prepare": lambda svc, e: payouts.step_prepare(svc, e["batch_id"]),
    "sign_hot": lambda svc, e: payouts.step_sign_hot(svc, e["batch_id"]),
    "await_signature": lambda svc, e: payouts.step_await_signature(svc, e["batch_id"], e["task_token"],
                                                                   send_task_success),
    "broadcast": lambda svc, e: payouts.step_broadcast(svc, e["batch_id"]),
    "check": _check,
    "post": lambda svc, e: payouts.step_post(svc, e["batch_id"], e["txid"]),
    "abandon": lambda svc, e: payouts.step_abandon(svc, e["batch_id"]),
    "admin_bump_fee": lambda svc, e: payouts.batch_view(
        payouts.bump_fee(svc, ADMIN, e["batch_id"], e["sat_per_vb"])),
    "admin_submit_psbt": lambda svc, e: payouts.batch_view(
        payouts.submit_signed_psbt(svc, ADMIN, e["batch_id"], e["psbt"], send_task_success=send_task_success)),
}


@logger.inject_lambda_context(clear_state=True)  # warm calls must not inherit another batch's keys
def lambda_handler(event, context):
    step = STEPS[event["step"]]
    logger.append_keys(batch_id=event.get("batch_id"), step=event["step"])
    result = step(bootstrap.services(), event)
    result.setdefault("attempt", 0)
    logger.info("payout step", extra={"next": result.get("next"), "status": result.get("status")})
    return result
