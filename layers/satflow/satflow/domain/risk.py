"""Risk scoring and review (pure: no I/O).

Every send (internal transfer, Lightning payment, on-chain payout) is scored 0-100 from a few facts about the
sender and the send (:class:`RiskFeatures`). The score is the sum of explainable factors, each a named number of
points with a human detail, clamped to 100; :class:`RiskPolicy` turns it into a decision:

* ``allow``  - score below ``review_at``: the send goes on as before
* ``review`` - ``review_at <= score < block_at``: the money is reserved and an admin approves or rejects
* ``block``  - ``score >= block_at``: refused

Factors (points; every factor only grows as its input gets riskier, so the score is monotone in each input):

==================  =========================================================================================
account_age         < 1 h: 15, < 1 day: 10, < 7 days: 5, older: 0
tier                tier 0: 5, tier 1: 2, tiers 2-3: 0
new_destination     never sent there before: on-chain 12, Lightning 8, internal 5; seen: 0
destination_kind    on-chain 5 (irreversible, leaves the custody), Lightning 3, internal 0
amount_vs_history   with >= 3 past sends: amount over the largest past send x1: 0, <= x3: 8, <= x10: 15,
                    more: 30. With fewer: amount as a share of the tier's per-tx limit: < 10 %: 0, < 50 %: 4,
                    < 90 %: 7, more: 10
velocity            sends in the last hour as a share of the tier's hourly allowance: < 50 %: 0, < 80 %: 5,
                    more: 10
daily_usage         the 24 h total including this send, as a share of the daily limit: < 50 %: 0, < 90 %: 3,
                    more: 5
recent_credit       last credit < 10 min ago: 10, < 1 h: 6, < 1 day: 2, older or none seen: 0
==================  =========================================================================================

Defaults: review at 75, block at 90 (``SATFLOW_RISK_THRESHOLDS``, e.g. ``{"review": 60, "block": 85}``).
Chosen so an ordinary send of a brand-new, just-funded account (the shape of most integration tests and of
honest first use: about 30-55 points) is allowed; what reaches review is a sharp break with the account's own
history (x10 its largest send) combined with newness, a new destination and fresh funds; block needs all of that
at once. The hard ceilings are the tier limits; this score is the soft layer on top of them.
"""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ValidationError
from .ids import derive_id

MAX_SCORE = 100
HISTORY_MIN_SENDS = 3  # below this, an amount is judged against the tier's limit rather than the account's past


class Decision(str, enum.Enum):
    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"


class DestinationKind(str, enum.Enum):
    INTERNAL = "internal"  # another satflow account
    LIGHTNING = "lightning"  # a payee node pubkey
    ONCHAIN = "onchain"  # a Bitcoin address


class SubjectKind(str, enum.Enum):
    """What a review holds: the three kinds of send."""

    TRANSFER = "transfer"
    PAYMENT = "payment"
    PAYOUT = "payout"


