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
from satflow.domain.errors import SatflowError, ValidationError

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


# Each route's declared auth ("admin", a scope, "none"), keyed like API Gateway's routeKey; built on the first
# authenticated request (the OpenAPI table is not loaded at import: /v1/health stays a light cold start).
_ROUTE_AUTH: dict[str, str | None] = {}


def _declared_auth(route_key: str) -> str | None:
    if not _ROUTE_AUTH:
        from satflow.api.openapi import ROUTES

        _ROUTE_AUTH.update({f"{r.method} {r.path}": r.auth for r in ROUTES})
    return _ROUTE_AUTH.get(route_key)


def _principal():
    """Authenticate, then authorize against the route's declared auth, before any handler reads the body (every
    handler calls this first): a customer key on an admin route is 403 whatever body it sent."""
    principal = accounts.authenticate(bootstrap.services(), app.current_event.headers.get("authorization"))
    accounts.authorize_route(principal, _declared_auth(app.current_event.route_key))
    return principal


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
    from satflow.app import keys  # idempotent with an Idempotency-Key: a retry returns a new key (issue 15)

    created = keys.create_account(bootstrap.services(), principal, data["external_ref"], data["tier"],
                                  app.current_event.headers.get("idempotency-key"))
    account = created.account
    return _json(201, {"account_id": account.account_id, "external_ref": account.external_ref,
                       "tier": account.tier, "status": account.status.value, "api_key": created.api_key,
                       "key_id": created.key_id, "replayed": created.replayed})


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


# --- Solvency: checks, the send breaker, suspense items (admin) --------------------------------------------------
@app.get("/v1/admin/solvency")
def admin_solvency():
    from satflow.app import solvency

    principal = _principal()
    q = app.current_event.query_string_parameters or {}
    return _json(200, solvency.solvency_view(bootstrap.services(), principal, query_int(q.get("limit"), "limit"),
                                             q.get("cursor")))


@app.post("/v1/admin/solvency/resume")
def admin_solvency_resume():
    from satflow.app import solvency

    principal = _principal()
    accounts.require_admin(principal)
    data = json_object(_body(), {"reason"})
    state = solvency.resume(bootstrap.services(), principal, data["reason"])
    logger.warning("solvency breaker resumed by admin", extra={"reason": data["reason"]})
    return _json(200, {"breaker": state.to_dict()})


@app.post("/v1/admin/solvency/capital")
def admin_solvency_capital():
    from satflow.app import solvency

    principal = _principal()
    accounts.require_admin(principal)
    data = json_object(_body(), {"source", "amount_msat", "direction", "reason"})
    t = solvency.book_capital(bootstrap.services(), principal, app.current_event.headers.get("idempotency-key"),
                              data["source"], data["amount_msat"], data["direction"], data["reason"])
    return _json(201, {"transfer_id": t.id, "source": data["source"], "direction": data["direction"],
                       "amount_msat": t.amount, "reason": t.memo, "created_at": t.created_at})


@app.get("/v1/admin/suspense")
def admin_list_suspense():
    from satflow.app import solvency

    principal = _principal()
    q = app.current_event.query_string_parameters or {}
    items = solvency.list_suspense(bootstrap.services(), principal, q.get("status"))
    return _json(200, {"items": [i.to_dict() for i in items]})


@app.post("/v1/admin/suspense/<suspense_id>/assign")
def admin_assign_suspense(suspense_id: str):
    from satflow.app import solvency

    principal = _principal()
    accounts.require_admin(principal)
    data = json_object(_body(), {"to", "reason"})
    item = solvency.assign_suspense(bootstrap.services(), principal, suspense_id, data["to"], data["reason"])
    return _json(200, item.to_dict())


def _history_view(h) -> dict:
    status = {"POSTED": "SETTLED", "PENDING": "PENDING", "POST_PENDING": "SETTLED", "VOID_PENDING": "VOIDED"}
    view = {"transfer_id": h.transfer_id, "type": h.template, "direction": h.direction,
            "amount_msat": h.amount, "status": status[h.kind.value], "counterparty": h.counterparty,
            "memo": h.memo, "created_at": h.created_at}
    if h.pending_id:
        view["pending_id"] = h.pending_id
    return view


# ===================================================================================== wallet ecosystem (issue 15)
# Keys with scopes, Lightning Address + LNURL-pay/withdraw (public routes: throttled, LNURL error shape) and the
# LndHub-compatible API (LndHub error shape). Use cases: app/keys.py, app/lnurl.py, app/lndhub.py.
def _origin():
    from satflow.app.lnurl import Origin

    ctx = app.current_event.request_context
    proto = (app.current_event.headers.get("x-forwarded-proto") or "https").split(",")[0].strip()
    return Origin(f"{'http' if proto == 'http' else 'https'}://{ctx.domain_name}")


def _client_ip() -> str | None:
    return app.current_event.request_context.http.source_ip


def _query() -> dict:
    return app.current_event.query_string_parameters or {}


