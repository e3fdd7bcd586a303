"""Use cases: listing an account's invoices (status and date filters, cursor) and a CSV statement of its
transactions (read scope)."""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

from satflow.domain import errors
from satflow.domain.accounts import Principal, Scope
from satflow.domain.invoices import Invoice, InvoiceStatus
from satflow.domain.money import BTC

from .accounts import require_scope
from .invoices import shown
from .ports import Services

MAX_PAGE = 100
EXPORT_MAX_ROWS = 5_000  # ~1 MB of CSV: well inside the 6 MB Lambda response limit; the rest via next_cursor
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:T(\d{2}:\d{2}:\d{2})(?:\.\d{1,6})?Z)?$")
_STATUSES = tuple(s.value for s in InvoiceStatus)


def parse_time(raw: str | None, field: str) -> str | None:
    """"2026-12-01" or "2026-12-01T10:00:00Z" -> the ISO form our sort keys use (millisecond precision)."""
    if raw in (None, ""):
        return None
    match = _DATE.match(raw) if isinstance(raw, str) else None
    if match is None:
        raise errors.ValidationError(f"{field} must be a UTC date (YYYY-MM-DD) or time (YYYY-MM-DDTHH:MM:SSZ)",
                                     field=field)
    return f"{match.group(1)}T{match.group(2) or '00:00:00'}.000Z"


def _limit(raw: object, default: int, maximum: int) -> int:
    if raw in (None, ""):
        return default
    if not isinstance(raw, str) or not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise errors.ValidationError(f"limit must be an integer from 1 to {maximum}", field="limit")
    return int(raw)


def _cursor_sk(raw: object) -> str | None:
    if raw in (None, ""):
        return None
    from satflow.adapters.dynamodb.paging import decode_cursor  # the history's opaque cursor format

    return decode_cursor(raw) if isinstance(raw, str) and len(raw) <= 1024 else decode_cursor("")


@dataclass(frozen=True)
class InvoicePage:
    items: list[Invoice]
    next_cursor: str | None


def list_invoices(svc: Services, principal: Principal, *, status: object = None, since: object = None,
                  until: object = None, limit: object = None, cursor: object = None) -> InvoicePage:
    """Newest first. ``since``/``until`` bound the creation time ([since, until)); ``status`` is applied after
    reading a page (EXPIRED is shown as such before the sweeper marks it), so a page may hold fewer than
    ``limit`` items while ``next_cursor`` still says there is more."""
    from satflow.adapters.dynamodb.paging import encode_cursor

    account_id = require_scope(principal, Scope.READ)
    if status is not None and status not in _STATUSES:
        raise errors.ValidationError(f"status must be one of {', '.join(_STATUSES)}", field="status")
    lo, hi = parse_time(since, "from"), parse_time(until, "to")
    if lo and hi and lo >= hi:
        raise errors.ValidationError("from must be before to", field="from")
    found, last = svc.lightning.invoices_of(account_id, _limit(limit, 20, MAX_PAGE), _cursor_sk(cursor),
                                            since=lo, until=None if hi is None else hi)
    now = svc.unix_clock()
    items = [inv for inv in (shown(i, now) for i in found) if status is None or inv.status.value == status]
    if hi is not None:
        items = [i for i in items if i.created_at < hi]  # BETWEEN is inclusive; `to` is not
    return InvoicePage(items, encode_cursor(last) if last else None)


_STATUS = {"POSTED": "SETTLED", "PENDING": "PENDING", "POST_PENDING": "SETTLED", "VOID_PENDING": "VOIDED"}
CSV_COLUMNS = ("created_at", "transfer_id", "type", "direction", "amount_msat", "status", "counterparty", "memo",
               "pending_id")


def _cell(value: object) -> str:
    """A spreadsheet must not run what a counterparty wrote: text starting with = + - @ (or tab/CR) is prefixed
    with a quote (OWASP CSV injection)."""
    text = "" if value is None else str(value)
    if text and text[0] in "=+-@\t\r" and not isinstance(value, int):
        return "'" + text
    return text


def export_transactions_csv(svc: Services, principal: Principal, *, since: object = None, until: object = None,
                            cursor: object = None) -> tuple[str, str | None]:
    """The account's ledger history as CSV, newest first, created in [from, to), at most EXPORT_MAX_ROWS rows;
    the second value is the cursor of the next part (None: complete)."""
    from satflow.adapters.dynamodb.paging import encode_cursor

    account_id = require_scope(principal, Scope.READ)
    lo, hi = parse_time(since, "from"), parse_time(until, "to")
    if lo and hi and lo >= hi:
        raise errors.ValidationError("from must be before to", field="from")
    position = cursor if cursor not in (None, "") else (encode_cursor(f"{hi}#") if hi else None)
    if position is not None:
        _cursor_sk(position)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    rows = 0
    while True:
        page = svc.ledger.history(account_id, BTC, min(MAX_PAGE, EXPORT_MAX_ROWS - rows), position)
        for h in page.items:
            if lo and h.created_at < lo:
                return out.getvalue(), None
            writer.writerow([_cell(h.created_at), _cell(h.transfer_id), _cell(h.template), _cell(h.direction),
                             h.amount, _STATUS[h.kind.value], _cell(h.counterparty), _cell(h.memo),
                             _cell(h.pending_id)])
            rows += 1
        position = page.next_cursor
        if position is None:
            return out.getvalue(), None
        if rows >= EXPORT_MAX_ROWS:
            return out.getvalue(), position
