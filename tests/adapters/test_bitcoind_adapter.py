"""BitcoinRpcClient against recorded Bitcoin Core 27 responses (tests/adapters/fixtures/bitcoind/*.json).

Each fixture case names the call, the JSON-RPC request it must send and the response to serve through
httpx.MockTransport; the test asserts the typed result (or the typed error) AND the request (method, params, auth).
"""
from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

import httpx
import pytest

from satflow.adapters.bitcoind import BitcoinRpcClient, txid_of
from satflow.domain.bitcoin import (
    BitcoinNodeError,
    BitcoinNodeUnavailable,
    FeeEstimateMode,
    Network,
    TransactionInputsMissing,
    TransactionRejected,
)
from satflow.domain.errors import NotFound, SatflowError, TransientError, ValidationError
from satflow_dev.simulators.chain_json import dumps_rpc_json

FIXTURES = Path(__file__).parent / "fixtures" / "bitcoind"
URL = "http://bitcoind.test:18443/"
USER = "satflow"
PASSWORD = "rpc-password-never-logged"


# --- fixture machinery -------------------------------------------------------------------------------------------
def _fixture_cases() -> Iterator[Any]:
    for path in sorted(FIXTURES.glob("*.json")):
        document = json.loads(path.read_text(), parse_float=Decimal)
        for case in document["cases"]:
            yield pytest.param(document["method"], case, id=f"{path.stem}: {case['name']}")


def _serve(response: dict[str, Any]) -> httpx.Response:
    headers = dict(response.get("headers", {}))
    if "body" in response:
        headers.setdefault("content-type", "application/json")
        # dumps_rpc_json writes Decimals as JSON numbers with their recorded digits (0.00100000 stays 0.00100000).
        return httpx.Response(response["status"], content=dumps_rpc_json(response["body"]).encode(), headers=headers)
    return httpx.Response(response["status"], text=response.get("text", ""), headers=headers)


def _plain(value: Any) -> Any:
    """Typed results as JSON-like data: dataclasses -> dicts, tuples -> lists, Decimal -> str, enums -> values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def _assert_matches(actual: Any, expected: Any, path: str = "$") -> None:
    """Dicts in the expectation are partial (only the keys listed); lists must match element by element."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        for key, item in expected.items():
            assert key in actual, f"{path}.{key} missing from {sorted(actual)}"
            _assert_matches(actual[key], item, f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for index, (a, e) in enumerate(zip(actual, expected)):
            _assert_matches(a, e, f"{path}[{index}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def _recording_client(handler: Any) -> tuple[BitcoinRpcClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    return BitcoinRpcClient(URL, USER, PASSWORD, transport=httpx.MockTransport(record)), seen


def _convert_call_args(args: list[Any]) -> list[Any]:
    # Fixtures spell estimate modes as strings; the client takes the enum.
    return [FeeEstimateMode(arg) if arg in ("economical", "conservative") else arg for arg in args]


@pytest.mark.parametrize("method, case", list(_fixture_cases()))
def test_recorded_exchange(method: str, case: dict[str, Any]) -> None:
    client, seen = _recording_client(lambda request: _serve(case["response"]))
    call = case["call"]
    invoke = getattr(client, call.get("method", method))
    args, kwargs = _convert_call_args(call.get("args", [])), call.get("kwargs", {})
    expect = case["expect"]

    if "error" in expect:
        with pytest.raises(SatflowError) as raised:
            invoke(*args, **kwargs)
        assert type(raised.value).__name__ == expect["error"]
        for key, value in expect.get("details", {}).items():
            assert raised.value.details[key] == value
        assert PASSWORD not in str(raised.value)
    else:
        result = invoke(*args, **kwargs)
        _assert_matches(_plain(result), expect["value"])
        if "already_known" in expect:
            assert [entry.already_known for entry in result] == expect["already_known"]

    assert len(seen) == 1
    request = seen[0]
    assert request.method == "POST"
    assert str(request.url) == URL
    assert request.headers["authorization"] == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    body = json.loads(request.content, parse_float=Decimal)  # numbers compare exactly (maxfeerate 0.10)
    assert body == {
        "jsonrpc": "1.0",
        "id": body["id"],
        "method": case["request"]["method"],
        "params": case["request"]["params"],
    }
    assert isinstance(body["id"], int)


def test_every_fixture_file_is_used() -> None:
    methods = {json.loads(p.read_text())["method"] for p in FIXTURES.glob("*.json")}
    assert methods == {
        "getblockchaininfo", "getblockcount", "getblockhash", "getblock", "getrawtransaction",
        "estimatesmartfee", "testmempoolaccept", "sendrawtransaction", "errors",
    }


# --- transport, configuration and secrets ------------------------------------------------------------------------
def _ok(result: Any) -> Any:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"result": result, "error": None, "id": json.loads(request.content)["id"]})

    return answer


