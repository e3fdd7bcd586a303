"""THE race the issue asks about, over real HTTP against the locked moto server: concurrent sends of one account
whose amounts together exceed its daily limit. Exactly one succeeds, the other gets LIMIT_EXCEEDED; balances and
the stored limit state agree."""
import random
import threading

import boto3
import pytest
from botocore.config import Config

from satflow.domain import errors
from satflow.domain.limits import LimitExceeded, LimitStateChanged, TierLimits, VelocityExceeded, usage
from satflow.domain.templates import internal_transfer
from satflow_dev.runtime.moto_server import start_moto_server

from tests.conftest import SHARDS, build_services, create_table
from .conftest import SAT, Clock, open_account, with_limits

TABLE = "satflow-limits-race"  # the moto server's state is process-wide: a table of our own
LIMITS = {t: TierLimits(t, per_tx_msat=600 * SAT, daily_msat=1_000 * SAT, monthly_msat=10_000 * SAT,
                        sends_per_hour=100) for t in range(4)}
THREADS = 8


@pytest.fixture(scope="module")
def server_svc():
    url, stop = start_moto_server(execute_state_machines=False)
    client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=url,
                          config=Config(max_pool_connections=THREADS * 2, retries={"max_attempts": 1}))
    create_table(client, TABLE)
    svc = with_limits(build_services(client, table=TABLE), client, tier_limits=LIMITS, clock=Clock(), table=TABLE)
    yield svc
    stop()


def _available(svc, owner):
    return next((b.available for b in svc.ledger.balances(owner)), 0)


def _race(svc, sender, recipient, amounts, barrier=None, attempts=5):
    """One thread per amount, each an internal transfer through admit_with_retry. With a barrier, every thread
    waits inside its first execute, i.e. after all of them read the same limit version."""
    from satflow.app.limits import admit_with_retry

    outcomes: dict[str, object] = {}
    attempts_seen: dict[str, int] = {}
    lock = threading.Lock()

    def run(i, amount):
        tid = f"{sender}-race-{i}"
        transfer = internal_transfer(transfer_id=tid, sender=sender, recipient=recipient, amount_msat=amount,
                                     created_at=svc.clock(), shards=SHARDS)
        calls = 0

        def execute(extra):
            nonlocal calls
            calls += 1
            if barrier is not None and calls == 1:
                barrier.wait()
            return svc.ledger.execute(transfer, extra)

        try:
            result = admit_with_retry(svc, sender, amount, execute, attempts=attempts)
        except errors.SatflowError as exc:
            result = exc
        with lock:
            outcomes[tid] = result
            attempts_seen[tid] = calls

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(amounts)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not any(th.is_alive() for th in threads)
    return outcomes, attempts_seen


def test_two_concurrent_sends_over_the_daily_limit_exactly_one_succeeds(server_svc):
    svc = server_svc
    a, b = "acc_race_a", "acc_race_b"
    open_account(svc, a, 0, fund_msat=5_000 * SAT)
    open_account(svc, b, 0)
    # 600 + 600 sat > the 1,000 sat daily limit; each alone is within per-tx and daily.
    outcomes, calls = _race(svc, a, b, [600 * SAT, 600 * SAT], barrier=threading.Barrier(2, timeout=20))

    won = [tid for tid, r in outcomes.items() if not isinstance(r, Exception)]
    lost = [r for r in outcomes.values() if isinstance(r, Exception)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert isinstance(lost[0], LimitExceeded) and lost[0].code == "LIMIT_EXCEEDED"
    assert lost[0].details["limit"] == "daily" and lost[0].details["used_msat"] == 600 * SAT
    # Both read version 0 before either committed: the loser's first transaction was cancelled by the version
    # condition, its second attempt confirmed the rejection.
    assert sorted(calls.values()) == [1, 2]
    loser_id = next(tid for tid in outcomes if tid not in won)
    assert svc.ledger.get_transfer(loser_id) is None and svc.ledger.get_transfer(won[0]) is not None
    assert _available(svc, a) == 4_400 * SAT and _available(svc, b) == 600 * SAT
    state, version = svc.limits.read(a)
    assert version == 1 and usage(state, svc.unix_clock()) == (600 * SAT, 600 * SAT, 1)
    assert svc.ledger.check_invariants().ok


def test_many_concurrent_sends_never_pass_the_limit_together(server_svc):
    svc = server_svc
    a, b = "acc_race_c", "acc_race_d"
    open_account(svc, a, 0, fund_msat=50_000 * SAT)
    open_account(svc, b, 0)
    rng = random.Random(5)
    amounts = [rng.randint(50, 300) * SAT for _ in range(THREADS * 2)]
    outcomes, _ = _race(svc, a, b, amounts, attempts=20)

    accepted = {tid: r for tid, r in outcomes.items() if not isinstance(r, Exception)}
    refused = [r for r in outcomes.values() if isinstance(r, Exception)]
    assert all(isinstance(r, (LimitExceeded, VelocityExceeded, LimitStateChanged)) for r in refused), refused
    total = sum(r.transfer.amount for r in accepted.values())
    assert 0 < total <= 1_000 * SAT
    assert any(isinstance(r, LimitExceeded) for r in refused)  # 16 sends of >= 50 sat cannot all fit 1,000 sat
    assert _available(svc, b) == total and _available(svc, a) == 50_000 * SAT - total
    state, version = svc.limits.read(a)
    assert version == len(accepted) and usage(state, svc.unix_clock()) == (total, total, len(accepted))
    for tid in outcomes:
        assert (svc.ledger.get_transfer(tid) is not None) == (tid in accepted)
    assert svc.ledger.check_invariants().ok
