"""Use cases of per-tier limits: ``GET /v1/limits`` and the admission every send goes through.

Every send (internal transfer, Lightning reserve, payout reserve) runs its ledger transaction through
:func:`admit_with_retry`, which adds the account's conditional limit update to that same transaction::

    result = admit_with_retry(svc, account_id, amount_msat,
                              lambda extra: svc.ledger.execute(transfer, own_items + extra))

``svc.limits`` is the store (``DynamoLimitStore``) and ``svc.tier_limits`` the tier table
(``satflow.domain.limits.DEFAULT_TIER_LIMITS`` or ``parse_tier_limits(SATFLOW_TIER_LIMITS)``).
"""
from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence, TypeVar

from satflow.domain import errors
from satflow.domain.accounts import Principal, Scope
from satflow.domain.limits import (
    DEFAULT_TIER_LIMITS,
    LimitExceeded,
    LimitStateChanged,
    TierLimits,
    VelocityExceeded,
    admit,
    release,
    usage,
)

from .accounts import require_scope
from .ports import Services

log = logging.getLogger(__name__)

T = TypeVar("T")
Execute = Callable[[Sequence[Any]], T]  # runs the send's ONE ledger transaction with these extra TxItems
DEFAULT_ATTEMPTS = 5


def tier_limits(svc: Services, tier: int) -> TierLimits:
    table: Mapping[int, TierLimits] = getattr(svc, "tier_limits", None) or DEFAULT_TIER_LIMITS
    try:
        return table[tier]
    except KeyError:
        raise RuntimeError(f"no limits configured for tier {tier}") from None


def _store(svc: Services) -> Any:
    store = getattr(svc, "limits", None)
    if store is None:
        # Fail closed: a composition root that forgot the store must not move money without limits.
        raise RuntimeError("limits are not configured (svc.limits is None)")
    return store


def _account_limits(svc: Services, account_id: str, reads: Any = None) -> TierLimits:
    account = reads.account if reads is not None else svc.accounts.get(account_id)
    if account is None:
        raise errors.AccountNotFound(f"account {account_id} not found", account_id=account_id)
    return tier_limits(svc, account.tier)


# ---------------------------------------------------------------------------------------------- GET /v1/limits
def get_limits(svc: Services, principal: Principal) -> dict[str, int]:
    """What the caller's tier allows and what it used (scope ``read``). Usage is as of now: amounts fall out of
    the 24 h window to the hour, of the 30-day window to the day, sends out of the velocity window to the minute."""
    account_id = require_scope(principal, Scope.READ)
    account = svc.accounts.get(account_id)
    if account is None:  # a key whose account vanished: treat the key as invalid (as GET /v1/accounts/me does)
        raise errors.Unauthorized("invalid API key")
    limits = tier_limits(svc, account.tier)
    state, _ = _store(svc).read(account_id)
    used = usage(state, svc.unix_clock())
    return {
        "tier": account.tier,
        "per_tx_msat": limits.per_tx_msat,
        "daily_msat": limits.daily_msat,
        "monthly_msat": limits.monthly_msat,
        "sends_per_hour": limits.sends_per_hour,
        "used_daily_msat": used.used_daily_msat,
        "used_monthly_msat": used.used_monthly_msat,
        "sends_last_hour": used.sends_last_hour,
    }


# ---------------------------------------------------------------------------------------------- admission
def precheck(svc: Services, account_id: str, amount_msat: int) -> None:
    """Read-only early rejection (no write, no guarantee): for flows that must refuse *before* an irreversible
    side effect outside the ledger (e.g. cancelling a payee's invoice on LND for an internal payment). The
    transaction's own admission stays the real guard."""
    state, _ = _store(svc).read(account_id)
    admit(state, amount_msat, svc.unix_clock(), _account_limits(svc, account_id))