def test_every_request_carries_bounded_timeouts() -> None:
    client, seen = _recording_client(_ok(7))
    client.getblockcount()
    assert seen[0].extensions["timeout"] == {"connect": 10.0, "read": 10.0, "write": 10.0, "pool": 10.0}


@pytest.mark.parametrize("timeout_s", [None, 0, -1, float("inf"), float("nan"), True])
def test_unbounded_or_invalid_timeouts_are_refused(timeout_s: Any) -> None:
    with pytest.raises(ValidationError):
        BitcoinRpcClient(URL, USER, PASSWORD, timeout_s=timeout_s)


@pytest.mark.parametrize(
    "exception",
    [httpx.ReadTimeout("read timed out"), httpx.ConnectTimeout("connect timed out"), httpx.ConnectError("refused"),
     httpx.RemoteProtocolError("server disconnected")],
    ids=lambda e: type(e).__name__,
)
def test_transport_failures_are_transient(exception: Exception) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exception

    client, _ = _recording_client(fail)
    with pytest.raises(BitcoinNodeUnavailable) as raised:
        client.getblockcount()
    assert isinstance(raised.value, TransientError)
    assert PASSWORD not in str(raised.value)


def test_repr_and_errors_never_show_the_password() -> None:
    client = BitcoinRpcClient.from_secret({"url": URL, "user": USER, "password": PASSWORD})
    assert PASSWORD not in repr(client)
    assert "***" in repr(client)


def test_from_secret_requires_every_field_and_does_not_echo_values() -> None:
    with pytest.raises(ValidationError) as raised:
        BitcoinRpcClient.from_secret({"url": URL, "user": USER})
    assert "password" in str(raised.value)


def test_credentials_in_the_url_are_refused() -> None:
    with pytest.raises(ValidationError):
        BitcoinRpcClient(f"http://{USER}:{PASSWORD}@bitcoind.test:18443/", USER, PASSWORD)


def test_invalid_arguments_fail_before_any_request() -> None:
    client, seen = _recording_client(_ok(None))
    with pytest.raises(ValidationError):
        client.estimatesmartfee(0, FeeEstimateMode.ECONOMICAL)
    with pytest.raises(ValidationError):
        client.getblockhash(-1)
    with pytest.raises(ValueError):
        client.getblock("00" * 32, verbosity=1)
    with pytest.raises(ValueError):
        client.testmempoolaccept("0200")
    assert seen == []


def test_decimal_parameters_go_out_as_exact_strings_and_floats_never() -> None:
    client, seen = _recording_client(_ok("ab" * 32))
    client.call("sendtoaddress", "bcrt1q6rz28mcfaxtmd6v789l9rrlrusdprr9pz3cppk", Decimal("0.00150000"))
    assert json.loads(seen[0].content)["params"][1] == "0.00150000"
    with pytest.raises(TypeError):
        client.call("sendtoaddress", "bcrt1q6rz28mcfaxtmd6v789l9rrlrusdprr9pz3cppk", 0.0015)
    assert len(seen) == 1


def test_blockchain_info_names_the_network() -> None:
    client, _ = _recording_client(
        _ok({"chain": "regtest", "blocks": 1, "headers": 1, "bestblockhash": "ab" * 32, "verificationprogress": 1,
             "initialblockdownload": False, "pruned": False})
    )
    assert client.getblockchaininfo().network is Network.REGTEST


