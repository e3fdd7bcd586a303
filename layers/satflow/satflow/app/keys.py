"""Use cases: API keys with scopes (issue, list by prefix, rotate, revoke) and idempotent account creation.

A key is shown once and stored only as its SHA-256 (design rule 9). Authentication reads the ``APIKEY#<hash>``
item alone; revoking deletes it, so a revoked key fails at once. Every key change writes its audit record in the
same transaction as the change.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from satflow.domain import errors
from satflow.domain.accounts import (
    ALL_SCOPES, Account, AccountStatus, Principal, Scope, hash_api_key, new_api_key, validate_account_id,
    validate_external_ref, validate_tier,
)
from satflow.domain.audit import ADMIN_ACTOR, AuditEntry
from satflow.domain.ecosystem import (
    MAX_ACTIVE_KEYS, ApiKeyRecord, parse_scopes, scope_list, validate_key_id, validate_label,
)
from satflow.domain.errors import AuditHeadMoved
from satflow.domain.ids import new_id, request_fingerprint

from .accounts import require_admin
from .audit import with_audit
from .ports import Services
from .transfers import validate_idempotency_key

KEY_PREFIX_CHARS = 10  # "sk_" + 7 characters: enough to tell keys apart in a list, useless for guessing


@dataclass(frozen=True)
class IssuedKey:
    record: ApiKeyRecord
    api_key: str  # the secret itself: returned to the caller this once, never stored


def _new_record(account_id: str, scopes: frozenset[Scope], label: str | None, at: str) -> IssuedKey:
    secret = new_api_key()
    return IssuedKey(ApiKeyRecord(key_id=new_id("key"), account_id=account_id, key_hash=hash_api_key(secret),
                                  prefix=secret[:KEY_PREFIX_CHARS], scopes=scopes, label=label, created_at=at),
                     secret)


def _actor(principal: Principal) -> str:
    return ADMIN_ACTOR if principal.is_admin else principal.account_id  # type: ignore[return-value]


def key_owner(svc: Services, principal: Principal, account_id: object = None) -> str:
    """Whose keys the caller may manage: the admin names any existing account; a customer key manages its own
    account's keys only if it holds every scope (a read-only or receive-only key handed to a point of sale must
    not mint itself a send key or revoke the owner's keys)."""
    if principal.is_admin:
        acc = validate_account_id(account_id)
        if svc.accounts.get(acc) is None:
            raise errors.AccountNotFound(f"account {acc} not found", account_id=acc)
        return acc
    if principal.account_id is None:
        raise errors.Forbidden("this route needs an account API key")
    if account_id is not None and account_id != principal.account_id:
        raise errors.Forbidden("a key manages its own account's keys only")
    if not set(ALL_SCOPES) <= principal.scopes:
        raise errors.Forbidden("managing keys needs a key with every scope (read, receive, send)")
    return principal.account_id


def issue_key(svc: Services, principal: Principal, scopes: object, label: object = None,
              account_id: object = None) -> IssuedKey:
    owner = key_owner(svc, principal, account_id)
    wanted, label = parse_scopes(scopes), validate_label(label)
    active = [k for k in svc.keys.list(owner) if k.status == "active"]
    if len(active) >= MAX_ACTIVE_KEYS:
        raise errors.TooManyApiKeys(f"an account holds at most {MAX_ACTIVE_KEYS} active keys; revoke one first")
    issued = _new_record(owner, wanted, label, svc.clock())
    entry = AuditEntry(at=issued.record.created_at, actor=_actor(principal), action="api_key.created",
                       subject_ids=(owner, issued.record.key_id), details={"scopes": scope_list(wanted)})
    # A fresh key id each time: the items' conditions make a retry after an unknown outcome impossible to double.
    with_audit(svc, entry, lambda extra: svc.keys.run([*svc.keys.new_key_items(issued.record), *extra]),
               retry_on=(AuditHeadMoved,))
    return issued


def list_keys(svc: Services, principal: Principal, account_id: object = None) -> list[ApiKeyRecord]:
    """Key records (prefix, scopes, label, status): never the key or its hash. A customer needs only the read
    scope to see its own account's keys."""
    if principal.is_admin:
        owner = key_owner(svc, principal, account_id)
    elif principal.account_id is None or Scope.READ not in principal.scopes:
        raise errors.Forbidden("this API key lacks the 'read' scope")
    else:
        owner = principal.account_id
    return sorted(svc.keys.list(owner), key=lambda k: k.created_at)


def _own_key(svc: Services, owner: str, key_id: object) -> ApiKeyRecord:
    record = svc.keys.get(owner, validate_key_id(key_id))
    if record is None or record.status != "active":
        raise errors.ApiKeyNotFound("no active key with this id")
    return record


def revoke_key(svc: Services, principal: Principal, key_id: object, account_id: object = None) -> ApiKeyRecord:
    """Revoke a key: it stops working at once, and the withdraw links it made are disabled. Idempotent: revoking
    a revoked key (a retry after an unknown outcome, with_audit's or the caller's) changes nothing and answers
    the revoked record; the link disabling runs again (it skips disabled links)."""
    owner = key_owner(svc, principal, account_id)
    record = svc.keys.get(owner, validate_key_id(key_id))
    if record is None:
        raise errors.ApiKeyNotFound("no key with this id")
    if record.status == "active":
        at = svc.clock()
        entry = AuditEntry(at=at, actor=_actor(principal), action="api_key.revoked",
                           subject_ids=(owner, record.key_id))
        try:
            with_audit(svc, entry, lambda extra: svc.keys.run([*svc.keys.revoke_items(record, at), *extra]))
        except errors.ApiKeyNotFound:
            pass  # the record is no longer active: an earlier attempt (or a concurrent revoke) revoked it
    _disable_links(svc, record)
    revoked = svc.keys.get(owner, record.key_id)
    assert revoked is not None and revoked.status == "revoked"
    return revoked


