"""satflow.domain.bitcoin: networks, address validation (BIP173/BIP350 and Bitcoin Core vectors), dust,
size estimates, exact BTC amounts.

Vectors:
  BIP173  https://github.com/bitcoin/bips/blob/master/bip-0173.mediawiki#test-vectors
  BIP350  https://github.com/bitcoin/bips/blob/master/bip-0350.mediawiki#test-vectors
  Core    https://github.com/bitcoin/bitcoin/blob/master/src/test/data/key_io_valid.json
"""
from __future__ import annotations

from decimal import Decimal

import pytest
from embit import base58
from hypothesis import given
from hypothesis import strategies as st

from satflow.domain.bitcoin import (
    DUST_THRESHOLD_SAT,
    MAX_MONEY_SAT,
    AddressKind,
    InvalidAddress,
    InvalidBtcAmount,
    Network,
    UnsupportedAddressType,
    WrongNetworkAddress,
    btc_to_sat,
    dust_threshold_sat,
    estimate_tx_vbytes,
    fee_for_vbytes,
    input_vbytes,
    is_dust,
    output_vbytes,
    sat_to_btc,
    script_pubkey_kind,
    script_pubkey_to_address,
    validate_address,
)
from satflow.domain.errors import ValidationError

MAIN, TEST, SIGNET, REGTEST = Network.BITCOIN, Network.TESTNET, Network.SIGNET, Network.REGTEST
P2PKH, P2SH, P2WPKH, P2WSH, P2TR = (
    AddressKind.P2PKH, AddressKind.P2SH, AddressKind.P2WPKH, AddressKind.P2WSH, AddressKind.P2TR,
)


def _raises_exactly(error: type[Exception], address: object, network: Network, **kwargs: bool) -> None:
    with pytest.raises(InvalidAddress) as raised:
        validate_address(address, network, **kwargs)
    assert type(raised.value) is error, f"{address!r}: {type(raised.value).__name__}: {raised.value}"


# --- networks ----------------------------------------------------------------------------------------------------
def test_network_parameters() -> None:
    assert [n.bech32_hrp for n in Network] == ["bc", "tb", "tb", "bcrt"]
    assert (MAIN.p2pkh_version, MAIN.p2sh_version) == (0x00, 0x05)
    for network in (TEST, SIGNET, REGTEST):
        assert (network.p2pkh_version, network.p2sh_version) == (0x6F, 0xC4)
        assert network.bip32_coin_type == 1
    assert MAIN.bip32_coin_type == 0


@pytest.mark.parametrize(
    "chain, network",
    [("main", MAIN), ("test", TEST), ("testnet4", TEST), ("signet", SIGNET), ("regtest", REGTEST)],
)
def test_network_from_bitcoin_core_chain(chain: str, network: Network) -> None:
    assert Network.from_core_chain(chain) is network


