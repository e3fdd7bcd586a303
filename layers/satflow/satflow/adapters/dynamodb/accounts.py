"""Customer accounts, external references and hashed API keys on DynamoDB."""
from __future__ import annotations

from typing import Any, Sequence

from satflow.domain import errors
from satflow.domain.accounts import Account, AccountStatus, Scope

from .batch import ItemRead
from .models import Models, account_pk, key
from .transaction import Cancellation, TxItem, put, transact, update


class DynamoAccounts:
    def __init__(self, client: Any, models: Models) -> None:
        self._client = client
        self._m = models

    def create(self, account: Account, api_key_hash: str, key_prefix: str, scopes: list[Scope],
               extra: Sequence[TxItem] = (), key_id: str | None = None) -> None:
        """Account, its unique external_ref and its first API key in one transaction (+ the caller's ``extra``
        items: the audit record)."""
        M = self._m
        items = [
            put(M.Account(account_pk(account.account_id), "ACCOUNT", account_id=account.account_id,
                          external_ref=account.external_ref, tier=account.tier, status=account.status.value,
                          created_at=account.created_at), M.Account.pk.does_not_exist(), "account"),
            put(M.AccountRef(f"REF#{account.external_ref}", "REF", account_id=account.account_id),
                M.AccountRef.pk.does_not_exist(), "ref"),
            put(M.ApiKey(f"APIKEY#{api_key_hash}", "APIKEY", account_id=account.account_id,
                         scopes=[s.value for s in scopes], key_prefix=key_prefix, created_at=account.created_at,
                         key_id=key_id),
                M.ApiKey.pk.does_not_exist(), "api_key"),
            *extra,
        ]
        cancellation = transact(self._client, items)
        if cancellation is None:
            return
        if cancellation.condition_failed("ref"):
            raise errors.AccountAlreadyExists(f"an account with external_ref {account.external_ref} exists",
                                              external_ref=account.external_ref)
        _raise_for_extra(cancellation)
        raise errors.TransientError(f"account creation cancelled: {sorted(cancellation.failures)}")

    def get(self, account_id: str) -> Account | None:
        return self.account_read(account_id).get()

    def account_read(self, account_id: str) -> ItemRead[Account | None]:
        """The account as one read of a batch (``adapters.dynamodb.batch.read_many``)."""
        return ItemRead(self._client, self._m.table_name, account_pk(account_id), "ACCOUNT", self._account)

    def _account(self, raw: dict | None) -> Account | None:
        if raw is None:
            return None
        a = self._m.Account.from_raw_data(raw)
        return Account(a.account_id, a.external_ref, int(a.tier), AccountStatus(a.status), a.created_at)

    def id_for_ref(self, external_ref: str) -> str | None:
        raw = self._get(f"REF#{external_ref}", "REF")
        return None if raw is None else raw["account_id"]["S"]

    def api_key(self, api_key_hash: str) -> tuple[str, frozenset[Scope], str | None] | None:
        """(account_id, scopes, key_id); key_id is None for a key issued before key records (issue 15)."""
        raw = self._get(f"APIKEY#{api_key_hash}", "APIKEY")
        if raw is None:
            return None
        k = self._m.ApiKey.from_raw_data(raw)
        return k.account_id, frozenset(Scope(s) for s in k.scopes), k.key_id

    def update(self, account_id: str, *, updated_at: str, status: AccountStatus | None = None,
               tier: int | None = None, extra: Sequence[TxItem] = ()) -> Account:
        """One transaction: the change and the caller's ``extra`` items (the admin action's audit record)."""
        A = self._m.Account
        actions = [A.updated_at.set(updated_at)]
        if status is not None:
            actions.append(A.status.set(status.value))
        if tier is not None:
            actions.append(A.tier.set(tier))
        item = update(A(account_pk(account_id), "ACCOUNT"), actions, A.pk.exists(), "account")
        cancellation = transact(self._client, [item, *extra])
        if cancellation is not None:
            if cancellation.condition_failed("account"):
                raise errors.AccountNotFound(f"account {account_id} not found", account_id=account_id)
            _raise_for_extra(cancellation)
            raise errors.TransientError(f"account update cancelled: {sorted(cancellation.failures)}")
        account = self.get(account_id)
        assert account is not None
        return account

    def _get(self, pk: str, sk: str) -> dict | None:
        return self._client.get_item(TableName=self._m.table_name, Key=key(pk, sk), ConsistentRead=True).get("Item")


def _raise_for_extra(c: Cancellation) -> None:
    """A failed condition on one of the caller's items raises that item's typed error (e.g. AuditHeadMoved)."""
    for item in c.items:
        if c.condition_failed(item.tag) and item.on_condition_failed is not None:
            raise item.on_condition_failed(c.old_image(item.tag))
