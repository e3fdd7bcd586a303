"""Coin selection for payout batches (pure: integers only, no I/O).

Our wallet is BIP84 only, so every input is p2wpkh: 68 vbytes each (272 wu, worst-case 72-byte signature). With
integer fee rates (sat/vB) every size and fee below is exact integer arithmetic: for fewer than 253 inputs
``vbytes(n inputs) = vbytes(0 inputs) + 68 n`` (see ``satflow.domain.bitcoin.estimate_tx_vbytes``).

Two algorithms, tried in order by :func:`selection_candidates`:

1. **Branch and bound** (Bitcoin Core's ``SelectCoinsBnB``, Murch 2016): a depth-first search over the candidates
   sorted by effective value (value minus the fee its own input costs) for a subset whose effective value lands in
   ``[target, target + cost_of_change]``: such a transaction needs no change output, and whatever it overshoots
   goes to the fee (at most the cost of making and later spending a change output, so it is never worse than
   change). Among solutions it keeps the one with the least *waste*
   (``sum(input fee at the current rate - input fee at the long-term rate) + excess``), bounded by
   ``BNB_MAX_TRIES`` steps.
2. **Fallback** (deterministic, so a retried batcher run builds the same transaction): the smallest single coin
   that covers the target with a change output ("lowest larger"), else the largest coins first until the target
   with change is covered; if only the target without change can be covered, the whole remainder (below the cost
   of a change output plus its dust limit) goes to the fee.

A change output below the dust threshold is never created: its value goes to the fee instead.

Inputs are limited by ``max_inputs``: a batch's inputs are reserved in the same DynamoDB transaction as its payouts
(at most 100 items per transaction).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .bitcoin import DUST_THRESHOLD_SAT, AddressKind, estimate_tx_vbytes, output_vbytes
from .onchain import Utxo

INPUT_KIND = AddressKind.P2WPKH  # every wallet output is BIP84 (receive and change chains)
INPUT_VBYTES = 68  # p2wpkh input incl. witness, worst case (72-byte signature): 272 wu / 4
CHANGE_KIND = AddressKind.P2WPKH
BNB_MAX_TRIES = 100_000  # as Bitcoin Core
# The fee rate at which we expect to spend our outputs eventually (Core's -consolidatefeerate default, 10 sat/vB).
LONG_TERM_FEE_RATE = 10

BNB = "bnb"
LOWEST_LARGER = "lowest_larger"
LARGEST_FIRST = "largest_first"
REQUIRED_FIRST = "required_first"  # a successor of an abandoned batch: all its inputs, then the largest others


@dataclass(frozen=True)
class Selection:
    algorithm: str  # bnb | lowest_larger | largest_first
    inputs: tuple[Utxo, ...]
    amount_sat: int  # what the payouts receive
    fee_sat: int  # inputs - payouts - change, exactly
    change_sat: int  # 0: no change output
    vbytes: int  # estimated virtual size of the signed transaction
    waste: int

    @property
    def input_sat(self) -> int:
        return sum(u.value_sat for u in self.inputs)

    @property
    def has_change(self) -> bool:
        return self.change_sat > 0


@dataclass(frozen=True)
class _Params:
    amount_sat: int
    output_kinds: tuple[AddressKind, ...]
    fee_rate: int
    long_term_fee_rate: int
    max_inputs: int

    @property
    def base_vbytes(self) -> int:
        """Everything but the inputs: version, locktime, counts, segwit marker, the payout outputs."""
        return estimate_tx_vbytes([INPUT_KIND], list(self.output_kinds)) - INPUT_VBYTES

    @property
    def input_fee(self) -> int:
        return INPUT_VBYTES * self.fee_rate

    @property
    def change_output_fee(self) -> int:
        return output_vbytes(CHANGE_KIND) * self.fee_rate

    @property
    def cost_of_change(self) -> int:
        """Creating a change output now plus spending it later (Core: change fee + change spend fee)."""
        return self.change_output_fee + INPUT_VBYTES * self.long_term_fee_rate

    @property
    def min_change(self) -> int:
        return DUST_THRESHOLD_SAT[CHANGE_KIND]

    @property
    def target(self) -> int:
        """What the effective values of the inputs must cover for a changeless transaction."""
        return self.amount_sat + self.base_vbytes * self.fee_rate

    def effective(self, utxo: Utxo) -> int:
        return utxo.value_sat - self.input_fee


def _params(amount_sat: int, output_kinds: Sequence[AddressKind], fee_rate: int, long_term_fee_rate: int,
            max_inputs: int) -> _Params:
    for name, value in (("amount_sat", amount_sat), ("fee_rate", fee_rate), ("max_inputs", max_inputs)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer")
    if isinstance(long_term_fee_rate, bool) or not isinstance(long_term_fee_rate, int) or long_term_fee_rate < 0:
        raise ValueError("long_term_fee_rate must be a non-negative integer")
    if not output_kinds:
        raise ValueError("a batch pays at least one output")
    if max_inputs > 252:
        raise ValueError("max_inputs above 252 changes the input count's compact size")
    return _Params(amount_sat, tuple(AddressKind(k) for k in output_kinds), fee_rate, long_term_fee_rate,
                   max_inputs)


def _changeless(p: _Params, algorithm: str, inputs: Sequence[Utxo]) -> Selection | None:
    vbytes = p.base_vbytes + INPUT_VBYTES * len(inputs)
    total = sum(u.value_sat for u in inputs)
    fee = total - p.amount_sat
    if fee < vbytes * p.fee_rate:
        return None
    excess = fee - vbytes * p.fee_rate
    waste = len(inputs) * INPUT_VBYTES * (p.fee_rate - p.long_term_fee_rate) + excess
    return Selection(algorithm, tuple(inputs), p.amount_sat, fee, 0, vbytes, waste)


def _with_change(p: _Params, algorithm: str, inputs: Sequence[Utxo]) -> Selection | None:
    """Pay the exact fee and return the rest as change; a change below dust goes to the fee instead."""
    vbytes = p.base_vbytes + INPUT_VBYTES * len(inputs) + output_vbytes(CHANGE_KIND)
    total = sum(u.value_sat for u in inputs)
    fee = vbytes * p.fee_rate
    change = total - p.amount_sat - fee
    if change < p.min_change:
        return _changeless(p, algorithm, inputs)
    waste = len(inputs) * INPUT_VBYTES * (p.fee_rate - p.long_term_fee_rate) + p.cost_of_change
    return Selection(algorithm, tuple(inputs), p.amount_sat, fee, change, vbytes, waste)


def _ordered(utxos: Sequence[Utxo], p: _Params) -> list[Utxo]:
    """Descending effective value; ties broken by outpoint so every run sees the same order."""
    usable = [u for u in utxos if p.effective(u) > 0]
    return sorted(usable, key=lambda u: (-p.effective(u), u.outpoint))


# ------------------------------------------------------------------------------------------------ branch and bound
def branch_and_bound(utxos: Sequence[Utxo], *, amount_sat: int, output_kinds: Sequence[AddressKind],
                     fee_rate: int, long_term_fee_rate: int = LONG_TERM_FEE_RATE,
                     max_inputs: int = 50, max_tries: int = BNB_MAX_TRIES) -> Selection | None:
    """A changeless selection with effective value in [target, target + cost_of_change], least waste; or None."""
    p = _params(amount_sat, output_kinds, fee_rate, long_term_fee_rate, max_inputs)
    pool = _ordered(utxos, p)
    values = [p.effective(u) for u in pool]
    # waste of including an input: its fee now minus what it would cost at the long-term rate
    input_waste = INPUT_VBYTES * (p.fee_rate - p.long_term_fee_rate)
    target, window = p.target, p.cost_of_change
    available = sum(values)
    if available < target:
        return None
    feerate_high = p.fee_rate > p.long_term_fee_rate

    selected: list[int] = []  # indexes into pool
    current = waste = 0
    best: list[int] | None = None
    best_waste = None
    index = 0
    for _ in range(max_tries):
        backtrack = False
        if (current + available < target or current > target + window
                or (best_waste is not None and feerate_high and waste > best_waste)):
            backtrack = True
        elif current >= target:
            total_waste = waste + (current - target)
            if best_waste is None or total_waste <= best_waste:
                best, best_waste = list(selected), total_waste
            backtrack = True
        elif len(selected) >= p.max_inputs:
            backtrack = True
        if backtrack:
            if not selected:
                break  # the whole tree is explored
            # give back the omitted values after the last included one, then exclude that one
            index -= 1
            while index > selected[-1]:
                available += values[index]
                index -= 1
            current -= values[index]
            waste -= input_waste
            selected.pop()
        else:
            available -= values[index]
            # skip an inclusion branch equivalent to the one just explored (same value as the excluded previous)
            if not selected or index - 1 == selected[-1] or values[index] != values[index - 1]:
                selected.append(index)
                current += values[index]
                waste += input_waste
        index += 1
    if best is None:
        return None
    return _changeless(p, BNB, [pool[i] for i in best])


# ------------------------------------------------------------------------------------------------ fallback
def fallback(utxos: Sequence[Utxo], *, amount_sat: int, output_kinds: Sequence[AddressKind], fee_rate: int,
             long_term_fee_rate: int = LONG_TERM_FEE_RATE, max_inputs: int = 50) -> Selection | None:
    """Lowest-larger single coin, else largest-first; a change output whenever it is not dust."""
    p = _params(amount_sat, output_kinds, fee_rate, long_term_fee_rate, max_inputs)
    pool = _ordered(utxos, p)
    with_change_target = p.target + p.change_output_fee + p.min_change
    covering = [u for u in pool if p.effective(u) >= with_change_target]
    if covering:
        return _with_change(p, LOWEST_LARGER, [covering[-1]])  # pool is descending: the last is the smallest
    chosen: list[Utxo] = []
    total = 0
    for utxo in pool[: p.max_inputs]:
        chosen.append(utxo)
        total += p.effective(utxo)
        if total >= with_change_target:
            return _with_change(p, LARGEST_FIRST, chosen)
    # Not enough for a change output: a changeless spend is fine if it covers the target at all (the remainder
    # is below a change output's cost plus dust, so it goes to the fee).
    chosen, total = [], 0
    for utxo in pool[: p.max_inputs]:
        chosen.append(utxo)
        total += p.effective(utxo)
        if total >= p.target:
            return _changeless(p, LARGEST_FIRST, chosen)
    return None


def selection_candidates(utxos: Sequence[Utxo], *, amount_sat: int, output_kinds: Sequence[AddressKind],
                         fee_rate: int, long_term_fee_rate: int = LONG_TERM_FEE_RATE,
                         max_inputs: int = 50) -> list[Selection]:
    """Every selection worth trying, best first: BnB's changeless one (if any), then the fallback's."""
    kwargs = dict(amount_sat=amount_sat, output_kinds=output_kinds, fee_rate=fee_rate,
                  long_term_fee_rate=long_term_fee_rate, max_inputs=max_inputs)
    found = [branch_and_bound(utxos, **kwargs), fallback(utxos, **kwargs)]
    return [s for s in found if s is not None]


def with_required_inputs(required: Sequence[Utxo], utxos: Sequence[Utxo], *, amount_sat: int,
                         output_kinds: Sequence[AddressKind], fee_rate: int,
                         long_term_fee_rate: int = LONG_TERM_FEE_RATE, max_inputs: int = 50) -> Selection | None:
    """Every input of ``required`` (an abandoned batch's: the successor must spend them all, so the two
    transactions conflict and at most one confirms), then the largest of ``utxos`` until the payouts and the fee
    are covered; change whenever it is not dust. None if even that cannot pay them."""
    p = _params(amount_sat, output_kinds, fee_rate, long_term_fee_rate, max_inputs)
    if not required or len(required) > p.max_inputs:
        return None
    taken = {u.outpoint for u in required}
    chosen = list(required)
    extra = [u for u in _ordered(utxos, p) if u.outpoint not in taken]
    while True:
        found = _with_change(p, REQUIRED_FIRST, chosen)
        if found is not None:
            return found
        if not extra or len(chosen) >= p.max_inputs:
            return None
        chosen.append(extra.pop(0))


def select_coins(utxos: Sequence[Utxo], **kwargs) -> Selection | None:
    candidates = selection_candidates(utxos, **kwargs)
    return candidates[0] if candidates else None
