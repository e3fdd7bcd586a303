"""Real-time updates over WebSocket (pure): how a connection authenticates, what a ``subscribe`` asks for, which
connections an outbox event reaches, and the bounds of a reconnect replay.

The message a client receives for an event is the webhook event's envelope (``OutboxEvent.payload()``: id, type,
created_at, account_id, data), so one client-side de-duplication on ``id`` covers webhooks, live pushes and
replays. Control messages carry a ``type`` without a dot (``subscribed``, ``error``), which no event type has.

Topics: a connection subscribes to ``*`` (every event of its account), ``invoice:<payment_hash>`` or
``payment:<payment_id>``. An event belongs to ``*`` and to the invoice/payment its data names.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Mapping

from .errors import ValidationError
from .webhooks import INVOICE_SETTLED, PAYMENT_FAILED, PAYMENT_SUCCEEDED, OutboxEvent

TOPIC_ALL = "*"
MAX_TOPICS_PER_CONNECTION = 20
# API Gateway closes a WebSocket connection after 2 hours whatever happens; $disconnect is best effort, so the
# connection items expire by TTL a little after the longest possible connection.
CONNECTION_TTL_S = 2 * 3600 + 600
# A replay returns at most this many events; past it the client resynchronises from the REST API (or asks again
# after the last replayed id).
MAX_REPLAY_EVENTS = 100
# Events created up to this long before the last seen one are replayed too (the client drops duplicates by id):
# an event's created_at is stamped before its transaction commits and the fan-out runs in parallel per stream
# shard, so "created before the last seen event" does not mean "pushed before it".
REPLAY_OVERLAP_S = 60
FEED_TTL_DAYS = 7  # the per-account replay feed; older gaps resync from the REST API

SUBPROTOCOL = "satflow.v1"
KEY_SUBPROTOCOL_PREFIX = "key."
KEY_QUERY_PARAMETER = "key"

_EVENT_ID_RE = re.compile(r"^evt_[a-z2-7]{26}$")
_PAYMENT_ID_RE = re.compile(r"^[a-z]{2,8}_[a-z2-7]{26}$")
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


class ConnectionGone(Exception):
    """The WebSocket connection is closed (@connections answered 410): its records should be deleted.
    Internal: never shown to API clients."""


# --- $connect ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConnectCredential:
    """The API key a client connected with, and the subprotocol to answer with (None when it offered none).
    ``repr`` hides the key: the value may end up in an exception or a debug print, never in a log."""

    key: str | None
    subprotocol: str | None

    def __repr__(self) -> str:
        return f"ConnectCredential(key={'<set>' if self.key else None}, subprotocol={self.subprotocol!r})"


def connect_credential(headers: Mapping[str, str] | None, query: Mapping[str, str] | None) -> ConnectCredential:
    """The key from, in this order: ``Authorization: Bearer <key>`` (servers), ``Sec-WebSocket-Protocol:
    satflow.v1, key.<key>`` (browsers cannot set headers on a WebSocket), or ``?key=<key>`` (last resort: query
    strings end up in more logs). With the subprotocol form the client must also offer ``satflow.v1``, which the
    server echoes: echoing the key's entry would send the key back in a response header."""
    lowered = {str(k).lower(): str(v) for k, v in (headers or {}).items()}
    offered = [p.strip() for p in lowered.get("sec-websocket-protocol", "").split(",") if p.strip()]
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
    authorization = lowered.get("authorization", "")
    if authorization.startswith("Bearer "):
        return ConnectCredential(authorization[len("Bearer "):].strip() or None, subprotocol)
    keyed = [p[len(KEY_SUBPROTOCOL_PREFIX):] for p in offered if p.startswith(KEY_SUBPROTOCOL_PREFIX)]
    if keyed:
        if subprotocol is None:
            raise ValidationError(f"offer the subprotocol {SUBPROTOCOL} together with key.<api key>",
                                  field="Sec-WebSocket-Protocol")
        return ConnectCredential(keyed[0] or None, subprotocol)
    key = (query or {}).get(KEY_QUERY_PARAMETER)
    return ConnectCredential(key or None, subprotocol)


