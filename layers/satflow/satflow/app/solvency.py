"""Use cases: the solvency check (monitor job ``solvency_check``), the send breaker, suspense items, and the daily
ledger invariant run (monitor job ``ledger_invariants``).

The check, per run (every 5 minutes; safe to run twice or concurrently: every write is keyed or conditional):

1. the ledger: each system account, summed over its shards (one Query per system owner: O(shards), no scan), and
   total user liabilities derived from them (the ledger sums to zero);
2. Lightning (LND REST): channel local balances + outgoing HTLCs + the node's on-chain wallet, against the node
   asset account; LND's payment list since a stored cursor, each payment matched with our hash locks: a SUCCEEDED
   payment that satflow did not make is booked against SUSPENSE at once (``foreign_payment``), one of ours the
   ledger has not posted yet explains part of the difference; invoices the node settled whose ledger credit is
   not there yet (in transit from the node to the ledger: published to the queue or not yet) explain another
   part, found by the check's own invoice scan watermark (never the catch-up's cursor);
3. on-chain: every output satflow tracks (AVAILABLE/RESERVED) verified with ``gettxout`` (confirmed view; Bitcoin
   Core and btcd alike, no wallet needed): the ones still unspent are what the chain says we hold; an input of a
   batch that confirmed but is not posted yet, and that batch's change, explain the difference; any other tracked
   output gone from the chain is unexplained (the chain monitor books it as a foreign spend when it sees the block);
4. the breaker: a source whose ``abs(unexplained) + foreign`` passes its threshold pauses outbound sends (audited,
   announced ``solvency.breaker_tripped``); a run that cannot read a source is stored as failed, and when no run has
   succeeded for ``max_check_age_s`` the breaker pauses too.

The send path reads the breaker item with :func:`require_sends_open`: one eventually consistent GetItem, cached per
container for ``breaker_cache_s`` (10 s by default): a trip reaches every container within that time, and a hot
send route pays at most one read per container per 10 s.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from satflow.domain import errors
from satflow.domain.accounts import Principal
from satflow.domain.audit import ADMIN_ACTOR, SYSTEM_ACTOR, AuditEntry
from satflow.domain.ids import new_id
from satflow.domain.ledger import Balance, SystemAccount, check_invariants
from satflow.domain.onchain import UtxoStatus
from satflow.domain.solvency import (
    DEFAULT_MAX_CHECK_AGE_S,
    DEFAULT_THRESHOLDS_SAT,
    FOREIGN_KINDS,
    LIGHTNING,
    ONCHAIN,
    PART_CHANGE_NOT_POSTED,
    PART_INVOICES_NOT_CREDITED,
    PART_PAYMENTS_NOT_POSTED,
    PART_PAYOUTS_NOT_POSTED,
    SENDS_PAUSED,
    SOURCE_ACCOUNT,
    SUSPENSE_FOREIGN_PAYMENT,
    SUSPENSE_KINDS,
    BreakerState,
    SolvencyCheck,
    SourceFigures,
    breaches_to_trip,
    SuspenseItem,
    assign_target,
    breaches,
    holding_msat,
    invariant_summary,
    liabilities_msat,
    suspense_assigned,
    suspense_booked,
    validate_reason,
)
from satflow.domain.webhooks import SOLVENCY_BREAKER_TRIPPED, SOLVENCY_SENDS_RESUMED, OutboxEvent, event_id

from .accounts import require_admin
from .ports import Services

log = logging.getLogger(__name__)

BREAKER_TRIPPED, SENDS_RESUMED = SOLVENCY_BREAKER_TRIPPED, SOLVENCY_SENDS_RESUMED
ANNOUNCE_ACCOUNT = "sys:solvency"  # outbox events of the breaker go to admin subscriptions only
PAYMENT_PAGES_PER_RUN = 10
PAYMENT_PAGE = 100
INVOICE_PAGE = 100
MAX_PAGE = 100

_BREAKER_CACHE: dict[int, tuple[float, BreakerState]] = {}


def _store(svc: Services) -> Any:
    if svc.solvency is None:
        raise RuntimeError("the solvency store is not configured (Services.solvency)")
    return svc.solvency


# ================================================================================================ the send path
def sends_blocked_because(svc: Services) -> str | None:
    """Why outbound sends may not start now (None: they may). No store wired (tests that do not care): open."""
    store = svc.solvency
    if store is None:
        return None
    ttl = svc.breaker_cache_s
    cached = _BREAKER_CACHE.get(id(store))
    now = svc.monotonic()
    if cached is not None and cached[0] > now:
        state = cached[1]
    else:
        state = store.breaker()
        if ttl > 0:
            _BREAKER_CACHE[id(store)] = (now + ttl, state)
    return state.blocked_because(svc.unix_clock(), svc.solvency_max_check_age_s)


def sends_allowed(svc: Services) -> bool:
    return sends_blocked_because(svc) is None


def require_sends_open(svc: Services) -> None:
    """First line of create_payment and create_payout: nothing is reserved when sends are paused."""
    reason = sends_blocked_because(svc)
    if reason is not None:
        raise errors.SendsPaused(f"outbound sends are paused by the solvency breaker: {reason}")


def forget_breaker_cache() -> None:
    _BREAKER_CACHE.clear()


# ================================================================================================ the check
def system_totals(svc: Services) -> dict[str, list[Balance]]:
    """Each system account's balance items (user accounts are never read)."""
    return {owner.value: svc.ledger.balances(owner.value) for owner in SystemAccount}


