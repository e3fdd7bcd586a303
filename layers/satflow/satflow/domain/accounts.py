"""Customer accounts and API keys (pure)."""
from __future__ import annotations

import enum
import hashlib
import re
import secrets
from dataclasses import dataclass

from .errors import Forbidden, ValidationError

TIERS = range(0, 4)
_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:_.@\-]{0,127}$")
API_KEY_PREFIX = "sk_"
_KEY_RE = re.compile(r"^sk_[A-Za-z0-9_\-]{20,100}$")


class AccountStatus(str, enum.Enum):
    ACTIVE = "active"
    FROZEN = "frozen"  # cannot send; can still receive
    CLOSED = "closed"  # cannot send or receive


class Scope(str, enum.Enum):
    READ = "read"
    RECEIVE = "receive"
    SEND = "send"


ALL_SCOPES = (Scope.READ, Scope.RECEIVE, Scope.SEND)


@dataclass(frozen=True)
class Account:
    account_id: str
    external_ref: str
    tier: int
    status: AccountStatus
    created_at: str


@dataclass(frozen=True)
class Principal:
    """Who is calling: a customer account with scopes, or the admin."""

    account_id: str | None
    scopes: frozenset[Scope]
    is_admin: bool = False
    key_hash: str | None = None  # the SHA-256 of the API key used (who created a withdraw link, for revocation)


def require_admin(principal: Principal) -> None:
    """The one admin check, here in the domain so any use case module can call it without importing another
    (app.audit and app.accounts each need the other's code otherwise: an import cycle)."""
    if not principal.is_admin:
        raise Forbidden("this route needs the admin key")


_ACCOUNT_ID_RE = re.compile(r"^acc_[a-z2-7]{26}$")


def validate_account_id(account_id: object, field: str = "account_id") -> str:
    if not isinstance(account_id, str) or not _ACCOUNT_ID_RE.match(account_id):
        raise ValidationError(f"{field} must be an account id (acc_ followed by 26 characters)", field=field)
    return account_id


def validate_external_ref(ref: object) -> str:
    if not isinstance(ref, str) or not _REF_RE.match(ref):
        raise ValidationError(
            "external_ref must be 1-128 characters of letters, digits and :_.@- (e.g. tg:12345)",
            field="external_ref")
    if ref.startswith(("acc_", "sys:")):
        raise ValidationError("external_ref must not look like an account id", field="external_ref")
    return ref


def validate_tier(tier: object) -> int:
    if isinstance(tier, bool) or not isinstance(tier, int) or tier not in TIERS:
        raise ValidationError("tier must be an integer from 0 to 3", field="tier")
    return tier


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def looks_like_api_key(token: str) -> bool:
    return bool(_KEY_RE.match(token))


def hash_api_key(key: str) -> str:
    """Keys carry 256 bits of entropy, so one SHA-256 is enough (no slow KDF needed to resist guessing)."""
    return hashlib.sha256(key.encode()).hexdigest()
