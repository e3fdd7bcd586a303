"""Solvency: what the ledger says we hold, next to what the Lightning node and the chain hold (pure: no I/O).

Sign convention of the ledger (sum of all balances is zero): user accounts are positive (liabilities), the asset
accounts of the node and the hot wallet are negative. What the ledger says a source holds is therefore
``-(available + pending_out)`` of its asset account (all shards): ``pending_out`` of an asset account is a
deposit announced but not yet credited (``deposit_seen``), which the ledger does not count as ours yet, and
``pending_in`` (an outbound payment or payout reserved but not posted) is still ours until it is posted.

Per source a check sets side by side:

* ``ledger_msat``: the asset account's holding;
* ``node_msat``: what the node or the chain says we hold (Lightning: channel local balances + outgoing HTLCs +
  the node's on-chain wallet; on-chain: our tracked outputs that the node confirms are unspent);
* ``parts``: the difference's known, legitimate parts (a payment the node finished but the ledger has not posted
  yet, a payout batch confirmed but not posted, its change, an invoice settled on the node but not yet credited);
* ``unexplained_msat`` = node - ledger - sum(parts): drift nobody can explain yet;
* ``foreign_msat``: money that moved outside satflow, found and already booked against the suspense account but
  not yet assigned by an admin. The ledger agrees with the node again once it is booked (so it is no longer
  "unexplained"), but it is not legitimate either: it counts towards the breaker until assigned.

The breaker trips a source when ``abs(unexplained) + foreign`` passes its threshold.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .errors import ValidationError
from .ledger import Balance, SystemAccount, Transfer

LIGHTNING, ONCHAIN = "lightning", "onchain"
SOURCES = (LIGHTNING, ONCHAIN)
SOURCE_ACCOUNT = {LIGHTNING: SystemAccount.LND_NODE.value, ONCHAIN: SystemAccount.ONCHAIN_HOT_WALLET.value}
DEFAULT_THRESHOLDS_SAT = {LIGHTNING: 10_000, ONCHAIN: 10_000}
DEFAULT_MAX_CHECK_AGE_S = 1_800  # six missed 5-minute runs

# Parts of a difference (node - ledger), each with its sign as it enters the sum.
PART_PAYMENTS_NOT_POSTED = "payments_succeeded_not_posted"  # node paid, ledger still reserved: negative
PART_INVOICES_NOT_CREDITED = "invoices_settled_not_credited"  # node received, ledger not yet credited: positive
PART_PAYOUTS_NOT_POSTED = "payouts_confirmed_not_posted"  # inputs spent on chain, ledger not posted: negative
PART_CHANGE_NOT_POSTED = "change_of_unposted_payouts"  # our change output of such a batch: positive

# Suspense item kinds
SUSPENSE_CLOSED_ACCOUNT_DEPOSIT = "closed_account_deposit"
SUSPENSE_DOUBLE_SETTLEMENT = "invoice_settled_twice"
SUSPENSE_FOREIGN_PAYMENT = "foreign_payment"
SUSPENSE_FOREIGN_SPEND = "foreign_spend"
SUSPENSE_KINDS = {  # kind -> (source, direction): "in" = the source holds more than satflow booked, "out" = less
    SUSPENSE_CLOSED_ACCOUNT_DEPOSIT: (ONCHAIN, "in"),
    SUSPENSE_DOUBLE_SETTLEMENT: (LIGHTNING, "in"),
    SUSPENSE_FOREIGN_PAYMENT: (LIGHTNING, "out"),
    SUSPENSE_FOREIGN_SPEND: (ONCHAIN, "out"),
}
FOREIGN_KINDS = (SUSPENSE_FOREIGN_PAYMENT, SUSPENSE_FOREIGN_SPEND)
ASSIGN_TARGETS = {"equity": SystemAccount.OWNER_EQUITY.value, "expense": SystemAccount.LOSS_EXPENSE.value}

SENDS_OPEN, SENDS_PAUSED = "open", "paused"
STALE_CHECK_REASON = "no successful solvency check"  # how a pause for a stale check is worded (vs drift)


def holding_msat(balances: Sequence[Balance]) -> int:
    """What the ledger says an asset account holds: -(available + pending_out), summed over its shards."""
    return -sum(b.available + b.pending_out for b in balances)


@dataclass(frozen=True)
class SourceFigures:
    source: str
    ledger_msat: int
    node_msat: int
    parts: Mapping[str, int] = field(default_factory=dict)
    foreign_msat: int = 0
    details: Mapping[str, Any] = field(default_factory=dict)  # the node's raw figures, for the operator
    error: str | None = None  # the source could not be read: no figures, the check is not successful

    @property
    def difference_msat(self) -> int:
        return self.node_msat - self.ledger_msat

    @property
    def explained_msat(self) -> int:
        return sum(self.parts.values())

    @property
    def unexplained_msat(self) -> int:
        return self.difference_msat - self.explained_msat

    @property
    def at_risk_msat(self) -> int:
        return abs(self.unexplained_msat) + self.foreign_msat

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"source": self.source, "error": self.error}
        return {"source": self.source, "ledger_msat": self.ledger_msat, "node_msat": self.node_msat,
                "difference_msat": self.difference_msat, "explained": dict(self.parts),
                "unexplained_msat": self.unexplained_msat, "foreign_msat": self.foreign_msat,
                "at_risk_msat": self.at_risk_msat, "details": dict(self.details)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SourceFigures":
        if "error" in d:
            return cls(d["source"], 0, 0, error=d["error"])
        return cls(d["source"], int(d["ledger_msat"]), int(d["node_msat"]), dict(d.get("explained") or {}),
                   int(d.get("foreign_msat", 0)), dict(d.get("details") or {}))


@dataclass(frozen=True)
class SolvencyCheck:
    check_id: str
    at: str
    sources: tuple[SourceFigures, ...]
    system_accounts: Mapping[str, int]  # owner -> available + pending_out, summed over shards (all assets: BTC)
    liabilities_msat: int  # total user balances, derived from the system accounts (the ledger sums to zero)
    breaches: tuple[str, ...] = ()  # the reasons the breaker tripped on this check (empty: within thresholds)

    @property
    def ok(self) -> bool:
        """The check ran: every source was read."""
        return all(s.error is None for s in self.sources)

    def source(self, name: str) -> SourceFigures | None:
        return next((s for s in self.sources if s.source == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"check_id": self.check_id, "at": self.at, "ok": self.ok, "liabilities_msat": self.liabilities_msat,
                "system_accounts": dict(self.system_accounts), "sources": [s.to_dict() for s in self.sources],
                "breaches": list(self.breaches)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SolvencyCheck":
        return cls(d["check_id"], d["at"], tuple(SourceFigures.from_dict(s) for s in d["sources"]),
                   {k: int(v) for k, v in d["system_accounts"].items()}, int(d["liabilities_msat"]),
                   tuple(d.get("breaches") or ()))


def liabilities_msat(system_totals: Mapping[str, int]) -> int:
    """Total user balances: the ledger sums to zero, so they are minus the sum of the system accounts (O(shards),
    no scan of user accounts)."""
    return -sum(system_totals.values())


def breaches(sources: Sequence[SourceFigures], thresholds_sat: Mapping[str, int]) -> tuple[str, ...]:
    """Why the breaker must trip (empty: it must not). A source that could not be read is not a breach by itself:
    staleness (no successful check for too long) is."""
    out = []
    for s in sources:
        if s.error is not None:
            continue
        limit_msat = thresholds_sat.get(s.source, DEFAULT_THRESHOLDS_SAT.get(s.source, 0)) * 1000
        if s.at_risk_msat > limit_msat:
            out.append(f"{s.source}: unexplained {s.unexplained_msat} msat + foreign {s.foreign_msat} msat "
                       f"> threshold {limit_msat} msat")
    return tuple(out)


def breaches_to_trip(sources: Sequence[SourceFigures], breached: Sequence[str],
                     previous_breaches: Sequence[str]) -> tuple[str, ...]:
    """Which of this check's ``breached`` reasons pause sends now. A source with foreign money booked (a payment or
    spend satflow did not make) trips at once. Unexplained drift alone trips only when the previous check breached
    on the same source too: the ledger and the node are read one after the other, and under load credits and posts
    land between the readings (the simulation's soak found both of a run's readings torn); a real difference is
    still there one check later, a torn reading is not. Every breach stays on the check's record either way."""
    foreign = {s.source for s in sources if s.error is None and s.foreign_msat > 0}
    before = {b.split(":", 1)[0] for b in previous_breaches}
    return tuple(b for b in breached if b.split(":", 1)[0] in foreign or b.split(":", 1)[0] in before)