def run_check(svc: Services) -> SolvencyCheck:
    store = _store(svc)
    at, now = svc.clock(), svc.unix_clock()
    for attempt in (1, 2):
        system = system_totals(svc)
        totals = {owner: sum(b.available + b.pending_out for b in items) for owner, items in system.items()}
        open_suspense = store.suspense_items("open")
        sources = []
        for name, figures in ((LIGHTNING, _lightning), (ONCHAIN, _onchain)):
            try:
                sources.append(figures(svc, store, system, open_suspense, at))
            except Exception as exc:  # a node that cannot be read: the check fails, it does not guess
                log.exception("solvency check: %s could not be read", name)
                sources.append(SourceFigures(name, 0, 0, error=f"{type(exc).__name__}: {exc}"[:300]))
        reasons = breaches(sources, svc.solvency_thresholds_sat)
        if not reasons:
            break
        # The ledger and the node are read one after the other: a credit or a post landing in between shows as a
        # transient difference. A breach must still be there when everything is read again at once.
        if attempt == 1:
            log.warning("solvency check: breach on the first reading, reading again: %s", "; ".join(reasons))
    check = SolvencyCheck(new_id("sol"), at, tuple(sources), totals, liabilities_msat(totals), reasons)
    previous, _ = store.checks(1)  # before this one is saved
    store.save_check(check, now)
    breached = reasons
    reasons = breaches_to_trip(sources, breached, previous[0].get("breaches", []) if previous else [])
    if breached and not reasons:
        log.warning("solvency check: drift seen once, the breaker trips if the next check sees it too: %s",
                    "; ".join(breached))
    if check.ok:
        store.record_success(now)
    else:
        last = store.breaker(consistent=True)
        stale = BreakerState(last_success_at=last.last_success_at, resumed_at=last.resumed_at).blocked_because(
            now, svc.solvency_max_check_age_s)
        if stale:
            reasons = reasons + (stale,)
    if reasons:
        trip(svc, reasons, check)
    _emit(svc, check, tripped=bool(reasons))
    forget_breaker_cache()
    return check


