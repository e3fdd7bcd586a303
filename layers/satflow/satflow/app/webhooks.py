"""Use cases: webhook subscriptions (the API), the relay (outbox stream -> delivery queue), the delivery of one
message (signed POST, retries, dead letters) and replays.

Path of an event: the change's transaction writes OUTBOX#<event_id> -> the table's stream (INSERTs of outbox items
only, filtered by the event source mapping) -> ``relay`` (WebhookRelayFunction): one SQS message per subscription
that wants the event -> ``deliver`` (WebhookDeliveryFunction): claim the delivery record, POST, record the outcome.
A failed attempt comes back after ``backoff_s`` (ChangeMessageVisibility); the MAX_ATTEMPTS-th failure marks the
record DEAD and SQS moves the message to the dead-letter queue; ``replay`` sends dead (or chosen) events again.

Who gets what: a subscription made with an account key gets that account's events; one made with the admin key
gets every account's events (an operator's integration). Events are delivered at least once and in no particular
order: clients deduplicate on the event id and read the current state from the API when order matters.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from satflow.domain import errors
from satflow.domain.accounts import Principal, Scope
from satflow.domain.webhooks import (
    ADMIN_OWNER,
    DEAD,
    DELIVERED,
    FAILED,
    MAX_ATTEMPTS,
    MAX_REPLAY_EVENTS,
    MAX_SUBSCRIPTIONS_PER_OWNER,
    DeliveryRecord,
    OutboxEvent,
    Subscription,
    WebhookTransportError,
    backoff_s,
    check_addresses,
    event_body,
    new_secret,
    new_subscription_id,
    parse_target,
    sign,
    validate_event_ids,
    validate_event_types,
    validate_subscription_id,
)

from .accounts import require_scope
from .ports import Services

log = logging.getLogger(__name__)

MESSAGE_VERSION = 1
LEASE_S = 60  # a claimed delivery is exclusive this long (the delivery function's timeout)
BUSY_RETRY_S = 30


# ================================================================================================ the outbox
def outbox_items(svc: Services, events: Sequence[OutboxEvent], *, overwrite: bool = False) -> list:
    """Transaction items writing ``events`` to the outbox ([] when the store is not wired, or no events)."""
    if not events or svc.webhooks is None:
        return []
    return svc.webhooks.outbox_items(events, overwrite=overwrite)


# ================================================================================================ subscriptions
def _owner(principal: Principal) -> str:
    if principal.is_admin:
        return ADMIN_OWNER
    return require_scope(principal, Scope.READ)


def _manager(principal: Principal) -> str:
    """Creating, deleting and replaying webhooks changes what leaves the system: a read-only key (handed to a
    dashboard) may look at subscriptions but not manage them; it takes read plus receive or send."""
    owner = _owner(principal)
    if not principal.is_admin and not ({Scope.RECEIVE, Scope.SEND} & principal.scopes):
        raise errors.Forbidden("managing webhooks needs a key with the 'receive' or 'send' scope besides 'read'")
    return owner


def _vetted_target(svc: Services, url: object):
    """The URL's syntax, then every address its host resolves to (a name that does not resolve is refused)."""
    target = parse_target(url, allow_private=svc.webhook_allow_private)
    try:
        addresses = svc.webhook_http.resolve(target.host, target.port)
    except WebhookTransportError as exc:
        raise errors.WebhookUrlRejected(f"url host {target.host} does not resolve") from exc
    return target, check_addresses(target.host, addresses, allow_private=svc.webhook_allow_private)


def create_webhook(svc: Services, principal: Principal, url: object, events: object) -> Subscription:
    """A new subscription; its secret is in the result this once (GET never shows it)."""
    owner = _manager(principal)
    types = validate_event_types(events)
    target, _ = _vetted_target(svc, url)
    if len(svc.webhooks.list_subscriptions(owner)) >= MAX_SUBSCRIPTIONS_PER_OWNER:
        raise errors.TooManyWebhooks(f"at most {MAX_SUBSCRIPTIONS_PER_OWNER} webhooks; delete one first")
    sub = Subscription(new_subscription_id(), owner, target.url, types, new_secret(), svc.clock())
    svc.webhooks.create_subscription(sub)
    return sub


