"""Many threads transferring among a few accounts through the adapter, against the locked moto server and against
DynamoDB Local (real HTTP, real conditional transactions; DynamoDB Local also really runs them concurrently):
money is conserved and every accepted transfer is applied exactly once."""
import random
import threading
from collections import Counter

import boto3
import pytest
from botocore.config import Config

from satflow.domain import errors
from satflow.domain.accounts import Account, AccountStatus, Scope
from satflow.domain.templates import admin_adjustment, internal_transfer
from satflow_dev.runtime.moto_server import start_moto_server

from tests.conftest import BACKENDS, build_services, create_table, fresh_table

NOW = "2026-11-21T12:00:00.000Z"
ACCOUNTS = [f"acc_c{i}" for i in range(4)]
THREADS, PER_THREAD, START = 8, 25, 5_000


@pytest.fixture(params=BACKENDS)
def server_ledger(request):
    config = Config(max_pool_connections=THREADS * 2, retries={"max_attempts": 1})
    if request.param == "moto":
        url, stop = start_moto_server(execute_state_machines=False)
        client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=url, config=config)
        create_table(client)
    else:
        client = request.getfixturevalue("dynamodb_local").client(config=config)
        fresh_table(client)
        stop = client.close
    svc = build_services(client)
    for i, acc in enumerate(ACCOUNTS):
        svc.accounts.create(Account(acc, f"c:{i}", 1, AccountStatus.ACTIVE, NOW), f"hash{i}", "sk_", [Scope.SEND])
        svc.ledger.execute(admin_adjustment(transfer_id=f"fund{i}", account_id=acc, amount_msat=START,
                                            direction="credit", reason="seed", created_at=NOW, shards=4))
    yield svc.ledger
    stop()


def test_concurrent_transfers_conserve_money_and_apply_once(server_ledger):
    ledger = server_ledger
    applied: list = []
    replays = Counter()
    rejected = Counter()
    lock = threading.Lock()
    rng = random.Random(7)
    # Every transfer is submitted by two threads (a client retry racing the original): applied once, replayed once.
    plan = []
    for n in range(THREADS * PER_THREAD // 2):
        a, b = rng.sample(ACCOUNTS, 2)
        plan.append(internal_transfer(transfer_id=f"x{n}", sender=a, recipient=b, amount_msat=rng.randint(1, 900),
                                      created_at=NOW, shards=4))
    work = plan + plan
    rng.shuffle(work)
    chunks = [work[i::THREADS] for i in range(THREADS)]

    def run(chunk):
        for t in chunk:
            try:
                result = ledger.execute(t)
            except errors.InsufficientFunds:
                with lock:
                    rejected[t.id] += 1
            except errors.TransientError:
                with lock:
                    rejected[t.id] += 1  # moto reports a conflict; nothing was written
            else:
                with lock:
                    (replays.update([t.id]) if result.replayed else applied.append(t))

    threads = [threading.Thread(target=run, args=(c,)) for c in chunks]
    for th in threads:
        th.start()
    for th in threads:
        th.join()

    ids = [t.id for t in applied]
    assert len(ids) == len(set(ids)), "a transfer was applied twice"
    assert len(applied) > len(plan) // 2, "most transfers should have gone through"
    expected = {acc: START for acc in ACCOUNTS}
    for t in applied:
        expected[t.debit.owner] -= t.amount
        expected[t.credit.owner] += t.amount
    for acc in ACCOUNTS:
        (b,) = ledger.balances(acc)
        assert b.available == expected[acc] >= 0, acc
    report = ledger.check_invariants()
    assert report.ok, report.violations
    for t in applied:  # stored exactly once, with its history on both sides
        assert ledger.get_transfer(t.id).same_as(t)
    print(f"\napplied={len(applied)} replayed={sum(replays.values())} rejected={sum(rejected.values())}")
