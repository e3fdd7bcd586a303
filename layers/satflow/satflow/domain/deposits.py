"""On-chain deposits (pure): the credit policy, one deposit's lifecycle, confirmation milestones, chain tip records.

Lifecycle of a deposit, keyed by its outpoint ``txid:vout`` (rule 7)::

    (mempool) SEEN --block--> CONFIRMING --policy depth--> CREDITED --(depth 6: final, no longer watched)
         ^  |                    |                            |
         |  +--gone from mempool-+--block disconnected,--+    +--block disconnected and the tx not re-mined by
         |     (void the pending) tx back in the mempool-+       the time the monitor reaches the tip:
         |           -> REVERSED                -> SEEN          a reversal transfer -> REVERSED
         +---- the same outpoint seen again (rebroadcast, re-mined): a new *generation*, a new pending

Ledger shape (decision): the first sighting (mempool or block) records a PENDING transfer ``hot wallet -> user``
(template ``deposit_seen``), so the user sees ``pending_in`` at once; reaching the policy depth *posts* that pending
(``post_pending``: the credit); a deposit that disappears before credit voids it; one that disappears after credit
gets an explicit ``deposit_reversed`` transfer (overdraft + freeze when the user already spent it). Every id is
derived from the outpoint and the deposit's generation (``dsn_``/``dcr_``/``dvd_``/``rev_`` + ``txid:vout`` and
``.g<n>`` after the first generation), so rescans replay instead of double-counting.

A REVERSED deposit says how it was taken back in ``reversed_by``: a ``dvd_`` void (it was never credited: dropped
from the mempool or its block was orphaned before credit) or a ``rev_`` reversal transfer (it was credited).

Amounts are satoshi on-chain and msat on the ledger (x1000, exact).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from .errors import ValidationError
from .onchain import DepositStatus

# Confirmation depths that produce an event (0 = first seen, in the mempool or directly in a block).
MILESTONES = (0, 1, 3, 6)
# A credited deposit stops being watched at this depth (reorgs deeper than this are still rewound from block records,
# see REORG_WINDOW, but no longer produce confirmation events).
FINAL_DEPTH = 6
# How many processed (height, hash) block records the monitor keeps to find a fork point.
REORG_WINDOW = 100
MAX_CONFIRMATIONS_POLICY = 100

# Event types on a deposit's ``events`` list (the outbox/webhooks issue will publish them).
EVENT_SEEN = "deposit.seen"
EVENT_CONFIRMATIONS = "deposit.confirmations"
EVENT_CREDITED = "deposit.credited"
EVENT_REORGED = "deposit.reorged"  # its block was disconnected
EVENT_DROPPED = "deposit.dropped"  # gone before credit: the pending was voided
EVENT_REVERSED = "deposit.reversed"  # gone after credit: a reversal transfer took it back

_OUTPOINT_RE = re.compile(r"^[0-9a-f]{64}:(0|[1-9][0-9]{0,9})$")


class ReorgBeyondWindow(RuntimeError):
    """The node's chain forked below the oldest block record we keep: an operator must look (never guessed)."""