def _emit(svc: Services, check: SolvencyCheck, tripped: bool) -> None:
    if svc.emit_metric is None:
        return
    for s in check.sources:
        if s.error is None:
            svc.emit_metric("SolvencyUnexplainedDriftMsat", abs(s.unexplained_msat), Source=s.source)
            svc.emit_metric("SolvencyForeignMsat", s.foreign_msat, Source=s.source)
    svc.emit_metric("SolvencyCheckFailed", 0 if check.ok else 1)
    svc.emit_metric("SolvencyBreakerTripped", 1 if tripped else 0)


def _foreign(open_suspense: list[SuspenseItem], source: str) -> int:
    return sum(i.amount_msat for i in open_suspense if i.source == source and i.kind in FOREIGN_KINDS)


def _lightning(svc: Services, store: Any, system: dict, open_suspense: list, at: str) -> SourceFigures:
    lnd = svc.lnd()
    node = lnd.node_balances()
    ours_not_posted, foreign_booked, in_flight = _scan_node_payments(svc, store, lnd, at)
    not_credited, credits_in_transit = _invoices_not_credited(svc, store, lnd)
    if foreign_booked:  # booked just now: read the node account again so the ledger side includes them
        system = {**system, SOURCE_ACCOUNT[LIGHTNING]: svc.ledger.balances(SOURCE_ACCOUNT[LIGHTNING])}
        open_suspense = _store(svc).suspense_items("open")
    parts = {PART_PAYMENTS_NOT_POSTED: -ours_not_posted, PART_INVOICES_NOT_CREDITED: not_credited}
    return SourceFigures(
        LIGHTNING, holding_msat(system[SOURCE_ACCOUNT[LIGHTNING]]), node.held_msat,
        {k: v for k, v in parts.items() if v}, _foreign(open_suspense, LIGHTNING),
        {"channel_local_msat": node.local_msat, "pending_open_local_msat": node.pending_open_local_msat,
         "htlcs_out_msat": node.htlcs_out_msat, "htlcs_in_msat": node.htlcs_in_msat,
         "node_wallet_msat": node.wallet_msat, "commit_fee_msat": node.commit_fee_msat,
         "payments_in_flight": in_flight, "foreign_payments_booked": foreign_booked,
         "invoice_credits_in_transit": credits_in_transit})


def _scan_node_payments(svc: Services, store: Any, lnd: Any, at: str) -> tuple[int, int, int]:
    """LND's payments after the cursor: (ours succeeded but not posted msat, foreign payments booked now, payments
    in flight). The cursor moves past a prefix of payments that need no more attention: final, and either
    foreign (booked), history, or ours and resolved on the ledger.

    The first check on a node: the payments it already made (up to ``history_end``, its latest one then) are in
    the operator's opening capital (POST /v1/admin/solvency/capital), so one without our hash lock is history, not
    foreign. Ours among them are scanned like any other: one in flight or not yet posted at that moment must still
    be explained (the cursor used to start after ``history_end`` and never saw them: unexplained drift)."""
    scan = store.payment_scan()
    if scan is None:
        latest, _ = lnd.list_payments(0, 1, newest_first=True)
        store.start_payment_scan(latest[-1].payment_index if latest else 0)
        scan = store.payment_scan()
    cursor, history_end = scan
    offset, advance_to, blocked = cursor, cursor, False
    not_posted = booked = in_flight = 0
    for _ in range(PAYMENT_PAGES_PER_RUN):
        payments, last = lnd.list_payments(offset, PAYMENT_PAGE)
        for p in payments:
            settled = True
            owner = store.payment_owner(p.payment_hash)
            if p.status not in ("SUCCEEDED", "FAILED"):
                in_flight += 1
                settled = False
            elif owner is None and p.status == "SUCCEEDED" and p.payment_index > history_end:
                booked += book_suspense(svc, kind=SUSPENSE_FOREIGN_PAYMENT, reference=p.payment_hash,
                                        amount_msat=p.value_msat + p.fee_msat, at=at,
                                        details={"payment_hash": p.payment_hash, "value_msat": p.value_msat,
                                                 "fee_msat": p.fee_msat, "payment_index": p.payment_index})
            elif owner is not None and p.status == "SUCCEEDED" and svc.ledger.pending_resolution(owner) is None:
                if svc.ledger.get_transfer(owner) is not None:  # reserved and still pending on the ledger
                    not_posted += p.value_msat + p.fee_msat
                    settled = False
            blocked = blocked or not settled
            if not blocked:
                advance_to = p.payment_index
        if not payments or last <= offset or len(payments) < PAYMENT_PAGE:
            break
        offset = last
    if advance_to > cursor:
        store.advance_payment_cursor(advance_to)
    return not_posted, booked, in_flight


