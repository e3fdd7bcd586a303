"""A deterministic regtest chain simulator that speaks the Bitcoin Core RPC subset satflow uses.

Development tool (not part of the Lambda layer). It keeps a real chain of real transactions: blocks have 80-byte
headers whose double-SHA256 is the block hash, transactions are built and signed with embit so raw hex, txids and
wtxids round-trip, and a UTXO set plus a mempool decide what a broadcast may spend.

Use it in tests as an httpx transport::

    sim = ChainSimulator(seed=1)
    client = BitcoinRpcClient("http://sim:18443/", "user", "pass", transport=sim.transport())
    txid = sim.send_to_address(deposit_address, 50_000)     # an external wallet pays us
    sim.mine(1)                                              # now confirmed
    sim.reorg(depth=1, drop_txids=[txid])                    # ... and gone again

or serve ``handle_rpc(body) -> dict`` over HTTP from the local runtime (``rpc_http_status`` gives the status code,
``chain_json.dumps_rpc_json`` the body).

Simplifications (documented so nobody relies on them): no proof of work (nonce 0, regtest bits); replace-by-fee
only when constructed with ``rbf=True`` (BIP125 rules 1-5 and Core's higher-feerate rule, opt-in signalling only;
off by default, where any mempool conflict is rejected with -26 txn-mempool-conflict); signatures are verified for p2wpkh and p2tr key-path
spends only; fee estimates are scripted (``set_fee_estimate``) and the same for every estimate mode;
testmempoolaccept checks each transaction against the current state, not as a package; a transaction dropped in a
reorg is forgotten (getrawtransaction answers -5).
"""
from __future__ import annotations

import base64
import hashlib
import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from embit import ec, hashes
from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from satflow.domain.bitcoin import (
    AddressKind,
    Network,
    dust_threshold_sat,
    estimate_tx_vbytes,
    script_pubkey_to_address,
    validate_address,
)
from satflow.domain.money import SAT_PER_BTC

from .chain_json import dumps_rpc_json, loads_rpc_json
from .chain_errors import (
    RPC_IN_WARMUP,
    RPC_INTERNAL_ERROR,
    RPC_PARSE_ERROR,
    RPC_VERIFY_ALREADY_IN_CHAIN,
    RPC_VERIFY_ERROR,
    RPC_VERIFY_REJECTED,
    FaucetInsufficientFunds,
    RpcError,
    TxRejected,
    rpc_http_status,
)
from .chain_rpc import ChainRpc
from .chain_tx import (
    add_witness_commitment,
    block_header,
    build_coinbase,
    decode_transaction,
    double_sha256,
    merkle_root,
    sign_p2wpkh_inputs,
    tx_size,
    txid_hex,
    verify_input_signature,
)

COINBASE_MATURITY = 100
REGTEST_HALVING_INTERVAL = 150
INITIAL_SUBSIDY_SAT = 50 * SAT_PER_BTC
REGTEST_BITS = 0x207FFFFF
BLOCK_VERSION = 0x2000_0000
BLOCK_INTERVAL_S = 600
DEFAULT_START_TIME = 1_700_000_000
MIN_RELAY_FEE_SAT_PER_KVB = 1_000
DEFAULT_MAX_FEE_RATE_SAT_PER_KVB = 10_000_000  # Core's default maxfeerate 0.10 BTC/kvB
FAUCET_FEE_RATE_SAT_PER_VB = 2
DEFAULT_INITIAL_BLOCKS = 101  # like `bitcoin-cli -generate 101`: the first coinbases are spendable
TRANSPORT_FAILURES = ("timeout", "connect_error", "http_503", "warmup")
# Like Bitcoin's, the genesis coinbase is unspendable: here it pays to an OP_RETURN.
_GENESIS_SCRIPT = b"\x6a\x0fsatflow genesis"


@dataclass(frozen=True)
class Coin:
    value_sat: int
    script_pubkey: bytes
    height: int | None  # None while the creating transaction is in the mempool
    is_coinbase: bool


