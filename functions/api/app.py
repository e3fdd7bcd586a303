"""HTTP API handler: parse the request, call one use case, shape the result. No business rules here."""
from __future__ import annotations

import importlib
import importlib.util
import json
import sys

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths

from satflow import bootstrap
from satflow.api.errors import error_body, status_for
from satflow.api.requests import decode_body, json_object, query_int
from satflow.domain.errors import SatflowError

logger = Logger(service="satflow")
app = APIGatewayHttpResolver()


def _lazy(name: str):
    """``satflow.app.<name>``, executed on its first attribute access (importlib's LazyLoader): a cold start
    imports no use case a request does not touch (risk, webhooks, audit, payments ... ~100 ms together), and
    /v1/health touches none. Behaviour is unchanged: the module runs exactly as a plain import would, once."""
    full = f"satflow.app.{name}"
    if full in sys.modules:
        return sys.modules[full]
    spec = importlib.util.find_spec(full)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    spec.loader.exec_module(module)
    setattr(sys.modules["satflow.app"], name, module)  # as a plain import binds it on the package
    return module


accounts, audit, invoices, limits, payments, risk, transfers, webhooks = map(_lazy, (
    "accounts", "audit", "invoices", "limits", "payments", "risk", "transfers", "webhooks"))


def _onchain(name: str):
    """On-chain use cases (embit and friends, ~60 ms cold) load on the first on-chain request, not at import."""
    return importlib.import_module(f"satflow.app.{name}")


def _json(status: int, body: dict) -> Response:
    return Response(status_code=status, content_type="application/json", body=json.dumps(body))


def _principal():
    return accounts.authenticate(bootstrap.services(), app.current_event.headers.get("authorization"))


def _body() -> str | None:
    return decode_body(lambda: app.current_event.decoded_body)


def _transfer_view(t, status: str = "SETTLED", review_id: str | None = None) -> dict:
    view = {"transfer_id": t.id, "status": status, "amount_msat": t.amount, "to": t.credit.owner,
            "created_at": t.created_at}
    if review_id is not None:
        view["review_id"] = review_id
    return view


@app.get("/v1/health")
def health():
    return _json(200, {"status": "ok"})


@app.get("/v1/openapi.json")
def openapi():
    from satflow.api.openapi import document  # the spec is built for this route only

    return _json(200, document())


@app.post("/v1/accounts")
def create_account():
    principal = _principal()
    data = json_object(_body(), {"external_ref", "tier"})
    account, api_key = accounts.create_account(bootstrap.services(), principal, data["external_ref"], data["tier"])
    return _json(201, {"account_id": account.account_id, "external_ref": account.external_ref,
                       "tier": account.tier, "status": account.status.value, "api_key": api_key})


@app.get("/v1/accounts/me")
def me():
    account = accounts.get_account(bootstrap.services(), _principal())
    return _json(200, {"account_id": account.account_id, "external_ref": account.external_ref,
                       "tier": account.tier, "status": account.status.value})


@app.get("/v1/balance")
def balance():
    items = transfers.balances(bootstrap.services(), _principal())
    return _json(200, {"balances": [
        {"asset": b.account.asset, "available_msat": b.available, "pending_out_msat": b.pending_out,
         "pending_in_msat": b.pending_in} for b in items]})


@app.post("/v1/transfers")
def create_transfer():
    principal = _principal()
    data = json_object(_body(), {"to", "amount_msat"}, {"memo"})
    outcome = transfers.create_transfer(
        bootstrap.services(), principal, app.current_event.headers.get("idempotency-key"), data["to"],
        data["amount_msat"], data.get("memo"))
    if not outcome.replayed:
        logger.info("transfer accepted", extra={"transfer_id": outcome.transfer.id, "status": outcome.status,
                                                "amount_msat": outcome.transfer.amount})
    # 201: settled. 202: held by a risk review (funds reserved) or, on a replay, refused by it; a replay with the
    # same Idempotency-Key tells the current state.
    return _json(201 if outcome.status == "SETTLED" else 202,
                 _transfer_view(outcome.transfer, outcome.status, outcome.review_id))


