"""Per-tier spending limits and send velocity (pure: no I/O).

Every outgoing movement of a user's money (internal transfer, Lightning send, on-chain payout) is admitted
against the sender's tier:

* ``per_tx``   - the largest single send
* ``daily``    - the sum sent in the rolling 24 hours
* ``monthly``  - the sum sent in the rolling 30 days
* ``sends_per_hour`` - how many sends in the last 60 minutes (count velocity)

Defaults (configured in sat, kept in msat internally; override with ``SATFLOW_TIER_LIMITS``, see
:func:`parse_tier_limits`):

=====  ============  ==============  ================  ==============
tier   per tx (sat)  24 h (sat)      30 days (sat)     sends per hour
=====  ============  ==============  ================  ==============
0         100,000       1,000,000        10,000,000          10
1       1,000,000       5,000,000        50,000,000          20
2       5,000,000      20,000,000       200,000,000          60
3      25,000,000      25,000,000       500,000,000         120
=====  ============  ==============  ================  ==============

Tier 3's 24 h ceiling is CTR-style: about 10,000 USD-equivalent. It is set **in sat by configuration**, not
derived from an FX feed: the operator moves it when the price moves (a limit that changes with every price tick
would make "what do I have left" unanswerable and the check non-deterministic).

Window state (:class:`LimitWindow`) is three small bucket lists, so one DynamoDB item per account holds it:

* hour buckets (unix // 3600 -> msat) for the rolling 24 h,
* day buckets (unix // 86400 -> msat) for the rolling 30 days,
* minute buckets (unix // 60 -> sends) for the last 60 minutes.

Granularity, conservatively rounded (a limit is never exceeded within any true window): an amount counts in the
24 h sum until the end of its hour + 24 h (so for at least 24 h, at most 25 h); in the 30-day sum until the end
of its UTC day + 30 days (30 to 31 days); a send counts for velocity until the end of its minute + 60 min.
At most 25 + 31 + 61 buckets survive pruning, so the item stays well under 2 KB.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Mapping, NamedTuple

from .errors import LimitExceeded, LimitStateChanged, VelocityExceeded  # noqa: F401  (re-exported)
from .money import MSAT_PER_SAT

HOUR_S = 3_600
DAY_S = 86_400
MINUTE_S = 60
DAILY_HOURS = 24  # hour buckets h >= now_hour - 24 are live
MONTHLY_DAYS = 30  # day buckets d >= now_day - 30 are live
VELOCITY_MINUTES = 60  # minute buckets m >= now_minute - 60 are live


# ---------------------------------------------------------------------------------------------------- errors
# ---------------------------------------------------------------------------------------------------- limits
@dataclass(frozen=True)
class TierLimits:
    tier: int
    per_tx_msat: int
    daily_msat: int
    monthly_msat: int
    sends_per_hour: int

    def __post_init__(self) -> None:
        for name in ("per_tx_msat", "daily_msat", "monthly_msat", "sends_per_hour"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"tier {self.tier}: {name} must be a positive integer, got {value!r}")
        if not self.per_tx_msat <= self.daily_msat <= self.monthly_msat:
            raise ValueError(f"tier {self.tier}: limits must satisfy per_tx <= daily <= monthly")


def _tier(tier: int, per_tx_sat: int, daily_sat: int, monthly_sat: int, sends_per_hour: int) -> TierLimits:
    return TierLimits(tier, per_tx_sat * MSAT_PER_SAT, daily_sat * MSAT_PER_SAT, monthly_sat * MSAT_PER_SAT,
                      sends_per_hour)


DEFAULT_TIER_LIMITS: Mapping[int, TierLimits] = {
    0: _tier(0, 100_000, 1_000_000, 10_000_000, 10),
    1: _tier(1, 1_000_000, 5_000_000, 50_000_000, 20),
    2: _tier(2, 5_000_000, 20_000_000, 200_000_000, 60),
    # CTR-style 24 h ceiling, ~10,000 USD-equivalent: a configured sat figure, not an FX conversion.
    3: _tier(3, 25_000_000, 25_000_000, 500_000_000, 120),
}

_CONFIG_FIELDS = {"per_tx_sat": "per_tx_msat", "daily_sat": "daily_msat", "monthly_sat": "monthly_msat",
                  "sends_per_hour": "sends_per_hour"}


def parse_tier_limits(raw: str | None, base: Mapping[int, TierLimits] = DEFAULT_TIER_LIMITS) -> dict[int, TierLimits]:
    """Tier limits from a compact JSON override (env ``SATFLOW_TIER_LIMITS``), merged field by field onto ``base``.

    Format: ``{"<tier>": {"per_tx_sat": int, "daily_sat": int, "monthly_sat": int, "sends_per_hour": int}}``,
    every tier and field optional, amounts in sat, e.g. ``{"3": {"daily_sat": 30000000}, "0": {"sends_per_hour": 5}}``.
    Empty/None -> ``base``. Anything malformed (unknown tier or field, non-integer, float, zero, per_tx > daily >
    monthly) raises ValueError: a typo must stop the deployment, not silently fall back to a default.
    """
    out = dict(base)
    if raw is None or not raw.strip():
        return out
    try:
        doc = json.loads(raw, parse_float=_no_float, parse_constant=_no_float)
    except json.JSONDecodeError as exc:
        raise ValueError(f"SATFLOW_TIER_LIMITS is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValueError("SATFLOW_TIER_LIMITS must be a JSON object keyed by tier (\"0\"..\"3\")")
    for key, fields in doc.items():
        if key not in ("0", "1", "2", "3"):
            raise ValueError(f"SATFLOW_TIER_LIMITS: unknown tier {key!r} (tiers are 0-3)")
        tier = int(key)
        if not isinstance(fields, dict):
            raise ValueError(f"SATFLOW_TIER_LIMITS: tier {tier} must map to an object")
        current = out[tier]
        values = {"per_tx_msat": current.per_tx_msat, "daily_msat": current.daily_msat,
                  "monthly_msat": current.monthly_msat, "sends_per_hour": current.sends_per_hour}
        for name, value in fields.items():
            if name not in _CONFIG_FIELDS:
                raise ValueError(f"SATFLOW_TIER_LIMITS: tier {tier}: unknown field {name!r} "
                                 f"(allowed: {', '.join(_CONFIG_FIELDS)})")
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"SATFLOW_TIER_LIMITS: tier {tier}: {name} must be a positive integer")
            target = _CONFIG_FIELDS[name]
            values[target] = value * MSAT_PER_SAT if target.endswith("_msat") else value
        out[tier] = TierLimits(tier, **values)
    return out


def _no_float(token: str) -> object:
    raise ValueError(f"SATFLOW_TIER_LIMITS: {token} is not an integer (amounts are whole sat)")


# ---------------------------------------------------------------------------------------------------- window
Buckets = tuple[tuple[int, int], ...]  # sorted (bucket index, value) pairs, values > 0


@dataclass(frozen=True)
class LimitWindow:
    """What one account sent recently. Immutable; :func:`admit` returns a new one."""

    hours: Buckets = ()  # (unix // 3600, msat)
    days: Buckets = ()  # (unix // 86400, msat)
    minutes: Buckets = ()  # (unix // 60, sends)


EMPTY_WINDOW = LimitWindow()


class Usage(NamedTuple):
    used_daily_msat: int
    used_monthly_msat: int
    sends_last_hour: int


def _live(buckets: Buckets, oldest: int) -> Buckets:
    return tuple((i, v) for i, v in buckets if i >= oldest)


def _add(buckets: Buckets, index: int, value: int) -> Buckets:
    merged = dict(buckets)
    merged[index] = merged.get(index, 0) + value
    return tuple(sorted((i, v) for i, v in merged.items() if v > 0))


def _sub(buckets: Buckets, index: int, value: int) -> Buckets:
    merged = dict(buckets)
    if index in merged:
        merged[index] = max(0, merged[index] - value)
    return tuple(sorted((i, v) for i, v in merged.items() if v > 0))


def _check_now(now: object) -> int:
    if isinstance(now, bool) or not isinstance(now, int) or now < 0:
        raise ValueError("now is a unix time in whole seconds")
    return now


def prune(state: LimitWindow, now: int) -> LimitWindow:
    """Drop the buckets that no longer count at ``now``."""
    now = _check_now(now)
    return LimitWindow(
        hours=_live(state.hours, now // HOUR_S - DAILY_HOURS),
        days=_live(state.days, now // DAY_S - MONTHLY_DAYS),
        minutes=_live(state.minutes, now // MINUTE_S - VELOCITY_MINUTES),
    )


def usage(state: LimitWindow, now: int) -> Usage:
    """(used_daily_msat, used_monthly_msat, sends_last_hour) at ``now``."""
    live = prune(state, now)
    return Usage(sum(v for _, v in live.hours), sum(v for _, v in live.days), sum(v for _, v in live.minutes))


def _sat(msat: int) -> str:
    """Human figure for messages: whole sat with separators, msat remainder kept exact."""
    sat, rest = divmod(msat, MSAT_PER_SAT)
    return f"{sat:,} sat" if not rest else f"{sat:,}.{rest:03d} sat"


def admit(state: LimitWindow, amount_msat: int, now: int, limits: TierLimits) -> LimitWindow:
    """The window after one more send of ``amount_msat`` at ``now`` (unix seconds), or a typed rejection.

    Checks, in order: per transaction, rolling 24 h, rolling 30 days (``LimitExceeded``), then sends in the last
    hour (``VelocityExceeded``). The returned state is pruned. ``state`` is never modified.
    """
    if isinstance(amount_msat, bool) or not isinstance(amount_msat, int) or amount_msat <= 0:
        raise ValueError("amount_msat must be a positive integer")
    now = _check_now(now)
    live = prune(state, now)
    used = usage(live, now)
    tier = limits.tier
    if amount_msat > limits.per_tx_msat:
        raise LimitExceeded(
            f"per-transaction limit exceeded: tier {tier} allows {_sat(limits.per_tx_msat)} per send, "
            f"{_sat(amount_msat)} requested",
            limit="per_tx", tier=tier, limit_msat=limits.per_tx_msat, requested_msat=amount_msat,
            used_msat=0, remaining_msat=limits.per_tx_msat)
    for name, window, cap, spent in (
        ("daily", "rolling 24 h", limits.daily_msat, used.used_daily_msat),
        ("monthly", "rolling 30 days", limits.monthly_msat, used.used_monthly_msat),
    ):
        if spent + amount_msat > cap:
            remaining = max(0, cap - spent)
            raise LimitExceeded(
                f"{name} limit exceeded: tier {tier} allows {_sat(cap)} per {window}, {_sat(spent)} used, "
                f"{_sat(remaining)} left, {_sat(amount_msat)} requested",
                limit=name, tier=tier, limit_msat=cap, requested_msat=amount_msat, used_msat=spent,
                remaining_msat=remaining)
    if used.sends_last_hour + 1 > limits.sends_per_hour:
        raise VelocityExceeded(
            f"velocity limit exceeded: tier {tier} allows {limits.sends_per_hour} sends per hour, "
            f"{used.sends_last_hour} in the last 60 minutes",
            limit="sends_per_hour", tier=tier, limit_count=limits.sends_per_hour,
            used_count=used.sends_last_hour)
    return LimitWindow(
        hours=_add(live.hours, now // HOUR_S, amount_msat),
        days=_add(live.days, now // DAY_S, amount_msat),
        minutes=_add(live.minutes, now // MINUTE_S, 1),
    )


def release(state: LimitWindow, amount_msat: int, admitted_at: int, now: int) -> LimitWindow:
    """Give back the amount of a send that did not happen (a failed Lightning payment, a cancelled payout).

    The amount leaves the hour and day buckets of ``admitted_at`` as far as they still hold it; buckets already
    out of the window need nothing back. The send still counts for velocity: it was an attempt. Never raises a
    limit error (giving back can only lower usage).

    ``admitted_at`` must not be LATER than the admission (the send record's ``created_at``, taken before the
    admission, qualifies): taking the amount from an earlier bucket than the one it was added to is conservative
    (the amount left behind sits in a later bucket, which expires later), taking it from a later one would
    under-count once the earlier bucket expires. An ``admitted_at`` after ``now`` (clocks that disagree) gives
    nothing back, for the same reason."""
    if isinstance(amount_msat, bool) or not isinstance(amount_msat, int) or amount_msat <= 0:
        raise ValueError("amount_msat must be a positive integer")
    admitted_at = _check_now(admitted_at)
    live = prune(state, now)
    if admitted_at > now:
        return live
    return LimitWindow(
        hours=_sub(live.hours, admitted_at // HOUR_S, amount_msat),
        days=_sub(live.days, admitted_at // DAY_S, amount_msat),
        minutes=live.minutes,
    )


# ---------------------------------------------------------------------------------------------------- encoding
def encode_buckets(buckets: Buckets) -> str:
    """``"493812:5000000,493813:100"``: integers only, exact (no float anywhere on the way to DynamoDB)."""
    return ",".join(f"{i}:{v}" for i, v in buckets)


def decode_buckets(raw: str | None) -> Buckets:
    if not raw:
        return ()
    out: list[tuple[int, int]] = []
    for part in raw.split(","):
        index, _, value = part.partition(":")
        if not (index.isdigit() and value.isdigit()):
            raise ValueError(f"malformed limit bucket {part!r}")
        out.append((int(index), int(value)))
    return tuple(sorted(out))


def window_from(hours: Iterable[tuple[int, int]] = (), days: Iterable[tuple[int, int]] = (),
                minutes: Iterable[tuple[int, int]] = ()) -> LimitWindow:
    """A window from loose pairs (tests, decoding): merged, sorted, zero buckets dropped."""

    def norm(pairs: Iterable[tuple[int, int]]) -> Buckets:
        merged: dict[int, int] = {}
        for i, v in pairs:
            merged[i] = merged.get(i, 0) + v
        return tuple(sorted((i, v) for i, v in merged.items() if v > 0))

    return LimitWindow(norm(hours), norm(days), norm(minutes))