def _key_view(issued) -> dict:
    return {**issued.record.view(), "api_key": issued.api_key}


@app.post("/v1/keys")
def create_key():
    from satflow.app import keys

    principal = _principal()
    data = json_object(_body(), {"scopes"}, {"label"})
    return _json(201, _key_view(keys.issue_key(bootstrap.services(), principal, data["scopes"], data.get("label"))))


@app.get("/v1/keys")
def list_keys():
    from satflow.app import keys

    return _json(200, {"items": [k.view() for k in keys.list_keys(bootstrap.services(), _principal())]})


@app.post("/v1/keys/<key_id>/rotate")
def rotate_key(key_id: str):
    from satflow.app import keys

    return _json(201, _key_view(keys.rotate_key(bootstrap.services(), _principal(), key_id)))


@app.delete("/v1/keys/<key_id>")
def revoke_key(key_id: str):
    from satflow.app import keys

    return _json(200, keys.revoke_key(bootstrap.services(), _principal(), key_id).view())


@app.post("/v1/admin/accounts/<account_id>/keys")
def admin_create_key(account_id: str):
    from satflow.app import keys

    principal = _principal()
    accounts.require_admin(principal)
    data = json_object(_body(), {"scopes"}, {"label"})
    issued = keys.issue_key(bootstrap.services(), principal, data["scopes"], data.get("label"), account_id=account_id)
    return _json(201, _key_view(issued))


@app.delete("/v1/admin/accounts/<account_id>/keys/<key_id>")
def admin_revoke_key(account_id: str, key_id: str):
    from satflow.app import keys

    principal = _principal()
    accounts.require_admin(principal)
    return _json(200, keys.revoke_key(bootstrap.services(), principal, key_id, account_id=account_id).view())


@app.post("/v1/lightning-address")
def claim_lightning_address():
    from satflow.app import lnurl

    principal = _principal()
    data = json_object(_body(), {"username"})
    view, created = lnurl.claim_address(bootstrap.services(), principal, data["username"], _origin())
    return _json(201 if created else 200, view)


@app.get("/v1/lightning-address")
def get_lightning_address():
    from satflow.app import lnurl

    return _json(200, lnurl.get_address(bootstrap.services(), _principal(), _origin()))


@app.put("/v1/admin/accounts/<account_id>/lightning-address")
def admin_set_lightning_address(account_id: str):
    from satflow.app import lnurl

    principal = _principal()
    accounts.require_admin(principal)
    data = json_object(_body(), {"username"})
    return _json(200, lnurl.admin_set_address(bootstrap.services(), principal, account_id, data["username"],
                                              _origin()))


@app.post("/v1/lnurl/withdraw-links")
def create_withdraw_link():
    from satflow.app import lnurl

    principal = _principal()
    data = json_object(_body(), {"min_withdrawable_msat", "max_withdrawable_msat"},
                       {"uses", "expiry_s", "description"})
    return _json(201, lnurl.create_withdraw_link(bootstrap.services(), principal, _origin(), **data))


@app.get("/v1/lnurl/withdraw-links")
def list_withdraw_links():
    from satflow.app import lnurl

    return _json(200, {"items": lnurl.list_withdraw_links(bootstrap.services(), _principal())})


@app.delete("/v1/lnurl/withdraw-links/<link_id>")
def disable_withdraw_link(link_id: str):
    from satflow.app import lnurl

    return _json(200, lnurl.disable_withdraw_link(bootstrap.services(), _principal(), link_id))


def _lnurl_public(handler):
    """LNURL routes answer errors as LUD-06 says: {"status": "ERROR", "reason": ...} (with the HTTP status of the
    error; unknown addresses and links are all the same 404)."""
    import functools

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return _json(200, handler(*args, **kwargs))
        except SatflowError as exc:
            status = status_for(exc)
            if status >= 500:
                logger.exception("server-side domain error", extra={"code": exc.code})
            return _json(status, {"status": "ERROR", "reason": exc.message})

    return wrapped


@app.get("/.well-known/lnurlp/<username>")
@_lnurl_public
def lnurlp_request(username: str):
    from satflow.app import lnurl

    return lnurl.pay_request(bootstrap.services(), username, _origin(), _client_ip())


@app.get("/lnurlp/<username>/callback")
@_lnurl_public
def lnurlp_callback(username: str):
    from satflow.app import lnurl

    q = _query()
    return lnurl.pay_callback(bootstrap.services(), username, q.get("amount"), q.get("comment"), _origin(),
                              _client_ip())


@app.get("/lnurlw/<k1>")
@_lnurl_public
def lnurlw_request(k1: str):
    from satflow.app import lnurl

    return lnurl.withdraw_request(bootstrap.services(), k1, _origin(), _client_ip())


@app.get("/lnurlw/<k1>/callback")
@_lnurl_public
def lnurlw_callback(k1: str):
    from satflow.app import lnurl

    return lnurl.withdraw_callback(bootstrap.services(), k1, _query().get("pr"), _client_ip())


