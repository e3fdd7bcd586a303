"""The simulated world: one process, one thread, everything driven by the seed.

moto in-process (``mock_aws``) holds the table; the Lightning simulator is our node and the outside network; the
real handlers (functions/*/app.py) run every request, workflow step, queue batch and monitor job; the payment and
review state machines are the real ASL files run by :mod:`.asl`. Faults are injected at the two edges a Lambda
invocation has: its DynamoDB calls (every botocore client, pynamodb's too) and its calls to the node.
"""
from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .asl import Execution, TaskError, load_definition
from .clock import SimClock
from .interleave import Interleaver

ROOT = Path(__file__).resolve().parents[3]
REGION = "us-east-1"
ACCOUNT = "123456789012"
ADMIN_KEY = "admin-sim-key-0123456789"
SHARDS = 4
# The BIP84 regtest test account (tests/chain/conftest.py): deposit addresses derive from it.
TEST_ACCOUNT_TPUB = "tpubDC8msFGeGuwnKG9Upg7DM2b4DaRqg3CUZa5g8v2SRQ6K4NSkxUgd7HsL2XVWbVm39yBA4LAxysQAm397zwQSQoQgewGiYZqrA9DsP4zbQ1M"
PAYMENT_FN_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:PaymentFunction"
RISK_FN_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:RiskFunction"
PAYOUT_FN_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:PayoutFunction"
# The BIP84 test mnemonic ("abandon ... about"), account m/84'/1'/0': the hot signer's key of the sim (its xpub is
# TEST_ACCOUNT_TPUB) and the simulated external signer's.
_TPRV_VERSION = bytes.fromhex("04358394")
# Routing threshold only (batches above it wait for the external signer): lowered from production's 10 M sat so that
# the simulated balances (up to ~1 M sat) make both hot and external batches. Safety depths are never lowered.
SIM_HOT_SIGN_LIMIT_SAT = 100_000
FEE_ESTIMATES = {2: 8, 6: 5, 24: 2}  # sat/vB by confirmation target (fast, normal, slow)
PAYOUT_SIGNING_TIMEOUT_S = 3600  # production: a week; the sim's signer answers within minutes to hours


def production_parameters() -> dict[str, str]:
    """template.yaml's Parameters defaults (the production configuration the sim must not weaken)."""
    text = (ROOT / "template.yaml").read_text()
    section = re.split(r"\n(?=\S)", text.split("\nParameters:", 1)[1], maxsplit=1)[0]
    found: dict[str, str] = {}
    for m in re.finditer(r"^  (\w+):\n((?:    .*\n)+)", section + "\n", re.M):
        d = re.search(r"^    Default:\s*(.*)$", m.group(2), re.M)
        if d:
            found[m.group(1)] = d.group(1).strip().strip('"')
    return found


def test_account_tprv() -> str:
    from embit import bip32, bip39

    key = bip32.HDKey.from_seed(bip39.mnemonic_to_seed(" ".join(["abandon"] * 11 + ["about"]))).derive("m/84h/1h/0h")
    return key.to_base58(version=_TPRV_VERSION)


class SimCrash(BaseException):
    """The invocation dies here (Lambda timeout, OOM, host loss). BaseException on purpose: a handler's
    ``except Exception`` must not survive its own process dying."""


@dataclass
class Faults:
    """Per-call probabilities, drawn from the seeded fault RNG. ``enabled`` is switched off for quiescence and
    for the oracle's own reads."""

    ddb_crash_before: float = 0.0
    ddb_crash_after: float = 0.0
    ddb_throttle: float = 0.0
    ddb_conflict: float = 0.0
    node_crash_before: float = 0.0
    node_crash_after: float = 0.0
    node_unavailable: float = 0.0
    duplicate_delivery: float = 0.0
    lambda_retry: float = 0.0
    enabled: bool = False
    injected: dict[str, int] = field(default_factory=dict)

    NAMES = ("ddb_crash_before", "ddb_crash_after", "ddb_throttle", "ddb_conflict", "node_crash_before",
             "node_crash_after", "node_unavailable", "duplicate_delivery", "lambda_retry")

    @classmethod
    def parse(cls, spec: str) -> "Faults":
        """``all``, ``none``, or ``name=p,name=p`` (``name`` alone: its default rate)."""
        defaults = {"ddb_crash_before": 0.01, "ddb_crash_after": 0.01, "ddb_throttle": 0.01, "ddb_conflict": 0.01,
                    "node_crash_before": 0.03, "node_crash_after": 0.03, "node_unavailable": 0.03,
                    "duplicate_delivery": 0.2, "lambda_retry": 0.1}
        if spec in ("", "none"):
            return cls()
        if spec == "all":
            return cls(**defaults)
        chosen = {}
        for part in spec.split(","):
            name, _, rate = part.partition("=")
            if name not in defaults:
                raise ValueError(f"unknown fault {name!r}; one of {sorted(defaults)}")
            chosen[name] = float(rate) if rate else defaults[name]
        return cls(**chosen)

    def describe(self) -> str:
        return ",".join(f"{n}={getattr(self, n)}" for n in self.NAMES if getattr(self, n)) or "none"


