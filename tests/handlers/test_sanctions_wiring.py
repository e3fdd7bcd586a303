"""Sanctions screening wired into the money routes: a listed payout address or Lightning payee is refused with 403
SANCTIONED_DESTINATION before anything is reserved, and the refusal is in the audit log."""
import pytest

from satflow import bootstrap
from satflow.adapters.dynamodb.models import build_models
from satflow.adapters.dynamodb.payouts import DynamoPayoutStore

from tests.audit.helpers import seal_all
from tests.conftest import TABLE
from tests.handlers.test_api import balance, fund, new_account

LISTED_REGTEST_ADDRESS = "bcrt1qfgqfxyftnzcj3kr6jkqwqew6v67x22xju763m9"  # in tests/fixtures/ofac/sdn_sample.xml
CLEAN_ADDRESS = "bcrt1q50rtrmj2f8vl9tem8qpfw36ylw5jg9j2dkku3w"


def blocked_records():
    audit = bootstrap.services().audit
    seal_all(audit)
    return [r for s in range(audit.shards) for r in audit.records(s, 0, 1000) if r.action == "sanctions.blocked"]


@pytest.fixture
def alice(api, admin):
    svc = bootstrap.services()
    svc.payouts = DynamoPayoutStore(svc.ledger._client, build_models(TABLE, "us-east-1"))
    account = new_account(api, admin, "tg:alice")
    fund(api, admin, account["account_id"], 100_000_000)
    return account


def payout(api, who, key, address):
    return api.call("POST", "/v1/payouts", key=who["api_key"], headers={"Idempotency-Key": key},
                    body={"address": address, "amount_sat": 50_000})


@pytest.mark.parametrize("address", [LISTED_REGTEST_ADDRESS, LISTED_REGTEST_ADDRESS.upper()])
def test_a_payout_to_a_listed_address_is_refused_and_reserves_nothing(api, alice, address):
    before = balance(api, alice["api_key"])
    status, body = payout(api, alice, "k1", address)
    assert (status, body["error"]["code"]) == (403, "SANCTIONED_DESTINATION"), body
    assert "sanctions list" in body["error"]["message"]
    assert balance(api, alice["api_key"]) == before
    (record,) = blocked_records()
    assert record.actor == alice["account_id"] and record.subject_ids[0] == alice["account_id"]
    assert payout(api, alice, "k2", CLEAN_ADDRESS)[0] == 202  # the account itself is not blocked


def test_a_payment_to_a_listed_node_is_refused_and_reserves_nothing(api, alice, sim):
    before = balance(api, alice["api_key"])
    listed = sim.external_invoice(10_000, "x", payee="sanctioned")
    status, body = api.call("POST", "/v1/payments", key=alice["api_key"], headers={"Idempotency-Key": "p1"},
                            body={"payment_request": listed})
    assert (status, body["error"]["code"]) == (403, "SANCTIONED_DESTINATION"), body
    assert balance(api, alice["api_key"]) == before and len(blocked_records()) == 1
    clean = sim.external_invoice(10_000, "y")
    assert api.call("POST", "/v1/payments", key=alice["api_key"], headers={"Idempotency-Key": "p2"},
                    body={"payment_request": clean})[0] == 202
