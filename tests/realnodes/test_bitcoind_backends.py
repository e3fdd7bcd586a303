"""BitcoinRpcClient against the Bitcoin Core simulator AND btcd v0.24 (regtest): every call satflow makes.

btcd is not Bitcoin Core; where its RPC differs (listed in satflow.adapters.bitcoind's docstring and in
tests/realnodes/README.md) the adapter reads both, and these tests hold it to one typed answer.
"""
from __future__ import annotations

import pytest

from satflow.adapters.bitcoind import txid_of
from satflow.domain.bitcoin import (
    BitcoinBlockNotFound,
    BitcoinTxNotFound,
    FeeEstimateMode,
    Network,
    TransactionRejected,
)

OUTSIDE_ADDRESS = "bcrt1q50rtrmj2f8vl9tem8qpfw36ylw5jg9j2dkku3w"  # nobody's wallet in these tests


def _paid_output(tx, address: str, sat: int) -> bool:
    return any(out.address == address and out.value_sat == sat for out in tx.outputs)


def test_blockchain_info_agrees_with_the_tip(chain):
    info = chain.rpc.getblockchaininfo()
    assert info.network is Network.REGTEST and info.chain == "regtest"
    assert info.blocks == chain.rpc.getblockcount() == info.headers
    assert info.best_block_hash == chain.rpc.getbestblockhash() == chain.rpc.getblockhash(info.blocks)
    assert not info.initial_block_download and not info.pruned
    assert info.verification_progress > 0


def test_a_height_above_the_tip_and_an_unknown_hash_are_block_not_found(chain):
    with pytest.raises(BitcoinBlockNotFound):
        chain.rpc.getblockhash(chain.rpc.getblockcount() + 1)
    with pytest.raises(BitcoinBlockNotFound):
        chain.rpc.getblock("00" * 32)


def test_a_payment_is_seen_in_the_mempool_then_in_a_block(chain):
    txid = chain.pay(OUTSIDE_ADDRESS, 123_456)
    assert txid in chain.rpc.getrawmempool()
    pending = chain.rpc.getrawtransaction(txid)
    assert (pending.confirmations, pending.block_hash) == (0, None)
    assert pending.transaction.txid == txid and _paid_output(pending.transaction, OUTSIDE_ADDRESS, 123_456)
    assert pending.transaction.vsize > 0 and not pending.transaction.is_coinbase

    (block_hash,) = chain.mine(1)
    assert txid not in chain.rpc.getrawmempool()
    block = chain.rpc.getblock(block_hash)
    assert block.hash == block_hash == chain.rpc.getbestblockhash()
    assert block.previous_hash == chain.rpc.getblockhash(block.height - 1) and block.confirmations == 1
    coinbase, *others = block.transactions
    assert coinbase.is_coinbase and coinbase.inputs == ()
    (mined,) = [tx for tx in others if tx.txid == txid]
    assert _paid_output(mined, OUTSIDE_ADDRESS, 123_456) and mined.inputs
    confirmed = chain.rpc.getrawtransaction(txid)
    assert (confirmed.confirmations, confirmed.block_hash) == (1, block_hash)
    assert chain.rpc.getrawtransaction(txid, True, block_hash).block_hash == block_hash
    with pytest.raises(BitcoinTxNotFound):
        chain.rpc.getrawtransaction(txid, True, block.previous_hash)
    raw = chain.rpc.getrawtransaction(txid, False)
    assert txid_of(raw) == txid


def test_an_unknown_transaction_is_not_found(chain):
    with pytest.raises(BitcoinTxNotFound):
        chain.rpc.getrawtransaction("ab" * 32)


def test_broadcast_is_idempotent_in_the_mempool_and_after_confirmation(chain):
    txid = chain.pay(OUTSIDE_ADDRESS, 50_000)
    raw = chain.rpc.getrawtransaction(txid, False)
    assert chain.rpc.sendrawtransaction(raw) == txid  # already in the mempool: success
    (pending,) = chain.rpc.testmempoolaccept([raw])
    assert (pending.txid, pending.allowed, pending.already_known) == (txid, False, True)
    chain.mine(1)
    assert chain.rpc.sendrawtransaction(raw) == txid  # already in a block: success
    (confirmed,) = chain.rpc.testmempoolaccept([raw])
    assert not confirmed.allowed and confirmed.already_known


def test_an_undecodable_transaction_is_rejected(chain):
    with pytest.raises(TransactionRejected):
        chain.rpc.sendrawtransaction("00")


def test_fee_estimates_are_whole_sat_per_vbyte_or_none(chain):
    for target in (2, 6):
        estimate = chain.rpc.estimatesmartfee(target, FeeEstimateMode.ECONOMICAL)
        assert estimate is None or estimate.sat_per_vb >= 1
    chain.make_fee_estimates()
    estimate = chain.rpc.estimatesmartfee(6, FeeEstimateMode.ECONOMICAL)
    # Transactions paid 2 sat/vB. btcd measures its own way (1,994 sat/kvB here); rounded up it is 2 sat/vB.
    assert estimate is not None and estimate.sat_per_vb == 2 and 1_000 < estimate.sat_per_kvb <= 2_000
    assert chain.rpc.estimatesmartfee(1008, FeeEstimateMode.CONSERVATIVE) is None or chain.name == "simulator"


@pytest.mark.realnodes
def test_the_secret_with_btcds_own_certificate_reaches_it_over_tls_and_nothing_else_is_trusted(regtest_stack):
    """The deployed secret shape plus ``tls_cert_pem`` (btcd's self-signed certificate): what `make run
    BACKEND=regtest` writes. Without the certificate the system CAs refuse btcd."""
    from satflow.adapters.bitcoind import BitcoinRpcClient
    from satflow.domain.errors import BitcoinNodeUnavailable

    secret = regtest_stack.btcd.secret()
    with BitcoinRpcClient.from_secret(secret) as rpc:
        assert rpc.getblockcount() == regtest_stack.btcd.height()
    with BitcoinRpcClient.from_secret({k: v for k, v in secret.items() if k != "tls_cert_pem"}) as rpc:
        with pytest.raises(BitcoinNodeUnavailable) as refused:
            rpc.getblockcount()
        assert "CERTIFICATE_VERIFY_FAILED" in repr(refused.value.__cause__)


def test_a_tls_cert_that_is_not_pem_is_a_validation_error_that_does_not_echo_it():
    from satflow.adapters.bitcoind import BitcoinRpcClient
    from satflow.domain.errors import ValidationError

    with pytest.raises(ValidationError) as exc:
        BitcoinRpcClient.from_secret({"url": "https://127.0.0.1:1/", "user": "u", "password": "p",
                                      "tls_cert_pem": "not-a-cert-secret-ish"})
    assert "not-a-cert" not in str(exc.value)