def test_error_classes_keep_their_retry_semantics() -> None:
    # ASL retries TransientError subclasses on forward steps; nothing else may be retried blindly.
    assert issubclass(BitcoinNodeUnavailable, TransientError)
    assert not issubclass(BitcoinNodeError, TransientError)
    assert issubclass(TransactionInputsMissing, TransactionRejected)
    from satflow.domain.bitcoin import BitcoinBlockNotFound, BitcoinTxNotFound

    assert issubclass(BitcoinTxNotFound, NotFound) and issubclass(BitcoinBlockNotFound, NotFound)


def test_txid_of_raw_transaction() -> None:
    document = json.loads((FIXTURES / "sendrawtransaction.json").read_text())
    raw = document["cases"][0]["request"]["params"][0]
    assert txid_of(raw) == document["cases"][0]["expect"]["value"]
    with pytest.raises(ValueError):
        txid_of("zz")


# --- btcd (the regtest tier's chain node): answers recorded from btcd v0.24 --------------------------------------
def _btcd(*answers: Any) -> tuple[BitcoinRpcClient, list[Any]]:
    """A client whose node answers each request with the next ``(http status, body)`` in turn."""
    replies = iter(answers)

    def answer(request: httpx.Request) -> httpx.Response:
        status, body = next(replies)
        return httpx.Response(status, content=dumps_rpc_json(body).encode(),
                              headers={"content-type": "application/json"})

    client, seen = _recording_client(answer)
    return client, seen


def _rpc_error(code: int, message: str) -> tuple[int, dict[str, Any]]:
    return 500, {"result": None, "error": {"code": code, "message": message}, "id": 1}


def _requests(seen: list[httpx.Request]) -> list[tuple[str, list[Any]]]:
    return [(json.loads(r.content)["method"], json.loads(r.content, parse_float=Decimal)["params"]) for r in seen]


def test_btcd_without_estimatesmartfee_falls_back_to_estimatefee_once() -> None:
    client, seen = _btcd(_rpc_error(-32601, "Method not found"),
                         (200, {"result": Decimal("0.00001994"), "error": None, "id": 2}),
                         (200, {"result": Decimal("0.0000201257861635"), "error": None, "id": 3}))
    first = client.estimatesmartfee(6, FeeEstimateMode.ECONOMICAL)
    second = client.estimatesmartfee(2, FeeEstimateMode.CONSERVATIVE)
    assert (first.sat_per_kvb, first.sat_per_vb, first.blocks) == (1_994, 2, 6)
    assert (second.sat_per_kvb, second.sat_per_vb) == (2_013, 3)  # float noise rounds UP, never below the node
    assert _requests(seen) == [("estimatesmartfee", [6, "economical"]), ("estimatefee", [6]), ("estimatefee", [2])]


@pytest.mark.parametrize("answer", [(200, {"result": 0, "error": None, "id": 2}),
                                    (200, {"result": -1, "error": None, "id": 2}),
                                    _rpc_error(-32600, "Invalid request: malformed")])  # target above 25 blocks
def test_btcd_without_an_estimate_says_none(answer: Any) -> None:
    client, _ = _btcd(_rpc_error(-32601, "Method not found"), answer)
    assert client.estimatesmartfee(6, FeeEstimateMode.ECONOMICAL) is None


def test_btcd_estimatefee_unreachable_is_still_transient() -> None:
    client, _ = _btcd(_rpc_error(-32601, "Method not found"), (503, {"result": None, "error": None, "id": 2}))
    with pytest.raises(BitcoinNodeUnavailable):
        client.estimatesmartfee(6, FeeEstimateMode.ECONOMICAL)


def test_btcd_blockchain_info_without_ibd_fields() -> None:
    body = {"chain": "regtest", "blocks": 440, "headers": 440, "bestblockhash": "ab" * 32, "difficulty": 1,
            "mediantime": 1795274418, "pruned": False}
    client, _ = _btcd((200, {"result": body, "error": None, "id": 1}))
    info = client.getblockchaininfo()
    assert (info.initial_block_download, info.verification_progress, info.network) == (False, 1, Network.REGTEST)


