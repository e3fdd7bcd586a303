"""The Bitcoin Core RPC surface of the chain simulator: parameter checking, method table, Core-shaped results.

Results carry BTC amounts as Decimal (``chain_json.dumps_rpc_json`` writes them as JSON numbers). The simulator
holds its lock around ``dispatch``.
"""
from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from embit import compact

from satflow.domain.bitcoin import InvalidAddress, btc_to_sat, sat_to_btc

from .chain_errors import (
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_INVALID_REQUEST,
    RPC_METHOD_NOT_FOUND,
    RPC_MISC_ERROR,
    RPC_TYPE_ERROR,
    RPC_WALLET_INSUFFICIENT_FUNDS,
    FaucetInsufficientFunds,
    RpcError,
    TxRejected,
)
from .chain_tx import decode_transaction, stripped_serialization, tx_json, tx_size, txid_hex, wtxid_hex

if TYPE_CHECKING:
    from .chain import ChainSimulator, SimBlock

DEFAULT_MAX_FEE_RATE_BTC_PER_KVB = Decimal("0.10")
REGTEST_DIFFICULTY = Decimal("4.656542373906925E-10")
_ESTIMATE_MODES = ("unset", "economical", "conservative")


class _Params:
    """Positional parameters of one call, checked the way Core reports mistakes."""

    def __init__(self, method: str, values: list[Any], maximum: int) -> None:
        if len(values) > maximum:
            raise RpcError(RPC_MISC_ERROR, f"{method}: too many parameters ({len(values)} > {maximum})")
        self._values = values

    def get(self, index: int, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        value = self._values[index] if index < len(self._values) else None
        if value is None:
            if default is ...:
                raise RpcError(RPC_MISC_ERROR, f"missing required parameter {name}")
            return default
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            raise RpcError(RPC_TYPE_ERROR, f"JSON value of {name} is not of the expected type")
        return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


class ChainRpc:
    def __init__(self, sim: ChainSimulator) -> None:
        self._sim = sim
        self._methods: dict[str, tuple[int, Callable[[_Params], Any]]] = {
            "getblockchaininfo": (0, self._getblockchaininfo),
            "getblockcount": (0, lambda p: sim.height),
            "getbestblockhash": (0, lambda p: sim.tip_hash),
            "getblockhash": (1, self._getblockhash),
            "getblock": (2, self._getblock),
            "getrawtransaction": (3, self._getrawtransaction),
            "getrawmempool": (2, self._getrawmempool),
            "gettxout": (3, self._gettxout),
            "estimatesmartfee": (2, self._estimatesmartfee),
            "testmempoolaccept": (2, self._testmempoolaccept),
            "sendrawtransaction": (3, self._sendrawtransaction),
            "generatetoaddress": (3, self._generatetoaddress),
            "sendtoaddress": (2, self._sendtoaddress),
        }

    def dispatch(self, body: Any) -> Any:
        if not isinstance(body, dict) or not isinstance(body.get("method"), str):
            raise RpcError(RPC_INVALID_REQUEST, "Invalid Request object")
        params = body.get("params")
        if params is None:
            params = []
        if not isinstance(params, list):
            raise RpcError(RPC_INVALID_REQUEST, "the simulator accepts positional params only")
        entry = self._methods.get(body["method"])
        if entry is None:
            raise RpcError(RPC_METHOD_NOT_FOUND, "Method not found")
        maximum, handler = entry
        return handler(_Params(body["method"], params, maximum))

    # --- chain -------------------------------------------------------------------------------------------------
    def _getblockchaininfo(self, params: _Params) -> dict[str, Any]:
        sim = self._sim
        tip = sim.block_at(sim.height)
        assert tip is not None
        return {
            "chain": "regtest",
            "blocks": sim.height,
            "headers": sim.height,
            "bestblockhash": tip.hash,
            "difficulty": REGTEST_DIFFICULTY,
            "time": tip.time,
            "mediantime": sim.median_time_past(tip),
            "verificationprogress": Decimal(1),
            "initialblockdownload": False,
            "chainwork": _chainwork(tip.height),
            "size_on_disk": 0,
            "pruned": False,
            "warnings": "",
        }

    def _getblockhash(self, params: _Params) -> str:
        height = params.get(0, "height", int)
        block = self._sim.block_at(height)
        if block is None:
            raise RpcError(RPC_INVALID_PARAMETER, "Block height out of range")
        return block.hash

    def _getblock(self, params: _Params) -> Any:
        block = self._block(params.get(0, "blockhash", str))
        verbosity = params.get(1, "verbosity", (int, bool), 1)
        verbosity = int(verbosity)
        if verbosity == 0:
            return _block_hex(block)
        result = self._block_json(block)
        if verbosity == 1:
            result["tx"] = list(block.txids)
        else:
            result["tx"] = [
                tx_json(tx, self._sim.network, fee_sat=block.fees.get(txid)) for tx, txid in zip(block.txs, block.txids)
            ]
        return result

    def _block(self, block_hash: str) -> SimBlock:
        if len(block_hash) != 64 or not _is_hex(block_hash):
            message = f"blockhash must be of length 64 (not {len(block_hash)}, for '{block_hash}')"
            raise RpcError(RPC_INVALID_PARAMETER, message)
        block = self._sim.block_by_hash(block_hash.lower())
        if block is None:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
        return block

    def _block_json(self, block: SimBlock) -> dict[str, Any]:
        sim = self._sim
        sizes = [len(tx.serialize()) for tx in block.txs]
        result: dict[str, Any] = {
            "hash": block.hash,
            "confirmations": sim.confirmations(block),
            "height": block.height,
            "version": 0x2000_0000,
            "versionHex": "20000000",
            "merkleroot": block.merkle_root[::-1].hex(),
            "time": block.time,
            "mediantime": sim.median_time_past(block),
            "nonce": 0,
            "bits": "207fffff",
            "difficulty": REGTEST_DIFFICULTY,
            "chainwork": _chainwork(block.height),
            "nTx": len(block.txs),
        }
        if block.prev_hash:
            result["previousblockhash"] = block.prev_hash
        following = sim.block_at(block.height + 1) if sim.is_active(block) else None
        if following is not None:
            result["nextblockhash"] = following.hash
        overhead = 80 + len(compact.to_bytes(len(block.txs)))  # header + transaction count
        result["strippedsize"] = overhead + sum(len(stripped_serialization(tx)) for tx in block.txs)
        result["size"] = overhead + sum(sizes)
        result["weight"] = overhead * 4 + sum(_weight(tx) for tx in block.txs)
        return result

    # --- transactions ------------------------------------------------------------------------------------------
    def _getrawtransaction(self, params: _Params) -> Any:
        sim = self._sim
        txid = params.get(0, "txid", str).lower()
        verbose = int(params.get(1, "verbosity", (int, bool), 0))
        block_hash = params.get(2, "blockhash", str, None)
        if block_hash is not None:
            block = self._block(block_hash)
            if txid not in block.txids:
                raise RpcError(
                    RPC_INVALID_ADDRESS_OR_KEY,
                    "No such transaction found in the provided block. Use gettransaction for wallet transactions.",
                )
            return self._confirmed_tx(block, txid, verbose, in_active_chain=sim.is_active(block))
        entry = sim.mempool_entry(txid)
        if entry is not None:
            return tx_json(entry.tx, sim.network) if verbose else entry.tx.serialize().hex()
        block = sim.confirmed_block_of(txid)
        if block is None:
            raise RpcError(
                RPC_INVALID_ADDRESS_OR_KEY,
                "No such mempool or blockchain transaction. Use gettransaction for wallet transactions.",
            )
        return self._confirmed_tx(block, txid, verbose, in_active_chain=None)

    def _confirmed_tx(self, block: SimBlock, txid: str, verbose: int, in_active_chain: bool | None) -> Any:
        tx = block.txs[block.txids.index(txid)]
        if not verbose:
            return tx.serialize().hex()
        result: dict[str, Any] = {}
        if in_active_chain is not None:
            result["in_active_chain"] = in_active_chain
        result.update(tx_json(tx, self._sim.network))
        result["blockhash"] = block.hash
        active = self._sim.is_active(block)
        result["confirmations"] = self._sim.confirmations(block) if active else 0
        result["time"] = block.time
        result["blocktime"] = block.time
        return result

    def _gettxout(self, params: _Params) -> Any:
        """Core's gettxout: an unspent output (null when spent or unknown); include_mempool (default true) counts
        mempool spends as spent and mempool outputs as unspent with 0 confirmations."""
        txid = params.get(0, "txid", str)
        n = params.get(1, "n", int)
        include_mempool = params.get(2, "include_mempool", bool, True)
        sim = self._sim
        with sim._lock:
            key = (txid, n)
            if include_mempool and key in sim._mempool_spends:
                return None
            coin = sim._utxos.get(key)
            confirmations = 0
            if coin is not None:
                confirmations = sim.height - (coin.height or 0) + 1
            elif include_mempool:
                coin = sim._spendable_coin(key)
            if coin is None:
                return None
            return {"bestblock": sim.tip_hash, "confirmations": confirmations, "value": sat_to_btc(coin.value_sat),
                    "scriptPubKey": {"hex": coin.script_pubkey.hex()}, "coinbase": coin.is_coinbase}

    def _getrawmempool(self, params: _Params) -> Any:
        """Core's getrawmempool: txids, or (verbose) a map txid -> entry with the fields satflow may read."""
        verbose = params.get(0, "verbose", bool, False)
        if params.get(1, "mempool_sequence", bool, False):
            raise RpcError(RPC_INVALID_PARAMETER, "the simulator does not track mempool_sequence")
        txids = self._sim.mempool_txids()
        if not verbose:
            return txids
        entries: dict[str, Any] = {}
        for txid in txids:
            entry = self._sim.mempool_entry(txid)
            assert entry is not None
            parents = sorted({inp.txid.hex() for inp in entry.tx.vin if inp.txid.hex() in txids})
            entries[txid] = {
                "vsize": entry.vsize,
                "weight": tx_size(entry.tx).weight,
                "fees": {"base": sat_to_btc(entry.fee_sat)} if entry.fee_sat is not None else {},
                "depends": parents,
                "bip125-replaceable": any(inp.sequence < 0xFFFF_FFFE for inp in entry.tx.vin),
                "wtxid": wtxid_hex(entry.tx),
            }
        return entries

    def _testmempoolaccept(self, params: _Params) -> list[dict[str, Any]]:
        raw_txs = params.get(0, "rawtxs", list)
        if not raw_txs or len(raw_txs) > 25:
            raise RpcError(RPC_INVALID_PARAMETER, "Array must contain between 1 and 25 transactions.")
        max_rate = _max_fee_rate(params.get(1, "maxfeerate", (Decimal, int, str), DEFAULT_MAX_FEE_RATE_BTC_PER_KVB))
        return [self._test_one(raw, max_rate) for raw in raw_txs]

    def _test_one(self, raw_hex: Any, max_rate: int | None) -> dict[str, Any]:
        tx = decode_transaction(raw_hex)
        result: dict[str, Any] = {"txid": txid_hex(tx), "wtxid": wtxid_hex(tx)}
        try:
            check = self._sim.test_accept(raw_hex, max_rate)
        except TxRejected as exc:
            result["allowed"] = False
            result["reject-reason"] = exc.reason
            return result
        result["allowed"] = True
        result["vsize"] = check.vsize
        if check.fee_sat is not None:
            result["fees"] = {
                "base": sat_to_btc(check.fee_sat),
                "effective-feerate": sat_to_btc(check.fee_sat * 1000 // check.vsize),
                "effective-includes": [result["wtxid"]],
            }
        return result

    def _sendrawtransaction(self, params: _Params) -> str:
        raw_hex = params.get(0, "hexstring", str)
        max_rate = _max_fee_rate(params.get(1, "maxfeerate", (Decimal, int, str), DEFAULT_MAX_FEE_RATE_BTC_PER_KVB))
        return self._sim.submit_raw_transaction(raw_hex, max_rate)

    def _estimatesmartfee(self, params: _Params) -> dict[str, Any]:
        conf_target = params.get(0, "conf_target", int)
        if not 1 <= conf_target <= 1008:
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid conf_target, must be between 1 and 1008")
        mode = params.get(1, "estimate_mode", str, "conservative")
        if mode.lower() not in _ESTIMATE_MODES:
            raise RpcError(
                RPC_INVALID_PARAMETER,
                'Invalid estimate_mode parameter, must be one of: "unset", "economical", "conservative"',
            )
        estimate = self._sim.fee_estimate(conf_target)
        if estimate is None:
            return {"errors": ["Insufficient data or no feerate found"], "blocks": 0}
        sat_per_kvb, blocks = estimate
        return {"feerate": sat_to_btc(sat_per_kvb), "blocks": blocks}

    # --- regtest conveniences (the simulator's faucet stands in for bitcoind's wallet) -------------------------
    def _generatetoaddress(self, params: _Params) -> list[str]:
        count = params.get(0, "nblocks", int)
        address = params.get(1, "address", str)
        try:
            return self._sim.mine(count, address)
        except InvalidAddress as exc:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Error: Invalid address") from exc
        except ValueError as exc:
            raise RpcError(RPC_INVALID_PARAMETER, str(exc)) from exc

    def _sendtoaddress(self, params: _Params) -> str:
        address = params.get(0, "address", str)
        amount_sat = _btc_param_to_sat(params.get(1, "amount", (Decimal, int, str)))
        try:
            return self._sim.send_to_address(address, amount_sat)
        except InvalidAddress as exc:
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Invalid address") from exc
        except FaucetInsufficientFunds as exc:
            raise RpcError(RPC_WALLET_INSUFFICIENT_FUNDS, "Insufficient funds") from exc
        except ValueError as exc:
            raise RpcError(RPC_TYPE_ERROR, str(exc)) from exc


# --- helpers -----------------------------------------------------------------------------------------------------
def _btc_param_to_sat(value: Any) -> int:
    try:
        return btc_to_sat(Decimal(value) if isinstance(value, int) else value)
    except Exception as exc:
        raise RpcError(RPC_TYPE_ERROR, "Invalid amount") from exc


def _max_fee_rate(value: Any) -> int | None:
    """maxfeerate in BTC/kvB as sat/kvB; 0 means no limit."""
    sat_per_kvb = _btc_param_to_sat(value)
    return sat_per_kvb or None


def _chainwork(height: int) -> str:
    return f"{(height + 1) * 2:064x}"  # regtest: work 2 per block


def _weight(tx: Any) -> int:
    return tx_size(tx).weight


def _block_hex(block: SimBlock) -> str:
    return (block.header + compact.to_bytes(len(block.txs)) + b"".join(tx.serialize() for tx in block.txs)).hex()


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True