def _invoices_not_credited(svc: Services, store: Any, lnd: Any) -> tuple[int, int]:
    """Money the node received for our invoices that the ledger has not credited yet: (msat, invoices).

    Credits in transit: the listener or the catch-up published the settlement and InvoiceFunction has not posted
    it yet (a queue backlog, a failing consumer, redeliveries). The catch-up's cursor cannot tell: it moves as
    soon as a settlement is PUBLISHED (before, a large payment received in that window showed as unexplained
    drift and paused every send). So the check keeps its own scan watermark (SOLVENCY/LNDINVSCAN): every invoice
    at or below it is final on the node (settled, cancelled) and, if settled and ours, fully credited on the
    ledger. Each run scans the node's invoices above it; for a SETTLED one, :func:`invoices.credit_due` (the
    credit's own rule) names the ledger entry still due for the node's amount paid (AMP: the increase, keyed by
    the new total), and the ledger says whether it exists. The watermark then moves over the prefix that is final
    and credited; an OPEN/ACCEPTED invoice or a credit still due holds it.

    First run (no watermark): from add_index 0, once: a settlement published before this check existed may still
    be in transit, and starting at the catch-up's watermark would miss exactly that (decisions log).

    Cost per run, n = invoices above the watermark (those created since the oldest one not yet final and
    credited; not the node's history): LND ceil((n + 1) / 100) GET /v1/invoices; DynamoDB 1 GetItem (watermark)
    + 1 GetItem per SETTLED invoice among the n (its record) + 1 GetItem per credit due (the ledger transfer)
    + at most 1 UpdateItem per page (only while the scanned prefix is final and credited).
    """
    from satflow.domain.lightning import InvoiceState

    from .invoices import credit_due

    watermark = store.invoice_watermark()
    start = offset = advance_to = watermark or 0
    blocked = False
    due_msat = due_count = 0
    while True:
        page = lnd.list_invoices(offset, INVOICE_PAGE)
        for inv in page.invoices:
            final = inv.state is InvoiceState.CANCELED
            if inv.state is InvoiceState.SETTLED:
                due = credit_due(svc.lightning.get_invoice(inv.payment_hash), inv.amt_paid_msat)
                if due is not None and svc.ledger.get_transfer(due[0]) is None:
                    due_msat += due[1]
                    due_count += 1
                else:
                    final = True  # credited, or not ours (nothing will credit it: unexplained, not in transit)
            blocked = blocked or not final
            if not blocked:
                advance_to = inv.add_index
        if advance_to > start:
            store.advance_invoice_watermark(advance_to)
            start = advance_to
        if len(page.invoices) < INVOICE_PAGE or page.last_index_offset <= offset:
            break
        offset = page.last_index_offset
    return due_msat, due_count


