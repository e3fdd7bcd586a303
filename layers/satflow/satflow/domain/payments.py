"""Outbound Lightning payments (pure): invoice validation, the fee-reserve policy, and the decision that turns
each node outcome into the next step. Unknown is never failed (design rule 6)."""
from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

from . import errors
from .lightning import FailureReason, PaymentOutcome
from .money import MAX_AMOUNT_MSAT, validate_amount

# BOLT11 currency prefix per bitcoin network
_CURRENCY = {"bitcoin": "bc", "testnet": "tb", "signet": "tbs", "regtest": "bcrt"}
MAX_PAYMENT_REQUEST = 7_089  # the longest a BOLT11 string can be (QR version 40 alphanumeric)


@dataclass(frozen=True)
class PaymentRequest:
    """What we need from a BOLT11 invoice, decoded and checked."""

    payment_request: str
    payment_hash: str
    amount_msat: int | None  # None: amount-less invoice
    destination: str  # payee node pubkey (hex)
    created_at: int  # unix seconds
    expires_at: int  # unix seconds
    min_final_cltv_expiry: int
    description: str | None


def decode_payment_request(payment_request: object, network: str, now: int) -> PaymentRequest:
    """Decode and validate a BOLT11 string for ``network`` at unix time ``now``. Every failure is a 400 code."""
    if not isinstance(payment_request, str) or not 1 <= len(payment_request) <= MAX_PAYMENT_REQUEST:
        raise errors.InvalidPaymentRequest("payment_request must be a BOLT11 string", field="payment_request")
    text = payment_request.strip()
    if text.lower().startswith("lightning:"):
        text = text[len("lightning:"):]
    _check_amount_precision(text)  # before decoding: the library would silently round the amount
    import bolt11  # ~40 ms cold: only the payment path pays it

    try:
        decoded = bolt11.decode(text)
    except Exception as exc:  # the library raises assorted types (Bolt11Exception, ValueError, bech32 errors)
        raise errors.InvalidPaymentRequest("payment_request is not a valid BOLT11 invoice",
                                           field="payment_request") from exc
    expected = _CURRENCY.get(network)
    if decoded.currency != expected:
        raise errors.WrongNetworkInvoice(
            f"the invoice is for the '{decoded.currency}' network, this service runs on {network}",
            field="payment_request")
    if not decoded.payment_hash or not decoded.payee:
        raise errors.InvalidPaymentRequest("the invoice has no payment hash or payee", field="payment_request")
    expires_at = int(decoded.date) + int(decoded.expiry if decoded.expiry is not None else 3600)
    if expires_at <= now:
        raise errors.InvoiceExpired("the invoice has expired", field="payment_request")
    if expires_at - now > MAX_INVOICE_LIFETIME_S:
        # A payment whose send never reached the node is voided only once its invoice has expired: an invoice
        # valid for years would hold the reservation (and the hash) for years.
        raise errors.InvalidPaymentRequest("the invoice is valid for more than 30 days", field="payment_request")
    amount = decoded.amount_msat
    return PaymentRequest(
        payment_request=text.lower(), payment_hash=decoded.payment_hash, destination=decoded.payee,
        amount_msat=int(amount) if amount else None, created_at=int(decoded.date), expires_at=expires_at,
        min_final_cltv_expiry=int(decoded.min_final_cltv_expiry or 18), description=decoded.description,
    )


MAX_INVOICE_LIFETIME_S = 30 * 24 * 3600
_HRP = re.compile(r"^ln(?:bcrt|bc|tbs|tb|sb)(?P<digits>[0-9]*)(?P<multiplier>[munp]?)$")


def _check_amount_precision(text: str) -> None:
    """The bolt11 library drops fractions of a msat: "lnbcrt1p..." (0.1 msat) would read as amount-less and
    "15p" as 1 msat. An amount must be a whole, non-zero number of msat (pico amounts end in 0)."""
    hrp = text.lower()[: text.rfind("1")]
    match = _HRP.match(hrp)
    if match is None:
        raise errors.InvalidPaymentRequest("payment_request is not a valid BOLT11 invoice", field="payment_request")
    digits, multiplier = match["digits"], match["multiplier"]
    if multiplier and not digits:
        raise errors.InvalidPaymentRequest("the invoice amount has a multiplier but no digits", field="payment_request")
    if digits and (int(digits) == 0 or digits.startswith("0")):
        raise errors.InvalidPaymentRequest("the invoice amount is zero or not canonical", field="payment_request")
    if multiplier == "p" and int(digits) % 10:
        raise errors.InvalidPaymentRequest("the invoice amount is a fraction of a millisatoshi",
                                           field="payment_request")


