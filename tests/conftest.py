"""Shared fixtures. AWS is moto (in-process, or the locked moto server for threaded tests); the ledger adapter
and concurrency tests also run on DynamoDB Local (``ddb_backend``: moto | dynamodb_local)."""
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
    from satflow.adapters.dynamodb.batch import read_many
    from satflow.adapters.dynamodb.lightning import DynamoLightningStore
    from satflow.adapters.dynamodb.limits import DynamoLimitStore
    from satflow.adapters.dynamodb.models import build_models
    from satflow.adapters.dynamodb.risk import DynamoRiskStore
    from satflow.app.ports import Services

    from satflow.adapters.dynamodb.sanctions import DynamoSanctionsStore

    models = build_models(table, "us-east-1")
    ledger = recorded_ledger(client, models, shards, audit_shards)
    return Services(ledger=ledger, audit=ledger.audit, webhooks=ledger.webhooks, accounts=DynamoAccounts(client, models),
                    admin_key=lambda: ADMIN_KEY, system_shards=shards, read_many=read_many,
                    lightning=DynamoLightningStore(client, models), limits=DynamoLimitStore(client, models),
                    sanctions=loaded_sanctions_store(DynamoSanctionsStore(client, table)),
                    risk=DynamoRiskStore(client, models), **_ecosystem_stores(client, table))


def _ecosystem_stores(client, table: str) -> dict:
    from satflow.adapters.dynamodb.ecosystem import DynamoKeyStore, DynamoLnurlStore, DynamoRateLimiter

    return {"keys": DynamoKeyStore(client, table), "lnurl": DynamoLnurlStore(client, table),
            "rate_limiter": DynamoRateLimiter(client, table)}


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
def ddb_moto(aws):
    import boto3

    client = boto3.client("dynamodb", region_name="us-east-1")
    create_table(client)
    return client


@pytest.fixture
def ddb(ddb_moto):
    return ddb_moto


# --- DynamoDB Local: the second backend of the ledger adapter tests -------------------------------------------
BACKENDS = ["moto", pytest.param("dynamodb_local", marks=pytest.mark.realnodes)]


def pytest_configure(config):
    config.addinivalue_line("markers", "realnodes: needs the regtest binaries or DynamoDB Local (real-node tier)")


@pytest.fixture(scope="session")
def dynamodb_local():
    """One DynamoDB Local (in memory) for the session; skipped where it is not fetched, a failure in CI."""
    from satflow_dev.regtest.toolchain import dynamodb_local_built

    if not dynamodb_local_built():
        message = "DynamoDB Local not fetched: run `make regtest-build` (python -m satflow_dev.regtest build)"
        if os.environ.get("SATFLOW_REALNODES") == "require":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from satflow_dev.regtest.dynamodb_local import DynamoDBLocal

    with DynamoDBLocal() as server:
        yield server


def fresh_table(client, name: str = TABLE) -> None:
    """Drop and recreate the table: each test starts empty on a long-lived DynamoDB Local."""
    try:
        client.delete_table(TableName=name)
    except client.exceptions.ResourceNotFoundException:
        pass
    create_table(client, name)


@pytest.fixture(params=BACKENDS)
def ddb_backend(request):
    return request.param


@pytest.fixture
def ddb_on_backend(request, ddb_backend):
    """A DynamoDB client with the test table, on moto or on DynamoDB Local. A module runs its tests on both by
    overriding ``ddb`` with it: ``@pytest.fixture def ddb(ddb_on_backend): return ddb_on_backend``."""
    if ddb_backend == "moto":
        return request.getfixturevalue("ddb_moto")
    server = request.getfixturevalue("dynamodb_local")
    # pynamodb's own calls (Model.save in a test) follow AWS_ENDPOINT_URL; our adapters use the client below.
    request.getfixturevalue("monkeypatch").setenv("AWS_ENDPOINT_URL", server.endpoint_url)
    client = server.client()
    fresh_table(client)
    return client


@pytest.fixture
def svc(ddb):
    return build_services(ddb)


@pytest.fixture
def ledger(svc):
    return svc.ledger


@pytest.fixture(autouse=True)
def _aws_calls_are_declared():
    """Every AWS call a function's code makes in any test must be declared in satflow/aws_calls.py (and
    tests/contracts/test_iam.py checks template.yaml grants what is declared): moto enforces no IAM."""
    from tests import aws_calls_recorder

    aws_calls_recorder.install()
    aws_calls_recorder.start()
    yield
    missing = aws_calls_recorder.undeclared()
    assert not missing, "\n".join(missing)
