"""The regtest chain simulator, driven through the real BitcoinRpcClient over its in-process httpx transport."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest
from embit import bip32, bip39
from embit.ec import PublicKey
from embit.finalizer import finalize_psbt
from embit.psbt import PSBT, DerivationPath
from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from satflow.adapters.bitcoind import BitcoinRpcClient
from satflow.domain.addresses import Chain, DepositAddressDeriver, DerivedAddress
from satflow.domain.bitcoin import (
    AddressKind,
    BitcoinBlockNotFound,
    BitcoinNodeAuthFailed,
    BitcoinNodeUnavailable,
    BitcoinRpcMethodNotFound,
    BitcoinTxNotFound,
    FeeEstimateMode,
    Network,
    TransactionInputsMissing,
    TransactionRejected,
    TxOutput,
    estimate_tx_vbytes,
)
from satflow_dev.simulators.chain import ChainSimulator, rpc_http_status
from satflow_dev.simulators.chain_json import dumps_rpc_json
from satflow_dev.simulators.chain_tx import double_sha256, stripped_serialization

MNEMONIC = " ".join(["abandon"] * 11 + ["about"])
ROOT = bip32.HDKey.from_seed(bip39.mnemonic_to_seed(MNEMONIC))
ACCOUNT_DESCRIPTOR = (
    "wpkh([73c5da0a/84h/1h/0h]tpubDC8msFGeGuwnKG9Upg7DM2b4DaRqg3CUZa5g8v2SRQ6K4NSkxUgd7HsL2XVWbVm39yBA4LAxysQAm397"
    "zwQSQoQgewGiYZqrA9DsP4zbQ1M/0/*)"
)
USER, PASSWORD = "satflow", "sim-password"
ECONOMICAL = FeeEstimateMode.ECONOMICAL


@pytest.fixture
def sim() -> ChainSimulator:
    return ChainSimulator(seed=11, rpc_user=USER, rpc_password=PASSWORD)


@pytest.fixture
def client(sim: ChainSimulator) -> BitcoinRpcClient:
    return BitcoinRpcClient("http://chain-sim:18443/", USER, PASSWORD, transport=sim.transport())


@pytest.fixture
def wallet() -> DepositAddressDeriver:
    return DepositAddressDeriver(ACCOUNT_DESCRIPTOR, Network.REGTEST)


@dataclass(frozen=True)
class Utxo:
    txid: str
    output: TxOutput
    owner: DerivedAddress


def _deposit(sim: ChainSimulator, client: BitcoinRpcClient, to: DerivedAddress, amount_sat: int) -> Utxo:
    txid = sim.send_to_address(to.address, amount_sat)
    outputs = client.getrawtransaction(txid).transaction.outputs
    (output,) = [o for o in outputs if o.address == to.address]
    return Utxo(txid, output, to)


def _spend(utxos: list[Utxo], outputs: list[tuple[str, int]]) -> Transaction:
    """Build, sign (BIP84 test mnemonic) and finalize a PSBT with embit: the path payouts will take."""
    tx = Transaction(
        vin=[TransactionInput(bytes.fromhex(u.txid), u.output.n, sequence=0xFFFF_FFFD) for u in utxos],
        vout=[TransactionOutput(value, Script(bytes.fromhex(script))) for script, value in outputs],
    )
    psbt = PSBT(tx)
    for scope, utxo in zip(psbt.inputs, utxos):
        spent_script = Script(bytes.fromhex(utxo.output.script_pubkey_hex))
        scope.witness_utxo = TransactionOutput(utxo.output.value_sat, spent_script)
        pubkey = PublicKey.parse(bytes.fromhex(utxo.owner.public_key_hex))
        scope.bip32_derivations[pubkey] = DerivationPath(ROOT.my_fingerprint, bip32.parse_path(utxo.owner.path))
    assert psbt.sign_with(ROOT) == len(utxos)
    final = finalize_psbt(psbt)
    assert final is not None
    return final


# --- chain basics ------------------------------------------------------------------------------------------------
def test_starts_like_a_fresh_regtest_node(client: BitcoinRpcClient) -> None:
    info = client.getblockchaininfo()
    assert info.network is Network.REGTEST and info.blocks == 101 and not info.initial_block_download
    assert client.getblockcount() == 101


def test_deterministic_for_a_seed() -> None:
    def run(seed: int) -> tuple[str, str]:
        sim = ChainSimulator(seed=seed)
        txid = sim.send_to_address("bcrt1q6rz28mcfaxtmd6v789l9rrlrusdprr9pz3cppk", 50_000)
        return txid, sim.mine(1)[0]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_blocks_are_real_headers_chained_by_hash(sim: ChainSimulator, client: BitcoinRpcClient) -> None:
    for height in (1, 50, client.getblockcount()):
        block_hash = client.getblockhash(height)
        raw_block = bytes.fromhex(client.call("getblock", block_hash, 0))
        assert double_sha256(raw_block[:80])[::-1].hex() == block_hash
        block = client.getblock(block_hash)
        assert block.height == height and block.previous_hash == client.getblockhash(height - 1)
    with pytest.raises(BitcoinBlockNotFound):
        client.getblockhash(client.getblockcount() + 1)
    with pytest.raises(BitcoinBlockNotFound):
        client.getblock("00" * 32)


def test_deposit_flows_from_mempool_into_a_block(
    sim: ChainSimulator, client: BitcoinRpcClient, wallet: DepositAddressDeriver
) -> None:
    address = wallet.receive(0)
    txid = sim.send_to_address(address, 125_000)

    pending = client.getrawtransaction(txid)
    assert pending.confirmations == 0 and pending.block_hash is None
    assert txid in client.call("getrawmempool")

    (block_hash,) = sim.mine(1)
    block = client.getblock(block_hash)
    assert block.height == 102 and block.confirmations == 1
    (deposit_tx,) = [tx for tx in block.transactions if tx.txid == txid]
    (output,) = [o for o in deposit_tx.outputs if o.address == address]
    assert output.value_sat == 125_000
    assert output.script_pubkey_hex == wallet.script_pubkey(0, Chain.RECEIVE)
    assert deposit_tx.fee_sat is not None and deposit_tx.fee_sat > 0
    assert block.transactions[0].is_coinbase
    assert txid not in client.call("getrawmempool")

    sim.mine(5)
    confirmed = client.getrawtransaction(txid)
    assert (confirmed.block_hash, confirmed.confirmations) == (block_hash, 6)
    assert client.getblock(block_hash).confirmations == 6


def test_raw_hex_round_trips_with_a_consistent_txid(sim: ChainSimulator, client: BitcoinRpcClient) -> None:
    txid = sim.send_to_address("bcrt1q6rz28mcfaxtmd6v789l9rrlrusdprr9pz3cppk", 70_000)
    raw = client.getrawtransaction(txid, verbose=False)
    tx = Transaction.parse(bytes.fromhex(raw))
    assert tx.serialize().hex() == raw
    assert double_sha256(stripped_serialization(tx))[::-1].hex() == txid
    assert client.getrawtransaction(txid).transaction.wtxid == double_sha256(bytes.fromhex(raw))[::-1].hex()


def test_responses_carry_btc_amounts_as_json_numbers(sim: ChainSimulator) -> None:
    txid = sim.send_to_address("bcrt1q6rz28mcfaxtmd6v789l9rrlrusdprr9pz3cppk", 100_000)
    response = sim.handle_rpc({"jsonrpc": "1.0", "id": "x", "method": "getrawtransaction", "params": [txid, True]})
    assert response["id"] == "x" and rpc_http_status(response) == 200
    assert '"value":0.00100000' in dumps_rpc_json(response)


# --- reorgs ------------------------------------------------------------------------------------------------------
def test_reorg_can_remove_a_deposit(
    sim: ChainSimulator, client: BitcoinRpcClient, wallet: DepositAddressDeriver
) -> None:
    deposit = _deposit(sim, client, wallet.derive(0, Chain.RECEIVE), 200_000)
    (stale_hash,) = sim.mine(1)
    assert client.getrawtransaction(deposit.txid).confirmations == 1

    replacement = sim.reorg(depth=1, drop_txids=[deposit.txid])

    assert len(replacement) == 2 and client.getblockcount() == 103
    with pytest.raises(BitcoinTxNotFound):
        client.getrawtransaction(deposit.txid)
    stale = client.getblock(stale_hash)
    assert stale.confirmations == -1 and not stale.in_active_chain
    assert client.getblockhash(102) != stale_hash
    assert sim.utxo(deposit.txid, deposit.output.n) is None
    assert all(deposit.txid not in (tx.txid for tx in client.getblock(h).transactions) for h in replacement)


def test_reorg_without_drop_moves_the_transaction_to_a_new_block(
    sim: ChainSimulator, client: BitcoinRpcClient
) -> None:
    txid = sim.send_to_address("bcrt1q6rz28mcfaxtmd6v789l9rrlrusdprr9pz3cppk", 80_000)
    (old_hash,) = sim.mine(1)
    sim.mine(2)
    new_hashes = sim.reorg(depth=3, replacement_blocks=4)
    moved = client.getrawtransaction(txid)
    assert moved.block_hash == new_hashes[0] != old_hash
    assert moved.confirmations == 4


def test_reorg_drops_descendants_of_a_dropped_transaction(
    sim: ChainSimulator, client: BitcoinRpcClient, wallet: DepositAddressDeriver
) -> None:
    deposit = _deposit(sim, client, wallet.derive(1, Chain.RECEIVE), 300_000)
    sim.mine(1)
    child = _spend([deposit], [(wallet.script_pubkey(0, Chain.CHANGE), 300_000 - 500)])
    child_txid = client.sendrawtransaction(child.serialize().hex())
    sim.reorg(depth=1, replacement_blocks=1, drop_txids=[deposit.txid])
    for txid in (deposit.txid, child_txid):
        with pytest.raises(BitcoinTxNotFound):
            client.getrawtransaction(txid)


def test_reorg_keeps_a_coinbase_spend_that_is_mature_on_the_new_chain(
    sim: ChainSimulator, client: BitcoinRpcClient
) -> None:
    """Core re-admits a reorg's disconnected transactions against the new, longer chain: a spend of a coinbase
    mature there survives. Checking maturity at the fork point lost the faucet's payments (and everything spending
    them) in a 3-deep reorg right after the first spendable coinbase: sim seed 1 --onchain-share 0.45 saw the
    operator's hot wallet capital vanish from the chain in a 7-deep reorg and the solvency breaker trip."""
    height = client.getblockcount()
    txid = sim.send_to_address("bcrt1q6rz28mcfaxtmd6v789l9rrlrusdprr9pz3cppk", 80_000)
    child_of = sim.send_to_address("bcrt1q6rz28mcfaxtmd6v789l9rrlrusdprr9pz3cppk", 70_000)  # spends txid's change
    sim.mine(1)
    assert sim.confirmed_block_of(txid) is not None
    new_hashes = sim.reorg(depth=3)  # fork point height - 2: the faucet's coinbase is immature there, not at the tip
    assert client.getblockcount() == height + 2
    for paid in (txid, child_of):
        moved = client.getrawtransaction(paid)
        assert moved.block_hash in new_hashes, paid


