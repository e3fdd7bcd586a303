"""Bitcoin facts the rest of satflow relies on: networks, addresses, dust, transaction sizes, BTC amounts.

Pure: no I/O, no AWS, no HTTP. embit supplies the checksum primitives (bech32 polymod, base58check); the segwit
address rules (BIP173 / BIP350) are applied here because embit's ``address_to_scriptpubkey`` neither checks the
network nor accepts witness versions 2..16. The network is always passed explicitly: nothing here defaults to
mainnet.

The errors a Bitcoin Core node can raise through the chain-node port are declared here too, so that use cases and
the Step Functions contract (ASL ``ErrorEquals`` uses class names) never import the adapter.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from enum import Enum

from embit import base58
from embit import bech32 as embit_bech32
from embit.networks import NETWORKS as EMBIT_NETWORKS

from .errors import ValidationError
from .errors import (  # noqa: F401  (re-exported: defined with every other typed error)
    InvalidAddress,
    WrongNetworkAddress,
    UnsupportedAddressType,
    InvalidBtcAmount,
    BitcoinNodeError,
    BitcoinNodeUnavailable,
    BitcoinNodeAuthFailed,
    BitcoinRpcMethodNotFound,
    BitcoinRpcInvalidParameter,
    BitcoinTxNotFound,
    BitcoinBlockNotFound,
    TransactionRejected,
    TransactionInputsMissing,
)
from .money import SAT_PER_BTC

MAX_MONEY_SAT = 21_000_000 * SAT_PER_BTC


# --- errors: addresses and amounts -------------------------------------------------------------------------------
# --- errors: the chain-node port (raised by satflow.adapters.bitcoind) --------------------------------------------
# --- networks ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _NetworkParams:
    bech32_hrp: str
    p2pkh_version: int
    p2sh_version: int
    bip32_coin_type: int  # BIP44 coin type: 0 on mainnet, 1 on every test network
    core_chain: str  # the "chain" field of Bitcoin Core's getblockchaininfo
    embit_name: str


class Network(str, Enum):
    """A Bitcoin network. The value is the name used in configuration (``SATFLOW_NETWORK``)."""

    BITCOIN = "bitcoin"
    TESTNET = "testnet"
    SIGNET = "signet"
    REGTEST = "regtest"

    @property
    def _params(self) -> _NetworkParams:
        return _NETWORK_PARAMS[self]

    @property
    def bech32_hrp(self) -> str:
        return self._params.bech32_hrp

    @property
    def p2pkh_version(self) -> int:
        return self._params.p2pkh_version

    @property
    def p2sh_version(self) -> int:
        return self._params.p2sh_version

    @property
    def bip32_coin_type(self) -> int:
        return self._params.bip32_coin_type

    @property
    def core_chain(self) -> str:
        return self._params.core_chain

    @property
    def is_mainnet(self) -> bool:
        return self is Network.BITCOIN

    @property
    def embit_network(self) -> dict:
        """The parameter dict embit's address/key functions take as ``network=``."""
        return EMBIT_NETWORKS[self._params.embit_name]

    @classmethod
    def from_name(cls, name: object) -> Network:
        """Parse a configured network name; unknown names are an error (never a silent mainnet)."""
        for network in cls:
            if name == network.value:
                return network
        raise ValidationError(
            f"unknown bitcoin network {name!r}; expected one of {[n.value for n in cls]}", field="network"
        )

    @classmethod
    def from_core_chain(cls, chain: str) -> Network:
        """Map getblockchaininfo's ``chain`` ("main", "test", "testnet4", "signet", "regtest")."""
        if chain == "testnet4":  # Bitcoin Core 28+: same address encodings as testnet3
            return cls.TESTNET
        for network in cls:
            if network.core_chain == chain:
                return network
        raise ValidationError(f"unknown Bitcoin Core chain {chain!r}", field="chain")