@app.get("/v1/invoices")
def list_invoices():
    from satflow.app import statements

    principal = _principal()
    q = _query()
    page = statements.list_invoices(bootstrap.services(), principal, status=q.get("status"), since=q.get("from"),
                                    until=q.get("to"), limit=q.get("limit"), cursor=q.get("cursor"))
    return _json(200, {"items": [_invoice_view(i) for i in page.items], "next_cursor": page.next_cursor})


@app.get("/v1/transactions/export")
def export_transactions():
    from satflow.app import statements

    principal = _principal()
    q = _query()
    body, next_cursor = statements.export_transactions_csv(bootstrap.services(), principal, since=q.get("from"),
                                                           until=q.get("to"), cursor=q.get("cursor"))
    headers = {"Content-Disposition": 'attachment; filename="transactions.csv"'}
    if next_cursor:
        headers["X-Next-Cursor"] = next_cursor
    return Response(status_code=200, content_type="text/csv; charset=utf-8", body=body, headers=headers)


@app.post("/v1/lndhub")
def create_lndhub_wallet():
    from satflow.app import lndhub

    principal = _principal()
    data = json_object(_body() or "{}", set(), {"scopes"})
    return _json(201, lndhub.create_wallet(bootstrap.services(), principal, _origin().base_url, data.get("scopes")))


def _lndhub_body() -> dict:
    """LndHub clients send JSON or a form; extra fields are tolerated (wallets send what they like)."""
    from urllib.parse import parse_qsl

    raw = _body() or ""
    if len(raw) > 16 * 1024:
        raise ValidationError("the body is too large")
    if "application/x-www-form-urlencoded" in (app.current_event.headers.get("content-type") or ""):
        return dict(parse_qsl(raw))
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise ValidationError("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object")
    return data


def _lndhub(handler):
    """LndHub's error shape {"error": true, "code": n, "message": ...}, with the HTTP status of the error (as
    lndhub.go does); a failed payment is a 200 carrying code 10, as LndHub wallets expect."""
    import functools

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        from satflow.app.lndhub import LndHubError, lndhub_error

        try:
            return _json(200, handler(*args, **kwargs))
        except LndHubError as exc:
            return _json(exc.status, exc.body())
        except SatflowError as exc:
            status = status_for(exc)
            if status >= 500:
                logger.exception("server-side domain error", extra={"code": exc.code})
            err = lndhub_error(exc, status)
            return _json(err.status, err.body())

    return wrapped


@app.post("/lndhub/auth")
@_lndhub
def lndhub_auth():
    from satflow.app import lndhub

    return lndhub.auth(bootstrap.services(), _query().get("type"), _lndhub_body(), _client_ip())


@app.post("/lndhub/addinvoice")
@_lndhub
def lndhub_add_invoice():
    from satflow.app import lndhub

    principal = _principal()
    return lndhub.add_invoice(bootstrap.services(), principal, _lndhub_body())


@app.post("/lndhub/payinvoice")
@_lndhub
def lndhub_pay_invoice():
    from satflow.app import lndhub

    principal = _principal()
    return lndhub.pay_invoice(bootstrap.services(), principal, _lndhub_body())


@app.get("/lndhub/balance")
@_lndhub
def lndhub_balance():
    from satflow.app import lndhub

    return lndhub.balance(bootstrap.services(), _principal())


@app.get("/lndhub/gettxs")
@_lndhub
def lndhub_get_txs():
    from satflow.app import lndhub

    q = _query()
    return lndhub.get_txs(bootstrap.services(), _principal(), q.get("limit"), q.get("offset"))


@app.get("/lndhub/getuserinvoices")
@_lndhub
def lndhub_get_user_invoices():
    from satflow.app import lndhub

    return lndhub.get_user_invoices(bootstrap.services(), _principal(), _query().get("limit"))


@app.get("/lndhub/getpending")
@_lndhub
def lndhub_get_pending():
    from satflow.app import lndhub

    return lndhub.get_pending(bootstrap.services(), _principal())


@app.get("/lndhub/decodeinvoice")
@_lndhub
def lndhub_decode_invoice():
    from satflow.app import lndhub

    return lndhub.decode_invoice(bootstrap.services(), _principal(), _query().get("invoice"))


@app.get("/lndhub/checkpayment/<payment_hash>")
@_lndhub
def lndhub_check_payment(payment_hash: str):
    from satflow.app import lndhub

    return lndhub.check_payment(bootstrap.services(), _principal(), payment_hash)


@app.get("/lndhub/getinfo")
@_lndhub
def lndhub_get_info():
    from satflow.app import lndhub

    return lndhub.get_info(bootstrap.services(), _principal())


@app.get("/lndhub/getbtc")
@_lndhub
def lndhub_get_btc():
    """On-chain deposits through LndHub are not offered (a GET must not derive addresses); /v1/addresses does."""
    _principal()
    return []


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
