"""The locked moto server: concurrent clients never see moto's thread-safety failures."""
from __future__ import annotations

import threading

import boto3
import pytest
from botocore.config import Config

from satflow_dev.runtime.moto_server import LambdaInvokeResult, start_moto_server

THREADS, OPERATIONS = 8, 8


def _client(service: str, url: str):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing",
                        # No retries: a 500 from moto must fail the test, not be papered over.
                        config=Config(max_pool_connections=THREADS * 2, retries={"total_max_attempts": 1}))


@pytest.fixture(scope="module")
def moto_url():
    calls: list[tuple[str, bytes, str]] = []

    def lambda_invoker(name: str, payload: bytes, invocation_type: str) -> LambdaInvokeResult | None:
        calls.append((name, payload, invocation_type))
        return LambdaInvokeResult(200, b'{"echo": ' + payload + b"}") if name == "ours" else None

    url, stop = start_moto_server(lambda_invoker=lambda_invoker)
    yield url
    stop()


def test_eight_threads_of_transactions_queries_puts_and_gets(moto_url):
    """Without the lock this workload intermittently got HTTP 500s from moto (a transaction copies the table while
    another thread writes to it). With it: no errors, and every counter increment is applied exactly once."""
    table = "runtime-concurrency"
    _client("dynamodb", moto_url).create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        client = _client("dynamodb", moto_url)
        start.wait()
        try:
            for i in range(OPERATIONS):
                client.transact_write_items(TransactItems=[
                    {"Put": {"TableName": table, "Item": {"pk": {"S": f"t{n}"}, "sk": {"S": str(i)}},
                             "ConditionExpression": "attribute_not_exists(pk)"}},
                    {"Update": {"TableName": table, "Key": {"pk": {"S": "counter"}, "sk": {"S": str(n % 4)}},
                                "UpdateExpression": "ADD v :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}},
                ])
                client.query(TableName=table, KeyConditionExpression="pk = :p",
                             ExpressionAttributeValues={":p": {"S": "counter"}})
                client.put_item(TableName=table, Item={"pk": {"S": "shared"}, "sk": {"S": f"{n}-{i}"}})
                assert "Item" in client.get_item(TableName=table, Key={"pk": {"S": "shared"}, "sk": {"S": f"{n}-{i}"}})
        except BaseException as exc:  # collected: an assertion in a thread would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    counters = _client("dynamodb", moto_url).query(
        TableName=table, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "counter"}})
    assert sum(int(item["v"]["N"]) for item in counters["Items"]) == THREADS * OPERATIONS


def test_the_lock_is_held_until_the_response_body_is_consumed():
    from satflow_dev.runtime.moto_server import MOTO_LOCK, _SerialisedMotoApp

    seen: list[bool] = []

    class LazyBody:  # like a streamed Flask response: produced while the server iterates it
        def __iter__(self):
            for chunk in (b"a", b"b"):
                seen.append(MOTO_LOCK.locked())
                yield chunk

        def close(self):
            seen.append(MOTO_LOCK.locked())

    def moto_app(environ, start_response):
        seen.append(MOTO_LOCK.locked())
        start_response("200 OK", [("Content-Length", "2")])
        return LazyBody()

    statuses = []
    body = _SerialisedMotoApp(moto_app, None)({"PATH_INFO": "/"}, lambda s, h, e=None: statuses.append(s))
    assert (b"".join(body), statuses) == (b"ab", ["200 OK"])
    assert seen == [True, True, True, True]  # call, both chunks and close(), all under the lock
    assert not MOTO_LOCK.locked()


def test_lambda_invoke_goes_to_the_invoker_and_unknown_functions_fall_through_to_moto(moto_url):
    client = _client("lambda", moto_url)
    response = client.invoke(FunctionName="ours", Payload=b'{"a": 1}')
    assert response["StatusCode"] == 200
    assert response["Payload"].read() == b'{"echo": {"a": 1}}'
    # Not ours: moto answers (with lambda.use_docker off it echoes the payload instead of running code).
    response = client.invoke(FunctionName="not-ours", Payload=b'{"b": 2}')
    assert response["Payload"].read() == b'{"b": 2}'


def test_step_functions_execution_is_switched_on(moto_url):
    # GET /moto-api/config does not report this section, so look at the (process-wide) setting itself.
    from moto.core.config import default_user_config

    assert default_user_config["stepfunctions"]["execute_state_machine"] is True


def _stream_records(url: str, table: str) -> list[dict]:
    streams = _client("dynamodbstreams", url)
    arn = _client("dynamodb", url).describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    return streams.get_records(ShardIterator=iterator, Limit=1000)["Records"]


def test_a_transaction_snapshots_only_its_items_and_a_cancelled_one_leaves_no_trace(moto_url, monkeypatch):
    """moto deep-copied every touched table (with all its stream records) on each TransactWriteItems: time and
    memory grew with everything ever written. The patch snapshots only the named items; a cancellation restores
    them and drops the stream records it wrote, exactly as the whole-table copy did."""
    from moto.dynamodb.models.dynamo_type import Item

    table = "runtime-snapshots"
    client = _client("dynamodb", moto_url)
    client.create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    for i in range(300):
        client.put_item(TableName=table, Item={"pk": {"S": "filler"}, "sk": {"S": str(i)}})
    client.put_item(TableName=table, Item={"pk": {"S": "acct"}, "sk": {"S": "a"}, "bal": {"N": "10"}})
    records_before = len(_stream_records(moto_url, table))

    copies = [0]
    original_deepcopy = Item.__deepcopy__

    def counting_deepcopy(self, memo):
        copies[0] += 1
        return original_deepcopy(self, memo)

    monkeypatch.setattr(Item, "__deepcopy__", counting_deepcopy)
    debit = {"Update": {"TableName": table, "Key": {"pk": {"S": "acct"}, "sk": {"S": "a"}},
                        "UpdateExpression": "SET bal = bal - :amt", "ConditionExpression": "bal >= :amt",
                        "ExpressionAttributeValues": {":amt": {"N": "4"}}}}
    new_item = {"Put": {"TableName": table, "Item": {"pk": {"S": "tx"}, "sk": {"S": "1"}},
                        "ConditionExpression": "attribute_not_exists(pk)"}}
    client.transact_write_items(TransactItems=[debit, new_item])
    assert copies[0] <= 4  # the two named items (at most twice each), not the 300 others
    assert client.get_item(TableName=table, Key={"pk": {"S": "acct"}, "sk": {"S": "a"}})["Item"]["bal"] == {"N": "6"}

    # Cancelled: the debit applies first, then the put's condition fails (the item exists): nothing may remain.
    third = {"Put": {"TableName": table, "Item": {"pk": {"S": "tx"}, "sk": {"S": "2"}}}}
    with pytest.raises(client.exceptions.TransactionCanceledException):
        client.transact_write_items(TransactItems=[debit, third, new_item])
    assert client.get_item(TableName=table, Key={"pk": {"S": "acct"}, "sk": {"S": "a"}})["Item"]["bal"] == {"N": "6"}
    assert "Item" not in client.get_item(TableName=table, Key={"pk": {"S": "tx"}, "sk": {"S": "2"}})
    records = _stream_records(moto_url, table)
    assert len(records) == records_before + 2  # the successful transaction's two writes, none of the cancelled one
    assert client.query(TableName=table, KeyConditionExpression="pk = :p",
                        ExpressionAttributeValues={":p": {"S": "tx"}})["Count"] == 1