class ReviewStatus(str, enum.Enum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"  # by an admin, or by the workflow when nobody decided in time


# ------------------------------------------------------------------------------------------------ policy
@dataclass(frozen=True)
class RiskPolicy:
    """Thresholds: ``review_at <= score < block_at`` is review. 101 switches a decision off."""

    review_at: int = 75
    block_at: int = 90

    def __post_init__(self) -> None:
        for name in ("review_at", "block_at"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SCORE + 1:
                raise ValueError(f"{name} must be an integer from 1 to {MAX_SCORE + 1}, got {value!r}")
        if self.review_at > self.block_at:
            raise ValueError("review_at must not be above block_at")

    def decide(self, score: int) -> Decision:
        if score >= self.block_at:
            return Decision.BLOCK
        if score >= self.review_at:
            return Decision.REVIEW
        return Decision.ALLOW


DEFAULT_POLICY = RiskPolicy()


def parse_risk_thresholds(raw: str | None, base: RiskPolicy = DEFAULT_POLICY) -> RiskPolicy:
    """``SATFLOW_RISK_THRESHOLDS``: ``{"review": int, "block": int}``, either optional; empty -> ``base``.
    Anything malformed raises ValueError: a typo must stop the deployment, not silently fall back."""
    if raw is None or not raw.strip():
        return base
    try:
        doc = json.loads(raw, parse_float=_no_float, parse_constant=_no_float)
    except json.JSONDecodeError as exc:
        raise ValueError(f"SATFLOW_RISK_THRESHOLDS is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not set(doc) <= {"review", "block"}:
        raise ValueError('SATFLOW_RISK_THRESHOLDS must be an object with "review" and/or "block"')
    return RiskPolicy(review_at=doc.get("review", base.review_at), block_at=doc.get("block", base.block_at))


def _no_float(token: str) -> object:
    raise ValueError(f"SATFLOW_RISK_THRESHOLDS: {token} is not an integer")


# ------------------------------------------------------------------------------------------------ features
def _non_negative(name: str, value: object, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


@dataclass(frozen=True)
class RiskFeatures:
    """What the score looks at, gathered by ``satflow.app.risk`` (no I/O here)."""

    account_age_s: int
    tier: int
    destination_kind: DestinationKind
    new_destination: bool
    amount_msat: int
    per_tx_limit_msat: int  # the tier's: the scale of an amount when the account has little history
    past_sends: int  # sends seen in the recent history window (this one excluded)
    max_past_send_msat: int | None  # the largest of them (None: no past send)
    sends_last_hour: int  # before this one
    sends_per_hour_limit: int
    used_daily_msat: int  # before this one
    daily_limit_msat: int
    seconds_since_last_credit: int | None  # None: no credit in the recent history window

    def __post_init__(self) -> None:
        for name in ("account_age_s", "tier", "past_sends", "sends_last_hour", "used_daily_msat"):
            _non_negative(name, getattr(self, name))
        for name in ("max_past_send_msat", "seconds_since_last_credit"):
            _non_negative(name, getattr(self, name), optional=True)
        for name in ("amount_msat", "per_tx_limit_msat", "sends_per_hour_limit", "daily_limit_msat"):
            _non_negative(name, getattr(self, name))
            if getattr(self, name) == 0:
                raise ValueError(f"{name} must be positive")
        if not isinstance(self.destination_kind, DestinationKind):
            raise ValueError("destination_kind must be a DestinationKind")
        if not isinstance(self.new_destination, bool):
            raise ValueError("new_destination must be a bool")

    def to_dict(self) -> dict[str, Any]:
        values = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return {**values, "destination_kind": self.destination_kind.value}


# ------------------------------------------------------------------------------------------------ assessment
@dataclass(frozen=True)
class RiskFactor:
    name: str
    points: int
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "points": self.points, "detail": self.detail}


@dataclass(frozen=True)
class RiskAssessment:
    score: int
    decision: Decision
    factors: tuple[RiskFactor, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "decision": self.decision.value, "factors": [f.to_dict() for f in self.factors]}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> "RiskAssessment":
        return RiskAssessment(score=int(data["score"]), decision=Decision(data["decision"]),
                              factors=tuple(RiskFactor(str(f["name"]), int(f["points"]), str(f["detail"]))
                                            for f in data.get("factors", ())))


HOUR_S, DAY_S = 3_600, 86_400


def _ladder(value: int, steps: tuple[tuple[int, int], ...]) -> int:
    """Points of the first step whose bound ``value`` is below; 0 past the last. Bounds ascending, points falling."""
    for bound, points in steps:
        if value < bound:
            return points
    return 0


def _pct(part: int, whole: int) -> int:
    return part * 100 // whole


def _age(seconds: int) -> str:
    if seconds < HOUR_S:
        return f"{seconds // 60} min"
    if seconds < DAY_S:
        return f"{seconds // HOUR_S} h"
    return f"{seconds // DAY_S} days"


def factors(f: RiskFeatures) -> tuple[RiskFactor, ...]:
    """Every factor with its points (zero-point factors included: the explanation shows what was looked at)."""
    out: list[RiskFactor] = []
    out.append(RiskFactor("account_age", _ladder(f.account_age_s, ((HOUR_S, 15), (DAY_S, 10), (7 * DAY_S, 5))),
                          f"account opened {_age(f.account_age_s)} ago"))
    out.append(RiskFactor("tier", {0: 5, 1: 2}.get(f.tier, 0), f"tier {f.tier}"))
    kind = f.destination_kind
    new_points = {DestinationKind.ONCHAIN: 12, DestinationKind.LIGHTNING: 8, DestinationKind.INTERNAL: 5}[kind]
    out.append(RiskFactor("new_destination", new_points if f.new_destination else 0,
                          f"first send to this {kind.value} destination" if f.new_destination
                          else f"{kind.value} destination used before"))
    out.append(RiskFactor("destination_kind",
                          {DestinationKind.ONCHAIN: 5, DestinationKind.LIGHTNING: 3, DestinationKind.INTERNAL: 0}[kind],
                          f"{kind.value} send"))
    if f.past_sends >= HISTORY_MIN_SENDS and f.max_past_send_msat:
        ratio_x10 = f.amount_msat * 10 // f.max_past_send_msat  # tenths, integer
        points = 0 if ratio_x10 <= 10 else 8 if ratio_x10 <= 30 else 15 if ratio_x10 <= 100 else 30
        out.append(RiskFactor("amount_vs_history", points,
                              f"{ratio_x10 // 10}.{ratio_x10 % 10}x the largest of the last {f.past_sends} sends"))
    else:
        share = _pct(f.amount_msat, f.per_tx_limit_msat)
        points = 0 if share < 10 else 4 if share < 50 else 7 if share < 90 else 10
        out.append(RiskFactor("amount_vs_history", points,
                              f"{f.past_sends} past sends; amount is {share}% of the tier's per-send limit"))
    velocity = _pct(f.sends_last_hour, f.sends_per_hour_limit)
    out.append(RiskFactor("velocity", 0 if velocity < 50 else 5 if velocity < 80 else 10,
                          f"{f.sends_last_hour} of {f.sends_per_hour_limit} hourly sends used"))
    daily = _pct(f.used_daily_msat + f.amount_msat, f.daily_limit_msat)
    out.append(RiskFactor("daily_usage", 0 if daily < 50 else 3 if daily < 90 else 5,
                          f"{daily}% of the 24 h limit with this send"))
    since = f.seconds_since_last_credit
    out.append(RiskFactor("recent_credit",
                          0 if since is None else _ladder(since, ((600, 10), (HOUR_S, 6), (DAY_S, 2))),
                          "no recent credit" if since is None else f"last credit {_age(since)} ago"))
    return tuple(out)


def assess(features: RiskFeatures, policy: RiskPolicy = DEFAULT_POLICY) -> RiskAssessment:
    """The score (sum of the factors, clamped to 0..100), the policy's decision, and the factors that scored."""
    found = factors(features)
    score = max(0, min(MAX_SCORE, sum(f.points for f in found)))
    return RiskAssessment(score=score, decision=policy.decide(score), factors=found)


# ------------------------------------------------------------------------------------------------ reviews
def review_id_for(kind: SubjectKind, subject_id: str) -> str:
    """One review per send, ever: a replayed assessment lands on the same review."""
    return derive_id("rev", kind.value, subject_id)


@dataclass(frozen=True)
class Review:
    review_id: str
    kind: SubjectKind
    subject_id: str  # the transfer, payment or payout id
    account_id: str
    amount_msat: int
    destination: str
    assessment: RiskAssessment
    status: ReviewStatus
    created_at: str
    task_token: str | None = None
    decided_at: str | None = None
    decided_by: str | None = None
    note: str | None = None

    def to_view(self) -> dict[str, Any]:
        """The admin API body (never the task token: it is a bearer credential for the workflow)."""
        return {"review_id": self.review_id, "kind": self.kind.value, "subject_id": self.subject_id,
                "account_id": self.account_id, "amount_msat": self.amount_msat, "destination": self.destination,
                "score": self.assessment.score, "decision": self.assessment.decision.value,
                "factors": [f.to_dict() for f in self.assessment.factors], "status": self.status.value,
                "created_at": self.created_at, "decided_at": self.decided_at, "decided_by": self.decided_by,
                "note": self.note, "workflow_parked": self.task_token is not None}


MAX_NOTE = 280


def validate_note(note: object) -> str | None:
    if note is None:
        return None
    if not isinstance(note, str) or not 1 <= len(note) <= MAX_NOTE:
        raise ValidationError(f"note must be a string of 1-{MAX_NOTE} characters", field="note")
    return note


def validate_review_status(status: object) -> ReviewStatus:
    if status is None or status == "":
        return ReviewStatus.PENDING
    try:
        return ReviewStatus(status)
    except ValueError:
        raise ValidationError("status must be pending, approved or rejected", field="status") from None