# --- the credit policy -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DepositPolicy:
    """Confirmations required before a deposit is credited, by amount tier (sat, upper bound inclusive).

    Text form (``SATFLOW_DEPOSIT_POLICY``): ``"1000000:1,10000000:3,*:6"`` = up to 0.01 BTC after 1 confirmation,
    up to 0.1 BTC after 3, anything larger after 6. Bounds strictly ascending; the last tier is ``*``; a larger
    amount never needs fewer confirmations than a smaller one; confirmations are 1..100.
    """

    tiers: tuple[tuple[int | None, int], ...]  # (upper bound in sat or None for '*', confirmations)

    @classmethod
    def parse(cls, text: object) -> DepositPolicy:
        if not isinstance(text, str) or not text.strip():
            raise ValidationError("deposit policy must be a string like '1000000:1,10000000:3,*:6'",
                                  field="deposit_policy")
        tiers: list[tuple[int | None, int]] = []
        parts = [p.strip() for p in text.split(",")]
        for position, part in enumerate(parts):
            bound_text, sep, confs_text = part.partition(":")
            if not sep or not re.fullmatch(r"[0-9]{1,3}", confs_text.strip()):
                raise ValidationError(f"deposit policy tier {part!r} must be '<max_sat>:<confirmations>'",
                                      field="deposit_policy")
            confs = int(confs_text)
            if not 1 <= confs <= MAX_CONFIRMATIONS_POLICY:
                raise ValidationError(f"confirmations must be 1..{MAX_CONFIRMATIONS_POLICY}", field="deposit_policy")
            bound_text = bound_text.strip()
            last = position == len(parts) - 1
            if bound_text == "*":
                if not last:
                    raise ValidationError("'*' must be the last deposit policy tier", field="deposit_policy")
                bound = None
            elif re.fullmatch(r"[1-9][0-9]{0,15}", bound_text):
                if last:
                    raise ValidationError("the last deposit policy tier must be '*' (amounts above every bound)",
                                          field="deposit_policy")
                bound = int(bound_text)
            else:
                raise ValidationError(f"deposit policy bound {bound_text!r} must be a positive integer (sat) or '*'",
                                      field="deposit_policy")
            if tiers:
                previous_bound, previous_confs = tiers[-1]
                assert previous_bound is not None
                if bound is not None and bound <= previous_bound:
                    raise ValidationError("deposit policy bounds must be strictly ascending", field="deposit_policy")
                if confs < previous_confs:
                    raise ValidationError("a larger deposit may not need fewer confirmations than a smaller one",
                                          field="deposit_policy")
            tiers.append((bound, confs))
        return cls(tuple(tiers))

    def required_confirmations(self, amount_sat: int) -> int:
        if isinstance(amount_sat, bool) or not isinstance(amount_sat, int) or amount_sat <= 0:
            raise ValidationError("amount_sat must be a positive integer", field="amount_sat")
        for bound, confs in self.tiers:
            if bound is None or amount_sat <= bound:
                return confs
        raise AssertionError("the last tier is '*'")  # pragma: no cover - parse() guarantees it

    @property
    def final_depth(self) -> int:
        """Watched until credited and at least this deep."""
        return max(FINAL_DEPTH, self.tiers[-1][1])

    def __str__(self) -> str:
        return ",".join(f"{'*' if b is None else b}:{c}" for b, c in self.tiers)


# --- records -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChainTip:
    """The last block the monitor processed completely."""

    height: int
    hash: str


@dataclass(frozen=True)
class BlockRecord:
    """A processed block and the outputs of ours found in it (what a reorg must undo)."""

    height: int
    hash: str
    prev_hash: str | None
    deposits: tuple[str, ...] = ()  # outpoints of user deposits confirmed in this block
    change: tuple[str, ...] = ()  # outpoints of our own (hot wallet) outputs confirmed in this block

    @property
    def tip(self) -> ChainTip:
        return ChainTip(self.height, self.hash)


@dataclass(frozen=True)
class AddressRecord:
    """Who owns a script: one BIP84 index of one chain, owned by exactly one account (or a system owner)."""

    script_pubkey_hex: str
    address: str
    owner: str  # acc_... for deposit addresses, sys:onchain_hot_wallet for change
    chain: int  # 0 receive, 1 change
    index: int
    created_at: str


@dataclass(frozen=True)
class DepositAddress:
    address: str
    index: int
    network: str


@dataclass(frozen=True)
class DepositEvent:
    type: str
    confirmations: int
    generation: int
    at: str
    height: int | None = None


@dataclass(frozen=True)
class Deposit:
    txid: str
    vout: int
    account_id: str
    amount_sat: int
    address: str
    script_pubkey_hex: str
    chain: int
    index: int
    status: DepositStatus
    required_confirmations: int
    first_seen_at: str
    updated_at: str
    generation: int = 0
    height: int | None = None  # None while unconfirmed (mempool, or its block was disconnected)
    block_hash: str | None = None
    milestone: int = -1  # the deepest milestone whose event was recorded in this confirmation epoch
    credited_at: str | None = None
    reversed_at: str | None = None
    reversed_by: str | None = None  # dvd_... (pending voided) or rev_... (reversal transfer)
    events: tuple[DepositEvent, ...] = field(default=())

    @property
    def outpoint(self) -> str:
        return f"{self.txid}:{self.vout}"

    @property
    def orphaned(self) -> bool:
        """Credited, but its block is no longer in the active chain and it has not been re-mined (yet)."""
        return self.status is DepositStatus.CREDITED and self.height is None

    def confirmations(self, tip_height: int | None) -> int:
        return confirmations(self.height, tip_height)


