"""Item schemas of the single table, as pynamodb models bound to a table name chosen at composition time.

Key design (pk / sk):
  ACCOUNT#<account_id> / ACCOUNT            customer account (tier, status)
  REF#<external_ref>   / REF                uniqueness of external_ref -> account_id
  APIKEY#<sha256>      / APIKEY             hashed API key -> account_id, scopes
  BAL#<owner>          / <asset>            user balance (one item per asset)
  BAL#<sys:...>        / <asset>#<shard>    system balance shard (N items, summed on read)
  TRANSFER#<id>        / TRANSFER           immutable transfer; a pending one gains resolved_by exactly once
  HIST#<owner>#<asset>[#<shard>] / <created_at>#<transfer_id>   per-account history, newest first
  INVOICE#<payment_hash> / INVOICE         our invoice: owner, amount, status (OPEN [-> ACCEPTED] -> SETTLED once)
  OPENINV#<shard>      / <expires_unix>#<hash>   index of OPEN invoices for the expiry sweeper
  PAYMENT#<payment_id> / PAYMENT           an outbound payment and its state
  PAYHASH#<payment_hash> / LOCK            one payment per hash across all accounts, ever (never freed)
  PAYPENDING#<shard>   / <payment_id>      index of PENDING payments (internal ones too) for the reconciler
  LNDCURSOR            / INVOICES          the settle/add index the invoice listener and poller resume from
  UTXO#<shard>         / <txid>:<vout>     our spendable outputs (sharded partitions; AVAILABLE/RESERVED/SPENT)
"""
from __future__ import annotations

from dataclasses import dataclass

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.models import Model


class _Base(Model):
    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)


BaseItem = _Base  # other stores declare their item models on this base, with model_meta()


def model_meta(table_name: str, region: str, host: str | None = None) -> type:
    """A fresh pynamodb Meta for one model class bound to the table (each class needs its own object)."""
    attrs: dict = {"table_name": table_name, "region": region}
    if host:
        attrs["host"] = host
    return type("Meta", (), attrs)


@dataclass(frozen=True)
class Models:
    table_name: str
    Account: type[_Base]
    AccountRef: type[_Base]
    ApiKey: type[_Base]
    Balance: type[_Base]
    Transfer: type[_Base]
    History: type[_Base]
    Invoice: type[_Base]
    Payment: type[_Base]
    Marker: type[_Base]
    Utxo: type[_Base]


