"""Payout fixtures: the REAL payout state machine (statemachines/payout.asl.json) executed by moto's Step Functions
interpreter on a locked moto server (one for this package; stopping it restores the previous MOTO_PORT), its
Lambda tasks answered in-process by functions/payout/app.py, against the chain simulator (with BIP125 RBF on)
through the Bitcoin Core RPC adapter. Keys: the BIP84 test mnemonic ("abandon ... about"), account m/84'/1'/0'."""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
from embit import bip32, bip39

from satflow import bootstrap
from satflow.app import accounts as accounts_app
from satflow.app import payouts, transfers
from satflow.domain.accounts import ALL_SCOPES, Principal
from satflow.domain.addresses import Chain, DepositAddressDeriver
from satflow.domain.bitcoin import Network, script_pubkey_to_address
from satflow.domain.onchain import Utxo

from tests.conftest import create_table, recorded_ledger
from tests.flows.harness import REGION, ExecutionResult, LambdaContext, MotoStepFunctions, ROOT
from tests.handlers.conftest import load_handler_module

MNEMONIC = " ".join(["abandon"] * 11 + ["about"])
TEST_ACCOUNT_TPUB = (
    "tpubDC8msFGeGuwnKG9Upg7DM2b4DaRqg3CUZa5g8v2SRQ6K4NSkxUgd7HsL2XVWbVm39yBA4LAxysQAm397zwQSQoQgewGiYZqrA9DsP4zbQ1M"
)
TPRV_VERSION = bytes.fromhex("04358394")
TEST_ACCOUNT_HDKEY = bip32.HDKey.from_seed(bip39.mnemonic_to_seed(MNEMONIC)).derive("m/84h/1h/0h")
TEST_ACCOUNT_TPRV = TEST_ACCOUNT_HDKEY.to_base58(version=TPRV_VERSION)
assert TEST_ACCOUNT_HDKEY.to_public().to_base58(version=bytes.fromhex("043587cf")) == TEST_ACCOUNT_TPUB

PAYOUT_ASL = ROOT / "statemachines" / "payout.asl.json"
PAYOUT_FUNCTION_ARN = f"arn:aws:lambda:{REGION}:123456789012:function:PayoutFunction"
SHARDS = 4
ADMIN_KEY = "admin-payout-key-0123456789"
ADMIN = accounts_app.ADMIN
FEE_ESTIMATES = {2: 8, 6: 5, 24: 2}  # sat/vB by confirmation target: fast 8, normal 5, slow 2


def external_address(seed: int, kind: str = "p2wpkh") -> str:
    """A regtest address of somebody else's (the payee)."""
    body = bytes([seed % 256]) * 20
    script = {"p2wpkh": "0014" + body.hex(), "p2tr": "5120" + (body + body[:12]).hex(),
              "p2pkh": "76a914" + body.hex() + "88ac", "p2sh": "a914" + body.hex() + "87"}[kind]
    address = script_pubkey_to_address(script, Network.REGTEST)
    assert address is not None
    return address


class ChainStoreSpy:
    """svc.chain: the real DynamoChainStore (addresses recorded by owner and script, as in production), noting
    each allocate_address(owner, chain) for the tests."""

    def __init__(self, store) -> None:
        self._store = store
        self.allocated: list[tuple[str, int, int]] = []

    def allocate_address(self, owner: str, chain: int, **kwargs) -> tuple[int, str, str]:
        index, address, script = self._store.allocate_address(owner, chain, **kwargs)
        self.allocated.append((owner, chain, index))
        return index, address, script

    def __getattr__(self, name: str):
        return getattr(self._store, name)


@pytest.fixture(scope="package")
def payout_moto():
    stack = MotoStepFunctions().start()
    yield stack
    stack.stop()


@pytest.fixture(scope="package")
def payout_state_machine(payout_moto) -> str:
    return payout_moto.create_state_machine(PAYOUT_ASL, {"PayoutFunctionArn": PAYOUT_FUNCTION_ARN})


