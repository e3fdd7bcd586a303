"""`make run BACKEND=regtest`: the local runtime on real nodes instead of the simulators.

RegtestService (a BackgroundService, in place of the `lightning` and `chain` services) starts the regtest stack of
:mod:`satflow_dev.regtest.stack` (btcd + our master lnd + an external lnd, funded, channels both ways), writes
the runtime's secrets from it and serves the same development-only routes, driving the outside world for real:

* the LND secret (SATFLOW_LND_SECRET_ID / `LndSecret`) = the master node's `{"url": "https://127.0.0.1:<rest>",
  "macaroon_hex", "tls_cert_pem"}` (its admin macaroon, its self-signed certificate);
* the bitcoind secret (SATFLOW_BITCOIND_SECRET_ID / `BitcoindSecret`) = btcd's `{"url", "user", "password",
  "tls_cert_pem"}`; the signer secret as the chain simulator writes it (the BIP84 test tprv, regtest only).

  GET  /_sim/lightning           {"url", "node_pubkey", "external_pubkey", "balance_msat", "backend": "regtest"}
  POST /_sim/lightning/pay       {"payment_request", "amount_msat"?} -> 200 {"preimage", "payment_hash",
                                 "invoice_catchup"} (the EXTERNAL lnd pays; refused -> 422 PAYMENT_REJECTED;
                                 then MonitorFunction's invoice_catchup schedule is fired, as /mine fires chain_scan)
  POST /_sim/lightning/invoices  {"amount_msat": int|null, "memo"?, "expiry_s"?} -> 201 {"payment_request",
                                 "payment_hash"} (an invoice of the external lnd)
  GET  /_sim/chain               {"url", "chain", "height", "tip_hash", "mempool_size", "mempool", "faucet_address"}
  POST /_sim/chain/send          {"address", "amount_sat"} -> 200 {"txid", "vout"} (the miner's key pays, signed
                                 with embit: btcd has no wallet)
  POST /_sim/chain/mine          {"blocks"?: 1, "scan"?: true} -> 200 {"height", "hashes", "confirmed_txids",
                                 "chain_scan"}

Real nodes are not scripted: /_sim/lightning/script, /resolve, /_sim/chain/reorg, /fee and a "sanctioned" payee
answer 501 NOT_SUPPORTED_ON_REGTEST. The stack needs the build (`make regtest-build`); it lives in a temporary
directory for the runtime's lifetime (SATFLOW_REGTEST_KEEP=1 keeps its logs).
"""
from __future__ import annotations

import base64
import json
import logging
import threading
from typing import TYPE_CHECKING, Any

from .chain_server import (
    MAX_BLOCKS_PER_CALL, _bool, _int, bip84_test_account, bitcoind_secret_spec, fire_chain_scan, signer_refusal,
    signer_secret_spec, _function_setting, DEPOSIT_ACCOUNT_KEY_ENV, NETWORK_ENV,
)
from .dev_http import DevRouteInvalid, dev_error, dispatch, only_fields, required_string
from .lightning_server import _optional_int, lnd_secret_spec
from .resources import aws_client, put_secret
from .workers import error_summary

if TYPE_CHECKING:
    from .local_runtime import LocalRuntime

log = logging.getLogger(__name__)

BACKENDS = ("simulators", "regtest")


def _not_supported(what: str) -> tuple[int, Any]:
    return 501, dev_error("NOT_SUPPORTED_ON_REGTEST", f"{what}: real nodes are not scripted (make run uses the "
                                                     "simulators for that)")