# --- subscribe ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SubscribeRequest:
    topic: str
    after: str | None  # replay the account's events after this event id (the last one the client saw)


def parse_subscribe(body: object) -> SubscribeRequest:
    """``{"action": "subscribe"}`` (every event of the account), ``..., "invoice": "<payment_hash>"`` or
    ``..., "payment": "<payment_id>"``, optionally ``"after": "evt_..."``."""
    if isinstance(body, (str, bytes)):
        try:
            body = json.loads(body)
        except ValueError:
            raise ValidationError("the message must be a JSON object", field="body") from None
    if not isinstance(body, dict):
        raise ValidationError("the message must be a JSON object", field="body")
    unknown = sorted(set(body) - {"action", "invoice", "payment", "after"})
    if unknown:
        raise ValidationError(f"unknown fields {unknown}", field=unknown[0])
    invoice, payment, after = body.get("invoice"), body.get("payment"), body.get("after")
    if invoice is not None and payment is not None:
        raise ValidationError("subscribe to one invoice or one payment at a time", field="invoice")
    if invoice is not None:
        if not isinstance(invoice, str) or not _HASH_RE.match(invoice.lower()):
            raise ValidationError("invoice must be the invoice's payment_hash (64 hex characters)", field="invoice")
        topic = f"invoice:{invoice.lower()}"
    elif payment is not None:
        if not isinstance(payment, str) or not _PAYMENT_ID_RE.match(payment):
            raise ValidationError("payment must be a payment id", field="payment")
        topic = f"payment:{payment}"
    else:
        topic = TOPIC_ALL
    if after is not None and (not isinstance(after, str) or not _EVENT_ID_RE.match(after)):
        raise ValidationError("after must be an event id (evt_ followed by 26 characters)", field="after")
    return SubscribeRequest(topic, after)


def event_topics(event: OutboxEvent) -> frozenset[str]:
    """The topics an event is published on."""
    topics = {TOPIC_ALL}
    payment_hash = event.data.get("payment_hash")
    if event.type == INVOICE_SETTLED and isinstance(payment_hash, str):
        topics.add(f"invoice:{payment_hash}")
    payment_id = event.data.get("payment_id")
    if event.type in (PAYMENT_SUCCEEDED, PAYMENT_FAILED) and isinstance(payment_id, str):
        topics.add(f"payment:{payment_id}")
    return frozenset(topics)


def wants(topics: frozenset[str] | set[str], event: OutboxEvent) -> bool:
    return bool(set(topics) & event_topics(event))


# --- replay -------------------------------------------------------------------------------------------------------
def feed_sort_key(event: OutboxEvent) -> str:
    """Position in the account's replay feed: creation time, then id (unique, so two events never collide)."""
    return f"{event.created_at}#{event.event_id}"


def replay_start(anchor_created_at: str, overlap_s: int = REPLAY_OVERLAP_S) -> str:
    """The feed position a replay after an event created at ``anchor_created_at`` starts from."""
    when = _parse_iso(anchor_created_at) - timedelta(seconds=overlap_s)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse_iso(text: str) -> datetime:
    base, _, rest = text.partition(".")
    when = datetime.strptime(base[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    digits = "".join(c for c in rest if c.isdigit())[:6]
    return when + timedelta(microseconds=int(digits.ljust(6, "0")) if digits else 0)


def message_body(event: OutboxEvent) -> bytes:
    """The WebSocket message for an event: the webhook body's envelope, compact JSON."""
    return json.dumps(event.payload(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def control_message(kind: str, **fields: object) -> bytes:
    return json.dumps({"type": kind, **fields}, sort_keys=True, separators=(",", ":")).encode()
