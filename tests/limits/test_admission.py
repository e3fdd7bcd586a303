"""admit_with_retry / release_with_retry / get_limits through the real ledger transaction on moto."""
import pytest

from satflow.app import limits as app_limits
from satflow.app.limits import admit_with_retry, get_limits, release_with_retry
from satflow.domain import errors
from satflow.domain.accounts import Principal, Scope
from satflow.domain.ledger import LedgerAccount, TransferKind, new_transfer, void_pending
from satflow.domain.limits import (
    DEFAULT_TIER_LIMITS, LimitExceeded, LimitStateChanged, TierLimits, VelocityExceeded,
)

from tests.conftest import SHARDS, build_services
from .conftest import SAT, open_account, send

A, B = "acc_alice", "acc_bob"
TIER0 = DEFAULT_TIER_LIMITS[0]


@pytest.fixture
def svc(lsvc):
    open_account(lsvc, A, 0, fund_msat=100_000_000 * SAT)
    open_account(lsvc, B, 0)
    return lsvc


def _available(svc, owner):
    return next((b.available for b in svc.ledger.balances(owner)), 0)


def test_get_limits_before_and_after_sends(svc, clock):
    principal = Principal(A, frozenset({Scope.READ}))
    assert get_limits(svc, principal) == {
        "tier": 0, "per_tx_msat": 100_000_000, "daily_msat": 1_000_000_000, "monthly_msat": 10_000_000_000,
        "sends_per_hour": 10, "used_daily_msat": 0, "used_monthly_msat": 0, "sends_last_hour": 0}
    send(svc, "t1", A, B, 40_000 * SAT)
    clock.now += 3_600
    send(svc, "t2", A, B, 60_000 * SAT)
    got = get_limits(svc, principal)
    assert (got["used_daily_msat"], got["used_monthly_msat"], got["sends_last_hour"]) == (
        100_000 * SAT, 100_000 * SAT, 2)  # t1 is 60 min old: still inside its rounded-up velocity minute
    clock.now += 25 * 3_600
    got = get_limits(svc, principal)
    assert (got["used_daily_msat"], got["used_monthly_msat"], got["sends_last_hour"]) == (0, 100_000 * SAT, 0)


def test_get_limits_needs_the_read_scope(svc):
    with pytest.raises(errors.Forbidden):
        get_limits(svc, Principal(A, frozenset({Scope.SEND})))
    with pytest.raises(errors.Unauthorized):
        get_limits(svc, Principal("acc_gone", frozenset({Scope.READ})))


def test_a_rejected_send_writes_nothing(svc):
    with pytest.raises(LimitExceeded) as exc:
        send(svc, "big", A, B, TIER0.per_tx_msat + 1)
    assert exc.value.code == "LIMIT_EXCEEDED" and exc.value.details["limit"] == "per_tx"
    assert "per-transaction limit exceeded" in str(exc.value)
    assert svc.ledger.get_transfer("big") is None and _available(svc, B) == 0
    assert svc.limits.read(A)[1] == 0


def test_daily_limit_through_the_ledger(svc):
    for i in range(10):
        send(svc, f"d{i}", A, B, 100_000 * SAT)  # 10 x per_tx = exactly the tier-0 daily limit
    assert _available(svc, B) == 1_000_000 * SAT
    with pytest.raises((LimitExceeded, VelocityExceeded)) as exc:
        send(svc, "d10", A, B, 1)
    assert isinstance(exc.value, LimitExceeded) and exc.value.details["limit"] == "daily"
    assert "daily limit exceeded" in exc.value.message and "0 sat left" in exc.value.message


def test_velocity_at_n_and_n_plus_1_through_the_ledger(svc, clock):
    for i in range(TIER0.sends_per_hour):
        send(svc, f"v{i}", A, B, 1_000)
        clock.now += 60
    with pytest.raises(VelocityExceeded) as exc:
        send(svc, "v-over", A, B, 1_000)
    assert exc.value.code == "VELOCITY_EXCEEDED" and "10 sends per hour" in exc.value.message
    assert svc.ledger.get_transfer("v-over") is None
    clock.now += 51 * 60  # the first send (minute 0) has left the 60-minute window
    send(svc, "v-later", A, B, 1_000)


def test_a_client_retry_of_a_committed_send_replays_even_when_the_limit_is_now_full(svc):
    for i in range(9):
        send(svc, f"f{i}", A, B, 100_000 * SAT)
    first = send(svc, "last", A, B, 100_000 * SAT)  # fills the daily limit
    again = send(svc, "last", A, B, 100_000 * SAT)  # the same transfer id: a retry, not a second send
    assert not first.replayed and again.replayed and again.transfer.same_as(first.transfer)
    assert svc.limits.read(A)[1] == 10 and _available(svc, B) == 1_000_000 * SAT


def test_tier_change_takes_effect_at_once(svc):
    amount = 150_000 * SAT  # above tier 0's per-tx limit, within tier 2's
    with pytest.raises(LimitExceeded):
        send(svc, "up-1", A, B, amount)
    svc.accounts.update(A, updated_at="2026-11-18T10:00:00.000Z", tier=2)
    send(svc, "up-2", A, B, amount)
    got = get_limits(svc, Principal(A, frozenset({Scope.READ})))
    assert got["tier"] == 2 and got["per_tx_msat"] == DEFAULT_TIER_LIMITS[2].per_tx_msat
    assert got["used_daily_msat"] == amount
    svc.accounts.update(A, updated_at="2026-11-18T10:00:01.000Z", tier=0)  # and back down: refused again
    with pytest.raises(LimitExceeded):
        send(svc, "down", A, B, amount)


