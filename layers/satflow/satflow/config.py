"""Settings, read once from the environment on first use (never at import time)."""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from .domain.onchain import PAYOUT_CONFIRMATIONS


@dataclass(frozen=True)
class Settings:
    table_name: str
    region: str
    system_shards: int
    audit_shards: int  # number of audit hash chains; may only ever grow
    admin_key_secret_id: str | None  # Secrets Manager secret holding the admin API key
    admin_key: str | None  # local runtime only: SATFLOW_ADMIN_KEY overrides the secret
    network: str  # bitcoin network: bitcoin | testnet | signet | regtest
    endpoint_url: str | None  # AWS_ENDPOINT_URL (moto server / DynamoDB Local) in development
    lnd_secret_id: str | None  # Secrets Manager: {"url", "macaroon_hex", "tls_cert_pem"}
    lnd_timeout_s: float
    payment_state_machine_arn: str | None
    invoice_queue_url: str | None
    bitcoind_secret_id: str | None  # Secrets Manager: {"url", "user", "password"}
    deposit_account_key: str | None  # BIP84 account xpub/tpub/vpub or wpkh descriptor (public: derives addresses)
    signer_secret_id: str | None  # Secrets Manager: the hot signer's account private key (tprv/xprv)
    hot_sign_limit_sat: int  # batches worth more than this wait for the external signer
    deposit_policy: str  # amount tiers -> confirmations, e.g. "1000000:1,10000000:3,*:6" (sat)
    payout_state_machine_arn: str | None
    tier_limits: str | None  # SATFLOW_TIER_LIMITS: JSON override of the per-tier limits (sat)
    workflow_wait_s: int | None  # local runtime only: shorter Wait states than the ASL defaults (60 s blocks...)
    webhook_queue_url: str | None  # the webhook delivery queue (relay and replay send, delivery delays)
    webhook_allow_private: bool  # local runtime only: webhooks to http:// and private/loopback addresses
    webhook_retry_base_s: float  # local runtime only when set: the first retry delay (default 60 s)
    sanctions_list_url: str | None  # the official list (OFAC SDN XML): https:// or file://; empty = not refreshed
    sanctions_extra_url: str | None  # the operator's supplementary list, same format
    sanctions_when_unloaded: str  # "block" (fail closed) | "allow" when no list was ever loaded
    sanctions_cache_s: int  # how often a container re-reads the stored list's head
    risk_thresholds: str | None = None  # SATFLOW_RISK_THRESHOLDS: {"review": int, "block": int} (score 0-100)
    review_state_machine_arn: str | None = None  # SATFLOW_REVIEW_STATE_MACHINE_ARN: held transfers and payouts
    solvency_thresholds: str | None = None  # SATFLOW_SOLVENCY_THRESHOLDS_SAT: {"lightning": sat, "onchain": sat}
    solvency_max_check_age_s: int = 1_800  # SATFLOW_SOLVENCY_MAX_CHECK_AGE_S: no successful check longer -> pause
    breaker_cache_s: float = 10.0  # SATFLOW_BREAKER_CACHE_S: a container reuses its breaker read this long
    websocket_endpoint: str | None = None  # SATFLOW_WEBSOCKET_ENDPOINT: the WebSocket API stage URL (@connections)
    payout_confirmations: int = 3  # SATFLOW_PAYOUT_CONFIRMATIONS: depth before a payout batch is posted (>= 1)


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


def _choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = os.environ.get(name) or default
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def _confirmations(n: int) -> int:
    if not 1 <= n <= 100:
        raise ValueError("SATFLOW_PAYOUT_CONFIRMATIONS must be 1..100")
    return n


def _shards(n: int) -> int:
    if not 1 <= n <= 64:
        raise ValueError("shard counts (SATFLOW_SYSTEM_SHARDS, SATFLOW_AUDIT_SHARDS) must be 1..64")
    return n


@functools.lru_cache(maxsize=1)
def settings() -> Settings:
    env = os.environ
    return Settings(
        table_name=env.get("SATFLOW_TABLE", "satflow-ledger"),
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        system_shards=_shards(_int("SATFLOW_SYSTEM_SHARDS", 8)),
        audit_shards=_shards(_int("SATFLOW_AUDIT_SHARDS", 16)),
        admin_key_secret_id=env.get("SATFLOW_ADMIN_KEY_SECRET_ID") or None,
        admin_key=env.get("SATFLOW_ADMIN_KEY") or None,
        network=env.get("SATFLOW_NETWORK", "regtest"),
        endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
        lnd_secret_id=env.get("SATFLOW_LND_SECRET_ID") or None,
        lnd_timeout_s=float(env.get("SATFLOW_LND_TIMEOUT_S") or 10),
        payment_state_machine_arn=env.get("SATFLOW_PAYMENT_STATE_MACHINE_ARN") or None,
        invoice_queue_url=env.get("SATFLOW_INVOICE_QUEUE_URL") or None,
        bitcoind_secret_id=env.get("SATFLOW_BITCOIND_SECRET_ID") or None,
        deposit_account_key=env.get("SATFLOW_DEPOSIT_ACCOUNT_KEY") or None,
        signer_secret_id=env.get("SATFLOW_SIGNER_SECRET_ID") or None,
        hot_sign_limit_sat=_int("SATFLOW_HOT_SIGN_LIMIT_SAT", 10_000_000),
        deposit_policy=env.get("SATFLOW_DEPOSIT_POLICY") or "1000000:1,10000000:3,*:6",
        payout_state_machine_arn=env.get("SATFLOW_PAYOUT_STATE_MACHINE_ARN") or None,
        tier_limits=env.get("SATFLOW_TIER_LIMITS") or None,
        workflow_wait_s=_int("SATFLOW_WORKFLOW_WAIT_S", 0) or None,
        webhook_queue_url=env.get("SATFLOW_WEBHOOK_QUEUE_URL") or None,
        webhook_allow_private=(env.get("SATFLOW_WEBHOOK_ALLOW_PRIVATE") or "").lower() in ("1", "true", "yes"),
        webhook_retry_base_s=float(env.get("SATFLOW_WEBHOOK_RETRY_BASE_S") or 60),
        sanctions_list_url=env.get("SATFLOW_SANCTIONS_LIST_URL") or None,
        sanctions_extra_url=env.get("SATFLOW_SANCTIONS_EXTRA_URL") or None,
        sanctions_when_unloaded=_choice("SATFLOW_SANCTIONS_WHEN_UNLOADED", "block", ("block", "allow")),
        sanctions_cache_s=_int("SATFLOW_SANCTIONS_CACHE_S", 60),
        risk_thresholds=env.get("SATFLOW_RISK_THRESHOLDS") or None,
        review_state_machine_arn=env.get("SATFLOW_REVIEW_STATE_MACHINE_ARN") or None,
        solvency_thresholds=env.get("SATFLOW_SOLVENCY_THRESHOLDS_SAT") or None,
        solvency_max_check_age_s=_int("SATFLOW_SOLVENCY_MAX_CHECK_AGE_S", 1_800),
        breaker_cache_s=float(env.get("SATFLOW_BREAKER_CACHE_S") or 10),
        websocket_endpoint=env.get("SATFLOW_WEBSOCKET_ENDPOINT") or None,
        payout_confirmations=_confirmations(_int("SATFLOW_PAYOUT_CONFIRMATIONS", PAYOUT_CONFIRMATIONS)),
    )


def reset() -> None:
    """Forget cached settings (tests and the local runtime change the environment)."""
    settings.cache_clear()