def _one_table_copy_per_transaction() -> None:
    """moto backs up the whole table once per ITEM of a TransactWriteItems (for rollback): a 10-item ledger
    transaction deep-copies the table 10 times. One copy per table and transaction rolls back the same."""
    import copy as real_copy

    import moto.dynamodb.models as ddb_models
    from moto.dynamodb.models.table import Table

    if getattr(ddb_models, "_sim_patched", False):
        return

    class _Copy:
        memo: dict[int, Any] | None = None

        def __getattr__(self, name: str) -> Any:
            return getattr(real_copy, name)

        def deepcopy(self, value: Any, *args: Any) -> Any:
            if self.memo is not None and isinstance(value, Table) and not args:
                if id(value) not in self.memo:
                    self.memo[id(value)] = real_copy.deepcopy(value)
                return self.memo[id(value)]
            return real_copy.deepcopy(value, *args)

    shim = _Copy()
    original = ddb_models.DynamoDBBackend.transact_write_items

    def transact_write_items(backend: Any, transact_items: Any) -> None:
        shim.memo = {}
        try:
            return original(backend, transact_items)
        finally:
            shim.memo = None

    ddb_models.copy = shim
    ddb_models.DynamoDBBackend.transact_write_items = transact_write_items
    ddb_models._sim_patched = True


def _partition_queries() -> None:
    """moto answers a base-table Query by sorting and filtering EVERY item of the table (O(table) per query, and
    the monitors query a dozen index partitions per run): the simulation slowed down as the table grew. Here a
    base-table Query looks at its own partition only; the rest of moto's query (range conditions, sort order,
    paging, filters, projections) is unchanged, so the answers are the same."""
    from moto.dynamodb.models.table import Table

    if getattr(Table, "_sim_partition_patched", False):
        return
    original = Table.query

    def query(table: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")  # moto passes it positionally
        if index_name or hash_key is None or not table.range_key_attr:
            return original(table, hash_key, *args, **kwargs)
        partition = list(table.items.get(hash_key, {}).values())
        table.all_items = lambda: partition
        try:
            return original(table, hash_key, *args, **kwargs)
        finally:
            del table.all_items

    Table.query = query
    Table._sim_partition_patched = True


class LambdaContext:
    def __init__(self, name: str, request_id: str) -> None:
        self.function_name = name
        self.memory_limit_in_mb = 256
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
        self.aws_request_id = request_id
        self.function_version = "$LATEST"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000


def load_handler(function_dir: str) -> Callable[[dict, Any], Any]:
    """functions/<dir>/app.py under a unique module name (every function's module is called app)."""
    name = f"satflow_fn_{function_dir}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / function_dir / "app.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name].lambda_handler