_NETWORK_PARAMS: dict[Network, _NetworkParams] = {
    Network.BITCOIN: _NetworkParams("bc", 0x00, 0x05, 0, "main", "main"),
    Network.TESTNET: _NetworkParams("tb", 0x6F, 0xC4, 1, "test", "test"),
    Network.SIGNET: _NetworkParams("tb", 0x6F, 0xC4, 1, "signet", "signet"),
    Network.REGTEST: _NetworkParams("bcrt", 0x6F, 0xC4, 1, "regtest", "regtest"),
}
_KNOWN_HRPS = frozenset(p.bech32_hrp for p in _NETWORK_PARAMS.values())


# --- addresses ---------------------------------------------------------------------------------------------------
class AddressKind(str, Enum):
    P2PKH = "p2pkh"
    P2SH = "p2sh"
    P2WPKH = "p2wpkh"
    P2WSH = "p2wsh"
    P2TR = "p2tr"
    # A valid BIP350 address of a witness version/program length no soft fork defines yet. Only returned when the
    # caller opts in (see validate_address); never used for our own addresses.
    WITNESS_UNKNOWN = "witness_unknown"


@dataclass(frozen=True)
class ParsedAddress:
    address: str  # canonical form: bech32 addresses lower-cased, base58 unchanged
    network: Network
    kind: AddressKind
    script_pubkey_hex: str
    witness_version: int | None  # None for base58 (legacy) addresses


# Addresses are at most 90 characters (bech32 limit); anything longer is rejected before any decoding work.
_MAX_ADDRESS_LENGTH = 90


def validate_address(address: object, network: Network, *, allow_future_segwit: bool = False) -> ParsedAddress:
    """Parse ``address`` for ``network`` or raise a typed error.

    Raises ``InvalidAddress`` for anything malformed, ``WrongNetworkAddress`` for a well-formed address of another
    network, and ``UnsupportedAddressType`` for valid segwit addresses that no soft fork defines yet (v1 with a
    non-32-byte program, v2..v16). BIP350 recommends accepting those as recipients; a custodian sending user money
    to them would burn it until a soft fork gives them meaning, so accepting them is an explicit opt-in
    (``allow_future_segwit=True`` returns kind ``witness_unknown``).

    Whitespace is not stripped: callers normalise user input at the API edge.
    """
    network = _require_network(network)
    if not isinstance(address, str) or not address:
        raise InvalidAddress("address must be a non-empty string", field="address")
    if len(address) > _MAX_ADDRESS_LENGTH:
        raise InvalidAddress("address is too long", field="address")
    if _looks_like_bech32(address):
        parsed = _parse_segwit(address, network)
        if parsed.kind is AddressKind.WITNESS_UNKNOWN and not allow_future_segwit:
            raise UnsupportedAddressType(
                f"segwit v{parsed.witness_version} address with a {len(parsed.script_pubkey_hex) // 2 - 2}-byte "
                "program is not a supported destination",
                field="address",
            )
        return parsed
    return _parse_base58(address, network)


def _require_network(network: object) -> Network:
    if not isinstance(network, Network):
        raise TypeError(f"network must be a Network, got {type(network).__name__}")
    return network


def _looks_like_bech32(address: str) -> bool:
    lowered = address.lower()
    return any(lowered.startswith(hrp + "1") for hrp in _KNOWN_HRPS)


def _parse_segwit(address: str, network: Network) -> ParsedAddress:
    # bech32_decode rejects mixed case, characters outside 33..126, strings over 90 characters, and returns which
    # checksum constant (bech32 or bech32m) matched.
    encoding, hrp, data = embit_bech32.bech32_decode(address)
    if encoding is None or hrp is None or data is None:
        raise InvalidAddress("invalid bech32 address (checksum, case or characters)", field="address")
    if not data:
        raise InvalidAddress("bech32 address has an empty data section", field="address")
    witness_version = data[0]
    if witness_version > 16:
        raise InvalidAddress("invalid witness version", field="address")
    program = embit_bech32.convertbits(data[1:], 5, 8, False)
    if program is None:
        raise InvalidAddress("invalid padding in the witness program", field="address")
    if not 2 <= len(program) <= 40:
        raise InvalidAddress("invalid witness program length", field="address")
    if witness_version == 0 and len(program) not in (20, 32):
        raise InvalidAddress("witness v0 programs are 20 or 32 bytes (BIP141)", field="address")
    expected_encoding = embit_bech32.Encoding.BECH32 if witness_version == 0 else embit_bech32.Encoding.BECH32M
    if encoding != expected_encoding:
        # BIP350: v0 uses the bech32 checksum, v1+ bech32m; the other one is invalid, not merely unusual.
        raise InvalidAddress("wrong checksum type for this witness version (BIP350)", field="address")
    if hrp != network.bech32_hrp:
        raise WrongNetworkAddress(
            f"address is for another network (prefix {hrp!r}, expected {network.bech32_hrp!r})",
            field="address",
            network=network.value,
        )
    script = _witness_script(witness_version, bytes(program))
    return ParsedAddress(
        address=address.lower(),
        network=network,
        kind=_witness_kind(witness_version, len(program)),
        script_pubkey_hex=script.hex(),
        witness_version=witness_version,
    )


