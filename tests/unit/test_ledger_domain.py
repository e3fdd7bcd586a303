import pytest

from satflow.domain import errors
from satflow.domain.ids import derive_id
from satflow.domain.ledger import (
    Balance, LedgerAccount, SystemAccount, TransferKind, check_invariants, effects, new_transfer, post_pending,
    shard_for, void_pending,
)
from satflow.domain.money import MAX_AMOUNT_MSAT, validate_amount
from satflow.domain.templates import admin_adjustment, internal_transfer

NOW = "2026-11-21T12:00:00.000Z"
ALICE, BOB = LedgerAccount("acc_alice", "BTC"), LedgerAccount("acc_bob", "BTC")
LND = LedgerAccount(SystemAccount.LND_NODE.value, "BTC")


def pending(amount=1000, debit=ALICE, credit=LND):
    return new_transfer(transfer_id="p1", kind=TransferKind.PENDING, debit=debit, credit=credit, amount=amount,
                        template="test", created_at=NOW, shards=8)


def net(deltas):
    return sum(d.available + d.pending_out for d in deltas), sum(d.pending_out - d.pending_in for d in deltas)


def test_posted_moves_available_and_nets_to_zero():
    t = internal_transfer(transfer_id="t1", sender="acc_alice", recipient="acc_bob", amount_msat=500,
                          created_at=NOW, shards=8)
    d, c = effects(t)
    assert (d.available, c.available, d.requires_available) == (-500, 500, 500)
    assert net((d, c)) == (0, 0)


def test_pending_reserves_then_partial_post_returns_the_remainder():
    p = pending(1000)
    d, c = effects(p)
    assert (d.available, d.pending_out, c.pending_in) == (-1000, 1000, 1000)
    post = post_pending(p, transfer_id="p1:post", created_at=NOW, amount=700)
    d2, c2 = effects(post)
    assert (d2.available, d2.pending_out) == (300, -1000)
    assert (c2.available, c2.pending_in) == (700, -1000)
    assert net((d, c, d2, c2)) == (0, 0)
    assert d2.shard == d.shard and c2.shard == c.shard  # released where it was reserved


def test_void_releases_everything():
    p = pending(1000)
    v = void_pending(p, transfer_id="p1:void", created_at=NOW)
    total = effects(p) + effects(v)
    assert sum(x.available for x in total if x.account == ALICE) == 0
    assert net(total) == (0, 0)


@pytest.mark.parametrize("amount", [0, -1, 1001, 1.0, True, "5"])
def test_post_amount_must_be_positive_int_at_most_pending(amount):
    with pytest.raises(errors.PendingMismatch):
        post_pending(pending(1000), transfer_id="x", created_at=NOW, amount=amount)


def test_only_pending_transfers_resolve():
    p = pending()
    post = post_pending(p, transfer_id="x", created_at=NOW)
    with pytest.raises(errors.PendingMismatch):
        void_pending(post, transfer_id="y", created_at=NOW)


def test_self_transfer_and_mixed_assets_are_rejected():
    with pytest.raises(errors.SelfTransfer):
        internal_transfer(transfer_id="t", sender="acc_a", recipient="acc_a", amount_msat=1, created_at=NOW, shards=8)
    with pytest.raises(errors.ValidationError):
        new_transfer(transfer_id="t", kind=TransferKind.POSTED, debit=ALICE, credit=LedgerAccount("acc_b", "USDT"),
                     amount=1, template="x", created_at=NOW, shards=8)


@pytest.mark.parametrize("amount", [0, -5, 1.5, 1.0, True, None, "100", MAX_AMOUNT_MSAT + 1])
def test_amounts_are_positive_bounded_integers(amount):
    with pytest.raises(errors.ValidationError):
        validate_amount(amount)
    assert validate_amount(MAX_AMOUNT_MSAT) == MAX_AMOUNT_MSAT


def test_other_assets_are_allowed():
    t = new_transfer(transfer_id="t", kind=TransferKind.POSTED, debit=LedgerAccount("acc_a", "USDT"),
                     credit=LedgerAccount("acc_b", "USDT"), amount=5, template="x", created_at=NOW, shards=8)
    assert t.asset == "USDT"


def test_system_accounts_are_sharded_deterministically_and_have_no_floor():
    adj = admin_adjustment(transfer_id="adj_1", account_id="acc_a", amount_msat=10, direction="credit",
                           reason="funding", created_at=NOW, shards=8)
    d, c = effects(adj)
    assert d.account.is_system and d.shard == shard_for("adj_1", 8) and d.requires_available == 0
    assert c.shard is None
    spread = {shard_for(f"t{i}", 8) for i in range(200)}
    assert spread == set(range(8))


def test_adjustment_needs_reason_and_direction():
    with pytest.raises(errors.ValidationError):
        admin_adjustment(transfer_id="a", account_id="acc_a", amount_msat=1, direction="credit", reason=" ",
                         created_at=NOW, shards=8)
    with pytest.raises(errors.ValidationError):
        admin_adjustment(transfer_id="a", account_id="acc_a", amount_msat=1, direction="sideways", reason="x",
                         created_at=NOW, shards=8)


def test_replay_identity_ignores_created_at_only():
    a = internal_transfer(transfer_id="t", sender="acc_a", recipient="acc_b", amount_msat=5, created_at=NOW,
                          shards=8)
    b = internal_transfer(transfer_id="t", sender="acc_a", recipient="acc_b", amount_msat=5,
                          created_at="2027-01-01T00:00:00.000Z", shards=8)
    c = internal_transfer(transfer_id="t", sender="acc_a", recipient="acc_b", amount_msat=6, created_at=NOW,
                          shards=8)
    assert a.same_as(b) and not a.same_as(c)


def test_invariant_check_reports_each_violation():
    ok = check_invariants([Balance(ALICE, 10), Balance(LND, -10)])
    assert ok.ok and ok.totals == {"BTC": 0}
    bad = check_invariants([Balance(ALICE, -10), Balance(LND, 5, pending_out=0, pending_in=3)])
    assert not bad.ok
    assert any("below zero" in v for v in bad.violations)
    assert any("sum to -5" in v for v in bad.violations)
    assert any("pending out" in v for v in bad.violations)


def test_derived_ids_are_stable_and_distinct():
    assert derive_id("tr", "acc_a", "k1") == derive_id("tr", "acc_a", "k1")
    assert derive_id("tr", "acc_a", "k1") != derive_id("tr", "acc_b", "k1")
    assert derive_id("tr", "a", "bc") != derive_id("tr", "ab", "c")