class _SeededIds:
    """Ids, keys and the simulator's preimages from the seed (uuid4 and secrets.token_*, process-wide while a world
    runs): two runs of one seed write the same ids, so DynamoDB scan order — and everything a monitor does in
    that order — repeats. Our code calls ``secrets.token_bytes(...)`` through the module, so patching the module
    attributes reaches it."""

    _PATCHED = (("uuid", "uuid4"), ("secrets", "token_bytes"), ("secrets", "token_hex"), ("secrets", "token_urlsafe"))

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._saved: list[tuple[Any, str, Any]] = []

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)

    def randbytes(self, n: int | None = None) -> bytes:
        n = 32 if n is None else n
        return self._rng.getrandbits(8 * n).to_bytes(n, "big") if n else b""

    def token_hex(self, n: int | None = None) -> str:
        return self.randbytes(n).hex()

    def token_urlsafe(self, n: int | None = None) -> str:
        import base64

        return base64.urlsafe_b64encode(self.randbytes(n)).rstrip(b"=").decode("ascii")

    def install(self) -> None:
        import importlib

        replacements = {"uuid4": self.uuid4, "token_bytes": self.randbytes, "token_hex": self.token_hex,
                        "token_urlsafe": self.token_urlsafe}
        for module_name, attr in self._PATCHED:
            module = importlib.import_module(module_name)
            original = getattr(module, attr)
            self._saved.append((module, attr, original))
            setattr(module, attr, self._ours_only(replacements[attr], original))

    @staticmethod
    def _ours_only(seeded: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
        """Seeded for satflow's code (layer, handlers, dev tools); the real function for everybody else. botocore
        draws a uuid4 per request and moto one per lazily created backend: a backend created by an EARLIER world
        of this process is not created again, so seeding those would make a seed's ids depend on what ran before
        it (a --seeds N run and its one-seed replay diverged)."""

        def pick(*args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith(("satflow", "satflow_dev", "satflow_fn_")):
                return seeded(*args, **kwargs)
            return original(*args, **kwargs)

        return pick

    def uninstall(self) -> None:
        for module, attr, value in reversed(self._saved):
            setattr(module, attr, value)
        self._saved.clear()


class FakeStepFunctions:
    """The Step Functions client the handlers get from bootstrap: start_execution / send_task_success go to the
    deterministic interpreter."""

    def __init__(self, world: "World") -> None:
        self._world = world

    def start_execution(self, stateMachineArn: str, name: str, input: str) -> dict:  # noqa: N803 (boto3 names)
        self._world.start_execution(stateMachineArn, name, json.loads(input))
        return {"executionArn": f"{stateMachineArn}:{name}"}

    def send_task_success(self, taskToken: str, output: str) -> dict:  # noqa: N803
        if not self._world.complete_token(taskToken, json.loads(output)):
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "TaskTimedOut", "Message": "task token no longer live"}},
                              "SendTaskSuccess")
        return {}

    def send_task_failure(self, taskToken: str, error: str = "", cause: str = "") -> dict:  # noqa: N803
        if not self._world.complete_token(taskToken, None, TaskError(error, cause)):
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "TaskTimedOut", "Message": "task token no longer live"}},
                              "SendTaskFailure")
        return {}


