"""Webhooks on DynamoDB: the transactional outbox, subscriptions and per-(subscription, event) delivery records.

Items (pk / sk), declared here on ``models.BaseItem``:
  OUTBOX#<event_id>      / OUTBOX              one event, written in the transaction of the change it announces;
                                               the table's stream carries it to the relay (INSERTs only). TTL.
  WEBHOOKS#<owner>       / SUB#<webhook_id>    a subscription (owner: an account id or "admin"); holds the signing
                                               secret (it must be recoverable to sign; the table is encrypted at rest)
  WEBHOOK#<webhook_id>   / DELIVERY#<event_id> a delivery record: status, attempts, last error, lease. TTL.

Outbox items (``outbox_items``) ride in the caller's TransactWriteItems:
  [outbox:<event_id>]  Put OUTBOX#<event_id>, attribute_not_exists(pk) for ledger events (the transfer id makes the event
                id unique; a replayed transfer is classified by its transfer item first). State-transition events
                (deposit confirmed, payout broadcast) pass ``overwrite=True``: the same transition written twice
                rewrites the same item (a stream MODIFY, which the relay ignores) instead of failing the
                transaction that moves the deposit or payout on.

A delivery is claimed with one conditional UpdateItem (create-or-update): not DELIVERED and no live lease. Only the
claimant POSTs; 2xx marks it DELIVERED (a duplicate stream record or SQS redelivery finds it delivered and does not
POST again); a failure records the attempt and error (DEAD on the last attempt).
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

from pynamodb.attributes import ListAttribute, NumberAttribute, UnicodeAttribute

from satflow.domain import errors
from satflow.domain.ledger import Transfer
from satflow.domain.webhooks import (
    ADMIN_OWNER,
    DEAD,
    DELIVERED,
    FAILED,
    PENDING,
    Claim,
    DeliveryRecord,
    OutboxEvent,
    Subscription,
    canonical_json,
    events_for_transfer,
    expires_at_unix,
    short_error,
)

from .models import BaseItem, Models, key, model_meta
from .paging import decode_cursor, encode_cursor
from .transaction import TRANSIENT_CODES, TxItem, put

OUTBOX_PREFIX = "OUTBOX#"
OUTBOX_SK = "OUTBOX"


def outbox_pk(event_id: str) -> str:
    return f"{OUTBOX_PREFIX}{event_id}"


def subscriptions_pk(owner: str) -> str:
    return f"WEBHOOKS#{owner}"


def deliveries_pk(subscription_id: str) -> str:
    return f"WEBHOOK#{subscription_id}"


class WebhookModels:
    def __init__(self, table_name: str, region: str, host: str | None) -> None:
        def meta() -> type:
            return model_meta(table_name, region, host)

        class OutboxItem(BaseItem):
            Meta = meta()
            event_id = UnicodeAttribute()
            event_type = UnicodeAttribute()
            account_id = UnicodeAttribute()
            created_at = UnicodeAttribute()
            data_json = UnicodeAttribute()
            ttl = NumberAttribute()

        class SubscriptionItem(BaseItem):
            Meta = meta()
            subscription_id = UnicodeAttribute()
            owner = UnicodeAttribute()
            url = UnicodeAttribute()
            events = ListAttribute(of=UnicodeAttribute)
            secret = UnicodeAttribute()
            created_at = UnicodeAttribute()

        class DeliveryItem(BaseItem):
            Meta = meta()
            subscription_id = UnicodeAttribute()
            event_id = UnicodeAttribute()
            event_type = UnicodeAttribute()
            status = UnicodeAttribute()
            attempts = NumberAttribute(null=True)
            lease_until = NumberAttribute(null=True)
            last_error = UnicodeAttribute(null=True)
            last_status_code = NumberAttribute(null=True)
            created_at = UnicodeAttribute(null=True)
            updated_at = UnicodeAttribute(null=True)
            delivered_at = UnicodeAttribute(null=True)
            ttl = NumberAttribute(null=True)

        self.Outbox, self.Subscription, self.Delivery = OutboxItem, SubscriptionItem, DeliveryItem


_MODELS: dict[tuple, WebhookModels] = {}


def webhook_models(models: Models) -> WebhookModels:
    meta = models.Account.Meta
    cache_key = (models.table_name, meta.region, getattr(meta, "host", None))
    if cache_key not in _MODELS:
        _MODELS[cache_key] = WebhookModels(*cache_key)
    return _MODELS[cache_key]


def outbox_items(models: Models, events: Sequence[OutboxEvent], *, overwrite: bool = False) -> list[TxItem]:
    """Tagged Puts of ``events`` for the caller's transaction. Tags are ``outbox:<event_id>``: unique even when two
    groups of events share one transaction (a deposit's credit carries deposit.confirmed and deposit.credited)."""
    O = webhook_models(models).Outbox
    items = []
    for e in events:
        item = O(outbox_pk(e.event_id), OUTBOX_SK, event_id=e.event_id, event_type=e.type, account_id=e.account_id,
                 created_at=e.created_at, data_json=canonical_json(dict(e.data)), ttl=expires_at_unix(e.created_at))
        items.append(put(item, None if overwrite else O.pk.does_not_exist(), f"outbox:{e.event_id}"))
    return items


def event_from_image(image: dict) -> OutboxEvent:
    """An outbox item in DynamoDB JSON (a stream record's NewImage, or GetItem's Item) -> the event. Strict:
    anything else raises ValueError."""
    def s(name: str) -> str:
        value = (image.get(name) or {}).get("S")
        if not isinstance(value, str) or not value:
            raise ValueError(f"outbox item lacks {name}")
        return value

    if not s("pk").startswith(OUTBOX_PREFIX):
        raise ValueError("not an outbox item")
    data = json.loads(s("data_json"))
    if not isinstance(data, dict):
        raise ValueError("outbox data is not an object")
    return OutboxEvent(s("event_id"), s("event_type"), s("account_id"), s("created_at"), data)


class DynamoWebhookStore:
    def __init__(self, client: Any, models: Models) -> None:
        self._client = client
        self._models = models
        self._table = models.table_name
        self._m = webhook_models(models)

    # ------------------------------------------------------------------ outbox
    def outbox_items(self, events: Sequence[OutboxEvent], *, overwrite: bool = False) -> list[TxItem]:
        return outbox_items(self._models, events, overwrite=overwrite)

    def transfer_outbox_items(self, transfer: Transfer) -> list[TxItem]:
        """The outbox items a ledger transfer announces (``events_for_transfer``), for the ledger's transaction:
        what ``RecordedLedger(..., outbox_items=store.transfer_outbox_items)`` appends."""
        return outbox_items(self._models, events_for_transfer(transfer))

    def get_event(self, event_id: str) -> OutboxEvent | None:
        raw = self._get(outbox_pk(event_id), OUTBOX_SK)
        return None if raw is None else event_from_image(raw)

    # ------------------------------------------------------------------ subscriptions
    def create_subscription(self, sub: Subscription) -> None:
        S = self._m.Subscription
        item = S(subscriptions_pk(sub.owner), f"SUB#{sub.subscription_id}", subscription_id=sub.subscription_id,
                 owner=sub.owner, url=sub.url, events=list(sub.events), secret=sub.secret,
                 created_at=sub.created_at)
        self._call("put_item", **item.get_save_kwargs_from_instance(condition=S.pk.does_not_exist()))

    def get_subscription(self, owner: str, subscription_id: str) -> Subscription | None:
        raw = self._get(subscriptions_pk(owner), f"SUB#{subscription_id}")
        return None if raw is None else self._subscription(raw)

    def list_subscriptions(self, owner: str) -> list[Subscription]:
        return [self._subscription(raw) for raw in self._query(subscriptions_pk(owner), "SUB#")]

    def subscriptions_for(self, account_id: str) -> list[Subscription]:
        """Everything that may receive this account's events: its own subscriptions and the admin's."""
        return self.list_subscriptions(account_id) + self.list_subscriptions(ADMIN_OWNER)

    def delete_subscription(self, owner: str, subscription_id: str) -> bool:
        """False when there was nothing to delete. Deliveries in flight find it gone and stop."""
        from botocore.exceptions import ClientError

        try:
            self._client.delete_item(TableName=self._table, Key=key(subscriptions_pk(owner), f"SUB#{subscription_id}"),
                                     ConditionExpression="attribute_exists(pk)")
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            _raise_translated(exc)

    def _subscription(self, raw: dict) -> Subscription:
        m = self._m.Subscription.from_raw_data(raw)
        return Subscription(m.subscription_id, m.owner, m.url, tuple(m.events), m.secret, m.created_at)

    # ------------------------------------------------------------------ deliveries
    def claim(self, subscription_id: str, event: OutboxEvent, *, now_unix: int, lease_s: int, at: str) -> Claim:
        """Create-or-update the delivery record and take a lease on it, unless it is DELIVERED or leased."""
        from botocore.exceptions import ClientError

        D = self._m.Delivery
        record = D(deliveries_pk(subscription_id), f"DELIVERY#{event.event_id}")
        actions = [
            D.subscription_id.set(subscription_id), D.event_id.set(event.event_id), D.event_type.set(event.type),
            D.status.set(D.status | PENDING), D.attempts.set((D.attempts | 0) + 1),
            D.lease_until.set(now_unix + lease_s), D.created_at.set(D.created_at | at), D.updated_at.set(at),
            D.ttl.set(expires_at_unix(event.created_at)),
        ]
        condition = D.pk.does_not_exist() | (
            (D.status != DELIVERED) & (D.lease_until.does_not_exist() | (D.lease_until < now_unix)))
        kwargs = record.get_update_kwargs_from_instance(actions=actions, condition=condition,
                                                        return_values_on_condition_failure="ALL_OLD",
                                                        add_version_condition=False)
        try:
            response = self._client.update_item(ReturnValues="ALL_NEW", **kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                _raise_translated(exc)
            old = exc.response.get("Item") or {}
            if old.get("status", {}).get("S") == DELIVERED:
                return Claim(claimed=False, delivered=True)
            lease = old.get("lease_until", {}).get("N")
            return Claim(claimed=False, busy_until=int(lease) if lease else now_unix + lease_s)
        return Claim(claimed=True, attempts=int(response["Attributes"]["attempts"]["N"]))

    def finish(self, subscription_id: str, event_id: str, *, status: str, at: str, error: str | None = None,
               status_code: int | None = None) -> None:
        """Record the attempt's outcome and release the lease. Never downgrades a DELIVERED record."""
        from botocore.exceptions import ClientError

        if status not in (DELIVERED, FAILED, DEAD):
            raise ValueError(f"cannot finish a delivery as {status}")
        D = self._m.Delivery
        record = D(deliveries_pk(subscription_id), f"DELIVERY#{event_id}")
        actions = [D.status.set(status), D.updated_at.set(at), D.lease_until.remove()]
        actions.append(D.last_status_code.set(status_code) if status_code is not None else D.last_status_code.remove())
        if status == DELIVERED:
            actions += [D.delivered_at.set(at), D.last_error.remove()]
        else:
            actions.append(D.last_error.set(short_error(error or "failed")))
        kwargs = record.get_update_kwargs_from_instance(actions=actions,
                                                        condition=D.pk.exists() & (D.status != DELIVERED),
                                                        add_version_condition=False)
        try:
            self._client.update_item(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                _raise_translated(exc)

    def reset_for_replay(self, subscription_id: str, event: OutboxEvent, at: str) -> None:
        """A replay: the delivery becomes PENDING again (even if it was DELIVERED: the client asked for it),
        keeping its attempt count; any lease is dropped."""
        D = self._m.Delivery
        record = D(deliveries_pk(subscription_id), f"DELIVERY#{event.event_id}")
        actions = [D.subscription_id.set(subscription_id), D.event_id.set(event.event_id),
                   D.event_type.set(event.type), D.status.set(PENDING), D.attempts.set(D.attempts | 0),
                   D.created_at.set(D.created_at | at), D.updated_at.set(at), D.lease_until.remove(),
                   D.ttl.set(expires_at_unix(event.created_at))]
        self._call("update_item", **record.get_update_kwargs_from_instance(actions=actions,
                                                                            add_version_condition=False))

    def get_delivery(self, subscription_id: str, event_id: str) -> DeliveryRecord | None:
        raw = self._get(deliveries_pk(subscription_id), f"DELIVERY#{event_id}")
        return None if raw is None else self._delivery(raw)

    def deliveries(self, subscription_id: str, *, status: str | None = None, limit: int = 50,
                   cursor: str | None = None) -> tuple[list[DeliveryRecord], str | None]:
        """One page of a subscription's delivery records (by event id), optionally only those in ``status``."""
        pk = deliveries_pk(subscription_id)
        request: dict[str, Any] = dict(
            TableName=self._table, KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
            ExpressionAttributeValues={":pk": {"S": pk}, ":p": {"S": "DELIVERY#"}}, ConsistentRead=True)
        if status is not None:
            request["FilterExpression"] = "#st = :st"
            request["ExpressionAttributeNames"] = {"#st": "status"}
            request["ExpressionAttributeValues"][":st"] = {"S": status}
        if cursor:
            request["ExclusiveStartKey"] = key(pk, decode_cursor(cursor, _delivery_sk))
        found: list[DeliveryRecord] = []
        while True:  # a filter may leave pages short: keep reading until the page is full or the partition ends
            request["Limit"] = limit - len(found)
            response = self._call("query", **request)
            found.extend(self._delivery(raw) for raw in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if last is None:
                return found, None
            if len(found) >= limit:
                return found, encode_cursor(last["sk"]["S"])
            request["ExclusiveStartKey"] = last

    def _delivery(self, raw: dict) -> DeliveryRecord:
        m = self._m.Delivery.from_raw_data(raw)
        return DeliveryRecord(
            subscription_id=m.subscription_id, event_id=m.event_id, event_type=m.event_type, status=m.status,
            attempts=int(m.attempts or 0), updated_at=m.updated_at or "", last_error=m.last_error,
            last_status_code=None if m.last_status_code is None else int(m.last_status_code),
            delivered_at=m.delivered_at)

    # ------------------------------------------------------------------ helpers
    def _get(self, pk: str, sk: str) -> dict | None:
        return self._call("get_item", TableName=self._table, Key=key(pk, sk), ConsistentRead=True).get("Item")

    def _query(self, pk: str, prefix: str) -> Iterable[dict]:
        request: dict[str, Any] = dict(
            TableName=self._table, KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
            ExpressionAttributeValues={":pk": {"S": pk}, ":p": {"S": prefix}}, ConsistentRead=True)
        while True:
            response = self._call("query", **request)
            yield from response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                return
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def _call(self, operation: str, **kwargs: Any) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, operation)(**kwargs)
        except ClientError as exc:
            _raise_translated(exc)
        except BotoCoreError as exc:
            raise errors.TransientError(f"DynamoDB unreachable: {type(exc).__name__}") from exc


def _raise_translated(exc: Exception) -> None:
    """Throttling and service errors become TransientError (503, retryable); anything else propagates."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    if code in TRANSIENT_CODES or code in ("ProvisionedThroughputExceededException", "ThrottlingException",
                                           "ServiceUnavailable", "InternalServerError"):
        raise errors.TransientError(f"DynamoDB is busy ({code}); retry") from exc
    if code == "ConditionalCheckFailedException":
        raise errors.Conflict("the webhook item changed meanwhile") from exc
    raise exc


def _delivery_sk(sk: str) -> None:
    if not sk.startswith("DELIVERY#evt_"):
        raise ValueError(sk)


__all__ = ["DynamoWebhookStore", "WebhookModels", "webhook_models", "outbox_items", "event_from_image",
           "outbox_pk", "OUTBOX_PREFIX"]
