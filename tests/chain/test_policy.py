"""The amount-tiered credit policy and the confirmation steps (pure)."""
from __future__ import annotations

import pytest

from satflow.domain import errors
from satflow.domain.deposits import (
    EVENT_CONFIRMATIONS,
    EVENT_CREDITED,
    Deposit,
    DepositPolicy,
    confirmation_step,
    confirmations,
    credit_transfer_id,
    parse_outpoint,
    reversal_transfer_id,
    seen_transfer_id,
    void_transfer_id,
)
from satflow.domain.ledger import TransferKind, effects
from satflow.domain.onchain import DepositStatus
from satflow.domain.templates import deposit_credited, deposit_dropped, deposit_reversed, deposit_seen

OUTPOINT = "ab" * 32 + ":1"


def test_the_default_policy():
    policy = DepositPolicy.parse("1000000:1,10000000:3,*:6")
    amounts = (1, 1_000_000, 1_000_001, 10_000_000, 10_000_001, 21 * 10**14)
    assert [policy.required_confirmations(a) for a in amounts] == [1, 1, 3, 3, 6, 6]
    assert policy.final_depth == 6 and str(policy) == "1000000:1,10000000:3,*:6"
    assert DepositPolicy.parse(" *:2 ").required_confirmations(5) == 2
    assert DepositPolicy.parse("100:1,*:10").final_depth == 10


@pytest.mark.parametrize("text", [
    "", "   ", "1000000:1", "*:6,1000:1", "1000:1,1000:2,*:3", "2000:1,1000:2,*:3", "1000:3,*:1", "1000:0,*:1",
    "1000:1,*:101", "1.5:1,*:2", "-5:1,*:2", "0:1,*:2", "abc:1,*:2", "1000:x,*:2", "1000,*:2", "1000:1,*:6,*:6",
    None, 5,
])
def test_malformed_policies_are_refused(text):
    with pytest.raises(errors.ValidationError):
        DepositPolicy.parse(text)


@pytest.mark.parametrize("amount", [0, -1, True, 1.0, "5"])
def test_amounts_are_positive_integers(amount):
    with pytest.raises(errors.ValidationError):
        DepositPolicy.parse("*:1").required_confirmations(amount)


def test_confirmations_follow_core():
    assert confirmations(None, 100) == 0 and confirmations(100, 100) == 1 and confirmations(95, 100) == 6
    assert confirmations(101, 100) == 0 and confirmations(5, None) == 0


def _deposit(**changes) -> Deposit:
    base = dict(txid="ab" * 32, vout=1, account_id="acc_x", amount_sat=5_000_000, address="bcrt1q",
                script_pubkey_hex="00", chain=0, index=0, status=DepositStatus.CONFIRMING, required_confirmations=3,
                first_seen_at="t0", updated_at="t0", height=100, block_hash="bb" * 32, milestone=0)
    base.update(changes)
    return Deposit(**base)


def test_confirmation_steps_emit_each_milestone_once_and_credit_at_depth():
    step = confirmation_step(_deposit(), 100, DepositPolicy.parse("*:3"), "t1")
    assert [(e.type, e.confirmations) for e in step.events] == [(EVENT_CONFIRMATIONS, 1)]
    assert (step.milestone, step.credit, step.final) == (1, False, False)
    step = confirmation_step(_deposit(milestone=1), 103, DepositPolicy.parse("*:3"), "t2")  # 4 confirmations
    assert [(e.type, e.confirmations) for e in step.events] == [(EVENT_CONFIRMATIONS, 3), (EVENT_CREDITED, 4)]
    assert (step.milestone, step.credit, step.final) == (3, True, False)
    credited = _deposit(milestone=3, status=DepositStatus.CREDITED)
    step = confirmation_step(credited, 110, DepositPolicy.parse("*:3"), "t")
    assert [(e.type, e.confirmations) for e in step.events] == [(EVENT_CONFIRMATIONS, 6)]
    assert (step.credit, step.final) == (False, True)
    assert not confirmation_step(_deposit(milestone=6, status=DepositStatus.CREDITED, required_confirmations=10),
                                 105, DepositPolicy.parse("*:10"), "t").final  # 6 < 10


def test_ids_derive_from_the_outpoint_and_generation():
    assert seen_transfer_id(OUTPOINT) == f"dsn_{OUTPOINT}" and credit_transfer_id(OUTPOINT, 2) == f"dcr_{OUTPOINT}.g2"
    assert void_transfer_id(OUTPOINT) == f"dvd_{OUTPOINT}" and reversal_transfer_id(OUTPOINT) == f"rev_{OUTPOINT}"
    assert parse_outpoint(OUTPOINT) == ("ab" * 32, 1)
    for bad in ("ab:1", "AB" * 32 + ":1", "ab" * 32 + ":01", "ab" * 32, None):
        with pytest.raises(errors.ValidationError):
            parse_outpoint(bad)


def test_deposit_templates_are_balanced_two_phase_transfers():
    seen = deposit_seen(outpoint=OUTPOINT, account_id="acc_x", amount_sat=1_234, created_at="t", shards=4)
    assert (seen.kind, seen.amount, seen.debit.owner, seen.credit.owner) == (
        TransferKind.PENDING, 1_234_000, "sys:onchain_hot_wallet", "acc_x")
    debit, credit = effects(seen)
    assert credit.pending_in == 1_234_000 and debit.available + debit.pending_out == 0
    post = deposit_credited(seen, created_at="t2")
    assert (post.kind, post.pending_id, post.amount, post.id) == (TransferKind.POST_PENDING, seen.id, 1_234_000,
                                                                 f"dcr_{OUTPOINT}")
    void = deposit_dropped(seen, created_at="t2")
    assert (void.kind, void.id) == (TransferKind.VOID_PENDING, f"dvd_{OUTPOINT}")
    reversal = deposit_reversed(outpoint=OUTPOINT, account_id="acc_x", amount_sat=1_234, created_at="t", shards=4,
                                generation=1)
    assert (reversal.id, reversal.operator, reversal.overdraft) == (f"rev_{OUTPOINT}.g1", True, False)
