"""Payout domain rules (pure): fee shares, fee-rate policy, the PSBT, external signatures, fee-bump plans."""
from __future__ import annotations

from dataclasses import replace

import pytest
from embit import bip32, bip39
from embit.psbt import PSBT
from hypothesis import given, settings
from hypothesis import strategies as st

from satflow.domain.bitcoin import FeeEstimate, Network
from satflow.domain.onchain import PayoutStatus, Priority, Utxo
from satflow.domain.payouts import (
    FEE_RATE_CAP, FEE_RATE_FALLBACK, Batch, BatchStatus, ChangeOutput, FeeBumpRejected, InvalidPsbt, Payout,
    RBF_SEQUENCE, TxVariant, WalletKeys, batch_id_for, build_psbt, fee_rate_for, fee_shares, finalize_external,
    plan_replacement, sign_hot, txid_of_raw,
)

from .conftest import TEST_ACCOUNT_TPRV, TEST_ACCOUNT_TPUB

KEYS = WalletKeys.from_account_key(TEST_ACCOUNT_TPUB, Network.REGTEST)


def payout(pid: str, amount: int, script: str = "0014" + "11" * 20, reserve: int = 5_000) -> Payout:
    return Payout(pid, "acc_x", "addr", script, amount, reserve, Priority.NORMAL, "h", PayoutStatus.BATCHED, "t", "t")


def our_utxo(index: int, value: int, chain: int = 0) -> Utxo:
    derived = KEYS.deriver.derive(index, chain)
    return Utxo(f"{index + 1:064x}", index % 2, value, derived.script_pubkey_hex, chain, index, 100)


# ------------------------------------------------------------------------------------------------ fee shares
def test_fee_shares_follow_output_size_plus_an_equal_overhead_share():
    shares = fee_shares(1_000, {"a": 31, "b": 43, "c": 34}, 300)
    assert sum(shares.values()) == 1_000
    assert shares["b"] > shares["c"] > shares["a"]
    # overhead 192 vB split equally: a = (31 + 64) / 300 * 1000 = 316.67, b = 356.67, c = 326.67
    assert shares == {"a": 317, "b": 357, "c": 326}  # 316.67 / 356.67 / 326.67: ties go to the lowest ids


def test_fee_shares_remainders_go_to_the_largest_fractions_then_lowest_id():
    shares = fee_shares(10, {"x": 31, "y": 31, "z": 31}, 100)
    assert shares == {"x": 4, "y": 3, "z": 3}  # 3.33 each: the remainder sat goes to the lowest id


@settings(max_examples=300, deadline=None)
@given(fee=st.integers(min_value=0, max_value=5_000_000),
       sizes=st.lists(st.sampled_from([31, 32, 34, 43]), min_size=1, max_size=60),
       overhead=st.integers(min_value=11, max_value=10_000))
def test_fee_shares_always_add_up_exactly(fee, sizes, overhead):
    vbytes = {f"po_{i:03d}": s for i, s in enumerate(sizes)}
    shares = fee_shares(fee, vbytes, sum(sizes) + overhead)
    assert sum(shares.values()) == fee and min(shares.values()) >= 0
    assert fee_shares(fee, dict(reversed(list(vbytes.items()))), sum(sizes) + overhead) == shares  # order-free


# ------------------------------------------------------------------------------------------------ fee rate policy
@pytest.mark.parametrize("priority", list(Priority))
def test_fee_rate_policy(priority):
    assert fee_rate_for(priority, None) == (FEE_RATE_FALLBACK[priority], "fallback")
    assert fee_rate_for(priority, FeeEstimate(3_000, 3, 2)) == (3, "estimate")
    assert fee_rate_for(priority, FeeEstimate(10**6, 1000, 2)) == (FEE_RATE_CAP[priority], "capped")


def test_batch_ids_depend_on_the_payouts_and_their_requeues():
    a, b = payout("po_a", 1_000), payout("po_b", 2_000)
    assert batch_id_for([a, b]) == batch_id_for([b, a])
    assert batch_id_for([a, b]) != batch_id_for([replace(a, requeues=1), b])


# ------------------------------------------------------------------------------------------------ the PSBT
def test_psbt_is_bip69_ordered_signals_rbf_and_names_our_keys():
    inputs = [our_utxo(3, 80_000), our_utxo(1, 90_000)]
    change = ChangeOutput(0, KEYS.deriver.derive(0, 1).address, KEYS.deriver.derive(0, 1).script_pubkey_hex)
    ps = [payout("po_b", 50_000, "0014" + "22" * 20), payout("po_a", 30_000, "5120" + "33" * 32)]
    built = build_psbt(inputs, ps, change, 88_000, KEYS)
    psbt = PSBT.from_base64(built.psbt_b64)
    assert [(i.txid.hex(), i.vout) for i in psbt.inputs] == sorted((u.txid, u.vout) for u in inputs)
    assert all(i.sequence == RBF_SEQUENCE for i in psbt.inputs)
    assert [o.value for o in psbt.outputs] == [30_000, 50_000, 88_000]
    assert built.vouts == {"po_a": 0, "po_b": 1} and built.change_vout == 2
    assert all(len(i.bip32_derivations) == 1 and i.witness_utxo is not None for i in psbt.inputs)
    assert len(psbt.outputs[2].bip32_derivations) == 1  # the signer can see the change is ours
    assert psbt.fee() == 170_000 - 168_000
    assert build_psbt(list(reversed(inputs)), ps, change, 88_000, KEYS) == built  # deterministic