def test_network_names_are_explicit() -> None:
    assert Network.from_name("regtest") is REGTEST
    for name in ("mainnet", "main", "", None, "Bitcoin"):
        with pytest.raises(ValidationError):
            Network.from_name(name)
    with pytest.raises(TypeError):
        validate_address("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "bitcoin")  # type: ignore[arg-type]


# --- valid addresses ---------------------------------------------------------------------------------------------
VALID = [
    # BIP173 / BIP350 segwit vectors (v0 bech32, v1 32-byte bech32m)
    ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", MAIN, P2WPKH, "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7", TEST, P2WSH,
     "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262"),
    ("tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy", TEST, P2WSH,
     "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433"),
    ("tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c", TEST, P2TR,
     "5120000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433"),
    ("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0", MAIN, P2TR,
     "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"),
    # Bitcoin Core key_io_valid.json, one of each kind per chain
    ("1FsSia9rv4NeEwvJ2GvXrX7LyxYspbN2mo", MAIN, P2PKH, "76a914a31c06bd463e3923bc1aadbde48b16976c08071788ac"),
    ("36j4NfKv6Akva9amjWrLG6MuSQym1GuEmm", MAIN, P2SH, "a914373b819a068f32b7a6b38b6b38729647cfde01c287"),
    ("mzK2FFDEhxqHcmrJw1ysqFkVyhUULo45hZ", TEST, P2PKH, "76a914ce28b26c57472737f5c3561a1761185bd8589a4388ac"),
    ("2NC2hEhe28ULKAJkW5MjZ3jtTMJdvXmByvK", TEST, P2SH, "a914ce0bba75891ff9ec60148d4bd4a09ee2dc5c933187"),
    ("mww4LvqtTMKvmeQvizPz2EQv26xTneWrbg", SIGNET, P2PKH, "76a914b4110ba93ac54afc14da3bdd19614774a2d55d2988ac"),
    ("2N1r7aC69VHeE7yQJPDLi9T1PYq4wnwvjuT", SIGNET, P2SH, "a9145e5a35ab44b3efaea5129ba22b88ba3e2976614587"),
    ("n4fajahJrAuKbN7uNsKjLjQkz9Qn5ewJXQ", REGTEST, P2PKH, "76a914fdeca3b08e38af53d7c4c60e3ad208ce5066441088ac"),
    ("2MxFajLApXpYk4VodBSZSt7rw8y4ryABkfA", REGTEST, P2SH, "a91436e9f191e0b75036a77f65e2eaa4752443233fbe87"),
    ("bc1qvyq0cc6rahyvsazfdje0twl7ez82ndmuac2lhv", MAIN, P2WPKH, "00146100fc6343edc8c874496cb2f5bbfec88ea9b77c"),
    ("bc1qyucykdlhp62tezs0hagqury402qwhk589q80tqs5myh3rxq34nwqhkdhv7", MAIN, P2WSH,
     "002027304b37f70e94bc8a0fbf500e0c957a80ebda87280ef58214d92f119811acdc"),
    ("bc1p83n3au0rjylefxq2nc2xh2y4jzz4pm6zxj4mw5pagdjjr2a9f36s6jjnnu", MAIN, P2TR,
     "51203c671ef1e3913f94980a9e146ba895908550ef4234abb7503d436521aba54c75"),
    ("tb1qcrh3yqn4nlleplcez2yndq2ry8h9ncg3qh7n54", TEST, P2WPKH, "0014c0ef1202759fff90ff19128936814321ee59e111"),
    ("tb1p35n52jy6xkm4wd905tdy8qtagrn73kqdz73xe4zxpvq9t3fp50aqk3s6gz", TEST, P2TR,
     "51208d2745489a35b75734afa2da43817d40e7e8d80d17a26cd4460b0055c521a3fa"),
    ("tb1q3vya2h5435jkugq2few7dmktlrwq4ejmfaw7kr", SIGNET, P2WPKH, "00148b09d55e958d256e200a4e5de6eecbf8dc0ae65b"),
    ("tb1pae5um27ahn8n73pgexe3kcwlp8dhswpn684h2k2w6t9a7w3eq65qephd5y", SIGNET, P2TR,
     "5120ee69cdabddbccf3f4428c9b31b61df09db783833d1eb75594ed2cbdf3a3906a8"),
    ("bcrt1qdavt4j2sd7dlhqsavtnfxvzppw6k7qy97tmnu9", REGTEST, P2WPKH, "00146f58bac9506f9bfb821d62e69330410bb56f0085"),
    ("bcrt1qan8gntac7z7me2ejt4hpru42ad2f759fmy0m3ejvs98656znv7eqga4uhv", REGTEST, P2WSH,
     "0020ecce89afb8f0bdbcab325d6e11f2aaeb549f50a9d91fb8e64c814faa685367b2"),
    ("bcrt1pfwxjqvtt4tcxrtdluukfmy2dv7xd2qzdfy6kajv5nwn4yam3wxkq3553uh", REGTEST, P2TR,
     "51204b8d20316baaf061adbfe72c9d914d678cd5004d49356ec9949ba752777171ac"),
]


@pytest.mark.parametrize("address, network, kind, script_hex", VALID)
def test_valid_addresses(address: str, network: Network, kind: AddressKind, script_hex: str) -> None:
    parsed = validate_address(address, network)
    assert (parsed.kind, parsed.script_pubkey_hex, parsed.network) == (kind, script_hex, network)
    assert script_pubkey_kind(script_hex) is kind
    # Canonical form round-trips through the scriptPubKey.
    assert script_pubkey_to_address(script_hex, network) == parsed.address
    if parsed.witness_version is not None:
        assert parsed.address == address.lower()
        # BIP173: an all-uppercase address is the same address (Core's tryCaseFlip).
        flipped = address.upper() if address.islower() else address.lower()
        assert validate_address(flipped, network) == parsed
    else:
        assert parsed.address == address


