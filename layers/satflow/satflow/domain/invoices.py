"""Our invoices (pure): who an invoice belongs to, its lifecycle, and what its settlement credits."""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import errors
from .money import MAX_AMOUNT_MSAT

MAX_EXPIRY_S = 7 * 24 * 3600
DEFAULT_EXPIRY_S = 3600
MAX_METADATA_BYTES = 2048


class InvoiceStatus(str, enum.Enum):
    OPEN = "OPEN"
    # An internal payment claimed it (its intent is written) and is settling it: SETTLED or CANCELED follows, by
    # that payment's own steps or the payment reconciler's (app.payments). No longer payable by anyone else; the
    # node's invoice is being (or has been) cancelled. LND names its "paid, not yet settled" state the same way.
    ACCEPTED = "ACCEPTED"
    SETTLED = "SETTLED"
    EXPIRED = "EXPIRED"
    CANCELED = "CANCELED"


@dataclass(frozen=True)
class Invoice:
    payment_hash: str
    account_id: str
    amount_msat: int  # 0 = any amount
    payment_request: str
    status: InvoiceStatus
    created_at: str
    expires_at: str
    expires_at_unix: int
    memo: str | None = None
    description_hash: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    amount_received_msat: int = 0
    settled_at: str | None = None
    settled_by: str | None = None  # "lnd" (external payment) or the internal payment id
    claimed_by: str | None = None  # the internal payment that made it ACCEPTED (kept once it is settled/cancelled)


def validate_invoice_request(amount_msat: object, expiry_s: object, description_hash: object,
                             metadata: object) -> tuple[int, int, str | None, dict]:
    if amount_msat is None:
        amount_msat = 0
    if isinstance(amount_msat, bool) or not isinstance(amount_msat, int) or not 0 <= amount_msat <= MAX_AMOUNT_MSAT:
        raise errors.ValidationError("amount_msat must be an integer >= 0 (0 or absent: any amount)",
                                     field="amount_msat")
    if expiry_s is None:
        expiry_s = DEFAULT_EXPIRY_S
    if isinstance(expiry_s, bool) or not isinstance(expiry_s, int) or not 60 <= expiry_s <= MAX_EXPIRY_S:
        raise errors.ValidationError(f"expiry_s must be an integer from 60 to {MAX_EXPIRY_S}", field="expiry_s")
    if description_hash is not None:
        if not isinstance(description_hash, str) or len(description_hash) != 64:
            raise errors.ValidationError("description_hash must be 64 hex characters", field="description_hash")
        try:
            bytes.fromhex(description_hash)
        except ValueError as exc:
            raise errors.ValidationError("description_hash must be 64 hex characters",
                                         field="description_hash") from exc
        description_hash = description_hash.lower()
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or len(json.dumps(metadata)) > MAX_METADATA_BYTES:
        raise errors.ValidationError(f"metadata must be a JSON object of at most {MAX_METADATA_BYTES} bytes",
                                     field="metadata")
    return amount_msat, expiry_s, description_hash, metadata


def credited_amount(invoice: Invoice, amount_paid_msat: int) -> int:
    """What a settlement credits: the amount actually received (amount-less invoices and overpayments included)."""
    if amount_paid_msat <= 0:
        raise errors.ValidationError("a settled invoice must have received a positive amount")
    return amount_paid_msat
