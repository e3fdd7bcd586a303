"""Use cases: Lightning Address (LUD-16) + LNURL-pay (LUD-06, LUD-12 comments, LUD-09 message success action)
and LNURL-withdraw (LUD-03).

Money never takes a new path here: a pay callback creates the invoice through ``invoices.create_invoice`` (owner
and metadata stored by payment hash, credited by the existing inbound flow), and a withdraw callback pays through
``payments.create_payment`` (sanctions, limits, risk, reservation, audit, the payment workflow), as the account
itself would with a send-scoped key.

The public routes (``/.well-known/lnurlp/...``, ``/lnurlp/...``, ``/lnurlw/...``) answer an unknown, retired or
closed address, or an unknown/used/expired withdraw link, with the same 404 and the same body: nothing tells
an outsider which usernames exist beyond that 404.
"""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from urllib.parse import quote

from satflow.domain import errors
from satflow.domain.accounts import AccountStatus, Principal, Scope
from satflow.domain.audit import ADMIN_ACTOR, AuditEntry
from satflow.domain.errors import AuditHeadMoved
from satflow.domain.ecosystem import (
    COMMENT_ALLOWED, MIN_SENDABLE_MSAT, k1_hash, lnurl_encode, metadata_hash, parse_msat, pay_metadata,
    validate_comment, validate_k1, validate_username, validate_withdraw_terms,
)
from satflow.domain.ids import derive_id, new_id
from satflow.domain.payments import decode_payment_request

from . import invoices, payments
from .accounts import require_admin, require_scope
from .audit import with_audit
from .limits import tier_limits
from .ports import Services, iso_from_unix

log = logging.getLogger(__name__)

# Public routes: requests per client address per minute (the API Gateway route throttle caps the total).
PUBLIC_RATE_PER_MINUTE = 60
_NOT_FOUND = "no such Lightning Address"
RECLAIM_SCAN = 100  # uses a used-up link's callback looks at for FAILED payments to give back


@dataclass(frozen=True)
class Origin:
    """Where the API is reached from the outside (scheme://host), as the request says: API Gateway's domain name
    (the custom domain in production) and its forwarded protocol."""

    base_url: str

    @property
    def domain(self) -> str:
        return self.base_url.split("://", 1)[1]


def throttle(svc: Services, client_ip: str | None, route: str) -> None:
    if svc.rate_limiter is None:
        return
    if not svc.rate_limiter.allow(f"{route}#{client_ip or 'unknown'}", PUBLIC_RATE_PER_MINUTE, 60, svc.unix_clock()):
        raise errors.RateLimited("too many requests; retry in a minute")


# ------------------------------------------------------------------------------------------------ addresses
def address_view(username: str, origin: Origin) -> dict:
    url = f"{origin.base_url}/.well-known/lnurlp/{username}"
    return {"username": username, "address": f"{username}@{origin.domain}", "lnurl": lnurl_encode(url), "url": url}


def claim_address(svc: Services, principal: Principal, username: object, origin: Origin) -> tuple[dict, bool]:
    """The caller's account claims a username (receive scope). Returns (view, created); claiming the name the
    account already holds is a replay (created False)."""
    account_id = require_scope(principal, Scope.RECEIVE)
    name = validate_username(username)
    at = svc.clock()
    entry = AuditEntry(at=at, actor=account_id, action="lightning_address.claimed", subject_ids=(account_id,),
                       details={"username": name})
    # A retry finds the claim made (claim returns False: nothing written, the record is in the first attempt).
    created = with_audit(svc, entry, lambda extra: svc.lnurl.claim(account_id, name, at, extra=extra))
    return address_view(name, origin), created


def get_address(svc: Services, principal: Principal, origin: Origin) -> dict:
    account_id = require_scope(principal, Scope.READ)
    name = svc.lnurl.username_of(account_id)
    if name is None:
        raise errors.LightningAddressNotFound("this account has no Lightning Address yet")
    return address_view(name, origin)


