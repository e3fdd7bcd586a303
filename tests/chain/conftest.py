"""On-chain deposit tests: moto in-process, the chain simulator behind the real Bitcoin Core RPC client through
httpx.MockTransport (no sockets), the BIP84 test vector's account key on regtest."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from satflow.adapters.bitcoind import BitcoinRpcClient
from satflow.adapters.dynamodb.chain import DynamoChainStore, forget_index_cache
from satflow.adapters.dynamodb.models import build_models
from satflow.adapters.dynamodb.utxos import DynamoUtxoStore
from satflow.app.accounts import ADMIN, create_account
from satflow.app.deposits import forget_mempool_cache, scan_chain
from satflow.domain.accounts import ALL_SCOPES, Principal
from satflow.domain.money import BTC
from satflow_dev.simulators.chain import ChainSimulator

from tests.conftest import TABLE, build_services

# BIP84 test vector account m/84'/1'/0' (mnemonic "abandon ... about"), as tests/unit/test_addresses.py pins it.
TEST_ACCOUNT_TPUB = (
    "tpubDC8msFGeGuwnKG9Upg7DM2b4DaRqg3CUZa5g8v2SRQ6K4NSkxUgd7HsL2XVWbVm39yBA4LAxysQAm397zwQSQoQgewGiYZqrA9DsP4zbQ1M"
)
POLICY = "1000000:1,10000000:3,*:6"


class Clock:
    """ISO timestamps one second apart: deterministic and strictly increasing (listing order is by first sighting)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> str:
        self.now += timedelta(seconds=1)
        return self.now.strftime("%Y-%m-%dT%H:%M:%S.000Z")


@pytest.fixture
def chain_sim() -> ChainSimulator:
    return ChainSimulator(seed=7)


@pytest.fixture
def svc(ddb, chain_sim):
    """Services as tests/conftest.build_services, plus the on-chain ports the way the brief's contract sets them."""
    forget_index_cache()
    forget_mempool_cache()
    svc = build_services(ddb)
    models = build_models(TABLE, "us-east-1")
    svc.chain = DynamoChainStore(ddb, models)
    svc.utxos = DynamoUtxoStore(ddb, models)
    rpc = BitcoinRpcClient("http://chain-sim:18443/", "satflow", "sim", transport=chain_sim.transport())
    svc.bitcoind = lambda: rpc
    svc.deposit_account_key = TEST_ACCOUNT_TPUB
    svc.network = "regtest"
    svc.deposit_policy = POLICY
    svc.clock = Clock()
    yield svc
    forget_index_cache()
    forget_mempool_cache()


def principal(account_id: str) -> Principal:
    return Principal(account_id=account_id, scopes=frozenset(ALL_SCOPES))


@pytest.fixture
def alice(svc) -> str:
    return create_account(svc, ADMIN, "tg:alice", 1)[0].account_id


@pytest.fixture
def bob(svc) -> str:
    return create_account(svc, ADMIN, "tg:bob", 1)[0].account_id


def balance(svc, owner: str) -> tuple[int, int, int]:
    """(available, pending_out, pending_in) in msat."""
    for b in svc.ledger.balances(owner):
        if b.account.asset == BTC:
            return b.available, b.pending_out, b.pending_in
    return 0, 0, 0


def scan(svc, **kwargs) -> dict:
    return scan_chain(svc, **kwargs)


def assert_invariants(svc, *expected_violations: str) -> None:
    report = svc.ledger.check_invariants()
    assert report.violations == tuple(expected_violations), report.violations