def _witness_script(version: int, program: bytes) -> bytes:
    opcode = 0 if version == 0 else 0x50 + version  # OP_0, OP_1..OP_16
    return bytes([opcode, len(program)]) + program


def _witness_kind(version: int, program_length: int) -> AddressKind:
    if version == 0:
        return AddressKind.P2WPKH if program_length == 20 else AddressKind.P2WSH
    if version == 1 and program_length == 32:
        return AddressKind.P2TR
    return AddressKind.WITNESS_UNKNOWN


def _parse_base58(address: str, network: Network) -> ParsedAddress:
    try:
        payload = base58.decode_check(address)
    except (ValueError, IndexError) as exc:
        raise InvalidAddress("invalid base58check address", field="address") from exc
    if len(payload) != 21:
        raise InvalidAddress("invalid base58 address length", field="address")
    version, hash160 = payload[0], payload[1:]
    if version == network.p2pkh_version:
        script = b"\x76\xa9\x14" + hash160 + b"\x88\xac"  # OP_DUP OP_HASH160 <20> OP_EQUALVERIFY OP_CHECKSIG
        kind = AddressKind.P2PKH
    elif version == network.p2sh_version:
        script = b"\xa9\x14" + hash160 + b"\x87"  # OP_HASH160 <20> OP_EQUAL
        kind = AddressKind.P2SH
    elif any(version in (p.p2pkh_version, p.p2sh_version) for p in _NETWORK_PARAMS.values()):
        raise WrongNetworkAddress(
            "address is for another network", field="address", network=network.value
        )
    else:
        raise InvalidAddress("unknown base58 address version", field="address")
    return ParsedAddress(address, network, kind, script.hex(), None)


def script_pubkey_kind(script_pubkey_hex: str) -> AddressKind | None:
    """The address kind of a scriptPubKey, or None for scripts without an address (OP_RETURN, bare multisig...)."""
    script = bytes.fromhex(script_pubkey_hex)
    if len(script) == 25 and script[:3] == b"\x76\xa9\x14" and script[-2:] == b"\x88\xac":
        return AddressKind.P2PKH
    if len(script) == 23 and script[:2] == b"\xa9\x14" and script[-1] == 0x87:
        return AddressKind.P2SH
    witness = _split_witness_program(script)
    if witness is None:
        return None
    version, program = witness
    return _witness_kind(version, len(program))


def script_pubkey_to_address(script_pubkey_hex: str, network: Network) -> str | None:
    """Encode a scriptPubKey as an address of ``network``; None when the script has no address form."""
    network = _require_network(network)
    script = bytes.fromhex(script_pubkey_hex)
    kind = script_pubkey_kind(script_pubkey_hex)
    if kind is AddressKind.P2PKH:
        return base58.encode_check(bytes([network.p2pkh_version]) + script[3:23])
    if kind is AddressKind.P2SH:
        return base58.encode_check(bytes([network.p2sh_version]) + script[2:22])
    witness = _split_witness_program(script)
    if witness is None:
        return None
    version, program = witness
    return embit_bech32.encode(network.bech32_hrp, version, list(program))


