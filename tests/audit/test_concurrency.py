"""Concurrency on ONE audit chain, through the locked moto server (real HTTP, real conditional transactions):
writers never wait for each other on the audit path (no head, no retries), and two sealers racing on the chain (the
stream path and the sweeper) seal every entry exactly once, contiguously."""
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


def run_all(targets) -> None:
    threads = [threading.Thread(target=t) for t in targets]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def test_concurrent_writers_on_one_chain_never_retry_and_seal_contiguously(server_svc):
    svc = server_svc
    senders = [add_account(svc, f"acc_w{i}", funds=1_000_000) for i in range(WRITERS)]
    add_account(svc, "acc_sink")
    results, failures, attempts = [], [], []
    lock = threading.Lock()
    start = threading.Barrier(WRITERS)

    def writer(sender: str) -> None:
        start.wait()
        for n in range(PER_WRITER):
            t = internal_transfer(transfer_id=f"tr_{sender}_{n}", sender=sender, recipient="acc_sink",
                                  amount_msat=1_000 + n, created_at=NOW, shards=SHARDS)

            def execute(extra, t=t):
                with lock:
                    attempts.append(t.id)
                return svc.ledger.execute(t, extra)

            try:
                result = with_audit(svc, transfer_entry(t, actor=sender, action="transfer.internal"), execute,
                                    shard=SHARD)
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                with lock:
                    failures.append(repr(exc))
            else:
                with lock:
                    results.append(result)

    run_all([lambda s=s: writer(s) for s in senders])
    assert not failures, failures
    assert len(results) == len(attempts) == WRITERS * PER_WRITER  # not one retry: nothing shared to collide on
    pending = svc.audit.pending(SHARD, 1000)
    assert len(pending) == WRITERS * PER_WRITER and svc.audit.head(SHARD) is None

    # Two sealers at once (the stream path and the sweeper), both given every entry.
    outcomes = []
    run_all([lambda: outcomes.append(svc.audit.seal(SHARD, pending, from_stream=True)),
             lambda: outcomes.append(svc.audit.seal(SHARD, pending, from_stream=False))])
    records = svc.audit.records(SHARD, limit=100)
    assert [r.seq for r in records] == list(range(1, WRITERS * PER_WRITER + 1))
    assert sorted(r.subject_ids[2] for r in records) == sorted(r.transfer.id for r in results)
    assert sum(len(o.sealed) for o in outcomes) == len(records)  # each entry sealed once, by one of them
    assert svc.audit.head(SHARD) == (len(records), records[-1].hash) and svc.audit.pending(SHARD) == []
    assert svc.audit.verify(SHARD).ok
    assert svc.ledger.balances("acc_sink")[0].available == sum(r.transfer.amount for r in results)
    print(f"\nrecords={len(records)} head_retries={sum(o.head_retries for o in outcomes)}")
