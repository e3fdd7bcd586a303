"""On-chain entities shared by deposits (the chain monitor) and payouts (the batcher). Amounts are satoshi
(``*_sat``) on-chain and msat on the ledger: 1 sat = 1,000 msat, always exact."""
from __future__ import annotations

import enum
from dataclasses import dataclass

HOT_WALLET_OWNER = "sys:onchain_hot_wallet"

# Confirmations before a payout batch is posted (final on the ledger). The one default: config reads
# SATFLOW_PAYOUT_CONFIRMATIONS (template parameter PayoutConfirmations) with it; the workflow's check and post
# steps and the batcher's recovery all read svc.payout_confirmations, the ASL carries none.
PAYOUT_CONFIRMATIONS = 3


class UtxoStatus(str, enum.Enum):
    AVAILABLE = "AVAILABLE"  # confirmed at the wallet's spend depth, ours, not in any batch
    RESERVED = "RESERVED"  # an input of a batch that is not yet confirmed (or of an abandoned one: never released)
    SPENT = "SPENT"  # its spending batch confirmed


@dataclass(frozen=True)
class Utxo:
    """An output we can spend: a deposit to a user's address or the change of one of our batches."""

    txid: str
    vout: int
    value_sat: int
    script_pubkey_hex: str
    chain: int  # BIP84 chain: 0 receive (deposits), 1 change
    index: int  # BIP84 address index on that chain
    height: int  # the block it confirmed in
    status: UtxoStatus = UtxoStatus.AVAILABLE
    reserved_by: str | None = None  # the batch id while RESERVED / SPENT

    @property
    def outpoint(self) -> str:
        return f"{self.txid}:{self.vout}"


class DepositStatus(str, enum.Enum):
    SEEN = "SEEN"  # in the mempool (shown as pending_in)
    CONFIRMING = "CONFIRMING"  # in a block, below the credit depth of its amount tier
    CREDITED = "CREDITED"  # credited to the user's balance
    REVERSED = "REVERSED"  # removed by a reorg after it was credited; a reversal transfer took it back


class PayoutStatus(str, enum.Enum):
    QUEUED = "QUEUED"  # funds reserved, waiting for the batcher
    IN_REVIEW = "IN_REVIEW"  # funds reserved, held out of batching until a risk review approves it
    BATCHED = "BATCHED"  # in a built, unsigned transaction
    SIGNING = "SIGNING"  # waiting for the external signer
    BROADCAST = "BROADCAST"  # sent to the network, not yet at the confirmation depth
    CONFIRMED = "CONFIRMED"  # posted on the ledger with its fee share
    CANCELED = "CANCELED"  # voided before broadcast


class Priority(str, enum.Enum):
    FAST = "fast"
    NORMAL = "normal"
    SLOW = "slow"

    @property
    def conf_target(self) -> int:
        """estimatesmartfee confirmation target (blocks)."""
        return {"fast": 2, "normal": 6, "slow": 24}[self.value]