@pytest.fixture(scope="package")
def payout_module():
    return load_handler_module("payout", "satflow_fn_payout")


@dataclass
class PayoutFlow:
    moto: MotoStepFunctions
    state_machine_arn: str
    svc: Any
    sim: Any
    rpc: Any
    chain: ChainStoreSpy
    deriver: DepositAddressDeriver
    handler: Callable[[dict, Any], Any]
    wait_s: int = 0
    max_checks: int = 200
    mine_after_broadcast: bool = True
    signing_timeout_s: int = 600
    started: list[str] = field(default_factory=list)
    step_calls: list[str] = field(default_factory=list)
    after_step: dict[str, Callable[[dict, Any], None]] = field(default_factory=dict)
    _accounts: int = 0
    _deposit_index: int = 1000  # receive-chain indexes for seeded outputs (the fake store starts at 0)

    # -- the payout Lambda, as the state machine invokes it
    def invoke_step(self, event: dict) -> Any:
        self.step_calls.append(event["step"])
        result = self.handler(event, LambdaContext(function_name="PayoutFunction",
                                                   invoked_function_arn=PAYOUT_FUNCTION_ARN))
        if event["step"] == "broadcast" and self.mine_after_broadcast and result.get("next") == "CHECK":
            self.confirm()
        hook = self.after_step.get(event["step"])
        if hook is not None:
            hook(event, result)
        return result

    def start_payout(self, batch_id: str) -> None:
        from botocore.exceptions import ClientError

        self.started.append(batch_id)
        try:
            self.moto.client("stepfunctions").start_execution(
                stateMachineArn=self.state_machine_arn, name=batch_id,
                input=json.dumps({"batch_id": batch_id, "wait_s": self.wait_s, "max_checks": self.max_checks,
                                  "signing_timeout_s": self.signing_timeout_s}))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                raise

    def send_task_success(self, token: str, output: dict) -> None:
        payouts.sfn_task_success_sender(self.moto.client("stepfunctions"))(token, output)

    # -- drivers
    def confirm(self, blocks: int | None = None) -> None:
        """Mine the configured payout depth (production's: the fixture never lowers it), or ``blocks``."""
        self.sim.mine(self.svc.payout_confirmations if blocks is None else blocks)

    def new_account(self, funds_sat: int = 0) -> Principal:
        self._accounts += 1
        account, _key = accounts_app.create_account(self.svc, ADMIN, f"payout:user{self._accounts}", 1)
        if funds_sat:
            transfers.adjust(self.svc, ADMIN, f"fund-{account.account_id}", account.account_id, funds_sat * 1000,
                             "credit", "payout test funding")
        return Principal(account_id=account.account_id, scopes=frozenset(ALL_SCOPES))

    def seed_utxos(self, *values: int) -> list[Utxo]:
        """External wallets pay our receive addresses, one block confirms them, the monitor's job is faked."""
        sent = []
        for value in values:
            derived = self.deriver.derive(self._deposit_index, Chain.RECEIVE)
            self._deposit_index += 1
            txid = self.sim.send_to_address(derived.address, value)
            tx = self.sim.mempool_entry(txid).tx
            (vout,) = [n for n, out in enumerate(tx.vout) if out.script_pubkey.data.hex() == derived.script_pubkey_hex]
            sent.append((txid, vout, value, derived))
        self.sim.mine(1)
        utxos = []
        for txid, vout, value, derived in sent:
            utxo = Utxo(txid=txid, vout=vout, value_sat=value, script_pubkey_hex=derived.script_pubkey_hex,
                        chain=0, index=derived.index, height=self.sim.height)
            assert self.svc.utxos.add(utxo)
            utxos.append(utxo)
        return utxos

    def payout(self, principal: Principal, address: str, amount_sat: int, priority: str = "normal",
               key: str | None = None):
        return payouts.create_payout(self.svc, principal, key or f"k-{uuid.uuid4().hex}", address, amount_sat,
                                     priority)

    def batch(self, batch_id: str):
        found = self.svc.payouts.get_batch(batch_id)
        assert found is not None, batch_id
        return found

    def get(self, payout_id: str):
        found = self.svc.payouts.get_payout(payout_id)
        assert found is not None, payout_id
        return found

    def wait(self, batch_id: str, timeout_s: float = 30.0) -> ExecutionResult:
        return self.moto.wait(self.moto.execution_arn(self.state_machine_arn, batch_id), timeout_s)

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 15.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def balance(self, owner: str) -> tuple[int, int]:
        """(available, pending_out) in msat."""
        found = [b for b in self.svc.ledger.balances(owner) if b.account.asset == "BTC"]
        return (found[0].available, found[0].pending_out) if found else (0, 0)

    def assert_invariants(self) -> None:
        report = self.svc.ledger.check_invariants()
        assert report.ok, report.violations


