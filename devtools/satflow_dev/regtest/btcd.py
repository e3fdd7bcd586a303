"""btcd on regtest, and a miner wallet that owns the coinbases.

btcd has no wallet and no ``generatetoaddress``: ``generate`` pays every block to ``--miningaddr``. The miner
address belongs to :class:`Miner` (a deterministic, regtest-only key), which tracks its coinbases and change
and signs p2wpkh spends with embit, so the harness can fund the lnd nodes and send to any address.
"""
from __future__ import annotations

import hashlib
import secrets
import ssl
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from .processes import LOOPBACK, ManagedProcess, NotReady, free_port
from .toolchain import node_binary

COINBASE_MATURITY = 100
MINER_FEE_SAT_PER_VB = 2


class BtcdNode:
    """One btcd process on regtest with txindex, RPC over TLS on a free loopback port."""

    def __init__(self, base_dir: Path, mining_address: str) -> None:
        self.dir = base_dir / "btcd"
        self.rpc_port = free_port()
        self.rpc_user = "satflow"
        self.rpc_password = secrets.token_hex(16)
        self.cert_path = self.dir / "rpc.cert"
        self.mining_address = mining_address
        self.process = ManagedProcess(
            "btcd",
            [
                str(node_binary("btcd")), "--regtest", "--txindex", "--nolisten",
                f"--configfile={self.dir / 'btcd.conf'}",  # an empty file: never read ~/.btcd/btcd.conf
                f"--datadir={self.dir / 'data'}", f"--logdir={self.dir / 'logs'}",
                f"--rpclisten={LOOPBACK}:{self.rpc_port}", f"--rpcuser={self.rpc_user}",
                f"--rpcpass={self.rpc_password}", f"--rpccert={self.cert_path}", f"--rpckey={self.dir / 'rpc.key'}",
                f"--miningaddr={mining_address}", "--debuglevel=info",
            ],
            self.dir / "btcd.stdout.log",
        )
        self._rpc: Any = None

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.rpc_port}/"

    def secret(self) -> dict[str, Any]:
        """What BitcoinRpcClient.from_secret takes, plus the TLS certificate btcd generated."""
        return {"url": self.url, "user": self.rpc_user, "password": self.rpc_password,
                "tls_cert_pem": self.cert_path.read_text()}

    def rpc_client(self, timeout_s: float = 30.0) -> Any:
        """Our BitcoinRpcClient, over TLS that trusts exactly btcd's self-signed certificate."""
        import httpx

        from satflow.adapters.bitcoind import BitcoinRpcClient

        context = ssl.create_default_context(cafile=str(self.cert_path))
        return BitcoinRpcClient(self.url, self.rpc_user, self.rpc_password, timeout_s=timeout_s,
                                transport=httpx.HTTPTransport(verify=context))

    @property
    def rpc(self) -> Any:
        if self._rpc is None:
            self._rpc = self.rpc_client()
        return self._rpc

    def start(self, timeout_s: float = 60.0) -> "BtcdNode":
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "btcd.conf").write_text("")
        self.process.start()

        def probe() -> int:
            if not self.cert_path.exists():
                raise NotReady("no rpc.cert yet")
            try:
                return int(self.rpc.getblockcount())
            except Exception as exc:  # BitcoinNodeUnavailable while the RPC server starts
                if type(exc).__name__ in ("BitcoinNodeUnavailable",):
                    raise NotReady(str(exc)) from exc
                raise

        self.process.wait_ready(probe, timeout_s=timeout_s, what="RPC answering")
        return self

    def stop(self) -> None:
        if self._rpc is not None:
            self._rpc.close()
            self._rpc = None
        self.process.stop()

    def generate(self, blocks: int) -> list[str]:
        return list(self.rpc.call("generate", blocks))

    def height(self) -> int:
        return int(self.rpc.getblockcount())

    def raw_block(self, block_hash: str) -> dict[str, Any]:
        """getblock verbosity 2 as btcd answers it; btcd names the decoded transactions ``rawtx`` (Core: ``tx``)."""
        block = self.rpc.call("getblock", block_hash, 2)
        block.setdefault("tx", block.pop("rawtx", []))
        return block