def parse_thresholds(text: str | None) -> dict[str, int]:
    """SolvencyDriftThresholdsSat: JSON ``{"lightning": sat, "onchain": sat}`` (empty: the defaults)."""
    out = dict(DEFAULT_THRESHOLDS_SAT)
    if not text:
        return out
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"solvency thresholds are not JSON: {exc}") from exc
    if not isinstance(data, dict) or set(data) - set(SOURCES):
        raise ValueError(f"solvency thresholds map {list(SOURCES)} to sat")
    for k, v in data.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"solvency threshold of {k} must be a non-negative integer (sat)")
        out[k] = v
    return out


@dataclass(frozen=True)
class BreakerState:
    """The one item the send path reads. ``last_success_at``/``resumed_at`` are unix seconds."""

    sends: str = SENDS_OPEN
    reasons: tuple[str, ...] = ()
    changed_at: str | None = None
    last_success_at: int | None = None  # the last check that read every source
    resumed_at: int | None = None
    resumed_by: str | None = None
    reason: str | None = None  # the admin's reason for the last resume

    def blocked_because(self, now: int, max_age_s: int) -> str | None:
        """None when sends may start; else why not. Never checked yet (no item, a fresh deployment): open.
        Stale: the last success (or an admin's resume, which buys one more period) is older than ``max_age_s``."""
        if self.sends == SENDS_PAUSED:
            return "; ".join(self.reasons) or "paused"
        last = max(self.last_success_at or 0, self.resumed_at or 0)
        if last and now - last > max_age_s:
            return f"{STALE_CHECK_REASON} for {now - last} s (limit {max_age_s} s)"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"sends": self.sends, "reasons": list(self.reasons), "changed_at": self.changed_at,
                "last_success_at": self.last_success_at, "resumed_at": self.resumed_at,
                "resumed_by": self.resumed_by, "reason": self.reason}


