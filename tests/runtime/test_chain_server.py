"""The chain simulator over real HTTP as our Bitcoin Core node: the secrets the functions read (RPC URL and
credentials, the signer's test tprv), our BitcoinRpcClient against it, Core's HTTP behaviour (auth, POST only,
status per RPC error, batches), and the /_sim/chain routes, including the chain monitor fired after mining."""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest
from embit import bip32, bip39

from satflow.adapters.bitcoind import BitcoinRpcClient
from satflow.domain.bitcoin import BitcoinNodeAuthFailed, BitcoinRpcMethodNotFound, FeeEstimateMode
from satflow_dev.runtime.chain_server import ChainService, bip84_test_account, signer_refusal
from satflow_dev.runtime.resources import aws_client
from tests.runtime_http import fresh_stack_name

from .conftest import REAL_TEMPLATE

MNEMONIC = " ".join(["abandon"] * 11 + ["about"])
TEST_TPUB = (
    "tpubDC8msFGeGuwnKG9Upg7DM2b4DaRqg3CUZa5g8v2SRQ6K4NSkxUgd7HsL2XVWbVm39yBA4LAxysQAm397zwQSQoQgewGiYZqrA9DsP4zbQ1M"
)
# Receive 0 and 1 of that account on regtest (tests/unit/test_addresses.py pins them to the published vectors).
DEPOSIT_0 = "bcrt1q6rz28mcfaxtmd6v789l9rrlrusdprr9pz3cppk"
DEPOSIT_1 = "bcrt1qd7spv5q28348xl4myc8zmh983w5jx32cs707jh"

CHAIN_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Suffix: {Type: String, Default: c1}
  Network: {Type: String, Default: regtest}
  DepositAccountKey: {Type: String, Default: %(tpub)s}
Globals:
  Function:
    Timeout: 5
    Environment:
      Variables:
        SATFLOW_NETWORK: !Ref Network
        SATFLOW_BITCOIND_SECRET_ID: !Ref BitcoindSecret
        SATFLOW_SIGNER_SECRET_ID: !Ref SignerSecret
        SATFLOW_DEPOSIT_ACCOUNT_KEY: !Ref DepositAccountKey
Resources:
  BitcoindSecret:
    Type: AWS::SecretsManager::Secret
    Properties:
      Name: !Sub "bitcoind-${Suffix}"
      SecretString: '{"url":"https://bitcoind.invalid:8332","user":"satflow","password":"replace-me"}'
  SignerSecret:
    Type: AWS::SecretsManager::Secret
    Properties:
      Name: !Sub "signer-${Suffix}"
      SecretString: replace-me
  MonitorFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/monitor/
      Handler: app.handler
      Events:
        ChainScan: {Type: Schedule, Properties: {Schedule: rate(1 minute), Input: '{"job":"chain_scan"}'}}
""" % {"tpub": TEST_TPUB}

MONITOR_HANDLER = '''\
import os

import boto3


def handler(event, context):
    # What a chain monitor would do first: read the node's secret (from moto) and look at the tip.
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=os.environ["SATFLOW_BITCOIND_SECRET_ID"])
    return {"job": event["job"], "secret_url": __import__("json").loads(secret["SecretString"])["url"]}
'''


def _write_chain_project(root: Path) -> Path:
    (root / "functions" / "monitor").mkdir(parents=True)
    (root / "functions" / "monitor" / "app.py").write_text(MONITOR_HANDLER)
    template = root / "template.yaml"
    template.write_text(CHAIN_TEMPLATE)
    return template


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    """The chain service and the schedules (fired by hand only), so mining's chain_scan is deterministic."""
    from satflow_dev.runtime.local_runtime import LocalRuntime
    from satflow_dev.runtime.services import chain_service_factory, schedule_runner_factory

    root = tmp_path_factory.mktemp("chain")
    with LocalRuntime(_write_chain_project(root), port=0, parameter_overrides={"Suffix": root.name},
                      service_factories=[chain_service_factory, schedule_runner_factory],
                      write_admin_key_file=False, environ={"SATFLOW_SCHEDULE_SCALE": "0"}) as rt:
        yield rt


@pytest.fixture(scope="module")
def service(runtime) -> ChainService:
    return runtime.service("chain")


