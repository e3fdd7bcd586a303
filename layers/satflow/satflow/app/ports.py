"""What the use cases need from the outside world. Adapters implement these; tests pass fakes."""
from __future__ import annotations

from dataclasses import dataclass, field
import time
from datetime import datetime, timezone
from typing import Any, Callable, Protocol, Sequence

from satflow.domain.accounts import Account, AccountStatus, Scope
from satflow.domain.ledger import Balance, InvariantReport, Transfer
from satflow.domain.onchain import PAYOUT_CONFIRMATIONS


def _default_tier_limits():
    from satflow.domain.limits import DEFAULT_TIER_LIMITS

    return DEFAULT_TIER_LIMITS


class LedgerPort(Protocol):
    def execute(self, transfer: Transfer, extra: Sequence[Any] = ()) -> Any: ...  # -> LedgerResult
    def get_transfer(self, transfer_id: str) -> Transfer | None: ...
    def balances(self, owner: str) -> list[Balance]: ...
    def history(self, owner: str, asset: str, limit: int, cursor: str | None = None) -> Any: ...
    def check_invariants(self) -> InvariantReport: ...


class AccountsPort(Protocol):
    def create(self, account: Account, api_key_hash: str, key_prefix: str, scopes: list[Scope]) -> None: ...
    def get(self, account_id: str) -> Account | None: ...
    def id_for_ref(self, external_ref: str) -> str | None: ...
    def api_key(self, api_key_hash: str) -> tuple[str, frozenset[Scope], str | None] | None: ...  # +key_id
    def update(self, account_id: str, *, updated_at: str, status: AccountStatus | None = None,
               tier: int | None = None) -> Account: ...


def unix_now() -> int:
    return int(time.time())


def iso_from_unix(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def utc_now_iso() -> str:
    """ISO-8601 UTC with milliseconds: sorts lexicographically, so history sort keys are time-ordered."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Services:
    """Everything a use case may touch, built once per container by satflow.bootstrap."""

    ledger: LedgerPort
    accounts: AccountsPort
    admin_key: Callable[[], str]  # the admin API key (Secrets Manager, cached)
    system_shards: int
    clock: Callable[[], str] = utc_now_iso
    unix_clock: Callable[[], int] = unix_now
    network: str = "regtest"
    # Many reads in one round trip (adapters.dynamodb.batch.read_many: a consistent BatchGetItem of the stores'
    # ItemReads). None: app.send_reads reads them one at a time (same results, more round trips).
    read_many: Callable[[Sequence[Any]], list] | None = None
    # Lightning (built lazily: a handler that never touches LND never loads its secret)
    lightning: Any = None  # DynamoLightningStore
    lnd: Callable[[], Any] | None = None  # -> LndRestClient
    start_payment: Callable[[str], None] | None = None  # starts the payment workflow named by the payment id
    publish_invoice_event: Callable[[dict], None] | None = None  # -> the invoice events queue
    # On-chain
    utxos: Any = None  # DynamoUtxoStore
    chain: Any = None  # DynamoChainStore: deposit addresses, address index, deposits, chain tip
    payouts: Any = None  # DynamoPayoutStore: payouts and batches
    bitcoind: Callable[[], Any] | None = None  # -> BitcoinRpcClient
    deposit_account_key: str | None = None
    hot_signer_key: Callable[[], str] | None = None  # -> account private key (Secrets Manager), on first use
    hot_sign_limit_sat: int = 10_000_000
    payout_confirmations: int = PAYOUT_CONFIRMATIONS  # the depth before a payout batch is posted (one source)
    deposit_policy: str = "1000000:1,10000000:3,*:6"
    start_payout: Callable[[str], None] | None = None  # starts the payout workflow named by the batch id
    # Audit: the hash-chained audit store (the ledger is wrapped by app.recorded_ledger.RecordedLedger with it)
    audit: Any = None  # DynamoAuditStore
    # Limits
    limits: Any = None  # DynamoLimitStore: per-account limit windows (admit_with_retry fails closed without it)
    tier_limits: dict = field(default_factory=lambda: dict(_default_tier_limits()))
    # Webhooks (satflow.app.webhooks). Without a store no outbox items are written (tests that do not care).
    webhooks: Any = None  # DynamoWebhookStore: outbox items, subscriptions, delivery records
    webhook_http: Any = None  # WebhookHttp: resolve(host, port) -> [address], post(target, address, headers, body)
    webhook_queue: Any = None  # SqsWebhookQueue: send([message]), delay(receipt_handle, seconds)
    webhook_allow_private: bool = False  # local runtime only: http:// and private/loopback targets
    webhook_retry_base_s: float = 60.0  # first retry delay; doubles per attempt (with jitter), capped
    # Sanctions screening (app.sanctions)
    sanctions: Any = None  # DynamoSanctionsStore: the current list (cached per container)
    sanctions_when_unloaded: str = "block"  # no list ever loaded: "block" (fail closed, 503) or "allow"
    sanctions_sources: tuple[tuple[str, str], ...] = ()  # (label, url): the official list, then the operator's
    fetch_sanctions: Callable[[str, str], Any] | None = None  # (url, label) -> SanctionsList
    emit_metric: Callable[..., None] | None = None  # (name, value, **dimensions): alert metrics from use cases
    # Risk score and review (app/risk.py fails closed without the store)
    risk: Any = None  # DynamoRiskStore: assessments, destination history, reviews
    risk_policy: Any = None  # satflow.domain.risk.RiskPolicy (None: the documented defaults)
    start_review: Callable[[str], None] | None = None  # starts the review workflow named by the review id
    # Solvency (app/solvency.py): checks, the send breaker, suspense items. Without a store sends are never paused.
    solvency: Any = None  # DynamoSolvencyStore
    solvency_thresholds_sat: dict = field(default_factory=lambda: {"lightning": 10_000, "onchain": 10_000})
    solvency_max_check_age_s: int = 1_800  # no successful check for longer: sends pause
    breaker_cache_s: float = 10.0  # how long a container reuses its read of the breaker item
    # The clock of in-container caches (the breaker read above): a port, so a simulation on a fake clock decides
    # cache hits from its seed, not from how fast the machine ran.
    monotonic: Callable[[], float] = time.monotonic
    # Real-time updates over WebSocket (app/realtime.py)
    realtime: Any = None  # DynamoRealtimeStore: connections, topics, the per-account replay feed
    connections: Any = None  # ConnectionsApi: post(connection_id, data), close(connection_id) via @connections
    # Wallet ecosystem (app/keys.py, app/lnurl.py, app/lndhub.py)
    keys: Any = None  # DynamoKeyStore: key records, account-creation idempotency markers
    lnurl: Any = None  # DynamoLnurlStore: Lightning Address usernames, withdraw links
    rate_limiter: Any = None  # DynamoRateLimiter: per-address windows for the public (unauthenticated) routes