def _split_witness_program(script: bytes) -> tuple[int, bytes] | None:
    if not 4 <= len(script) <= 42 or script[1] != len(script) - 2:
        return None
    opcode = script[0]
    if opcode == 0:
        version = 0
    elif 0x51 <= opcode <= 0x60:
        version = opcode - 0x50
    else:
        return None
    program = script[2:]
    if version == 0 and len(program) not in (20, 32):
        return None
    return version, program


# --- dust --------------------------------------------------------------------------------------------------------
# Bitcoin Core's default -dustrelayfee (sat per 1000 vbytes): an output is dust when spending it would cost more
# than its value at this rate (policy.cpp GetDustThreshold).
DEFAULT_DUST_RELAY_FEE_SAT_PER_KVB = 3_000


def dust_threshold_sat(
    script_pubkey_hex: str, dust_relay_fee_sat_per_kvb: int = DEFAULT_DUST_RELAY_FEE_SAT_PER_KVB
) -> int:
    """Bitcoin Core's dust threshold (policy.cpp GetDustThreshold): an output is dust when ``value < threshold``.

    The threshold is the fee, at the dust relay rate, for the output itself plus a typical input spending it:
    148 bytes for a legacy input, 67 vbytes (32+4+1+107/4+4) for a witness input.
    """
    script = bytes.fromhex(script_pubkey_hex)
    if script[:1] == b"\x6a":  # OP_RETURN outputs are unspendable and never dust
        return 0
    output_size = 8 + _compact_size_length(len(script)) + len(script)
    spend_size = 67 if _split_witness_program(script) is not None else 148
    return (output_size + spend_size) * dust_relay_fee_sat_per_kvb // 1000


# The same numbers by address kind, at the default dust relay fee.
DUST_THRESHOLD_SAT: dict[AddressKind, int] = {
    AddressKind.P2PKH: 546,
    AddressKind.P2SH: 540,
    AddressKind.P2WPKH: 294,
    AddressKind.P2WSH: 330,
    AddressKind.P2TR: 330,
}


def is_dust(value_sat: int, script_pubkey_hex: str) -> bool:
    return value_sat < dust_threshold_sat(script_pubkey_hex)


# --- transaction size estimates (for batch fee math) -------------------------------------------------------------
WITNESS_SCALE_FACTOR = 4

# Weight units per input, worst case (72-byte low-S DER signature incl. sighash byte, 33-byte compressed key), so
# fee estimates never come out low. Non-witness bytes count 4x: outpoint 36 + scriptSig length + sequence 4.
#   p2wpkh: (36+1+4)*4 + witness (1 items + 1+72 + 1+33)          = 164 + 108 = 272 wu (68 vB)
#   p2tr key path: (36+1+4)*4 + witness (1 + 1+64, SIGHASH_DEFAULT) = 164 + 66  = 230 wu (57.5 vB)
#   p2pkh: (36+1+107+4)*4                                          = 592 wu (148 vB)
# p2sh / p2wsh inputs depend on the redeem/witness script and have no generic estimate.
INPUT_WEIGHT_WU: dict[AddressKind, int] = {
    AddressKind.P2WPKH: 272,
    AddressKind.P2TR: 230,
    AddressKind.P2PKH: 592,
}

# Weight units per output: (8 value + 1 script length + scriptPubKey) * 4.
OUTPUT_WEIGHT_WU: dict[AddressKind, int] = {
    AddressKind.P2PKH: (8 + 1 + 25) * 4,  # 34 vB
    AddressKind.P2SH: (8 + 1 + 23) * 4,  # 32 vB
    AddressKind.P2WPKH: (8 + 1 + 22) * 4,  # 31 vB
    AddressKind.P2WSH: (8 + 1 + 34) * 4,  # 43 vB
    AddressKind.P2TR: (8 + 1 + 34) * 4,  # 43 vB
}

_SEGWIT_INPUT_KINDS = frozenset({AddressKind.P2WPKH, AddressKind.P2TR})


def input_vbytes(kind: AddressKind) -> Decimal:
    """Virtual size of one input of ``kind`` (may be fractional: 57.5 for taproot)."""
    return Decimal(_input_weight(kind)) / WITNESS_SCALE_FACTOR


def output_vbytes(kind: AddressKind) -> int:
    return _output_weight(kind) // WITNESS_SCALE_FACTOR