def _secret(runtime, env_name: str) -> str:
    name = runtime.model.function("MonitorFunction").env[env_name]
    return aws_client("secretsmanager", runtime.moto_url).get_secret_value(SecretId=name)["SecretString"]


@pytest.fixture(scope="module")
def secret(runtime, service) -> dict:
    return json.loads(_secret(runtime, "SATFLOW_BITCOIND_SECRET_ID"))


@pytest.fixture
def client(secret):
    with BitcoinRpcClient.from_secret(secret, timeout_s=5) as rpc:
        yield rpc


def _sim(runtime, method: str, path: str, body=None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(runtime.url + path, method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# ---------------------------------------------------------------------------------------------- secrets


def test_the_bitcoind_secret_points_at_the_served_simulator(secret, service):
    assert secret == {"url": service.url, "user": "satflow", "password": service.rpc_password}
    assert secret["url"].startswith("http://127.0.0.1:") and len(secret["password"]) >= 24


def test_the_signer_secret_is_the_bip84_test_tprv(runtime, service):
    expected = bip32.HDKey.from_seed(bip39.mnemonic_to_seed(MNEMONIC)).derive("m/84h/1h/0h")
    tprv = _secret(runtime, "SATFLOW_SIGNER_SECRET_ID")
    assert tprv.startswith("tprv") and tprv == expected.to_base58(version=bytes.fromhex("04358394"))
    assert bip32.HDKey.from_string(tprv).to_public().to_base58(version=bytes.fromhex("043587cf")) == TEST_TPUB
    assert service.signer_written and bip84_test_account() == (tprv, TEST_TPUB)
    described = "\n".join(service.describe())
    assert "signer: BIP84 test key (regtest only)" in described and tprv not in described


def test_the_signer_is_only_the_test_key_on_regtest_for_its_own_account():
    assert signer_refusal("regtest", TEST_TPUB) is None
    assert signer_refusal(None, None) is None
    assert signer_refusal("regtest", f"wpkh([73c5da0a/84h/1h/0h]{TEST_TPUB}/0/*)") is None
    assert "regtest only" in signer_refusal("signet", TEST_TPUB)
    other = bip32.HDKey.from_seed(bytes(32)).derive("m/84h/1h/0h").to_public().to_base58(
        version=bytes.fromhex("043587cf"))
    assert "not the BIP84 test key" in signer_refusal("regtest", other)
    zpub = bip32.HDKey.from_seed(bytes(32)).derive("m/84h/0h/0h").to_public().to_base58(
        version=bytes.fromhex("04b24746"))
    assert "does not parse" in signer_refusal("regtest", zpub)


def test_a_refused_signer_keeps_its_declared_value(tmp_path):
    from satflow_dev.runtime.local_runtime import LocalRuntime
    from satflow_dev.runtime.services import chain_service_factory

    template = _write_chain_project(tmp_path)
    with LocalRuntime(template, port=0, service_factories=[chain_service_factory], write_admin_key_file=False,
                      parameter_overrides={"Suffix": "refused", "Network": "signet"}) as rt:
        assert _secret(rt, "SATFLOW_SIGNER_SECRET_ID") == "replace-me"
        assert not rt.service("chain").signer_written
        assert any("signer: not written (Network is signet" in line for line in rt.service("chain").describe())


# ---------------------------------------------------------------------------------------------- JSON-RPC over HTTP


def test_our_adapter_talks_to_it_over_http(client, service):
    sim = service.simulator
    info = client.getblockchaininfo()
    assert (info.chain, info.blocks, info.best_block_hash) == ("regtest", sim.height, sim.tip_hash)
    assert info.blocks >= 101 and not info.initial_block_download

    txid = sim.send_to_address(DEPOSIT_0, 125_000)
    unconfirmed = client.getrawtransaction(txid)
    assert unconfirmed.confirmations == 0 and unconfirmed.block_hash is None
    [block_hash] = sim.mine(1)
    assert client.getbestblockhash() == block_hash
    block = client.getblock(block_hash)
    assert block.height == sim.height and block.confirmations == 1
    paid = [out for tx in block.transactions if tx.txid == txid for out in tx.outputs if out.address == DEPOSIT_0]
    assert [out.value_sat for out in paid] == [125_000]
    assert client.getrawtransaction(txid).confirmations == 1


def test_wrong_credentials_are_a_bare_401(secret, service):
    with BitcoinRpcClient.from_secret({**secret, "password": "wrong"}, timeout_s=5) as bad:
        with pytest.raises(BitcoinNodeAuthFailed):
            bad.getblockcount()
    response = httpx.post(service.url, json={"method": "getblockcount", "params": [], "id": 1})
    assert response.status_code == 401 and response.headers["www-authenticate"] == 'Basic realm="jsonrpc"'
    assert response.content == b""


def test_http_status_follows_core(secret, service, client):
    auth = (secret["user"], secret["password"])
    with pytest.raises(BitcoinRpcMethodNotFound):
        client.call("getwalletinfo")
    unknown = httpx.post(service.url, auth=auth, json={"method": "nope", "params": [], "id": 7})
    assert unknown.status_code == 404 and unknown.json() == {
        "result": None, "error": {"code": -32601, "message": "Method not found"}, "id": 7}
    bad_param = httpx.post(service.url, auth=auth, json={"method": "getblockhash", "params": [10**6], "id": 8})
    assert bad_param.status_code == 500 and bad_param.json()["error"]["code"] == -8
    parse = httpx.post(service.url, auth=auth, content=b"{not json")
    assert parse.status_code == 500 and parse.json()["error"]["code"] == -32700
    invalid = httpx.post(service.url, auth=auth, json={"params": []})
    assert invalid.status_code == 400 and invalid.json()["error"]["code"] == -32600
    batch = httpx.post(service.url, auth=auth, json=[{"method": "getblockcount", "id": 1},
                                                     {"method": "nope", "id": 2}])
    assert batch.status_code == 200
    assert [(r["id"], r["result"], bool(r["error"])) for r in batch.json()] == [
        (1, service.simulator.height, False), (2, None, True)]
    wallet = httpx.post(service.url + "/wallet/faucet", auth=auth, json={"method": "getblockcount", "id": 3})
    assert wallet.status_code == 200
    assert httpx.get(service.url, auth=auth).status_code == 405
    assert httpx.post(service.url + "/rest/chaininfo.json", auth=auth, json={}).status_code == 404


def test_amounts_are_json_numbers_with_eight_decimals(secret, service, client):
    service.simulator.set_fee_estimate(3, 7)
    raw = httpx.post(service.url, auth=(secret["user"], secret["password"]),
                     json={"method": "estimatesmartfee", "params": [3], "id": 1})
    assert b'"feerate":0.00007000' in raw.content
    estimate = client.estimatesmartfee(3, FeeEstimateMode.CONSERVATIVE)
    assert (estimate.sat_per_kvb, estimate.sat_per_vb) == (7_000, 7)


# ---------------------------------------------------------------------------------------------- /_sim/chain


def test_send_mine_and_the_chain_monitor(runtime, service, client):
    status, state = _sim(runtime, "GET", "/_sim/chain")
    assert status == 200 and state["height"] == service.simulator.height and state["url"] == service.url
    assert state["tip_hash"] == client.getbestblockhash() and state["faucet_address"].startswith("bcrt1q")

    status, sent = _sim(runtime, "POST", "/_sim/chain/send", {"address": DEPOSIT_1, "amount_sat": 70_000})
    assert status == 200, sent
    assert client.getrawtransaction(sent["txid"]).transaction.outputs[sent["vout"]].address == DEPOSIT_1
    status, state = _sim(runtime, "GET", "/_sim/chain")
    assert sent["txid"] in state["mempool"] and state["mempool_size"] >= 1

    runner = runtime.service("schedules")
    fired_before = runner.fired["MonitorFunction.ChainScan"]
    status, mined = _sim(runtime, "POST", "/_sim/chain/mine", {"blocks": 2})
    assert status == 200, mined
    assert mined["height"] == client.getblockcount() and mined["hashes"][-1] == client.getbestblockhash()
    assert len(mined["hashes"]) == 2 and sent["txid"] in mined["confirmed_txids"]
    assert mined["chain_scan"] == {"fired": True, "result": {"job": "chain_scan", "secret_url": service.url}}
    assert runner.fired["MonitorFunction.ChainScan"] == fired_before + 1
    assert client.getrawtransaction(sent["txid"]).confirmations == 2

    status, quiet = _sim(runtime, "POST", "/_sim/chain/mine", {"scan": False})
    assert status == 200 and len(quiet["hashes"]) == 1 and quiet["chain_scan"]["fired"] is False
    assert runner.fired["MonitorFunction.ChainScan"] == fired_before + 1


def test_reorg_returns_or_drops_transactions(runtime, service, client):
    sim = service.simulator
    keep = sim.send_to_address(DEPOSIT_0, 40_000)
    drop = sim.send_to_address(DEPOSIT_1, 50_000)
    [stale_hash] = sim.mine(1)
    height = sim.height

    status, reorged = _sim(runtime, "POST", "/_sim/chain/reorg", {"depth": 1, "drop_txids": [drop]})
    assert status == 200, reorged
    assert reorged["disconnected"] == [stale_hash] and reorged["dropped_txids"] == [drop]
    assert reorged["height"] == height + 1 and len(reorged["hashes"]) == 2
    assert reorged["chain_scan"]["fired"] is True
    assert client.getblock(stale_hash).confirmations == -1  # Core keeps stale blocks, out of the active chain
    assert client.getrawtransaction(keep).block_hash == reorged["hashes"][0]  # back in the first replacement
    assert sim.confirmed_block_of(drop) is None and drop not in sim.mempool_txids()

    status, shallow = _sim(runtime, "POST", "/_sim/chain/reorg", {"depth": 2, "replacement_blocks": 0,
                                                                  "scan": False})
    assert status == 200 and shallow["height"] == height - 1 and shallow["hashes"] == []
    assert keep in sim.mempool_txids() and shallow["dropped_txids"] == [] and shallow["mempool_size"] >= 1
    sim.mine(3)


def test_fee_estimates(runtime, client):
    assert _sim(runtime, "POST", "/_sim/chain/fee", {"conf_target": 6, "sat_per_vb": 12}) == (
        200, {"conf_target": 6, "sat_per_kvb": 12_000, "answered_for": 6})
    assert _sim(runtime, "POST", "/_sim/chain/fee", {"conf_target": 2, "sat_per_vb": 25.5})[1]["sat_per_kvb"] == 25_500
    assert _sim(runtime, "POST", "/_sim/chain/fee", {"conf_target": 12, "sat_per_vb": "1.234"})[1] == {
        "conf_target": 12, "sat_per_kvb": 1_234, "answered_for": 12}
    # Like Core, a target of 1 is answered for 2.
    assert _sim(runtime, "POST", "/_sim/chain/fee", {"conf_target": 1, "sat_per_vb": 99})[1] == {
        "conf_target": 1, "sat_per_kvb": 25_500, "answered_for": 2}
    estimate = client.estimatesmartfee(6, FeeEstimateMode.ECONOMICAL)
    assert (estimate.sat_per_kvb, estimate.blocks) == (12_000, 6)
    status, removed = _sim(runtime, "POST", "/_sim/chain/fee", {"conf_target": 6, "sat_per_vb": None})
    assert status == 200 and removed["answered_for"] != 6


def test_dev_route_errors(runtime, service):
    def call(method, path, body=None):
        status, answer = _sim(runtime, method, path, body)
        return status, answer.get("error", {}).get("code")

    height = service.simulator.height
    assert call("POST", "/_sim/chain/send", {"address": "bc1qnotregtest", "amount_sat": 1_000})[0] == 400
    assert call("POST", "/_sim/chain/send", {"address": "bcrt1qgarbage", "amount_sat": 1_000}) == (
        400, "INVALID_ADDRESS")
    assert call("POST", "/_sim/chain/send", {"address": DEPOSIT_0, "amount_sat": 0}) == (400, "VALIDATION_ERROR")
    assert call("POST", "/_sim/chain/send", {"address": DEPOSIT_0, "amount_sat": 100}) == (400, "VALIDATION_ERROR")
    assert call("POST", "/_sim/chain/send", {"address": DEPOSIT_0, "amount_sat": 10**16}) == (
        422, "FAUCET_INSUFFICIENT_FUNDS")
    assert call("POST", "/_sim/chain/send", {"address": DEPOSIT_0}) == (400, "VALIDATION_ERROR")
    assert call("POST", "/_sim/chain/mine", {"blocks": 0}) == (400, "VALIDATION_ERROR")
    assert call("POST", "/_sim/chain/mine", {"blocks": True}) == (400, "VALIDATION_ERROR")
    assert call("POST", "/_sim/chain/mine", {"blocks": 1, "colour": "red"}) == (400, "VALIDATION_ERROR")
    assert call("POST", "/_sim/chain/mine", {"to_address": "nope"}) == (400, "INVALID_ADDRESS")
    assert call("POST", "/_sim/chain/mine", [1]) == (400, "VALIDATION_ERROR")
    assert call("POST", "/_sim/chain/reorg", {"depth": 10**6}) == (400, "VALIDATION_ERROR")
    assert call("POST", "/_sim/chain/reorg", {"depth": 1, "drop_txids": ["00" * 32]}) == (400, "VALIDATION_ERROR")
    assert call("POST", "/_sim/chain/reorg", {"depth": 1, "drop_txids": "all"}) == (400, "VALIDATION_ERROR")
    assert call("POST", "/_sim/chain/fee", {"conf_target": 0, "sat_per_vb": 1}) == (400, "VALIDATION_ERROR")
    assert call("POST", "/_sim/chain/fee", {"conf_target": 2, "sat_per_vb": "Infinity"}) == (400, "VALIDATION_ERROR")
    assert call("POST", "/_sim/chain/fee", {"conf_target": 2, "sat_per_vb": -1}) == (400, "VALIDATION_ERROR")
    assert call("POST", "/_sim/chain/fee", {"conf_target": 2}) == (400, "VALIDATION_ERROR")
    assert call("GET", "/_sim/chain/mine") == (405, "METHOD_NOT_ALLOWED")
    assert call("POST", "/_sim/chain/nothing", {}) == (404, "NOT_FOUND")
    assert service.simulator.height == height  # nothing above changed the chain


def test_mining_without_a_schedule_runner_is_harmless(service):
    bare = ChainService(service.simulator, rpc_password="x" * 24)  # no runtime: nothing to fire
    try:
        status, mined = bare.dev_route("POST", "/_sim/chain/mine", {"blocks": 1})
        assert status == 200 and mined["chain_scan"] == {"fired": False, "reason": "no runtime to fire it in"}
    finally:
        bare.stop()


# ---------------------------------------------------------------------------------------------- the real template


def test_the_real_template_gets_a_chain_node_and_a_signer():
    from satflow_dev.runtime.__main__ import _banner
    from satflow_dev.runtime.local_runtime import LocalRuntime
    from satflow_dev.runtime.services import chain_service_factory, schedule_runner_factory

    if "BitcoindSecret:" not in REAL_TEMPLATE.read_text():
        pytest.skip("the template declares no bitcoind secret yet")
    with LocalRuntime(REAL_TEMPLATE, port=0, service_factories=[chain_service_factory, schedule_runner_factory],
                      stack_name=fresh_stack_name(),
                      write_admin_key_file=False, environ={"SATFLOW_SCHEDULE_SCALE": "0"}) as rt:
        chain = rt.service("chain")
        secrets = aws_client("secretsmanager", rt.moto_url)
        env = rt.model.function("ApiFunction").env
        node = json.loads(secrets.get_secret_value(SecretId=env["SATFLOW_BITCOIND_SECRET_ID"])["SecretString"])
        assert node == chain.secret_value()
        tprv = secrets.get_secret_value(SecretId=env["SATFLOW_SIGNER_SECRET_ID"])["SecretString"]
        assert tprv == bip84_test_account()[0]
        banner = _banner(rt)
        assert f"chain:      Bitcoin Core RPC simulator on {chain.url}" in banner
        assert "signer: BIP84 test key (regtest only)" in banner and tprv not in banner
        assert base64.b64encode(tprv.encode()).decode() not in banner
        status, mined = _sim(rt, "POST", "/_sim/chain/mine", {"blocks": 1})
        assert status == 200 and mined["chain_scan"]["fired"] in (True, False)  # True once the job exists
