"""The ledger as wired in production (app.recorded_ledger): every money mutation carries its audit entry in the same
transaction, without a read; replays and refusals write nothing; sealed, the chains verify; admin actions are
recorded."""
from __future__ import annotations

import pytest

from satflow.app.accounts import ADMIN, create_account, update_account
from satflow.app.recorded_ledger import RecordedLedger, audit_entry_for
from satflow.domain import errors
from satflow.domain.ledger import LedgerAccount, SystemAccount, TransferKind, new_transfer, post_pending, void_pending
from satflow.domain.templates import admin_adjustment, internal_transfer

from tests.conftest import SHARDS, build_services

from .helpers import sealed_records

NOW = "2026-11-21T12:00:00.000Z"


@pytest.fixture
def svc(ddb):
    return build_services(ddb)


def all_records(svc):
    return sealed_records(svc)


def users(svc):
    alice, _ = create_account(svc, ADMIN, "tg:alice", 1)
    bob, _ = create_account(svc, ADMIN, "tg:bob", 1)
    return alice.account_id, bob.account_id


def fund(svc, account_id, amount, tid="fund"):
    return svc.ledger.execute(admin_adjustment(transfer_id=tid, account_id=account_id, amount_msat=amount,
                                               direction="credit", reason="test", created_at=NOW, shards=SHARDS))


def pay(a, b, amount, tid="t1"):
    return internal_transfer(transfer_id=tid, sender=a, recipient=b, amount_msat=amount, created_at=NOW,
                             shards=SHARDS)


def payment_pending(owner, tid="p1", amount=1_000):
    return new_transfer(transfer_id=tid, kind=TransferKind.PENDING, debit=LedgerAccount(owner, "BTC"),
                        credit=LedgerAccount(SystemAccount.LND_NODE.value, "BTC"), amount=amount,
                        template="payment_reserved", created_at=NOW, shards=SHARDS)


def test_the_wiring_is_fail_closed():
    with pytest.raises(ValueError):
        RecordedLedger(object(), None)


def test_every_ledger_operation_appends_exactly_one_record_and_the_chains_verify(svc):
    alice, bob = users(svc)
    before = len(all_records(svc))  # the two account.created admin records
    p = payment_pending(alice)
    p2 = payment_pending(alice, "p2")
    ops = [admin_adjustment(transfer_id="adj", account_id=alice, amount_msat=10_000, direction="credit",
                            reason="x", created_at=NOW, shards=SHARDS),
           pay(alice, bob, 100), p, post_pending(p, transfer_id="p1:post", created_at=NOW, amount=900), p2,
           void_pending(p2, transfer_id="p2:void", created_at=NOW)]
    for op in ops:
        svc.ledger.execute(op)
    records = all_records(svc)
    ledger_records = {r.subject_ids[2]: r for r in records if r.action.startswith("ledger.")}
    assert len(records) - before == len(ops) == len(ledger_records)
    assert ledger_records["adj"].actor == "admin" and ledger_records["adj"].action == "ledger.adjustment_credit.posted"
    assert ledger_records["t1"].actor == alice and ledger_records["t1"].amount_msat == 100
    assert ledger_records["t1"].subject_ids == (alice, bob, "t1")
    assert ledger_records["p1"].actor == alice and ledger_records["p1"].action == "ledger.payment_reserved.pending"
    assert ledger_records["p1:post"].actor == "system"
    assert ledger_records["p1:post"].action == "ledger.payment_reserved.post_pending"
    assert ledger_records["p1:post"].amount_msat == 900 and ledger_records["p1:post"].details["pending_id"] == "p1"
    assert ledger_records["p2:void"].action == "ledger.payment_reserved.void_pending"
    report = svc.audit.verify_all()
    assert all(r.ok for r in report.values()), report


def test_a_replay_appends_no_second_record(svc):
    alice, bob = users(svc)
    fund(svc, alice, 10_000)
    svc.ledger.execute(pay(alice, bob, 100))
    count = len(all_records(svc))
    again = svc.ledger.execute(pay(alice, bob, 100))
    assert again.replayed and len(all_records(svc)) == count


