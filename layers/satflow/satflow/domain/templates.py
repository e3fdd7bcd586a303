"""Ledger templates, one per business event, balanced by construction (each returns one double-entry transfer)."""
from __future__ import annotations

from typing import Literal

from .errors import ValidationError
from .ledger import LedgerAccount, SystemAccount, Transfer, TransferKind, new_transfer
from .money import BTC, validate_amount

MAX_MEMO = 280


def validate_memo(memo: object) -> str | None:
    if memo is None:
        return None
    if not isinstance(memo, str) or len(memo) > MAX_MEMO or not is_utf8(memo):
        raise ValidationError(f"memo must be a string of at most {MAX_MEMO} characters", field="memo")
    return memo


def is_utf8(text: str) -> bool:
    """False for strings holding lone surrogates (valid JSON escapes, but not storable text)."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def internal_transfer(
    *, transfer_id: str, sender: str, recipient: str, amount_msat: int, created_at: str, shards: int,
    memo: str | None = None, request_hash: str | None = None, asset: str = BTC, held: bool = False,
) -> Transfer:
    """User -> user, instant and free: one posted transfer between two liability accounts. ``held``: a risk
    review holds it as a PENDING transfer (the sender's funds reserved, the recipient's pending_in) until an admin
    approves (post) or rejects (void) it."""
    validate_amount(amount_msat)
    return new_transfer(
        transfer_id=transfer_id, kind=TransferKind.PENDING if held else TransferKind.POSTED, debit=LedgerAccount(sender, asset),
        credit=LedgerAccount(recipient, asset), amount=amount_msat, template="internal_transfer",
        created_at=created_at, shards=shards, memo=validate_memo(memo),
        metadata={"request_hash": request_hash} if request_hash else None,
    )


def admin_adjustment(
    *, transfer_id: str, account_id: str, amount_msat: int, direction: Literal["credit", "debit"], reason: str,
    created_at: str, shards: int, admin: str = "admin", asset: str = BTC,
) -> Transfer:
    """An operator's correction or test funding, always against owner equity, always with a reason."""
    validate_amount(amount_msat)
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_MEMO or not is_utf8(reason):
        raise ValidationError("reason is required (1-280 characters)", field="reason")
    user = LedgerAccount(account_id, asset)
    equity = LedgerAccount(SystemAccount.OWNER_EQUITY.value, asset)
    if direction == "credit":
        debit, credit = equity, user
    elif direction == "debit":
        debit, credit = user, equity
    else:
        raise ValidationError("direction must be 'credit' or 'debit'", field="direction")
    return new_transfer(
        transfer_id=transfer_id, kind=TransferKind.POSTED, debit=debit, credit=credit, amount=amount_msat,
        template=f"adjustment_{direction}", created_at=created_at, shards=shards, memo=reason,
        metadata={"admin": admin}, operator=True,
    )


# --- Lightning -------------------------------------------------------------------------------------------------
def invoice_credit_id(payment_hash: str, total_paid_msat: int | None = None) -> str:
    """The ledger id of an inbound credit: the first settlement is keyed by the payment hash, a further one (AMP)
    by the hash and the node's new total paid. The credit path and the solvency check both name credits by it."""
    return f"inv_{payment_hash}" if total_paid_msat is None else f"inv_{payment_hash}:paid:{total_paid_msat}"


def invoice_settled(*, payment_hash: str, account_id: str, amount_msat: int, created_at: str, shards: int,
                    asset: str = BTC) -> Transfer:
    """Inbound Lightning: our node received ``amount_msat`` for the user's invoice. Keyed by payment hash, so a
    duplicate or late settlement event can never credit twice."""
    return new_transfer(
        transfer_id=invoice_credit_id(payment_hash), kind=TransferKind.POSTED,
        debit=LedgerAccount(SystemAccount.LND_NODE.value, asset), credit=LedgerAccount(account_id, asset),
        amount=amount_msat, template="invoice_settled", created_at=created_at, shards=shards,
        metadata={"payment_hash": payment_hash},
    )


def invoice_settled_again(*, payment_hash: str, account_id: str, amount_msat: int, total_paid_msat: int,
                          created_at: str, shards: int, asset: str = BTC) -> Transfer:
    """A further settlement of an invoice the node had settled before (AMP: one invoice, several payments; LND
    reports the growing total paid): the owner is credited the increase. Keyed by the new total, which only
    grows, so each settlement credits once and a replayed or older event credits nothing."""
    return new_transfer(
        transfer_id=invoice_credit_id(payment_hash, total_paid_msat), kind=TransferKind.POSTED,
        debit=LedgerAccount(SystemAccount.LND_NODE.value, asset), credit=LedgerAccount(account_id, asset),
        amount=amount_msat, template="invoice_settled_again", created_at=created_at, shards=shards,
        metadata={"payment_hash": payment_hash, "total_paid_msat": str(total_paid_msat)},
    )


def payment_reserved(*, payment_id: str, account_id: str, amount_msat: int, fee_reserve_msat: int,
                     payment_hash: str, created_at: str, shards: int, asset: str = BTC) -> Transfer:
    """Outbound Lightning: hold amount + fee reserve until the node says SUCCEEDED (post) or FAILED (void)."""
    return new_transfer(
        transfer_id=payment_id, kind=TransferKind.PENDING, debit=LedgerAccount(account_id, asset),
        credit=LedgerAccount(SystemAccount.LND_NODE.value, asset), amount=amount_msat + fee_reserve_msat,
        template="payment_reserved", created_at=created_at, shards=shards,
        metadata={"payment_hash": payment_hash},
    )


