"""The composition root: builds adapters from settings on first use (never at import), once per container."""
from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from .config import settings

if TYPE_CHECKING:  # the port types load with the graph (_build), not at a handler's import
    from .app.ports import Services

_lock = threading.Lock()
_services: Services | None = None


def services() -> Services:
    global _services
    if _services is None:
        with _lock:
            if _services is None:
                _services = _build()
    return _services


def override(svc: Services | None) -> None:
    """Tests and the local runtime swap the whole graph (None = rebuild from settings on next use). The Step
    Functions client is part of the graph: a rebuilt graph may talk to another endpoint."""
    global _services, _sfn
    _services = svc
    _sfn = _once(lambda: aws_client("stepfunctions"))


def aws_client(service: str) -> Any:
    import boto3  # the Lambda runtime provides boto3; imported here so cold imports stay light

    s = settings()
    return boto3.client(service, region_name=s.region, endpoint_url=s.endpoint_url)


def _build() -> Services:
    from .adapters.dynamodb.accounts import DynamoAccounts
    from .adapters.dynamodb.batch import read_many
    from .app.ports import Services
    from .app.recorded_ledger import RecordedLedger
    from .adapters.dynamodb.chain import DynamoChainStore
    from .adapters.dynamodb.ledger import DynamoLedger
    from .adapters.dynamodb.limits import DynamoLimitStore
    from .domain.limits import parse_tier_limits
    from .adapters.dynamodb.lightning import DynamoLightningStore
    from .adapters.dynamodb.models import build_models
    from .adapters.dynamodb.payouts import DynamoPayoutStore
    from .adapters.dynamodb.sanctions import DynamoSanctionsStore
    from .adapters.dynamodb.utxos import DynamoUtxoStore
    from .adapters.dynamodb.audit import DynamoAuditStore
    from .adapters.dynamodb.risk import DynamoRiskStore
    from .adapters.dynamodb.solvency import DynamoSolvencyStore
    from .domain.solvency import parse_thresholds
    from .adapters.dynamodb.webhooks import DynamoWebhookStore
    from .adapters.connections_api import ConnectionsApi, management_client_factory
    from .adapters.dynamodb.realtime import DynamoRealtimeStore
    from .adapters.webhook_http import WebhookHttp
    from .adapters.webhook_queue import SqsWebhookQueue
    from .domain.bitcoin import Network
    from .domain.risk import parse_risk_thresholds

    s = settings()
    client = aws_client("dynamodb")
    models = build_models(s.table_name, s.region, s.endpoint_url)
    audit = DynamoAuditStore(client, models, shards=s.audit_shards)
    webhooks = DynamoWebhookStore(client, models)
    return Services(
        # Every ledger transaction also carries its audit record and the outbox events it announces.
        ledger=RecordedLedger(DynamoLedger(client, models, s.system_shards), audit,
                              outbox_items=webhooks.transfer_outbox_items),
        audit=audit,
        accounts=DynamoAccounts(client, models),
        read_many=read_many,
        admin_key=_admin_key_provider(),
        system_shards=s.system_shards,
        network=s.network,
        lightning=DynamoLightningStore(client, models),
        lnd=_lnd_provider(),
        start_payment=_execution_starter(lambda: settings().payment_state_machine_arn,
                                         "SATFLOW_PAYMENT_STATE_MACHINE_ARN", "payment_id"),
        publish_invoice_event=_invoice_publisher(),
        utxos=DynamoUtxoStore(client, models),
        chain=DynamoChainStore(client, models, account_key=s.deposit_account_key,
                               network=Network(s.network) if s.deposit_account_key else None),
        bitcoind=_bitcoind_provider(),
        deposit_account_key=s.deposit_account_key,
        deposit_policy=s.deposit_policy,
        hot_sign_limit_sat=s.hot_sign_limit_sat,
        payout_confirmations=s.payout_confirmations,
        hot_signer_key=_secret_string(lambda: settings().signer_secret_id, "SATFLOW_SIGNER_SECRET_ID"),
        payouts=DynamoPayoutStore(client, models),
        limits=DynamoLimitStore(client, models),
        tier_limits=parse_tier_limits(s.tier_limits),
        start_payout=_execution_starter(lambda: settings().payout_state_machine_arn,
                                        "SATFLOW_PAYOUT_STATE_MACHINE_ARN", "batch_id"),
        webhooks=webhooks,
        webhook_http=WebhookHttp(),
        # Built with the graph (not at module level): a rebuilt graph may talk to another endpoint.
        webhook_queue=SqsWebhookQueue(_once(lambda: aws_client("sqs")), lambda: settings().webhook_queue_url),
        webhook_allow_private=s.webhook_allow_private,
        webhook_retry_base_s=s.webhook_retry_base_s,
        sanctions=DynamoSanctionsStore(client, s.table_name, cache_s=s.sanctions_cache_s),
        sanctions_when_unloaded=s.sanctions_when_unloaded,
        sanctions_sources=(("sdn", s.sanctions_list_url or ""), ("extra", s.sanctions_extra_url or "")),
        fetch_sanctions=_sanctions_fetcher,
        emit_metric=_emit_metric,
        risk=DynamoRiskStore(client, models),
        risk_policy=parse_risk_thresholds(s.risk_thresholds),
        start_review=_execution_starter(lambda: settings().review_state_machine_arn,
                                        "SATFLOW_REVIEW_STATE_MACHINE_ARN", "review_id"),
        solvency=DynamoSolvencyStore(client, s.table_name),
        solvency_thresholds_sat=parse_thresholds(s.solvency_thresholds),
        solvency_max_check_age_s=s.solvency_max_check_age_s,
        breaker_cache_s=s.breaker_cache_s,
        realtime=DynamoRealtimeStore(client, s.table_name),
        connections=ConnectionsApi(management_client_factory(s.region, s.endpoint_url, s.websocket_endpoint)),
        **_ecosystem_stores(client, s.table_name),
    )


