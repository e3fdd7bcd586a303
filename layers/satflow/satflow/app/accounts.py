"""Use cases: authentication, account creation, account views."""
from __future__ import annotations

import hmac
import logging

from satflow.domain import errors
from satflow.domain.accounts import (
    Account,
    AccountStatus,
    Principal,
    Scope,
    hash_api_key,
    require_admin,
    validate_account_id,
    looks_like_api_key,
    validate_external_ref,
    validate_tier,
)
from satflow.domain.audit import ADMIN_ACTOR, AuditEntry

from .audit import with_audit
from .ports import Services

log = logging.getLogger(__name__)

ADMIN = Principal(account_id=None, scopes=frozenset(), is_admin=True)


def authenticate(svc: Services, authorization: str | None) -> Principal:
    """``Authorization: Bearer <key>`` -> the admin, or a customer account with its key's scopes."""
    if not authorization or not authorization.startswith("Bearer "):
        raise errors.Unauthorized("missing bearer token")
    token = authorization[len("Bearer "):].strip()
    if not token or not token.isascii():
        raise errors.Unauthorized("missing or malformed bearer token")
    if not looks_like_api_key(token):
        # Only non-sk_ tokens are compared with the admin key: customer requests never depend on Secrets Manager.
        if hmac.compare_digest(token.encode(), svc.admin_key().encode()):
            return ADMIN
        raise errors.Unauthorized("invalid API key")
    key_hash = hash_api_key(token)
    found = svc.accounts.api_key(key_hash)
    if found is None:
        raise errors.Unauthorized("invalid API key")
    account_id, scopes, key_id = found
    if key_id is None and getattr(svc, "keys", None) is not None:
        # A key issued before key records existed (issue 15): give it its record now, once, so it can be listed,
        # rotated and revoked. Never fails the request: the next authentication tries again.
        try:
            svc.keys.adopt_legacy_key(key_hash, svc.clock())
        except Exception:  # noqa: BLE001 - best effort, logged
            log.exception("could not create the key record of a legacy API key of %s", account_id)
    return Principal(account_id=account_id, scopes=scopes, key_hash=key_hash)


def require_scope(principal: Principal, scope: Scope) -> str:
    """The caller's account id, if it holds ``scope`` (the admin is not an account and has none)."""
    if principal.account_id is None:
        raise errors.Forbidden("this route needs an account API key")
    if scope not in principal.scopes:
        raise errors.Forbidden(f"this API key lacks the '{scope.value}' scope")
    return principal.account_id


def create_account(svc: Services, principal: Principal, external_ref: object, tier: object) -> tuple[Account, str]:
    """Admin only. Returns the account and its API key, which is shown this once and stored only hashed. The one
    creation path is ``keys.create_account`` (the key gets its key record, so it can be listed, rotated and
    revoked); this keeps the older call shape for callers that want only the account and the key."""
    from .keys import create_account as create_with_key_record  # app.keys imports this module

    created = create_with_key_record(svc, principal, external_ref, tier)
    return created.account, created.api_key


def get_account(svc: Services, principal: Principal) -> Account:
    account_id = require_scope(principal, Scope.READ)
    account = svc.accounts.get(account_id)
    if account is None:  # a key whose account vanished: treat the key as invalid
        raise errors.Unauthorized("invalid API key")
    return account


def update_account(svc: Services, principal: Principal, account_id: object, *, tier: object = None,
                   status: object = None) -> Account:
    """Admin: change an account's tier (limits apply from the next send) and/or status (frozen: cannot send;
    closed: cannot send or receive)."""
    require_admin(principal)
    account_id = validate_account_id(account_id)
    if tier is None and status is None:
        raise errors.ValidationError("set tier and/or status")
    new_tier = None if tier is None else validate_tier(tier)
    try:
        new_status = None if status is None else AccountStatus(status)
    except ValueError as exc:
        raise errors.ValidationError("status must be active, frozen or closed", field="status") from exc
    at = svc.clock()
    changes: dict[str, object] = {}
    if new_tier is not None:
        changes["tier"] = new_tier
    if new_status is not None:
        changes["status"] = new_status.value
    entry = AuditEntry(at=at, actor=ADMIN_ACTOR, action="account.updated", subject_ids=(account_id,),
                       details=changes)
    # Setting the same values twice is harmless, so any retryable failure is retried.
    return with_audit(svc, entry, lambda extra: svc.accounts.update(account_id, updated_at=at, status=new_status,
                                                                   tier=new_tier, extra=extra))


def resolve_account_id(svc: Services, to: object) -> str:
    """An account id (acc_...) or an external_ref -> the account id. Unknown -> 404."""
    if not isinstance(to, str) or not to:
        raise errors.ValidationError("to must be an account id or an external_ref", field="to")
    if to.startswith("acc_"):
        return validate_account_id(to, "to")  # existence is checked atomically by the ledger transaction
    account_id = svc.accounts.id_for_ref(validate_external_ref(to))
    if account_id is None:
        raise errors.AccountNotFound(f"no account with external_ref {to}")
    return account_id

