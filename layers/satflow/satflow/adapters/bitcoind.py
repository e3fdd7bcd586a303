"""Bitcoin Core JSON-RPC client (the chain-node port) over httpx.

Bitcoin Core speaks JSON-RPC 1.0 over HTTP with basic auth: ``POST {"jsonrpc": "1.0", "id", "method", "params"}``.
For 1.0 requests it reports an RPC error with HTTP 500 (404 for an unknown method) and a JSON body carrying
``error.code``; a wrong password gets a bare HTTP 401. Amounts are JSON numbers in BTC (``0.00100000``): the body
is parsed with ``parse_float=Decimal`` and every amount becomes integer satoshi through ``btc_to_sat`` here, at the
edge, so no float ever exists.

Error mapping (one table, in this module only):

  -28 warming up, -9 not connected, -10 initial download, HTTP 5xx/429 without an RPC error,
  timeouts and transport errors                                           -> BitcoinNodeUnavailable (transient)
  HTTP 401/403                                                            -> BitcoinNodeAuthFailed
  -32601 method not found                                                 -> BitcoinRpcMethodNotFound
  -5 from getrawtransaction                                               -> BitcoinTxNotFound
  -5 from getblock, -8 from getblockhash (height above the tip)           -> BitcoinBlockNotFound
  -5 / -8 elsewhere                                                       -> BitcoinRpcInvalidParameter
  -25 with bad-txns-inputs-missingorspent                                 -> TransactionInputsMissing
  -25 / -26 / -22 (verify error, policy or consensus rejection, undecodable) -> TransactionRejected
  anything else                                                           -> BitcoinNodeError

Broadcast is idempotent: sendrawtransaction of a transaction the node already has (-27 "already in utxo set", or
the reject reasons txn-already-in-mempool / txn-already-known) returns the txid as a success. A timeout during a
broadcast is *unknown*, not failed: the caller retries the same hex.

btcd (v0.24, the regtest tier's chain node) serves the same methods with these differences, handled here
(tests/realnodes/test_bitcoind_backends.py runs every call against both):

* ``estimatesmartfee`` does not exist (-32601): fall back to ``estimatefee <blocks>`` (BTC/kvB; 0 or an error
  means "no estimate", btcd estimates at most 25 blocks ahead); the mode is not used.
* ``getblock <hash> 2`` lists the decoded transactions under ``rawtx`` (Core: ``tx``) and gives no ``fee``.
* ``getrawtransaction`` takes the verbosity as an integer only (Core takes 0/1 or a boolean: we send 0/1) and
  has no ``blockhash`` parameter (-32602): we ask without it (btcd runs with txindex) and check the block.
* ``getblockhash`` above the tip is -1 "Block number out of range" (Core: -8).
* ``getblockchaininfo`` has no ``initialblockdownload``/``verificationprogress``: read as not in IBD, progress
  blocks/headers.
* ``testmempoolaccept`` requires ``maxfeerate`` (Core: optional, default 0.10 BTC/kvB): we always send 0.10.
* ``sendrawtransaction`` of a mempool transaction is -26 "already have transaction in mempool" (Core returns
  the txid): read as already known, like a confirmed one (-27 on both); missing or spent inputs are -25
  "orphan transaction ..." (Core: "bad-txns-inputs-missingorspent").
* ``testmempoolaccept`` words "already known" as "already have transaction in mempool <txid>" / "transaction
  already exists in blockchain": read as Core's two reasons.
* Not offered by btcd and not used by satflow: ``scantxoutset``, ``walletprocesspsbt`` and every wallet call.
"""
from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, Decimal
from typing import Any, Literal, overload
from urllib.parse import urlsplit

import httpx
from embit.transaction import Transaction as EmbitTransaction

