"""Model-based property test: random operations through the real adapter (on moto) give exactly the outcome and
the balances the pure model predicts, and the stored ledger always passes its invariant check."""
import boto3
from hypothesis import HealthCheck, given, settings
from moto import mock_aws

from satflow.domain.accounts import Account, AccountStatus, Scope

from tests.conftest import build_services, create_table
from tests.ledger_ops import NOW, USERS, Model, ops


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_adapter_matches_the_model(sequence):
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client)
        svc = build_services(client)
        for i, user in enumerate(USERS):
            svc.accounts.create(Account(user, f"ref:{i}", 1, AccountStatus.ACTIVE, NOW), f"h{i}", "sk_", [Scope.SEND])
        model = Model(shards=svc.system_shards)
        for op in sequence:
            t = model.build(op)
            if t is None:
                continue
            expected = model.expect(t)
            if expected is None:
                assert not svc.ledger.execute(t).replayed
                model.apply(t)
            else:
                try:
                    svc.ledger.execute(t)
                except expected:
                    pass
                else:
                    raise AssertionError(f"{t.id} should have raised {expected.__name__}")
        for owner, (available, pending_out, pending_in) in model.balances.items():
            (b,) = svc.ledger.balances(owner)
            assert (b.available, b.pending_out, b.pending_in) == (available, pending_out, pending_in), owner
        report = svc.ledger.check_invariants()
        assert report.ok, report.violations