def _disable_links(svc: Services, record: ApiKeyRecord) -> None:
    from . import lnurl  # app.lnurl imports app.accounts, like this module

    lnurl.disable_links_of_key(svc, record.account_id, record.key_hash)


def rotate_key(svc: Services, principal: Principal, key_id: object, account_id: object = None) -> IssuedKey:
    """A new key with the same scopes and label; the old one is revoked in the same transaction (no moment with
    both or neither). The old key's withdraw links are disabled, as on a revocation."""
    owner = key_owner(svc, principal, account_id)
    old = _own_key(svc, owner, key_id)
    issued = _new_record(owner, old.scopes, old.label, svc.clock())
    entry = AuditEntry(at=issued.record.created_at, actor=_actor(principal), action="api_key.rotated",
                       subject_ids=(owner, old.key_id, issued.record.key_id))
    with_audit(svc, entry, lambda extra: svc.keys.run(
        [*svc.keys.revoke_items(old, issued.record.created_at), *svc.keys.new_key_items(issued.record), *extra]),
               retry_on=(AuditHeadMoved,))
    _disable_links(svc, old)
    return issued


# ------------------------------------------------------------------------------------------------ accounts
@dataclass(frozen=True)
class CreatedAccount:
    account: Account
    api_key: str
    key_id: str
    replayed: bool  # True: an earlier request with this Idempotency-Key created the account; this is a new key


def create_account(svc: Services, principal: Principal, external_ref: object, tier: object,
                   idempotency_key: str | None = None) -> CreatedAccount:
    """Admin only. The account, its unique external_ref and a first key with every scope, in one transaction with
    its audit record (and its key record, so the key can be listed, rotated and revoked).

    With an Idempotency-Key the creation can be retried after a lost response: the retry finds the request's marker
    and returns the same account with a NEW key, revoking the key the earlier attempt issued (the secret was never
    stored, so it cannot be shown again; whoever got the lost response cannot keep using it). A different body
    under the same key is 409 IDEMPOTENCY_KEY_REUSED; without a key, a taken external_ref stays 409 ACCOUNT_EXISTS.
    """
    require_admin(principal)
    ref, level = validate_external_ref(external_ref), validate_tier(tier)
    key = validate_idempotency_key(idempotency_key, required=False)
    key_hash = None if key is None else hashlib.sha256(f"accounts\x1f{key}".encode()).hexdigest()
    fingerprint = request_fingerprint(ref, level)
    if key_hash is not None:
        marker = svc.keys.creation_marker(key_hash)
        if marker is not None:
            return _reissue(svc, marker, key_hash, fingerprint)
    account = Account(account_id=new_id("acc"), external_ref=ref, tier=level, status=AccountStatus.ACTIVE,
                      created_at=svc.clock())
    issued = _new_record(account.account_id, frozenset(ALL_SCOPES), "initial", account.created_at)
    extra_items = svc.keys.new_key_items(issued.record, with_auth_item=False)
    if key_hash is not None:
        extra_items.append(svc.keys.creation_marker_item(key_hash, account.account_id, fingerprint,
                                                         issued.record.key_id, account.created_at))
    entry = AuditEntry(at=account.created_at, actor=ADMIN_ACTOR, action="account.created",
                       subject_ids=(account.account_id,), details={"tier": account.tier})
    try:
        # Only a definitely cancelled attempt is retried here; an unknown outcome is the client's retry, which the
        # Idempotency-Key makes safe.
        with_audit(svc, entry, lambda extra: svc.accounts.create(
            account, issued.record.key_hash, issued.record.prefix, list(ALL_SCOPES), extra=[*extra_items, *extra],
            key_id=issued.record.key_id),
                   retry_on=(AuditHeadMoved,))
    except errors.Conflict:
        # A concurrent request with the same Idempotency-Key won the race (its marker or ref exists now).
        marker = None if key_hash is None else svc.keys.creation_marker(key_hash)
        if marker is None:
            raise
        return _reissue(svc, marker, key_hash, fingerprint)
    return CreatedAccount(account, issued.api_key, issued.record.key_id, replayed=False)


def _reissue(svc: Services, marker: dict, key_hash: str, fingerprint: str) -> CreatedAccount:
    if marker["fingerprint"] != fingerprint:
        raise errors.IdempotencyKeyReused("this Idempotency-Key was already used with a different request")
    account = svc.accounts.get(marker["account_id"])
    if account is None:
        raise errors.TransientError("the account of this request is not readable yet; retry")
    previous = svc.keys.get(account.account_id, marker["key_id"])
    issued = _new_record(account.account_id, frozenset(ALL_SCOPES), "initial", svc.clock())
    items = [*svc.keys.new_key_items(issued.record),
             svc.keys.move_marker_item(key_hash, marker["key_id"], issued.record.key_id)]
    if previous is not None and previous.status == "active":
        items[:0] = svc.keys.revoke_items(previous, issued.record.created_at)
    entry = AuditEntry(at=issued.record.created_at, actor=ADMIN_ACTOR, action="api_key.reissued",
                       subject_ids=(account.account_id, issued.record.key_id),
                       details={"replaces": marker["key_id"], "reason": "account creation retried"})
    with_audit(svc, entry, lambda extra: svc.keys.run([*items, *extra]), retry_on=(AuditHeadMoved,))
    return CreatedAccount(account, issued.api_key, issued.record.key_id, replayed=True)
