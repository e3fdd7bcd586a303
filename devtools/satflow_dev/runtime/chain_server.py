"""The chain simulator served over HTTP as our Bitcoin Core node, plus `/_sim/chain` routes for the outside world.

ChainRpcHttpServer: a ThreadingHTTPServer on 127.0.0.1:<free port> speaking Bitcoin Core's JSON-RPC 1.0 the way
bitcoind's HTTP server does: POST only (any other method 405), on `/` or `/wallet/<name>` (anything else 404),
HTTP basic auth with the simulator's user/password (otherwise a bare 401 with `WWW-Authenticate`), each request
body handed to `ChainSimulator.handle_rpc`, the status from `rpc_http_status` (200; 500 for an RPC error, 404 for
an unknown method, 400 for an invalid request), the body written by `chain_json.dumps_rpc_json` (BTC amounts as
JSON numbers with 8 decimals, never floats). A JSON array is a batch: 200 with one response per request, as Core
answers. Unlike Core there is no 250 ms pause after a wrong password (tests stay fast).

Plain http on loopback only: the server binds 127.0.0.1 and the secret's URL is `http://127.0.0.1:<port>`
(`BitcoinRpcClient` accepts http and https URLs).

ChainService (a BackgroundService, started when the template declares the bitcoind secret - the secret named by
the functions' SATFLOW_BITCOIND_SECRET_ID, else the resource `BitcoindSecret`):
- starts the server on a fresh `ChainSimulator` (seeded, 101 mature coinbase blocks to its faucet wallet) and
  writes `{"url": "http://127.0.0.1:<port>", "user": "satflow", "password": <random per start>}` to that secret;
- writes the signer secret (SATFLOW_SIGNER_SECRET_ID, else `SignerSecret`) = the BIP84 test vector's account
  private key (mnemonic "abandon ... about", m/84'/1'/0', tprv), derived at start with embit and never printed
  or logged. Only when the functions' SATFLOW_NETWORK is regtest and their SATFLOW_DEPOSIT_ACCOUNT_KEY is that
  account's public key (tpub/vpub or a wpkh descriptor of it; the template's default): otherwise the signer
  secret keeps its declared value, and the banner says why;
- registers the development routes on the API port (never in template.yaml):

  GET  /_sim/chain             {"url", "chain", "height", "tip_hash", "mempool_size", "mempool", "faucet_address"}
  POST /_sim/chain/send        {"address", "amount_sat"} -> 200 {"txid", "vout"}
                               (the external faucet wallet pays the address: into the mempool, unconfirmed)
  POST /_sim/chain/mine        {"blocks"?: 1, "to_address"?, "scan"?: true}
                               -> 200 {"height", "hashes", "confirmed_txids", "chain_scan"}
                               (the first block takes the whole mempool; coinbases go to the faucet by default)
  POST /_sim/chain/reorg       {"depth", "drop_txids"?: [...], "replacement_blocks"?: depth + 1, "scan"?: true}
                               -> 200 {"height", "hashes", "disconnected", "dropped_txids", "mempool_size",
                                       "chain_scan"}
                               (transactions of the disconnected blocks return to the mempool and so into the
                               first replacement block, except drop_txids and their descendants: gone, as if
                               double-spent)
  POST /_sim/chain/fee         {"conf_target", "sat_per_vb": int | decimal string | number | null}
                               -> 200 {"conf_target", "sat_per_kvb"} (estimatesmartfee's answer; null removes it)

  Errors are `{"error": {"code", "message"}}`: 400 VALIDATION_ERROR / INVALID_ADDRESS, 404 NOT_FOUND,
  405 METHOD_NOT_ALLOWED, 422 FAUCET_INSUFFICIENT_FUNDS (mine more blocks to the faucet).

Mining wakes the chain monitor: after /_sim/chain/mine and /_sim/chain/reorg (unless `"scan": false`), when the
`schedules` service runs and MonitorFunction has a schedule whose Input is `{"job": "chain_scan"}`, that schedule
is fired synchronously, before the answer (`"chain_scan": {"fired": true, "result": ...}`). Without such a
schedule, or when the handler raises (logged), the answer still is 200 with `{"fired": false, "reason"}` or
`{"fired": true, "error"}`: the chain has changed either way.

Tests reach the live simulator as `runtime.service("chain").simulator` (send_to_address, mine, reorg,
set_fee_estimate, inject_failures for in-process transports).

Environment: SATFLOW_CHAIN_SIM_PORT (default 0: a free port), SATFLOW_CHAIN_SIM_SEED (default 0).
"""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import secrets as token_source
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from .background_http import BackgroundHttpServer
from .dev_http import DevRouteInvalid, dev_error, dispatch, jsonable, only_fields, read_body, required_string
from .resources import aws_client, put_secret
from .template import SecretSpec, TemplateModel
from .workers import error_summary

