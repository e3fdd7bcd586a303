"""Concurrent writers on ONE audit chain, through the locked moto server (real HTTP, real conditional
transactions): every transfer and its record land together, and the chain stays contiguous."""
from __future__ import annotations

import threading

import boto3
import pytest
from botocore.config import Config

from satflow.app.audit import with_audit
from satflow.domain.audit import transfer_entry
from satflow.domain.templates import internal_transfer
from satflow_dev.runtime.moto_server import start_moto_server

from tests.conftest import SHARDS, create_table

from .conftest import NOW, add_account, audit_services

TABLE = "satflow-audit-concurrency"  # moto's state is process-wide: a table of our own
WRITERS, PER_WRITER, SHARD = 3, 8, 2


@pytest.fixture
def server_svc():
    url, stop = start_moto_server(execute_state_machines=False)
    client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=url,
                          config=Config(max_pool_connections=WRITERS * 2, retries={"max_attempts": 1}))
    create_table(client, TABLE)
    svc = audit_services(client, TABLE)
    yield svc
    client.delete_table(TableName=TABLE)
    stop()


def test_concurrent_writers_on_one_shard_all_succeed_with_contiguous_seqs(server_svc):
    svc = server_svc
    senders = [add_account(svc, f"acc_w{i}", funds=1_000_000) for i in range(WRITERS)]
    add_account(svc, "acc_sink")
    results, failures, retries = [], [], []
    lock = threading.Lock()
    start = threading.Barrier(WRITERS)

    def writer(sender: str) -> None:
        start.wait()
        for n in range(PER_WRITER):
            t = internal_transfer(transfer_id=f"tr_{sender}_{n}", sender=sender, recipient="acc_sink",
                                  amount_msat=1_000 + n, created_at=NOW, shards=SHARDS)
            attempts = []

            def execute(extra, t=t, attempts=attempts):
                attempts.append(1)
                return svc.ledger.execute(t, extra)

            try:
                result = with_audit(svc, transfer_entry(t, actor=sender, action="transfer.internal"), execute,
                                    attempts=30, shard=SHARD)
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                with lock:
                    failures.append(repr(exc))
            else:
                with lock:
                    results.append(result)
                    retries.append(len(attempts) - 1)

    threads = [threading.Thread(target=writer, args=(s,)) for s in senders]
    for th in threads:
        th.start()
    for th in threads:
        th.join()

    assert not failures, failures
    assert len(results) == WRITERS * PER_WRITER and not any(r.replayed for r in results)
    records = svc.audit.records(SHARD, limit=100)
    assert [r.seq for r in records] == list(range(1, WRITERS * PER_WRITER + 1))
    assert sorted(r.subject_ids[2] for r in records) == sorted(r.transfer.id for r in results)
    assert svc.audit.head(SHARD) == (len(records), records[-1].hash)
    assert svc.audit.verify(SHARD).ok
    assert svc.ledger.balances("acc_sink")[0].available == sum(r.transfer.amount for r in results)
    assert sum(retries) > 0, "the writers never collided: the test did not exercise the head condition"
    print(f"\nrecords={len(records)} retries={sum(retries)}")


def test_two_writers_racing_for_the_same_head_both_succeed_with_default_attempts(server_svc):
    """Both read the same head; one wins, the other's condition fails, it re-prepares and lands next."""
    svc = server_svc
    for sender in ("acc_p", "acc_q"):
        add_account(svc, sender, funds=10_000)
    add_account(svc, "acc_sink")
    both_prepared = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def writer(sender: str) -> None:
        t = internal_transfer(transfer_id=f"tr_{sender}", sender=sender, recipient="acc_sink", amount_msat=500,
                              created_at=NOW, shards=SHARDS)
        calls = []

        def execute(extra):
            calls.append(1)
            if len(calls) == 1:
                both_prepared.wait(timeout=10)  # both hold items prepared on the same head
            return svc.ledger.execute(t, extra)

        try:
            outcomes[sender] = (with_audit(svc, transfer_entry(t, actor=sender, action="transfer.internal"),
                                           execute, shard=SHARD), len(calls))
        except Exception as exc:  # noqa: BLE001
            outcomes[sender] = exc

    threads = [threading.Thread(target=writer, args=(s,)) for s in ("acc_p", "acc_q")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()

    assert all(isinstance(o, tuple) for o in outcomes.values()), outcomes
    assert sorted(calls for _, calls in outcomes.values()) == [1, 2]  # exactly one lost the race once
    records = svc.audit.records(SHARD)
    assert [r.seq for r in records] == [1, 2] and records[1].prev_hash == records[0].hash
    assert {r.subject_ids[0] for r in records} == {"acc_p", "acc_q"}
    assert svc.audit.verify(SHARD).ok