@app.post("/v1/admin/adjustments")
def admin_adjustment():
    principal = _principal()
    data = json_object(_body(), {"account_id", "amount_msat", "direction", "reason"})
    outcome = transfers.adjust(
        bootstrap.services(), principal, app.current_event.headers.get("idempotency-key"), data["account_id"],
        data["amount_msat"], data["direction"], data["reason"])
    t = outcome.transfer
    logger.info("admin adjustment", extra={"transfer_id": t.id, "template": t.template, "amount_msat": t.amount})
    return _json(201, {"adjustment_id": t.id, "account_id": data["account_id"], "direction": data["direction"],
                       "amount_msat": t.amount, "reason": t.memo, "created_at": t.created_at})


@app.get("/v1/transactions")
def transactions():
    principal = _principal()
    params = app.current_event.query_string_parameters or {}
    page = transfers.history(bootstrap.services(), principal, query_int(params.get("limit"), "limit"),
                             params.get("cursor"))
    return _json(200, {"items": [_history_view(h) for h in page.items], "next_cursor": page.next_cursor})


@app.post("/v1/invoices")
def create_invoice():
    principal = _principal()
    data = json_object(_body() or "{}", set(), {"amount_msat", "memo", "description_hash", "expiry_s", "metadata"})
    invoice = invoices.create_invoice(bootstrap.services(), principal, **data)
    return _json(201, _invoice_view(invoice))


@app.get("/v1/invoices/<payment_hash>")
def get_invoice(payment_hash: str):
    return _json(200, _invoice_view(invoices.get_invoice(bootstrap.services(), _principal(), payment_hash)))


def _invoice_view(inv) -> dict:
    return {"payment_hash": inv.payment_hash, "payment_request": inv.payment_request, "amount_msat": inv.amount_msat,
            "expires_at": inv.expires_at, "status": inv.status.value, "amount_received_msat": inv.amount_received_msat,
            "settled_at": inv.settled_at, "memo": inv.memo, "metadata": dict(inv.metadata),
            "created_at": inv.created_at}


@app.post("/v1/payments")
def create_payment():
    principal = _principal()
    data = json_object(_body(), {"payment_request"}, {"amount_msat", "max_fee_msat"})
    payment = payments.create_payment(
        bootstrap.services(), principal, app.current_event.headers.get("idempotency-key"), data["payment_request"],
        data.get("amount_msat"), data.get("max_fee_msat"))
    return _json(202, _payment_view(payment))


@app.get("/v1/payments/<payment_id>")
def get_payment(payment_id: str):
    return _json(200, _payment_view(payments.get_payment(bootstrap.services(), _principal(), payment_id)))


def _payment_view(p) -> dict:
    return {"payment_id": p.payment_id, "payment_hash": p.payment_hash, "status": p.status.value,
            "amount_msat": p.amount_msat, "max_fee_msat": p.fee_reserve_msat, "fee_msat": p.fee_msat,
            "preimage": p.preimage, "failure_reason": p.failure_reason, "internal": p.internal,
            "created_at": p.created_at}


@app.post("/v1/addresses")
def create_address():
    addresses = _onchain("addresses")
    address = addresses.new_deposit_address(bootstrap.services(), _principal())
    return _json(201, {"address": address.address, "index": address.index})


@app.get("/v1/deposits")
def list_deposits():
    deposits = _onchain("deposits")
    principal = _principal()
    params = app.current_event.query_string_parameters or {}
    page = deposits.list_deposits(bootstrap.services(), principal, query_int(params.get("limit"), "limit"),
                                  params.get("cursor"))
    return _json(200, {"items": [d.to_dict() for d in page.items], "next_cursor": page.next_cursor})


