"""Property: any sequence of transfers, pendings, posts (full and partial) and voids that the rules accept keeps
every asset summing to zero, pendings matched, and no user account below zero."""
from hypothesis import given, settings

from satflow.domain.ledger import Balance, LedgerAccount, check_invariants

from tests.ledger_ops import Model, ops


@settings(max_examples=300, deadline=None)
@given(ops)
def test_accepted_operations_keep_the_ledger_balanced(sequence):
    model = Model(shards=4)
    for op in sequence:
        t = model.build(op)
        if t is None or model.expect(t) is not None:
            continue
        model.apply(t)
        report = check_invariants(Balance(LedgerAccount(o, "BTC"), *v) for o, v in model.balances.items())
        assert report.ok, report.violations