def test_reorg_drops_a_coinbase_spend_still_immature_on_the_new_chain(sim: ChainSimulator) -> None:
    txid = sim.send_to_address("bcrt1q6rz28mcfaxtmd6v789l9rrlrusdprr9pz3cppk", 80_000)
    sim.mine(1)
    sim.reorg(depth=3, replacement_blocks=0)  # the new chain is shorter: the coinbase spent is immature at its tip
    assert sim.confirmed_block_of(txid) is None and txid not in sim.mempool_txids()


def test_reorg_arguments_are_checked(sim: ChainSimulator) -> None:
    with pytest.raises(ValueError):
        sim.reorg(depth=0)
    with pytest.raises(ValueError):
        sim.reorg(depth=1, drop_txids=["ab" * 32])  # not in the disconnected blocks


# --- broadcast ---------------------------------------------------------------------------------------------------
def test_psbt_signed_with_embit_spends_a_simulator_utxo(
    sim: ChainSimulator, client: BitcoinRpcClient, wallet: DepositAddressDeriver
) -> None:
    """The base for batched payouts: our BIP84 key, an embit PSBT, accepted and mined by the node."""
    deposit = _deposit(sim, client, wallet.derive(0, Chain.RECEIVE), 1_000_000)
    sim.mine(1)
    vbytes = estimate_tx_vbytes([AddressKind.P2WPKH], [AddressKind.P2WPKH, AddressKind.P2WPKH])
    fee = 3 * vbytes
    payout_script = "0014" + "11" * 20
    tx = _spend([deposit], [(payout_script, 400_000), (wallet.script_pubkey(0, Chain.CHANGE), 600_000 - fee)])
    raw = tx.serialize().hex()

    (check,) = client.testmempoolaccept([raw])
    assert check.allowed and check.fee_sat == fee and check.vsize == vbytes

    txid = client.sendrawtransaction(raw)
    assert txid == tx.txid().hex()
    sim.mine(1)
    spent = client.getrawtransaction(txid)
    assert spent.confirmations == 1
    assert spent.transaction.outputs[1].address == wallet.change(0)