if TYPE_CHECKING:
    from satflow_dev.simulators.chain import ChainSimulator

    from .local_runtime import LocalRuntime

log = logging.getLogger(__name__)

BITCOIND_SECRET_ENV = "SATFLOW_BITCOIND_SECRET_ID"
BITCOIND_SECRET_LOGICAL_ID = "BitcoindSecret"
SIGNER_SECRET_ENV = "SATFLOW_SIGNER_SECRET_ID"
SIGNER_SECRET_LOGICAL_ID = "SignerSecret"
DEPOSIT_ACCOUNT_KEY_ENV = "SATFLOW_DEPOSIT_ACCOUNT_KEY"
NETWORK_ENV = "SATFLOW_NETWORK"
RPC_USER = "satflow"
CHAIN_SCAN_FUNCTION = "MonitorFunction"
CHAIN_SCAN_JOB = "chain_scan"
MAX_BLOCKS_PER_CALL = 1_000

# The BIP84 test vector (https://github.com/bitcoin/bips/blob/master/bip-0084.mediawiki): public knowledge, so
# any coin sent to it on a real network is anyone's. Regtest only.
TEST_MNEMONIC = " ".join(["abandon"] * 11 + ["about"])
TEST_ACCOUNT_PATH = "m/84h/1h/0h"
_TPRV_VERSION = bytes.fromhex("04358394")
_TPUB_VERSION = bytes.fromhex("043587cf")


def bip84_test_account() -> tuple[str, str]:
    """(tprv, tpub) of m/84'/1'/0' of the BIP84 test mnemonic. The tprv is a secret: never log it."""
    from embit import bip32, bip39

    account = bip32.HDKey.from_seed(bip39.mnemonic_to_seed(TEST_MNEMONIC)).derive(TEST_ACCOUNT_PATH)
    return account.to_base58(version=_TPRV_VERSION), account.to_public().to_base58(version=_TPUB_VERSION)


# ---------------------------------------------------------------------------------------------- HTTP server