def admit_with_retry(svc: Services, account_id: str, amount_msat: int, execute: Execute[T],
                     attempts: int = DEFAULT_ATTEMPTS, *, reads: Any = None, send_id: str | None = None) -> T:
    """Admit one send of ``amount_msat`` by ``account_id`` and run its ledger transaction with the limit update
    in it: read -> admit -> ``execute(extra)``; when another send of the account committed in between
    (``LimitStateChanged``, or a DynamoDB TransactionConflict surfacing as a plain ``TransientError``), read and
    admit again, up to ``attempts`` times. Returns what ``execute`` returns.

    A limit rejection is confirmed in the transaction too (``reject_item``): if this very transfer already
    committed (a client retry with the same id), the ledger reports the replay and its result is returned;
    otherwise the ledger raises ``LimitExceeded``/``VelocityExceeded`` (or a rejection that takes precedence,
    e.g. ``ACCOUNT_FROZEN``) and nothing is written.

    ``execute`` must run exactly one ledger transaction with the transfer's id fixed across calls (the id is
    the idempotency key, so re-running it is safe).

    ``reads``: the request's :class:`~satflow.app.send_reads.SendReads` of this account; its account and limit
    item are used instead of reading them again (only a retry after a concurrent change re-reads the limit item).
    ``send_id``: the send's id (its transfer id), recorded with its amount among the account's recent sends on the
    limit item, in the same update (a risk input: amount against history)."""
    store = _store(svc)
    if reads is not None and reads.account_id != account_id:
        raise ValueError(f"reads of {reads.account_id} passed to admit a send of {account_id}")
    limits = _account_limits(svc, account_id, reads)
    for attempt in range(1, attempts + 1):
        record = reads.limits if reads is not None and attempt == 1 else store.read_record(account_id)
        state, version = record.window, record.version
        now = svc.unix_clock()
        try:
            new_state = admit(state, amount_msat, now, limits)
        except (LimitExceeded, VelocityExceeded) as rejection:
            return execute([store.reject_item(account_id, rejection)])  # raises unless this is a replay
        sends = None if send_id is None else _sends_with(svc, account_id, record, reads, send_id, amount_msat)
        try:
            return execute(store.admit_items(account_id, state, version, new_state, now=now, sends=sends))
        except errors.TransientError as exc:
            if not _retryable(exc) or attempt == attempts:
                raise
            log.info("limit state of %s changed during a send (attempt %d): re-admitting", account_id, attempt)
            _backoff(attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _sends_with(svc: Services, account_id: str, record: Any, reads: Any, send_id: str,
                amount_msat: int) -> list[tuple[str, int]]:
    """The account's recent sends with this one appended (a limit item from before sends were kept on it: derived
    from the ledger history once, so the item starts with the account's real past)."""
    from .send_reads import sends_from_history

    if record.sends is not None:
        base = tuple(record.sends)
    elif record.version == 0:
        base = ()
    elif reads is not None:
        base = reads.recent_sends(svc)
    else:
        from .send_reads import HISTORY_WINDOW
        from satflow.domain.money import BTC

        base = sends_from_history(svc.ledger.history(account_id, BTC, HISTORY_WINDOW).items)
    return [s for s in base if s[0] != send_id] + [(send_id, amount_msat)]


def release_with_retry(svc: Services, account_id: str, amount_msat: int, admitted_at: int | str,
                       execute: Execute[T], attempts: int = DEFAULT_ATTEMPTS) -> T:
    """Give back the amount of a send that did not happen, in the transaction that voids its reservation (failed
    Lightning payment, cancelled payout). ``admitted_at``: the send record's ``created_at`` (ISO, or unix seconds),
    which is never later than the admission (see ``domain.limits.release``). Velocity keeps counting the attempt.
    Same retry loop as admission; a replayed void is cancelled by its transfer item, so nothing is given twice."""
    store = _store(svc)
    admitted = admitted_at if isinstance(admitted_at, int) else iso_to_unix(admitted_at)
    for attempt in range(1, attempts + 1):
        state, version = store.read(account_id)
        now = svc.unix_clock()
        new_state = release(state, amount_msat, admitted, now)
        try:
            return execute([store.write_item(account_id, version, new_state, now=now)])
        except errors.TransientError as exc:
            if not _retryable(exc) or attempt == attempts:
                raise
            _backoff(attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _retryable(exc: errors.TransientError) -> bool:
    # Our own version conflict, or the ledger's plain TransientError (TransactionConflict / throttling). Not the
    # subclasses of other ports (a node being down is not fixed by re-reading the limit item).
    return isinstance(exc, LimitStateChanged) or type(exc) is errors.TransientError


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, 0.01 * 2 ** attempt))


def iso_to_unix(value: str) -> int:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp())
