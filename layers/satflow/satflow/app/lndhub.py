"""Use cases: an LndHub-compatible API (the protocol of BlueWallet/Zeus/Alby "LndHub" wallets) on a satflow account.

Login = the account id, password = an API key of that account made for the wallet (``POST /v1/lndhub``). The
access and refresh tokens ``/auth`` hands out are that key itself: the wallet then calls the other routes with
``Authorization: Bearer <key>``, which the ordinary authentication checks (scopes included), and revoking the key
ends the wallet's access at once. Every call maps to the v1 use case of the same meaning, so ledger, limits,
risk, sanctions and audit are exactly those of the v1 API.

``/payinvoice``: LndHub wallets expect a final answer. The payment is created like ``POST /v1/payments`` (its
Idempotency-Key derived from the payment hash, so a retried call is the same payment), then the workflow is
awaited for at most ``PAY_WAIT_S``; still unresolved, the answer says so (``status: "pending"``, no preimage, no
error): unknown is not failed, and the funds stay reserved until the workflow or the reconciler finishes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from satflow.domain import errors
from satflow.domain.accounts import Principal, Scope
from satflow.domain.payments import PaymentStatus, decode_payment_request

from . import invoices, keys, payments
from .accounts import authenticate, require_scope
from .ports import Services

PAY_WAIT_S = 10.0  # inside the API function's 15 s timeout, with room for the create and the answer
POLL_S = 0.25
HISTORY_SCAN = 300  # ledger history entries scanned for /gettxs and /getpending


@dataclass(frozen=True)
class LndHubError(Exception):
    """An error in LndHub's shape: {"error": true, "code": n, "message": "..."} (codes of the LndHub protocol)."""

    status: int
    code: int
    message: str

    def body(self) -> dict:
        return {"error": True, "code": self.code, "message": self.message}


# LndHub's error codes: 1 bad auth, 2 not enough balance, 4 not a valid invoice, 6 something went wrong,
# 7 internal error, 8 bad arguments, 9 try again later, 10 payment failed.
def lndhub_error(exc: errors.SatflowError, status: int) -> LndHubError:
    if isinstance(exc, (errors.Unauthorized, errors.Forbidden)):
        return LndHubError(status, 1, "bad auth")
    if isinstance(exc, errors.InsufficientFunds):
        return LndHubError(status, 2, "not enough balance. Make sure you have at least 1% reserved for potential "
                                      "fees")
    if isinstance(exc, (errors.InvalidPaymentRequest, errors.WrongNetworkInvoice, errors.InvoiceExpired,
                        errors.AmountRequired, errors.AmountNotAllowed, errors.InvoiceNotPayable)):
        return LndHubError(status, 4, f"not a valid invoice: {exc.message}")
    if isinstance(exc, errors.ValidationError):
        return LndHubError(status, 8, f"Bad arguments: {exc.message}")
    if status >= 500:
        return LndHubError(status, 9 if status == 503 else 7, "try again later" if status == 503 else "internal error")
    return LndHubError(status, 6, exc.message)  # limits, risk, sanctions, conflicts: the v1 message says which


def create_wallet(svc: Services, principal: Principal, origin_base_url: str, scopes: object = None) -> dict:
    """An ``lndhub://<account_id>:<key>@<base>/lndhub`` URI for the caller's account, backed by a new key
    (default: read, receive, send; e.g. ["read", "receive"] for a receive-only wallet). Shown once."""
    issued = keys.issue_key(svc, principal, scopes if scopes is not None else ["read", "receive", "send"], "lndhub")
    login = issued.record.account_id
    return {"login": login, "password": issued.api_key, "key_id": issued.record.key_id,
            "url": f"{origin_base_url}/lndhub",
            "uri": f"lndhub://{login}:{issued.api_key}@{origin_base_url}/lndhub"}