@app.post("/v1/payouts")
def create_payout():
    payouts = _onchain("payouts")
    principal = _principal()
    data = json_object(_body(), {"address", "amount_sat"}, {"priority"})
    payout = payouts.create_payout(bootstrap.services(), principal, app.current_event.headers.get("idempotency-key"),
                                   data["address"], data["amount_sat"], data.get("priority", "normal"))
    return _json(202, payouts.payout_view(payout))


@app.get("/v1/payouts/<payout_id>")
def get_payout(payout_id: str):
    payouts = _onchain("payouts")
    return _json(200, payouts.payout_view(payouts.get_payout(bootstrap.services(), _principal(), payout_id)))


@app.post("/v1/payouts/<payout_id>/cancel")
def cancel_payout(payout_id: str):
    payouts = _onchain("payouts")
    payout = payouts.cancel_payout(bootstrap.services(), _principal(), payout_id,
                                   send_task_success=bootstrap.payout_task_sender())
    return _json(200, payouts.payout_view(payout))


@app.get("/v1/admin/payout-batches")
def list_payout_batches():
    payouts = _onchain("payouts")
    batches = payouts.list_open_batches(bootstrap.services(), _principal())
    return _json(200, {"items": [payouts.batch_view(b) for b in batches]})


@app.get("/v1/admin/payout-batches/<batch_id>")
def get_payout_batch(batch_id: str):
    payouts = _onchain("payouts")
    return _json(200, payouts.batch_view(payouts.get_batch(bootstrap.services(), _principal(), batch_id)))


@app.get("/v1/admin/payout-batches/<batch_id>/psbt")
def export_payout_psbt(batch_id: str):
    payouts = _onchain("payouts")
    psbt = payouts.export_psbt(bootstrap.services(), _principal(), batch_id)
    return _json(200, {"batch_id": batch_id, "psbt": psbt})


@app.post("/v1/admin/payout-batches/<batch_id>/psbt")
def submit_payout_psbt(batch_id: str):
    payouts = _onchain("payouts")
    principal = _principal()
    data = json_object(_body(), {"psbt"})
    batch = payouts.submit_signed_psbt(bootstrap.services(), principal, batch_id, data["psbt"],
                                       send_task_success=bootstrap.payout_task_sender())
    return _json(200, payouts.batch_view(batch))


@app.get("/v1/admin/sanctions")
def sanctions_status():
    from satflow.app import sanctions  # admin-only route: not on every cold start

    return _json(200, sanctions.sanctions_status(bootstrap.services(), _principal()))
@app.get("/v1/admin/reviews")
def list_reviews():
    principal = _principal()
    params = app.current_event.query_string_parameters or {}
    items, cursor = risk.list_reviews(bootstrap.services(), principal, params.get("status"),
                                      query_int(params.get("limit"), "limit"), params.get("cursor"))
    return _json(200, {"items": [risk.review_view(r) for r in items], "next_cursor": cursor})


def _decide_review(review_id: str, approve: bool):
    principal = _principal()
    accounts.require_admin(principal)  # before reading the body: a customer key is 403 whatever it sends
    data = json_object(_body() or "{}", set(), {"note"})
    outcome = risk.decide_review(bootstrap.services(), principal, review_id, approve, data.get("note"),
                                 notify=bootstrap.review_notifier())
    logger.info("review decided", extra={"review_id": outcome.review.review_id, "status": outcome.review.status.value,
                                         "workflow": outcome.workflow, "replayed": outcome.replayed})
    return _json(200, {**risk.review_view(outcome.review), "workflow": outcome.workflow})


@app.post("/v1/admin/reviews/<review_id>/approve")
def approve_review(review_id: str):
    return _decide_review(review_id, True)


@app.post("/v1/admin/reviews/<review_id>/reject")
def reject_review(review_id: str):
    return _decide_review(review_id, False)


@app.get("/v1/limits")
def get_limits():
    return _json(200, limits.get_limits(bootstrap.services(), _principal()))