def test_a_tampered_signature_is_rejected(
    sim: ChainSimulator, client: BitcoinRpcClient, wallet: DepositAddressDeriver
) -> None:
    deposit = _deposit(sim, client, wallet.derive(2, Chain.RECEIVE), 500_000)
    tx = _spend([deposit], [("0014" + "22" * 20, 499_000)])
    tx.vout[0].value = 498_000  # changes what the signature committed to
    with pytest.raises(TransactionRejected) as raised:
        client.sendrawtransaction(tx.serialize().hex())
    assert "mandatory-script-verify-flag-failed" in raised.value.details["reject_reason"]


def test_double_spend_is_rejected(
    sim: ChainSimulator, client: BitcoinRpcClient, wallet: DepositAddressDeriver
) -> None:
    deposit = _deposit(sim, client, wallet.derive(3, Chain.RECEIVE), 500_000)
    first = _spend([deposit], [("0014" + "33" * 20, 499_000)])
    second = _spend([deposit], [("0014" + "44" * 20, 498_000)])
    client.sendrawtransaction(first.serialize().hex())

    (check,) = client.testmempoolaccept([second.serialize().hex()])
    assert not check.allowed and check.reject_reason == "txn-mempool-conflict"
    with pytest.raises(TransactionRejected) as raised:
        client.sendrawtransaction(second.serialize().hex())
    assert raised.value.details["rpc_code"] == -26

    sim.mine(1)  # once the first is confirmed, the input is gone
    with pytest.raises(TransactionInputsMissing):
        client.sendrawtransaction(second.serialize().hex())