def test_test_networks_share_base58_versions_but_not_hrps() -> None:
    # testnet base58 addresses are also valid on signet and regtest (Core accepts them the same way)...
    for network in (TEST, SIGNET, REGTEST):
        assert validate_address("mzK2FFDEhxqHcmrJw1ysqFkVyhUULo45hZ", network).kind is P2PKH
    # ... while the bech32 prefix tells regtest apart.
    assert validate_address("tb1qcrh3yqn4nlleplcez2yndq2ry8h9ncg3qh7n54", SIGNET).kind is P2WPKH
    _raises_exactly(WrongNetworkAddress, "tb1qcrh3yqn4nlleplcez2yndq2ry8h9ncg3qh7n54", REGTEST)


# --- BIP350 valid but not a destination we pay to ----------------------------------------------------------------
FUTURE_SEGWIT = [
    ("bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y", MAIN,
     "5128751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6"),  # v1, 40 bytes
    ("BC1SW50QGDZ25J", MAIN, "6002751e"),  # v16
    ("bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", MAIN, "5210751e76e8199196d454941c45d1b3a323"),  # v2
    ("bc1z2rksukkjr8", MAIN, "520250ed"),  # Core key_io_valid
    ("tb1rgv5m6uvdk3kc7qsuz0c79v88ycr5w4wa", TEST, "53104329bd718db46d8f021c13f1e2b0e726"),
    ("bcrt1sx6p8njlx7h9mc2agz4yg82dzne23050ncq72cneeecez2pst8mahn8xecsf8g6hzx94420", REGTEST,
     "6028368279cbe6f5cbbc2ba8154883a9a29e5517d1f3c03cac4f39ce3225060b3efb799cd9c412746ae2"),
]


@pytest.mark.parametrize("address, network, script_hex", FUTURE_SEGWIT)
def test_future_witness_versions_are_valid_but_opt_in(address: str, network: Network, script_hex: str) -> None:
    _raises_exactly(UnsupportedAddressType, address, network)
    parsed = validate_address(address, network, allow_future_segwit=True)
    assert parsed.kind is AddressKind.WITNESS_UNKNOWN
    assert parsed.script_pubkey_hex == script_hex
    assert script_pubkey_to_address(script_hex, network) == address.lower()


# --- invalid addresses -------------------------------------------------------------------------------------------
INVALID = [
    # BIP350 invalid segwit addresses
    "tc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq5zuyut",  # invalid human-readable part
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd",  # bech32 instead of bech32m
    "tb1z0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqglt7rf",  # bech32 instead of bech32m
    "BC1S0XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ54WELL",  # bech32 instead of bech32m
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh",  # bech32m instead of bech32
    "tb1q0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq24jc47",  # bech32m instead of bech32
    "bc1p38j9r5y49hruaue7wxjce0updqjuyyx0kh56v8s25huc6995vvpql3jow4",  # invalid character in checksum
    "BC130XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ7ZWS8R",  # invalid witness version
    "bc1pw5dgrnzv",  # program length 1
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v8n0nx0muaewav253zgeav",  # program length 41
    "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P",  # v0 program length 16 (BIP141)
    "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq47Zagq",  # mixed case
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v07qwwzcrf",  # zero padding of more than 4 bits
    "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vpggkg4j",  # non-zero padding
    "bc1gmk9yu",  # empty data section
    # BIP173 invalid segwit addresses
    "tc1qw508d6qejxtdg4y5r3zarvary0c5xw7kg3g4ty",
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5",  # invalid checksum
    "BC13W508D6QEJXTDG4Y5R3ZARVARY0C5XW7KN40WF2",
    "bc1rw5uspcuh",
    "bc10w508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kw5rljs90",
    "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sL5k7",  # mixed case
    "bc1zw508d6qejxtdg4y5r3zarvaryvqyzf3du",
    "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3pjxtptv",
    # BIP173's v1+ examples used the bech32 checksum: BIP350 made them invalid
    "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7k7grplx",
    "BC1SW50QA3JX3S",
    "bc1zw508d6qejxtdg4y5r3zarvaryvg6kdaj",
    # base58: changed character (checksum), unknown version byte, wrong payload length, bad characters
    "1FsSia9rv4NeEwvJ2GvXrX7LyxYspbN2mp",
    base58.encode_check(b"\x30" + bytes(20)),  # Litecoin's P2PKH version
    base58.encode_check(b"\x00" + bytes(19)),
    base58.encode_check(b"\x05" + bytes(21)),
    "1FsSia9rv4NeEwvJ2GvXrX7LyxYspbN2m0",  # '0' is not base58
    # not addresses at all
    "",
    " bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4 ",
    "1" * 200,
    "lnbc1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypq",
]