def test_btcd_height_above_the_tip_is_block_not_found() -> None:
    client, _ = _btcd(_rpc_error(-1, "Block number out of range"))
    with pytest.raises(NotFound):
        client.getblockhash(10_000)


def test_btcd_getblock_lists_transactions_under_rawtx() -> None:
    coinbase = {"hex": "", "txid": "cd" * 32, "hash": "cd" * 32, "size": 100, "vsize": 100, "weight": 400,
                "version": 1, "locktime": 0, "vin": [{"coinbase": "0101", "sequence": 4294967295}],
                "vout": [{"value": Decimal("12.5"), "n": 0, "scriptPubKey": {"asm": "", "hex": "0014" + "11" * 20,
                                                                             "type": "witness_v0_keyhash"}}]}
    block = {"hash": "ef" * 32, "confirmations": 1, "height": 441, "time": 1795274446,
             "previousblockhash": "ab" * 32, "rawtx": [coinbase]}
    client, seen = _btcd((200, {"result": block, "error": None, "id": 1}))
    (tx,) = client.getblock("ef" * 32).transactions
    assert tx.is_coinbase and tx.outputs[0].value_sat == 1_250_000_000 and tx.fee_sat is None
    assert _requests(seen) == [("getblock", ["ef" * 32, 2])]


def test_btcd_getrawtransaction_without_blockhash_parameter_checks_the_block_itself() -> None:
    tx = {"hex": "00", "txid": "cd" * 32, "hash": "cd" * 32, "vsize": 141, "vin": [{"txid": "aa" * 32, "vout": 0}],
          "vout": [], "blockhash": "ef" * 32, "confirmations": 1}
    wrong_count = _rpc_error(-32602, "wrong number of params (expected between 1 and 2, received 3)")
    client, seen = _btcd(wrong_count, (200, {"result": tx, "error": None, "id": 2}),
                         wrong_count, (200, {"result": tx, "error": None, "id": 4}))
    assert client.getrawtransaction("cd" * 32, True, "ef" * 32).block_hash == "ef" * 32
    with pytest.raises(NotFound):
        client.getrawtransaction("cd" * 32, True, "12" * 32)
    assert _requests(seen)[:2] == [("getrawtransaction", ["cd" * 32, 1, "ef" * 32]),
                                   ("getrawtransaction", ["cd" * 32, 1])]


def test_btcd_broadcast_answers() -> None:
    raw = json.loads((FIXTURES / "sendrawtransaction.json").read_text())["cases"][0]["request"]["params"][0]
    client, _ = _btcd(_rpc_error(-26, f"TX rejected: already have transaction in mempool {txid_of(raw)}"),
                      _rpc_error(-25, "TX rejected: orphan transaction " + "ab" * 32 + " references outputs of "
                                 "unknown or fully-spent transaction " + "cd" * 32))
    assert client.sendrawtransaction(raw) == txid_of(raw)
    with pytest.raises(TransactionInputsMissing):
        client.sendrawtransaction(raw)


def test_btcd_testmempoolaccept_reasons_read_as_cores() -> None:
    entries = [{"txid": "cd" * 32, "wtxid": "cd" * 32, "package-error": "",
                "reject-reason": "already have transaction in mempool " + "cd" * 32},
               {"txid": "ef" * 32, "wtxid": "ef" * 32, "package-error": "",
                "reject-reason": "transaction already exists in blockchain"},
               {"txid": "12" * 32, "wtxid": "12" * 32, "package-error": "", "reject-reason": "missing-inputs"}]
    client, seen = _btcd((200, {"result": entries, "error": None, "id": 1}))
    results = client.testmempoolaccept(["00", "01", "02"])
    assert [r.reject_reason for r in results] == ["txn-already-in-mempool", "txn-already-known", "missing-inputs"]
    assert [r.already_known for r in results] == [True, True, False]
    assert _requests(seen) == [("testmempoolaccept", [["00", "01", "02"], Decimal("0.10")])]