def estimate_tx_vbytes(input_kinds: Sequence[AddressKind], output_kinds: Sequence[AddressKind]) -> int:
    """Virtual size of a transaction spending ``input_kinds`` to ``output_kinds``, rounded up like Core.

    Counts the fixed part exactly: version 4 + locktime 4 + the two compact-size counts, plus, for segwit
    transactions, the 2-byte marker/flag (weight 2) and one empty-witness byte for every non-witness input.
    """
    if not input_kinds or not output_kinds:
        raise ValueError("a transaction needs at least one input and one output")
    is_segwit = any(AddressKind(k) in _SEGWIT_INPUT_KINDS for k in input_kinds)
    base_size = 4 + 4 + _compact_size_length(len(input_kinds)) + _compact_size_length(len(output_kinds))
    weight = base_size * WITNESS_SCALE_FACTOR
    weight += sum(_input_weight(k) for k in input_kinds)
    weight += sum(_output_weight(k) for k in output_kinds)
    if is_segwit:
        weight += 2 + sum(1 for k in input_kinds if AddressKind(k) not in _SEGWIT_INPUT_KINDS)
    return -(-weight // WITNESS_SCALE_FACTOR)


def fee_for_vbytes(vbytes: int, sat_per_vb: int | Decimal) -> int:
    """Fee in sat for ``vbytes`` at ``sat_per_vb``, rounded up so the rate is never undershot."""
    if isinstance(sat_per_vb, float) or isinstance(sat_per_vb, bool):
        raise TypeError("fee rates are int or Decimal, never float")
    return int((Decimal(vbytes) * Decimal(sat_per_vb)).to_integral_value(rounding=ROUND_CEILING))


def _input_weight(kind: AddressKind) -> int:
    try:
        return INPUT_WEIGHT_WU[AddressKind(kind)]
    except KeyError:
        raise ValueError(f"no generic input size for {kind}: it depends on the spending script") from None


def _output_weight(kind: AddressKind) -> int:
    try:
        return OUTPUT_WEIGHT_WU[AddressKind(kind)]
    except KeyError:
        raise ValueError(f"no output size for {kind}") from None


def _compact_size_length(n: int) -> int:
    if n < 0xFD:
        return 1
    if n <= 0xFFFF:
        return 3
    if n <= 0xFFFF_FFFF:
        return 5
    return 9


# --- BTC amounts -------------------------------------------------------------------------------------------------
_BTC_STRING_RE = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


def btc_to_sat(amount: Decimal | str) -> int:
    """An exact BTC amount (Decimal, or a plain decimal string such as "0.00100000") in integer satoshi.

    Refuses floats, ints (ambiguous: BTC or sat?), NaN/Infinity, exponent or underscore strings, more than 8
    decimal places carrying a non-zero digit, and magnitudes above 21 million BTC. Negative amounts are allowed
    (Bitcoin Core reports some fees and balances as negative); callers that need a positive value check it.
    Integer arithmetic on the Decimal's digits: no context precision or rounding is involved.
    """
    value = _as_decimal(amount)
    if value.copy_abs() > MAX_MONEY_SAT // SAT_PER_BTC:  # copy_abs: no context, so no overflow
        raise InvalidBtcAmount("BTC amount exceeds 21 million", field="amount_btc")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite, checked in _as_decimal
    coefficient = int("".join(map(str, digits)) or "0")
    shift = exponent + 8  # power of ten that turns the coefficient into satoshi
    if shift >= 0:
        sat = coefficient * 10**shift
    elif coefficient == 0:
        sat = 0
    elif -shift > len(digits):
        # The divisor would be longer than the coefficient, so it cannot divide it; checking this first also
        # bounds the work for absurd exponents such as Decimal("1E-999999999").
        raise InvalidBtcAmount("BTC amount has sub-satoshi precision", field="amount_btc")
    else:
        sat, remainder = divmod(coefficient, 10**-shift)
        if remainder:
            raise InvalidBtcAmount("BTC amount has sub-satoshi precision", field="amount_btc")
    return -sat if sign else sat


def sat_to_btc(sat: int) -> Decimal:
    """Integer satoshi as a Decimal BTC amount with exactly 8 decimal places (how Bitcoin Core prints them)."""
    if isinstance(sat, bool) or not isinstance(sat, int):
        raise InvalidBtcAmount("satoshi amounts are integers", field="amount_sat")
    return Decimal(sat).scaleb(-8)


def _as_decimal(amount: object) -> Decimal:
    if isinstance(amount, Decimal):
        value = amount
    elif isinstance(amount, str):
        if not _BTC_STRING_RE.match(amount):
            raise InvalidBtcAmount("BTC amount must be a plain decimal number", field="amount_btc")
        value = Decimal(amount)
    else:
        # float: already inexact; int/bool: ambiguous unit. Both are programming errors at this boundary.
        raise InvalidBtcAmount(
            f"BTC amounts are Decimal or str, not {type(amount).__name__}", field="amount_btc"
        )
    if not value.is_finite():
        raise InvalidBtcAmount("BTC amount must be finite", field="amount_btc")
    return value


# --- chain data as seen through the chain-node port --------------------------------------------------------------
@dataclass(frozen=True)
class OutPoint:
    txid: str
    vout: int

    def __str__(self) -> str:  # "txid:vout": the idempotency key of a deposit
        return f"{self.txid}:{self.vout}"


@dataclass(frozen=True)
class TxOutput:
    n: int
    value_sat: int
    script_pubkey_hex: str
    address: str | None  # None for scripts without an address (OP_RETURN, bare multisig, non-standard)


@dataclass(frozen=True)
class ChainTransaction:
    txid: str
    wtxid: str
    inputs: tuple[OutPoint, ...]  # empty for a coinbase
    outputs: tuple[TxOutput, ...]
    is_coinbase: bool
    vsize: int
    fee_sat: int | None = None  # reported by getblock verbosity 2 when the node has undo data; never for coinbase
    hex: str | None = None


@dataclass(frozen=True)
class TransactionInfo:
    """A transaction looked up by txid: confirmed (block_hash set, confirmations >= 1) or in the mempool (0)."""

    transaction: ChainTransaction
    block_hash: str | None
    confirmations: int
    block_time: int | None


@dataclass(frozen=True)
class Block:
    hash: str
    height: int
    previous_hash: str | None  # None only for the genesis block
    confirmations: int  # -1 when the block is no longer in the active chain (reorged out)
    time: int
    transactions: tuple[ChainTransaction, ...]

    @property
    def in_active_chain(self) -> bool:
        return self.confirmations >= 1


@dataclass(frozen=True)
class BlockchainInfo:
    chain: str  # as Bitcoin Core names it: main, test, testnet4, signet, regtest
    blocks: int
    headers: int
    best_block_hash: str
    initial_block_download: bool
    verification_progress: Decimal
    pruned: bool

    @property
    def network(self) -> Network:
        return Network.from_core_chain(self.chain)


class FeeEstimateMode(str, Enum):
    """estimatesmartfee's estimate_mode. Bitcoin Core's default changed (conservative until 27, economical from
    28), so callers always say which one they mean."""

    ECONOMICAL = "economical"
    CONSERVATIVE = "conservative"


@dataclass(frozen=True)
class FeeEstimate:
    sat_per_kvb: int  # exact: Core's BTC/kvB feerate in satoshi per 1000 vbytes
    sat_per_vb: int  # rounded *up* to whole sat/vB, so paying it never undershoots the estimate
    blocks: int  # the confirmation target the estimate is actually for (Core may answer for a longer one)


@dataclass(frozen=True)
class MempoolAcceptResult:
    txid: str
    wtxid: str | None
    allowed: bool
    reject_reason: str | None
    vsize: int | None = None
    fee_sat: int | None = None

    @property
    def already_known(self) -> bool:
        """The node already has this transaction (mempool or chain): broadcasting it again is a no-op success."""
        return self.reject_reason in ALREADY_KNOWN_REJECT_REASONS


# Reject reasons meaning "the node has this transaction already" (mempool or chain), as Bitcoin Core spells them.
ALREADY_KNOWN_REJECT_REASONS = frozenset({"txn-already-in-mempool", "txn-already-known"})