class RegtestService:
    name = "regtest"

    def __init__(self, runtime: LocalRuntime, stack: Any = None) -> None:
        assert runtime.model is not None
        self.runtime = runtime
        self.lnd_secret = lnd_secret_spec(runtime.model)
        self.bitcoind_secret = bitcoind_secret_spec(runtime.model)
        self.signer_secret = signer_secret_spec(runtime.model)
        self.network = _function_setting(runtime.model, NETWORK_ENV)
        self.deposit_account_key = _function_setting(runtime.model, DEPOSIT_ACCOUNT_KEY_ENV)
        self.keep = (runtime.environ.get("SATFLOW_REGTEST_KEEP") or "") not in ("", "0")
        self.stack: Any = stack  # given: a running stack the caller owns (tests share the session's)
        self._owns_stack = stack is None
        self.signer_note = ""
        self._lock = threading.Lock()  # the miner's coin list and the harness's HTTP clients are not thread-safe

    @classmethod
    def from_runtime(cls, runtime: LocalRuntime, stack: Any = None) -> RegtestService:
        service = cls(runtime, stack)
        if runtime.gateway is not None:
            runtime.gateway.register_dev_route("/_sim/lightning", service.lightning_route)
            runtime.gateway.register_dev_route("/_sim/chain", service.chain_route)
        return service

    # -- lifecycle
    def start(self) -> None:
        from satflow_dev.regtest.stack import RegtestStack

        if (self.network or "regtest") != "regtest":
            raise RuntimeError(f"BACKEND=regtest needs Network=regtest (the template says {self.network})")
        if self.stack is None:
            stack = RegtestStack(keep_dir=self.keep)
            stack.__enter__()  # a failed start stops what it started (and keeps the logs)
            self.stack = stack
            log.info("regtest stack up: %s", stack.timings)
        stack = self.stack
        client = aws_client("secretsmanager", self.runtime.moto_url)
        if self.lnd_secret is not None:
            put_secret(client, self.lnd_secret, json.dumps(stack.master.secret()))
        if self.bitcoind_secret is not None:
            put_secret(client, self.bitcoind_secret, json.dumps(stack.btcd.secret()))
        if self.signer_secret is not None:
            refusal = signer_refusal(self.network, self.deposit_account_key)
            if refusal is None:
                put_secret(client, self.signer_secret, bip84_test_account()[0])
            else:
                self.signer_note = refusal
                log.warning("regtest: signer secret %s not written: %s", self.signer_secret.name, refusal)

    def stop(self) -> None:
        if self.stack is not None and self._owns_stack:
            self.stack.__exit__(None, None, None)
            self.stack = None

    def describe(self) -> list[str]:
        s = self.stack
        if s is None:
            return ["regtest stack not started"]
        return [
            f"REAL nodes on regtest (started in {sum(s.timings.values()):.0f} s; data in {s.base_dir})",
            f"our lnd (master) {s.master.rest_url} {s.master.pubkey[:16]}...; external lnd {s.external.rest_url}",
            f"btcd {s.btcd.url} height {s.btcd.height()}; miner {s.miner.address}"
            + (f"; signer not written ({self.signer_note})" if self.signer_note else ""),
            "POST /_sim/lightning/pay | /invoices (the external lnd)   POST /_sim/chain/send | /mine (the miner)",
        ]

    # -- /_sim/lightning
    def lightning_route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        sub = path[len("/_sim/lightning"):].strip("/")
        routes = {"": ("GET", self._ln_state), "pay": ("POST", self._ln_pay), "invoices": ("POST", self._ln_invoice)}
        if sub in ("script", "resolve"):
            return _not_supported(f"/_sim/lightning/{sub}")
        return self._dispatch(routes, sub, method, path, body)

    def _ln_state(self, _: dict[str, Any]) -> tuple[int, Any]:
        s = self.stack
        with self._lock:
            channels = s.master.rest("GET", "/v1/channels").get("channels", [])
        return 200, {"url": s.master.rest_url, "node_pubkey": s.master.pubkey, "external_pubkey": s.external.pubkey,
                     "balance_msat": sum(int(c.get("local_balance") or 0) for c in channels) * 1000,
                     "backend": "regtest"}

    def _ln_pay(self, body: dict[str, Any]) -> tuple[int, Any]:
        from satflow_dev.simulators.lightning import LightningSimulator

        only_fields(body, {"payment_request", "amount_msat"})
        payment_request = required_string(body, "payment_request")
        amount = _optional_int(body, "amount_msat", minimum=1)
        try:
            payment_hash = LightningSimulator.payment_hash_of(payment_request)
        except ValueError as exc:
            raise DevRouteInvalid(str(exc)) from exc
        with self._lock:
            try:
                result = self.stack.external_pay(payment_request, amount)
            except RuntimeError as exc:  # lnd refused the request itself (HTTP error)
                return 422, dev_error("PAYMENT_REJECTED", str(exc))
        if result.get("payment_error"):
            return 422, dev_error("PAYMENT_REJECTED", str(result["payment_error"]))
        preimage = base64.b64decode(result.get("payment_preimage") or "").hex()
        return 200, {"preimage": preimage, "payment_hash": payment_hash,
                     "invoice_catchup": self._fire("MonitorFunction", "invoice_catchup")}

    def _ln_invoice(self, body: dict[str, Any]) -> tuple[int, Any]:
        only_fields(body, {"amount_msat", "memo", "expiry_s", "payee"})
        if body.get("payee", "external") != "external":
            return _not_supported("payee other than external")
        if "amount_msat" not in body:
            raise DevRouteInvalid("amount_msat is required (null for an amount-less invoice)")
        amount = _optional_int(body, "amount_msat", minimum=1)
        memo = body.get("memo", "")
        if not isinstance(memo, str) or len(memo.encode()) > 639:
            raise DevRouteInvalid("memo must be a string of at most 639 bytes")
        expiry = _optional_int(body, "expiry_s", minimum=1) or 3600
        with self._lock:
            invoice = self.stack.external_invoice(amount or 0, memo, expiry)
        return 201, {"payment_request": invoice["payment_request"],
                     "payment_hash": base64.b64decode(invoice["r_hash"]).hex()}

    # -- /_sim/chain
    def chain_route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        sub = path[len("/_sim/chain"):].strip("/")
        routes = {"": ("GET", self._chain_state), "send": ("POST", self._chain_send), "mine": ("POST", self._mine)}
        if sub in ("reorg", "fee"):
            return _not_supported(f"/_sim/chain/{sub}")
        return self._dispatch(routes, sub, method, path, body)

    def _chain_state(self, _: dict[str, Any]) -> tuple[int, Any]:
        s = self.stack
        with self._lock:
            rpc = s.btcd.rpc
            mempool = list(rpc.call("getrawmempool"))
            return 200, {"url": s.btcd.url, "chain": "regtest", "height": s.btcd.height(),
                         "tip_hash": rpc.call("getbestblockhash"), "mempool_size": len(mempool),
                         "mempool": mempool, "faucet_address": s.miner.address}

    def _chain_send(self, body: dict[str, Any]) -> tuple[int, Any]:
        from satflow.domain.bitcoin import Network, validate_address
        from satflow.domain.errors import SatflowError

        only_fields(body, {"address", "amount_sat"})
        address = required_string(body, "address")
        amount = _int(body, "amount_sat", minimum=1)
        try:
            validate_address(address, Network.REGTEST)
        except SatflowError as exc:
            return 400, dev_error(exc.code, str(exc))
        with self._lock:
            try:
                txid = self.stack.miner.send({address: amount})
            except RuntimeError as exc:
                return 422, dev_error("FAUCET_INSUFFICIENT_FUNDS", str(exc))
        log.info("regtest: the miner paid %d sat to %s in %s", amount, address, txid)
        return 200, {"txid": txid, "vout": 0}  # the miner puts the payee first, its change last

    def _mine(self, body: dict[str, Any]) -> tuple[int, Any]:
        only_fields(body, {"blocks", "scan"})
        blocks = _int(body, "blocks", minimum=1, maximum=MAX_BLOCKS_PER_CALL, default=1)
        scan = _bool(body, "scan", default=True)
        with self._lock:
            hashes = self.stack.mine(blocks)
            confirmed = [tx["txid"] for h in hashes for tx in self.stack.btcd.raw_block(h)["tx"][1:]]
            height = self.stack.btcd.height()
        return 200, {"height": height, "hashes": hashes, "confirmed_txids": confirmed,
                     "chain_scan": fire_chain_scan(self.runtime) if scan else {"fired": False,
                                                                                "reason": "scan: false"}}

    # -- plumbing
    def _dispatch(self, routes: dict[str, Any], sub: str, method: str, path: str, body: Any) -> tuple[int, Any]:
        if self.stack is None:
            return 503, dev_error("NOT_READY", "the regtest stack is not running")
        return dispatch(routes, sub, method, path, body)

    def _fire(self, function: str, job: str) -> dict[str, Any]:
        """Fire a schedule now (the inbound credit need not wait for the next catch-up minute)."""
        from .dev_http import jsonable

        try:
            runner: Any = self.runtime.service("schedules")
            result = runner.fire_target(runner.find(function, job=job), by_hand=True)
        except KeyError as exc:
            return {"fired": False, "reason": str(exc.args[0])}
        except Exception as exc:  # never fail the payment's answer: the node was paid either way
            log.exception("regtest: firing %s %s failed", function, job)
            return {"fired": True, "error": error_summary(exc)}
        return {"fired": True, "result": jsonable(result)}


def regtest_service_factory(runtime: LocalRuntime) -> RegtestService:
    return RegtestService.from_runtime(runtime)


def service_factories(backend: str) -> list[Any]:
    """The runtime's services for ``backend``: the simulators (the default) or the regtest stack in their place."""
    from .services import DEFAULT_SERVICE_FACTORIES, chain_service_factory, lightning_service_factory

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}")
    if backend == "simulators":
        return list(DEFAULT_SERVICE_FACTORIES)
    rest = [f for f in DEFAULT_SERVICE_FACTORIES if f not in (lightning_service_factory, chain_service_factory)]
    return [regtest_service_factory, *rest]