def test_a_refused_mutation_appends_nothing(svc):
    alice, bob = users(svc)
    fund(svc, alice, 50)
    count = len(all_records(svc))
    with pytest.raises(errors.InsufficientFunds):
        svc.ledger.execute(pay(alice, bob, 100))
    assert len(all_records(svc)) == count
    assert all(r.ok for r in svc.audit.verify_all().values())


def test_each_operation_is_one_transaction_without_a_read(svc, ddb):
    """The wired ledger reads no chain head: the audit entry is one more item of the ledger's own transaction, and
    concurrent operations share no audit item (each entry is keyed by its transfer id)."""
    alice, bob = users(svc)
    fund(svc, alice, 10_000)
    targets = []
    ddb.meta.events.register("before-send.dynamodb", lambda request, **kw: targets.append(
        request.headers.get("X-Amz-Target", b"").split(b".")[-1]))
    svc.ledger.execute(pay(alice, bob, 100, tid="t-one"))
    assert targets == [b"TransactWriteItems"]
    (pending,) = [p for s in range(svc.audit.shards) for p in svc.audit.pending(s) if p.entry_id == "t-one"]
    assert pending.intact() and pending.action == "ledger.internal_transfer.posted"


def test_a_transient_cancellation_is_retried_with_a_fresh_entry(svc):
    """Throttling or a transaction conflict: nothing was written; the same transfer (same id) is sent again."""
    alice, bob = users(svc)
    fund(svc, alice, 10_000)
    inner = svc.ledger.inner
    calls = []

    class Flaky:
        def execute(self, t, extra=()):
            calls.append([i.params["Item"]["sk"]["S"] for i in extra if i.tag == "audit_entry"][0])
            if len(calls) == 1:
                raise errors.TransientError("TransactionConflict")
            return inner.execute(t, extra)

    flaky = RecordedLedger(Flaky(), svc.audit, sleep=lambda s: None)
    result = flaky.execute(pay(alice, bob, 100, tid="t-retry"))
    assert not result.replayed and len(calls) == 2 and flaky.retries == 1
    assert [r.entry_id for r in all_records(svc)].count("t-retry") == 1
    assert svc.ledger.balances(bob)[0].available == 100


def test_admin_actions_are_recorded_with_the_change(svc):
    account, _ = create_account(svc, ADMIN, "tg:carol", 1)
    update_account(svc, ADMIN, account.account_id, tier=2, status="frozen")
    mine = [r for r in all_records(svc) if r.subject_ids[:1] == (account.account_id,)]
    assert [(r.action, r.actor) for r in mine] == [("account.created", "admin"), ("account.updated", "admin")]
    assert mine[1].details == {"tier": 2, "status": "frozen"}


def test_an_update_of_an_unknown_account_records_nothing(svc):
    count = len(all_records(svc))
    with pytest.raises(errors.AccountNotFound):
        update_account(svc, ADMIN, "acc_" + "a" * 26, tier=2)
    assert len(all_records(svc)) == count


@pytest.mark.parametrize("template,kind,actor", [
    ("internal_transfer", TransferKind.POSTED, "user"),
    ("payout_reserved", TransferKind.PENDING, "user"),
    ("payout_reserved", TransferKind.VOID_PENDING, "system"),
    ("deposit_seen", TransferKind.PENDING, "system"),
    ("invoice_settled", TransferKind.POSTED, "system"),
])
def test_actor_of_each_kind_of_mutation(template, kind, actor):
    t = new_transfer(transfer_id="x1", kind=TransferKind.POSTED if kind is TransferKind.VOID_PENDING else kind,
                     debit=LedgerAccount("acc_a", "BTC"), credit=LedgerAccount("acc_b", "BTC"), amount=5,
                     template=template, created_at=NOW, shards=SHARDS)
    if kind is TransferKind.VOID_PENDING:
        t = void_pending(new_transfer(transfer_id="x0", kind=TransferKind.PENDING, debit=LedgerAccount("acc_a", "BTC"),
                                      credit=LedgerAccount("acc_b", "BTC"), amount=5, template=template,
                                      created_at=NOW, shards=SHARDS), transfer_id="x0:void", created_at=NOW)
    assert audit_entry_for(t).actor == ("acc_a" if actor == "user" else actor)
