"""The composition root: builds adapters from settings on first use (never at import), once per container."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from .app.ports import Services
from .config import settings

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
    """Tests and the local runtime swap the whole graph (None = rebuild from settings on next use)."""
    global _services
    _services = svc


def aws_client(service: str) -> Any:
    import boto3  # the Lambda runtime provides boto3; imported here so cold imports stay light

    s = settings()
    return boto3.client(service, region_name=s.region, endpoint_url=s.endpoint_url)


def _build() -> Services:
    from .adapters.dynamodb.accounts import DynamoAccounts
    from .adapters.dynamodb.ledger import DynamoLedger
    from .adapters.dynamodb.models import build_models

    s = settings()
    client = aws_client("dynamodb")
    models = build_models(s.table_name, s.region, s.endpoint_url)
    return Services(
        ledger=DynamoLedger(client, models, s.system_shards),
        accounts=DynamoAccounts(client, models),
        admin_key=_admin_key_provider(),
        system_shards=s.system_shards,
    )


def _admin_key_provider(ttl_s: float = 300.0) -> Callable[[], str]:
    """The admin key from Secrets Manager, cached for ``ttl_s`` so a rotation is picked up within minutes.
    Locally SATFLOW_ADMIN_KEY wins. Never logged."""
    s = settings()
    if s.admin_key:
        key = s.admin_key
        return lambda: key
    if not s.admin_key_secret_id:
        raise RuntimeError("set SATFLOW_ADMIN_KEY_SECRET_ID (or SATFLOW_ADMIN_KEY locally)")
    cache: dict[str, Any] = {}

    def admin_key() -> str:
        now = time.monotonic()
        if "value" not in cache or now - cache["at"] > ttl_s:
            secret = aws_client("secretsmanager").get_secret_value(SecretId=s.admin_key_secret_id)
            cache.update(value=secret["SecretString"].strip(), at=now)
        return cache["value"]

    return admin_key
