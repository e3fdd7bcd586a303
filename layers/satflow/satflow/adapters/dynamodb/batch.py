"""Reading many items in one round trip: each store describes a read (its key and how to parse the item) as an
:class:`ItemRead`; :func:`read_many` fetches them all with one consistent ``BatchGetItem``.

This is how a request reads what it needs once (issue 13): a send's account, limit window, stored assessment,
destination history and balance, plus the route's own items (the payment or payout under its idempotency key),
come back from one call instead of one GetItem each. An :class:`ItemRead` can also be run alone (``get``): the
same read, one GetItem, for callers that need just it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Generic, Sequence, TypeVar

from satflow.domain.errors import TransientError

from .models import key

T = TypeVar("T")
MAX_KEYS = 100  # BatchGetItem's limit per call
_UNPROCESSED_ATTEMPTS = 8


@dataclass(frozen=True)
class ItemRead(Generic[T]):
    """One item to read: ``parse`` receives the raw item, or None when it does not exist."""

    client: Any
    table: str
    pk: str
    sk: str
    parse: Callable[[dict | None], T]

    def get(self) -> T:
        raw = self.client.get_item(TableName=self.table, Key=key(self.pk, self.sk), ConsistentRead=True).get("Item")
        return self.parse(raw)


def read_many(reads: Sequence[ItemRead[Any]]) -> list[Any]:
    """The parsed result of each read, in order: one strongly consistent BatchGetItem per client and 100 keys
    (a key named twice is fetched once). Unprocessed keys (throttling) are fetched again with a short backoff."""
    if not reads:
        return []
    raw: dict[tuple[str, str, str], dict] = {}
    by_client: dict[int, tuple[Any, dict[str, list[tuple[str, str]]]]] = {}
    for r in reads:
        client, tables = by_client.setdefault(id(r.client), (r.client, {}))
        wanted = tables.setdefault(r.table, [])
        if (r.pk, r.sk) not in wanted:
            wanted.append((r.pk, r.sk))
    for client, tables in by_client.values():
        for table, keys in tables.items():
            for start in range(0, len(keys), MAX_KEYS):
                _fetch(client, table, keys[start:start + MAX_KEYS], raw)
    return [r.parse(raw.get((r.table, r.pk, r.sk))) for r in reads]


def _fetch(client: Any, table: str, keys: list[tuple[str, str]], out: dict) -> None:
    request: dict | None = {table: {"Keys": [key(pk, sk) for pk, sk in keys], "ConsistentRead": True}}
    for attempt in range(_UNPROCESSED_ATTEMPTS):
        response = client.batch_get_item(RequestItems=request)
        for item in response.get("Responses", {}).get(table, []):
            out[(table, item["pk"]["S"], item["sk"]["S"])] = item
        request = response.get("UnprocessedKeys") or None
        if not request:
            return
        time.sleep(0.005 * 2 ** attempt)
    raise TransientError(f"BatchGetItem left keys unprocessed after {_UNPROCESSED_ATTEMPTS} attempts")


__all__ = ["ItemRead", "read_many", "MAX_KEYS"]
