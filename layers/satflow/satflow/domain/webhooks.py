"""Webhooks (pure): which business events a ledger transfer or a state transition produces (the transactional
outbox), the payload and its signature, subscription rules, target URL rules, and the retry schedule.

An event is written as an outbox item in the SAME DynamoDB transaction as the change it announces, so a webhook
is sent if and only if the change committed. Its id is derived from what produced it (the transfer id, or the
entity and its transition), so a retried transaction yields the same id: clients deduplicate on ``id``.

Signature (``Satflow-Signature: v1=<hex>``): HMAC-SHA256 keyed with the subscription secret (the whole
``whsec_...`` string, UTF-8) over ``f"{timestamp}.{body}"``, where ``timestamp`` is the ``Satflow-Timestamp``
header (unix seconds at sending time) and ``body`` the raw request body bytes. docs/webhooks.md has the recipe.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Iterable, Mapping
from urllib.parse import urlsplit

from .errors import ValidationError, WebhookUrlRejected
from .ids import derive_id, new_id
from .ledger import Transfer, TransferKind

if TYPE_CHECKING:  # the API's cold start does not need the on-chain modules
    from .deposits import ConfirmationStep, Deposit

# --- event types ----------------------------------------------------------------------------------------------
TRANSFER_SETTLED = "transfer.settled"
INVOICE_SETTLED = "invoice.settled"
PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_FAILED = "payment.failed"
DEPOSIT_CONFIRMED = "deposit.confirmed"
DEPOSIT_CREDITED = "deposit.credited"
PAYOUT_BROADCAST = "payout.broadcast"
PAYOUT_CONFIRMED = "payout.confirmed"
REVIEW_REQUIRED = "review.required"
# Operator events (account_id "sys:solvency": delivered to admin subscriptions only)
SOLVENCY_BREAKER_TRIPPED = "solvency.breaker_tripped"
SOLVENCY_SENDS_RESUMED = "solvency.sends_resumed"
EVENT_TYPES = (TRANSFER_SETTLED, INVOICE_SETTLED, PAYMENT_SUCCEEDED, PAYMENT_FAILED, DEPOSIT_CONFIRMED,
               DEPOSIT_CREDITED, PAYOUT_BROADCAST, PAYOUT_CONFIRMED, REVIEW_REQUIRED, SOLVENCY_BREAKER_TRIPPED,
               SOLVENCY_SENDS_RESUMED)

ADMIN_OWNER = "admin"  # owner of subscriptions created with the admin key: they receive every account's events
MAX_SUBSCRIPTIONS_PER_OWNER = 10
MAX_URL_LENGTH = 2048
OUTBOX_TTL_DAYS = 30  # events can be replayed this long; outbox and delivery items expire after it
MAX_REPLAY_EVENTS = 100

# Delivery: attempt n (1-based, the SQS receive count) that fails waits backoff_s(n) before the next; the
# MAX_ATTEMPTS-th failure is final (DEAD; the message goes to the dead-letter queue). template.yaml's
# WebhookDeliveryQueue maxReceiveCount is this number (a contract test keeps them equal).
MAX_ATTEMPTS = 10
RETRY_BASE_S = 60
RETRY_CAP_S = 6 * 3600  # below SQS's 12 h visibility ceiling
SIGNATURE_TOLERANCE_S = 300
SIGNATURE_VERSION = "v1"


class WebhookTransportError(Exception):
    """A delivery attempt produced no HTTP status (DNS, connect, TLS, timeout): retried like a non-2xx answer.
    Internal (never shown to API clients as such)."""


@dataclass(frozen=True)
class OutboxEvent:
    event_id: str
    type: str
    account_id: str
    created_at: str
    data: Mapping[str, object] = field(default_factory=dict)

    def payload(self) -> dict[str, object]:
        """What the client receives (the body of the POST)."""
        return {"id": self.event_id, "type": self.type, "created_at": self.created_at,
                "account_id": self.account_id, "data": dict(self.data)}


def event_id(source: str, event_type: str, account_id: str) -> str:
    """Deterministic: the same source (transfer id, or entity + transition) always gives the same id."""
    return derive_id("evt", source, event_type, account_id)


def _event(source: str, event_type: str, account_id: str, created_at: str, data: Mapping[str, object]) -> OutboxEvent:
    return OutboxEvent(event_id(source, event_type, account_id), event_type, account_id, created_at, dict(data))


# --- ledger transfers -> events -----------------------------------------------------------------------------------
def events_for_transfer(transfer: Transfer) -> list[OutboxEvent]:
    """The events a committed ledger transfer announces (empty for reserves, adjustments, reversals and internal
    bookings such as ``routing_fee_overrun``). A post/void keeps its pending's template; its kind tells them apart.

    Not announced, on purpose: ``adjustment_*`` (operator corrections, in the audit log), ``deposit_reversed`` and
    ``deposit_seen`` PENDING / VOID (not in the issue's list; the deposit listing shows them), reserves of
    payments and payouts (the API answered the caller synchronously)."""
    t, kind = transfer, transfer.kind
    base = {"transfer_id": t.id, "amount_msat": t.amount}
    if t.template == "internal_transfer" and kind in (TransferKind.POSTED, TransferKind.POST_PENDING):
        # A transfer held for review settles when its pending is posted (approval): announced under the id the
        # sender was given (the pending's), exactly like an instant one.
        source = t.id if kind is TransferKind.POSTED else str(t.pending_id)
        sender, recipient = t.debit.owner, t.credit.owner
        settled = {**base, "transfer_id": source}
        return [
            _event(source, TRANSFER_SETTLED, sender, t.created_at,
                   {**settled, "direction": "out", "counterparty": recipient, "memo": t.memo}),
            _event(source, TRANSFER_SETTLED, recipient, t.created_at,
                   {**settled, "direction": "in", "counterparty": sender, "memo": t.memo}),
        ]
    if t.template == "invoice_settled" and kind is TransferKind.POSTED:
        return [_event(t.id, INVOICE_SETTLED, t.credit.owner, t.created_at,
                       {**base, "payment_hash": t.metadata.get("payment_hash"), "internal": False})]
    if t.template == "internal_invoice_payment" and kind is TransferKind.POSTED:
        payment_hash = t.metadata.get("payment_hash")
        return [
            _event(t.id, INVOICE_SETTLED, t.credit.owner, t.created_at,
                   {**base, "payment_hash": payment_hash, "internal": True}),
            _event(t.id, PAYMENT_SUCCEEDED, t.debit.owner, t.created_at,
                   {**base, "payment_id": t.id, "payment_hash": payment_hash, "internal": True}),
        ]
    if t.template == "payment_reserved" and kind is TransferKind.POST_PENDING:
        return [_event(t.id, PAYMENT_SUCCEEDED, t.debit.owner, t.created_at,
                       {**base, "payment_id": t.pending_id, "internal": False,
                        "released_msat": (t.pending_amount or 0) - t.amount})]
    if t.template == "payment_reserved" and kind is TransferKind.VOID_PENDING:
        return [_event(t.id, PAYMENT_FAILED, t.debit.owner, t.created_at,
                       {"transfer_id": t.id, "payment_id": t.pending_id, "released_msat": t.amount})]
    if t.template == "deposit_seen" and kind is TransferKind.POST_PENDING:
        outpoint = t.metadata.get("outpoint")
        return [_event(t.id, DEPOSIT_CREDITED, t.credit.owner, t.created_at, {**base, "outpoint": outpoint})]
    if t.template == "payout_reserved" and kind is TransferKind.POST_PENDING:
        return [_event(t.id, PAYOUT_CONFIRMED, t.debit.owner, t.created_at,
                       {**base, "payout_id": t.pending_id, "released_msat": (t.pending_amount or 0) - t.amount})]
    return []


# --- state transitions -> events ----------------------------------------------------------------------------------
def deposit_confirmed_event(*, outpoint: str, generation: int, block_hash: str, height: int, account_id: str,
                            amount_sat: int, required_confirmations: int, credited: bool,
                            created_at: str) -> OutboxEvent:
    """The deposit's first confirmation. Keyed by the block it confirmed in: a reorg that re-mines it in another
    block confirms it again (a new event); the same block scanned twice is the same event."""
    txid, _, vout = outpoint.partition(":")
    return _event(f"{outpoint}.g{generation}@{block_hash}", DEPOSIT_CONFIRMED, account_id, created_at, {
        "outpoint": outpoint, "txid": txid, "vout": int(vout), "amount_sat": amount_sat, "height": height,
        "block_hash": block_hash, "confirmations": 1, "required_confirmations": required_confirmations,
        "status": "CREDITED" if credited else "CONFIRMING"})


def deposit_confirmed_events(deposit: Deposit, step: ConfirmationStep, at: str) -> list[OutboxEvent]:
    """``deposit.confirmed`` when a confirmation pass (``domain.deposits.confirmation_step``) records the first
    confirmation of this confirmation epoch (milestone 1; a reorg starts a new epoch), else nothing."""
    from .deposits import EVENT_CONFIRMATIONS

    if deposit.height is None or deposit.block_hash is None or not any(
            e.type == EVENT_CONFIRMATIONS and e.confirmations == 1 for e in step.events):
        return []
    return [deposit_confirmed_event(
        outpoint=deposit.outpoint, generation=deposit.generation, block_hash=deposit.block_hash,
        height=deposit.height, account_id=deposit.account_id, amount_sat=deposit.amount_sat,
        required_confirmations=deposit.required_confirmations, credited=step.credit, created_at=at)]


def payout_broadcast_event(*, payout_id: str, account_id: str, txid: str, amount_sat: int, created_at: str,
                           replaces_txid: str | None = None) -> OutboxEvent:
    """The payout's transaction went to the network (again with a new txid after a fee bump)."""
    data: dict[str, object] = {"payout_id": payout_id, "txid": txid, "amount_sat": amount_sat}
    if replaces_txid:
        data["replaces_txid"] = replaces_txid
    return _event(f"{payout_id}@{txid}", PAYOUT_BROADCAST, account_id, created_at, data)


def review_required_event(review_id: str, account_id: str, created_at: str,
                          data: Mapping[str, object]) -> OutboxEvent:
    """A send is held for an admin's review (emitted by the risk step with its review record)."""
    return _event(review_id, REVIEW_REQUIRED, account_id, created_at, {"review_id": review_id, **dict(data)})


# --- payload and signature ----------------------------------------------------------------------------------------
def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_body(event: OutboxEvent) -> bytes:
    """The exact bytes POSTed (and signed)."""
    return canonical_json(event.payload()).encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The Satflow-Signature header value."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={mac}"


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def new_subscription_id() -> str:
    return new_id("whk")


# --- subscriptions ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    owner: str  # an account id, or ADMIN_OWNER
    url: str
    events: tuple[str, ...]
    secret: str  # kept to sign every delivery; returned to the client only when created
    created_at: str

    def wants(self, event: OutboxEvent) -> bool:
        """Account-owned subscriptions get their own account's events; admin-owned ones every account's."""
        return event.type in self.events and (self.owner == ADMIN_OWNER or self.owner == event.account_id)


_SUBSCRIPTION_ID_RE = re.compile(r"^whk_[a-z2-7]{26}$")
_EVENT_ID_RE = re.compile(r"^evt_[a-z2-7]{26}$")


def validate_subscription_id(value: object) -> str:
    if not isinstance(value, str) or not _SUBSCRIPTION_ID_RE.match(value):
        raise ValidationError("webhook_id must be whk_ followed by 26 characters", field="webhook_id")
    return value


def validate_event_ids(value: object) -> tuple[str, ...]:
    if (not isinstance(value, list) or not value or len(value) > MAX_REPLAY_EVENTS
            or not all(isinstance(v, str) and _EVENT_ID_RE.match(v) for v in value)):
        raise ValidationError(f"event_ids must be a list of 1-{MAX_REPLAY_EVENTS} event ids (evt_...)",
                              field="event_ids")
    return tuple(dict.fromkeys(value))


def validate_event_types(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValidationError(f"events must be a non-empty list of event types: {', '.join(EVENT_TYPES)}",
                              field="events")
    unknown = sorted(set(value) - set(EVENT_TYPES))
    if unknown:
        raise ValidationError(f"unknown event types {unknown}; known: {', '.join(EVENT_TYPES)}", field="events")
    return tuple(t for t in EVENT_TYPES if t in value)  # canonical order, no duplicates


# --- target URLs --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WebhookTarget:
    url: str
    scheme: str
    host: str  # lower case; an IP literal without brackets
    port: int
    target: str  # path + query, what goes on the request line

    def url_for(self, address: str) -> str:
        """The URL with the host replaced by one of its vetted addresses (the request connects there, while
        the Host header and TLS server name stay ``host``)."""
        literal = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{literal}:{self.port}{self.target}"


_HOST_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$")


def parse_target(url: object, *, allow_private: bool = False) -> WebhookTarget:
    """Syntax only: https (http too when ``allow_private``, the local runtime), a host, no credentials, no
    fragment. Whether the host may be reached is :func:`check_addresses` on what it resolves to."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise WebhookUrlRejected(f"url must be a string of at most {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise WebhookUrlRejected("url must be ASCII without spaces or control characters (punycode for IDNs)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlRejected(f"url is not valid: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme != "https" and not (allow_private and scheme == "http"):
        raise WebhookUrlRejected("url must use https")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise WebhookUrlRejected("url must not carry credentials")
    if parts.fragment or url.endswith("#"):
        raise WebhookUrlRejected("url must not have a fragment")
    host = (parts.hostname or "").lower()
    if not host:
        raise WebhookUrlRejected("url needs a host")
    if _ip(host) is None and not _HOST_RE.match(host):
        raise WebhookUrlRejected("url host is not a valid host name")
    if port == 0:
        raise WebhookUrlRejected("url port must be 1-65535")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return WebhookTarget(url, scheme, host.rstrip("."), port or (443 if scheme == "https" else 80), target)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def forbidden_reason(address: str) -> str | None:
    """Why ``address`` must not be a webhook target, or None if it is a public unicast address. IPv6 forms that
    embed an IPv4 address (mapped, 6to4, Teredo, NAT64) are judged by the IPv4 address they lead to."""
    ip = _ip(address)
    if ip is None:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.teredo:
            return "teredo"  # a tunnel to wherever its client is: never a webhook endpoint
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is a.b.c.d on a dual-stack socket
            inner = forbidden_reason(str(ip.ipv4_mapped))
            return None if inner is None else f"embeds {ip.ipv4_mapped}: {inner}"
        embedded = ip.sixtofour
        if embedded is None and (ip in _NAT64 or ip in _NAT64_LOCAL):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = forbidden_reason(str(embedded))
            if inner is not None:
                return f"embeds {embedded}: {inner}"
            if ip in _NAT64_LOCAL:
                return "local-use NAT64"
        if ip.is_site_local:  # fec0::/10: deprecated, but still routed inside some networks (review)
            return "site-local"
    for name in ("is_loopback", "is_link_local", "is_multicast", "is_unspecified", "is_reserved", "is_private"):
        if getattr(ip, name):
            return name[3:].replace("_", "-")
    if not ip.is_global:
        return "not globally routable"
    return None


def check_addresses(host: str, addresses: Iterable[str], *, allow_private: bool = False) -> tuple[str, ...]:
    """All addresses ``host`` resolved to must be public (one bad answer taints the name: DNS may rotate).
    Returns them, de-duplicated, for the caller to connect to one of them."""
    found = tuple(dict.fromkeys(addresses))
    if not found:
        raise WebhookUrlRejected(f"url host {host} does not resolve")
    if not allow_private:
        for address in found:
            reason = forbidden_reason(address)
            if reason is not None:
                raise WebhookUrlRejected(f"url host {host} resolves to {address} ({reason}): not allowed")
    return found


# --- retries ------------------------------------------------------------------------------------------------------
def backoff_s(attempt: int, *, base: float = RETRY_BASE_S, cap: float = RETRY_CAP_S,
              rand: Callable[[], float] | None = None) -> int:
    """Seconds to wait after failed attempt ``attempt`` (1-based): exponential (base x 2^(n-1), capped) with
    "equal jitter" (uniformly between half and all of it), so failing endpoints are not hit in lockstep."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    ceiling = min(cap, base * 2 ** min(attempt - 1, 40))
    draw = (rand or secrets.SystemRandom().random)()
    return int(round(ceiling / 2 + draw * ceiling / 2))


def expires_at_unix(created_at: str, days: int = OUTBOX_TTL_DAYS) -> int:
    """The DynamoDB TTL of an outbox or delivery item (epoch seconds)."""
    when = datetime.strptime(created_at[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return int(when.timestamp()) + days * 86400


def short_error(text: str, limit: int = 300) -> str:
    """A delivery error as stored and shown: one line, bounded."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# --- deliveries ---------------------------------------------------------------------------------------------------
PENDING, FAILED, DELIVERED, DEAD = "PENDING", "FAILED", "DELIVERED", "DEAD"
DELIVERY_STATUSES = (PENDING, FAILED, DELIVERED, DEAD)


@dataclass(frozen=True)
class DeliveryRecord:
    """One (subscription, event) pair: the last outcome of its attempts. DELIVERED is final unless replayed."""

    subscription_id: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    updated_at: str
    last_error: str | None = None
    last_status_code: int | None = None
    delivered_at: str | None = None

    def view(self) -> dict[str, object]:
        return {"event_id": self.event_id, "type": self.event_type, "status": self.status,
                "attempts": self.attempts, "last_error": self.last_error,
                "last_status_code": self.last_status_code, "updated_at": self.updated_at,
                "delivered_at": self.delivered_at}


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a delivery before POSTing: ``claimed`` (attempt number ``attempts``), or not because
    it was ``delivered`` already, or because another worker holds it until ``busy_until`` (unix seconds)."""

    claimed: bool
    attempts: int = 0
    delivered: bool = False
    busy_until: int | None = None
