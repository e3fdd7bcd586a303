"""Inbound Lightning tests: moto in-process, the Lightning simulator through httpx.MockTransport, one fake clock
shared by the simulated node and the services (expiry is a matter of moving it)."""
from __future__ import annotations

import pytest

from satflow.adapters.dynamodb.lightning import DynamoLightningStore
from satflow.adapters.dynamodb.models import build_models
from satflow.adapters.lnd import LndRestClient
from satflow.app.accounts import ADMIN, create_account
from satflow.app.ports import iso_from_unix
from satflow.domain.accounts import ALL_SCOPES, Principal
from satflow.domain.templates import admin_adjustment

from tests.conftest import SHARDS, TABLE, build_services, create_table

START = 1_795_262_400  # 2026-11-21T09:20:00Z


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def boto_session():
    """One boto3 session for the suite: a fresh session re-reads botocore's endpoint data (~0.4 s per client).
    moto is imported first: it hooks sessions created after its import (its clients reach moto, never AWS)."""
    import boto3
    import moto  # noqa: F401

    return boto3.session.Session(region_name="us-east-1")


@pytest.fixture
def ddb(aws, boto_session):
    """As tests/conftest.py's ddb (moto, the table as template.yaml declares it), from the shared session."""
    client = boto_session.client("dynamodb")
    create_table(client)
    return client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock):
    from satflow_dev.simulators.lightning import LightningSimulator

    return LightningSimulator(clock=clock)


@pytest.fixture
def lnd(sim) -> LndRestClient:
    return LndRestClient.from_secret(sim.secret(), transport=sim.transport())


@pytest.fixture
def published() -> list[dict]:
    """What the services published to the invoice events queue."""
    return []


@pytest.fixture
def started() -> list[str]:
    """Payment workflows the use cases asked to start."""
    return []


@pytest.fixture
def svc(ddb, lnd, clock, published, started):
    svc = build_services(ddb)
    svc.lightning = DynamoLightningStore(ddb, build_models(TABLE, "us-east-1"))
    svc.lnd = lambda: lnd
    svc.publish_invoice_event = published.append
    svc.start_payment = started.append
    svc.unix_clock = lambda: int(clock())
    svc.clock = lambda: iso_from_unix(int(clock()))
    return svc


@pytest.fixture
def users(svc):
    """(alice, bob) as principals holding every scope."""
    alice, _ = create_account(svc, ADMIN, "tg:alice", 1)
    bob, _ = create_account(svc, ADMIN, "tg:bob", 1)
    return (Principal(alice.account_id, frozenset(ALL_SCOPES)), Principal(bob.account_id, frozenset(ALL_SCOPES)))


def fund(svc, account_id: str, amount_msat: int, tid: str = "fund-1") -> None:
    svc.ledger.execute(admin_adjustment(transfer_id=tid, account_id=account_id, amount_msat=amount_msat,
                                        direction="credit", reason="test funding", created_at=svc.clock(),
                                        shards=SHARDS))


def available(svc, account_id: str) -> int:
    return next((b.available for b in svc.ledger.balances(account_id) if b.account.asset == "BTC"), 0)


def credits(svc, account_id: str) -> list:
    """History entries of an account (newest first)."""
    return list(svc.ledger.history(account_id, "BTC", 100).items)


def assert_invariants(svc) -> None:
    report = svc.ledger.check_invariants()
    assert report.ok, report
