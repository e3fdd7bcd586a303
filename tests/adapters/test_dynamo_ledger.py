"""The DynamoDB ledger adapter against moto AND DynamoDB Local (``ddb_backend``): every operation is one
TransactWriteItems; failures are typed and change nothing."""
import pytest

from satflow.adapters.dynamodb.transaction import check
from satflow.app.accounts import ADMIN, create_account
from satflow.domain import errors
from satflow.domain.accounts import AccountStatus
from satflow.domain.ledger import LedgerAccount, SystemAccount, TransferKind, new_transfer, post_pending, void_pending
from satflow.domain.templates import admin_adjustment, internal_transfer

NOW = "2026-11-21T12:00:00.000Z"


@pytest.fixture
def ddb(ddb_on_backend):
    return ddb_on_backend


@pytest.fixture
def users(svc):
    alice, _ = create_account(svc, ADMIN, "tg:alice", 1)
    bob, _ = create_account(svc, ADMIN, "tg:bob", 1)
    return alice.account_id, bob.account_id


def fund(ledger, account_id, amount, tid="fund"):
    ledger.execute(admin_adjustment(transfer_id=tid, account_id=account_id, amount_msat=amount, direction="credit",
                                    reason="test", created_at=NOW, shards=4))


def avail(ledger, owner):
    (b,) = [b for b in ledger.balances(owner) if b.account.asset == "BTC"] or [None]
    return (b.available, b.pending_out, b.pending_in) if b else (0, 0, 0)


def pay(a, b, amount, tid="t1", memo=None):
    return internal_transfer(transfer_id=tid, sender=a, recipient=b, amount_msat=amount, created_at=NOW, shards=4,
                             memo=memo)


@pytest.fixture
def round_trips(ddb):
    """Counts DynamoDB requests actually sent (botocore event hook)."""
    calls = []
    ddb.meta.events.register("before-send.dynamodb", lambda request, **kw: calls.append(request))
    return calls


def test_posted_transfer_moves_funds_and_balances_stay_zero_sum(ledger, users):
    alice, bob = users
    fund(ledger, alice, 10_000)
    result = ledger.execute(pay(alice, bob, 4_000, memo="lunch"))
    assert not result.replayed
    assert avail(ledger, alice) == (6_000, 0, 0) and avail(ledger, bob) == (4_000, 0, 0)
    equity = ledger.balances(SystemAccount.OWNER_EQUITY.value)
    assert equity[0].available == -10_000
    assert ledger.check_invariants().ok


def test_replay_returns_the_original_and_changes_nothing(ledger, users):
    alice, bob = users
    fund(ledger, alice, 10_000)
    first = ledger.execute(pay(alice, bob, 4_000))
    later = pay(alice, bob, 4_000)
    object.__setattr__(later, "created_at", "2026-11-21T13:00:00.000Z")
    again = ledger.execute(later)
    assert again.replayed and again.transfer.created_at == first.transfer.created_at
    assert avail(ledger, alice) == (6_000, 0, 0)


def test_same_id_different_fields_is_refused(ledger, users):
    alice, bob = users
    fund(ledger, alice, 10_000)
    ledger.execute(pay(alice, bob, 4_000))
    with pytest.raises(errors.TransferExistsWithDifferentFields):
        ledger.execute(pay(alice, bob, 4_001))
    assert avail(ledger, alice) == (6_000, 0, 0)


def test_insufficient_funds_changes_nothing(ledger, users):
    alice, bob = users
    fund(ledger, alice, 1_000)
    with pytest.raises(errors.InsufficientFunds):
        ledger.execute(pay(alice, bob, 1_001))
    assert avail(ledger, alice) == (1_000, 0, 0) and avail(ledger, bob) == (0, 0, 0)
    assert ledger.get_transfer("t1") is None
    assert ledger.history(alice, "BTC", 10).items[0].template == "adjustment_credit"


def test_frozen_account_cannot_send_but_can_receive(svc, ledger, users):
    alice, bob = users
    fund(ledger, alice, 5_000)
    fund(ledger, bob, 5_000, tid="fund-bob")
    svc.accounts.update(alice, updated_at=NOW, status=AccountStatus.FROZEN)
    with pytest.raises(errors.AccountFrozen):
        ledger.execute(pay(alice, bob, 1))
    ledger.execute(pay(bob, alice, 1, tid="t2"))
    assert avail(ledger, alice) == (5_001, 0, 0)


def test_an_operator_can_claw_back_from_a_frozen_account(svc, ledger, users):
    alice, _ = users
    fund(ledger, alice, 5_000)
    svc.accounts.update(alice, updated_at=NOW, status=AccountStatus.FROZEN)
    clawback = admin_adjustment(transfer_id="claw", account_id=alice, amount_msat=2_000, direction="debit",
                                reason="fraud clawback", created_at=NOW, shards=4)
    ledger.execute(clawback)
    assert ledger.execute(clawback).replayed and ledger.get_transfer("claw").operator
    assert avail(ledger, alice) == (3_000, 0, 0)
    svc.accounts.update(alice, updated_at=NOW, status=AccountStatus.CLOSED)
    with pytest.raises(errors.AccountFrozen):
        ledger.execute(admin_adjustment(transfer_id="claw2", account_id=alice, amount_msat=1, direction="debit",
                                        reason="closed", created_at=NOW, shards=4))


