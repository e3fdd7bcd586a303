"""Real, signed BOLT11 invoices for the Lightning simulator (regtest), via the ``bolt11`` library.

``bolt11`` signs with coincurve (its own dependency), so node keys are coincurve keys from fixed secrets:
the same simulator always has the same node identities.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import bolt11
from bolt11 import Bolt11, Feature, Features, FeatureState, MilliSatoshi, Tags, TagChar
from coincurve import PrivateKey

REGTEST_CURRENCY = "bcrt"  # BOLT11 prefix lnbcrt
DEFAULT_MIN_FINAL_CLTV = 80  # lnd's default final CLTV delta
# What lnd puts in its invoices: TLV onion and payment secret required, multi-path supported.
_INVOICE_FEATURES = {
    Feature.var_onion_optin: FeatureState.required,
    Feature.payment_secret: FeatureState.required,
    Feature.basic_mpp: FeatureState.supported,
}


@dataclass(frozen=True)
class NodeKey:
    """A simulated node's identity: a secp256k1 key derived from a label (deterministic, never a real secret)."""

    label: str
    private_key_hex: str
    pubkey_hex: str

    @classmethod
    def from_label(cls, label: str) -> "NodeKey":
        secret = hashlib.sha256(f"satflow-simulator-node:{label}".encode()).hexdigest()
        pubkey = PrivateKey.from_hex(secret).public_key.format(compressed=True).hex()
        return cls(label=label, private_key_hex=secret, pubkey_hex=pubkey)


def encode_invoice(
    *,
    key: NodeKey,
    payment_hash_hex: str,
    payment_secret_hex: str,
    amount_msat: int,
    timestamp: int,
    expiry_s: int,
    memo: str = "",
    description_hash_hex: str = "",
    min_final_cltv: int = DEFAULT_MIN_FINAL_CLTV,
    currency: str = REGTEST_CURRENCY,
) -> str:
    """A signed payment request (regtest unless ``currency`` says otherwise). ``amount_msat`` 0: amount-less."""
    tags = Tags()
    tags.add(TagChar.payment_hash, payment_hash_hex)
    tags.add(TagChar.payment_secret, payment_secret_hex)
    if description_hash_hex:  # BOLT11 carries either a description or its hash, never both
        tags.add(TagChar.description_hash, description_hash_hex)
    else:
        tags.add(TagChar.description, memo)
    tags.add(TagChar.expire_time, expiry_s)
    tags.add(TagChar.min_final_cltv_expiry, min_final_cltv)
    tags.add(TagChar.features, Features.from_feature_list(dict(_INVOICE_FEATURES)))
    invoice = Bolt11(
        currency=currency,
        date=timestamp,
        tags=tags,
        amount_msat=MilliSatoshi(amount_msat) if amount_msat else None,
    )
    return bolt11.encode(invoice, key.private_key_hex)


def decode_invoice(payment_request: str) -> Bolt11:
    """Decode and verify the signature (raises ``bolt11.Bolt11Exception`` or ValueError when invalid)."""
    return bolt11.decode(payment_request)