class ChainRpcHttpServer(BackgroundHttpServer):
    """Serves one ChainSimulator's JSON-RPC on host:port (0 = a free port), checking basic auth."""
    thread_name = "chain-sim-http"

    def __init__(self, simulator: ChainSimulator, user: str, password: str, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.simulator = simulator
        self._expected_auth = f"{user}:{password}".encode()
        super().__init__(_make_handler(self), host, port)


    def authorized(self, header: str | None) -> bool:
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            presented = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(presented, self._expected_auth)

    def answer(self, content: bytes) -> tuple[int, bytes]:
        """One HTTP request body -> (status, JSON body)."""
        from satflow_dev.simulators.chain_errors import RPC_PARSE_ERROR, rpc_http_status
        from satflow_dev.simulators.chain_json import dumps_rpc_json, loads_rpc_json

        try:
            request = loads_rpc_json(content)
        except ValueError:
            response: Any = {"result": None, "error": {"code": RPC_PARSE_ERROR, "message": "Parse error"},
                             "id": None}
            return rpc_http_status(response), dumps_rpc_json(response).encode()
        if isinstance(request, list):  # a batch: Core answers 200 with every response, errors included
            responses = [self.simulator.handle_rpc(item) for item in request]
            return 200, dumps_rpc_json(responses).encode()
        response = self.simulator.handle_rpc(request)
        return rpc_http_status(response), dumps_rpc_json(response).encode()


def _make_handler(server: ChainRpcHttpServer) -> type[BaseHTTPRequestHandler]:
    class ChainRpcRequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; every answer carries a Content-Length

        def do_POST(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's name
            path = self.path.partition("?")[0]
            if path != "/" and not path.startswith("/wallet/"):
                self._reply(404, b"", "text/plain")
                return
            body = read_body(self)
            if not server.authorized(self.headers.get("Authorization")):
                log.warning("chain-sim: refused RPC credentials from %s", self.client_address[0])
                self._reply(401, b"", "text/plain", {"WWW-Authenticate": 'Basic realm="jsonrpc"'})
                return
            status, payload = server.answer(body)
            self._reply(status, payload, "application/json")

        def _refuse_method(self) -> None:
            read_body(self)
            self._reply(405, b"JSONRPC server handles only POST requests", "text/plain")

        do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _refuse_method

        def _reply(self, status: int, payload: bytes, content_type: str,
                   headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)


        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
            log.debug("chain-sim: " + format, *args)

    return ChainRpcRequestHandler


# ---------------------------------------------------------------------------------------------- the service


def _secret_named_by(model: TemplateModel, env_name: str, logical_id: str) -> SecretSpec | None:
    names = {fn.env[env_name] for fn in model.functions if env_name in fn.env}
    for secret in model.secrets:
        if secret.name in names:
            return secret
    for secret in model.secrets:
        if secret.logical_id == logical_id:
            return secret
    return None


def bitcoind_secret_spec(model: TemplateModel) -> SecretSpec | None:
    """The secret the functions read the node's URL and credentials from, if the template declares one."""
    return _secret_named_by(model, BITCOIND_SECRET_ENV, BITCOIND_SECRET_LOGICAL_ID)


def signer_secret_spec(model: TemplateModel) -> SecretSpec | None:
    """The secret holding the hot wallet's account private key, if the template declares one."""
    return _secret_named_by(model, SIGNER_SECRET_ENV, SIGNER_SECRET_LOGICAL_ID)


def _function_setting(model: TemplateModel, env_name: str) -> str | None:
    values = {fn.env[env_name] for fn in model.functions if env_name in fn.env}
    if len(values) > 1:
        log.warning("functions disagree on %s; the chain service uses none of them", env_name)
        return None
    return next(iter(values), None)


def signer_refusal(network: str | None, deposit_account_key: str | None) -> str | None:
    """Why the BIP84 test key must not be written as the signer (None: it may)."""
    from satflow.domain.addresses import DepositAddressDeriver
    from satflow.domain.bitcoin import Network
    from satflow.domain.errors import SatflowError

    if (network or "regtest") != Network.REGTEST.value:
        return f"Network is {network}, the test key is for regtest only"
    if deposit_account_key is None:
        return None  # nothing to match against
    _, test_tpub = bip84_test_account()
    try:
        configured = DepositAddressDeriver(deposit_account_key, Network.REGTEST)
    except SatflowError as exc:
        return f"DepositAccountKey does not parse for regtest ({exc.code})"
    expected = DepositAddressDeriver(test_tpub, Network.REGTEST)
    if (configured.receive(0), configured.change(0)) != (expected.receive(0), expected.change(0)):
        return "DepositAccountKey is not the BIP84 test key's account"
    return None


class ChainService:
    """The chain simulator as our Bitcoin Core node (BackgroundService). `simulator` is the live instance."""

    name = "chain"

    def __init__(
        self,
        simulator: ChainSimulator | None = None,
        *,
        moto_url: str = "",
        secret: SecretSpec | None = None,
        signer_secret: SecretSpec | None = None,
        network: str | None = None,
        deposit_account_key: str | None = None,
        port: int = 0,
        seed: int = 0,
        rpc_user: str = RPC_USER,
        rpc_password: str | None = None,
        on_chain_change: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.rpc_user = rpc_user
        self.rpc_password = rpc_password or token_source.token_urlsafe(24)
        if simulator is None:
            from satflow_dev.simulators.chain import ChainSimulator

            simulator = ChainSimulator(seed=seed, rpc_user=self.rpc_user, rpc_password=self.rpc_password,
                                       rbf=True)  # BIP125, as Core: operators can fee-bump locally
        self.simulator = simulator
        self.moto_url = moto_url
        self.secret = secret
        self.signer_secret = signer_secret
        self.network = network
        self.deposit_account_key = deposit_account_key
        self.on_chain_change = on_chain_change
        self.signer_written = False
        self.signer_note = ""
        self.server = ChainRpcHttpServer(simulator, self.rpc_user, self.rpc_password, "127.0.0.1", port)

    @classmethod
    def from_runtime(cls, runtime: LocalRuntime, **kwargs: Any) -> ChainService | None:
        assert runtime.model is not None
        secret = bitcoind_secret_spec(runtime.model)
        if secret is None:
            return None
        env = runtime.environ
        kwargs.setdefault("port", int(env.get("SATFLOW_CHAIN_SIM_PORT") or 0))
        kwargs.setdefault("seed", int(env.get("SATFLOW_CHAIN_SIM_SEED") or 0))
        kwargs.setdefault("signer_secret", signer_secret_spec(runtime.model))
        kwargs.setdefault("network", _function_setting(runtime.model, NETWORK_ENV))
        kwargs.setdefault("deposit_account_key", _function_setting(runtime.model, DEPOSIT_ACCOUNT_KEY_ENV))
        kwargs.setdefault("on_chain_change", lambda: fire_chain_scan(runtime))
        service = cls(moto_url=runtime.moto_url, secret=secret, **kwargs)
        if runtime.gateway is not None:
            runtime.gateway.register_dev_route("/_sim/chain", service.dev_route)
        return service

    @property
    def url(self) -> str:
        return self.server.url

    def secret_value(self) -> dict[str, str]:
        return {"url": self.url, "user": self.rpc_user, "password": self.rpc_password}

    def describe(self) -> list[str]:
        where = f"; secret {self.secret.name}" if self.secret else ""
        lines = [f"Bitcoin Core RPC simulator on {self.url} (regtest, height {self.simulator.height}){where}"]
        if self.signer_secret is not None:
            if self.signer_written:
                lines.append(f"signer: BIP84 test key (regtest only); secret {self.signer_secret.name}")
            else:
                lines.append(f"signer: not written ({self.signer_note}); secret {self.signer_secret.name} "
                             "keeps its declared value")
        lines.append("POST /_sim/chain/send | /mine | /reorg | /fee   (GET /_sim/chain: tip, mempool)")
        return lines

    def start(self) -> None:
        self.server.start()
        if not self.moto_url:
            return
        client = aws_client("secretsmanager", self.moto_url)
        if self.secret is not None:
            put_secret(client, self.secret, json.dumps(self.secret_value()))
        if self.signer_secret is not None:
            refusal = signer_refusal(self.network, self.deposit_account_key)
            if refusal is None:
                tprv, _ = bip84_test_account()
                put_secret(client, self.signer_secret, tprv)
                self.signer_written = True
            else:
                self.signer_note = refusal
                log.warning("chain: signer secret %s not written: %s", self.signer_secret.name, refusal)

    def stop(self) -> None:
        self.server.stop()

    # -- dev routes

    def dev_route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        sub = path[len("/_sim/chain"):].strip("/")
        routes = {"": ("GET", self._state), "send": ("POST", self._send), "mine": ("POST", self._mine),
                  "reorg": ("POST", self._reorg), "fee": ("POST", self._fee)}
        return dispatch(routes, sub, method, path, body,
                        not_found=f"no route {path} (GET /_sim/chain, POST /_sim/chain/send|mine|reorg|fee)")

    def _state(self, _: dict[str, Any]) -> tuple[int, Any]:
        sim = self.simulator
        mempool = sim.mempool_txids()
        return 200, {"url": self.url, "chain": "regtest", "height": sim.height, "tip_hash": sim.tip_hash,
                     "mempool_size": len(mempool), "mempool": mempool, "faucet_address": sim.faucet_address}

    def _send(self, body: dict[str, Any]) -> tuple[int, Any]:
        from satflow.domain.bitcoin import validate_address
        from satflow.domain.errors import SatflowError
        from satflow_dev.simulators.chain_errors import FaucetInsufficientFunds

        only_fields(body, {"address", "amount_sat"})
        address = required_string(body, "address")
        amount = _int(body, "amount_sat", minimum=1)
        try:
            txid = self.simulator.send_to_address(address, amount)
        except SatflowError as exc:  # InvalidAddress, a wrong network's address
            return 400, dev_error(exc.code, str(exc))
        except FaucetInsufficientFunds as exc:
            return 422, dev_error("FAUCET_INSUFFICIENT_FUNDS", str(exc))
        except ValueError as exc:  # dust
            return 400, dev_error("VALIDATION_ERROR", str(exc))
        script = bytes.fromhex(validate_address(address, self.simulator.network).script_pubkey_hex)
        entry = self.simulator.mempool_entry(txid)
        vout = next((n for n, out in enumerate(entry.tx.vout) if out.script_pubkey.data == script
                     and out.value == amount), None) if entry else None
        log.info("chain-sim: faucet paid %d sat to %s in %s", amount, address, txid)
        return 200, {"txid": txid, "vout": vout}

    def _mine(self, body: dict[str, Any]) -> tuple[int, Any]:
        from satflow.domain.errors import SatflowError

        only_fields(body, {"blocks", "to_address", "scan"})
        blocks = _int(body, "blocks", minimum=1, maximum=MAX_BLOCKS_PER_CALL, default=1)
        to_address = _optional_string(body, "to_address")
        scan = _bool(body, "scan", default=True)
        sim = self.simulator
        try:
            hashes = sim.mine(blocks, to_address)
        except SatflowError as exc:
            return 400, dev_error(exc.code, str(exc))
        confirmed = [txid for block_hash in hashes for txid in _block_txids(sim, block_hash)]
        log.info("chain-sim: mined %d block(s) to height %d (%d transaction(s) confirmed)", blocks, sim.height,
                 len(confirmed))
        return 200, {"height": sim.height, "hashes": hashes, "confirmed_txids": confirmed,
                     "chain_scan": self._scan(scan)}

    def _reorg(self, body: dict[str, Any]) -> tuple[int, Any]:
        from satflow.domain.errors import SatflowError

        only_fields(body, {"depth", "drop_txids", "replacement_blocks", "to_address", "scan"})
        depth = _int(body, "depth", minimum=1)
        replacement = _int(body, "replacement_blocks", minimum=0, maximum=MAX_BLOCKS_PER_CALL, default=None)
        drop = body.get("drop_txids", [])
        if not isinstance(drop, list) or not all(isinstance(t, str) for t in drop):
            raise DevRouteInvalid("drop_txids must be a list of txids")
        drop = [t.lower() for t in drop]
        to_address = _optional_string(body, "to_address")
        scan = _bool(body, "scan", default=True)
        sim = self.simulator
        old = [block for h in range(max(1, sim.height - depth + 1), sim.height + 1)
               if (block := sim.block_at(h)) is not None]
        candidates = {txid for block in old for txid in block.txids[1:]} | set(sim.mempool_txids())
        try:
            hashes = sim.reorg(depth, replacement, drop_txids=drop, to_address=to_address)
        except SatflowError as exc:
            return 400, dev_error(exc.code, str(exc))
        except ValueError as exc:
            return 400, dev_error("VALIDATION_ERROR", str(exc))
        present = set(sim.mempool_txids())
        # Gone: neither back in the mempool nor (re)confirmed. A concurrent broadcast cannot show up here, it was
        # not a candidate.
        dropped = sorted(t for t in candidates if t not in present and sim.confirmed_block_of(t) is None)
        disconnected = [block.hash for block in old]
        height, mempool_size = sim.height, len(present)
        log.info("chain-sim: reorg of depth %d -> height %d; dropped %s", depth, height, dropped or "nothing")
        return 200, {"height": height, "hashes": hashes, "disconnected": disconnected, "dropped_txids": dropped,
                     "mempool_size": mempool_size, "chain_scan": self._scan(scan)}

    def _fee(self, body: dict[str, Any]) -> tuple[int, Any]:
        only_fields(body, {"conf_target", "sat_per_vb"})
        target = _int(body, "conf_target", minimum=1, maximum=1008)
        if "sat_per_vb" not in body:
            raise DevRouteInvalid("sat_per_vb is required (null removes the estimate)")
        rate = _fee_rate(body["sat_per_vb"])
        try:
            self.simulator.set_fee_estimate(target, rate)
        except (ValueError, TypeError) as exc:
            raise DevRouteInvalid(str(exc)) from exc
        answer = self.simulator.fee_estimate(target)
        return 200, {"conf_target": target, "sat_per_kvb": answer[0] if answer else None,
                     "answered_for": answer[1] if answer else None}

    def _scan(self, wanted: bool) -> dict[str, Any]:
        if not wanted:
            return {"fired": False, "reason": "scan: false"}
        if self.on_chain_change is None:
            return {"fired": False, "reason": "no runtime to fire it in"}
        try:
            return self.on_chain_change()
        except Exception as exc:  # never fail the mining answer
            log.exception("chain: firing the chain monitor failed")
            return {"fired": False, "reason": error_summary(exc)}


def fire_chain_scan(runtime: LocalRuntime) -> dict[str, Any]:
    """Fire MonitorFunction's `{"job": "chain_scan"}` schedule now, if the runtime's schedule runner has one."""
    try:
        runner: Any = runtime.service("schedules")
    except KeyError:
        return {"fired": False, "reason": "no schedules service"}
    try:
        target = runner.find(CHAIN_SCAN_FUNCTION, job=CHAIN_SCAN_JOB)
    except KeyError as exc:
        return {"fired": False, "reason": str(exc.args[0])}
    try:
        result = runner.fire_target(target, by_hand=True)
    except Exception as exc:
        log.exception("chain: %s job %s failed", CHAIN_SCAN_FUNCTION, CHAIN_SCAN_JOB)
        return {"fired": True, "error": error_summary(exc)}
    return {"fired": True, "result": jsonable(result)}


def _block_txids(sim: ChainSimulator, block_hash: str) -> list[str]:
    block = sim.block_by_hash(block_hash)
    return list(block.txids[1:]) if block is not None else []


def _optional_string(body: dict[str, Any], name: str) -> str | None:
    return None if body.get(name) is None else required_string(body, name)


def _bool(body: dict[str, Any], name: str, *, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise DevRouteInvalid(f"{name} must be true or false")
    return value


_REQUIRED: Any = object()


def _int(body: dict[str, Any], name: str, *, minimum: int, maximum: int | None = None,
         default: Any = _REQUIRED) -> Any:
    value = body.get(name)
    if value is None:
        if default is _REQUIRED:
            raise DevRouteInvalid(f"{name} is required (an integer)")
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise DevRouteInvalid(f"{name} must be an integer {bounds}")
    return value


def _fee_rate(value: Any) -> int | Decimal | None:
    """sat/vB as given in JSON: an integer, a number (read through its decimal text, never as a binary float) or
    a decimal string; null removes the estimate."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise DevRouteInvalid("sat_per_vb must be a number")
    if isinstance(value, int):
        return value
    try:
        rate = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except InvalidOperation as exc:
        raise DevRouteInvalid("sat_per_vb must be a number") from exc
    if not rate.is_finite():
        raise DevRouteInvalid("sat_per_vb must be a finite number")
    return rate