from satflow.domain.bitcoin import (
    ALREADY_KNOWN_REJECT_REASONS,
    BitcoinBlockNotFound,
    BitcoinNodeAuthFailed,
    BitcoinNodeError,
    BitcoinNodeUnavailable,
    BitcoinRpcInvalidParameter,
    BitcoinRpcMethodNotFound,
    BitcoinTxNotFound,
    Block,
    BlockchainInfo,
    ChainTransaction,
    FeeEstimate,
    FeeEstimateMode,
    InvalidBtcAmount,
    MempoolAcceptResult,
    OutPoint,
    TransactionInfo,
    TransactionInputsMissing,
    TransactionRejected,
    TxOutput,
    btc_to_sat,
)
from satflow.domain.errors import SatflowError, ValidationError
from satflow.domain.money import SAT_PER_BTC

DEFAULT_TIMEOUT_S = 10.0
MAX_CONF_TARGET = 1008  # Bitcoin Core's longest fee estimation horizon

# Bitcoin Core RPC error codes (src/rpc/protocol.h) that this adapter distinguishes.
RPC_MISC_ERROR = -1
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_INVALID_PARAMETER = -8
RPC_CLIENT_NOT_CONNECTED = -9
RPC_CLIENT_IN_INITIAL_DOWNLOAD = -10
RPC_DESERIALIZATION_ERROR = -22
RPC_VERIFY_ERROR = -25
RPC_VERIFY_REJECTED = -26
RPC_VERIFY_ALREADY_IN_CHAIN = -27
RPC_IN_WARMUP = -28
RPC_METHOD_NOT_FOUND = -32601

_RPC_ERROR_CLASSES: dict[int, type[SatflowError]] = {
    RPC_IN_WARMUP: BitcoinNodeUnavailable,
    RPC_CLIENT_NOT_CONNECTED: BitcoinNodeUnavailable,
    RPC_CLIENT_IN_INITIAL_DOWNLOAD: BitcoinNodeUnavailable,
    RPC_METHOD_NOT_FOUND: BitcoinRpcMethodNotFound,
    RPC_INVALID_ADDRESS_OR_KEY: BitcoinRpcInvalidParameter,
    RPC_INVALID_PARAMETER: BitcoinRpcInvalidParameter,
    RPC_VERIFY_ERROR: TransactionRejected,
    RPC_VERIFY_REJECTED: TransactionRejected,
    RPC_DESERIALIZATION_ERROR: TransactionRejected,
    RPC_VERIFY_ALREADY_IN_CHAIN: TransactionRejected,
}
# The same code means "not found" for lookups.
_METHOD_RPC_ERROR_CLASSES: dict[tuple[str, int], type[SatflowError]] = {
    ("getrawtransaction", RPC_INVALID_ADDRESS_OR_KEY): BitcoinTxNotFound,
    ("getblock", RPC_INVALID_ADDRESS_OR_KEY): BitcoinBlockNotFound,
    ("getblockhash", RPC_INVALID_PARAMETER): BitcoinBlockNotFound,
}
_MISSING_INPUTS_REASON = "bad-txns-inputs-missingorspent"
_BTCD_MISSING_INPUTS = "orphan transaction"  # btcd: "... references outputs of unknown or fully-spent transaction"
_BTCD_ALREADY_KNOWN = "already have transaction"  # btcd: "TX rejected: already have transaction in mempool <txid>"
_BTCD_OUT_OF_RANGE = "out of range"  # btcd getblockhash: -1 "Block number out of range"
RPC_INVALID_PARAMS = -32602  # JSON-RPC: wrong parameter count or type
DEFAULT_MAX_FEE_RATE_BTC_PER_KVB = "0.10"  # Core's default for testmempoolaccept; btcd requires the parameter


