"""Integer amounts only. The ledger counts each asset in its smallest unit; for BTC that is the millisatoshi."""
from __future__ import annotations

import re

from .errors import ValidationError

BTC = "BTC"
MSAT_PER_SAT = 1_000
SAT_PER_BTC = 100_000_000
# 21 million BTC in msat: no single amount can exceed the supply (it also fits in a signed int64).
MAX_AMOUNT_MSAT = 21_000_000 * SAT_PER_BTC * MSAT_PER_SAT
_ASSET_RE = re.compile(r"^[A-Z][A-Z0-9]{1,11}$")


def validate_asset(asset: object) -> str:
    if not isinstance(asset, str) or not _ASSET_RE.match(asset):
        raise ValidationError(f"asset must be an upper-case code such as BTC, got {asset!r}", field="asset")
    return asset


def validate_amount(amount: object, field: str = "amount_msat", maximum: int = MAX_AMOUNT_MSAT) -> int:
    """A strictly positive integer no larger than ``maximum``. bools and floats (even 1.0) are refused."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValidationError(f"{field} must be an integer", field=field)
    if amount <= 0:
        raise ValidationError(f"{field} must be positive", field=field)
    if amount > maximum:
        raise ValidationError(f"{field} exceeds the maximum of {maximum}", field=field)
    return amount


def sat_to_msat(sat: int) -> int:
    return sat * MSAT_PER_SAT