def list_webhooks(svc: Services, principal: Principal) -> list[Subscription]:
    return svc.webhooks.list_subscriptions(_owner(principal))


def get_webhook(svc: Services, principal: Principal, webhook_id: object) -> Subscription:
    owner = _owner(principal)
    sub = svc.webhooks.get_subscription(owner, validate_subscription_id(webhook_id))
    if sub is None:
        raise errors.WebhookNotFound(f"no webhook {webhook_id}")
    return sub


def delete_webhook(svc: Services, principal: Principal, webhook_id: object) -> None:
    owner = _manager(principal)
    if not svc.webhooks.delete_subscription(owner, validate_subscription_id(webhook_id)):
        raise errors.WebhookNotFound(f"no webhook {webhook_id}")


def list_deliveries(svc: Services, principal: Principal, webhook_id: object, status: object = None,
                    limit: object = None, cursor: object = None) -> tuple[list[DeliveryRecord], str | None]:
    sub = get_webhook(svc, principal, webhook_id)
    if status is not None and status not in (FAILED, DELIVERED, DEAD, "PENDING"):
        raise errors.ValidationError("status must be PENDING, FAILED, DELIVERED or DEAD", field="status")
    limit = 50 if limit is None else limit
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
        raise errors.ValidationError("limit must be an integer from 1 to 100", field="limit")
    if cursor is not None and (not isinstance(cursor, str) or not cursor or len(cursor) > 1024):
        raise errors.ValidationError("cursor is not valid", field="cursor")
    return svc.webhooks.deliveries(sub.subscription_id, status=status, limit=limit, cursor=cursor)


