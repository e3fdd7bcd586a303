"""Virtual bytes per payout: one batch transaction for N payouts against N single-payout transactions.

Builds and signs REAL transactions with the payout code path (coin selection -> build_psbt -> sign_hot, embit,
BIP84 test keys) and measures each signed transaction's vsize from its serialization (weight = 3 * stripped +
total). Wallet outputs are 1,000,000 sat p2wpkh deposits; every payout is 100,000 sat; change (p2wpkh) whenever the
selection makes one. Printed figures, not a pass/fail test.

Usage: python benchmarks/payout_vbytes.py [--rate 10] [--kind p2wpkh|p2tr|mixed] [--sizes 1,10,100]
"""
from __future__ import annotations

import argparse
import math

from embit import bip32, bip39
from embit.transaction import Transaction

from satflow.domain.bitcoin import Network
from satflow.domain.coin_selection import select_coins
from satflow.domain.onchain import PayoutStatus, Priority, Utxo
from satflow.domain.payouts import ChangeOutput, Payout, WalletKeys, build_psbt, sign_hot

MNEMONIC = " ".join(["abandon"] * 11 + ["about"])
ACCOUNT = bip32.HDKey.from_seed(bip39.mnemonic_to_seed(MNEMONIC)).derive("m/84h/1h/0h")
TPUB = ACCOUNT.to_public().to_base58(version=bytes.fromhex("043587cf"))
TPRV = ACCOUNT.to_base58(version=bytes.fromhex("04358394"))
KEYS = WalletKeys.from_account_key(TPUB, Network.REGTEST)
DEPOSIT_SAT = 1_000_000
PAYOUT_SAT = 100_000


def vsize(raw_hex: str) -> int:
    tx = Transaction.parse(bytes.fromhex(raw_hex))
    total = len(tx.serialize())
    for inp in tx.vin:
        inp.witness.items = []
    stripped = len(tx.serialize())
    return math.ceil((3 * stripped + total) / 4)


def wallet(n: int) -> list[Utxo]:
    out = []
    for i in range(n):
        derived = KEYS.deriver.derive(i, 0)
        out.append(Utxo(f"{i + 1:064x}", 0, DEPOSIT_SAT, derived.script_pubkey_hex, 0, i, 100))
    return out


def destination(i: int, kind: str) -> str:
    if kind == "mixed":
        kind = ("p2wpkh", "p2tr", "p2pkh")[i % 3]
    body = (i + 1).to_bytes(4, "big") * 5
    return {"p2wpkh": "0014" + body.hex(), "p2tr": "5120" + (body + body[:12]).hex(),
            "p2pkh": "76a914" + body.hex() + "88ac"}[kind]


def batch_vsize(n: int, kind: str, rate: int) -> tuple[int, int, int, int]:
    """(vsize, inputs, outputs, fee) of one signed batch paying n payouts."""
    payouts = [Payout(f"po_{i:04d}", "acc", "addr", destination(i, kind), PAYOUT_SAT, 10**6, Priority.NORMAL, "h",
                      PayoutStatus.QUEUED, "t", "t") for i in range(n)]
    pool = wallet(n // 9 + 2)
    selection = select_coins(pool, amount_sat=n * PAYOUT_SAT, output_kinds=[p.kind for p in payouts], fee_rate=rate,
                             max_inputs=200)
    assert selection is not None
    change = None
    if selection.has_change:
        derived = KEYS.deriver.derive(0, 1)
        change = ChangeOutput(0, derived.address, derived.script_pubkey_hex)
    built = build_psbt(selection.inputs, payouts, change, selection.change_sat, KEYS)
    raw = sign_hot(built.psbt_b64, selection.inputs, TPRV)
    size = vsize(raw)
    assert size <= selection.vbytes  # the estimate (72-byte signatures) never undershoots
    return size, len(selection.inputs), n + (1 if change else 0), selection.fee_sat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=10, help="fee rate, sat/vB")
    parser.add_argument("--kind", default="p2wpkh", choices=("p2wpkh", "p2tr", "mixed"))
    parser.add_argument("--sizes", default="1,10,100")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    single, _, _, single_fee = batch_vsize(1, args.kind, args.rate)
    print(f"payout {PAYOUT_SAT} sat to {args.kind}, wallet outputs {DEPOSIT_SAT} sat p2wpkh, {args.rate} sat/vB")
    print(f"single-payout transaction: {single} vB (1 input, payout + change), fee {single_fee} sat\n")
    header = f"{'payouts':>7} {'inputs':>6} {'outputs':>7} {'tx vB':>7} {'vB/payout':>9} {'single/batch':>12} " \
             f"{'saved':>6} {'fee/payout sat':>14}"
    print(header)
    print("-" * len(header))
    for n in sizes:
        size, inputs, outputs, fee = batch_vsize(n, args.kind, args.rate)
        per = size / n
        print(f"{n:>7} {inputs:>6} {outputs:>7} {size:>7} {per:>9.1f} {single / per:>11.2f}x "
              f"{1 - per / single:>6.0%} {fee / n:>14.1f}")
    print("\nA batch is written with its payouts and inputs in one DynamoDB transaction (<= 100 items), so the "
          "batcher caps batches at 40 payouts (MAX_BATCH_PAYOUTS); 100 is shown for the on-chain figure.")


if __name__ == "__main__":
    main()
