"""One interface over the two chain backends: the Bitcoin Core RPC simulator and btcd (regtest stack).

``rpc`` is our adapter (BitcoinRpcClient); ``pay`` plays an outside wallet paying an address (the transaction
waits in the mempool); ``mine`` confirms it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from satflow.adapters.bitcoind import BitcoinRpcClient


@dataclass
class ChainBackend:
    name: str
    rpc: BitcoinRpcClient
    pay: Callable[[str, int], str]
    mine: Callable[[int], list[str]]
    make_fee_estimates: Callable[[], None]  # whatever the node needs before it can estimate fees


def simulator_backend() -> ChainBackend:
    from satflow_dev.simulators.chain import ChainSimulator

    sim = ChainSimulator(seed=6, rpc_user="satflow", rpc_password="sim-password")
    client = BitcoinRpcClient("http://chain.sim:18443/", "satflow", "sim-password", transport=sim.transport())

    def estimates() -> None:
        for target in (1, 2, 6, 25):
            sim.set_fee_estimate(target, 2)

    return ChainBackend("simulator", client, sim.send_to_address, lambda n: sim.mine(n), estimates)


def btcd_backend(stack: Any) -> ChainBackend:
    filler = "bcrt1q50rtrmj2f8vl9tem8qpfw36ylw5jg9j2dkku3w"

    def estimates() -> None:
        # btcd's estimator learns from transactions it saw in the mempool and then in blocks.
        for n in range(4):
            stack.miner.send({filler: 10_000 + n})
            stack.mine(1)

    return ChainBackend("btcd", stack.btcd.rpc_client(), lambda address, sat: stack.miner.send({address: sat}),
                        stack.mine, estimates)
