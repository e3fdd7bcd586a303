"""BIP84 deposit address derivation, pinned to the published vectors.

BIP84 test vectors: https://github.com/bitcoin/bips/blob/master/bip-0084.mediawiki#test-vectors
(mnemonic "abandon abandon ... about"; account 0 = m/84'/0'/0').
"""
from __future__ import annotations

import pytest
from embit import base58, bip32, bip39
from embit.descriptor.checksum import checksum as descriptor_checksum
from hypothesis import given
from hypothesis import strategies as st

from satflow.domain.addresses import (
    Chain,
    DepositAddressDeriver,
    InvalidAccountKey,
    WrongNetworkAccountKey,
    max_unused_run,
    restore_gap_limit,
)
from satflow.domain.bitcoin import AddressKind, Network, validate_address
from satflow.domain.errors import ValidationError

MNEMONIC = " ".join(["abandon"] * 11 + ["about"])
# From BIP84's test vectors
BIP84_ROOT_ZPRV = (
    "zprvAWgYBBk7JR8Gjrh4UJQ2uJdG1r3WNRRfURiABBE3RvMXYSrRJL62XuezvGdPvG6GFBZduosCc1YP5wixPox7zhZLfiUm8aunE96BBa4Kei5"
)
BIP84_ACCOUNT_ZPRV = (
    "zprvAdG4iTXWBoARxkkzNpNh8r6Qag3irQB8PzEMkAFeTRXxHpbF9z4QgEvBRmfvqWvGp42t42nvgGpNgYSJA9iefm1yYNZKEm7z6qUWCroSQnE"
)
# The account's public key (the zpub of BIP84_ACCOUNT_ZPRV; checked below rather than trusted).
BIP84_ACCOUNT_ZPUB = (
    "zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkgDKf31mGDtKsAYz2oz2AGutZYs"
)
BIP84_RECEIVE_0 = "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
BIP84_RECEIVE_0_PUBKEY = "0330d54fd0dd420a6e5f8d3624f5f3482cae350f79d5f0753bf5beef9c2d91af3c"
BIP84_RECEIVE_1 = "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"
BIP84_RECEIVE_1_PUBKEY = "03e775fd51f0dfb8cd865d9ff1cca2a158cf651fe997fdc9fee9c1d3b5e995ea77"
BIP84_CHANGE_0 = "bc1q8c6fshw2dlwun7ekn9qwf37cu2rn755upcp6el"
BIP84_CHANGE_0_PUBKEY = "03025324888e429ab8e3dbaf1f7802648b9cd01e9b418485c5fa4c1b9b5700e1a6"

# Test-network account m/84'/1'/0' of the same mnemonic, computed here with embit (root fingerprint 73c5da0a).
TEST_ACCOUNT_TPUB = (
    "tpubDC8msFGeGuwnKG9Upg7DM2b4DaRqg3CUZa5g8v2SRQ6K4NSkxUgd7HsL2XVWbVm39yBA4LAxysQAm397zwQSQoQgewGiYZqrA9DsP4zbQ1M"
)
TEST_ACCOUNT_VPUB = (
    "vpub5Y6cjg78GGuNLsaPhmYsiw4gYX3HoQiRBiSwDaBXKUafCt9bNwWQiitDk5VZ5BVxYnQdwoTyXSs2JHRPAgjAvtbBrf8ZhDYe2jWAqvZVnsc"
)
ROOT_FINGERPRINT = "73c5da0a"
REGTEST_RECEIVE = ["bcrt1q6rz28mcfaxtmd6v789l9rrlrusdprr9pz3cppk", "bcrt1qd7spv5q28348xl4myc8zmh983w5jx32cs707jh"]
REGTEST_CHANGE_0 = "bcrt1q9u62588spffmq4dzjxsr5l297znf3z6jkgnhsw"
# The same keys on testnet/signet; tb1q6rz28...cpvkl is the widely published first BIP84 testnet address of this
# mnemonic, an independent cross-check of the regtest values above.
TESTNET_RECEIVE = ["tb1q6rz28mcfaxtmd6v789l9rrlrusdprr9pqcpvkl", "tb1qd7spv5q28348xl4myc8zmh983w5jx32cjhkn97"]
TESTNET_CHANGE_0 = "tb1q9u62588spffmq4dzjxsr5l297znf3z6j5p2688"

