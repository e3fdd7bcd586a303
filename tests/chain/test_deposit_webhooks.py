"""deposit.confirmed: written in the transaction that records a deposit's first confirmation (with the credit when
the policy credits at one confirmation), once per confirmation epoch."""
from __future__ import annotations

import pytest

from satflow.adapters.dynamodb.models import build_models
from satflow.adapters.dynamodb.webhooks import DynamoWebhookStore, event_from_image
from satflow.app.recorded_ledger import RecordedLedger
from satflow.domain.onchain import DepositStatus

from tests.conftest import TABLE
from .conftest import assert_invariants, scan
from .test_deposits import deposit_to


@pytest.fixture
def wsvc(svc, ddb):
    """As production wires it: the recorded ledger appends each transfer's outbox events (deposit.credited) to the
    same transaction as the chain monitor's own items (deposit.confirmed)."""
    svc.webhooks = DynamoWebhookStore(ddb, build_models(TABLE, "us-east-1"))
    svc.ledger = RecordedLedger(svc.ledger.inner, svc.ledger.audit, outbox_items=svc.webhooks.transfer_outbox_items)
    return svc


def outbox(ddb, event_type: str = "deposit.confirmed"):
    items = ddb.scan(TableName=TABLE, FilterExpression="begins_with(pk, :p)",
                     ExpressionAttributeValues={":p": {"S": "OUTBOX#"}})["Items"]
    return sorted((e for e in map(event_from_image, items) if e.type == event_type), key=lambda e: e.created_at)


def test_first_confirmation_of_a_deposit_that_waits_for_more(wsvc, ddb, chain_sim, alice):
    _, outpoint = deposit_to(wsvc, chain_sim, alice, 5_000_000)  # 3 confirmations needed
    scan(wsvc)
    assert outbox(ddb) == []  # seen in the mempool: not confirmed yet
    (block_hash,) = chain_sim.mine(1)
    scan(wsvc)
    (event,) = outbox(ddb)
    assert (event.account_id, event.data["outpoint"], event.data["block_hash"], event.data["status"],
            event.data["amount_sat"], event.data["required_confirmations"]) == (
        alice, outpoint, block_hash, "CONFIRMING", 5_000_000, 3)
    chain_sim.mine(2)
    scan(wsvc)
    assert wsvc.chain.get_deposit(outpoint).status is DepositStatus.CREDITED
    assert [e.event_id for e in outbox(ddb)] == [event.event_id]  # 3 and 6 confirmations: no second event
    assert_invariants(wsvc)


def test_a_deposit_credited_at_one_confirmation(wsvc, ddb, chain_sim, alice):
    _, outpoint = deposit_to(wsvc, chain_sim, alice, 400_000)
    chain_sim.mine(1)  # seen directly in a block
    scan(wsvc)
    (event,) = outbox(ddb)
    assert (event.data["outpoint"], event.data["status"]) == (outpoint, "CREDITED")
    assert wsvc.chain.get_deposit(outpoint).status is DepositStatus.CREDITED
    (credited,) = outbox(ddb, "deposit.credited")  # the same transaction: the credit's own event
    assert (credited.account_id, credited.data["outpoint"], credited.data["amount_msat"]) == (alice, outpoint,
                                                                                            400_000_000)


def test_a_reorg_that_re_mines_the_deposit_confirms_it_again(wsvc, ddb, chain_sim, alice):
    _, outpoint = deposit_to(wsvc, chain_sim, alice, 5_000_000)
    chain_sim.mine(1)
    scan(wsvc)
    (new_block, _) = chain_sim.reorg(depth=1)
    scan(wsvc)
    first, second = outbox(ddb)
    assert first.event_id != second.event_id and second.data["block_hash"] == new_block
    scan(wsvc)  # nothing new
    assert len(outbox(ddb)) == 2


def test_the_same_transition_written_twice_does_not_block_the_deposit(wsvc, ddb, chain_sim, alice):
    """The same first confirmation recorded again (here: the milestone put back by hand, as a reorg back to the
    same block would) rewrites its outbox item instead of failing the deposit's write."""
    _, outpoint = deposit_to(wsvc, chain_sim, alice, 5_000_000)
    chain_sim.mine(1)
    scan(wsvc)
    (event,) = outbox(ddb)
    ddb.update_item(TableName=TABLE, Key={"pk": {"S": f"DEPOSIT#{outpoint}"}, "sk": {"S": "DEPOSIT"}},
                    UpdateExpression="SET milestone = :zero", ExpressionAttributeValues={":zero": {"N": "0"}})
    chain_sim.mine(2)
    scan(wsvc)
    assert wsvc.chain.get_deposit(outpoint).status is DepositStatus.CREDITED
    assert [e.event_id for e in outbox(ddb)] == [event.event_id]
