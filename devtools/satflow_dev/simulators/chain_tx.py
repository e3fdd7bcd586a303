"""Transaction helpers for the chain simulator: real (embit) transactions, sizes, signatures, Core-shaped JSON.

Everything here is deterministic; nothing touches the simulator's state.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from embit import compact, ec, hashes
from embit.descriptor.checksum import checksum as descriptor_checksum
from embit.script import Script, Witness, p2pkh_from_p2wpkh
from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput

from satflow.domain.bitcoin import Network, sat_to_btc, script_pubkey_to_address

from .chain_errors import RPC_DESERIALIZATION_ERROR, RPC_TYPE_ERROR, RpcError

NULL_TXID = b"\x00" * 32
COINBASE_VOUT = 0xFFFF_FFFF
WITNESS_RESERVED_VALUE = b"\x00" * 32
WITNESS_COMMITMENT_HEADER = bytes.fromhex("aa21a9ed")


# --- identities and sizes ----------------------------------------------------------------------------------------
def double_sha256(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def txid_hex(tx: Transaction) -> str:
    return tx.txid().hex()


def wtxid_hex(tx: Transaction) -> str:
    return double_sha256(tx.serialize())[::-1].hex()


def stripped_serialization(tx: Transaction) -> bytes:
    """The serialization without witness data (what the txid commits to)."""
    data = tx.version.to_bytes(4, "little") + compact.to_bytes(len(tx.vin))
    data += b"".join(inp.serialize() for inp in tx.vin)
    data += compact.to_bytes(len(tx.vout)) + b"".join(out.serialize() for out in tx.vout)
    return data + tx.locktime.to_bytes(4, "little")


@dataclass(frozen=True)
class TxSize:
    size: int
    vsize: int
    weight: int


def tx_size(tx: Transaction) -> TxSize:
    total = len(tx.serialize())
    stripped = len(stripped_serialization(tx))
    weight = stripped * 3 + total
    return TxSize(size=total, vsize=-(-weight // 4), weight=weight)


def decode_transaction(raw_hex: object) -> Transaction:
    if not isinstance(raw_hex, str):
        raise RpcError(RPC_TYPE_ERROR, "Expected type string for hexstring")
    try:
        tx = Transaction.parse(bytes.fromhex(raw_hex))
    except Exception:
        tx = None
    if tx is None or tx.serialize().hex() != raw_hex.lower() or not tx.vin:
        raise RpcError(RPC_DESERIALIZATION_ERROR, "TX decode failed. Make sure the tx has at least one input.")
    return tx


# --- building ----------------------------------------------------------------------------------------------------
def script_num(n: int) -> bytes:
    """Minimal CScriptNum encoding (BIP34 height in the coinbase)."""
    if n == 0:
        return b""
    out = bytearray()
    value = abs(n)
    while value:
        out.append(value & 0xFF)
        value >>= 8
    if out[-1] & 0x80:
        out.append(0x80 if n < 0 else 0)
    elif n < 0:
        out[-1] |= 0x80
    return bytes(out)


def push(data: bytes) -> bytes:
    if len(data) < 0x4C:
        return bytes([len(data)]) + data
    if len(data) <= 0xFF:
        return b"\x4c" + bytes([len(data)]) + data
    return b"\x4d" + len(data).to_bytes(2, "little") + data


def build_coinbase(height: int, value_sat: int, script_pubkey: bytes, tag: bytes) -> Transaction:
    """A coinbase paying ``value_sat`` to ``script_pubkey``; ``tag`` makes replacement blocks differ from stale ones.

    The witness commitment output is added by ``add_witness_commitment`` once the block's transactions are known.
    """
    script_sig = push(script_num(height)) + push(tag)
    coinbase_input = TransactionInput(NULL_TXID, COINBASE_VOUT, Script(script_sig), 0xFFFF_FFFF)
    return Transaction(version=2, vin=[coinbase_input], vout=[TransactionOutput(value_sat, Script(script_pubkey))])


def add_witness_commitment(coinbase: Transaction, others: list[Transaction]) -> None:
    """BIP141: commit to the wtxids in an OP_RETURN output of the coinbase (coinbase wtxid counts as zero)."""
    wtxids = [b"\x00" * 32] + [double_sha256(tx.serialize()) for tx in others]
    commitment = double_sha256(merkle_root(wtxids) + WITNESS_RESERVED_VALUE)
    coinbase.vout.append(TransactionOutput(0, Script(b"\x6a\x24" + WITNESS_COMMITMENT_HEADER + commitment)))
    coinbase.vin[0].witness = Witness([WITNESS_RESERVED_VALUE])


def merkle_root(hashes_internal: list[bytes]) -> bytes:
    """Bitcoin's merkle root over hashes in internal byte order (odd levels duplicate the last hash)."""
    level = list(hashes_internal)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [double_sha256(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def block_header(version: int, prev_hash_hex: str | None, merkle: bytes, time: int, bits: int, nonce: int) -> bytes:
    prev = bytes.fromhex(prev_hash_hex)[::-1] if prev_hash_hex else b"\x00" * 32
    return (
        version.to_bytes(4, "little")
        + prev
        + merkle
        + time.to_bytes(4, "little")
        + bits.to_bytes(4, "little")
        + nonce.to_bytes(4, "little")
    )


def sign_p2wpkh_inputs(tx: Transaction, key: ec.PrivateKey, prevout_values: list[int]) -> None:
    """Sign every input of ``tx`` as a p2wpkh spend by ``key`` (SIGHASH_ALL)."""
    pubkey = key.get_public_key()
    script_code = p2pkh_from_p2wpkh(Script(b"\x00\x14" + hashes.hash160(pubkey.sec())))
    for index, value in enumerate(prevout_values):
        digest = tx.sighash_segwit(index, script_code, value, SIGHASH.ALL)
        signature = key.sign(digest).serialize() + bytes([SIGHASH.ALL])
        tx.vin[index].witness = Witness([signature, pubkey.sec()])


# --- verification (the script types our wallets use) -----------------------------------------------------------
def verify_input_signature(
    tx: Transaction, index: int, spent_scripts: list[bytes | None], spent_values: list[int | None]
) -> str | None:
    """Check the witness of input ``index`` when it spends p2wpkh or p2tr (key path).

    Returns None when valid or not checkable (other script types, unknown prevouts), else Bitcoin Core's reject
    reason. This is a simulator: other script types are accepted unchecked.
    """
    script = spent_scripts[index]
    value = spent_values[index]
    if script is None or value is None:
        return None
    items = tx.vin[index].witness.items
    if len(script) == 22 and script[:2] == b"\x00\x14":
        return _verify_p2wpkh(tx, index, script, value, items)
    if len(script) == 34 and script[:2] == b"\x51\x20" and len(items) == 1:
        if any(s is None for s in spent_scripts) or any(v is None for v in spent_values):
            return None  # taproot sighash commits to every spent output
        return _verify_p2tr_key_path(tx, index, script, spent_scripts, spent_values, items[0])
    return None


_EQUALVERIFY_FAILED = "mandatory-script-verify-flag-failed (Script failed an OP_EQUALVERIFY operation)"
_NULLFAIL = "mandatory-script-verify-flag-failed (Signature must be zero for failed CHECK(MULTI)SIG operation)"
_WITNESS_MISMATCH = "mandatory-script-verify-flag-failed (Witness program hash mismatch)"
_SCHNORR_FAILED = "mandatory-script-verify-flag-failed (Invalid Schnorr signature)"


def _verify_p2wpkh(tx: Transaction, index: int, script: bytes, value: int, items: list[bytes]) -> str | None:
    if len(items) != 2:
        return _WITNESS_MISMATCH
    signature, pubkey_bytes = items
    if hashes.hash160(pubkey_bytes) != script[2:]:
        return _EQUALVERIFY_FAILED
    if not signature:
        return _NULLFAIL
    try:
        pubkey = ec.PublicKey.parse(pubkey_bytes)
        digest = tx.sighash_segwit(index, p2pkh_from_p2wpkh(Script(script)), value, signature[-1])
        valid = pubkey.verify(ec.Signature.parse(signature[:-1]), digest)
    except Exception:  # malformed key or DER: Core rejects the same way
        valid = False
    return None if valid else _NULLFAIL


def _verify_p2tr_key_path(
    tx: Transaction,
    index: int,
    script: bytes,
    spent_scripts: list[bytes | None],
    spent_values: list[int | None],
    signature: bytes,
) -> str | None:
    if len(signature) not in (64, 65):
        return _SCHNORR_FAILED
    sighash_type = signature[64] if len(signature) == 65 else SIGHASH.DEFAULT
    try:
        digest = tx.sighash_taproot(
            index, [Script(s) for s in spent_scripts], list(spent_values), sighash=sighash_type
        )
        pubkey = ec.PublicKey.from_xonly(script[2:])
        valid = pubkey.schnorr_verify(ec.SchnorrSig.parse(signature[:64]), digest)
    except Exception:
        valid = False
    return None if valid else _SCHNORR_FAILED


# --- Core-shaped JSON --------------------------------------------------------------------------------------------
_OPCODE_NAMES = {
    0x00: "0", 0x4F: "-1", 0x6A: "OP_RETURN", 0x76: "OP_DUP", 0x87: "OP_EQUAL", 0x88: "OP_EQUALVERIFY",
    0xA9: "OP_HASH160", 0xAC: "OP_CHECKSIG", 0xAE: "OP_CHECKMULTISIG",
}


def script_asm(script: bytes) -> str:
    """A disassembly close to Core's for the scripts the simulator sees (pushes and common opcodes)."""
    words: list[str] = []
    i = 0
    while i < len(script):
        opcode = script[i]
        i += 1
        if 0x01 <= opcode <= 0x4E:
            if opcode <= 0x4B:
                length = opcode
            else:
                width = {0x4C: 1, 0x4D: 2, 0x4E: 4}[opcode]
                length = int.from_bytes(script[i : i + width], "little")
                i += width
            words.append(script[i : i + length].hex())
            i += length
        elif 0x51 <= opcode <= 0x60:
            words.append(str(opcode - 0x50))
        else:
            words.append(_OPCODE_NAMES.get(opcode, f"OP_UNKNOWN[{opcode:#04x}]"))
    return " ".join(words)


def script_type(script: bytes) -> str:
    """Bitcoin Core's scriptPubKey ``type`` names."""
    if len(script) == 25 and script[:3] == b"\x76\xa9\x14" and script[-2:] == b"\x88\xac":
        return "pubkeyhash"
    if len(script) == 23 and script[:2] == b"\xa9\x14" and script[-1] == 0x87:
        return "scripthash"
    if script[:1] == b"\x6a":
        return "nulldata"
    if 4 <= len(script) <= 42 and script[1] == len(script) - 2 and (script[0] == 0 or 0x51 <= script[0] <= 0x60):
        if script[0] == 0 and len(script) == 22:
            return "witness_v0_keyhash"
        if script[0] == 0 and len(script) == 34:
            return "witness_v0_scripthash"
        if script[0] == 0x51 and len(script) == 34:
            return "witness_v1_taproot"
        if script[0] != 0:
            return "witness_unknown"
    return "nonstandard"


def script_pubkey_json(script: bytes, network: Network) -> dict[str, Any]:
    address = script_pubkey_to_address(script.hex(), network) if script_type(script) != "nonstandard" else None
    descriptor = f"addr({address})" if address else f"raw({script.hex()})"
    result: dict[str, Any] = {
        "asm": script_asm(script),
        "desc": f"{descriptor}#{descriptor_checksum(descriptor)}",
        "hex": script.hex(),
    }
    if address:
        result["address"] = address
    result["type"] = script_type(script)
    return result


def tx_json(
    tx: Transaction, network: Network, *, fee_sat: int | None = None, include_hex: bool = True
) -> dict[str, Any]:
    """A transaction as getrawtransaction (verbose) / getblock (verbosity 2) print it, amounts as Decimal BTC."""
    size = tx_size(tx)
    is_coinbase = len(tx.vin) == 1 and tx.vin[0].txid == NULL_TXID and tx.vin[0].vout == COINBASE_VOUT
    result: dict[str, Any] = {
        "txid": txid_hex(tx),
        "hash": wtxid_hex(tx),
        "version": tx.version,
        "size": size.size,
        "vsize": size.vsize,
        "weight": size.weight,
        "locktime": tx.locktime,
        "vin": [_vin_json(inp, is_coinbase) for inp in tx.vin],
        "vout": [
            {
                "value": sat_to_btc(out.value),
                "n": n,
                "scriptPubKey": script_pubkey_json(out.script_pubkey.data, network),
            }
            for n, out in enumerate(tx.vout)
        ],
    }
    if fee_sat is not None and not is_coinbase:
        result["fee"] = sat_to_btc(fee_sat)
    if include_hex:
        result["hex"] = tx.serialize().hex()
    return result


def _vin_json(inp: TransactionInput, is_coinbase: bool) -> dict[str, Any]:
    entry: dict[str, Any]
    if is_coinbase:
        entry = {"coinbase": inp.script_sig.data.hex()}
    else:
        entry = {
            "txid": inp.txid.hex(),
            "vout": inp.vout,
            "scriptSig": {"asm": script_asm(inp.script_sig.data), "hex": inp.script_sig.data.hex()},
        }
    if inp.witness.items:
        entry["txinwitness"] = [item.hex() for item in inp.witness.items]
    entry["sequence"] = inp.sequence
    return entry
