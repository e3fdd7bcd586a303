"""Shared fixtures. AWS is always moto (in-process, or the locked moto server for threaded tests)."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

# Fake credentials before anything creates a client: a test must never reach real AWS.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1",
)
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_PROFILE", None)

TABLE = "satflow-test"
SHARDS = 4
ADMIN_KEY = "admin-test-key-0123456789"
SANCTIONS_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "ofac" / "sdn_sample.xml"


def create_table(client, name: str = TABLE) -> None:
    """The table as template.yaml declares it (pk/sk); tests/contracts keeps the two in step."""
    client.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    )


AUDIT_SHARDS = 4


def recorded_ledger(client, models, shards: int = SHARDS, audit_shards: int = AUDIT_SHARDS):
    """The ledger as production wires it: every execute carries its audit record and its outbox events
    (app.recorded_ledger); ``.webhooks`` is the outbox's store."""
    from satflow.adapters.dynamodb.audit import DynamoAuditStore
    from satflow.adapters.dynamodb.ledger import DynamoLedger
    from satflow.adapters.dynamodb.webhooks import DynamoWebhookStore
    from satflow.app.recorded_ledger import RecordedLedger

    webhooks = DynamoWebhookStore(client, models)
    ledger = RecordedLedger(DynamoLedger(client, models, shards), DynamoAuditStore(client, models, shards=audit_shards),
                            outbox_items=webhooks.transfer_outbox_items)
    ledger.webhooks = webhooks
    return ledger


def build_services(client, table: str = TABLE, shards: int = SHARDS, audit_shards: int = AUDIT_SHARDS):
    from satflow.adapters.dynamodb.accounts import DynamoAccounts
    from satflow.adapters.dynamodb.lightning import DynamoLightningStore
    from satflow.adapters.dynamodb.limits import DynamoLimitStore
    from satflow.adapters.dynamodb.models import build_models
    from satflow.adapters.dynamodb.risk import DynamoRiskStore
    from satflow.app.ports import Services

    from satflow.adapters.dynamodb.sanctions import DynamoSanctionsStore

    models = build_models(table, "us-east-1")
    ledger = recorded_ledger(client, models, shards, audit_shards)
    return Services(ledger=ledger, audit=ledger.audit, webhooks=ledger.webhooks, accounts=DynamoAccounts(client, models),
                    admin_key=lambda: ADMIN_KEY, system_shards=shards,
                    lightning=DynamoLightningStore(client, models), limits=DynamoLimitStore(client, models),
                    sanctions=loaded_sanctions_store(DynamoSanctionsStore(client, table)),
                    risk=DynamoRiskStore(client, models))


@functools.lru_cache(maxsize=1)
def sample_sanctions_list():
    """tests/fixtures/ofac/sdn_sample.xml parsed (a miniature of OFAC's SDN.XML with regtest entries)."""
    from satflow.domain.sanctions import parse_sdn_xml

    return parse_sdn_xml(SANCTIONS_FIXTURE.read_bytes())


def loaded_sanctions_store(store):
    """Every test ledger screens against the sample list, as a deployed stack would after its first refresh
    (screening fails closed without a list)."""
    if store.head() is None:
        store.store(sample_sanctions_list(), expected_version=0, now="2026-11-21T00:00:00.000Z")
    return store


def simulated_lnd(sim):
    """An LND client speaking to the Lightning simulator through httpx.MockTransport (no sockets)."""
    from satflow.adapters.lnd import LndRestClient

    client = LndRestClient.from_secret({**sim.secret(), "url": "https://lnd.sim:8080"}, transport=sim.transport())
    return lambda: client


@pytest.fixture
def aws():
    from moto import mock_aws

    with mock_aws():
        yield


@pytest.fixture
def ddb(aws):
    import boto3

    client = boto3.client("dynamodb", region_name="us-east-1")
    create_table(client)
    return client


@pytest.fixture
def svc(ddb):
    return build_services(ddb)


@pytest.fixture
def ledger(svc):
    return svc.ledger