def _onchain(svc: Services, store: Any, system: dict, open_suspense: list, at: str) -> SourceFigures:
    rpc = svc.bitcoind()
    utxos = store.tracked_utxos()
    batches: dict[str, Any] = {}
    for u in utxos:
        if u.reserved_by and u.reserved_by not in batches:
            batches[u.reserved_by] = svc.payouts.get_batch(u.reserved_by) if svc.payouts else None
    from .payouts import abandoned_predecessors

    # Transactions of ours not posted yet: a SIGNED or BROADCAST batch's (the broadcast step sends before it records
    # BROADCAST: a crash in between leaves it SIGNED with its transaction out), and an ABANDONED predecessor's (its
    # signer may have broadcast it after all; the chain monitor records its change like any of ours).
    unposted = [b for b in batches.values() if b is not None and b.status.value in ("SIGNED", "BROADCAST")]
    unposted += [a for b in batches.values() if b is not None for a in abandoned_predecessors(svc, b)]
    unposted_txids = {txid: b for b in unposted for txid in b.txids}
    node_sat = payouts_not_posted = change_not_posted = gone = 0
    for u in utxos:
        value = rpc.gettxout(u.txid, u.vout, include_mempool=False)  # a spend in the mempool is not final yet
        if value is not None:
            node_sat += u.value_sat
            if u.txid in unposted_txids:
                change_not_posted += u.value_sat
            continue
        batch = batches.get(u.reserved_by or "")
        if u.status is UtxoStatus.RESERVED and batch is not None and _unposted_spender(svc, batch, u.outpoint):
            payouts_not_posted += u.value_sat
        else:
            gone += 1
            log.error("solvency: tracked output %s (%d sat, %s) is spent on chain by a transaction satflow did not "
                      "make (the chain monitor books it when it scans the block)", u.outpoint, u.value_sat,
                      u.status.value)
    parts = {PART_PAYOUTS_NOT_POSTED: -payouts_not_posted * 1000, PART_CHANGE_NOT_POSTED: change_not_posted * 1000}
    return SourceFigures(
        ONCHAIN, holding_msat(system[SOURCE_ACCOUNT[ONCHAIN]]), node_sat * 1000,
        {k: v for k, v in parts.items() if v}, _foreign(open_suspense, ONCHAIN),
        {"tracked_outputs": len(utxos), "tracked_sat": sum(u.value_sat for u in utxos), "unspent_on_chain_sat": node_sat,
         "gone_unexplained_outputs": gone})


def _unposted_spender(svc: Services, holder: Any, outpoint: str) -> bool:
    """A batch of ours not posted yet spent it: the holder once BROADCAST, or an ABANDONED batch the holder took the
    output over from, whose late transaction confirmed (the payout side's rule; sim seed 2 of the on-chain half
    tripped the breaker on that window until adoption)."""
    from .payouts import unposted_batch_spending

    return unposted_batch_spending(svc, holder, outpoint) is not None


# ================================================================================================ the breaker
def _announce(svc: Services, event_type: str, source: str, at: str, data: dict) -> list:
    if svc.webhooks is None:
        return []
    return svc.webhooks.outbox_items([OutboxEvent(event_id(source, event_type, ANNOUNCE_ACCOUNT), event_type,
                                                  ANNOUNCE_ACCOUNT, at, data)])


def trip(svc: Services, reasons: tuple[str, ...], check: SolvencyCheck | None = None) -> bool:
    """Pause sends (once: True when this call paused them), audited and announced in the same transaction."""
    from .audit import with_audit

    store = _store(svc)
    at = check.at if check else svc.clock()
    ref = check.check_id if check else new_id("sol")
    entry = AuditEntry(at=at, actor=SYSTEM_ACTOR, action="solvency.breaker_tripped", subject_ids=(ref,),
                       details={"reasons": [r[:200] for r in reasons[:5]]})
    items = [store.trip_item(reasons, at)] + _announce(svc, BREAKER_TRIPPED, ref, at,
                                                       {"check_id": ref, "reasons": list(reasons)})
    try:
        with_audit(svc, entry, lambda extra: store.run(items + list(extra)))
    except errors.Conflict:
        return False  # already paused: audited and announced when it tripped
    log.error("solvency breaker tripped: outbound sends paused (%s)", "; ".join(reasons))
    forget_breaker_cache()
    return True


