"""DynamoLimitStore on moto: the item, its versioned conditional write inside the ledger transaction, rejections."""
import pytest

from satflow.adapters.dynamodb.limits import TAG, limits_pk
from satflow.domain import errors
from satflow.domain.limits import EMPTY_WINDOW, LimitExceeded, LimitStateChanged, TierLimits, admit, usage
from satflow.domain.templates import internal_transfer

from tests.conftest import SHARDS, TABLE
from .conftest import SAT, T0, open_account

LIM = TierLimits(9, per_tx_msat=600 * SAT, daily_msat=1_000 * SAT, monthly_msat=5_000 * SAT, sends_per_hour=5)
A, B = "acc_limitsaaaaaaaaaaaaaaaaaaaaaa"[:30], "acc_limitsbbbbbbbbbbbbbbbbbbbbbb"[:30]


@pytest.fixture
def accounts(lsvc):
    open_account(lsvc, A, 1, fund_msat=10_000 * SAT)
    open_account(lsvc, B, 1)
    return lsvc


def _transfer(tid, amount):
    return internal_transfer(transfer_id=tid, sender=A, recipient=B, amount_msat=amount,
                             created_at="2026-11-18T10:00:00.000Z", shards=SHARDS)


def _available(svc, owner):
    return next((b.available for b in svc.ledger.balances(owner)), 0)


def test_read_of_an_account_that_never_sent(lsvc):
    assert lsvc.limits.read(A) == (EMPTY_WINDOW, 0)


def test_admit_items_is_one_tagged_conditional_update(lsvc):
    first = lsvc.limits.admit_items(A, EMPTY_WINDOW, 0, admit(EMPTY_WINDOW, 5, T0, LIM))
    assert [(i.tag, i.op) for i in first] == [(TAG, "Update")]
    assert "attribute_not_exists" in first[0].params["ConditionExpression"]
    later = lsvc.limits.admit_items(A, EMPTY_WINDOW, 7, admit(EMPTY_WINDOW, 5, T0, LIM))
    p = later[0].params
    assert "attribute_not_exists" not in p["ConditionExpression"]
    assert {"N": "7"} in p["ExpressionAttributeValues"].values() and {"N": "8"} in p["ExpressionAttributeValues"].values()
    assert p["Key"] == {"pk": {"S": limits_pk(A)}, "sk": {"S": "LIMITS"}} and p["TableName"] == TABLE


def test_state_and_version_round_trip_through_the_ledger_transaction(accounts, ddb):
    svc = accounts
    s1 = admit(EMPTY_WINDOW, 300 * SAT, T0, LIM)
    svc.ledger.execute(_transfer("t1", 300 * SAT), svc.limits.admit_items(A, EMPTY_WINDOW, 0, s1, now=T0))
    assert svc.limits.read(A) == (s1, 1)
    s2 = admit(s1, 200 * SAT, T0 + 90, LIM)
    svc.ledger.execute(_transfer("t2", 200 * SAT), svc.limits.admit_items(A, s1, 1, s2, now=T0 + 90))
    state, version = svc.limits.read(A)
    assert (state, version) == (s2, 2) and usage(state, T0 + 90) == (500 * SAT, 500 * SAT, 2)
    raw = ddb.get_item(TableName=TABLE, Key={"pk": {"S": limits_pk(A)}, "sk": {"S": "LIMITS"}})["Item"]
    assert raw["hours"]["S"] == f"{T0 // 3600}:{500 * SAT}" and raw["version"]["N"] == "2"
    assert raw["account_id"]["S"] == A and raw["updated_at_unix"]["N"] == str(T0 + 90)


def test_a_stale_version_cancels_the_whole_transaction(accounts):
    svc = accounts
    # Two sends computed from the same read (version 0): the first commits, the second must not.
    s_a = admit(EMPTY_WINDOW, 600 * SAT, T0, LIM)
    s_b = admit(EMPTY_WINDOW, 600 * SAT, T0, LIM)
    svc.ledger.execute(_transfer("ta", 600 * SAT), svc.limits.admit_items(A, EMPTY_WINDOW, 0, s_a))
    with pytest.raises(LimitStateChanged) as exc:
        svc.ledger.execute(_transfer("tb", 600 * SAT), svc.limits.admit_items(A, EMPTY_WINDOW, 0, s_b))
    assert isinstance(exc.value, errors.TransientError) and exc.value.details["found_version"] == 1
    assert svc.ledger.get_transfer("tb") is None
    assert _available(svc, A) == 9_400 * SAT and _available(svc, B) == 600 * SAT
    assert svc.limits.read(A) == (s_a, 1)
    # The same stale write against a later version fails the same way.
    with pytest.raises(LimitStateChanged):
        svc.ledger.execute(_transfer("tc", 1), svc.limits.admit_items(A, EMPTY_WINDOW, 0, s_b))


def test_insufficient_funds_takes_precedence_and_writes_no_limit(accounts):
    svc = accounts
    s = admit(EMPTY_WINDOW, 600 * SAT, T0, TierLimits(9, 10**12, 10**12, 10**12, 5))
    with pytest.raises(errors.InsufficientFunds):
        svc.ledger.execute(_transfer("big", 20_000 * SAT), svc.limits.admit_items(A, EMPTY_WINDOW, 0, s))
    assert svc.limits.read(A) == (EMPTY_WINDOW, 0)


def test_reject_item_raises_the_rejection_and_writes_nothing(accounts):
    svc = accounts
    rejection = LimitExceeded("daily limit exceeded", limit="daily")
    with pytest.raises(LimitExceeded) as exc:
        svc.ledger.execute(_transfer("r1", 5), [svc.limits.reject_item(A, rejection)])
    assert exc.value is rejection
    assert svc.ledger.get_transfer("r1") is None and _available(svc, A) == 10_000 * SAT
    assert svc.limits.read(A) == (EMPTY_WINDOW, 0)  # no item created by a ConditionCheck


def test_reject_item_lets_an_identical_committed_transfer_replay(accounts):
    svc = accounts
    t = _transfer("r2", 5)
    svc.ledger.execute(t, svc.limits.admit_items(A, EMPTY_WINDOW, 0, admit(EMPTY_WINDOW, 5, T0, LIM)))
    result = svc.ledger.execute(t, [svc.limits.reject_item(A, LimitExceeded("x", limit="daily"))])
    assert result.replayed and result.transfer.same_as(t)
    assert svc.limits.read(A)[1] == 1


def test_empty_buckets_are_removed_not_stored_empty(accounts, ddb):
    svc = accounts
    s1 = admit(EMPTY_WINDOW, 5, T0, LIM)
    svc.ledger.execute(_transfer("e1", 5), svc.limits.admit_items(A, EMPTY_WINDOW, 0, s1))
    svc.ledger.execute(_transfer("e2", 1), [svc.limits.write_item(A, 1, EMPTY_WINDOW)])
    raw = ddb.get_item(TableName=TABLE, Key={"pk": {"S": limits_pk(A)}, "sk": {"S": "LIMITS"}})["Item"]
    assert "hours" not in raw and "days" not in raw and raw["version"]["N"] == "2"
    assert svc.limits.read(A) == (EMPTY_WINDOW, 2)
