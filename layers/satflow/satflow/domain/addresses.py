"""Deposit addresses: BIP84 (native segwit, p2wpkh) derivation from one account-level public key.

Input is either an extended public key at account depth (m/84'/coin'/account') or a Bitcoin Core style
descriptor ``wpkh([fingerprint/84h/1h/0h]tpub.../0/*)`` (``/<0;1>/*`` is accepted too). Receive addresses are
chain 0 (``.../0/i``), change is chain 1 (``.../1/i``), following BIP84.

Version bytes must agree with the configured network: xpub/zpub on mainnet, tpub/vpub on testnet, signet and regtest
(the three test networks share key versions; only the bech32 prefix differs: tb1 / tb1 / bcrt1). Private keys are
refused: this module never needs to sign, and a private key in the deposit configuration is a leak waiting to
happen.

Gap policy
----------
Addresses are issued from an atomic per-account counter, so every index below the counter has been handed out
exactly once, and the chain monitor watches *all* issued addresses. We therefore never need a gap limit ourselves:
a deposit to index 10 000 is seen even if indices 1..9 999 were never used.

An external wallet restoring from the same xpub (disaster recovery, audit) scans addresses in order and stops after
``gap_limit`` consecutive unused ones. It finds every used address only if its gap limit is larger than the longest
run of unused addresses that is followed by a used one. ``max_unused_run`` computes that run and
``restore_gap_limit`` the gap limit to configure; operations export both with the xpub.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from embit import base58, bip32
from embit.descriptor.checksum import checksum as descriptor_checksum
from embit.script import p2wpkh

from .bitcoin import Network
from .errors import ValidationError
from .errors import (  # noqa: F401  (re-exported: defined with every other typed error)
    InvalidAccountKey,
    WrongNetworkAccountKey,
)

HARDENED = 0x8000_0000
BIP84_PURPOSE = 84
ACCOUNT_DEPTH = 3  # m / purpose' / coin_type' / account'


class Chain(IntEnum):
    RECEIVE = 0
    CHANGE = 1


# --- extended key versions (BIP32 / SLIP-132) --------------------------------------------------------------------
_MAINNET_PUBLIC = {bytes.fromhex("0488b21e"): "xpub", bytes.fromhex("04b24746"): "zpub"}
_TEST_PUBLIC = {bytes.fromhex("043587cf"): "tpub", bytes.fromhex("045f1cf6"): "vpub"}
_OTHER_PURPOSE_PUBLIC = {  # BIP49 and multisig versions: valid keys, but not for single-key native segwit
    bytes.fromhex("049d7cb2"): "ypub",
    bytes.fromhex("0295b43f"): "Ypub",
    bytes.fromhex("02aa7ed3"): "Zpub",
    bytes.fromhex("044a5262"): "upub",
    bytes.fromhex("024289ef"): "Upub",
    bytes.fromhex("02575483"): "Vpub",
}
_PRIVATE = {
    bytes.fromhex(v)
    for v in (
        "0488ade4", "049d7878", "04b2430c", "0295b005", "02aa7a99",  # mainnet xprv yprv zprv Yprv Zprv
        "04358394", "044a4e28", "045f18bc", "024285b5", "02575048",  # test tprv uprv vprv Uprv Vprv
    )
}
# Descriptors for Bitcoin Core use the generic versions (Core does not parse zpub/vpub).
_GENERIC_PUBLIC_VERSION = {True: bytes.fromhex("0488b21e"), False: bytes.fromhex("043587cf")}

_BASE58_KEY = r"[1-9A-HJ-NP-Za-km-z]{100,120}"
_DESCRIPTOR_RE = re.compile(
    r"^wpkh\("
    r"(?:\[(?P<fingerprint>[0-9a-fA-F]{8})(?P<origin_path>(?:/[0-9]{1,10}['hH]?)*)\])?"
    rf"(?P<key>{_BASE58_KEY})"
    r"(?P<suffix>/0/\*|/<0;1>/\*)"
    r"\)"
    r"(?:#(?P<checksum>[a-z0-9]{8}))?$"
)


@dataclass(frozen=True)
class KeyOrigin:
    """Where the account key sits under the master key (from a descriptor); needed later for PSBT signing."""

    master_fingerprint: str  # 8 hex characters
    path: tuple[int, ...]  # e.g. (84 | HARDENED, 1 | HARDENED, 0 | HARDENED)

    def path_str(self) -> str:
        return "m" + "".join(f"/{i - HARDENED}h" if i >= HARDENED else f"/{i}" for i in self.path)


@dataclass(frozen=True)
class DerivedAddress:
    address: str
    script_pubkey_hex: str
    public_key_hex: str  # 33-byte compressed key
    chain: Chain
    index: int
    path: str  # from the master key when the origin is known ("m/84h/1h/0h/0/5"), else relative ("0/5")


class DepositAddressDeriver:
    """Derives BIP84 receive/change addresses of one account for one network."""

    def __init__(self, account_xpub_or_descriptor: str, network: Network) -> None:
        if not isinstance(network, Network):
            raise TypeError(f"network must be a Network, got {type(network).__name__}")
        if not isinstance(account_xpub_or_descriptor, str) or not account_xpub_or_descriptor.strip():
            raise InvalidAccountKey("account key must be a non-empty string", field="account_key")
        text = account_xpub_or_descriptor.strip()
        self.network = network
        if text.startswith("wpkh("):
            self._account_key, self.origin = _parse_descriptor(text, network)
        else:
            self._account_key, self.origin = _parse_account_key(text, network), None
        # Chain-level keys are derived once; each address then costs one public derivation.
        self._chain_keys = {chain: self._account_key.child(int(chain)) for chain in Chain}

    def __repr__(self) -> str:
        # The xpub reveals every address (and so every balance) of the account: keep it out of logs.
        origin = f"{self.origin.master_fingerprint}/{self.origin.path_str()[2:]}" if self.origin else "unknown"
        return f"DepositAddressDeriver(network={self.network.value!r}, origin={origin!r})"

    def derive(self, index: int, chain: Chain | int) -> DerivedAddress:
        chain = _validate_chain(chain)
        index = _validate_index(index)
        public_key = self._chain_keys[chain].child(index).key
        script = p2wpkh(public_key)
        relative = f"{int(chain)}/{index}"
        return DerivedAddress(
            address=script.address(self.network.embit_network),
            script_pubkey_hex=script.data.hex(),
            public_key_hex=public_key.sec().hex(),
            chain=chain,
            index=index,
            path=f"{self.origin.path_str()}/{relative}" if self.origin else relative,
        )

    def receive(self, index: int) -> str:
        return self.derive(index, Chain.RECEIVE).address

    def change(self, index: int) -> str:
        return self.derive(index, Chain.CHANGE).address

    def script_pubkey(self, index: int, chain: Chain | int) -> str:
        return self.derive(index, chain).script_pubkey_hex

    def descriptor(self, chain: Chain | int = Chain.RECEIVE) -> str:
        """A watch-only descriptor (with checksum) for one chain, in the form Bitcoin Core imports."""
        chain = _validate_chain(chain)
        key = self._account_key.to_base58(version=_GENERIC_PUBLIC_VERSION[self.network.is_mainnet])
        origin = f"[{self.origin.master_fingerprint}{self.origin.path_str()[1:]}]" if self.origin else ""
        body = f"wpkh({origin}{key}/{int(chain)}/*)"
        return f"{body}#{descriptor_checksum(body)}"


# --- parsing -----------------------------------------------------------------------------------------------------
def _parse_account_key(text: str, network: Network) -> bip32.HDKey:
    try:
        raw = base58.decode_check(text)
    except (ValueError, IndexError) as exc:
        raise InvalidAccountKey("account key is not valid base58check", field="account_key") from exc
    if len(raw) != 78:
        raise InvalidAccountKey("account key is not a BIP32 extended key", field="account_key")
    _check_version(raw[:4], network)
    try:
        key = bip32.HDKey.parse(raw)
    except Exception as exc:  # embit raises bare ValueError/HDError/EmbitError for bad points and versions
        raise InvalidAccountKey("account key does not decode", field="account_key") from exc
    if key.depth != ACCOUNT_DEPTH or key.child_number < HARDENED:
        raise InvalidAccountKey(
            "expected an account-level key (depth 3, m/84'/coin'/account'), "
            f"got depth {key.depth}",
            field="account_key",
        )
    return key


def _check_version(version: bytes, network: Network) -> None:
    if version in _PRIVATE:
        # Never echo the key: it is a secret.
        raise InvalidAccountKey(
            "a private extended key was given; configure the account's public key", field="account_key"
        )
    expected, other = (_MAINNET_PUBLIC, _TEST_PUBLIC) if network.is_mainnet else (_TEST_PUBLIC, _MAINNET_PUBLIC)
    if version in expected:
        return
    if version in other:
        raise WrongNetworkAccountKey(
            f"{other[version]} is not a {network.value} key; expected one of {sorted(expected.values())}",
            field="account_key",
            network=network.value,
        )
    if version in _OTHER_PURPOSE_PUBLIC:
        raise InvalidAccountKey(
            f"{_OTHER_PURPOSE_PUBLIC[version]} is not a BIP84 (native segwit single-key) account key",
            field="account_key",
        )
    raise InvalidAccountKey("unknown extended key version", field="account_key")


def _parse_descriptor(text: str, network: Network) -> tuple[bip32.HDKey, KeyOrigin | None]:
    match = _DESCRIPTOR_RE.match(text)
    if match is None:
        raise InvalidAccountKey(
            "descriptor must look like wpkh([fingerprint/84h/coin'h/account'h]xpub/0/*) or .../<0;1>/*",
            field="account_key",
        )
    if match["checksum"] is not None:
        body = text.split("#", 1)[0]
        if descriptor_checksum(body) != match["checksum"]:
            raise InvalidAccountKey("descriptor checksum mismatch", field="account_key")
    key = _parse_account_key(match["key"], network)
    if match["fingerprint"] is None:
        return key, None
    origin = KeyOrigin(match["fingerprint"].lower(), _parse_origin_path(match["origin_path"]))
    _check_origin(origin, network)
    return key, origin


def _parse_origin_path(path: str) -> tuple[int, ...]:
    steps = []
    for step in path.split("/")[1:]:
        hardened = step[-1] in "'hH"
        number = int(step[:-1] if hardened else step)
        if number >= HARDENED:
            raise InvalidAccountKey("derivation index out of range in key origin", field="account_key")
        steps.append(number | HARDENED if hardened else number)
    return tuple(steps)


def _check_origin(origin: KeyOrigin, network: Network) -> None:
    path = origin.path
    if len(path) != ACCOUNT_DEPTH or not all(step >= HARDENED for step in path):
        raise InvalidAccountKey(
            "key origin must be the hardened account path 84h/coin_type'h/account'h", field="account_key"
        )
    purpose, coin_type = path[0] - HARDENED, path[1] - HARDENED
    if purpose != BIP84_PURPOSE:
        raise InvalidAccountKey(f"key origin purpose is {purpose}h, expected 84h (BIP84)", field="account_key")
    if coin_type != network.bip32_coin_type:
        raise WrongNetworkAccountKey(
            f"key origin coin type {coin_type}h does not match {network.value} "
            f"(expected {network.bip32_coin_type}h)",
            field="account_key",
            network=network.value,
        )


def _validate_chain(chain: Chain | int) -> Chain:
    if isinstance(chain, bool) or not isinstance(chain, int) or chain not in (0, 1):
        raise ValidationError("chain must be 0 (receive) or 1 (change)", field="chain")
    return Chain(chain)


def _validate_index(index: int) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < HARDENED:
        raise ValidationError(f"address index must be an integer in [0, {HARDENED})", field="index")
    return index


# --- gap policy --------------------------------------------------------------------------------------------------
def max_unused_run(issued_count: int, used_indices: Iterable[int]) -> int:
    """Longest run of consecutive unused indices in [0, issued_count) that is followed by a used index.

    A trailing run (after the last used address) is not counted: a restoring wallet may stop there safely.
    """
    if isinstance(issued_count, bool) or not isinstance(issued_count, int) or issued_count < 0:
        raise ValidationError("issued_count must be a non-negative integer", field="issued_count")
    used = sorted({i for i in used_indices if 0 <= i < issued_count})
    longest, previous = 0, -1
    for index in used:
        longest = max(longest, index - previous - 1)
        previous = index
    return longest


def restore_gap_limit(issued_count: int, used_indices: Iterable[int]) -> int:
    """The gap limit an external wallet needs to find every used address (BIP44 wallets stop after ``gap``
    consecutive unused addresses, so the gap must exceed the longest inner unused run). Never below BIP44's 20."""
    return max(20, max_unused_run(issued_count, used_indices) + 1)