@dataclass
class SimBlock:
    hash: str
    height: int
    prev_hash: str | None
    time: int
    header: bytes
    merkle_root: bytes
    txs: list[Transaction]
    txids: list[str]
    fees: dict[str, int | None]
    undo: list[tuple[tuple[str, int], Coin]] = field(default_factory=list)


@dataclass
class MempoolEntry:
    tx: Transaction
    txid: str
    fee_sat: int | None  # None when an input is unknown (allow_unknown_inputs)
    vsize: int
    spends: list[tuple[str, int]]


@dataclass(frozen=True)
class AcceptCheck:
    txid: str
    fee_sat: int | None
    vsize: int
    spends: list[tuple[str, int]]
    replaces: tuple[str, ...] = ()  # mempool txids (conflicts and their descendants) a replacement evicts


BIP125_SEQUENCE_LIMIT = 0xFFFF_FFFE  # an input with nSequence below this signals replaceability
MAX_REPLACEMENT_EVICTIONS = 100


class ChainSimulator:
    """A thread-safe, seeded regtest chain with a mempool, a faucet wallet, scripted fee estimates and reorgs."""

    network = Network.REGTEST

    def __init__(
        self,
        seed: int = 0,
        *,
        initial_blocks: int = DEFAULT_INITIAL_BLOCKS,
        fee_estimates: Mapping[int, int | Decimal] | None = None,
        allow_unknown_inputs: bool = False,
        rpc_user: str | None = None,
        rpc_password: str | None = None,
        start_time: int = DEFAULT_START_TIME,
        rbf: bool = False,
    ) -> None:
        self._lock = threading.RLock()
        self.rbf = rbf  # BIP125 replacement of signalling mempool transactions (Bitcoin Core's behaviour)
        self._seed = seed
        self._random = random.Random(seed)
        self._start_time = start_time
        self.allow_unknown_inputs = allow_unknown_inputs
        if (rpc_user is None) != (rpc_password is None):
            raise ValueError("give both rpc_user and rpc_password, or neither (no auth check)")
        self._rpc_credentials = (rpc_user, rpc_password) if rpc_user is not None and rpc_password is not None else None
        self._injected_failures: list[str] = []
        self._branch = 0  # bumped by every reorg so replacement blocks differ from the stale ones

        secret = hashlib.sha256(f"satflow-chain-simulator-faucet/{seed}".encode()).digest()
        self._faucet_key = ec.PrivateKey(secret)
        self._faucet_script = b"\x00\x14" + hashes.hash160(self._faucet_key.get_public_key().sec())

        self._active: list[SimBlock] = []
        self._blocks_by_hash: dict[str, SimBlock] = {}  # active and stale blocks (Core keeps stale ones too)
        self._tx_index: dict[str, str] = {}  # txid -> hash of the active block containing it
        self._utxos: dict[tuple[str, int], Coin] = {}
        self._mempool: dict[str, MempoolEntry] = {}
        self._mempool_spends: dict[tuple[str, int], str] = {}
        self._fee_estimates: dict[int, int] = {}
        for target, rate in (fee_estimates or {}).items():
            self.set_fee_estimate(target, rate)

        self._rpc = ChainRpc(self)
        self._connect_new_block(_GENESIS_SCRIPT, include_mempool=False)
        self.mine(initial_blocks)

    # --- chain queries ---------------------------------------------------------------------------------------
    @property
    def height(self) -> int:
        with self._lock:
            return len(self._active) - 1

    @property
    def tip_hash(self) -> str:
        with self._lock:
            return self._active[-1].hash

    @property
    def faucet_address(self) -> str:
        address = script_pubkey_to_address(self._faucet_script.hex(), self.network)
        assert address is not None
        return address

    def block_at(self, height: int) -> SimBlock | None:
        with self._lock:
            return self._active[height] if 0 <= height < len(self._active) else None

    def block_by_hash(self, block_hash: str) -> SimBlock | None:
        with self._lock:
            return self._blocks_by_hash.get(block_hash)

    def is_active(self, block: SimBlock) -> bool:
        with self._lock:
            return block.height < len(self._active) and self._active[block.height] is block

    def confirmations(self, block: SimBlock) -> int:
        """Core's convention: tip = 1, a block no longer in the active chain = -1."""
        with self._lock:
            return self.height - block.height + 1 if self.is_active(block) else -1

    def median_time_past(self, block: SimBlock) -> int:
        with self._lock:
            times = []
            cursor: SimBlock | None = block
            while cursor is not None and len(times) < 11:
                times.append(cursor.time)
                cursor = self._blocks_by_hash.get(cursor.prev_hash) if cursor.prev_hash else None
            return sorted(times)[len(times) // 2]

    def confirmed_block_of(self, txid: str) -> SimBlock | None:
        with self._lock:
            block_hash = self._tx_index.get(txid)
            return self._blocks_by_hash[block_hash] if block_hash else None

    def mempool_entry(self, txid: str) -> MempoolEntry | None:
        with self._lock:
            return self._mempool.get(txid)

    def mempool_txids(self) -> list[str]:
        with self._lock:
            return list(self._mempool)

    def utxo(self, txid: str, vout: int) -> Coin | None:
        """A confirmed unspent output (not considering mempool spends)."""
        with self._lock:
            return self._utxos.get((txid, vout))

    # --- mining ------------------------------------------------------------------------------------------------
    def mine(self, n: int = 1, to_address: str | None = None, *, include_mempool: bool = True) -> list[str]:
        """Mine ``n`` blocks (the first one takes the whole mempool unless ``include_mempool=False``)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError("n must be a non-negative integer")
        with self._lock:
            script = self._script_for(to_address) if to_address else self._faucet_script
            return [self._connect_new_block(script, include_mempool=include_mempool).hash for _ in range(n)]

    def reorg(
        self,
        depth: int,
        replacement_blocks: int | None = None,
        *,
        drop_txids: Iterable[str] = (),
        to_address: str | None = None,
    ) -> list[str]:
        """Disconnect the top ``depth`` blocks and mine ``replacement_blocks`` (default ``depth + 1``) new ones.

        Transactions of the disconnected blocks go back to the mempool (and so into the first replacement block)
        unless listed in ``drop_txids``: those, and everything spending them, disappear as if double-spent.
        Returns the hashes of the replacement blocks.
        """
        replacement = depth + 1 if replacement_blocks is None else replacement_blocks
        with self._lock:
            if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= self.height:
                raise ValueError(f"depth must be in [1, {self.height}]")
            if replacement < 0:
                raise ValueError("replacement_blocks must be >= 0")
            dropped = set(drop_txids)
            droppable = {txid for block in self._active[-depth:] for txid in block.txids[1:]} | set(self._mempool)
            if dropped - droppable:  # checked before touching the chain
                raise ValueError(
                    f"cannot drop {sorted(dropped - droppable)}: not in the disconnected blocks or the mempool"
                )
            disconnected: list[Transaction] = []
            for _ in range(depth):
                disconnected[:0] = self._disconnect_tip()
            candidates = disconnected + [entry.tx for entry in self._mempool.values()]
            self._branch += 1
            self._mempool.clear()
            self._mempool_spends.clear()
            # Like Core, a coinbase spend is judged against the new chain, not the fork point: one immature only at
            # the fork point waits and joins the first replacement block where it is mature.
            waiting = self._readmit(candidates, set(dropped))
            script = self._script_for(to_address) if to_address else self._faucet_script
            hashes = []
            for _ in range(replacement):
                hashes.append(self._connect_new_block(script, include_mempool=True).hash)
                waiting = self._readmit(waiting, set())
            return hashes  # what is still immature at the new tip is gone (Core's removeForReorg)

    # --- the external faucet wallet ----------------------------------------------------------------------------
    def send_to_address(self, address: str, amount_sat: int) -> str:
        """The faucet (an external wallet) pays ``amount_sat`` to ``address``; returns the txid (in the mempool)."""
        if isinstance(amount_sat, bool) or not isinstance(amount_sat, int) or amount_sat <= 0:
            raise ValueError("amount_sat must be a positive integer")
        with self._lock:
            parsed = validate_address(address, self.network)
            if amount_sat < dust_threshold_sat(parsed.script_pubkey_hex):
                raise ValueError("amount is below the dust threshold for this address")
            tx = self._build_faucet_payment(bytes.fromhex(parsed.script_pubkey_hex), parsed.kind, amount_sat)
            return self._accept(tx, max_fee_rate_sat_per_kvb=DEFAULT_MAX_FEE_RATE_SAT_PER_KVB).txid

    # --- broadcast ---------------------------------------------------------------------------------------------
    def submit_raw_transaction(
        self, raw_hex: str, max_fee_rate_sat_per_kvb: int | None = DEFAULT_MAX_FEE_RATE_SAT_PER_KVB
    ) -> str:
        """sendrawtransaction semantics: returns the txid or raises RpcError/TxRejected with Core's codes."""
        with self._lock:
            tx = decode_transaction(raw_hex)
            txid = txid_hex(tx)
            if any(key in self._utxos for key in ((txid, n) for n in range(len(tx.vout)))):
                raise RpcError(RPC_VERIFY_ALREADY_IN_CHAIN, "Transaction outputs already in utxo set")
            if txid in self._mempool:
                return txid  # Core re-announces and reports success
            return self._accept(tx, max_fee_rate_sat_per_kvb=max_fee_rate_sat_per_kvb).txid

    def test_accept(
        self, raw_hex: str, max_fee_rate_sat_per_kvb: int | None = DEFAULT_MAX_FEE_RATE_SAT_PER_KVB
    ) -> AcceptCheck:
        """testmempoolaccept semantics for one transaction: the check without adding it (raises TxRejected)."""
        with self._lock:
            tx = decode_transaction(raw_hex)
            txid = txid_hex(tx)
            if txid in self._mempool:
                raise TxRejected(RPC_VERIFY_ALREADY_IN_CHAIN, "txn-already-in-mempool")
            if txid in self._tx_index:
                raise TxRejected(RPC_VERIFY_ALREADY_IN_CHAIN, "txn-already-known")
            return self._check(tx, max_fee_rate_sat_per_kvb)

    # --- fee estimates -----------------------------------------------------------------------------------------
    def set_fee_estimate(self, conf_target: int, sat_per_vb: int | Decimal | None) -> None:
        """Script estimatesmartfee for ``conf_target`` (None removes it). Fractional sat/vB must be whole sat/kvB."""
        if isinstance(conf_target, bool) or not isinstance(conf_target, int) or not 1 <= conf_target <= 1008:
            raise ValueError("conf_target must be in [1, 1008]")
        with self._lock:
            if sat_per_vb is None:
                self._fee_estimates.pop(conf_target, None)
                return
            if isinstance(sat_per_vb, float):
                raise TypeError("fee rates are int or Decimal, never float")
            sat_per_kvb = Decimal(sat_per_vb) * 1000
            if sat_per_kvb != sat_per_kvb.to_integral_value() or sat_per_kvb <= 0:
                raise ValueError("sat_per_vb must be positive with at most 3 decimals")
            self._fee_estimates[conf_target] = int(sat_per_kvb)

    def fee_estimate(self, conf_target: int) -> tuple[int, int] | None:
        """(sat per kvB, target answered for): Core clamps the target to [2, longest known] and may answer for a
        longer one when it has no estimate for the requested horizon."""
        with self._lock:
            if not self._fee_estimates:
                return None
            target = min(max(conf_target, 2), max(self._fee_estimates))
            answered = min(t for t in self._fee_estimates if t >= target)
            return self._fee_estimates[answered], answered

    # --- RPC surface -------------------------------------------------------------------------------------------
    def handle_rpc(self, body: Any) -> dict[str, Any]:
        """Answer one JSON-RPC request body (already parsed, floats as Decimal) with a response dict."""
        request_id = body.get("id") if isinstance(body, dict) else None
        try:
            with self._lock:
                result = self._rpc.dispatch(body)
        except RpcError as exc:
            return {"result": None, "error": {"code": exc.code, "message": exc.message}, "id": request_id}
        except Exception as exc:  # a simulator bug: answer like Core does for an internal error, visibly
            message = f"simulator internal error: {type(exc).__name__}: {exc}"
            return {"result": None, "error": {"code": RPC_INTERNAL_ERROR, "message": message}, "id": request_id}
        return {"result": result, "error": None, "id": request_id}

    def transport(self) -> httpx.MockTransport:
        """An in-process httpx transport: no sockets."""
        return httpx.MockTransport(self._handle_http)

    def inject_failures(self, kind: str, count: int = 1) -> None:
        """Make the next ``count`` HTTP requests fail: timeout | connect_error | http_503 | warmup (-28)."""
        if kind not in TRANSPORT_FAILURES:
            raise ValueError(f"kind must be one of {TRANSPORT_FAILURES}")
        with self._lock:
            self._injected_failures.extend([kind] * count)

    def _handle_http(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            failure = self._injected_failures.pop(0) if self._injected_failures else None
        if failure == "timeout":
            raise httpx.ReadTimeout("simulated timeout", request=request)
        if failure == "connect_error":
            raise httpx.ConnectError("simulated connection refused", request=request)
        if failure == "http_503":
            return httpx.Response(503, text="Work queue depth exceeded")
        if self._rpc_credentials is not None and request.headers.get("authorization") != _basic_auth_header(
            *self._rpc_credentials
        ):
            return httpx.Response(401, headers={"www-authenticate": 'Basic realm="jsonrpc"'})
        try:
            body = loads_rpc_json(request.content)
        except ValueError:
            response = {"result": None, "error": {"code": RPC_PARSE_ERROR, "message": "Parse error"}, "id": None}
        else:
            if failure == "warmup":
                response = {
                    "result": None,
                    "error": {"code": RPC_IN_WARMUP, "message": "Loading block index…"},
                    "id": body.get("id") if isinstance(body, dict) else None,
                }
            else:
                response = self.handle_rpc(body)
        return httpx.Response(
            rpc_http_status(response),
            content=dumps_rpc_json(response).encode(),
            headers={"content-type": "application/json"},
        )

    # --- internals: blocks -------------------------------------------------------------------------------------
    def _connect_new_block(self, coinbase_script: bytes, *, include_mempool: bool) -> SimBlock:
        height = len(self._active)
        prev = self._active[-1] if self._active else None
        entries = list(self._mempool.values()) if include_mempool else []
        fees = sum(entry.fee_sat or 0 for entry in entries)
        tag = f"satflow-sim/{self._seed}/{self._branch}".encode()
        coinbase = build_coinbase(height, _subsidy(height) + fees, coinbase_script, tag)
        add_witness_commitment(coinbase, [entry.tx for entry in entries])
        txs = [coinbase] + [entry.tx for entry in entries]
        txids = [txid_hex(tx) for tx in txs]
        merkle = merkle_root([bytes.fromhex(txid)[::-1] for txid in txids])
        time = self._start_time + height * BLOCK_INTERVAL_S + self._branch
        header = block_header(BLOCK_VERSION, prev.hash if prev else None, merkle, time, REGTEST_BITS, 0)
        block = SimBlock(
            hash=double_sha256(header)[::-1].hex(),
            height=height,
            prev_hash=prev.hash if prev else None,
            time=time,
            header=header,
            merkle_root=merkle,
            txs=txs,
            txids=txids,
            fees={entry.txid: entry.fee_sat for entry in entries},
        )
        self._apply_block(block)
        for entry in entries:
            del self._mempool[entry.txid]
            for key in entry.spends:
                self._mempool_spends.pop(key, None)
        return block

    def _apply_block(self, block: SimBlock) -> None:
        for position, (tx, txid) in enumerate(zip(block.txs, block.txids)):
            is_coinbase = position == 0
            if not is_coinbase:
                for inp in tx.vin:
                    key = (inp.txid.hex(), inp.vout)
                    coin = self._utxos.pop(key, None)
                    if coin is not None:  # None only for unknown inputs admitted on request
                        block.undo.append((key, coin))
            for n, out in enumerate(tx.vout):
                if out.script_pubkey.data[:1] != b"\x6a":  # OP_RETURN outputs never enter the UTXO set
                    self._utxos[(txid, n)] = Coin(out.value, out.script_pubkey.data, block.height, is_coinbase)
            self._tx_index[txid] = block.hash
        self._active.append(block)
        self._blocks_by_hash[block.hash] = block

    def _disconnect_tip(self) -> list[Transaction]:
        """Undo the tip block; returns its non-coinbase transactions in block order."""
        block = self._active.pop()
        for tx, txid in zip(reversed(block.txs), reversed(block.txids)):
            for n in range(len(tx.vout)):
                self._utxos.pop((txid, n), None)
            self._tx_index.pop(txid, None)
        for key, coin in block.undo:
            self._utxos[key] = coin
        block.undo = []
        return block.txs[1:]

    def _readmit(self, candidates: list[Transaction], dropped: set[str]) -> list[Transaction]:
        """Re-admit ``candidates`` in order into the mempool; drop listed txids, their descendants and whatever is
        now invalid. Returns those that spend a coinbase not mature yet at this height (and their descendants)."""
        gone = set(dropped)
        waiting: list[Transaction] = []
        waiting_ids: set[str] = set()
        for tx in candidates:
            txid = txid_hex(tx)
            parents = {inp.txid.hex() for inp in tx.vin}
            if txid in gone or parents & gone:
                gone.add(txid)
                continue
            if parents & waiting_ids:
                waiting.append(tx)
                waiting_ids.add(txid)
                continue
            try:
                self._accept(tx, max_fee_rate_sat_per_kvb=None)
            except TxRejected as rejected:
                if rejected.reason == "bad-txns-premature-spend-of-coinbase":
                    waiting.append(tx)
                    waiting_ids.add(txid)
                else:
                    gone.add(txid)  # e.g. it spent the coinbase of a disconnected block
        return waiting

    def _script_for(self, address: str) -> bytes:
        return bytes.fromhex(validate_address(address, self.network).script_pubkey_hex)

    # --- internals: mempool acceptance -------------------------------------------------------------------------
    def _accept(self, tx: Transaction, *, max_fee_rate_sat_per_kvb: int | None) -> AcceptCheck:
        check = self._check(tx, max_fee_rate_sat_per_kvb)
        for txid in check.replaces:
            evicted = self._mempool.pop(txid)
            for key in evicted.spends:
                self._mempool_spends.pop(key, None)
        self._mempool[check.txid] = MempoolEntry(tx, check.txid, check.fee_sat, check.vsize, check.spends)
        for key in check.spends:
            self._mempool_spends[key] = check.txid
        return check

    def _check(self, tx: Transaction, max_fee_rate_sat_per_kvb: int | None) -> AcceptCheck:
        txid = txid_hex(tx)
        _check_structure(tx)
        size = tx_size(tx)
        spends = [(inp.txid.hex(), inp.vout) for inp in tx.vin]
        for out in tx.vout:
            if out.value < dust_threshold_sat(out.script_pubkey.data.hex()):
                raise TxRejected(RPC_VERIFY_REJECTED, "dust")
        conflicts = {self._mempool_spends[key] for key in spends if key in self._mempool_spends}
        if conflicts and not self.rbf:
            raise TxRejected(RPC_VERIFY_REJECTED, "txn-mempool-conflict")
        coins = [self._spendable_coin(key) for key in spends]
        if any(coin is None for coin in coins) and not self.allow_unknown_inputs:
            raise TxRejected(RPC_VERIFY_ERROR, "bad-txns-inputs-missingorspent", test_reason="missing-inputs")
        spend_height = self.height + 1
        for coin in coins:
            if coin is not None and coin.is_coinbase and coin.height is not None:
                depth = spend_height - coin.height
                if depth < COINBASE_MATURITY:
                    raise TxRejected(
                        RPC_VERIFY_REJECTED,
                        "bad-txns-premature-spend-of-coinbase",
                        f"tried to spend coinbase at depth {depth}",
                    )
        fee = self._fee(tx, coins, size.vsize, max_fee_rate_sat_per_kvb)
        scripts = [coin.script_pubkey if coin else None for coin in coins]
        values = [coin.value_sat if coin else None for coin in coins]
        for index in range(len(tx.vin)):
            failure = verify_input_signature(tx, index, scripts, values)
            if failure:
                raise TxRejected(RPC_VERIFY_REJECTED, failure)
        replaces = self._replacement(tx, txid, conflicts, fee, size.vsize) if conflicts else ()
        return AcceptCheck(txid=txid, fee_sat=fee, vsize=size.vsize, spends=spends, replaces=replaces)

    def _replacement(
        self, tx: Transaction, txid: str, conflicts: set[str], fee: int | None, vsize: int
    ) -> tuple[str, ...]:
        """BIP125: every directly conflicting transaction signals; the replacement pays a higher fee rate than each
        of them, at least the fees of everything it evicts, plus its own relay at the incremental rate; it evicts at
        most 100 transactions and spends none of them. Returns the evicted txids."""
        for conflict in sorted(conflicts):
            if not any(inp.sequence < BIP125_SEQUENCE_LIMIT for inp in self._mempool[conflict].tx.vin):
                raise TxRejected(RPC_VERIFY_REJECTED, "txn-mempool-conflict")
        evicted = self._with_descendants(conflicts)
        if len(evicted) > MAX_REPLACEMENT_EVICTIONS:
            raise TxRejected(RPC_VERIFY_REJECTED, "too many potential replacements")
        if any(inp.txid.hex() in evicted for inp in tx.vin):
            raise TxRejected(RPC_VERIFY_REJECTED, "bad-txns-spends-conflicting-tx")
        if fee is None:
            raise TxRejected(RPC_VERIFY_REJECTED, "insufficient fee", f"rejecting replacement {txid}, unknown fee")
        for conflict in sorted(conflicts):
            old = self._mempool[conflict]
            if old.fee_sat is None or fee * old.vsize <= old.fee_sat * vsize:
                raise TxRejected(
                    RPC_VERIFY_REJECTED,
                    "insufficient fee",
                    f"rejecting replacement {txid}; new feerate {fee}/{vsize} <= old feerate {old.fee_sat}/{old.vsize}",
                )
        old_fees = sum(self._mempool[e].fee_sat or 0 for e in evicted)
        if fee < old_fees:
            raise TxRejected(
                RPC_VERIFY_REJECTED,
                "insufficient fee",
                f"rejecting replacement {txid}, less fees than conflicting txs; {fee} < {old_fees}",
            )
        relay = -(-vsize * MIN_RELAY_FEE_SAT_PER_KVB // 1000)  # incremental relay fee = min relay fee
        if fee - old_fees < relay:
            raise TxRejected(
                RPC_VERIFY_REJECTED,
                "insufficient fee",
                f"rejecting replacement {txid}, not enough additional fees to relay; {fee - old_fees} < {relay}",
            )
        return tuple(sorted(evicted))

    def _with_descendants(self, txids: set[str]) -> set[str]:
        found = set(txids)
        changed = True
        while changed:
            changed = False
            for entry in self._mempool.values():
                if entry.txid not in found and any(key[0] in found for key in entry.spends):
                    found.add(entry.txid)
                    changed = True
        return found

    def _fee(self, tx: Transaction, coins: list[Coin | None], vsize: int, max_rate: int | None) -> int | None:
        if any(coin is None for coin in coins):
            return None
        value_in = sum(coin.value_sat for coin in coins if coin is not None)
        value_out = sum(out.value for out in tx.vout)
        if value_in < value_out:
            raise TxRejected(
                RPC_VERIFY_REJECTED, "bad-txns-in-belowout", f"value in ({value_in}) < value out ({value_out})"
            )
        fee = value_in - value_out
        min_fee = -(-vsize * MIN_RELAY_FEE_SAT_PER_KVB // 1000)
        if fee < min_fee:
            raise TxRejected(RPC_VERIFY_REJECTED, "min relay fee not met", f"{fee} < {min_fee}")
        if max_rate is not None and fee * 1000 > max_rate * vsize:
            raise TxRejected(
                RPC_VERIFY_ERROR,
                "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)",
                test_reason="max-fee-exceeded",
            )
        return fee

    def _spendable_coin(self, key: tuple[str, int]) -> Coin | None:
        coin = self._utxos.get(key)
        if coin is not None:
            return coin
        parent = self._mempool.get(key[0])
        if parent is not None and key[1] < len(parent.tx.vout):
            out = parent.tx.vout[key[1]]
            return Coin(out.value, out.script_pubkey.data, None, False)
        return None

    # --- internals: the faucet ---------------------------------------------------------------------------------
    def _faucet_coins(self) -> list[tuple[tuple[str, int], Coin]]:
        spend_height = self.height + 1
        confirmed = [
            (key, coin)
            for key, coin in self._utxos.items()
            if coin.script_pubkey == self._faucet_script
            and key not in self._mempool_spends
            and not (coin.is_coinbase and spend_height - (coin.height or 0) < COINBASE_MATURITY)
        ]
        unconfirmed = [
            ((entry.txid, n), Coin(out.value, out.script_pubkey.data, None, False))
            for entry in self._mempool.values()
            for n, out in enumerate(entry.tx.vout)
            if out.script_pubkey.data == self._faucet_script and (entry.txid, n) not in self._mempool_spends
        ]
        return confirmed + unconfirmed

    def _build_faucet_payment(self, script: bytes, kind: AddressKind, amount_sat: int) -> Transaction:
        selected: list[tuple[tuple[str, int], Coin]] = []
        total = 0
        fee = 0
        for key, coin in self._faucet_coins():
            selected.append((key, coin))
            total += coin.value_sat
            fee = FAUCET_FEE_RATE_SAT_PER_VB * estimate_tx_vbytes(
                [AddressKind.P2WPKH] * len(selected), [kind, AddressKind.P2WPKH]
            )
            if total >= amount_sat + fee:
                break
        else:
            raise FaucetInsufficientFunds(
                f"faucet holds {total} sat spendable, needs {amount_sat + fee}; mine more blocks to it"
            )
        outputs = [TransactionOutput(amount_sat, Script(script))]
        change = total - amount_sat - fee
        if change >= dust_threshold_sat(self._faucet_script.hex()):
            outputs.append(TransactionOutput(change, Script(self._faucet_script)))
        self._random.shuffle(outputs)  # like real wallets: the payment is not always output 0
        inputs = [TransactionInput(bytes.fromhex(txid), vout, sequence=0xFFFF_FFFD) for (txid, vout), _ in selected]
        tx = Transaction(version=2, vin=inputs, vout=outputs, locktime=0)
        sign_p2wpkh_inputs(tx, self._faucet_key, [coin.value_sat for _, coin in selected])
        return tx


# --- helpers -----------------------------------------------------------------------------------------------------
def _check_structure(tx: Transaction) -> None:
    if not tx.vout:
        raise TxRejected(RPC_VERIFY_REJECTED, "bad-txns-vout-empty")
    spends = [(inp.txid, inp.vout) for inp in tx.vin]
    if len(set(spends)) != len(spends):
        raise TxRejected(RPC_VERIFY_REJECTED, "bad-txns-inputs-duplicate")
    if any(inp.txid == b"\x00" * 32 and inp.vout == 0xFFFF_FFFF for inp in tx.vin):
        raise TxRejected(RPC_VERIFY_REJECTED, "coinbase")


def _subsidy(height: int) -> int:
    halvings = height // REGTEST_HALVING_INTERVAL
    return INITIAL_SUBSIDY_SAT >> halvings if halvings < 64 else 0


def _basic_auth_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