VERSIONS = {
    "xpub": "0488b21e", "zpub": "04b24746", "ypub": "049d7cb2", "Zpub": "02aa7ed3",
    "tpub": "043587cf", "vpub": "045f1cf6", "upub": "044a5262",
}


def _reencode(key: str, version: str) -> str:
    """The same key material under other SLIP-132 version bytes."""
    return base58.encode_check(bytes.fromhex(VERSIONS[version]) + base58.decode_check(key)[4:])


# --- BIP84 vectors -----------------------------------------------------------------------------------------------
def test_bip84_mainnet_vectors() -> None:
    deriver = DepositAddressDeriver(BIP84_ACCOUNT_ZPUB, Network.BITCOIN)
    assert deriver.receive(0) == BIP84_RECEIVE_0
    assert deriver.receive(1) == BIP84_RECEIVE_1
    assert deriver.change(0) == BIP84_CHANGE_0
    assert deriver.derive(0, Chain.RECEIVE).public_key_hex == BIP84_RECEIVE_0_PUBKEY
    assert deriver.derive(1, Chain.RECEIVE).public_key_hex == BIP84_RECEIVE_1_PUBKEY
    assert deriver.derive(0, Chain.CHANGE).public_key_hex == BIP84_CHANGE_0_PUBKEY


def test_the_account_zpub_belongs_to_the_bip84_vectors() -> None:
    # BIP84 publishes the root and account private keys; the zpub used above must be their public half.
    root = bip32.HDKey.from_seed(bip39.mnemonic_to_seed(MNEMONIC))
    assert root.to_base58(version=bytes.fromhex("04b2430c")) == BIP84_ROOT_ZPRV
    account = bip32.HDKey.from_string(BIP84_ACCOUNT_ZPRV)
    assert root.derive("m/84h/0h/0h").to_base58(version=bytes.fromhex("04b2430c")) == BIP84_ACCOUNT_ZPRV
    assert account.to_public().to_base58() == BIP84_ACCOUNT_ZPUB


def test_xpub_encoding_of_the_same_key_derives_the_same_addresses() -> None:
    deriver = DepositAddressDeriver(_reencode(BIP84_ACCOUNT_ZPUB, "xpub"), Network.BITCOIN)
    assert [deriver.receive(0), deriver.receive(1), deriver.change(0)] == [
        BIP84_RECEIVE_0, BIP84_RECEIVE_1, BIP84_CHANGE_0,
    ]


def test_script_pubkey_and_address_agree() -> None:
    deriver = DepositAddressDeriver(BIP84_ACCOUNT_ZPUB, Network.BITCOIN)
    for index in range(3):
        for chain in Chain:
            derived = deriver.derive(index, chain)
            parsed = validate_address(derived.address, Network.BITCOIN)
            assert parsed.kind is AddressKind.P2WPKH
            assert deriver.script_pubkey(index, chain) == derived.script_pubkey_hex == parsed.script_pubkey_hex
            assert derived.path == f"{int(chain)}/{index}"  # origin unknown for a bare zpub


# --- test networks -----------------------------------------------------------------------------------------------
def test_test_account_keys_come_from_the_mnemonic() -> None:
    root = bip32.HDKey.from_seed(bip39.mnemonic_to_seed(MNEMONIC))
    account = root.derive("m/84h/1h/0h").to_public()
    assert account.to_base58(version=bytes.fromhex(VERSIONS["tpub"])) == TEST_ACCOUNT_TPUB
    assert account.to_base58(version=bytes.fromhex(VERSIONS["vpub"])) == TEST_ACCOUNT_VPUB
    assert root.my_fingerprint.hex() == ROOT_FINGERPRINT