def auth(svc: Services, kind: str | None, body: dict, client_ip: str | None = None) -> dict:
    """POST /auth?type=auth {login, password} or ?type=refresh_token {refresh_token}. A public route: throttled
    per client address like the LNURL routes."""
    from .lnurl import throttle

    throttle(svc, client_ip, "lndhub-auth")
    if kind == "refresh_token" or (kind is None and "refresh_token" in body):
        token = body.get("refresh_token")
        if not isinstance(token, str):
            raise errors.Unauthorized("bad auth")
        authenticate(svc, f"Bearer {token}")
        return {"access_token": token, "refresh_token": token}
    login, password = body.get("login"), body.get("password")
    if not isinstance(login, str) or not isinstance(password, str):
        raise errors.Unauthorized("bad auth")
    principal = authenticate(svc, f"Bearer {password}")
    if principal.account_id != login:  # the admin key, or another account's key: never an LndHub login
        raise errors.Unauthorized("bad auth")
    return {"access_token": password, "refresh_token": password}


def balance(svc: Services, principal: Principal) -> dict:
    account_id = require_scope(principal, Scope.READ)
    btc = next((b for b in svc.ledger.balances(account_id) if b.account.asset == "BTC"), None)
    available = 0 if btc is None else btc.available
    return {"BTC": {"AvailableBalance": available // 1000}}  # sat, rounded down: never show more than there is


def _sat(raw: object, field: str, *, allow_zero: bool = True) -> int:
    """LndHub sends amounts in sat, as a string or a number."""
    if isinstance(raw, bool):
        raise errors.ValidationError(f"{field} must be a whole number of sat", field=field)
    if isinstance(raw, str) and raw.isdigit() and len(raw) <= 16:
        raw = int(raw)
    if not isinstance(raw, int) or raw < (0 if allow_zero else 1):
        raise errors.ValidationError(f"{field} must be a whole number of sat", field=field)
    return raw


def add_invoice(svc: Services, principal: Principal, body: dict) -> dict:
    amount_sat = _sat(body.get("amt", 0), "amt")
    memo = body.get("memo") or None
    dhash = body.get("description_hash") or None
    inv = invoices.create_invoice(svc, principal, amount_msat=amount_sat * 1000, memo=memo, description_hash=dhash,
                                  metadata={"via": "lndhub"})
    return {"r_hash": inv.payment_hash, "payment_hash": inv.payment_hash, "payment_request": inv.payment_request,
            "pay_req": inv.payment_request, "add_index": "0", "amt": amount_sat, "description": inv.memo or ""}


def pay_invoice(svc: Services, principal: Principal, body: dict,
                sleep: Callable[[float], None] = time.sleep, wait_s: float | None = None) -> dict:
    require_scope(principal, Scope.SEND)
    invoice = body.get("invoice")
    amount = body.get("amount")
    amount_msat = None if amount in (None, "", 0, "0") else _sat(amount, "amount", allow_zero=False) * 1000
    request = decode_payment_request(invoice, svc.network, svc.unix_clock())
    payment = payments.create_payment(svc, principal, f"lndhub:{request.payment_hash}", request.payment_request,
                                      amount_msat)
    deadline = time.monotonic() + (PAY_WAIT_S if wait_s is None else wait_s)
    while payment.status in (PaymentStatus.PENDING, PaymentStatus.IN_REVIEW) and time.monotonic() < deadline:
        sleep(POLL_S)
        payment = svc.lightning.get_payment(payment.payment_id) or payment
    if payment.status is PaymentStatus.FAILED:
        raise LndHubError(200, 10, f"Payment failed: {payment.failure_reason or 'no route'}")
    fee_msat = payment.fee_msat or 0
    view = {
        "payment_error": "", "payment_hash": payment.payment_hash, "pay_req": payment.payment_request,
        "payment_preimage": payment.preimage, "payment_id": payment.payment_id,
        "status": "complete" if payment.status is PaymentStatus.SUCCEEDED else "pending",
        "num_satoshis": payment.amount_msat // 1000, "fee": fee_msat // 1000,
        "payment_route": {"total_amt": (payment.amount_msat + fee_msat) // 1000, "total_fees": fee_msat // 1000,
                          "total_amt_msat": payment.amount_msat + fee_msat, "total_fees_msat": fee_msat},
        "decoded": _decoded(request),
    }
    return view


def _decoded(request) -> dict:
    return {"destination": request.destination, "payment_hash": request.payment_hash,
            "num_satoshis": str((request.amount_msat or 0) // 1000), "num_msat": str(request.amount_msat or 0),
            "timestamp": str(request.created_at), "expiry": str(request.expires_at - request.created_at),
            "description": request.description or "", "cltv_expiry": str(request.min_final_cltv_expiry)}


def decode_invoice(svc: Services, principal: Principal, invoice: object) -> dict:
    if principal.account_id is None:
        raise errors.Forbidden("this route needs an account API key")
    return _decoded(decode_payment_request(invoice, svc.network, svc.unix_clock()))


def _payments(svc: Services, account_id: str) -> list:
    """The account's Lightning payments, newest first, from its ledger history (payment ids are the reserve
    transfer's id, or the pending id of its post/void)."""
    seen: list[str] = []
    cursor = None
    scanned = 0
    while scanned < HISTORY_SCAN:
        page = svc.ledger.history(account_id, "BTC", 100, cursor)
        for item in page.items:
            scanned += 1
            ref = (item.pending_id or item.transfer_id).split(":")[0]
            if ref.startswith("pay_") and ref not in seen:
                seen.append(ref)
        cursor = page.next_cursor
        if not cursor:
            break
    found = [svc.lightning.get_payment(pid) for pid in seen]
    return [p for p in found if p is not None and p.account_id == account_id]


def _tx(p) -> dict:
    fee = p.fee_msat or 0
    return {"type": "paid_invoice", "payment_hash": p.payment_hash, "payment_preimage": p.preimage or "",
            "value": p.amount_msat // 1000 + fee // 1000, "fee": fee // 1000, "timestamp": _unix(p.created_at),
            "memo": "", "pay_req": p.payment_request, "status": p.status.value.lower()}


def _unix(iso: str) -> int:
    return int(datetime.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp())


def get_txs(svc: Services, principal: Principal, limit: object, offset: object) -> list[dict]:
    account_id = require_scope(principal, Scope.READ)
    n, skip = _page(limit, 100), _page(offset, 0, allow_zero=True)
    done = [p for p in _payments(svc, account_id) if p.status is PaymentStatus.SUCCEEDED]
    return [_tx(p) for p in done[skip:skip + n]]


def get_pending(svc: Services, principal: Principal) -> list[dict]:
    account_id = require_scope(principal, Scope.READ)
    return [_tx(p) for p in _payments(svc, account_id)
            if p.status in (PaymentStatus.PENDING, PaymentStatus.IN_REVIEW)]


def _page(raw: object, default: int, allow_zero: bool = False) -> int:
    if raw in (None, ""):
        return default
    if not isinstance(raw, str) or not raw.isdigit() or len(raw) > 6 or (int(raw) == 0 and not allow_zero):
        raise errors.ValidationError("limit and offset must be whole numbers", field="limit")
    return min(int(raw), 1000)


def get_user_invoices(svc: Services, principal: Principal, limit: object) -> list[dict]:
    account_id = require_scope(principal, Scope.READ)
    n = min(_page(limit, 100), 100)
    found, _ = svc.lightning.invoices_of(account_id, n)
    now = svc.unix_clock()
    out = []
    for inv in found:
        inv = invoices.shown(inv, now)
        paid = inv.status.value == "SETTLED"
        out.append({"r_hash": inv.payment_hash, "payment_hash": inv.payment_hash,
                    "payment_request": inv.payment_request, "pay_req": inv.payment_request,
                    "description": inv.memo or "", "ispaid": paid, "amt": (inv.amount_received_msat if paid
                                                                            else inv.amount_msat) // 1000,
                    "expire_time": inv.expires_at_unix - _unix(inv.created_at), "timestamp": _unix(inv.created_at),
                    "type": "user_invoice", "add_index": "0", "status": inv.status.value.lower()})
    return out


def check_payment(svc: Services, principal: Principal, payment_hash: str) -> dict:
    inv = invoices.get_invoice(svc, principal, payment_hash)  # read scope; someone else's invoice is 404
    return {"paid": inv.status.value == "SETTLED"}


def get_info(svc: Services, principal: Principal) -> dict:
    if principal.account_id is None:
        raise errors.Forbidden("this route needs an account API key")
    info = svc.lnd().get_info()
    return {"alias": info.alias, "identity_pubkey": info.identity_pubkey, "block_height": info.block_height,
            "synced_to_chain": info.synced_to_chain, "chains": [{"chain": "bitcoin", "network": info.network}],
            "num_active_channels": info.num_active_channels}
