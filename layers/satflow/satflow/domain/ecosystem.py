"""Wallet ecosystem rules (pure): API key scopes and labels, Lightning Address usernames (LUD-16), LNURL-pay
metadata (LUD-06), LNURL bech32 encoding, withdraw-link bounds (LUD-03)."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from .accounts import ALL_SCOPES, Scope
from .errors import ValidationError

# ------------------------------------------------------------------------------------------------ API keys
MAX_ACTIVE_KEYS = 20  # per account: enough for every app and device, small enough to list in one query
_LABEL_RE = re.compile(r"^[\x20-\x7e]{1,64}$")
_KEY_ID_RE = re.compile(r"^key_[a-z2-7]{26}$")


def parse_scopes(raw: object) -> frozenset[Scope]:
    """A non-empty list of distinct scope names, e.g. ["read"] (read-only) or ["receive"] (receive-only)."""
    names = [s.value for s in ALL_SCOPES]
    if not isinstance(raw, list) or not raw or not all(isinstance(s, str) for s in raw):
        raise ValidationError(f"scopes must be a non-empty list of {', '.join(names)}", field="scopes")
    if len(set(raw)) != len(raw) or not set(raw) <= set(names):
        raise ValidationError(f"scopes must be distinct values of {', '.join(names)}", field="scopes")
    return frozenset(Scope(s) for s in raw)


def scope_list(scopes: frozenset[Scope]) -> list[str]:
    """Scopes in their canonical order (read, receive, send)."""
    return [s.value for s in ALL_SCOPES if s in scopes]


def validate_label(label: object) -> str | None:
    if label is None:
        return None
    if not isinstance(label, str) or not _LABEL_RE.match(label):
        raise ValidationError("label must be 1-64 printable ASCII characters", field="label")
    return label


def validate_key_id(key_id: object) -> str:
    if not isinstance(key_id, str) or not _KEY_ID_RE.match(key_id):
        raise ValidationError("key_id must be a key id (key_ followed by 26 characters)", field="key_id")
    return key_id


@dataclass(frozen=True)
class ApiKeyRecord:
    """What is stored about a key besides its hash: enough to list it (prefix only) and to revoke it."""

    key_id: str
    account_id: str
    key_hash: str
    prefix: str
    scopes: frozenset[Scope]
    label: str | None
    created_at: str
    status: str = "active"  # active | revoked
    revoked_at: str | None = None

    def view(self) -> dict:
        return {"key_id": self.key_id, "prefix": self.prefix, "scopes": scope_list(self.scopes),
                "label": self.label, "status": self.status, "created_at": self.created_at,
                "revoked_at": self.revoked_at}


# ------------------------------------------------------------------------------------------------ usernames
# LUD-16: the username part of a Lightning Address is limited to a-z0-9-_.
_USERNAME_RE = re.compile(r"^[a-z0-9_.\-]{1,64}$")
# Names a payer could mistake for the operator; never claimable by a customer (the admin may assign them).
RESERVED_USERNAMES = frozenset({"admin", "administrator", "root", "support", "help", "security", "satflow",
                                "postmaster", "abuse", "noreply", "no-reply", "billing", "info", "www"})


def validate_username(raw: object, *, allow_reserved: bool = False) -> str:
    """Lower-cased (addresses are case-insensitive for payers) and checked against the LUD-16 charset."""
    if not isinstance(raw, str):
        raise ValidationError("username must be a string", field="username")
    name = raw.strip().lower()
    if not _USERNAME_RE.match(name) or name.startswith(".") or name.endswith(".") or ".." in name:
        raise ValidationError("username must be 1-64 characters of a-z 0-9 - _ . (no leading, trailing or double "
                              "dot)", field="username")
    if name in RESERVED_USERNAMES and not allow_reserved:
        raise ValidationError(f"username {name!r} is reserved", field="username")
    return name


# ------------------------------------------------------------------------------------------------ LNURL-pay
MIN_SENDABLE_MSAT = 1_000  # 1 sat: wallets show sat amounts; a sub-sat payment is not worth an HTLC
COMMENT_ALLOWED = 140  # LUD-12: the longest comment we keep with the invoice


def pay_metadata(username: str, domain: str) -> str:
    """LUD-06 metadata, a JSON string. It must be byte-identical in the first response and the callback, because
    the invoice commits to its sha256 (LUD-06 description hash), so it depends on the address only."""
    address = f"{username}@{domain}"
    return json.dumps([["text/plain", f"Payment to {address}"], ["text/identifier", address]],
                      separators=(",", ":"))


def metadata_hash(metadata: str) -> str:
    return hashlib.sha256(metadata.encode("utf-8")).hexdigest()


def parse_msat(raw: object, field: str) -> int:
    """A query-string amount in msat: digits only (no sign, no exponent, no decimals)."""
    if not isinstance(raw, str) or not re.fullmatch(r"[0-9]{1,19}", raw):
        raise ValidationError(f"{field} must be a whole number of millisatoshi", field=field)
    return int(raw)


def validate_comment(raw: object) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or len(raw) > COMMENT_ALLOWED or any(ord(c) < 0x20 for c in raw):
        raise ValidationError(f"comment must be at most {COMMENT_ALLOWED} printable characters", field="comment")
    return raw


# ------------------------------------------------------------------------------------------------ LNURL-withdraw
MAX_WITHDRAW_USES = 1_000
MAX_WITHDRAW_EXPIRY_S = 30 * 24 * 3600
DEFAULT_WITHDRAW_EXPIRY_S = 24 * 3600
_K1_RE = re.compile(r"^[0-9a-f]{64}$")


def validate_k1(raw: object) -> str:
    if not isinstance(raw, str) or not _K1_RE.match(raw):
        raise ValidationError("k1 must be 64 hex characters", field="k1")
    return raw


def k1_hash(k1: str) -> str:
    """Withdraw links are bearer secrets: only their hash is stored (like API keys)."""
    return hashlib.sha256(bytes.fromhex(k1)).hexdigest()


def _int_field(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{field} must be an integer from {low} to {high}", field=field)
    return value


@dataclass(frozen=True)
class WithdrawTerms:
    min_msat: int
    max_msat: int
    uses: int
    expiry_s: int
    description: str


def validate_withdraw_terms(min_msat: object, max_msat: object, uses: object, expiry_s: object,
                            description: object, per_tx_limit_msat: int) -> WithdrawTerms:
    low = _int_field(min_msat, "min_withdrawable_msat", MIN_SENDABLE_MSAT, per_tx_limit_msat)
    high = _int_field(max_msat, "max_withdrawable_msat", MIN_SENDABLE_MSAT, per_tx_limit_msat)
    if low > high:
        raise ValidationError("min_withdrawable_msat must not exceed max_withdrawable_msat",
                              field="min_withdrawable_msat")
    n = _int_field(1 if uses is None else uses, "uses", 1, MAX_WITHDRAW_USES)
    ttl = _int_field(DEFAULT_WITHDRAW_EXPIRY_S if expiry_s is None else expiry_s, "expiry_s", 60,
                     MAX_WITHDRAW_EXPIRY_S)
    text = "" if description is None else description
    if not isinstance(text, str) or len(text) > COMMENT_ALLOWED:
        raise ValidationError(f"description must be at most {COMMENT_ALLOWED} characters", field="description")
    return WithdrawTerms(low, high, n, ttl, text)


# ------------------------------------------------------------------------------------------------ bech32 LNURL
_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _polymod(values: list[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def lnurl_encode(url: str) -> str:
    """LUD-01: bech32 (not bech32m) of the URL's bytes with hrp "lnurl", upper-case, without BIP-173's 90-character
    limit (which is why a Bitcoin address encoder cannot be reused)."""
    hrp = "lnurl"
    acc, bits, data = 0, 0, []
    for byte in url.encode("utf-8"):
        acc = (acc << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            data.append((acc >> bits) & 31)
    if bits:
        data.append((acc << (5 - bits)) & 31)
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    poly = _polymod(expanded + data + [0] * 6) ^ 1
    checksum = [(poly >> 5 * (5 - i)) & 31 for i in range(6)]
    return (hrp + "1" + "".join(_CHARSET[d] for d in data + checksum)).upper()
