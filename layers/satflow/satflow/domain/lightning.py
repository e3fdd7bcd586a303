"""Lightning results as the domain sees them (pure: no I/O, no vendor types, no BOLT11 decoding).

An outbound payment has more than two outcomes, and money safety depends on keeping them apart (design rule 6):

* :class:`PaymentSucceeded` / :class:`PaymentFailed` are the only *final* outcomes: only they may post or void.
* :class:`PaymentInFlight` - the node has the payment and has not finished it.
* :class:`PaymentUnknown` - we could not learn the outcome (timeout, transport error). Unknown is NOT failed.
* :class:`PaymentNotFound` - the node has no record of the hash ("payment isn't initiated"). That voids only once
  no earlier send of the hash can still reach the node; the caller knows that, the adapter does not.
* :class:`PaymentAlreadyPaid` - the node refused a second send because the hash is already paid: track it for
  the preimage and fee, never pay again.
* :class:`PaymentRejected` - the node refused *this* request before creating a payment (expired invoice,
  self-payment, amount mismatch). Nothing was sent by this call; as with NotFound, an earlier attempt of the
  same hash may still exist, so a retried send must track before it voids.

Amounts are integers in millisatoshi. Hashes and preimages are lower-case hex.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Mapping, Union

from .errors import ValidationError
from .errors import (  # noqa: F401  (re-exported: defined with every other typed error)
    LightningNodeUnavailable,
    LightningNodeError,
    LightningInvoiceNotFound,
    LightningInvoiceAlreadySettled,
    InvalidPaymentRequest,
)

_HEX32_RE = re.compile(r"^[0-9a-f]{64}$")
_ZERO_PREIMAGE = "0" * 64


# --- errors (HTTP statuses live in the lead's table) -------------------------------------------------------------
# --- small validators --------------------------------------------------------------------------------------------
def validate_hash_hex(value: object, field: str = "payment_hash") -> str:
    """A 32-byte hash or preimage as 64 lower-case hex characters (upper case is normalised)."""
    if not isinstance(value, str) or not _HEX32_RE.match(value.lower()):
        raise ValidationError(f"{field} must be 32 bytes as 64 hex characters", field=field)
    return value.lower()


def _require_msat(value: object, field: str) -> int:
    # Zero is a legitimate msat amount here (zero fee, nothing paid yet); negative never is.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{field} must be a non-negative integer (msat)", field=field)
    return value


def _require_count(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{field} must be a non-negative integer", field=field)
    return value


# --- payment outcomes --------------------------------------------------------------------------------------------
class FailureReason(str, enum.Enum):
    """Why a payment FAILED, mirroring LND's PaymentFailureReason (without NONE: a failure always has one)."""

    TIMEOUT = "TIMEOUT"
    NO_ROUTE = "NO_ROUTE"
    ERROR = "ERROR"
    INCORRECT_PAYMENT_DETAILS = "INCORRECT_PAYMENT_DETAILS"
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    CANCELED = "CANCELED"


class RejectionReason(str, enum.Enum):
    """Why the node refused a send request before creating a payment."""

    INVOICE_EXPIRED = "INVOICE_EXPIRED"
    SELF_PAYMENT = "SELF_PAYMENT"  # the invoice is our own node's: settle it internally instead
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"  # amount given for a fixed-amount invoice, or missing for an amount-less one
    INVALID_REQUEST = "INVALID_REQUEST"


class _Outcome:
    """Shared behaviour: a stable ``status`` tag, finality, and a JSON-able dict for Step Functions."""

    status: ClassVar[str]
    is_final: ClassVar[bool] = False  # only SUCCEEDED and FAILED may resolve the ledger's pending transfer

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        for item in fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            out[item.name] = value.value if isinstance(value, enum.Enum) else value
        return out