class World:
    def __init__(self, seed: int, faults: Faults, *, wait_s: int = 5, max_tracks: int = 3,
                 review_timeout_s: int = 600, endpoint_url: str | None = None, interleave: bool = True,
                 isolate_environments: bool = True) -> None:
        import threading

        # Concurrent invocations stop at every DynamoDB/node call; the workload's scheduler picks who goes on
        # (interleave.py). Off: each action runs to completion before the next (the first version's model).
        self.interleave = interleave
        self.sched = Interleaver(isolate=isolate_environments)
        self._tl = threading.local()  # the invocation running on this thread (faults apply inside invocations)
        self.endpoint_url = endpoint_url  # DynamoDB Local; None: moto in-process
        self.seed = seed
        self.faults = faults
        self.fault_rng = random.Random(f"faults:{seed}")
        self.ids = _SeededIds(random.Random(f"ids:{seed}"))
        self.clock = SimClock()
        self.wait_s, self.max_tracks, self.review_timeout_s = wait_s, max_tracks, review_timeout_s
        self.executions: dict[str, Execution] = {}
        self.invoice_queue: list[dict] = []  # SQS messages: {"id", "body", "receives"}
        self.node_sends: dict[str, int] = {}  # payment hash -> /v2/router/send requests that reached the node
        self.metrics: dict[str, int] = {}  # alert metrics the use cases emitted (svc.emit_metric)
        self.chain_jobs = False  # chain_scan + payout_batcher scheduled (the on-chain workload turns them on)
        self.log: list[str] = []
        self.invocations = 0
        self.crashes = 0
        self.handler_errors = 0
        self._msg_seq = 0
        self._mock: Any = None
        self._saved_call: Any = None
        self._saved_env: dict[str, str] = {}

    @property
    def _invocation(self) -> str | None:
        return getattr(self._tl, "invocation", None)

    @_invocation.setter
    def _invocation(self, function: str | None) -> None:
        self._tl.invocation = function

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "World":
        self._saved_env = dict(os.environ)
        os.environ.update({"AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing",
                           "AWS_SECRET_ACCESS_KEY": "testing", "POWERTOOLS_LOG_LEVEL": "CRITICAL",
                           "POWERTOOLS_METRICS_NAMESPACE": "satflow-sim", "POWERTOOLS_TRACE_DISABLED": "true",
                           "POWERTOOLS_DEV": "false", "POWERTOOLS_METRICS_DISABLED": "true"})
        import warnings

        warnings.filterwarnings("ignore", module="aws_lambda_powertools")
        os.environ.pop("AWS_ENDPOINT_URL", None)
        import logging

        logging.disable(logging.CRITICAL)  # handlers log every step; a run of thousands must stay readable
        # Powertools sets its service loggers to POWERTOOLS_LOG_LEVEL (CRITICAL here) at import: put levels back on
        # stop, or a later caller's records below CRITICAL vanish (a pytest process runs other tests after this).
        self._logger_levels = {name: lg.level for name, lg in logging.root.manager.loggerDict.items()
                               if isinstance(lg, logging.Logger)}
        self.ids.install()
        if self.endpoint_url is None:
            from moto import mock_aws

            self._mock = mock_aws()
            self._mock.start()
            _one_table_copy_per_transaction()
            _partition_queries()
        self._install_ddb_faults()
        self._fresh_containers()
        self._build_services()
        self.api = load_handler("api")
        self.payment_fn = load_handler("payment")
        self.risk_fn = load_handler("risk")
        self.payout_fn = load_handler("payout")
        from satflow.app.payouts import sfn_task_success_sender

        # PayoutFunction builds its own Step Functions client for task answers: ours, the interpreter's.
        sys.modules["satflow_fn_payout"]._sender[:] = [sfn_task_success_sender(FakeStepFunctions(self))]
        self.invoice_fn = load_handler("invoice")
        self.monitor_fn = load_handler("monitor")
        # Issue 13: audit records are sealed off the write path by AuditSealerFunction (stream + sweep job).
        self.sealer_fn = load_handler("audit_sealer") if (ROOT / "functions" / "audit_sealer").is_dir() else None
        machines = ROOT / "statemachines"
        subs = {"PaymentFunctionArn": PAYMENT_FN_ARN, "RiskFunctionArn": RISK_FN_ARN,
                "PayoutFunctionArn": PAYOUT_FN_ARN}
        self.definitions = {"payment": load_definition(str(machines / "payment.asl.json"), subs),
                            "review": load_definition(str(machines / "review.asl.json"), subs),
                            "payout": load_definition(str(machines / "payout.asl.json"), subs)}
        return self

    @staticmethod
    def _clear_metrics() -> None:
        """Powertools keeps metrics, dimensions and metadata in state shared by every Metrics instance of the
        process: what the world's handlers buffered (e.g. a monitor's ``job`` dimension) must not be flushed by a
        later test's handler (tests/contracts/test_alarms.py reads the EMF it prints)."""
        try:
            from aws_lambda_powertools import Metrics

            for namespace in ("satflow", "satflow-sim"):
                Metrics(namespace=namespace).clear_metrics()
        except Exception:  # Powertools absent or changed: nothing buffered to leak
            pass

    @staticmethod
    def _fresh_containers() -> None:
        """Process-wide caches a Lambda container keeps (the monitor's mempool memory, the address index, the breaker
        read) start empty in every world: a second run of one seed in this process sees the same txids and table
        name, and must not find them already 'checked'."""
        from satflow.adapters.dynamodb import chain as chain_adapter
        from satflow.app import deposits, solvency

        deposits.forget_mempool_cache()
        chain_adapter._INDEXES.clear()
        getattr(solvency, "forget_breaker_cache", lambda: None)()

    def stop(self) -> None:
        self._clear_metrics()
        from satflow import bootstrap

        bootstrap.override(None)
        if self._saved_call is not None:
            from botocore.client import BaseClient

            BaseClient._make_api_call = self._saved_call
        if self._mock is not None:
            self._mock.stop()
        elif self.endpoint_url is not None:
            try:
                self.ddb.delete_table(TableName=self.table)
            except Exception:  # a half-built world: nothing to delete
                pass
        self.ids.uninstall()
        import logging

        logging.disable(logging.NOTSET)
        for name, lg in list(logging.root.manager.loggerDict.items()):
            if isinstance(lg, logging.Logger):
                lg.setLevel(getattr(self, "_logger_levels", {}).get(name, logging.NOTSET))
        os.environ.clear()
        os.environ.update(self._saved_env)

    def _build_services(self) -> None:
        import boto3

        from satflow import bootstrap
        from satflow.adapters.dynamodb.accounts import DynamoAccounts
        from satflow.adapters.dynamodb.audit import DynamoAuditStore
        from satflow.adapters.dynamodb.ledger import DynamoLedger
        from satflow.adapters.dynamodb.lightning import DynamoLightningStore
        from satflow.adapters.dynamodb.limits import DynamoLimitStore
        from satflow.adapters.dynamodb.models import build_models
        from satflow.adapters.dynamodb.risk import DynamoRiskStore
        from satflow.adapters.dynamodb.sanctions import DynamoSanctionsStore
        from satflow.adapters.dynamodb.webhooks import DynamoWebhookStore
        from satflow.adapters.lnd import LndRestClient
        from satflow.app.ports import Services
        from satflow.app.recorded_ledger import RecordedLedger

        from satflow_dev.simulators.lightning import LightningSimulator

        # A fresh table per world: on a shared DynamoDB Local, seeds must not see each other's items.
        self.table = f"sim-{self.seed}-{os.getpid()}-{id(self) % 100000}"
        client = boto3.client("dynamodb", region_name=REGION, endpoint_url=self.endpoint_url)
        client.create_table(
            TableName=self.table, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
        self.ddb = client
        models = build_models(self.table, REGION, self.endpoint_url)
        audit = DynamoAuditStore(client, models, shards=4)
        webhooks = DynamoWebhookStore(client, models)
        self.node = LightningSimulator(clock=self.clock, randbytes=self.ids.randbytes)
        self.lnd = LndRestClient(base_url="https://lnd.sim:8080", macaroon_hex=self.node.macaroon_hex,
                                 transport=self._node_transport(self.node.transport()))
        sanctions = DynamoSanctionsStore(client, self.table, monotonic=self.clock)  # cache hits by the seed
        svc = Services(
            ledger=RecordedLedger(DynamoLedger(client, models, SHARDS), audit,
                                  outbox_items=webhooks.transfer_outbox_items),
            audit=audit, webhooks=webhooks, accounts=DynamoAccounts(client, models),
            admin_key=lambda: ADMIN_KEY, system_shards=SHARDS, network="regtest",
            clock=self.clock.iso, unix_clock=lambda: int(self.clock()), monotonic=self.clock,
            lightning=DynamoLightningStore(client, models), lnd=lambda: self.lnd,
            limits=DynamoLimitStore(client, models), risk=DynamoRiskStore(client, models), sanctions=sanctions,
            start_payment=lambda pid: self.start_execution("payment", pid, {"payment_id": pid}),
            start_review=lambda rid: self.start_execution("review", rid, {"review_id": rid}),
            publish_invoice_event=self._publish_invoice_event,
        )
        svc.webhook_queue = None
        from satflow.app import keys as _keys  # noqa: F401  (ecosystem stores, as bootstrap wires them)

        svc.__dict__.update(bootstrap._ecosystem_stores(client, self.table))
        self._wire_chain(svc, client, models)
        try:  # issue 12's solvency store, when this branch has it (the oracle's solvency hook needs it)
            from satflow.adapters.dynamodb.solvency import DynamoSolvencyStore

            svc.solvency = DynamoSolvencyStore(client, self.table)
        except ImportError:
            pass
        self._load_sanctions(sanctions)
        from satflow.app import solvency as _solvency

        # Module state of a container: a new world is a new deployment (an earlier seed's store may share an id()).
        _solvency._BREAKER_CACHE.clear()
        self.svc = svc
        bootstrap.override(svc)
        sfn = FakeStepFunctions(self)
        bootstrap._sfn = lambda: sfn

    def _wire_chain(self, svc: Any, client: Any, models: Any) -> None:
        """The chain simulator (BIP125 RBF on, scripted fee estimates) behind the bitcoind port, with the node-call
        fault edge; deposits addresses, the payout store and both signers as production wires them. Depths come from
        template.yaml's defaults (PayoutConfirmations, DepositPolicy): the sim never posts or credits at a weaker
        depth than production."""
        from satflow.adapters.bitcoind import BitcoinRpcClient
        from satflow.adapters.dynamodb.chain import DynamoChainStore
        from satflow.adapters.dynamodb.payouts import DynamoPayoutStore
        from satflow.adapters.dynamodb.utxos import DynamoUtxoStore
        from satflow.domain.bitcoin import Network

        from satflow_dev.simulators.chain import ChainSimulator

        params = production_parameters()
        self.chain = ChainSimulator(seed=self.seed, rbf=True, fee_estimates=FEE_ESTIMATES)
        self.accepted_txids: set[str] = set()  # every transaction the chain ever accepted (mempool or block)
        self.paid_outputs: dict[tuple[str, int], set[str]] = {}  # (script hex, sat) -> accepted txids paying it
        original_accept = self.chain._accept

        def accept(tx: Any, **kwargs: Any) -> Any:
            check = original_accept(tx, **kwargs)
            self.accepted_txids.add(check.txid)
            for out in tx.vout:
                self.paid_outputs.setdefault((out.script_pubkey.data.hex(), out.value), set()).add(check.txid)
            return check

        self.chain._accept = accept
        self.rpc = BitcoinRpcClient("http://chain-sim:18443/", "satflow", "sim",
                                    transport=self._node_transport(self.chain.transport()))
        svc.bitcoind = lambda: self.rpc
        svc.chain = DynamoChainStore(client, models, account_key=TEST_ACCOUNT_TPUB, network=Network.REGTEST)
        svc.utxos = DynamoUtxoStore(client, models)
        svc.payouts = DynamoPayoutStore(client, models)
        svc.deposit_account_key = TEST_ACCOUNT_TPUB
        svc.deposit_policy = params["DepositPolicy"]
        svc.payout_confirmations = int(params["PayoutConfirmations"])
        svc.hot_sign_limit_sat = SIM_HOT_SIGN_LIMIT_SAT
        tprv = test_account_tprv()
        self.signer_key = tprv
        svc.hot_signer_key = lambda: tprv
        svc.start_payout = self._start_payout
        svc.emit_metric = self._metric

    def _start_payout(self, batch_id: str) -> None:
        """bootstrap's starter: an execution named by the batch id; starting it again is a no-op."""
        if f"payout:{batch_id}" not in self.executions:
            self.start_execution("payout", batch_id, {"batch_id": batch_id})

    def _metric(self, name: str, value: int = 1, **dimensions: str) -> None:
        self.metrics[name] = self.metrics.get(name, 0) + value

    def _load_sanctions(self, store: Any) -> None:
        from satflow.domain.sanctions import parse_sdn_xml

        xml = (ROOT / "devtools" / "satflow_dev" / "fixtures" / "sdn_local.xml").read_bytes()
        store.store(parse_sdn_xml(xml), expected_version=0, now=self.clock.iso())

    # ------------------------------------------------------------------ faults at the edges
    def _install_ddb_faults(self) -> None:
        from botocore.client import BaseClient
        from botocore.exceptions import ClientError

        world = self
        original = BaseClient._make_api_call
        self._saved_call = original

        def call(client: Any, operation: str, params: dict) -> Any:
            f = world.faults
            if world._invocation is None or client.meta.service_model.service_name != "dynamodb":
                return original(client, operation, params)
            world.sched.yield_point()  # another concurrent invocation may run here (interleave.py)
            if not f.enabled:
                return original(client, operation, params)
            r = world.fault_rng.random
            if r() < f.ddb_crash_before:
                world._inject("ddb_crash_before")
                raise SimCrash(f"crash before DynamoDB {operation}")
            if r() < f.ddb_throttle:
                world._inject("ddb_throttle")
                raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                             "Message": "simulated throttling"}}, operation)
            if operation == "TransactWriteItems" and r() < f.ddb_conflict:
                world._inject("ddb_conflict")
                n = len(params.get("TransactItems", []))
                reasons = [{"Code": "TransactionConflict", "Message": "simulated conflict"}] + \
                    [{"Code": "None"}] * (n - 1)
                raise ClientError({"Error": {"Code": "TransactionCanceledException",
                                             "Message": "Transaction cancelled [TransactionConflict]"},
                                   "CancellationReasons": reasons}, operation)
            result = original(client, operation, params)
            if r() < f.ddb_crash_after:
                world._inject("ddb_crash_after")
                raise SimCrash(f"crash after DynamoDB {operation}")
            return result

        BaseClient._make_api_call = call

    def _node_transport(self, inner: Any) -> Any:
        import httpx

        world = self

        class NodeTransport(httpx.BaseTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                f = world.faults
                if world._invocation is not None:
                    world.sched.yield_point()
                active = f.enabled and world._invocation is not None
                r = world.fault_rng.random
                if active and r() < f.node_crash_before:
                    world._inject("node_crash_before")
                    raise SimCrash(f"crash before node call {request.url.path}")
                if active and r() < f.node_unavailable:
                    world._inject("node_unavailable")
                    raise httpx.ConnectError("simulated: node unreachable", request=request)
                if request.method == "POST" and request.url.path == "/v2/router/send":
                    body = json.loads(request.read() or b"{}")
                    try:
                        h = world.node.payment_hash_of(body["payment_request"])
                        world.node_sends[h] = world.node_sends.get(h, 0) + 1
                    except ValueError:
                        pass
                response = inner.handle_request(request)
                if active and r() < f.node_crash_after:
                    world._inject("node_crash_after")
                    response.read()
                    raise SimCrash(f"crash after node call {request.url.path}")
                return response

        return NodeTransport()

    def _inject(self, name: str) -> None:
        self.faults.injected[name] = self.faults.injected.get(name, 0) + 1

    # ------------------------------------------------------------------ invocations
    def invoke(self, function: str, handler: Callable[[dict, Any], Any], event: dict) -> Any:
        """One Lambda invocation. A SimCrash propagates (the caller decides what the platform does next)."""
        self.invocations += 1
        self._invocation = function
        try:
            return handler(event, LambdaContext(function, f"req-{self.invocations}"))
        except SimCrash:
            self.crashes += 1
            raise
        finally:
            self._invocation = None

    def api_call(self, method: str, path: str, *, key: str | None, body: dict | None = None,
                 idempotency_key: str | None = None, query: dict | None = None) -> tuple[int, dict]:
        """A request through API Gateway to the API function. (502, {}) when the invocation died. The answer is
        also kept as this thread's ``last_answer`` (liveness anomalies say what the client kept getting)."""
        answer = self._api_call(method, path, key=key, body=body, idempotency_key=idempotency_key, query=query)
        self._tl.last_answer = (answer[0], json.dumps(answer[1])[:300])
        return answer

    def last_answer(self) -> Any:
        return getattr(self._tl, "last_answer", None)

    def _api_call(self, method: str, path: str, *, key: str | None, body: dict | None = None,
                  idempotency_key: str | None = None, query: dict | None = None) -> tuple[int, dict]:
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json", "host": "api.sim"}
        if idempotency_key:
            headers["idempotency-key"] = idempotency_key
        now = self.clock()
        event: dict[str, Any] = {
            "version": "2.0", "routeKey": "$default", "rawPath": path,
            "rawQueryString": "&".join(f"{k}={v}" for k, v in (query or {}).items()), "headers": headers,
            "requestContext": {"accountId": ACCOUNT, "apiId": "sim", "domainName": "api.sim", "domainPrefix": "api",
                               "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                                        "sourceIp": "10.0.0.1", "userAgent": "sim"},
                               "requestId": f"r{self.invocations}", "routeKey": "$default", "stage": "$default",
                               "time": "04/Dec/2026:00:00:00 +0000", "timeEpoch": int(now * 1000)},
            "isBase64Encoded": False,
        }
        if query:
            event["queryStringParameters"] = query
        if body is not None:
            event["body"] = json.dumps(body)
        try:
            response = self.invoke("ApiFunction", self.api, event)
        except SimCrash:
            return 502, {}
        except Exception:  # an unhandled handler error: API Gateway answers 500
            self.handler_errors += 1
            return 500, {}
        raw = response.get("body") or "{}"
        try:
            return int(response["statusCode"]), json.loads(raw)
        except ValueError:
            return int(response["statusCode"]), {"raw": raw}

    # ------------------------------------------------------------------ workflows
    def start_execution(self, machine: str, name: str, payload: dict) -> None:
        machine = "payout" if "payout" in machine else "payment" if "payment" in machine else \
            "review" if "review" in machine else machine
        key = f"{machine}:{name}"
        if key in self.executions:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "ExecutionAlreadyExists", "Message": key}}, "StartExecution")
        data = {**payload}
        if machine == "payment":
            data.update(wait_s=self.wait_s, max_tracks=self.max_tracks, review_timeout_s=self.review_timeout_s)
        elif machine == "payout":  # production waits 60 s between checks (the ASL default); the signer gets an hour
            data.update(signing_timeout_s=PAYOUT_SIGNING_TIMEOUT_S)
        else:
            data.update(review_timeout_s=self.review_timeout_s)
        self.executions[key] = Execution(
            machine=machine, name=name, definition=self.definitions[machine], data=data,
            invoke=self._task, now=self.clock, wake_at=self.clock(),
            resource_names={PAYMENT_FN_ARN: "PaymentFunction", RISK_FN_ARN: "RiskFunction",
                            PAYOUT_FN_ARN: "PayoutFunction"})

    def _task(self, function: str, payload: Any) -> Any:
        handler = {"PaymentFunction": self.payment_fn, "RiskFunction": self.risk_fn,
                   "PayoutFunction": self.payout_fn}[function]
        try:
            result = self.invoke(function, handler, payload)
        except SimCrash as exc:
            raise TaskError("Sandbox.Timedout", str(exc)) from None
        except Exception as exc:  # the Lambda service reports a handler error as errorType = class name
            raise TaskError(type(exc).__name__, str(exc)) from None
        if self.faults.enabled and self.fault_rng.random() < self.faults.lambda_retry:
            # The platform lost the answer and invokes the same event again (at-least-once Lambda).
            self._inject("lambda_retry")
            try:
                result = self.invoke(function, handler, payload)
            except SimCrash as exc:
                raise TaskError("Sandbox.Timedout", str(exc)) from None
            except Exception as exc:
                raise TaskError(type(exc).__name__, str(exc)) from None
        return json.loads(json.dumps(result))

    def complete_token(self, token: str, output: Any, error: TaskError | None = None) -> bool:
        for execution in self.executions.values():
            if execution.token == token:
                return execution.complete_token(token, output, error)
        return False

    # ------------------------------------------------------------------ queues
    def _publish_invoice_event(self, event: dict) -> None:
        self._msg_seq += 1
        self.invoice_queue.append({"id": f"m{self._msg_seq}", "body": json.dumps(event, sort_keys=True),
                                   "receives": 0})

    def deliver_invoice_batch(self, size: int = 3) -> None:
        """One poll of the invoice queue: a batch to InvoiceFunction; honours batchItemFailures; a crash or a
        (simulated) lost delete leaves messages for redelivery."""
        batch = self.invoice_queue[:size]
        event = {"Records": [{"messageId": m["id"], "receiptHandle": m["id"], "body": m["body"],
                              "attributes": {"ApproximateReceiveCount": str(m["receives"] + 1)},
                              "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                              "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:invoice-events",
                              "awsRegion": REGION} for m in batch]}
        for m in batch:
            m["receives"] += 1
        try:
            result = self.invoke("InvoiceFunction", self.invoice_fn, event)
        except SimCrash:
            return
        except Exception:  # every record failed (BatchProcessingError) or the handler broke: all come back
            self.handler_errors += 1
            return
        failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
        for m in batch:
            if m["id"] in failed:
                continue
            if self.faults.enabled and self.fault_rng.random() < self.faults.duplicate_delivery:
                self._inject("duplicate_delivery")  # SQS at-least-once: delivered again later
                continue
            self.invoice_queue.remove(m)
        # rotate the failures to the back so one poison message cannot starve the rest
        for m in batch:
            if m in self.invoice_queue and m["receives"] >= 50:
                raise AssertionError(f"invoice message {m['id']} failed 50 times: {m['body']}")

    def monitor_jobs(self) -> tuple[str, ...]:
        """The scheduled monitor jobs the workload interleaves: the base four, plus issue 12's solvency check when
        this branch's MonitorFunction has it."""
        from .workload import CHAIN_JOBS, MONITOR_JOBS

        jobs = sys.modules["satflow_fn_monitor"].JOBS
        return MONITOR_JOBS + (CHAIN_JOBS if self.chain_jobs else ()) + tuple(
            j for j in ("solvency_check",) if j in jobs)

    def run_sealer(self, job: str) -> Any:
        """The audit sealer's scheduled job (the stream path is not simulated: the sweep seals what it missed)."""
        if self.sealer_fn is None:
            return None
        try:
            return self.invoke("AuditSealerFunction", self.sealer_fn, {"job": job})
        except SimCrash:
            return None
        except Exception:
            self.handler_errors += 1
            return None

    def run_monitor(self, job: str) -> Any:
        try:
            return self.invoke("MonitorFunction", self.monitor_fn, {"job": job})
        except SimCrash:
            return None
        except Exception:  # a failed scheduled invocation: EventBridge records it; the next schedule runs again
            self.handler_errors += 1
            return None