def build_models(table_name: str, region: str, host: str | None = None) -> Models:
    """Model classes bound to ``table_name`` (pynamodb reads the table name from a class-level Meta)."""

    def meta() -> type:
        return model_meta(table_name, region, host)

    class Account(_Base):
        Meta = meta()
        account_id = UnicodeAttribute()
        external_ref = UnicodeAttribute()
        tier = NumberAttribute()
        status = UnicodeAttribute()
        created_at = UnicodeAttribute()
        updated_at = UnicodeAttribute(null=True)

    class AccountRef(_Base):
        Meta = meta()
        account_id = UnicodeAttribute()

    class ApiKey(_Base):
        Meta = meta()
        account_id = UnicodeAttribute()
        scopes = ListAttribute(of=UnicodeAttribute)
        key_prefix = UnicodeAttribute()
        created_at = UnicodeAttribute()
        key_id = UnicodeAttribute(null=True)  # absent on keys issued before key records (issue 15)

    class Balance(_Base):
        Meta = meta()
        owner = UnicodeAttribute(null=True)
        asset = UnicodeAttribute(null=True)
        shard = NumberAttribute(null=True)
        available = NumberAttribute(null=True)
        pending_out = NumberAttribute(null=True)
        pending_in = NumberAttribute(null=True)
        last_credit_at = UnicodeAttribute(null=True)  # user balances: created_at of the latest posted credit

    class Transfer(_Base):
        Meta = meta()
        transfer_id = UnicodeAttribute()
        kind = UnicodeAttribute()
        debit_owner = UnicodeAttribute()
        credit_owner = UnicodeAttribute()
        asset = UnicodeAttribute()
        amount = NumberAttribute()
        template = UnicodeAttribute()
        created_at = UnicodeAttribute()
        pending_id = UnicodeAttribute(null=True)
        pending_amount = NumberAttribute(null=True)
        memo = UnicodeAttribute(null=True)
        metadata = MapAttribute(null=True)
        debit_shard = NumberAttribute(null=True)
        credit_shard = NumberAttribute(null=True)
        operator = BooleanAttribute(null=True)
        overdraft = BooleanAttribute(null=True)
        resolved_by = UnicodeAttribute(null=True)  # pending only: the post/void that resolved it
        resolution = UnicodeAttribute(null=True)  # pending only: POST_PENDING | VOID_PENDING

    class History(_Base):
        Meta = meta()
        transfer_id = UnicodeAttribute()
        kind = UnicodeAttribute()
        template = UnicodeAttribute()
        direction = UnicodeAttribute()  # "out" (debit) | "in" (credit)
        amount = NumberAttribute()
        pending_amount = NumberAttribute(null=True)
        pending_id = UnicodeAttribute(null=True)
        counterparty = UnicodeAttribute()
        asset = UnicodeAttribute()
        memo = UnicodeAttribute(null=True)
        created_at = UnicodeAttribute()

    class Invoice(_Base):
        Meta = meta()
        payment_hash = UnicodeAttribute()
        account_id = UnicodeAttribute()
        amount_msat = NumberAttribute()
        payment_request = UnicodeAttribute()
        status = UnicodeAttribute()
        created_at = UnicodeAttribute()
        expires_at = UnicodeAttribute()
        expires_at_unix = NumberAttribute()
        memo = UnicodeAttribute(null=True)
        description_hash = UnicodeAttribute(null=True)
        metadata_json = UnicodeAttribute(null=True)
        amount_received_msat = NumberAttribute(null=True)
        settled_at = UnicodeAttribute(null=True)
        settled_by = UnicodeAttribute(null=True)
        claimed_by = UnicodeAttribute(null=True)  # the internal payment settling it (status ACCEPTED)

    class Payment(_Base):
        Meta = meta()
        payment_id = UnicodeAttribute()
        account_id = UnicodeAttribute()
        payment_hash = UnicodeAttribute()
        payment_request = UnicodeAttribute()
        destination = UnicodeAttribute()
        amount_msat = NumberAttribute()
        fee_reserve_msat = NumberAttribute()
        request_hash = UnicodeAttribute()
        invoice_expires_at = NumberAttribute()
        cltv_deadline_height = NumberAttribute(null=True)
        internal = BooleanAttribute()
        amountless = BooleanAttribute(null=True)
        status = UnicodeAttribute()
        created_at = UnicodeAttribute()
        updated_at = UnicodeAttribute()
        fee_msat = NumberAttribute(null=True)
        preimage = UnicodeAttribute(null=True)
        failure_reason = UnicodeAttribute(null=True)
        send_attempted_at = UnicodeAttribute(null=True)
        send_rejected = BooleanAttribute(null=True)

    class Marker(_Base):
        """Small index/lock items: payment-hash locks, pending-payment and open-invoice indexes, cursors."""

        Meta = meta()
        ref = UnicodeAttribute(null=True)
        status = UnicodeAttribute(null=True)
        at = UnicodeAttribute(null=True)
        settle_index = NumberAttribute(null=True)
        add_index = NumberAttribute(null=True)

    class Utxo(_Base):
        Meta = meta()
        txid = UnicodeAttribute()
        vout = NumberAttribute()
        value_sat = NumberAttribute()
        script_pubkey_hex = UnicodeAttribute()
        chain = NumberAttribute()
        index = NumberAttribute()
        height = NumberAttribute()
        status = UnicodeAttribute()
        reserved_by = UnicodeAttribute(null=True)

    return Models(table_name, Account, AccountRef, ApiKey, Balance, Transfer, History, Invoice, Payment, Marker,
                  Utxo)


def key(pk: str, sk: str) -> dict:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def account_pk(account_id: str) -> str:
    return f"ACCOUNT#{account_id}"


def balance_key(owner: str, asset: str, shard: int | None) -> tuple[str, str]:
    return f"BAL#{owner}", asset if shard is None else f"{asset}#{shard}"


def history_pk(owner: str, asset: str, shard: int | None) -> str:
    base = f"HIST#{owner}#{asset}"
    return base if shard is None else f"{base}#{shard}"