@pytest.mark.parametrize("address", INVALID)
@pytest.mark.parametrize("network", list(Network))
def test_invalid_addresses_are_invalid_on_every_network(address: str, network: Network) -> None:
    # Malformed is reported as malformed, never as "wrong network": the structure is checked first.
    _raises_exactly(InvalidAddress, address, network)


@pytest.mark.parametrize("value", [None, 42, b"bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"])
def test_non_strings_are_invalid(value: object) -> None:
    _raises_exactly(InvalidAddress, value, MAIN)


WRONG_NETWORK = [
    ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", TEST),
    ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", REGTEST),
    ("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0", SIGNET),
    ("tb1qcrh3yqn4nlleplcez2yndq2ry8h9ncg3qh7n54", MAIN),
    ("bcrt1qdavt4j2sd7dlhqsavtnfxvzppw6k7qy97tmnu9", TEST),
    ("bcrt1qdavt4j2sd7dlhqsavtnfxvzppw6k7qy97tmnu9", MAIN),
    ("1FsSia9rv4NeEwvJ2GvXrX7LyxYspbN2mo", REGTEST),
    ("36j4NfKv6Akva9amjWrLG6MuSQym1GuEmm", TEST),
    ("mzK2FFDEhxqHcmrJw1ysqFkVyhUULo45hZ", MAIN),
    ("2MxFajLApXpYk4VodBSZSt7rw8y4ryABkfA", MAIN),
]


@pytest.mark.parametrize("address, network", WRONG_NETWORK)
def test_wrong_network_addresses(address: str, network: Network) -> None:
    with pytest.raises(WrongNetworkAddress) as raised:
        validate_address(address, network)
    assert raised.value.code == "WRONG_NETWORK_ADDRESS"
    assert raised.value.details["network"] == network.value


def test_error_codes() -> None:
    assert InvalidAddress.code == "INVALID_ADDRESS"
    assert UnsupportedAddressType.code == "UNSUPPORTED_ADDRESS_TYPE"
    assert issubclass(InvalidAddress, ValidationError) and issubclass(WrongNetworkAddress, ValidationError)


def test_scripts_without_an_address() -> None:
    for script_hex in ("6a0401020304", "51", "0014" + "00" * 19, "5129" + "00" * 41, "0011" + "00" * 17):
        assert script_pubkey_kind(script_hex) is None
        assert script_pubkey_to_address(script_hex, MAIN) is None


# --- dust --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, script_hex",
    [
        (P2PKH, "76a914a31c06bd463e3923bc1aadbde48b16976c08071788ac"),
        (P2SH, "a914373b819a068f32b7a6b38b6b38729647cfde01c287"),
        (P2WPKH, "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
        (P2WSH, "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262"),
        (P2TR, "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"),
    ],
)
def test_dust_thresholds_match_bitcoin_core(kind: AddressKind, script_hex: str) -> None:
    threshold = dust_threshold_sat(script_hex)
    assert threshold == DUST_THRESHOLD_SAT[kind]
    assert is_dust(threshold - 1, script_hex) and not is_dust(threshold, script_hex)


def test_well_known_dust_values() -> None:
    assert (DUST_THRESHOLD_SAT[P2PKH], DUST_THRESHOLD_SAT[P2WPKH], DUST_THRESHOLD_SAT[P2TR]) == (546, 294, 330)
    assert dust_threshold_sat("6a0401020304") == 0  # OP_RETURN is never dust
    assert dust_threshold_sat("0014" + "00" * 20, dust_relay_fee_sat_per_kvb=1000) == 98


# --- transaction sizes -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "inputs, outputs, vbytes",
    [
        ([P2WPKH], [P2WPKH, P2WPKH], 141),  # the classic 1-in 2-out native segwit payment
        ([P2WPKH], [P2WPKH], 110),
        ([P2TR], [P2TR], 111),  # taproot key path 1-in 1-out
        ([P2PKH], [P2PKH, P2PKH], 226),  # legacy 1-in 2-out
        # mixed: 40 wu fixed + 2 marker/flag + 272 + 592 + 1 (empty witness of the legacy input) + 124 = 1031 wu
        ([P2WPKH, P2PKH], [P2WPKH], 258),
    ],
)
def test_vbyte_estimates(inputs: list[AddressKind], outputs: list[AddressKind], vbytes: int) -> None:
    assert estimate_tx_vbytes(inputs, outputs) == vbytes