@pytest.fixture
def flow(payout_moto, payout_state_machine, payout_module, monkeypatch):
    from satflow.adapters.bitcoind import BitcoinRpcClient
    from satflow.adapters.dynamodb.accounts import DynamoAccounts
    from satflow.adapters.dynamodb.models import build_models
    from satflow.adapters.dynamodb.payouts import DynamoPayoutStore
    from satflow.adapters.dynamodb.utxos import DynamoUtxoStore
    from satflow.app.ports import Services

    from satflow_dev.simulators.chain import ChainSimulator

    table = f"payouts-{uuid.uuid4().hex[:12]}"
    client = payout_moto.client("dynamodb")
    create_table(client, table)
    models = build_models(table, REGION, payout_moto.url)
    sim = ChainSimulator(seed=7, rbf=True, fee_estimates=FEE_ESTIMATES)
    rpc = BitcoinRpcClient("http://chain-sim:18443/", "satflow", "sim-password", transport=sim.transport())
    deriver = DepositAddressDeriver(TEST_ACCOUNT_TPUB, Network.REGTEST)
    from satflow.adapters.dynamodb.chain import DynamoChainStore

    chain = ChainStoreSpy(DynamoChainStore(client, models, account_key=TEST_ACCOUNT_TPUB, network=Network.REGTEST))
    ledger = recorded_ledger(client, models, SHARDS)
    svc = Services(ledger=ledger, audit=ledger.audit, webhooks=ledger.webhooks, accounts=DynamoAccounts(client, models),
                   admin_key=lambda: ADMIN_KEY, system_shards=SHARDS, network="regtest")
    from satflow.adapters.dynamodb.limits import DynamoLimitStore
    svc.limits = DynamoLimitStore(client, models)
    from satflow.adapters.dynamodb.sanctions import DynamoSanctionsStore
    from tests.conftest import loaded_sanctions_store
    svc.sanctions = loaded_sanctions_store(DynamoSanctionsStore(client, table))
    from satflow.adapters.dynamodb.risk import DynamoRiskStore
    svc.risk = DynamoRiskStore(client, models)
    from tests.conftest import _ecosystem_stores
    for name, store in _ecosystem_stores(client, table).items():  # accounts are created with their key records
        setattr(svc, name, store)
    svc.utxos = DynamoUtxoStore(client, models)
    svc.payouts = DynamoPayoutStore(client, models)
    svc.chain = chain
    svc.bitcoind = lambda: rpc
    svc.deposit_account_key = TEST_ACCOUNT_TPUB
    svc.hot_signer_key = lambda: TEST_ACCOUNT_TPRV
    svc.hot_sign_limit_sat = 10_000_000
    f = PayoutFlow(moto=payout_moto, state_machine_arn=payout_state_machine, svc=svc, sim=sim, rpc=rpc, chain=chain,
                   deriver=deriver, handler=payout_module.lambda_handler)
    svc.start_payout = f.start_payout
    monkeypatch.setattr(payout_module, "send_task_success", f.send_task_success)
    payout_moto.functions["PayoutFunction"] = f.invoke_step
    bootstrap.override(svc)
    yield f
    bootstrap.override(None)
    payout_moto.functions.pop("PayoutFunction", None)
    rpc.close()
