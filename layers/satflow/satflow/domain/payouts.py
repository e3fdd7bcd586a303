"""On-chain payouts (pure): request validation, the fee-reserve and fee-rate policy, fee shares, batch records and
the batch transaction itself (PSBT build, hot signing, checking an externally signed PSBT, fee-bump plans).

Money flow: a payout reserves ``amount + fee reserve`` (``templates.payout_reserved``, a pending debit towards the
hot wallet). The batcher puts many payouts into one transaction; its fee is split into integer *shares* that add
up exactly to the fee. When the transaction confirms, each payout posts ``amount + share`` and the rest of its
reserve returns; a payout cancelled before broadcast is voided (everything returns).

Fee reserve policy
------------------
``reserve = FEE_RATE_CAP[priority] * (output_vbytes(address kind) + OVERHEAD_BUDGET_VBYTES)``: what the payout's
own output costs plus a budget for its share of the rest of a transaction (fixed part 11 vB + two p2wpkh inputs
136 vB + one change output 31 vB = 178 vB, i.e. a payout alone in a transaction with two inputs and change), all
at the priority's fee-rate cap. Batching spreads the overhead over many payouts, so a share is normally far below
the reserve; the batcher never builds a transaction in which some share would exceed its payout's reserve
(it leaves the payouts queued and logs), and a fee bump is refused for the same reason. The batcher pays
``min(estimate, cap)``: the cap is the most a user can be charged, whatever the mempool does.

Fee rate policy
---------------
``estimatesmartfee(conf_target, "economical")`` (fast 2, normal 6, slow 24 blocks) rounded up to whole sat/vB; when
the node has no estimate (None: fresh node, regtest) the priority's ``FEE_RATE_FALLBACK``; never below 1 sat/vB
(min relay fee) and never above the cap.
"""
from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .bitcoin import (
    AddressKind,
    FeeEstimate,
    Network,
    dust_threshold_sat,
    output_vbytes,
    script_pubkey_kind,
    validate_address,
)
from .errors import ValidationError
from .errors import (  # noqa: F401  (re-exported: defined with every other typed error)
    AmountBelowDust,
    PayoutAmountTooLarge,
    PayoutNotFound,
    PayoutBatchNotFound,
    PayoutNotCancelable,
    PayoutToOwnAddress,
    BatchNotAwaitingSignature,
    InvalidPsbt,
    SignedPsbtMismatch,
    FeeBumpRejected,
)
from .ids import derive_id
from .money import SAT_PER_BTC
from .onchain import PAYOUT_CONFIRMATIONS, PayoutStatus, Priority, Utxo  # noqa: F401

# ---------------------------------------------------------------------------------------------------- errors
# HTTP statuses suggested for satflow.api.errors.HTTP_STATUS are in each docstring.


# ---------------------------------------------------------------------------------------------------- policy
FEE_RATE_CAP: dict[Priority, int] = {Priority.FAST: 50, Priority.NORMAL: 25, Priority.SLOW: 10}  # sat/vB
FEE_RATE_FALLBACK: dict[Priority, int] = {Priority.FAST: 20, Priority.NORMAL: 10, Priority.SLOW: 2}  # no estimate
MIN_FEE_RATE = 1  # sat/vB: Bitcoin Core's default min relay fee
INCREMENTAL_RELAY_FEE_RATE = 1  # sat/vB: BIP125 rule 4 (a replacement pays for its own relay)
OVERHEAD_BUDGET_VBYTES = 11 + 2 * 68 + 31
MAX_PAYOUT_SAT = 10 * SAT_PER_BTC
# A batch is written in one TransactWriteItems (<= 100 items): the batch + one item per payout + one per input.
MAX_BATCH_PAYOUTS = 40
MAX_TX_ITEMS = 100
RBF_SEQUENCE = 0xFFFF_FFFD  # BIP125: nSequence < 0xfffffffe signals replaceability


def fee_reserve_sat(kind: AddressKind, priority: Priority) -> int:
    return FEE_RATE_CAP[priority] * (output_vbytes(kind) + OVERHEAD_BUDGET_VBYTES)