def test_vbyte_estimate_of_a_large_batch_counts_the_longer_output_count() -> None:
    # 253 outputs need a 3-byte compact size: 2 more bytes than 252 outputs plus one more output.
    small = estimate_tx_vbytes([P2WPKH], [P2WPKH] * 252)
    large = estimate_tx_vbytes([P2WPKH], [P2WPKH] * 253)
    assert large - small == output_vbytes(P2WPKH) + 2


def test_per_type_sizes() -> None:
    assert input_vbytes(P2WPKH) == 68 and input_vbytes(P2TR) == Decimal("57.5") and input_vbytes(P2PKH) == 148
    assert [output_vbytes(k) for k in (P2PKH, P2SH, P2WPKH, P2WSH, P2TR)] == [34, 32, 31, 43, 43]


def test_inputs_without_a_generic_size_are_refused() -> None:
    with pytest.raises(ValueError):
        estimate_tx_vbytes([P2SH], [P2WPKH])
    with pytest.raises(ValueError):
        estimate_tx_vbytes([], [P2WPKH])


def test_fees_round_up() -> None:
    assert fee_for_vbytes(141, 1) == 141
    assert fee_for_vbytes(141, Decimal("1.5")) == 212
    assert fee_for_vbytes(111, Decimal("0.1")) == 12
    with pytest.raises(TypeError):
        fee_for_vbytes(141, 1.5)  # type: ignore[arg-type]


# --- BTC amounts -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "amount, sat",
    [
        (Decimal("0.00100000"), 100_000),
        ("0.00100000", 100_000),
        ("0.00000001", 1),
        (Decimal("1E-8"), 1),
        (Decimal("0.000000010000"), 1),  # trailing zeros beyond 8 places are fine
        ("21000000", MAX_MONEY_SAT),
        ("20999999.97690000", 2_099_999_997_690_000),
        (Decimal("0"), 0),
        (Decimal("0E-8"), 0),
        (Decimal("0E-50"), 0),
        ("-0.00000282", -282),  # Core reports some fees as negative amounts
        (Decimal("1.5E+1"), 1_500_000_000),
    ],
)
def test_btc_to_sat_exact(amount: Decimal | str, sat: int) -> None:
    assert btc_to_sat(amount) == sat


@pytest.mark.parametrize(
    "amount",
    [
        0.001,  # float: already inexact
        1,  # int: BTC or sat? ambiguous
        True,
        None,
        Decimal("0.000000001"),
        "0.000000001",
        Decimal("1E-9"),
        Decimal("1E-999999999"),  # must not hang
        Decimal("21000000.00000001"),
        Decimal("1E+999999999"),
        Decimal("NaN"),
        Decimal("Infinity"),
        "1e-8",
        "1_000",
        " 1",
        "0x10",
        "",
        ".5",
    ],
)
def test_btc_to_sat_refuses(amount: object) -> None:
    with pytest.raises(InvalidBtcAmount):
        btc_to_sat(amount)  # type: ignore[arg-type]


def test_sat_to_btc_prints_like_core() -> None:
    assert str(sat_to_btc(100_000)) == "0.00100000"
    assert str(sat_to_btc(MAX_MONEY_SAT)) == "21000000.00000000"
    with pytest.raises(InvalidBtcAmount):
        sat_to_btc(1.0)  # type: ignore[arg-type]


@given(st.integers(min_value=-MAX_MONEY_SAT, max_value=MAX_MONEY_SAT))
def test_sat_btc_round_trip(sat: int) -> None:
    btc = sat_to_btc(sat)
    assert btc_to_sat(btc) == sat
    assert btc_to_sat(f"{btc:f}") == sat


@given(
    st.integers(min_value=0, max_value=MAX_MONEY_SAT),
    st.integers(min_value=1, max_value=9),
    st.integers(min_value=1, max_value=20),
)
def test_any_sub_satoshi_digit_is_refused(sat: int, digit: int, extra_places: int) -> None:
    # Built as text so no Decimal context rounding can swallow the extra digit.
    text = f"{sat_to_btc(sat):f}" + "0" * (extra_places - 1) + str(digit)
    with pytest.raises(InvalidBtcAmount):
        btc_to_sat(Decimal(text))
    with pytest.raises(InvalidBtcAmount):
        btc_to_sat(text)