@pytest.mark.parametrize("key", [TEST_ACCOUNT_TPUB, TEST_ACCOUNT_VPUB], ids=["tpub", "vpub"])
def test_regtest_vectors(key: str) -> None:
    deriver = DepositAddressDeriver(key, Network.REGTEST)
    assert [deriver.receive(0), deriver.receive(1)] == REGTEST_RECEIVE
    assert deriver.change(0) == REGTEST_CHANGE_0
    assert validate_address(deriver.receive(0), Network.REGTEST).kind is AddressKind.P2WPKH


@pytest.mark.parametrize("network", [Network.TESTNET, Network.SIGNET])
@pytest.mark.parametrize("key", [TEST_ACCOUNT_TPUB, TEST_ACCOUNT_VPUB], ids=["tpub", "vpub"])
def test_testnet_and_signet_use_tb1(key: str, network: Network) -> None:
    deriver = DepositAddressDeriver(key, network)
    assert [deriver.receive(0), deriver.receive(1)] == TESTNET_RECEIVE
    assert deriver.change(0) == TESTNET_CHANGE_0


# --- descriptors -------------------------------------------------------------------------------------------------
DESCRIPTOR_BODY = f"wpkh([{ROOT_FINGERPRINT}/84h/1h/0h]{TEST_ACCOUNT_TPUB}/0/*)"


@pytest.mark.parametrize(
    "descriptor",
    [
        f"{DESCRIPTOR_BODY}#{descriptor_checksum(DESCRIPTOR_BODY)}",
        DESCRIPTOR_BODY,  # checksum optional
        f"wpkh([{ROOT_FINGERPRINT}/84'/1'/0']{TEST_ACCOUNT_TPUB}/0/*)",
        f"wpkh([{ROOT_FINGERPRINT}/84h/1h/0h]{TEST_ACCOUNT_TPUB}/<0;1>/*)",
        f"wpkh({TEST_ACCOUNT_TPUB}/0/*)",  # origin optional
    ],
    ids=["with checksum", "without checksum", "apostrophes", "multipath", "no origin"],
)
def test_descriptor_forms(descriptor: str) -> None:
    deriver = DepositAddressDeriver(descriptor, Network.REGTEST)
    assert [deriver.receive(0), deriver.receive(1)] == REGTEST_RECEIVE
    assert deriver.change(0) == REGTEST_CHANGE_0


def test_descriptor_origin_gives_full_paths() -> None:
    deriver = DepositAddressDeriver(DESCRIPTOR_BODY, Network.REGTEST)
    derived = deriver.derive(5, Chain.CHANGE)
    assert derived.path == "m/84h/1h/0h/1/5"
    assert deriver.origin is not None and deriver.origin.master_fingerprint == ROOT_FINGERPRINT


def test_descriptor_export_round_trips_in_core_form() -> None:
    deriver = DepositAddressDeriver(TEST_ACCOUNT_VPUB, Network.REGTEST)
    exported = deriver.descriptor(Chain.RECEIVE)
    assert exported.startswith(f"wpkh({TEST_ACCOUNT_TPUB}/0/*)#")  # Core understands tpub, not vpub
    assert DepositAddressDeriver(exported, Network.REGTEST).receive(0) == REGTEST_RECEIVE[0]
    with_origin = DepositAddressDeriver(DESCRIPTOR_BODY, Network.REGTEST).descriptor(Chain.CHANGE)
    assert with_origin == f"wpkh([{ROOT_FINGERPRINT}/84h/1h/0h]{TEST_ACCOUNT_TPUB}/1/*)#" + descriptor_checksum(
        f"wpkh([{ROOT_FINGERPRINT}/84h/1h/0h]{TEST_ACCOUNT_TPUB}/1/*)"
    )
    mainnet = DepositAddressDeriver(BIP84_ACCOUNT_ZPUB, Network.BITCOIN).descriptor()
    assert mainnet.startswith("wpkh(xpub")