def fee_rate_for(priority: Priority, estimate: FeeEstimate | None) -> tuple[int, str]:
    """(sat/vB, where it came from: estimate | fallback | capped | floor)."""
    if estimate is None:
        rate, source = FEE_RATE_FALLBACK[priority], "fallback"
    else:
        rate, source = estimate.sat_per_vb, "estimate"
    if rate > FEE_RATE_CAP[priority]:
        return FEE_RATE_CAP[priority], "capped"
    if rate < MIN_FEE_RATE:
        return MIN_FEE_RATE, "floor"
    return rate, source


def parse_priority(priority: object) -> Priority:
    for p in Priority:
        if priority == p.value:
            return p
    raise ValidationError("priority must be one of fast, normal, slow", field="priority")


@dataclass(frozen=True)
class PayoutRequest:
    address: str
    script_pubkey_hex: str
    kind: AddressKind
    amount_sat: int
    priority: Priority
    fee_reserve_sat: int


def validate_payout_request(address: object, amount_sat: object, priority: object, network: Network) -> PayoutRequest:
    """Every check that needs no I/O. Raises InvalidAddress / WrongNetworkAddress / UnsupportedAddressType,
    AmountBelowDust, PayoutAmountTooLarge or ValidationError."""
    if isinstance(address, str):
        address = address.strip()
    parsed = validate_address(address, network)
    if isinstance(amount_sat, bool) or not isinstance(amount_sat, int):
        raise ValidationError("amount_sat must be an integer number of satoshi", field="amount_sat")
    if amount_sat <= 0:
        raise ValidationError("amount_sat must be positive", field="amount_sat")
    threshold = dust_threshold_sat(parsed.script_pubkey_hex)
    if amount_sat < threshold:
        raise AmountBelowDust(f"amount_sat must be at least {threshold} for this address type (dust)",
                              field="amount_sat", minimum=threshold)
    if amount_sat > MAX_PAYOUT_SAT:
        raise PayoutAmountTooLarge(f"amount_sat must be at most {MAX_PAYOUT_SAT}", field="amount_sat",
                                   maximum=MAX_PAYOUT_SAT)
    prio = parse_priority(priority)
    return PayoutRequest(parsed.address, parsed.script_pubkey_hex, parsed.kind, amount_sat, prio,
                         fee_reserve_sat(parsed.kind, prio))


# ---------------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Payout:
    payout_id: str
    account_id: str
    address: str
    script_pubkey_hex: str
    amount_sat: int
    fee_reserve_sat: int
    priority: Priority
    request_hash: str  # fingerprint of the request: same Idempotency-Key + other body -> 409
    status: PayoutStatus
    created_at: str
    updated_at: str
    requeues: int = 0  # times its batch was cancelled under it (part of the next batch's id)
    batch_id: str | None = None
    txid: str | None = None  # the broadcast transaction (the latest replacement; the confirmed one at the end)
    fee_sat: int | None = None  # its share of the batch fee (planned while batched, final when confirmed)
    # An ABANDONED batch whose signed transaction may still be broadcast (its PSBT went to the external signer):
    # the payout's next transaction must spend all that batch's inputs, so at most one of the two can confirm.
    # While set the payout cannot be cancelled (a signed transaction paying it may exist outside satflow).
    must_spend_inputs_of: str | None = None

    @property
    def kind(self) -> AddressKind:
        kind = script_pubkey_kind(self.script_pubkey_hex)
        assert kind is not None
        return kind

    @property
    def output_vbytes(self) -> int:
        return output_vbytes(self.kind)

    @property
    def reserved_sat(self) -> int:
        return self.amount_sat + self.fee_reserve_sat