def confirmations(height: int | None, tip_height: int | None) -> int:
    """Bitcoin Core's convention: a transaction in the tip block has 1 confirmation; unconfirmed has 0."""
    if height is None or tip_height is None or tip_height < height:
        return 0
    return tip_height - height + 1


def parse_outpoint(outpoint: object) -> tuple[str, int]:
    if not isinstance(outpoint, str) or not _OUTPOINT_RE.match(outpoint):
        raise ValidationError("an outpoint is '<64 hex txid>:<vout>'", field="outpoint")
    txid, vout = outpoint.split(":")
    return txid, int(vout)


# --- ids (derived: a rescan replays, never double-counts) --------------------------------------------------------
def _suffix(generation: int) -> str:
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise ValueError("generation is a non-negative integer")
    return "" if generation == 0 else f".g{generation}"


def seen_transfer_id(outpoint: str, generation: int = 0) -> str:
    return f"dsn_{outpoint}{_suffix(generation)}"


def credit_transfer_id(outpoint: str, generation: int = 0) -> str:
    return f"dcr_{outpoint}{_suffix(generation)}"


def void_transfer_id(outpoint: str, generation: int = 0) -> str:
    return f"dvd_{outpoint}{_suffix(generation)}"


def reversal_transfer_id(outpoint: str, generation: int = 0) -> str:
    return f"rev_{outpoint}{_suffix(generation)}"


# --- confirmation steps ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConfirmationStep:
    """What one monitor pass does to a confirmed deposit: the events to record, whether to credit, whether the
    deposit is final (no longer watched)."""

    confirmations: int
    milestone: int  # the new milestone (unchanged when no event is due)
    events: tuple[DepositEvent, ...]
    credit: bool
    final: bool

    @property
    def changes_anything(self) -> bool:
        return bool(self.events) or self.credit or self.final


def milestones_passed(previous: int, confirmations_now: int) -> list[int]:
    return [m for m in MILESTONES if previous < m <= confirmations_now]


def confirmation_step(deposit: Deposit, tip_height: int, policy: DepositPolicy, at: str) -> ConfirmationStep:
    """Events due at ``tip_height`` and whether the deposit reaches its credit depth. Only for deposits in a block
    (``height`` set) that are CONFIRMING or CREDITED."""
    confs = deposit.confirmations(tip_height)
    passed = milestones_passed(deposit.milestone, confs)
    events = [DepositEvent(EVENT_SEEN if m == 0 else EVENT_CONFIRMATIONS, m, deposit.generation, at, deposit.height)
              for m in passed]
    credit = deposit.status is DepositStatus.CONFIRMING and confs >= deposit.required_confirmations
    if credit:
        events.append(DepositEvent(EVENT_CREDITED, confs, deposit.generation, at, deposit.height))
    credited = credit or deposit.status is DepositStatus.CREDITED
    final = credited and confs >= max(FINAL_DEPTH, deposit.required_confirmations)
    return ConfirmationStep(confs, max([deposit.milestone, *passed]), tuple(events), credit, final)


def seen_event(generation: int, at: str, height: int | None) -> DepositEvent:
    """The event of a new sighting (deeper milestones follow from confirmation_step, one place for all of them)."""
    return DepositEvent(EVENT_SEEN, 0, generation, at, height)


def outpoints(items: Iterable[str]) -> tuple[str, ...]:
    """Validated, de-duplicated, order kept."""
    seen: dict[str, None] = {}
    for item in items:
        parse_outpoint(item)
        seen.setdefault(item, None)
    return tuple(seen)
