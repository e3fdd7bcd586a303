"""WebSocket connections and the per-account replay feed on DynamoDB.

Items (pk / sk):
  WSCONN#<connection_id> / WSCONN           the connection's owner (subscribe and $disconnect know only the id). TTL.
  WSACCT#<account_id>    / CONN#<conn_id>   the account's open connection and its topics (a string set): what the
                                            fan-out reads with one Query per event. TTL.
  FEED#<account_id>      / <created_at>#<event_id>
                                            one outbox event, copied by the fan-out BEFORE it pushes the event, so
                                            a replay that runs after a subscription was stored sees every event the
                                            fan-out could not have pushed to it (see app/realtime.py). TTL.

The two connection items are written and deleted together (one TransactWriteItems). No item here is written by
every operation: each connection and each event has its own items; an account's partition grows with its own
traffic only.
"""
from __future__ import annotations

import json
from typing import Any

from satflow.domain import errors
from satflow.domain.realtime import FEED_TTL_DAYS, feed_sort_key
from satflow.domain.webhooks import OutboxEvent, canonical_json, expires_at_unix

from .models import key
from .transaction import TRANSIENT_CODES

CONNECTION_SK = "WSCONN"


def connection_pk(connection_id: str) -> str:
    return f"WSCONN#{connection_id}"


def account_connections_pk(account_id: str) -> str:
    return f"WSACCT#{account_id}"


def feed_pk(account_id: str) -> str:
    return f"FEED#{account_id}"


class DynamoRealtimeStore:
    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name

    # ------------------------------------------------------------------ connections
    def add_connection(self, connection_id: str, account_id: str, *, connected_at: str, ttl: int) -> None:
        """Both items in one transaction. A plain Put: the same $connect stored twice is the same connection."""
        common = {"ttl": {"N": str(ttl)}, "connected_at": {"S": connected_at}}
        self._call("transact_write_items", TransactItems=[
            {"Put": {"TableName": self._table, "Item": {
                **key(connection_pk(connection_id), CONNECTION_SK), "account_id": {"S": account_id}, **common}}},
            {"Put": {"TableName": self._table, "Item": {
                **key(account_connections_pk(account_id), f"CONN#{connection_id}"),
                "connection_id": {"S": connection_id}, **common}}},
        ])

    def connection_account(self, connection_id: str) -> str | None:
        item = self._call("get_item", TableName=self._table, Key=key(connection_pk(connection_id), CONNECTION_SK),
                          ConsistentRead=True).get("Item")
        return None if item is None else item["account_id"]["S"]

    def add_topic(self, account_id: str, connection_id: str, topic: str, max_topics: int) -> str:
        """Adds ``topic`` to the connection's set: ``added`` (or already there), ``gone`` (no such connection:
        it disconnected meanwhile) or ``full`` (``max_topics`` already)."""
        from botocore.exceptions import ClientError

        try:
            self._client.update_item(
                TableName=self._table, Key=key(account_connections_pk(account_id), f"CONN#{connection_id}"),
                UpdateExpression="ADD topics :t",
                ConditionExpression=("attribute_exists(pk) AND (attribute_not_exists(topics) OR size(topics) < :max"
                                     " OR contains(topics, :topic))"),
                ExpressionAttributeValues={":t": {"SS": [topic]}, ":topic": {"S": topic},
                                           ":max": {"N": str(max_topics)}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD")
            return "added"
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                _raise_translated(exc)
            return "full" if exc.response.get("Item") else "gone"

    def remove_connection(self, connection_id: str, account_id: str | None = None) -> bool:
        """Deletes both items (idempotent). Without ``account_id`` it is read first. False if nothing was there."""
        if account_id is None:
            account_id = self.connection_account(connection_id)
            if account_id is None:
                return False
        self._call("transact_write_items", TransactItems=[
            {"Delete": {"TableName": self._table, "Key": key(connection_pk(connection_id), CONNECTION_SK)}},
            {"Delete": {"TableName": self._table,
                        "Key": key(account_connections_pk(account_id), f"CONN#{connection_id}")}},
        ])
        return True

    def connections_for(self, account_id: str, now_unix: int) -> list[tuple[str, frozenset[str]]]:
        """The account's connections that have not expired: (connection id, topics). TTL deletion lags (up to
        days), so expiry is checked here too."""
        request: dict[str, Any] = dict(
            TableName=self._table, KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
            ExpressionAttributeValues={":pk": {"S": account_connections_pk(account_id)}, ":p": {"S": "CONN#"}},
            ConsistentRead=True)
        found = []
        while True:
            response = self._call("query", **request)
            for item in response.get("Items", []):
                if int(item.get("ttl", {}).get("N", "0")) > now_unix:
                    found.append((item["connection_id"]["S"], frozenset(item.get("topics", {}).get("SS", []))))
            if "LastEvaluatedKey" not in response:
                return found
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    # ------------------------------------------------------------------ replay feed
    def append_feed(self, event: OutboxEvent) -> None:
        """Idempotent: the same event always lands on the same item (its position is its created_at and id)."""
        self._call("put_item", TableName=self._table, Item={
            **key(feed_pk(event.account_id), feed_sort_key(event)),
            "event_id": {"S": event.event_id}, "event_type": {"S": event.type},
            "account_id": {"S": event.account_id}, "created_at": {"S": event.created_at},
            "data_json": {"S": canonical_json(dict(event.data))},
            "ttl": {"N": str(expires_at_unix(event.created_at, FEED_TTL_DAYS))}})

    def feed_from(self, account_id: str, start: str, limit: int) -> tuple[list[OutboxEvent], bool]:
        """Up to ``limit`` events at or after feed position ``start``, oldest first, and whether more follow."""
        response = self._call(
            "query", TableName=self._table, KeyConditionExpression="pk = :pk AND sk >= :start",
            ExpressionAttributeValues={":pk": {"S": feed_pk(account_id)}, ":start": {"S": start}},
            ConsistentRead=True, Limit=limit + 1)
        items = response.get("Items", [])
        events = [OutboxEvent(i["event_id"]["S"], i["event_type"]["S"], i["account_id"]["S"], i["created_at"]["S"],
                              json.loads(i["data_json"]["S"])) for i in items[:limit]]
        return events, len(items) > limit

    # ------------------------------------------------------------------ helpers
    def _call(self, operation: str, **kwargs: Any) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, operation)(**kwargs)
        except ClientError as exc:
            _raise_translated(exc)
            raise  # pragma: no cover - _raise_translated always raises
        except BotoCoreError as exc:
            raise errors.TransientError(f"DynamoDB unreachable: {type(exc).__name__}") from exc


def _raise_translated(exc: Exception) -> None:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    if code in TRANSIENT_CODES or code in ("ProvisionedThroughputExceededException", "ThrottlingException",
                                           "ServiceUnavailable", "InternalServerError",
                                           "TransactionCanceledException"):
        raise errors.TransientError(f"DynamoDB is busy ({code}); retry") from exc
    raise exc


__all__ = ["DynamoRealtimeStore", "connection_pk", "account_connections_pk", "feed_pk"]