def payable_amount(request: PaymentRequest, amount_msat: object) -> int:
    """The amount to pay: the invoice's own, or the caller's for an amount-less invoice."""
    if request.amount_msat is None:
        if amount_msat is None:
            raise errors.AmountRequired("this invoice has no amount: set amount_msat", field="amount_msat")
        return validate_amount(amount_msat)
    if amount_msat is not None and amount_msat != request.amount_msat:
        raise errors.AmountNotAllowed("the invoice fixes the amount; omit amount_msat or repeat it exactly",
                                      field="amount_msat")
    return validate_amount(request.amount_msat)


# Fee reserve policy: 1% of the amount, at least 10 sat, capped by the caller's max_fee_msat. The reserve is what
# the ledger holds back and exactly the fee_limit_msat sent to LND, so a route can never cost more than reserved.
FEE_RESERVE_PPM = 10_000
FEE_RESERVE_MIN_MSAT = 10_000


def fee_reserve(amount_msat: int, max_fee_msat: object = None) -> int:
    policy = max(FEE_RESERVE_MIN_MSAT, math.ceil(amount_msat * FEE_RESERVE_PPM / 1_000_000))
    if max_fee_msat is None:
        return policy
    if isinstance(max_fee_msat, bool) or not isinstance(max_fee_msat, int) or not 0 <= max_fee_msat <= MAX_AMOUNT_MSAT:
        raise errors.ValidationError("max_fee_msat must be a non-negative integer", field="max_fee_msat")
    return min(policy, max_fee_msat)  # 0 is allowed: LND then takes zero-fee routes only


class PaymentStatus(str, enum.Enum):
    PENDING = "PENDING"
    IN_REVIEW = "IN_REVIEW"  # held by the risk review: reserved, never sent until approved
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class Next(str, enum.Enum):
    """What the workflow does after an outcome (the ASL Choice reads this)."""

    POST = "POST"  # SUCCEEDED: post amount + actual fee, the rest of the reserve returns
    VOID = "VOID"  # FAILED, or provably never sent and no longer sendable
    WAIT = "WAIT"  # anything else: wait, then track; unknown is never failed


# Seconds after an invoice's expiry before "LND has no record of it" proves it can no longer be paid.
NOT_FOUND_GRACE_S = 120


def decide(outcome: PaymentOutcome, *, send_rejected: bool, invoice_expires_at: int, now: int) -> Next:
    """The single place deciding what an outcome means for the ledger."""
    status = outcome.status
    if status == "SUCCEEDED":
        return Next.POST
    if status == "FAILED":
        return Next.VOID
    if status == "NOT_FOUND":
        # LND has no record of the hash. That voids only once the send can no longer happen: our single send
        # attempt was refused before it reached the router, or the invoice is expired past a grace period.
        if send_rejected or now > invoice_expires_at + NOT_FOUND_GRACE_S:
            return Next.VOID
    return Next.WAIT


def failure_reason(outcome: PaymentOutcome) -> str:
    reason = getattr(outcome, "reason", None)
    if isinstance(reason, enum.Enum):
        return reason.value
    return "NOT_SENT" if outcome.status in ("NOT_FOUND", "REJECTED") else FailureReason.ERROR.value


@dataclass(frozen=True)
class Payment:
    payment_id: str
    account_id: str
    payment_hash: str
    payment_request: str
    destination: str
    amount_msat: int
    fee_reserve_msat: int
    request_hash: str  # fingerprint of the request: same Idempotency-Key + other body -> 409
    invoice_expires_at: int  # unix seconds
    internal: bool
    status: PaymentStatus
    amountless: bool  # the invoice had no amount: LND needs amt_msat with the send
    created_at: str
    updated_at: str
    fee_msat: int | None = None
    preimage: str | None = None
    failure_reason: str | None = None
    send_attempted_at: str | None = None
    send_rejected: bool = False
