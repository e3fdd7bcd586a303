"""The regtest stack: btcd + a miner + our master lnd + an external lnd, funded, with channels both ways.

::

    with RegtestStack() as stack:
        client = stack.master.client()          # LndRestClient against the real master node
        rpc = stack.btcd.rpc_client()           # BitcoinRpcClient against btcd
        stack.external_pay(invoice)             # the outside world pays us
        stack.miner.mine(1)

Everything listens on loopback ports chosen per run, under one temporary directory; the context exit stops
every process (SIGTERM, then SIGKILL) and removes the directory, unless a start failed or ``keep_dir`` is set
(then the directory, with every node's log, stays and its path is printed).
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .btcd import BtcdNode, Miner
from .lnd import LndNode
from .processes import NotReady, wait_until
from .toolchain import nodes_built

# btcd's regtest activates segwit by BIP9 signalling: defined -> started (144) -> locked in (288) -> active (432).
# Our miner's coinbases are p2wpkh, so nothing is spendable before that; 440 leaves 340 matured coinbases.
INITIAL_BLOCKS = 440
FUNDING_OUTPUTS_SAT = (100_000_000, 100_000_000)  # two 1-BTC coins per node
CHANNEL_SAT = 5_000_000  # each way; under the 16,777,215-sat limit without wumbo channels
CHANNEL_CONFIRMATIONS = 3


class RegtestStack:
    def __init__(self, base_dir: Path | None = None, *, keep_dir: bool = False) -> None:
        if not nodes_built():
            raise RuntimeError("lnd/btcd are not built: run `python -m satflow_dev.regtest build` first")
        self.base_dir = base_dir or Path(tempfile.mkdtemp(prefix="satflow-regtest-"))
        self.keep_dir = keep_dir
        self.miner = Miner()
        self.btcd = BtcdNode(self.base_dir, self.miner.address)
        self.master = LndNode("master", self.base_dir, self.btcd)
        self.external = LndNode("external", self.base_dir, self.btcd)
        self.timings: dict[str, float] = {}
        self._failed = False

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def __enter__(self) -> "RegtestStack":
        try:
            self.start()
        except BaseException:
            self._failed = True
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self._failed = self._failed or exc_type is not None
        self.stop()

    def _timed(self, label: str, started: float) -> None:
        self.timings[label] = round(time.monotonic() - started, 1)

    def start(self) -> None:
        t = time.monotonic()
        self.btcd.start()
        self.miner.attach(self.btcd)
        self.miner.mine(INITIAL_BLOCKS)
        segwit = self.btcd.rpc.call("getblockchaininfo").get("bip9_softforks", {}).get("segwit", {})
        if segwit.get("status") != "active":
            raise RuntimeError(f"segwit is not active on btcd after {INITIAL_BLOCKS} blocks: {segwit}")
        self._timed(f"btcd + {INITIAL_BLOCKS} blocks", t)

        t = time.monotonic()
        for node in (self.master, self.external):  # both start at once; each is waited for afterwards
            node.launch()
        for node in (self.master, self.external):
            node.wait_started()
        self._timed("two lnd nodes ready", t)

        t = time.monotonic()
        outputs: dict[str, int] = {}
        for node in (self.master, self.external):
            for amount in FUNDING_OUTPUTS_SAT:
                outputs[node.new_address()] = amount
        self.miner.send(outputs)
        self.miner.mine(1)
        height = self.btcd.height()
        for node in (self.master, self.external):
            node.wait_synced(height)
            wait_until(lambda n=node: _at_least(n.confirmed_balance_sat(), sum(FUNDING_OUTPUTS_SAT)),
                       timeout_s=60, what=f"{node.name} funded", alive=node.process)
        self._timed("funded", t)

        t = time.monotonic()
        wait_until(lambda: self.external.connect(self.master), timeout_s=60, what="external connects to master",
                   alive=self.external.process)
        wait_until(lambda: _peer_of(self.master, self.external), timeout_s=30, what="peers connected")
        self.master.open_channel(self.external, CHANNEL_SAT)
        self.external.open_channel(self.master, CHANNEL_SAT)
        self.miner.mine(CHANNEL_CONFIRMATIONS)
        for node in (self.master, self.external):
            wait_until(lambda n=node: _at_least(len(n.active_channels()), 2), timeout_s=90,
                       what=f"{node.name}: two active channels", alive=node.process)
        self.wait_synced()
        # "active" is not yet "can carry an HTLC" (the link may still be re-establishing): a 1-sat payment each
        # way, retried with fresh invoices, is the readiness condition tests actually need.
        for payer, payee in ((self.external, self.master), (self.master, self.external)):
            wait_until(lambda a=payer, b=payee: _probe_payment(a, b), timeout_s=60, interval_s=0.5,
                       what=f"{payer.name} -> {payee.name} payment", alive=payer.process)
        self._timed("channels active, payments flowing", t)

    def stop(self) -> None:
        for node in (self.external, self.master):
            node.stop()
        self.btcd.stop()
        if self._failed or self.keep_dir:
            print(f"regtest: data directories and logs kept in {self.base_dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def mark_failed(self) -> None:
        """Keep the logs at exit (a test using the stack failed)."""
        self._failed = True

    # --- helpers for tests and the local runtime -----------------------------------------------------------------
    def wait_synced(self, timeout_s: float = 60.0) -> None:
        height = self.btcd.height()
        for node in (self.master, self.external):
            node.wait_synced(height, timeout_s=timeout_s)

    def mine(self, blocks: int = 1) -> list[str]:
        hashes = self.miner.mine(blocks)
        self.wait_synced()
        return hashes

    def external_invoice(self, amount_msat: int, memo: str = "", expiry_s: int = 3600) -> dict[str, Any]:
        """An invoice of the external node for us to pay: ``{"r_hash", "payment_request", ...}``."""
        return self.external.rest("POST", "/v1/invoices",
                                  {"value_msat": str(amount_msat), "memo": memo, "expiry": str(expiry_s)})

    def external_pay(self, payment_request: str, amount_msat: int | None = None,
                     timeout_s: int = 60) -> dict[str, Any]:
        """The external node pays ``payment_request`` and waits for the result (SendPaymentSync).

        Returns LND's SendResponse: ``payment_error`` is "" on success, else the reason."""
        body: dict[str, Any] = {"payment_request": payment_request,
                                "fee_limit": {"fixed_msat": "100000"}}
        if amount_msat is not None:
            body["amt_msat"] = str(amount_msat)
        return self.external.rest("POST", "/v1/channels/transactions", body)

    def describe(self) -> dict[str, Any]:
        return {
            "base_dir": str(self.base_dir),
            "bitcoind": {"url": self.btcd.url, "user": self.btcd.rpc_user, "password": self.btcd.rpc_password,
                         "tls_cert_path": str(self.btcd.cert_path), "miner_address": self.miner.address},
            "lnd_master": {"url": self.master.rest_url, "pubkey": self.master.pubkey,
                           "macaroon_path": str(self.master.macaroon_path),
                           "tls_cert_path": str(self.master.tls_cert_path)},
            "lnd_external": {"url": self.external.rest_url, "pubkey": self.external.pubkey,
                             "macaroon_path": str(self.external.macaroon_path),
                             "tls_cert_path": str(self.external.tls_cert_path)},
            "timings_s": self.timings,
        }


def _at_least(value: int, minimum: int) -> int:
    if value < minimum:
        raise NotReady(f"{value} < {minimum}")
    return value


def _probe_payment(payer: LndNode, payee: LndNode) -> bool:
    invoice = payee.rest("POST", "/v1/invoices", {"value_msat": "1000", "memo": "readiness probe"})
    result = payer.rest("POST", "/v1/channels/transactions", {"payment_request": invoice["payment_request"]})
    if result.get("payment_error"):
        raise NotReady(result["payment_error"])
    return True


def _peer_of(node: LndNode, other: LndNode) -> bool:
    peers = node.rest("GET", "/v1/peers").get("peers", [])
    if not any(p.get("pub_key") == other.pubkey for p in peers):
        raise NotReady("not connected yet")
    return True