def routing_fee_overrun(*, payment_id: str, amount_msat: int, created_at: str, shards: int,
                        asset: str = BTC) -> Transfer:
    """The node paid more routing fee than the payment reserved (LND should never allow it): the user is charged
    only the reserve, the excess is our expense, and the node asset still shows everything that left it."""
    return new_transfer(
        transfer_id=f"{payment_id}:fee_overrun", kind=TransferKind.POSTED,
        debit=LedgerAccount(SystemAccount.ROUTING_FEE_EXPENSE.value, asset),
        credit=LedgerAccount(SystemAccount.LND_NODE.value, asset), amount=amount_msat,
        template="routing_fee_overrun", created_at=created_at, shards=shards,
    )


def internal_invoice_payment(*, payment_id: str, payer: str, payee: str, amount_msat: int, payment_hash: str,
                             created_at: str, shards: int, asset: str = BTC) -> Transfer:
    """Paying another satflow account's invoice: settled on the ledger at once, free."""
    return new_transfer(
        transfer_id=payment_id, kind=TransferKind.POSTED, debit=LedgerAccount(payer, asset),
        credit=LedgerAccount(payee, asset), amount=amount_msat, template="internal_invoice_payment",
        created_at=created_at, shards=shards, metadata={"payment_hash": payment_hash},
    )


# --- On-chain --------------------------------------------------------------------------------------------------
HOT_WALLET = SystemAccount.ONCHAIN_HOT_WALLET.value
MSAT_PER_SAT = 1_000

from .deposits import credit_transfer_id, reversal_transfer_id, seen_transfer_id, void_transfer_id  # noqa: E402
from .ledger import post_pending, void_pending  # noqa: E402


def deposit_seen(*, outpoint: str, account_id: str, amount_sat: int, created_at: str, shards: int,
                 generation: int = 0, asset: str = BTC) -> Transfer:
    """An on-chain deposit to the user's address was seen (mempool or block): announce it as ``pending_in`` with a
    PENDING transfer hot wallet -> user. Posted at the policy's depth (deposit_credited), voided if the transaction
    disappears first (deposit_dropped). Keyed by txid:vout and the deposit's generation (a re-sighting after a
    reversal is a new generation), so a rescan replays it."""
    return new_transfer(
        transfer_id=seen_transfer_id(outpoint, generation), kind=TransferKind.PENDING,
        debit=LedgerAccount(HOT_WALLET, asset), credit=LedgerAccount(account_id, asset),
        amount=amount_sat * MSAT_PER_SAT, template="deposit_seen", created_at=created_at, shards=shards,
        metadata={"outpoint": outpoint},
    )


def deposit_credited(seen: Transfer, *, created_at: str, generation: int = 0) -> Transfer:
    """The deposit reached its credit depth: post the ``deposit_seen`` pending in full (the credit)."""
    outpoint = seen.metadata["outpoint"]
    return post_pending(seen, transfer_id=credit_transfer_id(outpoint, generation), created_at=created_at,
                        metadata={"outpoint": outpoint})


def deposit_dropped(seen: Transfer, *, created_at: str, generation: int = 0) -> Transfer:
    """The deposit vanished before credit (dropped from the mempool, or its block orphaned and the transaction
    gone): void the ``deposit_seen`` pending. Nothing was credited, so nothing else moves."""
    outpoint = seen.metadata["outpoint"]
    return void_pending(seen, transfer_id=void_transfer_id(outpoint, generation), created_at=created_at,
                        metadata={"outpoint": outpoint})


def deposit_reversed(*, outpoint: str, account_id: str, amount_sat: int, created_at: str, shards: int,
                     overdraft: bool = False, generation: int = 0, asset: str = BTC) -> Transfer:
    """A reorg removed a credited deposit: an explicit correction (transfers are immutable). An operator
    transfer, so it still lands on a frozen account. With ``overdraft`` it may take the balance below zero (the
    user already spent the deposit); the caller then freezes the account in the same transaction."""
    return new_transfer(
        transfer_id=reversal_transfer_id(outpoint, generation), kind=TransferKind.POSTED,
        debit=LedgerAccount(account_id, asset), credit=LedgerAccount(HOT_WALLET, asset),
        amount=amount_sat * MSAT_PER_SAT, template="deposit_reversed", created_at=created_at, shards=shards,
        metadata={"outpoint": outpoint}, operator=True, overdraft=overdraft,
    )


def payout_fee_overrun(*, payout_id: str, amount_sat: int, created_at: str, shards: int,
                       asset: str = BTC) -> Transfer:
    """A payout's share of its confirmed transaction's fee is above its reserve (the batcher and fee bumps never
    plan it so): the user is charged only the reserve, the excess is our expense, and the hot wallet still shows
    everything that left it. Keyed by the payout, like Lightning's ``routing_fee_overrun``."""
    return new_transfer(
        transfer_id=f"{payout_id}:fee_overrun", kind=TransferKind.POSTED,
        debit=LedgerAccount(SystemAccount.ONCHAIN_FEE_EXPENSE.value, asset), credit=LedgerAccount(HOT_WALLET, asset),
        amount=amount_sat * MSAT_PER_SAT, template="payout_fee_overrun", created_at=created_at, shards=shards,
        metadata={"payout_id": payout_id},
    )


def payout_reserved(*, payout_id: str, account_id: str, amount_sat: int, fee_reserve_sat: int, created_at: str,
                    shards: int, asset: str = BTC) -> Transfer:
    """An on-chain payout is queued: hold amount + fee reserve until the batch confirms (post) or it is cancelled
    before broadcast (void)."""
    return new_transfer(
        transfer_id=payout_id, kind=TransferKind.PENDING, debit=LedgerAccount(account_id, asset),
        credit=LedgerAccount(HOT_WALLET, asset), amount=(amount_sat + fee_reserve_sat) * MSAT_PER_SAT,
        template="payout_reserved", created_at=created_at, shards=shards,
    )