def test_descriptor_with_origin_names_the_master_fingerprint_and_full_path():
    keys = WalletKeys.from_account_key(f"wpkh([73c5da0a/84h/1h/0h]{TEST_ACCOUNT_TPUB}/0/*)", Network.REGTEST)
    _pub, path, _script = keys.derivation(1, 7)
    assert path.fingerprint.hex() == "73c5da0a" and path.derivation == [0x80000054, 0x80000001, 0x80000000, 1, 7]


def _built_single():
    utxo = our_utxo(5, 100_000)
    return utxo, build_psbt([utxo], [payout("po_a", 50_000)], None, 0, KEYS)


def test_hot_signing_and_external_signatures_agree():
    utxo, built = _built_single()
    raw = sign_hot(built.psbt_b64, [utxo], TEST_ACCOUNT_TPRV)
    assert txid_of_raw(raw) == built.txid
    psbt = PSBT.from_base64(built.psbt_b64)
    psbt.sign_with(bip32.HDKey.from_string(TEST_ACCOUNT_TPRV))
    assert finalize_external(built.psbt_b64, psbt.to_base64()) == raw  # RFC6979: the same signature


def test_external_signature_by_another_key_is_refused():
    _utxo, built = _built_single()
    other = bip32.HDKey.from_seed(bip39.mnemonic_to_seed("zoo " * 11 + "wrong")).derive("m/84h/1h/0h")
    psbt = PSBT.from_base64(built.psbt_b64)
    ((pub, path),) = psbt.inputs[0].bip32_derivations.items()
    forged_key = other.derive(path.derivation).key
    from embit.transaction import SIGHASH

    psbt.inputs[0].partial_sigs[forged_key.get_public_key()] = (
        forged_key.sign(psbt.sighash(0, SIGHASH.ALL)).serialize() + b"\x01")
    with pytest.raises(InvalidPsbt):
        finalize_external(built.psbt_b64, psbt.to_base64())
    with pytest.raises(InvalidPsbt):
        finalize_external(built.psbt_b64, "not a psbt")


def test_hot_signer_refuses_a_key_that_does_not_own_the_inputs():
    utxo, built = _built_single()
    other = bip32.HDKey.from_seed(bip39.mnemonic_to_seed("zoo " * 11 + "wrong")).derive("m/84h/1h/0h")
    with pytest.raises(ValueError):
        sign_hot(built.psbt_b64, [utxo], other.to_base58(version=bytes.fromhex("04358394")))


# ------------------------------------------------------------------------------------------------ fee bump plans
def _batch(change_sat: int, fee: int, vbytes: int, reserve: int = 5_000) -> tuple[Batch, list[Payout]]:
    ps = [payout("po_a", 40_000, reserve=reserve), payout("po_b", 50_000, reserve=reserve)]
    inputs = (our_utxo(1, 90_000 + fee + change_sat),)
    change = ChangeOutput(0, "addr", KEYS.deriver.derive(0, 1).script_pubkey_hex) if change_sat else None
    variant = TxVariant("ab" * 32, "psbt", fee, fee // vbytes, vbytes, change_sat, 2 if change_sat else None,
                        {"po_a": 0, "po_b": 1}, fee_shares(fee, {"po_a": 31, "po_b": 31}, vbytes))
    batch = Batch("bat_x", Priority.NORMAL, ("po_a", "po_b"), inputs, change, 90_000, BatchStatus.BROADCAST,
                  (variant,), "t", "t")
    return batch, ps


def test_replacement_takes_the_fee_from_the_change():
    batch, ps = _batch(change_sat=20_000, fee=5 * 141, vbytes=141)
    plan = plan_replacement(batch, ps, 12)
    assert plan.fee_sat == 12 * 141 and plan.change_sat == 20_000 - (plan.fee_sat - 5 * 141)
    assert sum(plan.shares.values()) == plan.fee_sat


def test_replacement_rules():
    batch, ps = _batch(change_sat=20_000, fee=5 * 141, vbytes=141)
    with pytest.raises(FeeBumpRejected):
        plan_replacement(batch, ps, 5)  # not a higher rate
    assert plan_replacement(batch, ps, 40).fee_sat == 40 * 141  # shares of 2,820 fit the 5,000 reserves
    with pytest.raises(FeeBumpRejected):
        plan_replacement(batch, ps, 80)  # 11,280 sat: shares of 5,640 > 5,000
    no_change, ps2 = _batch(change_sat=0, fee=5 * 110, vbytes=110)
    with pytest.raises(FeeBumpRejected):
        plan_replacement(no_change, ps2, 20)  # the payouts never pay for it
    # a change that would become dust is dropped into the fee
    small, ps3 = _batch(change_sat=700, fee=5 * 141, vbytes=141, reserve=50_000)
    plan = plan_replacement(small, ps3, 9)
    assert plan.change_sat == 0 and plan.vbytes == 110 and plan.fee_sat == 5 * 141 + 700


def test_descriptor_without_origin_uses_the_account_fingerprint():
    keys = WalletKeys.from_account_key(f"wpkh({TEST_ACCOUNT_TPUB}/<0;1>/*)", Network.REGTEST)
    assert keys.fingerprint == KEYS.fingerprint and keys.prefix == ()