def resume(svc: Services, principal: Principal, reason: object) -> BreakerState:
    """POST /v1/admin/solvency/resume: paused -> open, audited and announced; also the override when sends are
    blocked only by a stale check (buys one more max_check_age_s). Resuming sends that are open is a 409."""
    from .audit import with_audit

    require_admin(principal)
    why = validate_reason(reason)
    store = _store(svc)
    at, now = svc.clock(), svc.unix_clock()
    ref = new_id("res")
    entry = AuditEntry(at=at, actor=ADMIN_ACTOR, action="solvency.sends_resumed", subject_ids=(ref,),
                       details={"reason": why})
    items = [store.resume_item(admin=ADMIN_ACTOR, reason=why, at=at, now_unix=now,
                               stale_before=now - svc.solvency_max_check_age_s)] + _announce(
        svc, SENDS_RESUMED, ref, at, {"reason": why})
    with_audit(svc, entry, lambda extra: store.run(items + list(extra)))
    forget_breaker_cache()
    return store.breaker(consistent=True)


def book_capital(svc: Services, principal: Principal, idempotency_key: str | None, source: object,
                 amount_msat: object, direction: object, reason: object) -> Any:
    """POST /v1/admin/solvency/capital: the operator's own funds entering or leaving a source (e.g. the node's
    channels at deployment), booked against owner equity; audited by the ledger entry. Idempotency-Key required."""
    from satflow.domain.ids import derive_id
    from satflow.domain.money import validate_amount
    from satflow.domain.solvency import capital_booked

    from .transfers import validate_idempotency_key

    require_admin(principal)
    key = validate_idempotency_key(idempotency_key)
    validate_amount(amount_msat, field="amount_msat")
    transfer = capital_booked(transfer_id=derive_id("cap", key), source=source, amount_msat=amount_msat,  # type: ignore[arg-type]
                              direction=direction, reason=reason, created_at=svc.clock(),  # type: ignore[arg-type]
                              shards=svc.system_shards)
    return svc.ledger.execute(transfer).transfer


def solvency_view(svc: Services, principal: Principal, limit: object = None, cursor: object = None) -> dict:
    """GET /v1/admin/solvency: the breaker, the latest checks (newest first, paged), the latest invariant run."""
    require_admin(principal)
    store = _store(svc)
    limit = _limit(limit)
    if cursor is not None and (not isinstance(cursor, str) or not cursor or len(cursor) > 1024):
        raise errors.ValidationError("cursor is not valid", field="cursor")
    checks, next_cursor = store.checks(limit, cursor)
    runs, _ = store.invariant_runs(1)
    breaker = store.breaker(consistent=True)
    return {"breaker": {**breaker.to_dict(),
                        "blocked_because": breaker.blocked_because(svc.unix_clock(), svc.solvency_max_check_age_s)},
            "thresholds_sat": dict(svc.solvency_thresholds_sat), "max_check_age_s": svc.solvency_max_check_age_s,
            "latest": checks[0] if checks and not cursor else None, "history": checks, "next_cursor": next_cursor,
            "ledger_invariants": runs[0] if runs else None}


def _limit(limit: object) -> int:
    if limit is None:
        return 20
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise errors.ValidationError(f"limit must be an integer from 1 to {MAX_PAGE}", field="limit")
    return limit