class _RpcError(Exception):
    """An RPC-level error before it is mapped (internal: lets sendrawtransaction see the raw code)."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method}: {code} {message}")
        self.method, self.code, self.message = method, code, message


class BitcoinRpcClient:
    """A synchronous Bitcoin Core RPC client with bounded timeouts and typed results."""

    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
        *,
        tls_cert_pem: str | None = None,
    ) -> None:
        self._url = _validate_url(url)
        if not isinstance(user, str) or not isinstance(password, str) or not user or not password:
            raise ValidationError("bitcoind RPC user and password are required", field="bitcoind")
        self._user = user
        self._timeout_s = _validate_timeout(timeout_s)
        self._ids = itertools.count(1)
        self._no_estimatesmartfee = False
        self._http = httpx.Client(
            auth=httpx.BasicAuth(user, password),
            timeout=httpx.Timeout(self._timeout_s),
            transport=transport,
            # A node with its own self-signed certificate (btcd generates one; Core behind a TLS proxy may too):
            # trust exactly that certificate. Without one, the system CAs (or the injected transport's choice).
            verify=_tls_context(tls_cert_pem) if tls_cert_pem and transport is None else True,
            headers={"content-type": "application/json"},
        )

    @classmethod
    def from_secret(
        cls,
        secret: Mapping[str, Any],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> BitcoinRpcClient:
        """Build from a Secrets Manager value ``{"url", "user", "password", "tls_cert_pem"?}`` (values never
        echoed; ``tls_cert_pem``: the node's own certificate, for an https url with a self-signed one)."""
        missing = [key for key in ("url", "user", "password") if not secret.get(key)]
        if missing:
            raise ValidationError(f"bitcoind secret lacks {missing}", field="bitcoind")
        return cls(secret["url"], secret["user"], secret["password"], timeout_s=timeout_s, transport=transport,
                   tls_cert_pem=secret.get("tls_cert_pem") or None)

    def __repr__(self) -> str:
        return f"BitcoinRpcClient(url={self._url!r}, user={self._user!r}, password='***', timeout_s={self._timeout_s})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BitcoinRpcClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- calls ---------------------------------------------------------------------------------------------------
    def getblockchaininfo(self) -> BlockchainInfo:
        info = self.call("getblockchaininfo")
        return _parse("getblockchaininfo", _blockchain_info, info)

    def getblockcount(self) -> int:
        return _parse("getblockcount", _int, self.call("getblockcount"))

    def getbestblockhash(self) -> str:
        return _parse("getbestblockhash", _hash, self.call("getbestblockhash"))

    def getblockhash(self, height: int) -> str:
        _require_int(height, "height", minimum=0)
        return _parse("getblockhash", _hash, self.call("getblockhash", height))

    def getblock(self, block_hash: str, verbosity: int = 2) -> Block:
        """A block with its transactions decoded (verbosity 2, the only one this typed call supports)."""
        if verbosity != 2:
            raise ValueError("getblock supports verbosity=2 only; use call() for other shapes")
        return _parse("getblock", _block, self.call("getblock", block_hash, 2))

    def gettxout(self, txid: str, vout: int, include_mempool: bool = True) -> int | None:
        """The value (sat) of an unspent output, None when it is spent (or never existed). With
        ``include_mempool`` a spend waiting in the mempool counts as spent. Bitcoin Core and btcd alike."""
        _require_int(vout, "vout", minimum=0)
        result = self.call("gettxout", _hash(txid), vout, bool(include_mempool))
        if result is None:
            return None
        return _parse("gettxout", lambda r: _sat(r["value"]), result)

    def getrawmempool(self) -> list[str]:
        """The txids in the node's mempool (non-verbose: the chain monitor fetches the few it has not seen yet)."""
        return _parse("getrawmempool", _txid_list, self.call("getrawmempool", False))

    @overload
    def getrawtransaction(
        self, txid: str, verbose: Literal[True] = ..., blockhash: str | None = ...
    ) -> TransactionInfo: ...

    @overload
    def getrawtransaction(self, txid: str, verbose: Literal[False], blockhash: str | None = ...) -> str: ...

    def getrawtransaction(
        self, txid: str, verbose: bool = True, blockhash: str | None = None
    ) -> TransactionInfo | str:
        """Look a transaction up (needs -txindex for confirmed ones unless ``blockhash`` is given).

        Raises BitcoinTxNotFound when the node does not know it (not in mempool, not in chain / that block).
        """
        params: list[Any] = [txid, 1 if verbose else 0]  # an integer: btcd refuses a boolean, Core takes both
        if blockhash is None:
            result = self.call("getrawtransaction", *params)
        else:
            try:
                result = self._call("getrawtransaction", [*params, blockhash])
            except _RpcError as exc:
                if exc.code != RPC_INVALID_PARAMS:
                    raise _map_rpc_error(exc) from None
                # btcd has no blockhash parameter: look the transaction up by txindex and check its block.
                located = self.call("getrawtransaction", txid, 1)
                if _parse("getrawtransaction", _transaction_info, located).block_hash != blockhash:
                    raise BitcoinTxNotFound(
                        f"bitcoind getrawtransaction: {txid} is not in block {blockhash}", method="getrawtransaction"
                    ) from None
                result = located if verbose else located["hex"]
        if not verbose:
            return _parse("getrawtransaction", _hex_string, result)
        return _parse("getrawtransaction", _transaction_info, result)

    def estimatesmartfee(self, conf_target: int, mode: FeeEstimateMode) -> FeeEstimate | None:
        """Fee rate to confirm within ``conf_target`` blocks, or None when the node has no estimate yet.

        ``sat_per_vb`` is rounded up to a whole sat/vB (never below the estimate); ``sat_per_kvb`` is exact.
        """
        _require_int(conf_target, "conf_target", minimum=1, maximum=MAX_CONF_TARGET)
        mode = FeeEstimateMode(mode)
        if not self._no_estimatesmartfee:
            try:
                result = self.call("estimatesmartfee", conf_target, mode.value)
            except BitcoinRpcMethodNotFound:
                self._no_estimatesmartfee = True  # btcd: remembered for this client's lifetime
            else:
                return _parse("estimatesmartfee", _fee_estimate, result)
        return self._estimatefee(conf_target)

    def _estimatefee(self, conf_target: int) -> FeeEstimate | None:
        """btcd's ``estimatefee``: BTC per kvB; 0, -1 or an RPC error mean it has no estimate for that target."""
        try:
            result = self.call("estimatefee", conf_target)
        except BitcoinNodeError:  # not BitcoinNodeUnavailable (transient): that one propagates
            return None  # "not enough blocks have been observed", "max is 25 blocks", "Fee estimation disabled"
        if isinstance(result, bool) or not isinstance(result, (Decimal, int)) or result <= 0:
            return None
        # btcd computes the rate in floating point (0.0000201257... BTC/kvB): round UP to whole sat/kvB, so the
        # rate we pay is never below the node's estimate.
        sat_per_kvb = int((Decimal(result) * SAT_PER_BTC).to_integral_value(rounding=ROUND_CEILING))
        return FeeEstimate(sat_per_kvb=sat_per_kvb, sat_per_vb=-(-sat_per_kvb // 1000), blocks=conf_target)

    def testmempoolaccept(self, raw_txs: Sequence[str]) -> list[MempoolAcceptResult]:
        if isinstance(raw_txs, str) or not raw_txs:
            raise ValueError("testmempoolaccept takes a non-empty list of raw transaction hex strings")
        try:
            # maxfeerate as a JSON number: btcd requires it and reads a float (a string is a type error there).
            result = self._call("testmempoolaccept", [list(raw_txs), _JsonNumber(DEFAULT_MAX_FEE_RATE_BTC_PER_KVB)])
        except _RpcError as exc:
            raise _map_rpc_error(exc) from None
        return _parse("testmempoolaccept", _mempool_accept_results, result)

    def sendrawtransaction(self, raw_tx_hex: str, txid: str | None = None) -> str:
        """Broadcast; returns the txid. Already known to the node (mempool or chain) counts as success.

        ``txid`` is what to return in the already-known case; when omitted it is computed from ``raw_tx_hex``.
        """
        try:
            result = self._call("sendrawtransaction", [raw_tx_hex])
        except _RpcError as exc:
            if exc.code == RPC_VERIFY_ALREADY_IN_CHAIN or _is_already_known(exc.message):
                return txid or txid_of(raw_tx_hex)
            raise _map_rpc_error(exc) from None
        return _parse("sendrawtransaction", _hash, result)

    def call(self, method: str, *params: Any) -> Any:
        """Raw JSON-RPC call with the error table applied; amounts in the result are Decimal BTC.

        Decimal parameters are sent as strings ("0.00150000"), which Bitcoin Core accepts for amounts; floats are
        refused.
        """
        _refuse_floats(params)
        try:
            return self._call(method, list(params))
        except _RpcError as exc:
            raise _map_rpc_error(exc) from None

    # --- transport -----------------------------------------------------------------------------------------------
    def _call(self, method: str, params: list[Any]) -> Any:
        request_id = next(self._ids)
        payload = {"jsonrpc": "1.0", "id": request_id, "method": method, "params": params}
        response = self._post(method, payload)
        if response.status_code in (401, 403):
            raise BitcoinNodeAuthFailed(
                f"bitcoind rejected the RPC credentials (HTTP {response.status_code})", method=method
            )
        body = _decode_json(response.content)
        error = body.get("error") if isinstance(body, dict) else None
        if error:
            code, message = _error_fields(error)
            raise _RpcError(method, code, message)
        if response.status_code >= 500 or response.status_code == 429:
            raise BitcoinNodeUnavailable(f"bitcoind {method}: HTTP {response.status_code}", method=method)
        if response.status_code != 200:
            raise BitcoinNodeError(f"bitcoind {method}: unexpected HTTP {response.status_code}", method=method)
        if not isinstance(body, dict) or "result" not in body:
            # A 200 that is not a JSON-RPC answer (a proxy page, a truncated body): retrying may help.
            raise BitcoinNodeUnavailable(f"bitcoind {method}: response is not JSON-RPC", method=method)
        if body.get("id") != request_id:
            raise BitcoinNodeError(f"bitcoind {method}: response id does not match the request", method=method)
        return body["result"]

    def _post(self, method: str, payload: dict[str, Any]) -> httpx.Response:
        try:
            return self._http.post(self._url, content=json.dumps(payload, default=_json_param).encode())
        except httpx.TimeoutException as exc:
            message = f"bitcoind {method} timed out after {self._timeout_s}s"
            raise BitcoinNodeUnavailable(message, method=method) from exc
        except httpx.TransportError as exc:
            raise BitcoinNodeUnavailable(f"bitcoind {method}: {type(exc).__name__}", method=method) from exc


def _refuse_floats(value: object) -> None:
    if isinstance(value, float):
        raise TypeError("RPC parameters never carry floats: pass BTC amounts as Decimal")
    if isinstance(value, (list, tuple)):
        for item in value:
            _refuse_floats(item)
    elif isinstance(value, dict):
        for item in value.values():
            _refuse_floats(item)


class _JsonNumber(float):
    """A parameter that must travel as a JSON number; built from exact decimal text that a float prints back
    unchanged (used for fixed rates such as 0.10, never for amounts)."""

    def __new__(cls, text: str) -> "_JsonNumber":
        value = super().__new__(cls, text)
        if repr(float(value)) != format(Decimal(text).normalize(), "f"):
            raise ValueError(f"{text} does not survive as a JSON number")
        return value


def _json_param(value: object) -> str:
    # Core's AmountFromValue accepts a number or a string: Decimal amounts go out as exact strings, never floats.
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"cannot send {type(value).__name__} as an RPC parameter")


def txid_of(raw_tx_hex: str) -> str:
    """The txid (double SHA-256 of the non-witness serialization, byte-reversed) of a raw transaction."""
    try:
        return EmbitTransaction.parse(bytes.fromhex(raw_tx_hex)).txid().hex()
    except Exception as exc:  # embit raises assorted errors for truncated input
        raise ValueError("raw transaction hex does not decode") from exc


# --- error mapping -----------------------------------------------------------------------------------------------
def _map_rpc_error(exc: _RpcError) -> SatflowError:
    cls = _METHOD_RPC_ERROR_CLASSES.get((exc.method, exc.code)) or _RPC_ERROR_CLASSES.get(exc.code, BitcoinNodeError)
    if cls is TransactionRejected and (_MISSING_INPUTS_REASON in exc.message or _BTCD_MISSING_INPUTS in exc.message):
        cls = TransactionInputsMissing
    if exc.method == "getblockhash" and exc.code == RPC_MISC_ERROR and _BTCD_OUT_OF_RANGE in exc.message:
        cls = BitcoinBlockNotFound
    details: dict[str, object] = {"method": exc.method, "rpc_code": exc.code}
    if issubclass(cls, TransactionRejected):
        details["reject_reason"] = exc.message
    return cls(f"bitcoind {exc.method}: {exc.message} ({exc.code})", **details)


def _is_already_known(message: str) -> bool:
    # Reject reasons come first in Core's messages, optionally followed by ", <debug detail>".
    return any(message.startswith(reason) for reason in ALREADY_KNOWN_REJECT_REASONS) or _BTCD_ALREADY_KNOWN in message


def _error_fields(error: object) -> tuple[int, str]:
    if isinstance(error, dict) and isinstance(error.get("code"), int):
        return error["code"], str(error.get("message", ""))
    return RPC_MISC_ERROR, str(error)


def _decode_json(content: bytes) -> Any:
    if not content:
        return None
    try:
        return json.loads(content, parse_float=Decimal)
    except ValueError:
        return None


# --- validation of arguments and configuration -------------------------------------------------------------------
def _tls_context(cert_pem: str) -> Any:
    import ssl

    try:
        return ssl.create_default_context(cadata=cert_pem)
    except (ssl.SSLError, ValueError) as exc:  # never echo the value
        raise ValidationError("bitcoind tls_cert_pem is not a PEM certificate", field="bitcoind") from exc


def _validate_url(url: object) -> str:
    if not isinstance(url, str):
        raise ValidationError("bitcoind url must be a string", field="bitcoind")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("bitcoind url must be http(s)://host[:port][/path]", field="bitcoind")
    if parts.username or parts.password:
        # Credentials in the URL would end up in exception messages and logs.
        raise ValidationError("put the RPC credentials in user/password, not in the url", field="bitcoind")
    return url


def _validate_timeout(timeout_s: object) -> float:
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)):
        raise ValidationError("timeout_s must be a number of seconds", field="timeout_s")
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise ValidationError("timeout_s must be positive and finite: every call is bounded", field="timeout_s")
    return float(timeout_s)