def test_configured_tier_limits_are_used(svc):
    from satflow.domain.limits import parse_tier_limits

    svc.tier_limits = parse_tier_limits('{"0": {"per_tx_sat": 10}}')
    with pytest.raises(LimitExceeded) as exc:
        send(svc, "cfg", A, B, 11 * SAT)
    assert exc.value.details["limit_msat"] == 10 * SAT


def test_a_send_committed_in_between_is_seen_on_the_re_read(svc):
    """Deterministic interleaving: another send of the same account commits after our read, before our
    transaction. Our transaction is cancelled (LimitStateChanged), we re-read and the limit is now exceeded."""
    for i in range(8):
        send(svc, f"p{i}", A, B, 100_000 * SAT)  # 800,000 sat of the 1,000,000 sat daily limit
    calls = []

    def execute(extra):
        calls.append(extra)
        if len(calls) == 1:
            send(svc, "racer", A, B, 100_000 * SAT)  # 900,000 used now
            send(svc, "racer2", A, B, 100_000 * SAT)  # 1,000,000 used now
        t = _transfer(svc, "mine", 100_000 * SAT)
        return svc.ledger.execute(t, extra)

    with pytest.raises(LimitExceeded) as exc:
        admit_with_retry(svc, A, 100_000 * SAT, execute)
    assert len(calls) == 2 and calls[1][0].op == "ConditionCheck"  # the second attempt confirmed the rejection
    assert exc.value.details["used_msat"] == 1_000_000 * SAT
    assert svc.ledger.get_transfer("mine") is None and _available(svc, B) == 1_000_000 * SAT


def test_a_retry_that_still_fits_commits_once(svc):
    calls = []

    def execute(extra):
        calls.append(extra)
        if len(calls) == 1:
            send(svc, "racer", A, B, 10 * SAT)
        return svc.ledger.execute(_transfer(svc, "mine", 20 * SAT), extra)

    result = admit_with_retry(svc, A, 20 * SAT, execute)
    assert not result.replayed and len(calls) == 2
    state, version = svc.limits.read(A)
    assert version == 2 and app_limits.usage(state, svc.unix_clock()).used_daily_msat == 30 * SAT


def test_attempts_are_bounded(svc):
    def execute(extra):
        send(svc, f"racer{len(svc.ledger.balances(B))}-{svc.limits.read(A)[1]}", A, B, 1)  # always someone first
        return svc.ledger.execute(_transfer(svc, "mine", 1), extra)

    with pytest.raises(LimitStateChanged):
        admit_with_retry(svc, A, 1, execute, attempts=3)
    assert svc.ledger.get_transfer("mine") is None


def test_other_transient_errors_are_not_retried(svc):
    calls = []

    def execute(extra):
        calls.append(1)
        raise errors.LightningNodeUnavailable("node down")

    with pytest.raises(errors.LightningNodeUnavailable):
        admit_with_retry(svc, A, 1, execute)
    assert calls == [1]


def test_unconfigured_store_fails_closed(ddb):
    svc = build_services(ddb)
    svc.limits = None  # a composition root that forgot the store
    open_account(svc, A, 0, fund_msat=1_000)
    with pytest.raises(RuntimeError):
        admit_with_retry(svc, A, 1, lambda extra: pytest.fail("must not execute"))


def test_unknown_sender_is_account_not_found(svc):
    with pytest.raises(errors.AccountNotFound):
        admit_with_retry(svc, "acc_nobody", 1, lambda extra: pytest.fail("must not execute"))


def test_release_in_the_void_gives_the_amount_back(svc, clock):
    """A reserve (pending) admitted, then voided with the amount released in the void's own transaction."""
    svc.tier_limits = {0: TierLimits(0, 1_000_000 * SAT, 1_000_000 * SAT, 10_000_000 * SAT, 10)}
    user, node = LedgerAccount(A, "BTC"), LedgerAccount("sys:lnd_node", "BTC")
    pending = new_transfer(transfer_id="pay1", kind=TransferKind.PENDING, debit=user, credit=node,
                           amount=900_000 * SAT, template="payment_reserved", created_at=svc.clock(), shards=SHARDS)
    admitted_at = svc.clock()
    admit_with_retry(svc, A, 900_000 * SAT, lambda extra: svc.ledger.execute(pending, extra))
    with pytest.raises(LimitExceeded):
        send(svc, "blocked", A, B, 100_000 * SAT + 1)
    clock.now += 300
    void = void_pending(pending, transfer_id="pay1:void", created_at=svc.clock())
    release_with_retry(svc, A, 900_000 * SAT, admitted_at, lambda extra: svc.ledger.execute(void, extra))
    got = get_limits(svc, Principal(A, frozenset({Scope.READ})))
    assert got["used_daily_msat"] == 0 and got["sends_last_hour"] == 1  # the attempt still counts for velocity
    # Replaying the void changes nothing (the transaction is cancelled by the existing void transfer).
    before = svc.limits.read(A)
    release_with_retry(svc, A, 900_000 * SAT, admitted_at, lambda extra: svc.ledger.execute(void, extra))
    assert svc.limits.read(A) == before
    send(svc, "now-fits", A, B, 100_000 * SAT)


def _transfer(svc, tid, amount):
    from satflow.domain.templates import internal_transfer

    return internal_transfer(transfer_id=tid, sender=A, recipient=B, amount_msat=amount, created_at=svc.clock(),
                             shards=SHARDS)
