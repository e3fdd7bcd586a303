"""Audit fixtures: a ledger + accounts + audit store on in-process moto."""
from __future__ import annotations

import pytest

from satflow.adapters.dynamodb.audit import DynamoAuditStore
from satflow.adapters.dynamodb.models import build_models
from satflow.domain.accounts import Account, AccountStatus, Scope
from satflow.domain.templates import admin_adjustment

from tests.conftest import SHARDS, TABLE, build_services

NOW = "2026-11-21T12:00:00.000Z"
AUDIT_SHARDS = 4


def add_account(svc, account_id: str, funds: int = 0, n: int = 0) -> str:
    svc.accounts.create(Account(account_id, f"ref:{account_id}", 1, AccountStatus.ACTIVE, NOW), f"h-{account_id}",
                        "sk_", [Scope.SEND, Scope.READ])
    if funds:
        svc.ledger.execute(admin_adjustment(transfer_id=f"fund-{account_id}", account_id=account_id,
                                            amount_msat=funds, direction="credit", reason="seed", created_at=NOW,
                                            shards=SHARDS))
    return account_id


class TickingClock:
    """Wall clock that moves 1 ms per reading: entries written one after another sort in that order."""

    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def audit_services(client, table: str = TABLE, shards: int = AUDIT_SHARDS):
    """Services whose ledger is the RAW adapter: these tests drive ``with_audit`` by hand (the building block under
    app.recorded_ledger); tests/audit/test_recorded_ledger.py covers the wired ledger."""
    svc = build_services(client, table)
    svc.ledger = svc.ledger.inner
    svc.audit = DynamoAuditStore(client, build_models(table, "us-east-1"), shards=shards, clock=TickingClock(),
                                 sleep=lambda s: None)
    return svc


@pytest.fixture
def asvc(ddb):
    return audit_services(ddb)


@pytest.fixture
def store(asvc):
    return asvc.audit