@dataclass(frozen=True)
class PaymentSucceeded(_Outcome):
    preimage_hex: str
    fee_msat: int
    amount_msat: int  # what the recipient received, excluding the fee

    status: ClassVar[str] = "SUCCEEDED"
    is_final: ClassVar[bool] = True

    def __post_init__(self) -> None:
        preimage = validate_hash_hex(self.preimage_hex, "preimage_hex")
        if preimage == _ZERO_PREIMAGE:  # LND reports zeros while a payment is in flight; never a real preimage
            raise ValidationError("a succeeded payment needs its real preimage", field="preimage_hex")
        object.__setattr__(self, "preimage_hex", preimage)
        _require_msat(self.fee_msat, "fee_msat")
        _require_msat(self.amount_msat, "amount_msat")

    @property
    def total_msat(self) -> int:
        """What left our node: amount plus routing fee (what the ledger posts)."""
        return self.amount_msat + self.fee_msat


@dataclass(frozen=True)
class PaymentFailed(_Outcome):
    reason: FailureReason
    detail: str = ""

    status: ClassVar[str] = "FAILED"
    is_final: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", FailureReason(self.reason))


@dataclass(frozen=True)
class PaymentInFlight(_Outcome):
    detail: str = ""

    status: ClassVar[str] = "IN_FLIGHT"


@dataclass(frozen=True)
class PaymentUnknown(_Outcome):
    detail: str = ""

    status: ClassVar[str] = "UNKNOWN"


@dataclass(frozen=True)
class PaymentNotFound(_Outcome):
    detail: str = ""

    status: ClassVar[str] = "NOT_FOUND"


@dataclass(frozen=True)
class PaymentAlreadyPaid(_Outcome):
    detail: str = ""

    status: ClassVar[str] = "ALREADY_PAID"


@dataclass(frozen=True)
class PaymentRejected(_Outcome):
    reason: RejectionReason
    detail: str = ""

    status: ClassVar[str] = "REJECTED"

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", RejectionReason(self.reason))


PaymentOutcome = Union[
    PaymentSucceeded, PaymentFailed, PaymentInFlight, PaymentUnknown, PaymentNotFound, PaymentAlreadyPaid,
    PaymentRejected,
]
_OUTCOME_BY_STATUS: dict[str, type] = {
    cls.status: cls
    for cls in (
        PaymentSucceeded, PaymentFailed, PaymentInFlight, PaymentUnknown, PaymentNotFound, PaymentAlreadyPaid,
        PaymentRejected,
    )
}


def outcome_from_dict(data: Mapping[str, Any]) -> PaymentOutcome:
    """Inverse of ``to_dict`` (Step Functions hands outcomes between states as JSON)."""
    cls = _OUTCOME_BY_STATUS.get(str(data.get("status")))
    if cls is None:
        raise ValidationError(f"unknown payment outcome status {data.get('status')!r}", field="status")
    kwargs = {item.name: data[item.name] for item in fields(cls) if item.name in data}
    return cls(**kwargs)  # type: ignore[no-any-return]


# --- invoices ----------------------------------------------------------------------------------------------------
class InvoiceState(str, enum.Enum):
    OPEN = "OPEN"
    SETTLED = "SETTLED"
    CANCELED = "CANCELED"
    ACCEPTED = "ACCEPTED"  # hold invoice: HTLCs held, not yet settled (we do not credit until SETTLED)


@dataclass(frozen=True)
class AddInvoiceResult:
    payment_hash_hex: str
    payment_request: str
    add_index: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "payment_hash_hex", validate_hash_hex(self.payment_hash_hex))
        _require_count(self.add_index, "add_index")


