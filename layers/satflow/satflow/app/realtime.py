"""Use cases: real-time updates over the WebSocket API ($connect, subscribe, $disconnect) and the fan-out of
committed outbox events to open connections.

Path of an event: the change's transaction writes OUTBOX#<event_id> -> the table's stream (outbox INSERTs, the
same filter as the webhook relay) -> ``fan_out`` (WebSocketFanoutFunction): copy the event to the account's replay
feed, then post it through ``@connections`` to every open connection of the account whose topics want it.

Why a reconnect replay misses nothing the fan-out did not push (for events created within REPLAY_OVERLAP_S of the
last one the client saw): ``fan_out`` writes the feed item BEFORE it reads the connections, and ``subscribe`` stores
the topic BEFORE it reads the feed, all with strongly consistent reads. For an event E and a subscription S, either
the fan-out read the connections after S was stored (E is pushed live), or before, and then E's feed item was
written before S was stored, so the replay that follows S reads it. Both can happen: the client drops duplicates
by id.

Delivery is at least once per (event, open connection) in normal operation and best effort under failure: a
connection that is throttled or unreachable twice in a row misses the push (logged) instead of holding back the
stream shard for every other account; the client recovers it with a replay. A gone connection (410) is deleted.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

from satflow.domain import errors
from satflow.domain.accounts import Scope, looks_like_api_key
from satflow.domain.realtime import (
    CONNECTION_TTL_S,
    ConnectionGone,
    MAX_REPLAY_EVENTS,
    MAX_TOPICS_PER_CONNECTION,
    connect_credential,
    control_message,
    message_body,
    parse_subscribe,
    replay_start,
    wants,
)
from satflow.domain.webhooks import OutboxEvent

from .accounts import authenticate, require_scope
from .ports import Services

log = logging.getLogger(__name__)


def _store(svc: Services) -> Any:
    if svc.realtime is None or svc.connections is None:
        raise RuntimeError("the real-time store and the @connections API are not wired")
    return svc.realtime


# ================================================================================================ $connect
@dataclass(frozen=True)
class Connected:
    account_id: str
    subprotocol: str | None  # to echo in Sec-WebSocket-Protocol (None: the client offered none)


def connect(svc: Services, connection_id: str, headers: Mapping[str, str] | None,
            query: Mapping[str, str] | None) -> Connected:
    """Authenticates the key (an account key with the read scope; the admin key is refused: it is no account)
    and stores the connection. Raises Unauthorized / Forbidden / ValidationError (the connection is refused)."""
    credential = connect_credential(headers, query)
    if not credential.key:
        raise errors.Unauthorized("connect with an API key: Authorization: Bearer, Sec-WebSocket-Protocol "
                                  "key.<key> (with satflow.v1), or ?key=")
    if not looks_like_api_key(credential.key):
        # Refused before any lookup: the admin key is no account, and this function never reads its secret.
        raise errors.Unauthorized("the WebSocket API takes an account API key (sk_...) with the read scope")
    principal = authenticate(svc, f"Bearer {credential.key}")
    account_id = require_scope(principal, Scope.READ)
    _store(svc).add_connection(connection_id, account_id, connected_at=svc.clock(),
                               ttl=svc.unix_clock() + CONNECTION_TTL_S)
    return Connected(account_id, credential.subprotocol)


def disconnect(svc: Services, connection_id: str) -> bool:
    return _store(svc).remove_connection(connection_id)


# ================================================================================================ subscribe
@dataclass(frozen=True)
class Subscribed:
    topic: str
    replay: str  # none | complete | truncated | unavailable | gone
    replayed: int = 0


def subscribe(svc: Services, connection_id: str, body: object) -> Subscribed:
    """Adds a topic to the connection; with ``after``, first posts the events after that id (bounded replay),
    then a ``subscribed`` message summarising it. A bad request is answered with an ``error`` message."""
    store = _store(svc)
    try:
        request = parse_subscribe(body)
    except errors.ValidationError as exc:
        _post_or_forget(svc, connection_id, None, control_message("error", code=exc.code, message=exc.message))
        raise
    account_id = store.connection_account(connection_id)
    if account_id is None:  # expired, or stored by a previous deployment: make the client reconnect
        svc.connections.close(connection_id)
        return Subscribed(request.topic, "gone")
    added = store.add_topic(account_id, connection_id, request.topic, MAX_TOPICS_PER_CONNECTION)
    if added == "gone":
        svc.connections.close(connection_id)
        return Subscribed(request.topic, "gone")
    if added == "full":
        exc = errors.ValidationError(f"at most {MAX_TOPICS_PER_CONNECTION} subscriptions per connection",
                                     field="subscribe")
        _post_or_forget(svc, connection_id, account_id,
                        control_message("error", code=exc.code, message=exc.message))
        raise exc

    replay, replayed = "none", 0
    if request.after is not None:
        anchor = svc.webhooks.get_event(request.after) if svc.webhooks is not None else None
        if anchor is None or anchor.account_id != account_id:
            replay = "unavailable"  # unknown, expired or another account's: the client resyncs from the API
        else:
            events, more = store.feed_from(account_id, replay_start(anchor.created_at), MAX_REPLAY_EVENTS)
            topics = frozenset({request.topic})
            for event in events:
                if event.event_id == anchor.event_id or not wants(topics, event):
                    continue
                if not _post_or_forget(svc, connection_id, account_id, message_body(event)):
                    return Subscribed(request.topic, "gone", replayed)
                replayed += 1
            replay = "truncated" if more else "complete"
    summary = {"topic": request.topic, "replay": replay, "replayed": replayed}
    if not _post_or_forget(svc, connection_id, account_id, control_message("subscribed", **summary)):
        return Subscribed(request.topic, "gone", replayed)
    return Subscribed(request.topic, replay, replayed)


def _post_or_forget(svc: Services, connection_id: str, account_id: str | None, data: bytes) -> bool:
    """Posts; a gone connection is deleted and False returned."""
    try:
        svc.connections.post(connection_id, data)
        return True
    except ConnectionGone:
        svc.realtime.remove_connection(connection_id, account_id)
        return False


# ================================================================================================ fan-out
@dataclass
class FanOutResult:
    sent: int = 0
    gone: int = 0
    failed: int = 0


def fan_out(svc: Services, event: OutboxEvent) -> FanOutResult:
    """One committed outbox event -> the account's replay feed, then every open connection that wants it. A feed
    write that fails raises (the stream record is retried; nothing was pushed yet)."""
    store = _store(svc)
    store.append_feed(event)
    result = FanOutResult()
    body = None
    for connection_id, topics in store.connections_for(event.account_id, svc.unix_clock()):
        if not wants(topics, event):
            continue
        body = body or message_body(event)
        for attempt in (1, 2):
            try:
                svc.connections.post(connection_id, body)
                result.sent += 1
                break
            except ConnectionGone:
                store.remove_connection(connection_id, event.account_id)
                result.gone += 1
                break
            except errors.TransientError as exc:
                if attempt == 2:
                    result.failed += 1
                    log.warning("event %s not pushed to connection %s: %s", event.event_id, connection_id, exc)
    return result