@dataclass(frozen=True)
class SuspenseItem:
    suspense_id: str
    kind: str
    source: str
    direction: str  # "in" | "out"
    amount_msat: int
    reference: str  # the payment hash or outpoint it was found with
    transfer_id: str  # the ledger entry that booked it
    created_at: str
    details: Mapping[str, Any] = field(default_factory=dict)
    status: str = "open"  # open | assigned
    assigned_to: str | None = None
    assigned_by: str | None = None
    assigned_at: str | None = None
    assign_reason: str | None = None
    assign_transfer_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.suspense_id, "kind": self.kind, "source": self.source, "direction": self.direction,
                "amount_msat": self.amount_msat, "reference": self.reference, "transfer_id": self.transfer_id,
                "created_at": self.created_at, "details": dict(self.details), "status": self.status,
                "assigned_to": self.assigned_to, "assigned_by": self.assigned_by, "assigned_at": self.assigned_at,
                "reason": self.assign_reason, "assign_transfer_id": self.assign_transfer_id}


def validate_reason(reason: object, field_name: str = "reason") -> str:
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 280:
        raise ValidationError("reason is required (1-280 characters)", field=field_name)
    return reason.strip()


def invariant_summary(report: Any, items: int, segments: int, duration_ms: int, at: str) -> dict[str, Any]:
    return {"at": at, "ok": report.ok, "violations": list(report.violations)[:50],
            "violation_count": len(report.violations), "totals": dict(report.totals), "balance_items": items,
            "segments": segments, "duration_ms": duration_ms}


# --- suspense ledger templates ------------------------------------------------------------------------------------
def suspense_id(kind: str, reference: str) -> str:
    """Derived from what was found: the monitor finding it twice books it once."""
    from .ids import derive_id

    return derive_id("sus", kind, reference)