def subscription_view(sub: Subscription, *, with_secret: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {"id": sub.subscription_id, "url": sub.url, "events": list(sub.events),
                            "created_at": sub.created_at}
    if with_secret:
        view["secret"] = sub.secret
    return view


# ================================================================================================ relay
def delivery_message(sub: Subscription, event: OutboxEvent) -> dict[str, Any]:
    return {"v": MESSAGE_VERSION, "subscription_id": sub.subscription_id, "owner": sub.owner,
            "event": event.payload()}


def relay(svc: Services, events: Iterable[OutboxEvent]) -> int:
    """Fan ``events`` out to the delivery queue: one message per subscription that wants each. Returns how many
    were sent. Safe to run twice (a duplicated stream record): deliveries are deduplicated by their records."""
    cache: dict[str, list[Subscription]] = {}
    messages = []
    for event in events:
        if event.account_id not in cache:
            cache[event.account_id] = svc.webhooks.subscriptions_for(event.account_id)
        messages.extend(delivery_message(s, event) for s in cache[event.account_id] if s.wants(event))
    if messages:
        svc.webhook_queue.send(messages)
    return len(messages)


# ================================================================================================ delivery
@dataclass(frozen=True)
class DeliveryOutcome:
    """``delivered`` | ``already_delivered`` | ``subscription_gone`` | ``busy`` | ``retry`` | ``dead``.
    ``retry_in_s`` is set when the message must come back (busy, retry, dead: 0, so SQS dead-letters it at once)."""

    outcome: str
    retry_in_s: int | None = None
    attempt: int = 0
    error: str | None = None
    status_code: int | None = None

    @property
    def done(self) -> bool:
        return self.retry_in_s is None


def parse_message(message: object) -> tuple[str, str, OutboxEvent]:
    """(subscription id, owner, event) of a delivery message. Malformed raises ValueError (the record fails and,
    after the last attempt, rests in the dead-letter queue)."""
    if not isinstance(message, dict) or message.get("v") != MESSAGE_VERSION:
        raise ValueError("not a webhook delivery message")
    sub_id, owner, raw = message.get("subscription_id"), message.get("owner"), message.get("event")
    if not isinstance(sub_id, str) or not isinstance(owner, str) or not isinstance(raw, dict):
        raise ValueError("webhook delivery message lacks subscription_id, owner or event")
    fields = [raw.get(k) for k in ("id", "type", "account_id", "created_at")]
    if not all(isinstance(f, str) and f for f in fields) or not isinstance(raw.get("data"), dict):
        raise ValueError("webhook delivery message has a malformed event")
    return sub_id, owner, OutboxEvent(fields[0], fields[1], fields[2], fields[3], raw["data"])


def deliver(svc: Services, message: object, receive_count: int) -> DeliveryOutcome:
    """One delivery attempt of one message (``receive_count``: SQS's ApproximateReceiveCount, 1-based)."""
    sub_id, owner, event = parse_message(message)
    sub = svc.webhooks.get_subscription(owner, sub_id)
    if sub is None or not sub.wants(event):
        return DeliveryOutcome("subscription_gone")
    now = svc.unix_clock()
    claim = svc.webhooks.claim(sub_id, event, now_unix=now, lease_s=LEASE_S, at=svc.clock())
    if claim.delivered:
        return DeliveryOutcome("already_delivered")
    if not claim.claimed:
        return DeliveryOutcome("busy", retry_in_s=max(BUSY_RETRY_S, (claim.busy_until or now) - now))
    status_code: int | None = None
    try:
        # Vetted again at every attempt: what the name resolves to may have changed since the subscription.
        target, addresses = _vetted_target(svc, sub.url)
        body = event_body(event)
        timestamp = svc.unix_clock()
        headers = {"Satflow-Event-Id": event.event_id, "Satflow-Event-Type": event.type,
                   "Satflow-Timestamp": str(timestamp), "Satflow-Signature": sign(sub.secret, timestamp, body)}
        status_code = svc.webhook_http.post(target, addresses[0], headers, body)
        error = None if 200 <= status_code < 300 else f"HTTP {status_code}"
    except errors.WebhookUrlRejected as exc:
        error = exc.message
    except WebhookTransportError as exc:
        error = str(exc)
    if error is None:
        svc.webhooks.finish(sub_id, event.event_id, status=DELIVERED, at=svc.clock(), status_code=status_code)
        return DeliveryOutcome("delivered", attempt=claim.attempts, status_code=status_code)
    if receive_count >= MAX_ATTEMPTS:
        svc.webhooks.finish(sub_id, event.event_id, status=DEAD, at=svc.clock(), error=error,
                            status_code=status_code)
        log.warning("webhook %s event %s dead after %d attempts: %s", sub_id, event.event_id, receive_count, error)
        return DeliveryOutcome("dead", retry_in_s=0, attempt=claim.attempts, error=error, status_code=status_code)
    svc.webhooks.finish(sub_id, event.event_id, status=FAILED, at=svc.clock(), error=error, status_code=status_code)
    delay = backoff_s(receive_count, base=svc.webhook_retry_base_s)
    return DeliveryOutcome("retry", retry_in_s=delay, attempt=claim.attempts, error=error, status_code=status_code)


# ================================================================================================ replay
def replay(svc: Services, principal: Principal, webhook_id: object, event_ids: object = None) -> list[str]:
    """Send events to this subscription again: the given ones, or (none given) every DEAD delivery (up to
    MAX_REPLAY_EVENTS per call). All-or-nothing: an event that is unknown, expired or not this subscription's is
    a 404 and nothing is sent. Returns the replayed event ids."""
    _manager(principal)
    sub = get_webhook(svc, principal, webhook_id)
    if event_ids is None:
        dead, _ = svc.webhooks.deliveries(sub.subscription_id, status=DEAD, limit=MAX_REPLAY_EVENTS)
        ids: tuple[str, ...] = tuple(d.event_id for d in dead)
    else:
        ids = validate_event_ids(event_ids)
    events = []
    for event_id in ids:
        event = svc.webhooks.get_event(event_id)
        if event is None or not sub.wants(event):
            raise errors.WebhookEventNotFound(
                f"event {event_id} is unknown, expired or not one this webhook receives; nothing was replayed",
                event_id=event_id)
        events.append(event)
    at = svc.clock()
    for event in events:
        svc.webhooks.reset_for_replay(sub.subscription_id, event, at)
    if events:
        svc.webhook_queue.send([delivery_message(sub, e) for e in events])
    return [e.event_id for e in events]