def admin_set_address(svc: Services, principal: Principal, account_id: str, username: object,
                      origin: Origin) -> dict:
    """Admin: give an account a username or change it. The old username is retired (never reassigned); the
    change and its audit record are one transaction."""
    require_admin(principal)
    if svc.accounts.get(account_id) is None:
        raise errors.AccountNotFound(f"account {account_id} not found", account_id=account_id)
    name = validate_username(username, allow_reserved=True)
    old = svc.lnurl.username_of(account_id)
    if old == name:
        return address_view(name, origin)
    at = svc.clock()
    entry = AuditEntry(at=at, actor=ADMIN_ACTOR, action="lightning_address.changed", subject_ids=(account_id,),
                       details={"from": old, "to": name})
    try:
        with_audit(svc, entry, lambda extra: svc.lnurl.change(account_id, old, name, at, extra=extra))
    except (errors.UsernameTaken, errors.Conflict):
        # A retry after an unknown outcome (with_audit's, or the admin's) finds the change made: success.
        if svc.lnurl.username_of(account_id) != name:
            raise
    return address_view(name, origin)


# ------------------------------------------------------------------------------------------------ LNURL-pay
def _receiving_account(svc: Services, username: object):
    try:
        name = validate_username(username, allow_reserved=True)
    except errors.ValidationError:
        raise errors.LightningAddressNotFound(_NOT_FOUND) from None
    account_id = svc.lnurl.resolve(name)
    account = None if account_id is None else svc.accounts.get(account_id)
    if account is None or account.status is AccountStatus.CLOSED:
        raise errors.LightningAddressNotFound(_NOT_FOUND)
    return name, account


def _sendable(svc: Services, account) -> tuple[int, int]:
    """What a payer may send: 1 sat up to the receiving account's per-transaction limit."""
    return MIN_SENDABLE_MSAT, tier_limits(svc, account.tier).per_tx_msat


def pay_request(svc: Services, username: object, origin: Origin, client_ip: str | None) -> dict:
    """LUD-06 first step (also the LUD-16 ``/.well-known/lnurlp/<username>`` answer)."""
    throttle(svc, client_ip, "lnurlp")
    name, account = _receiving_account(svc, username)
    low, high = _sendable(svc, account)
    return {"tag": "payRequest", "callback": f"{origin.base_url}/lnurlp/{quote(name)}/callback",
            "minSendable": low, "maxSendable": high, "metadata": pay_metadata(name, origin.domain),
            "commentAllowed": COMMENT_ALLOWED}


def pay_callback(svc: Services, username: object, amount: object, comment: object, origin: Origin,
                 client_ip: str | None) -> dict:
    """LUD-06 second step: an invoice for ``amount`` msat committing to sha256(metadata), created like any
    invoice of the account (so the existing inbound flow credits it)."""
    throttle(svc, client_ip, "lnurlp")
    name, account = _receiving_account(svc, username)
    msat = parse_msat(amount, "amount")
    low, high = _sendable(svc, account)
    if not low <= msat <= high:
        raise errors.ValidationError(f"amount must be from {low} to {high} msat", field="amount")
    note = validate_comment(comment)
    metadata = pay_metadata(name, origin.domain)
    receiver = Principal(account_id=account.account_id, scopes=frozenset({Scope.RECEIVE}))
    invoice = invoices.create_invoice(
        svc, receiver, amount_msat=msat, memo=note, description_hash=metadata_hash(metadata),
        metadata={"via": "lnurl-pay", "address": f"{name}@{origin.domain}", **({"comment": note} if note else {})})
    log.info("lnurl-pay invoice", extra={"account_id": account.account_id, "payment_hash": invoice.payment_hash,
                                         "amount_msat": msat})
    return {"pr": invoice.payment_request, "routes": [],
            "successAction": {"tag": "message", "message": f"Paid to {name}@{origin.domain}"}}