def suspense_booked(*, kind: str, reference: str, amount_msat: int, created_at: str, shards: int,
                    asset: str = "BTC") -> Transfer:
    """Book money that moved outside any business event against SUSPENSE, at once. ``in``: the source holds more
    than satflow booked (its asset account is debited); ``out``: it holds less (credited)."""
    from .ledger import LedgerAccount, TransferKind, new_transfer

    source, direction = SUSPENSE_KINDS[kind]
    held = LedgerAccount(SOURCE_ACCOUNT[source], asset)
    suspense = LedgerAccount(SystemAccount.SUSPENSE.value, asset)
    debit, credit = (held, suspense) if direction == "in" else (suspense, held)
    return new_transfer(transfer_id=suspense_id(kind, reference), kind=TransferKind.POSTED, debit=debit,
                        credit=credit, amount=amount_msat, template=f"suspense_{kind}", created_at=created_at,
                        shards=shards, metadata={"kind": kind, "reference": reference})


def assign_target(target: object) -> str:
    """``equity`` | ``expense`` | a customer account id -> the ledger owner that takes the item."""
    from .accounts import validate_account_id

    if isinstance(target, str) and target in ASSIGN_TARGETS:
        return ASSIGN_TARGETS[target]
    if isinstance(target, str) and target.startswith("acc_"):
        return validate_account_id(target, "to")
    raise ValidationError("to must be 'equity', 'expense' or an account id", field="to")


def suspense_assigned(item: SuspenseItem, *, owner: str, reason: str, admin: str, created_at: str, shards: int,
                      asset: str = "BTC") -> Transfer:
    """Clear a suspense item: money found (``in``) goes to ``owner`` (a customer refund, or equity); money lost
    (``out``) is borne by ``owner`` (expense, equity, or a customer account it is recovered from)."""
    from .ledger import LedgerAccount, TransferKind, new_transfer

    suspense = LedgerAccount(SystemAccount.SUSPENSE.value, asset)
    target = LedgerAccount(owner, asset)
    debit, credit = (suspense, target) if item.direction == "in" else (target, suspense)
    return new_transfer(transfer_id=f"{item.suspense_id}:assign", kind=TransferKind.POSTED, debit=debit,
                        credit=credit, amount=item.amount_msat, template="suspense_assigned", created_at=created_at,
                        shards=shards, memo=reason, metadata={"suspense_id": item.suspense_id, "admin": admin},
                        operator=True)


# --- what the Lightning node reports ------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeBalances:
    """LND /v1/balance/channels + /v1/balance/blockchain + /v1/channels (pending HTLCs), in msat."""

    local_msat: int  # channel local balances (outgoing HTLCs excluded)
    pending_open_local_msat: int  # channels being opened, our side
    htlcs_out_msat: int  # outgoing HTLCs in flight: still ours until they settle
    htlcs_in_msat: int  # incoming HTLCs: not ours until their invoice settles
    wallet_msat: int  # the node's on-chain wallet (confirmed + unconfirmed), operator funds for channels
    commit_fee_msat: int = 0  # informational: channel commitment fees the node keeps aside

    @property
    def held_msat(self) -> int:
        return self.local_msat + self.pending_open_local_msat + self.htlcs_out_msat + self.wallet_msat


@dataclass(frozen=True)
class NodePayment:
    """One entry of LND's payment list (/v1/payments)."""

    payment_hash: str
    status: str  # IN_FLIGHT | SUCCEEDED | FAILED | INITIATED
    value_msat: int
    fee_msat: int
    payment_index: int
    creation_time_ns: int = 0


def capital_booked(*, transfer_id: str, source: str, amount_msat: int, direction: str, reason: str, created_at: str,
                   shards: int, asset: str = "BTC") -> Transfer:
    """The operator's own money put into (``in``) or taken out of (``out``) a source: channel funding, the node's
    wallet, coins moved to or from cold storage. Against owner equity, so the check compares like with like."""
    from .ledger import LedgerAccount, TransferKind, new_transfer

    if source not in SOURCES:
        raise ValidationError(f"source must be one of {list(SOURCES)}", field="source")
    if direction not in ("in", "out"):
        raise ValidationError("direction must be 'in' or 'out'", field="direction")
    held = LedgerAccount(SOURCE_ACCOUNT[source], asset)
    equity = LedgerAccount(SystemAccount.OWNER_EQUITY.value, asset)
    debit, credit = (held, equity) if direction == "in" else (equity, held)
    return new_transfer(transfer_id=transfer_id, kind=TransferKind.POSTED, debit=debit, credit=credit,
                        amount=amount_msat, template=f"capital_{direction}", created_at=created_at, shards=shards,
                        memo=validate_reason(reason), metadata={"source": source}, operator=True)