def test_an_overdraft_reversal_freezes_the_account_atomically(svc, ledger, users):
    from satflow.domain.templates import deposit_reversed

    alice, bob = users
    fund(ledger, alice, 5_000)
    ledger.execute(pay(alice, bob, 4_500))  # alice spent most of a deposit that a reorg will now remove
    strict = deposit_reversed(outpoint="aa:0", account_id=alice, amount_sat=5, created_at=NOW, shards=4)
    with pytest.raises(errors.InsufficientFunds):
        ledger.execute(strict)
    assert svc.accounts.get(alice).status is AccountStatus.ACTIVE
    ledger.execute(deposit_reversed(outpoint="aa:0", account_id=alice, amount_sat=5, created_at=NOW, shards=4,
                                    overdraft=True))
    assert avail(ledger, alice) == (-4_500, 0, 0)
    assert svc.accounts.get(alice).status is AccountStatus.FROZEN
    with pytest.raises(errors.AccountFrozen):
        ledger.execute(pay(alice, bob, 1, tid="t9"))
    report = ledger.check_invariants()
    assert report.violations == (f"{alice}/BTC: user available below zero (-4500)",)  # an alarm until recovered


def test_closed_account_cannot_receive(svc, ledger, users):
    alice, bob = users
    fund(ledger, alice, 5_000)
    svc.accounts.update(bob, updated_at=NOW, status=AccountStatus.CLOSED)
    with pytest.raises(errors.AccountClosed):
        ledger.execute(pay(alice, bob, 1))


def test_unknown_account_is_not_found(ledger, users):
    alice, _ = users
    fund(ledger, alice, 5_000)
    with pytest.raises(errors.AccountNotFound):
        ledger.execute(pay(alice, "acc_nobody", 1))


def lnd_pending(alice, amount=3_000, tid="p1"):
    return new_transfer(transfer_id=tid, kind=TransferKind.PENDING, debit=LedgerAccount(alice, "BTC"),
                        credit=LedgerAccount(SystemAccount.LND_NODE.value, "BTC"), amount=amount,
                        template="payment_reserved", created_at=NOW, shards=4)


def test_pending_then_partial_post_returns_remainder(ledger, users):
    alice, _ = users
    fund(ledger, alice, 10_000)
    p = ledger.execute(lnd_pending(alice)).transfer
    assert avail(ledger, alice) == (7_000, 3_000, 0)
    ledger.execute(post_pending(p, transfer_id="p1:post", created_at=NOW, amount=2_500))
    assert avail(ledger, alice) == (7_500, 0, 0)
    assert ledger.pending_resolution("p1") == "p1:post"
    assert ledger.check_invariants().ok


def test_a_pending_resolves_exactly_once(ledger, users):
    alice, _ = users
    fund(ledger, alice, 10_000)
    p = ledger.execute(lnd_pending(alice)).transfer
    ledger.execute(void_pending(p, transfer_id="p1:void", created_at=NOW))
    assert avail(ledger, alice) == (10_000, 0, 0)
    # replaying the same void is idempotent ...
    assert ledger.execute(void_pending(p, transfer_id="p1:void", created_at=NOW)).replayed
    # ... but a post (or a second void with another id) after it is refused and changes nothing
    with pytest.raises(errors.PendingAlreadyResolved):
        ledger.execute(post_pending(p, transfer_id="p1:post", created_at=NOW))
    with pytest.raises(errors.PendingAlreadyResolved):
        ledger.execute(void_pending(p, transfer_id="p1:void2", created_at=NOW))
    assert avail(ledger, alice) == (10_000, 0, 0)
    assert ledger.check_invariants().ok


def test_resolution_of_a_pending_that_differs_or_is_missing(ledger, users):
    alice, _ = users
    fund(ledger, alice, 10_000)
    p = ledger.execute(lnd_pending(alice)).transfer
    forged = lnd_pending(alice, amount=9_999)
    with pytest.raises(errors.PendingMismatch):
        ledger.execute(void_pending(forged, transfer_id="v", created_at=NOW))
    ghost = lnd_pending(alice, tid="ghost")
    with pytest.raises(errors.TransferNotFound):
        ledger.execute(void_pending(ghost, transfer_id="v2", created_at=NOW))
    assert avail(ledger, alice) == (7_000, 3_000, 0) and p.kind is TransferKind.PENDING