def _ecosystem_stores(client: Any, table_name: str) -> dict:
    from .adapters.dynamodb.ecosystem import DynamoKeyStore, DynamoLnurlStore, DynamoRateLimiter

    return {"keys": DynamoKeyStore(client, table_name), "lnurl": DynamoLnurlStore(client, table_name),
            "rate_limiter": DynamoRateLimiter(client, table_name)}


def _sanctions_fetcher(url: str, label: str) -> Any:
    from .adapters.sanctions_source import fetch_sanctions_list  # httpx loads only when a list is fetched

    return fetch_sanctions_list(url, label)


def _emit_metric(name: str, value: int = 1, **dimensions: str) -> None:
    from .adapters.metrics import emit_metric  # Powertools metrics load only when an alert fires

    emit_metric(name, value, **dimensions)


def payout_task_sender() -> Callable[[str, dict], None]:
    """Resumes a payout workflow parked on a task token (external signature submitted, or signing cancelled)."""
    from .app.payouts import sfn_task_success_sender

    return sfn_task_success_sender(_sfn())


def review_notifier() -> Callable[[str, dict], str]:
    """Resumes a workflow parked on a risk review (the admin approved or rejected it). The Step Functions client
    is built on the first wake-up, not here: most decisions of a container may need none."""
    from .app.risk import sfn_notifier

    return lambda token, output: sfn_notifier(_sfn())(token, output)


def _secret_json(secret_id: str) -> dict:
    return json.loads(aws_client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"])


def _secret_string(secret_id: Callable[[], str | None], name: str) -> Callable[[], str]:
    """A secret's string, fetched on first use and kept for the container's life. Never logged."""

    def build() -> str:
        sid = secret_id()
        if not sid:
            raise RuntimeError(f"set {name}")
        return aws_client("secretsmanager").get_secret_value(SecretId=sid)["SecretString"].strip()

    return _once(build)


def _bitcoind_provider() -> Callable[[], Any]:
    def build() -> Any:
        from .adapters.bitcoind import BitcoinRpcClient

        s = settings()
        if not s.bitcoind_secret_id:
            raise RuntimeError("set SATFLOW_BITCOIND_SECRET_ID")
        return BitcoinRpcClient.from_secret(_secret_json(s.bitcoind_secret_id))

    return _once(build)


def _once(build: Callable[[], Any]) -> Callable[[], Any]:
    """Build on first call, then reuse (one client per container)."""
    cache: list[Any] = []

    def get() -> Any:
        if not cache:
            with _lock:
                if not cache:
                    cache.append(build())
        return cache[0]

    return get


def _lnd_provider() -> Callable[[], Any]:
    def build() -> Any:
        from .adapters.lnd import LndRestClient

        s = settings()
        if not s.lnd_secret_id:
            raise RuntimeError("set SATFLOW_LND_SECRET_ID")
        return LndRestClient.from_secret(_secret_json(s.lnd_secret_id), timeout_s=s.lnd_timeout_s)

    return _once(build)


_sfn = _once(lambda: aws_client("stepfunctions"))


def _execution_starter(arn: Callable[[], str | None], name: str, key: str) -> Callable[[str], None]:
    """Starts a workflow execution named by the entity id: starting it twice cannot create two workflows."""

    def start(entity_id: str) -> None:
        from botocore.exceptions import ClientError

        state_machine = arn()
        if not state_machine:
            raise RuntimeError(f"set {name}")
        try:
            payload: dict[str, Any] = {key: entity_id}
            if settings().workflow_wait_s:  # local runtime only; the ASL's Defaults state supplies production waits
                payload["wait_s"] = settings().workflow_wait_s
            _sfn().start_execution(stateMachineArn=state_machine, name=entity_id, input=json.dumps(payload))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                raise

    return start


def _invoice_publisher() -> Callable[[dict], None]:
    sqs = _once(lambda: aws_client("sqs"))

    def publish(event: dict) -> None:
        s = settings()
        if not s.invoice_queue_url:
            raise RuntimeError("set SATFLOW_INVOICE_QUEUE_URL")
        sqs().send_message(QueueUrl=s.invoice_queue_url, MessageBody=json.dumps(event, sort_keys=True))

    return publish


def _admin_key_provider(ttl_s: float = 300.0) -> Callable[[], str]:
    """The admin key from Secrets Manager, cached for ``ttl_s`` so a rotation is picked up within minutes.
    Locally SATFLOW_ADMIN_KEY wins. Never logged. A key with the account-key prefix is refused here, where it is
    loaded (app.accounts.AdminKeyMisconfigured), so authentication can tell the two kinds of key apart."""
    from satflow.app.accounts import check_admin_key

    s = settings()
    if s.admin_key:
        key = s.admin_key

        def local_admin_key() -> str:
            return check_admin_key(key)

        return local_admin_key
    cache: dict[str, Any] = {}

    def admin_key() -> str:
        # Checked on use, not at build: processes that never authenticate (the listener) need no admin secret.
        if not s.admin_key_secret_id:
            raise RuntimeError("set SATFLOW_ADMIN_KEY_SECRET_ID (or SATFLOW_ADMIN_KEY locally)")
        now = time.monotonic()
        if "value" not in cache or now - cache["at"] > ttl_s:
            secret = aws_client("secretsmanager").get_secret_value(SecretId=s.admin_key_secret_id)
            cache.update(value=secret["SecretString"].strip(), at=now)
        return check_admin_key(cache["value"])

    return admin_key