@dataclass
class _Coin:
    txid: str
    vout: int
    value_sat: int
    height: int | None  # None: unconfirmed change (spendable: it is ours)
    coinbase: bool


class Miner:
    """A regtest-only p2wpkh key that receives every block reward and pays whoever the harness wants."""

    def __init__(self, label: str = "satflow-regtest-miner") -> None:
        from embit import ec
        from embit.networks import NETWORKS
        from embit.script import p2wpkh

        self.key = ec.PrivateKey(hashlib.sha256(label.encode()).digest())
        self.script = p2wpkh(self.key.get_public_key())
        self.address = self.script.address(NETWORKS["regtest"])
        self._coins: list[_Coin] = []
        self.node: BtcdNode | None = None

    def attach(self, node: BtcdNode) -> None:
        self.node = node

    def _node(self) -> BtcdNode:
        if self.node is None:
            raise RuntimeError("miner not attached to a btcd node")
        return self.node

    def mine(self, blocks: int = 1) -> list[str]:
        """Mine ``blocks`` blocks; the coinbases are ours, and mempool transactions (ours too) confirm."""
        node = self._node()
        hashes = node.generate(blocks)
        mine_hex = self.script.data.hex()
        for block_hash in hashes:
            block = node.raw_block(block_hash)
            confirmed = {tx["txid"] for tx in block["tx"]}
            for coin in self._coins:
                if coin.height is None and coin.txid in confirmed:
                    coin.height = int(block["height"])
            coinbase = block["tx"][0]
            for out in coinbase["vout"]:
                if out["scriptPubKey"]["hex"] == mine_hex:
                    self._coins.append(_Coin(coinbase["txid"], int(out["n"]), _sat(out["value"]),
                                             int(block["height"]), True))
        return hashes

    def spendable_sat(self) -> int:
        tip = self._node().height()
        return sum(c.value_sat for c in self._coins if self._spendable(c, tip))

    @staticmethod
    def _spendable(coin: _Coin, tip: int) -> bool:
        # A coinbase may be spent by a transaction in block h + 100; the next block is tip + 1.
        return not coin.coinbase or (coin.height is not None and tip + 1 - coin.height >= COINBASE_MATURITY)

    def send(self, outputs: dict[str, int]) -> str:
        """Pay ``{address: sat}`` from matured coinbases and change; returns the txid (in the mempool)."""
        from embit.script import address_to_scriptpubkey
        from embit.transaction import Transaction, TransactionInput, TransactionOutput

        from satflow_dev.simulators.chain_tx import sign_p2wpkh_inputs

        node = self._node()
        tip = node.height()
        want = sum(outputs.values())
        chosen: list[_Coin] = []
        for coin in sorted(self._coins, key=lambda c: (c.height is None, c.height or 0)):
            if self._spendable(coin, tip):
                chosen.append(coin)
                if sum(c.value_sat for c in chosen) >= want + self._fee(len(chosen), len(outputs) + 1):
                    break
        fee = self._fee(len(chosen), len(outputs) + 1)
        total = sum(c.value_sat for c in chosen)
        if total < want + fee:
            raise RuntimeError(f"miner has {total} sat spendable, needs {want + fee}: mine more blocks")
        vout = [TransactionOutput(amount, address_to_scriptpubkey(address)) for address, amount in outputs.items()]
        change = total - want - fee
        if change > 0:
            vout.append(TransactionOutput(change, self.script))
        tx = Transaction(vin=[TransactionInput(bytes.fromhex(c.txid), c.vout) for c in chosen], vout=vout)
        sign_p2wpkh_inputs(tx, self.key, [c.value_sat for c in chosen])
        txid = node.rpc.sendrawtransaction(tx.serialize().hex())
        for coin in chosen:
            self._coins.remove(coin)
        if change > 0:
            self._coins.append(_Coin(txid, len(vout) - 1, change, None, False))
        return txid

    @staticmethod
    def _fee(inputs: int, outputs: int) -> int:
        vbytes = 11 + 68 * inputs + 31 * outputs
        return vbytes * MINER_FEE_SAT_PER_VB


def _sat(value: Any) -> int:
    return int((Decimal(str(value)) * 100_000_000).to_integral_value())
