"""No silent money: what used to be only a log line is now a ledger entry against SUSPENSE (visible to admins,
assignable): a confirmed deposit to a closed account's address, and an external settlement of an invoice that was
already settled internally."""
from __future__ import annotations

import pytest

from satflow.adapters.dynamodb.solvency import DynamoSolvencyStore
from satflow.app import invoices, payments, solvency
from satflow.app.accounts import ADMIN, create_account, update_account
from satflow.app.addresses import new_deposit_address
from satflow.domain import errors
from satflow.domain.accounts import ALL_SCOPES, Principal
from satflow.domain.ledger import SystemAccount
from satflow.domain.templates import admin_adjustment

from tests.chain.conftest import alice, balance, bob, chain_sim, scan, svc  # noqa: F401 (the chain tests' fixtures)
from tests.conftest import SHARDS, TABLE


@pytest.fixture
def store(svc, ddb):
    svc.solvency = DynamoSolvencyStore(ddb, TABLE)
    return svc.solvency


def test_deposit_to_a_closed_account_is_booked_to_suspense_and_assignable(svc, store, chain_sim, alice, bob):
    scan(svc)
    address = new_deposit_address(svc, Principal(alice, frozenset(ALL_SCOPES))).address
    update_account(svc, ADMIN, alice, status="closed")
    txid = chain_sim.send_to_address(address, 400_000)
    assert scan(svc).get("unattributed") == 1  # seen in the mempool: nothing booked yet (not final)
    assert store.suspense_items() == []
    chain_sim.mine(1)
    result = scan(svc)
    assert result.get("suspense_booked") == 1
    [item] = store.suspense_items("open")
    assert (item.kind, item.direction, item.amount_msat) == ("closed_account_deposit", "in", 400_000_000)
    assert item.reference.startswith(txid) and item.details["account_id"] == alice
    assert balance(svc, SystemAccount.SUSPENSE.value) == (400_000_000, 0, 0)
    assert balance(svc, SystemAccount.ONCHAIN_HOT_WALLET.value) == (-400_000_000, 0, 0)
    assert svc.utxos.get(txid, int(item.reference.split(":")[1])) is not None  # tracked: refundable
    chain_sim.mine(1)
    assert scan(svc).get("suspense_booked", 0) == 0  # a rescan books nothing twice

    with pytest.raises(errors.AccountClosed):  # a closed account cannot receive it back
        solvency.assign_suspense(svc, ADMIN, item.suspense_id, alice, "refund")
    with pytest.raises(errors.ValidationError):
        solvency.assign_suspense(svc, ADMIN, item.suspense_id, "nowhere", "refund")
    with pytest.raises(errors.SuspenseNotFound):
        solvency.assign_suspense(svc, ADMIN, "sus_" + "a" * 26, bob, "refund")
    with pytest.raises(errors.Forbidden):
        solvency.assign_suspense(svc, Principal(bob, frozenset(ALL_SCOPES)), item.suspense_id, bob, "mine")
    done = solvency.assign_suspense(svc, ADMIN, item.suspense_id, bob, "customer's new account (ticket 42)")
    assert done.status == "assigned" and done.assigned_to == bob
    assert solvency.assign_suspense(svc, ADMIN, item.suspense_id, bob, "customer's new account (ticket 42)") == done
    assert balance(svc, bob) == (400_000_000, 0, 0) and balance(svc, SystemAccount.SUSPENSE.value) == (0, 0, 0)
    assert svc.ledger.check_invariants().ok


@pytest.fixture
def lnsvc(svc, ddb):
    from satflow.adapters.dynamodb.lightning import DynamoLightningStore
    from satflow.adapters.dynamodb.models import build_models
    from satflow.adapters.lnd import LndRestClient
    from satflow_dev.simulators.lightning import LightningSimulator

    sim = LightningSimulator()
    client = LndRestClient.from_secret(sim.secret(), transport=sim.transport())
    svc.lnd = lambda: client
    svc.lightning = DynamoLightningStore(ddb, build_models(TABLE, "us-east-1"))
    svc.start_payment = lambda payment_id: None
    svc.solvency = DynamoSolvencyStore(ddb, TABLE)
    return svc


def test_external_settlement_of_an_internally_settled_invoice_is_booked_to_suspense(lnsvc, alice, bob):
    svc = lnsvc
    svc.ledger.execute(admin_adjustment(transfer_id="fund", account_id=alice, amount_msat=100_000,
                                        direction="credit", reason="t", created_at=svc.clock(), shards=SHARDS))
    invoice = invoices.create_invoice(svc, Principal(bob, frozenset(ALL_SCOPES)), amount_msat=40_000)
    payments.create_payment(svc, Principal(alice, frozenset(ALL_SCOPES)), "pay-1", invoice.payment_request)
    # LND misbehaving: a settlement of the same hash arrives from the node although the invoice was cancelled
    result = invoices.credit_settled_invoice(svc, payment_hash=invoice.payment_hash, amount_paid_msat=40_000)
    assert result.outcome == "conflict"
    [item] = svc.solvency.suspense_items("open")
    assert (item.kind, item.source, item.direction, item.amount_msat) == ("invoice_settled_twice", "lightning",
                                                                          "in", 40_000)
    assert balance(svc, bob) == (40_000, 0, 0)  # credited once, by the internal payment
    invoices.credit_settled_invoice(svc, payment_hash=invoice.payment_hash, amount_paid_msat=40_000)
    assert len(svc.solvency.suspense_items()) == 1  # a redelivered event books nothing twice