def _require_int(value: object, field: str, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValidationError(f"{field} must be an integer {bounds}", field=field)


# --- result parsing ----------------------------------------------------------------------------------------------
def _parse(method: str, parser: Any, value: Any) -> Any:
    """Apply ``parser``; a response of an unexpected shape is a node error, not a crash deep in the caller."""
    try:
        return parser(value)
    except (KeyError, TypeError, ValueError, InvalidBtcAmount) as exc:
        raise BitcoinNodeError(f"bitcoind {method}: unexpected response shape ({exc!r})", method=method) from exc


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _hex_string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a hex string")
    bytes.fromhex(value)
    return value


def _hash(value: Any) -> str:
    value = _hex_string(value)
    if len(value) != 64:
        raise ValueError("expected a 32-byte hash")
    return value


def _txid_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise TypeError("expected a list of txids")
    return [_hash(txid) for txid in value]


def _sat(value: Any) -> int:
    """A BTC amount from the node (a Decimal; an integral JSON number arrives as int) in satoshi."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    return btc_to_sat(value)


def _blockchain_info(info: dict[str, Any]) -> BlockchainInfo:
    blocks, headers = _int(info["blocks"]), _int(info["headers"])
    # btcd reports neither field: not in initial download, progress as blocks over headers.
    progress = info.get("verificationprogress")
    if progress is None:
        progress = Decimal(1) if headers <= blocks else Decimal(blocks) / Decimal(headers)
    return BlockchainInfo(
        chain=info["chain"],
        blocks=blocks,
        headers=headers,
        best_block_hash=_hash(info["bestblockhash"]),
        initial_block_download=bool(info.get("initialblockdownload", False)),
        verification_progress=Decimal(progress),
        pruned=bool(info["pruned"]),
    )


def _transaction(tx: dict[str, Any]) -> ChainTransaction:
    vin = tx["vin"]
    is_coinbase = bool(vin) and "coinbase" in vin[0]
    inputs = () if is_coinbase else tuple(OutPoint(_hash(i["txid"]), _int(i["vout"])) for i in vin)
    outputs = tuple(
        TxOutput(
            n=_int(out["n"]),
            value_sat=_sat(out["value"]),
            script_pubkey_hex=_hex_string(out["scriptPubKey"]["hex"]),
            address=out["scriptPubKey"].get("address"),
        )
        for out in tx["vout"]
    )
    return ChainTransaction(
        txid=_hash(tx["txid"]),
        wtxid=_hash(tx["hash"]),
        inputs=inputs,
        outputs=outputs,
        is_coinbase=is_coinbase,
        vsize=_int(tx["vsize"]),
        fee_sat=_sat(tx["fee"]) if "fee" in tx else None,
        hex=tx.get("hex"),
    )


def _transaction_info(tx: dict[str, Any]) -> TransactionInfo:
    block_hash = tx.get("blockhash")
    return TransactionInfo(
        transaction=_transaction(tx),
        block_hash=_hash(block_hash) if block_hash else None,
        confirmations=_int(tx.get("confirmations", 0)),
        block_time=tx.get("blocktime"),
    )


def _block(block: dict[str, Any]) -> Block:
    previous = block.get("previousblockhash")
    return Block(
        hash=_hash(block["hash"]),
        height=_int(block["height"]),
        previous_hash=_hash(previous) if previous else None,
        confirmations=_int(block["confirmations"]),
        time=_int(block["time"]),
        # btcd lists the decoded transactions under "rawtx".
        transactions=tuple(_transaction(tx) for tx in (block["tx"] if "tx" in block else block["rawtx"])),
    )


def _fee_estimate(result: dict[str, Any]) -> FeeEstimate | None:
    # Without enough data Core answers {"errors": ["Insufficient data or no feerate found"], "blocks": 0}.
    if "feerate" not in result:
        return None
    sat_per_kvb = _sat(result["feerate"])  # BTC per 1000 vB -> sat per 1000 vB, exact
    if sat_per_kvb <= 0:
        return None
    return FeeEstimate(sat_per_kvb=sat_per_kvb, sat_per_vb=-(-sat_per_kvb // 1000), blocks=_int(result["blocks"]))


def _mempool_accept_results(results: list[dict[str, Any]]) -> list[MempoolAcceptResult]:
    return [_mempool_accept_result(entry) for entry in results]


def _core_reject_reason(reason: str | None) -> str | None:
    """btcd words "already known" its own way (with the txid appended); Core's reason is what the domain reads."""
    if reason and reason.startswith(_BTCD_ALREADY_KNOWN):
        return "txn-already-in-mempool"
    if reason == "transaction already exists in blockchain":
        return "txn-already-known"
    return reason


def _mempool_accept_result(entry: dict[str, Any]) -> MempoolAcceptResult:
    fees = entry.get("fees") or {}
    return MempoolAcceptResult(
        txid=_hash(entry["txid"]),
        wtxid=entry.get("wtxid"),
        # When a package fails as a whole, entries carry "package-error" and no "allowed".
        allowed=bool(entry.get("allowed", False)),
        reject_reason=_core_reject_reason(entry.get("reject-reason") or entry.get("package-error")),
        vsize=entry.get("vsize"),
        fee_sat=_sat(fees["base"]) if "base" in fees else None,
    )
