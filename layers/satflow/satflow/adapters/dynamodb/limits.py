"""Per-account limit windows on DynamoDB, enforced inside the ledger transaction of each send.

Item (pk / sk): ``LIMITS#<account_id> / LIMITS`` -> ``version`` (N), ``hours``/``days``/``minutes`` (the
:class:`~satflow.domain.limits.LimitWindow` buckets as exact ``"index:value,..."`` strings), ``updated_at_unix``.

How a send is admitted (``satflow.app.limits.admit_with_retry``):

1. ``read(account_id)`` -> ``(state, version)``: one consistent GetItem (version 0: no item yet).
2. ``domain.limits.admit(state, amount, now, tier_limits)`` -> the new state, or LIMIT_EXCEEDED/VELOCITY_EXCEEDED.
3. ``admit_items(...)`` -> ONE tagged Update (``limits``) with the condition ``version = :v``
   (``attribute_not_exists(pk)`` for the first send) that writes the new state and ``version + 1``; the caller
   adds it to the ledger's TransactWriteItems for the transfer or reserve (``ledger.execute(transfer, extra)``).

Why this is rule-4 compliant: the only write is conditional and atomic with the ledger change - the money moves
if and only if the limit state it was admitted against is still the stored one, in the same transaction. The read
only feeds the computation (DynamoDB conditions cannot do the bucket arithmetic); it is never trusted on its own:
if another send of the same account committed in between, the version differs, the whole transaction (transfer,
balances, limit) is cancelled and ``on_condition_failed`` raises :class:`LimitStateChanged` (a TransientError);
the use case re-reads and re-admits against the new state, where the limit may now be exceeded. Two parallel
sends can therefore never both pass on the same state: a lost update or a slip past a limit is impossible,
not merely unlikely. (On real DynamoDB two overlapping transactions on the item may instead cancel with
``TransactionConflict`` -> TransientError; the retry loop treats both the same way.)

A rejection is also confirmed inside a transaction (``reject_item``: a ConditionCheck on the same item that can
never hold): the ledger's classification puts an existing identical transfer first, so a client retry of a send
that already committed returns the original (rule 5) instead of LIMIT_EXCEEDED against its own usage.

Granularity: hour buckets make the 24 h window rolling to the hour, day buckets the 30-day window rolling to the
UTC day, minute buckets the velocity window rolling to the minute (each rounded so that a limit is never exceeded
within a true window; see ``satflow.domain.limits``).

One item per account is written by that account's sends only: like its balance item, not a global hot item.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from pynamodb.attributes import NumberAttribute, UnicodeAttribute

from satflow.domain.errors import SatflowError
from satflow.domain.limits import (
    EMPTY_WINDOW,
    LimitStateChanged,
    LimitWindow,
    decode_buckets,
    encode_buckets,
)

from .batch import ItemRead
from .models import BaseItem, Models, key, model_meta
from .transaction import TxItem, check, update

TAG = "limits"
SK = "LIMITS"
RECENT_SENDS = 25  # sends kept on the item for the risk score's "amount against history" (newest last)

RecentSends = tuple[tuple[str, int], ...]  # (send id, amount msat), oldest first


@dataclass(frozen=True)
class LimitRecord:
    """The limit item as read: the window, its version (0: no item yet) and the account's recent sends (None: an
    item written before sends were kept on it; the caller derives them from the ledger history once)."""

    window: LimitWindow
    version: int
    sends: RecentSends | None


EMPTY_RECORD = LimitRecord(EMPTY_WINDOW, 0, ())


def encode_sends(sends: Sequence[tuple[str, int]]) -> str:
    return ",".join(f"{int(amount)}:{send_id}" for send_id, amount in sends)


def decode_sends(text: str | None) -> RecentSends:
    out = []
    for part in (text or "").split(","):
        if part:
            amount, _, send_id = part.partition(":")
            out.append((send_id, int(amount)))
    return tuple(out)


def limits_pk(account_id: str) -> str:
    return f"LIMITS#{account_id}"


class _LimitModels:
    def __init__(self, table_name: str, region: str, host: str | None) -> None:
        class LimitItem(BaseItem):
            Meta = model_meta(table_name, region, host)
            account_id = UnicodeAttribute()
            version = NumberAttribute()
            hours = UnicodeAttribute(null=True)
            days = UnicodeAttribute(null=True)
            minutes = UnicodeAttribute(null=True)
            updated_at_unix = NumberAttribute(null=True)
            sends = UnicodeAttribute(null=True)  # recent sends, "msat:id,..." (encode_sends), newest last

        self.LimitItem = LimitItem


_MODELS: dict[tuple, _LimitModels] = {}


def _limit_models(models: Models) -> _LimitModels:
    meta = models.Account.Meta
    cache_key = (models.table_name, meta.region, getattr(meta, "host", None))
    if cache_key not in _MODELS:
        _MODELS[cache_key] = _LimitModels(*cache_key)
    return _MODELS[cache_key]


class DynamoLimitStore:
    def __init__(self, client: Any, models: Models) -> None:
        self._client = client
        self._table = models.table_name
        self._L = _limit_models(models).LimitItem

    def read(self, account_id: str) -> tuple[LimitWindow, int]:
        """The account's window and its version (0 when the account never sent). One consistent GetItem."""
        record = self.read_record(account_id)
        return record.window, record.version

    def read_record(self, account_id: str) -> LimitRecord:
        """Window, version and recent sends: one consistent GetItem."""
        return self.record_read(account_id).get()

    def record_read(self, account_id: str) -> ItemRead[LimitRecord]:
        """The limit item as one read of a batch (``adapters.dynamodb.batch.read_many``)."""
        return ItemRead(self._client, self._table, limits_pk(account_id), SK, _record)

    def admit_items(self, account_id: str, state_before: LimitWindow, version: int, new_state: LimitWindow,
                    *, now: int | None = None, sends: Sequence[tuple[str, int]] | None = None) -> list[TxItem]:
        """ONE tagged Update for the send's ledger transaction: write ``new_state`` and ``version + 1``, on the
        condition that the item is still at ``version`` (``state_before`` is what that version holds). ``sends``:
        the account's recent sends including this one (the last ``RECENT_SENDS`` are kept)."""
        return [self.write_item(account_id, version, new_state, now=now, sends=sends)]

    def write_item(self, account_id: str, version: int, new_state: LimitWindow, *, now: int | None = None,
                   sends: Sequence[tuple[str, int]] | None = None) -> TxItem:
        """The conditional write of a new window (admission or release), tagged ``limits``. ``sends`` None leaves
        the stored recent sends as they are (a release gives back usage; the attempt stays a past send)."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ValueError("version must be a non-negative integer")
        L = self._L
        item = L(limits_pk(account_id), SK)
        actions = [
            L.account_id.set(account_id),
            L.version.set(version + 1),
        ]
        for attr, buckets in ((L.hours, new_state.hours), (L.days, new_state.days), (L.minutes, new_state.minutes)):
            # An empty bucket list is removed rather than stored as "" (a release can empty one).
            actions.append(attr.set(encode_buckets(buckets)) if buckets else attr.remove())
        if now is not None:
            actions.append(L.updated_at_unix.set(now))
        if sends is not None:
            actions.append(L.sends.set(encode_sends(list(sends)[-RECENT_SENDS:])))
        condition = L.pk.does_not_exist() if version == 0 else (L.version == version)

        def changed(old: dict | None) -> SatflowError:
            seen = int(old["version"]["N"]) if old and "version" in old else 0
            return LimitStateChanged(
                f"the limit state of account {account_id} changed meanwhile (version {version} -> {seen}); "
                "re-read and admit again", account_id=account_id, expected_version=version, found_version=seen)

        return update(item, actions, condition, TAG, changed)

    def reject_item(self, account_id: str, error: SatflowError) -> TxItem:
        """A ConditionCheck that never holds, raising ``error``: a rejection confirmed in the send's own
        transaction, so an already committed identical transfer wins (idempotent replay) and nothing is written."""
        L = self._L
        never = L.pk.exists() & L.pk.does_not_exist()
        return check(L, limits_pk(account_id), SK, never, TAG, lambda old: error)


def _record(raw: dict | None) -> LimitRecord:
    if raw is None:
        return EMPTY_RECORD
    sends = raw.get("sends", {}).get("S")
    tracked = sends is not None or "sends" in raw
    return LimitRecord(_window(raw), int(raw["version"]["N"]), decode_sends(sends) if tracked else None)


def _window(raw: dict) -> LimitWindow:
    def text(name: str) -> str | None:
        return raw.get(name, {}).get("S")

    return LimitWindow(decode_buckets(text("hours")), decode_buckets(text("days")), decode_buckets(text("minutes")))


__all__ = ["DynamoLimitStore", "LimitRecord", "limits_pk", "TAG", "RECENT_SENDS", "encode_sends", "decode_sends"]