# ------------------------------------------------------------------------------------------------ LNURL-withdraw
def create_withdraw_link(svc: Services, principal: Principal, origin: Origin, *, min_withdrawable_msat: object,
                         max_withdrawable_msat: object, uses: object = None, expiry_s: object = None,
                         description: object = None) -> dict:
    """A withdraw link of the caller's account (send scope: whoever holds the link spends the account's money,
    within its bounds). The link embeds a random k1 that is stored only hashed: it is shown this once."""
    account_id = require_scope(principal, Scope.SEND)
    account = svc.accounts.get(account_id)
    if account is None or account.status is not AccountStatus.ACTIVE:
        raise errors.AccountFrozen("this account is not active and cannot send")
    terms = validate_withdraw_terms(min_withdrawable_msat, max_withdrawable_msat, uses, expiry_s, description,
                                    tier_limits(svc, account.tier).per_tx_msat)
    k1 = secrets.token_hex(32)
    link_id = new_id("wdl")
    now = svc.unix_clock()
    at = svc.clock()
    entry = AuditEntry(at=at, actor=account_id, action="withdraw_link.created", subject_ids=(account_id, link_id),
                       details={"min_msat": terms.min_msat, "max_msat": terms.max_msat, "uses": terms.uses,
                                "expires_at": iso_from_unix(now + terms.expiry_s)})
    # Not retried on an unknown outcome (the link's conditional puts would refuse the retry): the caller retries.
    with_audit(svc, entry, lambda extra: svc.lnurl.create_link(
        k1_hash=k1_hash(k1), link_id=link_id, account_id=account_id, min_msat=terms.min_msat,
        max_msat=terms.max_msat, uses=terms.uses, expires_at_unix=now + terms.expiry_s,
        description=terms.description, created_at=at, creator_key_hash=principal.key_hash, extra=extra),
               retry_on=(AuditHeadMoved,))
    url = f"{origin.base_url}/lnurlw/{k1}"
    return {"link_id": link_id, "lnurl": lnurl_encode(url), "url": url, "k1": k1,
            "min_withdrawable_msat": terms.min_msat, "max_withdrawable_msat": terms.max_msat, "uses": terms.uses,
            "remaining": terms.uses, "expires_at": iso_from_unix(now + terms.expiry_s), "status": "active"}


def link_view(link: dict) -> dict:
    return {"link_id": link["link_id"], "min_withdrawable_msat": link["min_msat"],
            "max_withdrawable_msat": link["max_msat"], "uses": link["uses"], "remaining": link["remaining"],
            "expires_at": iso_from_unix(link["expires_at_unix"]), "status": link["status"],
            "description": link["description"], "created_at": link["created_at"]}


def list_withdraw_links(svc: Services, principal: Principal) -> list[dict]:
    account_id = require_scope(principal, Scope.READ)
    return [link_view(link) for link in svc.lnurl.links(account_id)]


def disable_withdraw_link(svc: Services, principal: Principal, link_id: object) -> dict:
    account_id = require_scope(principal, Scope.SEND)
    digest = svc.lnurl.link_hash(account_id, link_id) if isinstance(link_id, str) else None
    if digest is None:
        raise errors.WithdrawLinkNotFound("no such withdraw link")
    at = svc.clock()
    entry = AuditEntry(at=at, actor=account_id, action="withdraw_link.disabled", subject_ids=(account_id, link_id))
    # Idempotent: disabling a disabled link (a retry after an unknown outcome) writes nothing and succeeds.
    with_audit(svc, entry, lambda extra: svc.lnurl.disable_link(digest, at, extra=extra))
    return link_view(svc.lnurl.link(digest))


def disable_links_of_key(svc: Services, account_id: str, key_hash: str) -> int:
    """A revoked (or rotated) key's withdraw links stop paying: each is disabled with its audit record.
    Idempotent (a disabled link is skipped). The withdraw callback also refuses a link whose creating key is gone
    (a condition in the use transaction), so a crash before this finishes cannot leave a link paying."""
    disabled = 0
    for digest in svc.lnurl.links_of_key(account_id, key_hash):
        link = svc.lnurl.link(digest)
        if link is None or link["status"] != "active":
            continue
        at = svc.clock()
        entry = AuditEntry(at=at, actor=ADMIN_ACTOR, action="withdraw_link.disabled",
                           subject_ids=(account_id, link["link_id"]), details={"reason": "api key revoked"})
        disabled += with_audit(svc, entry, lambda extra, d=digest, t=at: svc.lnurl.disable_link(d, t, extra=extra))
    return disabled


def _link_alive(svc: Services, link: dict) -> bool:
    """Active, unexpired, and the key that made it not revoked (links made before creators were recorded have
    none to check)."""
    if link["status"] != "active" or link["expires_at_unix"] <= svc.unix_clock():
        return False
    creator = link.get("creator_key_hash")
    return creator is None or svc.accounts.api_key(creator) is not None


def _link_of(svc: Services, k1: object) -> tuple[str, dict]:
    try:
        digest = k1_hash(validate_k1(k1))
    except errors.ValidationError:
        raise errors.WithdrawLinkNotFound("no such withdraw link") from None
    link = svc.lnurl.link(digest)
    if link is None:
        raise errors.WithdrawLinkNotFound("no such withdraw link")
    return digest, link


def _usable_link(svc: Services, k1: object) -> tuple[str, dict]:
    digest, link = _link_of(svc, k1)
    if link["remaining"] <= 0 or not _link_alive(svc, link):
        raise errors.WithdrawLinkNotFound("no such withdraw link")
    return digest, link