@app.route("/v1/admin/accounts/<account_id>", method="PATCH")
def admin_update_account(account_id: str):
    principal = _principal()
    data = json_object(_body(), set(), {"tier", "status"})
    account = accounts.update_account(bootstrap.services(), principal, account_id, tier=data.get("tier"),
                                      status=data.get("status"))
    return _json(200, {"account_id": account.account_id, "external_ref": account.external_ref,
                       "tier": account.tier, "status": account.status.value})


@app.post("/v1/webhooks")
def create_webhook():
    principal = _principal()
    data = json_object(_body(), {"url", "events"})
    sub = webhooks.create_webhook(bootstrap.services(), principal, data["url"], data["events"])
    logger.info("webhook created", extra={"webhook_id": sub.subscription_id, "events": list(sub.events)})
    return _json(201, webhooks.subscription_view(sub, with_secret=True))


@app.get("/v1/webhooks")
def list_webhooks():
    items = webhooks.list_webhooks(bootstrap.services(), _principal())
    return _json(200, {"items": [webhooks.subscription_view(s) for s in items]})


@app.get("/v1/webhooks/<webhook_id>")
def get_webhook(webhook_id: str):
    return _json(200, webhooks.subscription_view(webhooks.get_webhook(bootstrap.services(), _principal(), webhook_id)))


@app.delete("/v1/webhooks/<webhook_id>")
def delete_webhook(webhook_id: str):
    webhooks.delete_webhook(bootstrap.services(), _principal(), webhook_id)
    return _json(200, {"id": webhook_id, "deleted": True})


@app.get("/v1/webhooks/<webhook_id>/deliveries")
def list_webhook_deliveries(webhook_id: str):
    principal = _principal()
    params = app.current_event.query_string_parameters or {}
    items, cursor = webhooks.list_deliveries(bootstrap.services(), principal, webhook_id, params.get("status"),
                                             query_int(params.get("limit"), "limit"), params.get("cursor"))
    return _json(200, {"items": [d.view() for d in items], "next_cursor": cursor})


@app.post("/v1/webhooks/<webhook_id>/replay")
def replay_webhook(webhook_id: str):
    principal = _principal()
    data = json_object(_body() or "{}", set(), {"event_ids"})
    replayed = webhooks.replay(bootstrap.services(), principal, webhook_id, data.get("event_ids"))
    return _json(202, {"id": webhook_id, "replayed": replayed})


@app.get("/v1/admin/audit")
def admin_list_audit():
    principal = _principal()
    q = app.current_event.query_string_parameters or {}
    page = audit.list_audit(bootstrap.services(), principal, shard=q.get("shard"), limit=q.get("limit"),
                            cursor=q.get("cursor"))
    return _json(200, page.to_dict())


@app.get("/v1/admin/audit/verify")
def admin_verify_audit():
    return _json(200, audit.verify_audit(bootstrap.services(), _principal()))


def _history_view(h) -> dict:
    status = {"POSTED": "SETTLED", "PENDING": "PENDING", "POST_PENDING": "SETTLED", "VOID_PENDING": "VOIDED"}
    view = {"transfer_id": h.transfer_id, "type": h.template, "direction": h.direction,
            "amount_msat": h.amount, "status": status[h.kind.value], "counterparty": h.counterparty,
            "memo": h.memo, "created_at": h.created_at}
    if h.pending_id:
        view["pending_id"] = h.pending_id
    return view


@app.exception_handler(SatflowError)
def handle_domain_error(exc: SatflowError):
    status = status_for(exc)
    if status >= 500:
        logger.exception("server-side domain error", extra={"code": exc.code})
    return _json(status, error_body(exc.code, exc.message))


@app.exception_handler(Exception)
def handle_unexpected(exc: Exception):
    # Never leak internals; the log carries the stack trace and the request id.
    logger.exception("unhandled error")
    return _json(500, error_body("INTERNAL", "internal error"))


@app.not_found
def not_found(exc):
    return _json(404, error_body("NOT_FOUND", "no such route"))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
def lambda_handler(event, context):
    return app.resolve(event, context)
