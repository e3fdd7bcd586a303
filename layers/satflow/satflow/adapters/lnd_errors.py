"""The one table from LND's words to domain results (payment statuses, failure reasons, error messages).

Nothing outside the LND adapter reads LND strings. Keys are ``(kind, LND string)``:

* ``STATUS``         - ``Payment.status`` -> the outcome class (built from the payment body by the adapter)
* ``FAILURE_REASON`` - ``Payment.failure_reason`` -> :class:`FailureReason`
* ``MESSAGE``        - a substring of an error ``message`` -> a ready outcome (payment calls) or an error class
  (invoice and info calls). LND decorates some messages ("invoice expired. Valid until ..."), so messages match
  by substring, in table order.

Sources (lnd v0.18/v0.19): channeldb/payments ``ErrAlreadyPaid``, ``ErrPaymentInFlight``, ``ErrPaymentExists``,
``ErrPaymentNotInitiated``; routerrpc's request checks; invoices ``ErrInvoiceNotFound``,
``ErrInvoiceAlreadySettled``; the macaroon service; the RPC state service.
"""
from __future__ import annotations

from typing import Final, Union

from satflow.domain.errors import SatflowError
from satflow.domain.lightning import (
    FailureReason,
    LightningInvoiceAlreadySettled,
    LightningInvoiceNotFound,
    LightningNodeError,
    LightningNodeUnavailable,
    PaymentAlreadyPaid,
    PaymentFailed,
    PaymentInFlight,
    PaymentNotFound,
    PaymentOutcome,
    PaymentRejected,
    PaymentSucceeded,
    PaymentUnknown,
    RejectionReason,
)

STATUS: Final = "status"
FAILURE_REASON: Final = "failure_reason"
MESSAGE: Final = "message"

Meaning = Union[type, FailureReason, PaymentOutcome]

LND_MEANINGS: Final[dict[tuple[str, str], Meaning]] = {
    # Payment.status. INITIATED (v0.18+) is recorded but has no HTLC yet: still in flight for us.
    # UNKNOWN is the deprecated zero value: LND never reports it for a live payment, so it proves nothing.
    (STATUS, "SUCCEEDED"): PaymentSucceeded,
    (STATUS, "FAILED"): PaymentFailed,
    (STATUS, "IN_FLIGHT"): PaymentInFlight,
    (STATUS, "INITIATED"): PaymentInFlight,
    (STATUS, "UNKNOWN"): PaymentUnknown,
    # Payment.failure_reason. NONE on a FAILED payment would be an LND bug; ERROR is the honest reading.
    (FAILURE_REASON, "FAILURE_REASON_NONE"): FailureReason.ERROR,
    (FAILURE_REASON, "FAILURE_REASON_TIMEOUT"): FailureReason.TIMEOUT,
    (FAILURE_REASON, "FAILURE_REASON_NO_ROUTE"): FailureReason.NO_ROUTE,
    (FAILURE_REASON, "FAILURE_REASON_ERROR"): FailureReason.ERROR,
    (FAILURE_REASON, "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS"): FailureReason.INCORRECT_PAYMENT_DETAILS,
    (FAILURE_REASON, "FAILURE_REASON_INSUFFICIENT_BALANCE"): FailureReason.INSUFFICIENT_BALANCE,
    (FAILURE_REASON, "FAILURE_REASON_CANCELED"): FailureReason.CANCELED,
    # A second send of a hash LND already knows: never a failure, never a reason to pay again.
    (MESSAGE, "invoice is already paid"): PaymentAlreadyPaid("invoice is already paid"),
    (MESSAGE, "payment is in transition"): PaymentInFlight("payment is in transition"),
    (MESSAGE, "payment already exists"): PaymentInFlight("payment already exists"),  # INITIATED record
    # Track of a hash LND has never seen.
    (MESSAGE, "payment isn't initiated"): PaymentNotFound("payment isn't initiated"),
    # routerrpc refuses these before it records a payment.
    (MESSAGE, "invoice expired"): PaymentRejected(RejectionReason.INVOICE_EXPIRED, "invoice expired"),
    (MESSAGE, "self-payments not allowed"): PaymentRejected(RejectionReason.SELF_PAYMENT, "self-payments not allowed"),
    (MESSAGE, "amount must be specified when paying a zero amount invoice"): PaymentRejected(
        RejectionReason.AMOUNT_MISMATCH, "amount must be specified when paying a zero amount invoice"
    ),
    (MESSAGE, "amount must not be specified"): PaymentRejected(
        RejectionReason.AMOUNT_MISMATCH, "amount must not be specified when paying a non-zero amount invoice"
    ),
    (MESSAGE, "timeout_seconds must be specified"): PaymentRejected(
        RejectionReason.INVALID_REQUEST, "timeout_seconds must be specified"
    ),
    # Routing failures as older/sync APIs word them (v2 reports them as FAILED + failure_reason).
    (MESSAGE, "unable to find a path to destination"): PaymentFailed(FailureReason.NO_ROUTE, "unable to find a path"),
    (MESSAGE, "insufficient local balance"): PaymentFailed(
        FailureReason.INSUFFICIENT_BALANCE, "insufficient local balance"
    ),
    # Invoices.
    (MESSAGE, "unable to locate invoice"): LightningInvoiceNotFound,
    (MESSAGE, "there are no existing invoices"): LightningInvoiceNotFound,
    (MESSAGE, "invoice already settled"): LightningInvoiceAlreadySettled,
    # Node state: it will answer again soon.
    (MESSAGE, "in the process of starting"): LightningNodeUnavailable,  # "server is still..", "the RPC server is.."
    (MESSAGE, "wallet locked"): LightningNodeUnavailable,
    (MESSAGE, "waiting to start"): LightningNodeUnavailable,
    # Macaroon/permission problems: configuration, not load. No retry fixes them.
    (MESSAGE, "verification failed"): LightningNodeError,
    (MESSAGE, "permission denied"): LightningNodeError,
    (MESSAGE, "expected 1 macaroon"): LightningNodeError,
}

_MESSAGE_KEYS: Final = tuple(text for kind, text in LND_MEANINGS if kind == MESSAGE)
_PAYMENT_OUTCOME_TYPES: Final = (
    PaymentSucceeded, PaymentFailed, PaymentInFlight, PaymentUnknown, PaymentNotFound, PaymentAlreadyPaid,
    PaymentRejected,
)


def status_meaning(status: str) -> type | None:
    meaning = LND_MEANINGS.get((STATUS, status))
    return meaning if isinstance(meaning, type) else None


def failure_reason_meaning(reason: str) -> FailureReason:
    # A reason newer than this table is still a failure: ERROR keeps it final rather than unknown.
    meaning = LND_MEANINGS.get((FAILURE_REASON, reason), FailureReason.ERROR)
    assert isinstance(meaning, FailureReason)
    return meaning


def message_meaning(message: str) -> Meaning | None:
    """The table entry whose message text occurs in ``message`` (case-insensitive), or None."""
    lowered = message.lower()
    for text in _MESSAGE_KEYS:
        if text in lowered:
            return LND_MEANINGS[(MESSAGE, text)]
    return None


def payment_outcome_for_message(message: str) -> PaymentOutcome | None:
    meaning = message_meaning(message)
    return meaning if isinstance(meaning, _PAYMENT_OUTCOME_TYPES) else None


def error_class_for_message(message: str) -> type[SatflowError] | None:
    meaning = message_meaning(message)
    if isinstance(meaning, type) and issubclass(meaning, SatflowError):
        return meaning
    return None