def test_broadcasting_an_already_known_transaction_succeeds(
    sim: ChainSimulator, client: BitcoinRpcClient, wallet: DepositAddressDeriver
) -> None:
    deposit = _deposit(sim, client, wallet.derive(4, Chain.RECEIVE), 500_000)
    raw = _spend([deposit], [(wallet.script_pubkey(1, Chain.CHANGE), 499_000)]).serialize().hex()
    txid = client.sendrawtransaction(raw)
    assert client.sendrawtransaction(raw) == txid  # in the mempool
    (check,) = client.testmempoolaccept([raw])
    assert check.already_known
    sim.mine(1)
    assert client.sendrawtransaction(raw) == txid  # in the chain: Core answers -27
    assert client.testmempoolaccept([raw])[0].reject_reason == "txn-already-known"


def test_mempool_policy_rejections(
    sim: ChainSimulator, client: BitcoinRpcClient, wallet: DepositAddressDeriver
) -> None:
    deposit = _deposit(sim, client, wallet.derive(5, Chain.RECEIVE), 100_000)
    too_much = _spend([deposit], [("0014" + "55" * 20, 100_001)]).serialize().hex()
    no_fee = _spend([deposit], [("0014" + "55" * 20, 100_000)]).serialize().hex()
    dust = _spend([deposit], [("0014" + "55" * 20, 99_000), ("0014" + "66" * 20, 293)]).serialize().hex()
    results = client.testmempoolaccept([too_much])
    assert results[0].reject_reason == "bad-txns-in-belowout"
    assert client.testmempoolaccept([no_fee])[0].reject_reason == "min relay fee not met"
    assert client.testmempoolaccept([dust])[0].reject_reason == "dust"
    with pytest.raises(TransactionRejected):
        client.sendrawtransaction("00")


def test_immature_coinbase_cannot_be_spent(
    sim: ChainSimulator, client: BitcoinRpcClient, wallet: DepositAddressDeriver
) -> None:
    owner = wallet.derive(6, Chain.RECEIVE)
    (block_hash,) = sim.mine(1, to_address=owner.address)
    coinbase = client.getblock(block_hash).transactions[0]
    utxo = Utxo(coinbase.txid, coinbase.outputs[0], owner)
    raw = _spend([utxo], [("0014" + "77" * 20, utxo.output.value_sat - 1_000)]).serialize().hex()
    with pytest.raises(TransactionRejected) as raised:
        client.sendrawtransaction(raw)
    assert raised.value.details["reject_reason"].startswith("bad-txns-premature-spend-of-coinbase")
    sim.mine(99)  # 100 confirmations: mature
    assert client.sendrawtransaction(raw) == Transaction.parse(bytes.fromhex(raw)).txid().hex()


def test_unknown_inputs_only_when_allowed(wallet: DepositAddressDeriver) -> None:
    owner = wallet.derive(7, Chain.RECEIVE)
    phantom = Utxo("cd" * 32, TxOutput(0, 100_000, owner.script_pubkey_hex, owner.address), owner)
    raw = _spend([phantom], [("0014" + "88" * 20, 99_000)]).serialize().hex()
    strict = ChainSimulator(seed=1)
    lenient = ChainSimulator(seed=1, allow_unknown_inputs=True)
    with pytest.raises(TransactionInputsMissing):
        BitcoinRpcClient("http://sim/", "u", "p", transport=strict.transport()).sendrawtransaction(raw)
    txid = BitcoinRpcClient("http://sim/", "u", "p", transport=lenient.transport()).sendrawtransaction(raw)
    assert txid in lenient.mempool_txids()
    lenient.mine(1)  # a block with an unknown input still connects