@pytest.mark.parametrize(
    "descriptor, error",
    [
        (f"{DESCRIPTOR_BODY}#qqqqqqqq", InvalidAccountKey),  # checksum mismatch
        (f"wpkh([{ROOT_FINGERPRINT}/49h/1h/0h]{TEST_ACCOUNT_TPUB}/0/*)", InvalidAccountKey),  # not BIP84
        (f"wpkh([{ROOT_FINGERPRINT}/84h/1h]{TEST_ACCOUNT_TPUB}/0/*)", InvalidAccountKey),  # not account level
        (f"wpkh([{ROOT_FINGERPRINT}/84h/1h/0]{TEST_ACCOUNT_TPUB}/0/*)", InvalidAccountKey),  # unhardened account
        (f"wpkh([{ROOT_FINGERPRINT}/84h/0h/0h]{TEST_ACCOUNT_TPUB}/0/*)", WrongNetworkAccountKey),  # mainnet coin
        (f"wpkh([{ROOT_FINGERPRINT}/84h/1h/0h]{TEST_ACCOUNT_TPUB}/1/*)", InvalidAccountKey),  # change-only
        (f"wpkh([{ROOT_FINGERPRINT}/84h/1h/0h]{TEST_ACCOUNT_TPUB}/0/*h)", InvalidAccountKey),  # hardened wildcard
        (f"wpkh([{ROOT_FINGERPRINT}/84h/1h/0h]{TEST_ACCOUNT_TPUB}/0/0)", InvalidAccountKey),  # not ranged
        (f"sh(wpkh([{ROOT_FINGERPRINT}/84h/1h/0h]{TEST_ACCOUNT_TPUB}/0/*))", InvalidAccountKey),
        (f"tr([{ROOT_FINGERPRINT}/86h/1h/0h]{TEST_ACCOUNT_TPUB}/0/*)", InvalidAccountKey),
    ],
)
def test_descriptor_rejections(descriptor: str, error: type[Exception]) -> None:
    with pytest.raises(InvalidAccountKey) as raised:
        DepositAddressDeriver(descriptor, Network.REGTEST)
    assert type(raised.value) is error


# --- network and key checks --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, network",
    [
        (BIP84_ACCOUNT_ZPUB, Network.REGTEST),
        (BIP84_ACCOUNT_ZPUB, Network.TESTNET),
        (_reencode(BIP84_ACCOUNT_ZPUB, "xpub"), Network.SIGNET),
        (TEST_ACCOUNT_VPUB, Network.BITCOIN),
        (TEST_ACCOUNT_TPUB, Network.BITCOIN),
    ],
)
def test_key_version_must_match_the_network(key: str, network: Network) -> None:
    with pytest.raises(WrongNetworkAccountKey) as raised:
        DepositAddressDeriver(key, network)
    assert raised.value.code == "WRONG_NETWORK_ACCOUNT_KEY"


@pytest.mark.parametrize("version", ["ypub", "Zpub", "upub"])
def test_keys_for_other_script_types_are_refused(version: str) -> None:
    network = Network.BITCOIN if version[0] in "yZ" else Network.REGTEST
    with pytest.raises(InvalidAccountKey) as raised:
        DepositAddressDeriver(_reencode(BIP84_ACCOUNT_ZPUB, version), network)
    assert type(raised.value) is InvalidAccountKey


def test_private_keys_are_refused_without_being_echoed() -> None:
    for private in (BIP84_ACCOUNT_ZPRV, BIP84_ROOT_ZPRV):
        with pytest.raises(InvalidAccountKey) as raised:
            DepositAddressDeriver(private, Network.BITCOIN)
        assert private not in str(raised.value) and private[4:20] not in repr(raised.value.details)
    tprv = bip32.HDKey.from_seed(bip39.mnemonic_to_seed(MNEMONIC)).derive("m/84h/1h/0h")
    descriptor = f"wpkh([{ROOT_FINGERPRINT}/84h/1h/0h]{tprv.to_base58(version=bytes.fromhex('04358394'))}/0/*)"
    with pytest.raises(InvalidAccountKey):
        DepositAddressDeriver(descriptor, Network.REGTEST)


