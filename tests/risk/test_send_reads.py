"""A send reads what it is decided on once (app/send_reads.py), and accounts whose limit and balance items predate
the recent sends and last credit kept on them are scored exactly as the ledger history says, once, after which the
next admission stores what the history said."""
from __future__ import annotations

from satflow.adapters.dynamodb.batch import ItemRead, read_many
from satflow.adapters.dynamodb.limits import limits_pk
from satflow.adapters.dynamodb.models import balance_key
from satflow.app import risk, transfers
from satflow_dev.ddb_calls import counting

from tests.conftest import TABLE
from tests.risk.test_app import FUNDS, _account, _send


def _strip(ddb, pk, sk, attribute):
    """Make an item look as it did before this change (written by the previous release)."""
    ddb.update_item(TableName=TABLE, Key={"pk": {"S": pk}, "sk": {"S": sk}}, UpdateExpression=f"REMOVE {attribute}")


def test_recent_sends_and_last_credit_come_from_the_limit_and_balance_items_in_one_round_trip(svc, ddb):
    alice, bob = _account(svc, "tg:a", FUNDS), _account(svc, "tg:b")
    for n, amount in enumerate((1_000, 3_000, 2_000)):
        transfers.create_transfer(svc, alice, f"k{n}", bob.account_id, amount)
    with counting(ddb) as log:
        found = risk.features(svc, _send(alice, bob, 500, subject="tr_next"))
    assert (found.past_sends, found.max_past_send_msat) == (3, 3_000)
    assert found.seconds_since_last_credit is not None and not found.new_destination
    assert [op for op, _ in log.calls] == ["BatchGetItem"], log.describe()


def test_items_from_before_the_change_fall_back_to_the_history_once_and_are_seeded_by_the_next_send(svc, ddb):
    alice, bob = _account(svc, "tg:a", FUNDS), _account(svc, "tg:b")
    for n, amount in enumerate((1_000, 3_000, 2_000)):
        transfers.create_transfer(svc, alice, f"k{n}", bob.account_id, amount)
    expected = risk.features(svc, _send(alice, bob, 500, subject="tr_next"))
    _strip(ddb, limits_pk(alice.account_id), "LIMITS", "sends")
    _strip(ddb, *balance_key(alice.account_id, "BTC", None), "last_credit_at")

    with counting(ddb) as log:
        legacy = risk.features(svc, _send(alice, bob, 500, subject="tr_next"))
    assert legacy == expected  # the same facts, from the ledger history
    assert [op for op, _ in log.calls] == ["BatchGetItem", "Query"], log.describe()

    transfers.create_transfer(svc, alice, "k3", bob.account_id, 4_000)  # admission stores history + this send
    raw = ddb.get_item(TableName=TABLE, Key={"pk": {"S": limits_pk(alice.account_id)}, "sk": {"S": "LIMITS"}},
                       ConsistentRead=True)["Item"]
    assert [int(part.split(":")[0]) for part in raw["sends"]["S"].split(",")] == [1_000, 3_000, 2_000, 4_000]
    after = risk.features(svc, _send(alice, bob, 500, subject="tr_next"))
    assert (after.past_sends, after.max_past_send_msat) == (4, 4_000)


def test_read_many_fetches_unprocessed_keys_again_and_keeps_the_order_asked():
    class Client:
        def __init__(self):
            self.requests = []

        def batch_get_item(self, RequestItems):  # noqa: N803 - botocore's name
            self.requests.append(RequestItems)
            keys = RequestItems["t"]["Keys"]
            if len(self.requests) == 1:  # throttled: the last key comes back unprocessed
                return {"Responses": {"t": [dict(k, v={"S": k["pk"]["S"]}) for k in keys[:-1]]},
                        "UnprocessedKeys": {"t": {"Keys": keys[-1:], "ConsistentRead": True}}}
            return {"Responses": {"t": [dict(k, v={"S": k["pk"]["S"]}) for k in keys]}}

    client = Client()

    def value(raw):
        return None if raw is None else raw["v"]["S"]

    reads = [ItemRead(client, "t", pk, "s", value) for pk in ("a", "b", "a", "c")]
    assert read_many(reads) == ["a", "b", "a", "c"]
    assert [len(r["t"]["Keys"]) for r in client.requests] == [3, 1]  # "a" asked once
    assert all(r["t"]["ConsistentRead"] for r in client.requests)