# --- fee estimates -----------------------------------------------------------------------------------------------
def test_estimatesmartfee_is_scripted_per_target(sim: ChainSimulator, client: BitcoinRpcClient) -> None:
    assert client.estimatesmartfee(2, ECONOMICAL) is None  # "Insufficient data or no feerate found"
    sim.set_fee_estimate(2, 20)
    sim.set_fee_estimate(6, Decimal("12.345"))
    sim.set_fee_estimate(144, 1)
    first = client.estimatesmartfee(1, ECONOMICAL)  # Core clamps 1 to 2
    assert (first.sat_per_vb, first.blocks) == (20, 2)
    six = client.estimatesmartfee(3, FeeEstimateMode.CONSERVATIVE)  # answered for the next longer target
    assert (six.sat_per_kvb, six.sat_per_vb, six.blocks) == (12345, 13, 6)
    slow = client.estimatesmartfee(1008, ECONOMICAL)
    assert (slow.sat_per_vb, slow.blocks) == (1, 144)
    sim.set_fee_estimate(2, None)
    assert client.estimatesmartfee(2, ECONOMICAL).blocks == 6


# --- RPC transport behaviour -------------------------------------------------------------------------------------
def test_wrong_credentials_get_http_401(sim: ChainSimulator) -> None:
    intruder = BitcoinRpcClient("http://chain-sim:18443/", USER, "wrong", transport=sim.transport())
    with pytest.raises(BitcoinNodeAuthFailed):
        intruder.getblockcount()


def test_unknown_method(client: BitcoinRpcClient) -> None:
    with pytest.raises(BitcoinRpcMethodNotFound):
        client.call("getwalletinfo")


@pytest.mark.parametrize("kind", ["timeout", "connect_error", "http_503", "warmup"])
def test_injected_failures_are_transient_and_pass(sim: ChainSimulator, client: BitcoinRpcClient, kind: str) -> None:
    sim.inject_failures(kind)
    with pytest.raises(BitcoinNodeUnavailable):
        client.getblockcount()
    assert client.getblockcount() == 101


def test_regtest_wallet_conveniences(
    sim: ChainSimulator, client: BitcoinRpcClient, wallet: DepositAddressDeriver
) -> None:
    hashes = client.call("generatetoaddress", 2, wallet.receive(9))
    assert len(hashes) == 2 and client.getblockcount() == 103
    txid = client.call("sendtoaddress", wallet.receive(9), Decimal("0.00150000"))
    outputs = client.getrawtransaction(txid).transaction.outputs
    assert [o.value_sat for o in outputs if o.address == wallet.receive(9)] == [150_000]


def test_plain_handler_for_the_local_runtime(sim: ChainSimulator) -> None:
    ok = sim.handle_rpc({"jsonrpc": "1.0", "id": 1, "method": "getblockcount", "params": []})
    assert ok == {"result": 101, "error": None, "id": 1}
    missing = sim.handle_rpc({"jsonrpc": "1.0", "id": 2, "method": "nope", "params": []})
    assert missing["error"]["code"] == -32601 and rpc_http_status(missing) == 404
    bad = sim.handle_rpc({"jsonrpc": "1.0", "id": 3, "method": "getblockhash", "params": ["one"]})
    assert bad["error"]["code"] == -3 and rpc_http_status(bad) == 500
    assert rpc_http_status(sim.handle_rpc(["not", "an", "object"])) == 400


def test_concurrent_use_is_consistent(sim: ChainSimulator, wallet: DepositAddressDeriver) -> None:
    addresses = [wallet.receive(i) for i in range(8)]
    txids: list[str] = []
    errors: list[BaseException] = []

    def worker(address: str) -> None:
        try:
            client = BitcoinRpcClient("http://chain-sim:18443/", USER, PASSWORD, transport=sim.transport())
            for _ in range(4):
                txids.append(sim.send_to_address(address, 10_000))
                client.getblockcount()
            sim.mine(1)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(a,)) for a in addresses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(txids)) == 32
    sim.mine(1)
    assert sim.mempool_txids() == []
    assert all(sim.confirmed_block_of(txid) is not None for txid in txids)


def test_transport_is_in_process(sim: ChainSimulator) -> None:
    assert isinstance(sim.transport(), httpx.MockTransport)