def test_only_account_level_keys() -> None:
    root = bip32.HDKey.from_seed(bip39.mnemonic_to_seed(MNEMONIC))
    master_xpub = root.to_public().to_base58()
    receive_chain_xpub = root.derive("m/84h/0h/0h/0").to_public().to_base58()
    for key in (master_xpub, receive_chain_xpub):
        with pytest.raises(InvalidAccountKey) as raised:
            DepositAddressDeriver(key, Network.BITCOIN)
        assert "depth" in str(raised.value)


def test_a_single_changed_character_is_caught() -> None:
    # Base58check catches typos in a pasted key (e.g. a zpub whose tail differs from the BIP84 account key).
    typo = BIP84_ACCOUNT_ZPUB[:-6] + ("A" if BIP84_ACCOUNT_ZPUB[-6] != "A" else "B") + BIP84_ACCOUNT_ZPUB[-5:]
    # A zpub that differs from the account key only in its last characters (seen quoted in a spec draft).
    misquoted = BIP84_ACCOUNT_ZPUB[:-24] + "Gf4z3mTpRTw46ctL3aRjW4dY"
    for key in (typo, misquoted, "", "   "):
        with pytest.raises(InvalidAccountKey):
            DepositAddressDeriver(key, Network.BITCOIN)


def test_network_is_required_and_typed() -> None:
    with pytest.raises(TypeError):
        DepositAddressDeriver(BIP84_ACCOUNT_ZPUB, "bitcoin")  # type: ignore[arg-type]


@pytest.mark.parametrize("index", [-1, 2**31, True, 1.0, "0", None])
def test_index_must_be_a_non_hardened_integer(index: object) -> None:
    deriver = DepositAddressDeriver(BIP84_ACCOUNT_ZPUB, Network.BITCOIN)
    with pytest.raises(ValidationError):
        deriver.receive(index)  # type: ignore[arg-type]


@pytest.mark.parametrize("chain", [2, -1, True, "0"])
def test_chain_is_receive_or_change(chain: object) -> None:
    deriver = DepositAddressDeriver(BIP84_ACCOUNT_ZPUB, Network.BITCOIN)
    with pytest.raises(ValidationError):
        deriver.script_pubkey(0, chain)  # type: ignore[arg-type]


def test_highest_index_derives() -> None:
    deriver = DepositAddressDeriver(BIP84_ACCOUNT_ZPUB, Network.BITCOIN)
    assert deriver.receive(2**31 - 1).startswith("bc1q")


def test_repr_does_not_reveal_the_account_key() -> None:
    deriver = DepositAddressDeriver(DESCRIPTOR_BODY, Network.REGTEST)
    assert TEST_ACCOUNT_TPUB not in repr(deriver)
    assert ROOT_FINGERPRINT in repr(deriver)


# --- gap policy --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "issued, used, run, gap",
    [
        (0, [], 0, 20),
        (100, [], 0, 20),  # nothing used: a restoring wallet finds nothing, correctly
        (100, [0, 1, 2], 0, 20),
        (100, [0, 30], 29, 30),
        (100, [5], 5, 20),
        (100, [0, 30, 99], 68, 69),
        (100, [0, 150], 0, 20),  # indices beyond what was issued are ignored
    ],
)
def test_gap_policy(issued: int, used: list[int], run: int, gap: int) -> None:
    assert max_unused_run(issued, used) == run
    assert restore_gap_limit(issued, used) == gap


def _bip44_scan(used: set[int], gap_limit: int) -> set[int]:
    """What a BIP44 wallet restoring with ``gap_limit`` finds: it stops after gap_limit unused in a row."""
    found, unused_in_a_row, index = set(), 0, 0
    while unused_in_a_row < gap_limit:
        if index in used:
            found.add(index)
            unused_in_a_row = 0
        else:
            unused_in_a_row += 1
        index += 1
    return found


@given(st.sets(st.integers(min_value=0, max_value=299), max_size=30))
def test_restore_gap_limit_finds_every_used_address(used: set[int]) -> None:
    gap = restore_gap_limit(300, used)
    assert _bip44_scan(used, gap) == used
    if used and max_unused_run(300, used) >= 20:
        assert _bip44_scan(used, gap - 1) != used  # and it is the smallest such limit