def withdraw_request(svc: Services, k1: object, origin: Origin, client_ip: str | None) -> dict:
    """LUD-03 first step."""
    throttle(svc, client_ip, "lnurlw")
    _, link = _usable_link(svc, k1)
    return {"tag": "withdrawRequest", "callback": f"{origin.base_url}/lnurlw/{k1}/callback", "k1": k1,
            "minWithdrawable": link["min_msat"], "maxWithdrawable": link["max_msat"],
            "defaultDescription": link["description"]}


def withdraw_callback(svc: Services, k1: object, pr: object, client_ip: str | None) -> dict:
    """LUD-03 second step: pay ``pr`` from the link's account through the ordinary payment path. One use per
    invoice: the use is claimed (counter down, use item keyed by the payment hash) before the payment is created
    with an Idempotency-Key derived from the link and the hash, so a repeated callback (wallet retry, lost
    answer) finds both and pays nothing twice.

    A use is given back (``release``: only if the use's payment, found by its deterministic id, does not exist or
    FAILED, checked in the release transaction) when the payment was refused, when creating it failed transiently
    without creating it, and when it ends FAILED (at this callback, or lazily when a later callback finds the link
    used up). A repeated callback whose payment does not exist yet re-checks the link (active, unexpired, creator
    key not revoked): disabling a link stops every payment not yet created."""
    throttle(svc, client_ip, "lnurlw")
    digest, link = _link_of(svc, k1)
    request = decode_payment_request(pr, svc.network, svc.unix_clock())
    if request.amount_msat is None or not link["min_msat"] <= request.amount_msat <= link["max_msat"]:
        raise errors.WithdrawAmountOutOfRange(
            f"the invoice must be for {link['min_msat']} to {link['max_msat']} msat")
    idempotency_key = f"lnurlw:{link['link_id']}:{request.payment_hash}"
    payment_id = derive_id("pay", link["account_id"], "payment", idempotency_key)
    use = _claim_use(svc, digest, link, request.payment_hash, payment_id)
    if use["replayed"] and svc.lightning.get_payment(payment_id) is None and not _link_alive(svc, link):
        raise errors.WithdrawLinkNotFound("no such withdraw link")
    payer = Principal(account_id=link["account_id"], scopes=frozenset({Scope.SEND}))
    try:
        payment = payments.create_payment(svc, payer, idempotency_key, request.payment_request)
    except errors.SatflowError:
        _give_back(svc, digest, request.payment_hash, payment_id)
        raise
    log.info("lnurl-withdraw payment", extra={"link_id": link["link_id"], "payment_id": payment.payment_id,
                                              "status": payment.status.value, "replayed": use["replayed"]})
    if payment.status.value == "FAILED":
        _give_back(svc, digest, request.payment_hash, payment_id)
        return {"status": "ERROR", "reason": "the payment failed"}
    return {"status": "OK"}


def _claim_use(svc: Services, digest: str, link: dict, payment_hash: str, payment_id: str) -> dict:
    """Claim a use; when the link is used up, first give back the uses whose payments FAILED (a bounded look at
    its oldest uses) and try once more."""
    def claim() -> dict:
        return svc.lnurl.use(digest, payment_hash, svc.unix_clock(), svc.clock(),
                             creator_key_hash=link.get("creator_key_hash"), payment_id=payment_id)
    try:
        return claim()
    except errors.WithdrawLinkNotFound:
        fresh = svc.lnurl.link(digest)
        if fresh is None or fresh["remaining"] > 0 or not _link_alive(svc, fresh):
            raise
        reclaimed = 0
        for held in svc.lnurl.uses(digest, limit=RECLAIM_SCAN):
            paid = None if held["payment_id"] is None else svc.lightning.get_payment(held["payment_id"])
            if paid is not None and paid.status.value == "FAILED":
                reclaimed += svc.lnurl.release(digest, held["payment_hash"], held["payment_id"])
        if not reclaimed:
            raise
        return claim()


def _give_back(svc: Services, digest: str, payment_hash: str, payment_id: str) -> None:
    try:
        if svc.lnurl.release(digest, payment_hash, payment_id):
            log.info("lnurl-withdraw use given back", extra={"payment_id": payment_id})
    except errors.TransientError:  # the use stays held; a FAILED payment's use is reclaimed lazily
        log.warning("lnurl-withdraw use not given back (DynamoDB busy)", extra={"payment_id": payment_id})
