"""Limit fixtures: services with a limit store, accounts, funding and a settable clock."""
from __future__ import annotations

import pytest

from satflow.domain.accounts import ALL_SCOPES, Account, AccountStatus, Principal
from satflow.domain.templates import admin_adjustment, internal_transfer

from tests.conftest import SHARDS, TABLE, build_services

T0 = 1_795_000_000 // 3_600 * 3_600  # an exact hour boundary (2026-11-18T...)
SAT = 1_000


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def unix(self) -> int:
        return self.now

    def iso(self) -> str:
        from satflow.app.ports import iso_from_unix

        return iso_from_unix(self.now)


def with_limits(svc, client, tier_limits=None, clock: Clock | None = None, table: str = TABLE):
    """Services as the lead will wire them: svc.limits and svc.tier_limits set after construction."""
    from satflow.adapters.dynamodb.limits import DynamoLimitStore
    from satflow.adapters.dynamodb.models import build_models
    from satflow.domain.limits import DEFAULT_TIER_LIMITS

    svc.limits = DynamoLimitStore(client, build_models(table, "us-east-1"))
    svc.tier_limits = dict(tier_limits or DEFAULT_TIER_LIMITS)
    if clock is not None:
        svc.unix_clock, svc.clock = clock.unix, clock.iso
    return svc


def open_account(svc, account_id: str, tier: int, fund_msat: int = 0) -> Principal:
    svc.accounts.create(Account(account_id, f"ref:{account_id}", tier, AccountStatus.ACTIVE, "2026-01-01T00:00:00.000Z"),
                        f"hash-{account_id}", "sk_", list(ALL_SCOPES))
    if fund_msat:
        svc.ledger.execute(admin_adjustment(transfer_id=f"fund-{account_id}", account_id=account_id,
                                            amount_msat=fund_msat, direction="credit", reason="seed",
                                            created_at="2026-01-01T00:00:00.000Z", shards=SHARDS))
    return Principal(account_id=account_id, scopes=frozenset(ALL_SCOPES))


def send(svc, transfer_id: str, sender: str, recipient: str, amount_msat: int, attempts: int = 5):
    """An internal transfer through admit_with_retry, as create_transfer will do it."""
    from satflow.app.limits import admit_with_retry

    transfer = internal_transfer(transfer_id=transfer_id, sender=sender, recipient=recipient,
                                 amount_msat=amount_msat, created_at=svc.clock(), shards=SHARDS)
    return admit_with_retry(svc, sender, amount_msat, lambda extra: svc.ledger.execute(transfer, extra),
                            attempts=attempts)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def lsvc(ddb, clock):
    return with_limits(build_services(ddb), ddb, clock=clock)