# ================================================================================================ suspense
def book_suspense(svc: Services, *, kind: str, reference: str, amount_msat: int, at: str,
                  details: dict | None = None, extra: list | None = None) -> int:
    """Book money that moved outside any business event: the ledger entry and the suspense item in ONE
    transaction, keyed by (kind, reference). Returns 1 when booked now, 0 when it already was."""
    source, direction = SUSPENSE_KINDS[kind]
    transfer = suspense_booked(kind=kind, reference=reference, amount_msat=amount_msat, created_at=at,
                               shards=svc.system_shards)
    item = SuspenseItem(suspense_id=transfer.id, kind=kind, source=source, direction=direction,
                        amount_msat=amount_msat, reference=reference, transfer_id=transfer.id, created_at=at,
                        details=details or {})
    try:
        result = svc.ledger.execute(transfer, [_store(svc).new_suspense_item(item)] + list(extra or []))
    except errors.TransferExistsWithDifferentFields:
        return 0  # found again later (another created_at is not part of identity; other amount: first one stands)
    if result.replayed:
        return 0
    log.error("suspense: %s of %d msat booked (%s %s)", kind, amount_msat, source, reference)
    if svc.emit_metric is not None:
        svc.emit_metric("SuspenseBooked", 1)  # one alarmable series; the kind is in the log line and the item
    return 1


def list_suspense(svc: Services, principal: Principal, status: object = None) -> list[SuspenseItem]:
    require_admin(principal)
    if status is not None and status not in ("open", "assigned"):
        raise errors.ValidationError("status must be 'open' or 'assigned'", field="status")
    return _store(svc).suspense_items(status)  # type: ignore[arg-type]


def assign_suspense(svc: Services, principal: Principal, suspense_id: object, to: object,
                    reason: object) -> SuspenseItem:
    """POST /v1/admin/suspense/{id}/assign: move the item's money from SUSPENSE to its owner (a customer account,
    ``equity`` or ``expense``), audited by the ledger entry itself. The same request twice answers the same item."""
    require_admin(principal)
    owner = assign_target(to)
    why = validate_reason(reason)
    store = _store(svc)
    if not isinstance(suspense_id, str) or not suspense_id.startswith("sus_"):
        raise errors.SuspenseNotFound("no such suspense item")
    item = store.get_suspense(suspense_id)
    if item is None:
        raise errors.SuspenseNotFound(f"suspense item {suspense_id} not found")
    if item.status == "assigned":
        if item.assigned_to == owner and item.assign_reason == why:
            return item  # a replay
        raise errors.SuspenseAlreadyAssigned(f"suspense item {suspense_id} is already assigned to {item.assigned_to}")
    at = svc.clock()
    transfer = suspense_assigned(item, owner=owner, reason=why, admin=ADMIN_ACTOR, created_at=at,
                                 shards=svc.system_shards)
    done = replace(item, status="assigned", assigned_to=owner, assigned_by=ADMIN_ACTOR, assigned_at=at,
                   assign_reason=why, assign_transfer_id=transfer.id)
    svc.ledger.execute(transfer, [store.assign_suspense_item(done)])
    return done


# ================================================================================================ invariants
def run_invariants(svc: Services, segments: int = 8) -> dict:
    """The full ledger invariant check, off every request path: the balance items read with ``segments``
    parallel Scan segments, checked, the result stored (GET /v1/admin/solvency shows it) and published."""
    started = time.monotonic()
    ledger = getattr(svc.ledger, "inner", svc.ledger)
    with ThreadPoolExecutor(max_workers=segments) as pool:
        parts = list(pool.map(lambda s: list(ledger.balance_segment(s, segments)), range(segments)))
    balances = [b for part in parts for b in part]
    report = check_invariants(balances)
    summary = invariant_summary(report, len(balances), segments, int((time.monotonic() - started) * 1000),
                                svc.clock())
    _store(svc).save_invariants(summary, svc.unix_clock())
    if svc.emit_metric is not None:
        svc.emit_metric("LedgerInvariantViolations", len(report.violations))
    if not report.ok:
        log.error("ledger invariants violated: %s", report.violations[:20])
    return summary


__all__ = ["require_sends_open", "sends_allowed", "sends_blocked_because", "run_check", "trip", "resume", "solvency_view",
           "book_suspense", "list_suspense", "assign_suspense", "run_invariants", "DEFAULT_THRESHOLDS_SAT",
           "DEFAULT_MAX_CHECK_AGE_S", "SENDS_PAUSED"]