@dataclass(frozen=True)
class NodeInvoice:
    """An invoice as our node reports it. ``value_msat`` 0 means amount-less (the payer chose the amount)."""

    payment_hash: str
    state: InvoiceState
    value_msat: int
    amt_paid_msat: int
    settle_index: int  # 0 until settled; strictly increasing across settlements (the listener's resume point)
    add_index: int
    settle_date: int  # unix seconds, 0 until settled
    creation_date: int  # unix seconds
    expiry: int  # seconds after creation_date
    payment_request: str
    memo: str = ""
    is_keysend: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "payment_hash", validate_hash_hex(self.payment_hash))
        object.__setattr__(self, "state", InvoiceState(self.state))
        for name in ("value_msat", "amt_paid_msat"):
            _require_msat(getattr(self, name), name)
        for name in ("settle_index", "add_index", "settle_date", "creation_date", "expiry"):
            _require_count(getattr(self, name), name)

    @property
    def is_amountless(self) -> bool:
        return self.value_msat == 0

    @property
    def is_settled(self) -> bool:
        return self.state is InvoiceState.SETTLED

    def is_expired(self, now: int) -> bool:
        """Whether an OPEN invoice can no longer be paid (a settled or cancelled one is never 'expired')."""
        return self.state is InvoiceState.OPEN and now >= self.creation_date + self.expiry


@dataclass(frozen=True)
class InvoicePage:
    """One page of the node's invoices in add_index order, for the catch-up poller."""

    invoices: tuple[NodeInvoice, ...]
    first_index_offset: int
    last_index_offset: int  # pass as the next page's index_offset


@dataclass(frozen=True)
class NodeInfo:
    identity_pubkey: str
    alias: str
    version: str
    network: str  # bitcoin | testnet | signet | regtest | simnet
    block_height: int
    synced_to_chain: bool
    synced_to_graph: bool
    num_active_channels: int


@dataclass(frozen=True)
class DecodedPayReq:
    """A payment request as our node decodes it. ``amount_msat`` 0 means amount-less."""

    destination: str
    payment_hash: str
    amount_msat: int
    timestamp: int
    expiry: int
    description: str
    description_hash: str  # hex, "" when the invoice carries a plain description
    cltv_expiry: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "payment_hash", validate_hash_hex(self.payment_hash))
        _require_msat(self.amount_msat, "amount_msat")

    @property
    def expires_at(self) -> int:
        return self.timestamp + self.expiry


# --- BOLT11 network prefix (the human-readable part only; full decoding belongs elsewhere) -----------------------
# Longest prefixes first: "lnbcrt" also starts with "lnbc", "lntbs" with "lntb".
_BOLT11_PREFIXES: tuple[tuple[str, str], ...] = (
    ("lnbcrt", "regtest"),
    ("lntbs", "signet"),
    ("lntb", "testnet"),
    ("lnsb", "simnet"),
    ("lnbc", "bitcoin"),
)


def _strip_uri(payment_request: str) -> str:
    text = payment_request.strip().lower()
    return text[len("lightning:"):] if text.startswith("lightning:") else text


def bolt11_network(payment_request: object) -> str:
    """The network a BOLT11 payment request is for, from its prefix (no signature or checksum check)."""
    if not isinstance(payment_request, str) or not payment_request.strip():
        raise InvalidPaymentRequest("payment_request must be a non-empty string", field="payment_request")
    text = _strip_uri(payment_request)
    for prefix, network in _BOLT11_PREFIXES:
        # After the prefix comes the amount (a digit) or the bech32 separator "1": anything else is another prefix.
        if text.startswith(prefix) and text[len(prefix):len(prefix) + 1].isdigit():
            return network
    raise InvalidPaymentRequest("not a BOLT11 payment request for a known network", field="payment_request")


def require_bolt11_network(payment_request: object, expected_network: str) -> str:
    """The lower-cased payment request if it is for ``expected_network``; InvalidPaymentRequest otherwise."""
    network = bolt11_network(payment_request)
    if network != expected_network:
        raise InvalidPaymentRequest(
            f"payment request is for {network}, this service runs on {expected_network}",
            field="payment_request", network=network, expected_network=expected_network,
        )
    return _strip_uri(str(payment_request))
