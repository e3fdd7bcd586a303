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