class BatchStatus(str, enum.Enum):
    BUILT = "BUILT"  # inputs reserved, unsigned PSBT recorded, payouts BATCHED
    SIGNING = "SIGNING"  # waiting for the external signer (task token stored), payouts SIGNING
    SIGNED = "SIGNED"  # a fully signed transaction is recorded: no longer cancelable
    BROADCAST = "BROADCAST"  # sent; tracked until one of its variants (original or replacements) confirms
    CONFIRMED = "CONFIRMED"  # payouts posted, inputs SPENT
    CANCELED = "CANCELED"  # cancelled before its PSBT left satflow (BUILT): inputs released, payouts re-queued
    # The external signer did not answer in time, but the PSBT is out there and may still be signed and
    # broadcast: the inputs are NOT released (they pass to the successor batch, which spends them all), the payouts
    # are re-queued bound to this batch (Payout.must_spend_inputs_of). Stays in the open index: the batcher's
    # recovery watches the node for its transaction (and adopts it if it confirms).
    ABANDONED = "ABANDONED"
    SUPERSEDED = "SUPERSEDED"  # abandoned, and a transaction spending its inputs confirmed: it can never confirm


@dataclass(frozen=True)
class ChangeOutput:
    index: int  # BIP84 change chain (1) index
    address: str
    script_pubkey_hex: str


@dataclass(frozen=True)
class TxVariant:
    """One version of the batch transaction: the original or a fee-bump replacement (same inputs and payouts)."""

    txid: str
    unsigned_psbt: str  # base64
    fee_sat: int
    fee_rate: int  # target sat/vB it was built for
    vbytes: int  # estimated (worst-case signatures)
    change_sat: int  # 0: no change output
    change_vout: int | None
    vouts: Mapping[str, int]  # payout id -> output index
    shares: Mapping[str, int]  # payout id -> fee share (sat); sums to fee_sat exactly
    signed_hex: str | None = None
    broadcast_at: str | None = None


@dataclass(frozen=True)
class Batch:
    batch_id: str
    priority: Priority
    payout_ids: tuple[str, ...]  # sorted
    inputs: tuple[Utxo, ...]
    change: ChangeOutput | None  # the change address (kept by replacements, even when they drop the output)
    value_sat: int  # sum of the payout amounts: what leaves custody (the hot-signing limit compares this)
    status: BatchStatus
    variants: tuple[TxVariant, ...]  # [0] the original, then replacements in order
    created_at: str
    updated_at: str
    version: int = 0  # bumped by every write: conditional puts detect concurrent writers
    task_token: str | None = None  # the workflow's token while waiting for the external signer
    pending_replacement: TxVariant | None = None  # a fee bump waiting for the external signer
    confirmed_txid: str | None = None
    selection: str | None = None  # coin-selection algorithm that built it
    supersedes: str | None = None  # the ABANDONED batch whose inputs this one spends (all of them)

    @property
    def current(self) -> TxVariant:
        return self.variants[-1]

    @property
    def txids(self) -> tuple[str, ...]:
        return tuple(v.txid for v in self.variants)

    def variant(self, txid: str) -> TxVariant:
        for v in self.variants:
            if v.txid == txid:
                return v
        raise KeyError(txid)

    @property
    def input_sat(self) -> int:
        return sum(u.value_sat for u in self.inputs)


def batch_id_for(payouts: Iterable[Payout]) -> str:
    """Derived from its payouts (and how often each was re-queued): a retried batcher run, or a second batcher,
    building the same batch collides on this id instead of creating a second one."""
    return derive_id("bat", *sorted(f"{p.payout_id}:{p.requeues}" for p in payouts))