def test_post_replay_and_shard_mismatch(ledger, users):
    alice, _ = users
    fund(ledger, alice, 10_000)
    p = ledger.execute(lnd_pending(alice)).transfer
    post = post_pending(p, transfer_id="p1:post", created_at=NOW, amount=2_000)
    ledger.execute(post)
    assert ledger.execute(post).replayed
    assert avail(ledger, alice) == (8_000, 0, 0)
    # a pending rebuilt with another shard count must not release on the wrong shard items
    p2 = ledger.execute(lnd_pending(alice, tid="p2")).transfer
    import dataclasses

    moved = dataclasses.replace(p2, credit_shard=(p2.credit_shard + 1) % 4)
    with pytest.raises(errors.PendingMismatch):
        ledger.execute(void_pending(moved, transfer_id="p2:void", created_at=NOW))
    assert ledger.check_invariants().ok


def test_a_resolution_needs_its_own_id(ledger, users):
    alice, _ = users
    fund(ledger, alice, 10_000)
    p = ledger.execute(lnd_pending(alice)).transfer
    with pytest.raises(errors.ValidationError):
        post_pending(p, transfer_id=p.id, created_at=NOW)


def test_frozen_account_pendings_still_resolve(svc, ledger, users):
    alice, _ = users
    fund(ledger, alice, 10_000)
    p = ledger.execute(lnd_pending(alice)).transfer
    svc.accounts.update(alice, updated_at=NOW, status=AccountStatus.FROZEN)
    ledger.execute(void_pending(p, transfer_id="p1:void", created_at=NOW))  # a refund must always land
    assert avail(ledger, alice) == (10_000, 0, 0)


def test_callers_conditional_items_join_the_transaction(svc, ledger, users):
    alice, bob = users
    fund(ledger, alice, 10_000)
    R = ledger._m.AccountRef  # any item of the table will do as a stand-in for a limit counter
    R("LIMIT#test", "DAY", account_id="full").save()

    class LimitHit(errors.BusinessRejection):
        code = "TEST_LIMIT"

    seen = []

    def on_fail(old):
        seen.append(old)
        return LimitHit("limit reached")

    limit = check(R, "LIMIT#test", "DAY", R.account_id != "full", "limit", on_fail)
    with pytest.raises(LimitHit):
        ledger.execute(pay(alice, bob, 1), extra=[limit])
    assert seen[0]["account_id"] == {"S": "full"}  # the handler sees the item's old image
    assert avail(ledger, alice) == (10_000, 0, 0) and ledger.get_transfer("t1") is None


def test_each_ledger_operation_is_one_round_trip(ledger, users, round_trips):
    alice, bob = users
    ops = [
        admin_adjustment(transfer_id="adj", account_id=alice, amount_msat=10_000, direction="credit", reason="x",
                         created_at=NOW, shards=4),
        pay(alice, bob, 100),
    ]
    p = lnd_pending(alice)
    p2 = lnd_pending(alice, tid="p2")
    ops += [p, post_pending(p, transfer_id="p:post", created_at=NOW, amount=10), p2,
            void_pending(p2, transfer_id="p2:void", created_at=NOW)]
    raw = ledger.inner  # the adapter itself: one TransactWriteItems, no reads on the write path
    for op in ops:
        before = len(round_trips)
        raw.execute(op)
        assert len(round_trips) - before == 1, op.template
    assert all(b"TransactWriteItems" in r.headers.get("X-Amz-Target", b"") for r in round_trips)


def test_the_recorded_ledger_is_one_transaction_and_no_read(ledger, users, round_trips):
    """As wired in production (app.recorded_ledger): exactly one TransactWriteItems per operation, carrying the
    audit entry (no chain head read: entries are sealed into their chains afterwards, docs/audit.md)."""
    alice, bob = users
    p = lnd_pending(alice)
    for op in (admin_adjustment(transfer_id="adj", account_id=alice, amount_msat=10_000, direction="credit",
                                reason="x", created_at=NOW, shards=4), pay(alice, bob, 100), p,
               post_pending(p, transfer_id="p:post", created_at=NOW, amount=10)):
        before = len(round_trips)
        ledger.execute(op)
        targets = [r.headers.get("X-Amz-Target", b"").split(b".")[-1] for r in round_trips[before:]]
        assert targets == [b"TransactWriteItems"], op.template


def test_history_is_newest_first_and_paginated(ledger, users):
    alice, bob = users
    fund(ledger, alice, 10_000)
    for i in range(5):
        t = internal_transfer(transfer_id=f"h{i}", sender=alice, recipient=bob, amount_msat=i + 1,
                              created_at=f"2026-11-21T12:00:0{i + 1}.000Z", shards=4)
        ledger.execute(t)
    page1 = ledger.history(alice, "BTC", 4)
    assert [h.transfer_id for h in page1.items] == ["h4", "h3", "h2", "h1"]
    assert page1.items[0].direction == "out" and page1.items[0].counterparty == bob
    page2 = ledger.history(alice, "BTC", 4, page1.next_cursor)
    assert [h.transfer_id for h in page2.items] == ["h0", "fund"]
    assert page2.next_cursor is None or ledger.history(alice, "BTC", 4, page2.next_cursor).items == []
    with pytest.raises(errors.ValidationError):
        ledger.history(alice, "BTC", 4, "not-a-cursor")
    assert [h.transfer_id for h in ledger.history(bob, "BTC", 10).items][0] == "h4"