# ---------------------------------------------------------------------------------------------------- fee shares
def fee_shares(fee_sat: int, payout_vbytes: Mapping[str, int], total_vbytes: int) -> dict[str, int]:
    """Split ``fee_sat`` over payouts in proportion to (own output vbytes + an equal share of the overhead: inputs,
    change, fixed part). Integer sats; the remainder of the floor division goes one sat each to the payouts with
    the largest fractional parts (ties: lowest payout id). The shares add up to ``fee_sat`` exactly."""
    n = len(payout_vbytes)
    if n == 0:
        raise ValueError("no payouts to share the fee")
    overhead = total_vbytes - sum(payout_vbytes.values())
    if overhead < 0 or fee_sat < 0:
        raise ValueError("total vbytes must include the payout outputs; the fee is never negative")
    # weight_i = o_i + overhead / n, scaled by n to stay integral; sum(weights) = n * total_vbytes
    weights = {pid: vb * n + overhead for pid, vb in payout_vbytes.items()}
    denominator = n * total_vbytes
    shares = {pid: fee_sat * w // denominator for pid, w in weights.items()}
    left = fee_sat - sum(shares.values())
    order = sorted(weights, key=lambda pid: (-(fee_sat * weights[pid] % denominator), pid))
    for pid in order[:left]:
        shares[pid] += 1
    assert sum(shares.values()) == fee_sat
    return shares


def shares_within_reserves(shares: Mapping[str, int], payouts: Iterable[Payout]) -> list[str]:
    """Payout ids whose share exceeds their fee reserve (empty: all fit)."""
    return sorted(p.payout_id for p in payouts if shares[p.payout_id] > p.fee_reserve_sat)


# ---------------------------------------------------------------------------------------------------- PSBTs
@dataclass(frozen=True)
class WalletKeys:
    """How our BIP84 account is named in PSBTs: the fingerprint and path prefix in front of chain/index.

    With a descriptor that carries its origin (``wpkh([fp/84h/1h/0h]tpub.../0/*)``) that is the master fingerprint and
    the full path, as hardware signers expect; with a bare account key it is the account key's own fingerprint and
    the relative path ``chain/index``."""

    deriver: object  # satflow.domain.addresses.DepositAddressDeriver
    fingerprint: bytes
    prefix: tuple[int, ...]

    @classmethod
    def from_account_key(cls, account_key: str, network: Network) -> "WalletKeys":
        from embit import base58, bip32

        from .addresses import DepositAddressDeriver

        deriver = DepositAddressDeriver(account_key, network)
        if deriver.origin is not None:
            return cls(deriver, bytes.fromhex(deriver.origin.master_fingerprint), tuple(deriver.origin.path))
        text = account_key.strip()
        if text.startswith("wpkh("):  # a descriptor without origin: the key sits between "wpkh(" and "/"
            text = text[len("wpkh("):].split("/", 1)[0]
        key = bip32.HDKey.parse(base58.decode_check(text))
        return cls(deriver, key.my_fingerprint, ())

    def derivation(self, chain: int, index: int):
        from embit.ec import PublicKey
        from embit.psbt import DerivationPath

        derived = self.deriver.derive(index, chain)  # type: ignore[attr-defined]
        return (PublicKey.parse(bytes.fromhex(derived.public_key_hex)),
                DerivationPath(self.fingerprint, list(self.prefix) + [chain, index]), derived.script_pubkey_hex)


@dataclass(frozen=True)
class BuiltTx:
    txid: str
    psbt_b64: str
    vouts: dict[str, int]
    change_vout: int | None


def build_psbt(inputs: Sequence[Utxo], payouts: Sequence[Payout], change: ChangeOutput | None, change_sat: int,
               keys: WalletKeys) -> BuiltTx:
    """The unsigned batch transaction as a PSBT (v0): BIP69 order (inputs by txid/vout, outputs by value then
    script, ties by payout id) so the same batch always gives the same bytes; every input signals RBF (BIP125);
    inputs carry witness_utxo and their BIP32 derivation, the change output its derivation (a signer can check it
    is ours)."""
    from embit.psbt import PSBT
    from embit.script import Script
    from embit.transaction import Transaction, TransactionInput, TransactionOutput

    ordered_inputs = sorted(inputs, key=lambda u: (u.txid, u.vout))
    rows: list[tuple[int, bytes, str]] = [
        (p.amount_sat, bytes.fromhex(p.script_pubkey_hex), p.payout_id) for p in payouts
    ]
    if change is not None and change_sat > 0:
        rows.append((change_sat, bytes.fromhex(change.script_pubkey_hex), ""))  # "" sorts first on a tie
    rows.sort()
    tx = Transaction(
        version=2, locktime=0,
        vin=[TransactionInput(bytes.fromhex(u.txid), u.vout, sequence=RBF_SEQUENCE) for u in ordered_inputs],
        vout=[TransactionOutput(value, Script(script)) for value, script, _ in rows],
    )
    psbt = PSBT(tx)
    for scope, utxo in zip(psbt.inputs, ordered_inputs):
        pub, path, script = keys.derivation(utxo.chain, utxo.index)
        if script != utxo.script_pubkey_hex:
            raise ValueError(f"input {utxo.outpoint} is not ours at {utxo.chain}/{utxo.index}")
        scope.witness_utxo = TransactionOutput(utxo.value_sat, Script(bytes.fromhex(utxo.script_pubkey_hex)))
        scope.bip32_derivations[pub] = path
    vouts = {pid: n for n, (_, _, pid) in enumerate(rows) if pid}
    change_vout = next((n for n, (_, _, pid) in enumerate(rows) if not pid), None)
    if change_vout is not None and change is not None:
        pub, path, script = keys.derivation(1, change.index)
        if script != change.script_pubkey_hex:
            raise ValueError("the change address is not ours")
        psbt.outputs[change_vout].bip32_derivations[pub] = path
    return BuiltTx(psbt.tx.txid().hex(), psbt.to_base64(), vouts, change_vout)


def _sighash_all(psbt, index: int) -> bytes:
    from embit.transaction import SIGHASH

    return psbt.sighash(index, SIGHASH.ALL)


def sign_hot(psbt_b64: str, inputs: Sequence[Utxo], account_xprv: str) -> str:
    """Sign every input with the hot key (account level m/84'/coin'/0' private key) and finalize: raw tx hex.

    The key of each input is derived from the input's own chain/index as we recorded it and checked against the
    script it spends, so a key that is not our deposit account's fails loudly instead of signing garbage."""
    from embit import bip32, hashes
    from embit.finalizer import finalize_psbt
    from embit.psbt import PSBT

    key = bip32.HDKey.from_string(account_xprv.strip())
    if not key.is_private:
        raise ValueError("the hot signer key is not a private key")
    psbt = PSBT.from_base64(psbt_b64)
    by_outpoint = {(u.txid, u.vout): u for u in inputs}
    for i, scope in enumerate(psbt.inputs):
        utxo = by_outpoint[(scope.vin.txid.hex(), scope.vin.vout)]
        child = key.derive([utxo.chain, utxo.index])
        pub = child.key.get_public_key()
        if scope.witness_utxo.script_pubkey.data != b"\x00\x14" + hashes.hash160(pub.sec()):
            raise ValueError(f"the hot signer key does not control input {utxo.outpoint}")
        scope.partial_sigs[pub] = child.key.sign(_sighash_all(psbt, i)).serialize() + b"\x01"
    tx = finalize_psbt(psbt)
    if tx is None:
        raise ValueError("PSBT did not finalize")
    return tx.serialize().hex()


def finalize_external(unsigned_b64: str, signed: object) -> str:
    """Check an externally signed PSBT against the unsigned one we exported and return the final raw tx hex.

    The signed PSBT must describe the same unsigned transaction (same txid: version, inputs, sequences, outputs,
    amounts, locktime). Only its signatures are used: they are verified against OUR witness_utxo data (segwit
    signatures commit to the spent amounts), SIGHASH_ALL only, one p2wpkh signature per input."""
    from embit import ec, hashes
    from embit.psbt import PSBT
    from embit.script import Witness
    from embit.transaction import SIGHASH, Transaction

    if not isinstance(signed, str) or not signed.strip() or len(signed) > 2_000_000:
        raise InvalidPsbt("psbt must be a base64 string", field="psbt")
    try:
        theirs = PSBT.from_string(signed.strip())
    except Exception as exc:  # embit raises assorted errors on malformed input
        raise InvalidPsbt("psbt does not decode", field="psbt") from exc
    ours = PSBT.from_base64(unsigned_b64)
    if theirs.tx.txid() != ours.tx.txid() or len(theirs.inputs) != len(ours.inputs):
        raise SignedPsbtMismatch("the signed PSBT is not the transaction awaiting signature", field="psbt")
    final = Transaction.parse(ours.tx.serialize())
    for i, (mine, signed_scope) in enumerate(zip(ours.inputs, theirs.inputs)):
        items = _witness_items(signed_scope)
        if items is None:
            raise InvalidPsbt(f"input {i} is not signed", field="psbt")
        signature, pub_sec = items
        if mine.witness_utxo.script_pubkey.data != b"\x00\x14" + hashes.hash160(pub_sec):
            raise InvalidPsbt(f"input {i} is signed by a key that does not own it", field="psbt")
        if not signature or signature[-1] != SIGHASH.ALL:
            raise InvalidPsbt(f"input {i} must be signed with SIGHASH_ALL", field="psbt")
        try:
            valid = ec.PublicKey.parse(pub_sec).verify(ec.Signature.parse(signature[:-1]), _sighash_all(ours, i))
        except Exception:
            valid = False
        if not valid:
            raise InvalidPsbt(f"input {i} carries an invalid signature", field="psbt")
        final.vin[i].witness = Witness([signature, pub_sec])
    return final.serialize().hex()


def _witness_items(scope) -> tuple[bytes, bytes] | None:
    witness = scope.final_scriptwitness
    if witness is not None and witness.items:
        if len(witness.items) != 2:
            return None
        return witness.items[0], witness.items[1]
    if len(scope.partial_sigs) == 1:
        ((pub, sig),) = scope.partial_sigs.items()
        return sig, pub.sec()
    return None


def txid_of_raw(raw_hex: str) -> str:
    from embit.transaction import Transaction

    return Transaction.parse(bytes.fromhex(raw_hex)).txid().hex()


# ---------------------------------------------------------------------------------------------------- fee bump
@dataclass(frozen=True)
class ReplacementPlan:
    fee_sat: int
    fee_rate: int
    vbytes: int
    change_sat: int
    shares: dict[str, int]


def plan_replacement(batch: Batch, payouts: Sequence[Payout], sat_per_vb: object) -> ReplacementPlan:
    """BIP125 replacement of the batch's current transaction at ``sat_per_vb``: same inputs and payouts, the extra
    fee taken from the change (never from a payout; a change that would fall below dust is dropped into the fee).

    Rules: the new absolute fee pays the old fee plus its own relay (incremental 1 sat/vB), the new fee rate is
    higher, and no fee share exceeds its payout's reserve."""
    if isinstance(sat_per_vb, bool) or not isinstance(sat_per_vb, int) or not 1 <= sat_per_vb <= 10_000:
        raise ValidationError("sat_per_vb must be an integer in 1..10000", field="sat_per_vb")
    old = batch.current
    if old.change_sat == 0 or batch.change is None:
        raise FeeBumpRejected("the transaction has no change output to pay a higher fee from")
    amount = sum(p.amount_sat for p in payouts)
    vbytes = old.vbytes
    fee = vbytes * sat_per_vb
    change = batch.input_sat - amount - fee
    if change < dust_threshold_sat(batch.change.script_pubkey_hex):
        vbytes = old.vbytes - output_vbytes(AddressKind.P2WPKH)
        fee, change = batch.input_sat - amount, 0
        if fee < vbytes * sat_per_vb:
            raise FeeBumpRejected("the change output cannot pay that fee rate")
    if fee * old.vbytes <= old.fee_sat * vbytes:
        raise FeeBumpRejected(f"the new fee rate must be higher than the current {old.fee_rate} sat/vB")
    if fee < old.fee_sat + vbytes * INCREMENTAL_RELAY_FEE_RATE:
        raise FeeBumpRejected("the replacement must pay the old fee plus 1 sat/vB for its own relay (BIP125)")
    shares = fee_shares(fee, {p.payout_id: p.output_vbytes for p in payouts}, vbytes)
    over = shares_within_reserves(shares, payouts)
    if over:
        raise FeeBumpRejected(f"the fee would exceed the fee reserve of {len(over)} payout(s)")
    return ReplacementPlan(fee, sat_per_vb, vbytes, change, shares)
