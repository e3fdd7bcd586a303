"""The OpenAPI 3 document of the HTTP API, from one route table (the handler registers the same table's
routes; a contract test keeps table, handler and template.yaml in step)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_INT = {"type": "integer", "format": "int64"}
_STR = {"type": "string"}
_ERROR = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"],
                             "properties": {"code": _STR, "message": _STR}}},
}
_ACCOUNT = {
    "type": "object", "required": ["account_id", "external_ref", "tier", "status"],
    "properties": {"account_id": _STR, "external_ref": _STR, "tier": {"type": "integer", "minimum": 0, "maximum": 3},
                   "status": {"type": "string", "enum": ["active", "frozen", "closed"]}},
}
_AMOUNT = {"type": "integer", "format": "int64", "minimum": 1, "maximum": 2_100_000_000_000_000_000,
           "description": "millisatoshi"}
_TRANSFER = {
    "type": "object", "required": ["transfer_id", "status", "amount_msat", "to", "created_at"],
    "properties": {"transfer_id": _STR, "status": {"type": "string", "enum": ["SETTLED", "IN_REVIEW", "REJECTED"]},
                   "amount_msat": _INT, "to": _STR, "created_at": {"type": "string", "format": "date-time"},
                   "review_id": {"type": "string", "description": "only when held by a risk review (202)"}},
}
_HASH = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_INVOICE_STATUSES = ["OPEN", "ACCEPTED", "SETTLED", "EXPIRED", "CANCELED"]  # domain.invoices.InvoiceStatus
_INVOICE = {
    "type": "object",
    "required": ["payment_hash", "payment_request", "amount_msat", "expires_at", "status"],
    "properties": {"payment_hash": _HASH, "payment_request": _STR, "amount_msat": _INT,
                   "expires_at": {"type": "string", "format": "date-time"},
                   "status": {"type": "string", "enum": _INVOICE_STATUSES, "description":
                              "ACCEPTED: an internal payment is settling it (SETTLED or CANCELED follows)"},
                   "amount_received_msat": _INT, "settled_at": {"type": "string", "nullable": True},
                   "memo": {"type": "string", "nullable": True}, "metadata": {"type": "object"}},
}
_PAYMENT = {
    "type": "object", "required": ["payment_id", "payment_hash", "status", "amount_msat", "max_fee_msat"],
    "properties": {"payment_id": _STR, "payment_hash": _HASH,
                   "status": {"type": "string", "enum": ["PENDING", "IN_REVIEW", "SUCCEEDED", "FAILED"]},
                   "amount_msat": _INT, "max_fee_msat": _INT, "fee_msat": {**_INT, "nullable": True},
                   "preimage": {"type": "string", "nullable": True},
                   "failure_reason": {"type": "string", "nullable": True}, "internal": {"type": "boolean"}},
}
_PAYOUT = {
    "type": "object", "required": ["payout_id", "status"],
    "properties": {"payout_id": _STR, "address": _STR, "amount_sat": _INT, "fee_reserve_sat": _INT,
                   "fee_sat": {**_INT, "nullable": True}, "txid": {"type": "string", "nullable": True},
                   "status": {"type": "string", "enum": ["QUEUED", "IN_REVIEW", "BATCHED", "SIGNING", "BROADCAST",
                                                         "CONFIRMED", "CANCELED"]}},
}

_REVIEW = {
    "type": "object",
    "required": ["review_id", "kind", "subject_id", "account_id", "amount_msat", "score", "factors", "status"],
    "properties": {"review_id": _STR, "kind": {"type": "string", "enum": ["transfer", "payment", "payout"]},
                   "subject_id": _STR, "account_id": _STR, "amount_msat": _INT, "destination": _STR,
                   "score": {"type": "integer", "minimum": 0, "maximum": 100}, "decision": _STR,
                   "factors": {"type": "array", "items": {"type": "object", "required": ["name", "points", "detail"],
                                                          "properties": {"name": _STR, "points": {"type": "integer"},
                                                                         "detail": _STR}}},
                   "status": {"type": "string", "enum": ["pending", "approved", "rejected"]},
                   "created_at": _STR, "decided_at": {"type": "string", "nullable": True},
                   "decided_by": {"type": "string", "nullable": True}, "note": {"type": "string", "nullable": True},
                   "workflow_parked": {"type": "boolean"}},
}
_DECISION = {**_REVIEW, "properties": {**_REVIEW["properties"], "workflow": {
    "type": "string", "enum": ["resumed", "not_parked_yet", "ended"],
    "description": "resumed: the parked workflow was woken; not_parked_yet: it finds the decision when it parks; "
                   "ended: it already moved on (timeout) and acts on the stored decision"}}}
_NOTE = {"type": "object", "additionalProperties": False, "properties": {"note": {"type": "string", "maxLength": 280}}}
_WEBHOOK = {
    "type": "object", "required": ["id", "url", "events", "created_at"],
    "properties": {"id": _STR, "url": _STR, "events": {"type": "array", "items": _STR},
                   "created_at": {"type": "string", "format": "date-time"}},
}
_BREAKER = {"type": "object", "required": ["sends", "reasons"], "properties": {
    "sends": {"type": "string", "enum": ["open", "paused"]}, "reasons": {"type": "array", "items": _STR},
    "changed_at": {"type": "string", "nullable": True}, "last_success_at": {**_INT, "nullable": True},
    "resumed_at": {**_INT, "nullable": True}, "resumed_by": {"type": "string", "nullable": True},
    "reason": {"type": "string", "nullable": True},
    "blocked_because": {"type": "string", "nullable": True,
                        "description": "why sends may not start now (paused, or the last success is too old)"}}}
_SOURCE = {"type": "object", "required": ["source"], "properties": {
    "source": {"type": "string", "enum": ["lightning", "onchain"]}, "ledger_msat": _INT, "node_msat": _INT,
    "difference_msat": _INT, "explained": {"type": "object", "additionalProperties": _INT},
    "unexplained_msat": _INT, "foreign_msat": _INT, "at_risk_msat": _INT, "details": {"type": "object"},
    "error": {"type": "string", "description": "the source could not be read (the check failed)"}}}
_CHECK = {"type": "object", "required": ["check_id", "at", "ok", "sources", "liabilities_msat"], "properties": {
    "check_id": _STR, "at": _STR, "ok": {"type": "boolean"}, "liabilities_msat": _INT,
    "system_accounts": {"type": "object", "additionalProperties": _INT},
    "sources": {"type": "array", "items": _SOURCE}, "breaches": {"type": "array", "items": _STR}}}
_SUSPENSE = {"type": "object", "required": ["id", "kind", "source", "direction", "amount_msat", "status"],
             "properties": {
                 "id": _STR, "kind": {"type": "string", "enum": ["closed_account_deposit", "invoice_settled_twice",
                                                                 "foreign_payment", "foreign_spend"]},
                 "source": {"type": "string", "enum": ["lightning", "onchain"]},
                 "direction": {"type": "string", "enum": ["in", "out"]}, "amount_msat": _INT, "reference": _STR,
                 "transfer_id": _STR, "created_at": _STR, "details": {"type": "object"},
                 "status": {"type": "string", "enum": ["open", "assigned"]},
                 "assigned_to": {"type": "string", "nullable": True},
                 "assigned_by": {"type": "string", "nullable": True},
                 "assigned_at": {"type": "string", "nullable": True}, "reason": {"type": "string", "nullable": True},
                 "assign_transfer_id": {"type": "string", "nullable": True}}}
_EVENT_TYPES = {"type": "array", "minItems": 1, "items": {"type": "string", "enum": [
    "transfer.settled", "invoice.settled", "payment.succeeded", "payment.failed", "deposit.confirmed",
    "deposit.credited", "payout.broadcast", "payout.confirmed", "review.required", "solvency.breaker_tripped",
    "solvency.sends_resumed"]}}


def _path(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": _STR}


_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 255}}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    auth: str  # "none" | "admin" | "read" | "receive" | "send" (the scope an account key needs) | "full" (all)
    status: int = 200
    request: dict | None = None
    response: dict = field(default_factory=lambda: {"type": "object"})
    parameters: tuple[dict, ...] = ()


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/health", "Liveness", "none",
          response={"type": "object", "properties": {"status": {"type": "string", "enum": ["ok"]}}}),
    Route("GET", "/v1/openapi.json", "This document", "none"),
    Route("POST", "/v1/accounts", "Create an account (its API key is shown once)", "admin", 201,
          request={"type": "object", "required": ["external_ref", "tier"], "additionalProperties": False,
                   "properties": {"external_ref": _STR, "tier": {"type": "integer", "minimum": 0, "maximum": 3}}},
          response={**_ACCOUNT, "required": _ACCOUNT["required"] + ["api_key", "key_id"],
                    "properties": {**_ACCOUNT["properties"], "api_key": _STR, "key_id": _STR,
                                   "replayed": {"type": "boolean", "description": "a retry under the same "
                                                "Idempotency-Key: the same account, a new key, the earlier one "
                                                "revoked"}}},
          parameters=({**_IDEMPOTENCY, "required": False},)),
    Route("GET", "/v1/accounts/me", "The calling account", "read", response=_ACCOUNT),
    Route("GET", "/v1/balance", "Balances per asset", "read", response={
        "type": "object", "required": ["balances"],
        "properties": {"balances": {"type": "array", "items": {
            "type": "object", "required": ["asset", "available_msat", "pending_out_msat", "pending_in_msat"],
            "properties": {"asset": _STR, "available_msat": _INT, "pending_out_msat": _INT,
                           "pending_in_msat": _INT}}}}}),
    Route("POST", "/v1/transfers", "Instant internal transfer to another account", "send", 201,
          request={"type": "object", "required": ["to", "amount_msat"], "additionalProperties": False,
                   "properties": {"to": {"type": "string", "description": "account id or external_ref"},
                                  "amount_msat": _AMOUNT, "memo": {"type": "string", "maxLength": 280}}},
          response=_TRANSFER, parameters=({**_IDEMPOTENCY, "required": True},)),
    Route("GET", "/v1/transactions", "The account's history, newest first", "read", response={
        "type": "object", "required": ["items", "next_cursor"],
        "properties": {"items": {"type": "array", "items": {"type": "object"}},
                       "next_cursor": {"type": "string", "nullable": True}}},
          parameters=({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                      {"name": "cursor", "in": "query", "schema": _STR})),
    Route("POST", "/v1/admin/adjustments", "Credit or debit an account against owner equity", "admin", 201,
          request={"type": "object", "required": ["account_id", "amount_msat", "direction", "reason"],
                   "additionalProperties": False,
                   "properties": {"account_id": _STR, "amount_msat": _AMOUNT,
                                  "direction": {"type": "string", "enum": ["credit", "debit"]},
                                  "reason": {"type": "string", "maxLength": 280}}},
          parameters=({**_IDEMPOTENCY, "required": True},)),
    Route("POST", "/v1/invoices", "Create a Lightning invoice to receive", "receive", 201,
          request={"type": "object", "additionalProperties": False,
                   "properties": {"amount_msat": {"type": "integer", "minimum": 0, "description": "0 or absent: any"},
                                  "memo": {"type": "string", "maxLength": 280}, "description_hash": _HASH,
                                  "expiry_s": {"type": "integer", "minimum": 60, "maximum": 604800},
                                  "metadata": {"type": "object"}}},
          response=_INVOICE),
    Route("GET", "/v1/invoices/{payment_hash}", "One of the caller's invoices", "read", response=_INVOICE,
          parameters=({"name": "payment_hash", "in": "path", "required": True, "schema": _HASH},)),
    Route("POST", "/v1/payments", "Pay a BOLT11 invoice (internal invoices settle at once, free)", "send", 202,
          request={"type": "object", "required": ["payment_request"], "additionalProperties": False,
                   "properties": {"payment_request": _STR, "amount_msat": _AMOUNT,
                                  "max_fee_msat": {"type": "integer", "minimum": 0}}},
          response=_PAYMENT, parameters=({**_IDEMPOTENCY, "required": True},)),
    Route("GET", "/v1/payments/{payment_id}", "One of the caller's payments", "read", response=_PAYMENT,
          parameters=({"name": "payment_id", "in": "path", "required": True, "schema": _STR},)),
    Route("POST", "/v1/addresses", "A fresh BIP84 deposit address for the caller", "receive", 201,
          response={"type": "object", "required": ["address", "index"],
                    "properties": {"address": _STR, "index": {"type": "integer", "minimum": 0}}}),
    Route("GET", "/v1/deposits", "The caller's on-chain deposits, newest first", "read", response={
        "type": "object", "required": ["items", "next_cursor"],
        "properties": {"items": {"type": "array", "items": {
            "type": "object", "required": ["txid", "vout", "amount_sat", "confirmations", "status"],
            "properties": {"txid": _STR, "vout": {"type": "integer"}, "amount_sat": _INT,
                           "confirmations": {"type": "integer"},
                           "status": {"type": "string", "enum": ["SEEN", "CONFIRMING", "CREDITED", "REVERSED"]}}}},
                       "next_cursor": {"type": "string", "nullable": True}}},
          parameters=({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                      {"name": "cursor", "in": "query", "schema": _STR})),
    Route("GET", "/v1/limits", "The caller's tier limits and what is used", "read", response={
        "type": "object",
        "required": ["tier", "per_tx_msat", "daily_msat", "monthly_msat", "sends_per_hour", "used_daily_msat",
                     "used_monthly_msat", "sends_last_hour"],
        "properties": {k: {"type": "integer"} for k in (
            "tier", "per_tx_msat", "daily_msat", "monthly_msat", "sends_per_hour", "used_daily_msat",
            "used_monthly_msat", "sends_last_hour")}}),
    Route("PATCH", "/v1/admin/accounts/{account_id}", "Change an account's tier and/or status", "admin",
          request={"type": "object", "additionalProperties": False,
                   "properties": {"tier": {"type": "integer", "minimum": 0, "maximum": 3},
                                  "status": {"type": "string", "enum": ["active", "frozen", "closed"]}}},
          response=_ACCOUNT, parameters=(_path("account_id"),)),
    Route("GET", "/v1/admin/audit", "Audit records in chain order (hash-chained per shard)", "admin", response={
        "type": "object", "required": ["items", "next_cursor"],
        "properties": {"items": {"type": "array", "items": {
            "type": "object",
            "required": ["shard", "seq", "at", "actor", "action", "subject_ids", "prev_hash", "hash"],
            "properties": {"shard": {"type": "integer"}, "seq": {"type": "integer"}, "at": _STR, "actor": _STR,
                           "action": _STR, "subject_ids": {"type": "array", "items": _STR},
                           "amount_msat": {"type": "integer", "nullable": True}, "details": {"type": "object"},
                           "prev_hash": _STR, "hash": _STR, "entry_id": _STR, "written_at": _STR}}},
                       "next_cursor": {"type": "string", "nullable": True}}},
          parameters=({"name": "shard", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                      {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                      {"name": "cursor", "in": "query", "schema": _STR})),
    Route("GET", "/v1/admin/audit/verify",
          "One bounded step of incremental verification from each chain's checkpoint, then every chain's state "
          "(complete=false: call again)", "admin", response={
        "type": "object", "required": ["ok", "complete", "records", "shards"],
        "properties": {"ok": {"type": "boolean"}, "complete": {"type": "boolean"}, "records": {"type": "integer"},
                       "shards": {"type": "array", "items": {
                           "type": "object",
                           "required": ["shard", "ok", "problem", "first_bad_seq", "last_seq", "head_seq", "complete"],
                           "properties": {
                               "shard": {"type": "integer"}, "ok": {"type": "boolean"},
                               "problem": {"type": "string", "nullable": True, "enum": [
                                   "altered", "missing", "reordered", "broken_link", "unsealed", "truncated", None]},
                               "first_bad_seq": {"type": "integer", "nullable": True},
                               "checked": {"type": "integer"}, "last_seq": {"type": "integer"},
                               "head_seq": {"type": "integer"}, "complete": {"type": "boolean"},
                               "oldest_unsealed_at": {"type": "string", "nullable": True}}}}}}),
    Route("POST", "/v1/payouts", "Queue an on-chain payout (batched; funds held until it confirms)", "send", 202,
          request={"type": "object", "required": ["address", "amount_sat"], "additionalProperties": False,
                   "properties": {"address": _STR, "amount_sat": {"type": "integer", "minimum": 1},
                                  "priority": {"type": "string", "enum": ["fast", "normal", "slow"]}}},
          response=_PAYOUT, parameters=({**_IDEMPOTENCY, "required": True},)),
    Route("GET", "/v1/payouts/{payout_id}", "One of the caller's payouts", "read", response=_PAYOUT,
          parameters=(_path("payout_id"),)),
    Route("POST", "/v1/payouts/{payout_id}/cancel", "Cancel a payout before broadcast (full refund)", "send",
          response=_PAYOUT, parameters=(_path("payout_id"),)),
    Route("GET", "/v1/admin/payout-batches", "Open payout batches", "admin"),
    Route("GET", "/v1/admin/payout-batches/{batch_id}", "One payout batch", "admin", parameters=(_path("batch_id"),)),
    Route("GET", "/v1/admin/payout-batches/{batch_id}/psbt", "The unsigned PSBT for the external signer", "admin",
          response={"type": "object", "properties": {"batch_id": _STR, "psbt": {"type": "string", "format": "byte"}}},
          parameters=(_path("batch_id"),)),
    Route("POST", "/v1/admin/payout-batches/{batch_id}/psbt", "Submit the externally signed PSBT", "admin",
          request={"type": "object", "required": ["psbt"], "additionalProperties": False,
                   "properties": {"psbt": {"type": "string", "format": "byte"}}},
          parameters=(_path("batch_id"),)),
    Route("POST", "/v1/webhooks", "Subscribe an https URL to events (the signing secret is shown once); an account "
          "key needs 'receive' or 'send' besides 'read'", "read", 201,
          request={"type": "object", "required": ["url", "events"], "additionalProperties": False,
                   "properties": {"url": {"type": "string", "format": "uri", "maxLength": 2048},
                                  "events": _EVENT_TYPES}},
          response={**_WEBHOOK, "required": _WEBHOOK["required"] + ["secret"],
                    "properties": {**_WEBHOOK["properties"], "secret": _STR}}),
    Route("GET", "/v1/webhooks", "The caller's webhook subscriptions", "read", response={
        "type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": _WEBHOOK}}}),
    Route("GET", "/v1/webhooks/{webhook_id}", "One webhook subscription (without its secret)", "read",
          response=_WEBHOOK, parameters=(_path("webhook_id"),)),
    Route("DELETE", "/v1/webhooks/{webhook_id}", "Delete a webhook subscription", "read",
          parameters=(_path("webhook_id"),)),
    Route("GET", "/v1/webhooks/{webhook_id}/deliveries", "Delivery records of a subscription", "read", response={
        "type": "object", "required": ["items", "next_cursor"],
        "properties": {"items": {"type": "array", "items": {"type": "object", "properties": {
            "event_id": _STR, "type": _STR, "attempts": {"type": "integer"}, "last_error": _STR,
            "status": {"type": "string", "enum": ["PENDING", "FAILED", "DELIVERED", "DEAD"]}}}},
                       "next_cursor": {"type": "string", "nullable": True}}},
          parameters=(_path("webhook_id"),
                      {"name": "status", "in": "query",
                       "schema": {"type": "string", "enum": ["PENDING", "FAILED", "DELIVERED", "DEAD"]}},
                      {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                      {"name": "cursor", "in": "query", "schema": _STR})),
    Route("POST", "/v1/webhooks/{webhook_id}/replay",
          "Send events again: the given event_ids, or every DEAD delivery when none are given", "read", 202,
          request={"type": "object", "additionalProperties": False,
                   "properties": {"event_ids": {"type": "array", "minItems": 1, "maxItems": 100, "items": _STR}}},
          response={"type": "object", "properties": {"id": _STR, "replayed": {"type": "array", "items": _STR}}},
          parameters=(_path("webhook_id"),)),
    Route("GET", "/v1/admin/sanctions", "The stored sanctions list: version, digest, counts, when loaded", "admin",
          response={"type": "object", "required": ["loaded", "version", "list_sha256", "addresses", "node_pubkeys",
                                                   "loaded_at", "checked_at", "sources", "when_unloaded"],
                    "properties": {"loaded": {"type": "boolean"}, "version": {**_INT, "nullable": True},
                                   "list_sha256": {"type": "string", "nullable": True}, "addresses": _INT,
                                   "node_pubkeys": _INT, "loaded_at": {"type": "string", "nullable": True},
                                   "checked_at": {"type": "string", "nullable": True},
                                   "sources": {"type": "array", "items": {"type": "object"}},
                                   "when_unloaded": {"type": "string", "enum": ["block", "allow"]}}}),
    Route("GET", "/v1/admin/reviews", "Sends held by the risk review, oldest first", "admin", response={
        "type": "object", "required": ["items", "next_cursor"],
        "properties": {"items": {"type": "array", "items": _REVIEW},
                       "next_cursor": {"type": "string", "nullable": True}}},
          parameters=({"name": "status", "in": "query",
                       "schema": {"type": "string", "enum": ["pending", "approved", "rejected"], "default": "pending"}},
                      {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                      {"name": "cursor", "in": "query", "schema": _STR})),
    Route("POST", "/v1/admin/reviews/{review_id}/approve", "Approve a held send (the workflow resumes)", "admin",
          request=_NOTE, response=_DECISION, parameters=(_path("review_id"),)),
    Route("POST", "/v1/admin/reviews/{review_id}/reject", "Reject a held send (its reservation is voided)", "admin",
          request=_NOTE, response=_DECISION, parameters=(_path("review_id"),)),
    # --- solvency ---
    Route("GET", "/v1/admin/solvency",
          "The send breaker, the latest solvency check and its history (newest first), the last invariant run",
          "admin", response={
              "type": "object", "required": ["breaker", "latest", "history", "next_cursor", "ledger_invariants"],
              "properties": {"breaker": _BREAKER, "latest": {**_CHECK, "nullable": True},
                             "history": {"type": "array", "items": _CHECK},
                             "next_cursor": {"type": "string", "nullable": True},
                             "thresholds_sat": {"type": "object", "additionalProperties": _INT},
                             "max_check_age_s": _INT,
                             "ledger_invariants": {"type": "object", "nullable": True}}},
          parameters=({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                      {"name": "cursor", "in": "query", "schema": _STR})),
    Route("POST", "/v1/admin/solvency/resume", "Resume outbound sends paused by the breaker (audited)", "admin",
          request={"type": "object", "required": ["reason"], "additionalProperties": False,
                   "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 280}}},
          response={"type": "object", "required": ["breaker"], "properties": {"breaker": _BREAKER}}),
    Route("POST", "/v1/admin/solvency/capital",
          "Book the operator's own funds entering or leaving a source, against owner equity (audited)", "admin", 201,
          request={"type": "object", "required": ["source", "amount_msat", "direction", "reason"],
                   "additionalProperties": False,
                   "properties": {"source": {"type": "string", "enum": ["lightning", "onchain"]},
                                  "amount_msat": _AMOUNT, "direction": {"type": "string", "enum": ["in", "out"]},
                                  "reason": {"type": "string", "minLength": 1, "maxLength": 280}}},
          parameters=({**_IDEMPOTENCY, "required": True},)),
    Route("GET", "/v1/admin/suspense", "Money booked against the suspense account, newest first", "admin",
          response={"type": "object", "required": ["items"],
                    "properties": {"items": {"type": "array", "items": _SUSPENSE}}},
          parameters=({"name": "status", "in": "query", "schema": {"type": "string", "enum": ["open", "assigned"]}},)),
    Route("POST", "/v1/admin/suspense/{suspense_id}/assign",
          "Assign a suspense item to an account, equity or expense (a ledger entry, audited)", "admin",
          request={"type": "object", "required": ["to", "reason"], "additionalProperties": False,
                   "properties": {"to": {"type": "string", "description": "equity | expense | an account id"},
                                  "reason": {"type": "string", "minLength": 1, "maxLength": 280}}},
          response=_SUSPENSE, parameters=(_path("suspense_id"),)),
)


# ------------------------------------------------------------------------------ wallet ecosystem (issue 15)
_SCOPES = {"type": "array", "minItems": 1, "uniqueItems": True,
           "items": {"type": "string", "enum": ["read", "receive", "send"]}}
_KEY = {"type": "object", "required": ["key_id", "prefix", "scopes", "status", "created_at"],
        "properties": {"key_id": _STR, "prefix": {"type": "string", "description": "the key's first 10 characters"},
                       "scopes": _SCOPES, "label": {"type": "string", "nullable": True},
                       "status": {"type": "string", "enum": ["active", "revoked"]}, "created_at": _STR,
                       "revoked_at": {"type": "string", "nullable": True}}}
_NEW_KEY = {**_KEY, "required": _KEY["required"] + ["api_key"],
            "properties": {**_KEY["properties"], "api_key": {"type": "string", "description": "shown once"}}}
_KEY_REQUEST = {"type": "object", "required": ["scopes"], "additionalProperties": False,
                "properties": {"scopes": _SCOPES, "label": {"type": "string", "maxLength": 64}}}
_ADDRESS = {"type": "object", "required": ["username", "address", "lnurl", "url"],
            "properties": {"username": {"type": "string", "pattern": "^[a-z0-9_.-]{1,64}$"},
                           "address": {"type": "string", "description": "username@domain (LUD-16)"},
                           "lnurl": {"type": "string", "description": "bech32 LNURL of the pay request (LUD-01)"},
                           "url": _STR}}
_USERNAME = {"type": "object", "required": ["username"], "additionalProperties": False,
             "properties": {"username": {"type": "string", "pattern": "^[a-zA-Z0-9_.-]{1,64}$"}}}
_LNURL_ERROR = "LNURL routes answer errors as {\"status\": \"ERROR\", \"reason\"}; unknown = 404; throttled = 429."
_LINK = {"type": "object", "required": ["link_id", "min_withdrawable_msat", "max_withdrawable_msat", "uses",
                                        "remaining", "expires_at", "status"],
         "properties": {"link_id": _STR, "min_withdrawable_msat": _INT, "max_withdrawable_msat": _INT,
                        "uses": {"type": "integer"}, "remaining": {"type": "integer"}, "expires_at": _STR,
                        "status": {"type": "string", "enum": ["active", "disabled"]}, "description": _STR,
                        "lnurl": {"type": "string", "description": "only in the creation answer"},
                        "k1": {"type": "string", "description": "only in the creation answer"}}}
_LNDHUB = "LndHub protocol (BlueWallet/Zeus/Alby); errors as {\"error\": true, \"code\", \"message\"}."
_TOKEN = "Bearer token from /lndhub/auth (the wallet's API key)."


def _q(name: str, schema: dict | None = None, required: bool = False) -> dict:
    return {"name": name, "in": "query", "required": required, "schema": schema or _STR}


ROUTES = ROUTES + (
    Route("POST", "/v1/keys", "Issue another API key of the caller's account with chosen scopes (shown once)",
          "full", 201, request=_KEY_REQUEST, response=_NEW_KEY),
    Route("GET", "/v1/keys", "The account's API keys: prefix, scopes, label, status (never the key)", "read",
          response={"type": "object", "required": ["items"],
                    "properties": {"items": {"type": "array", "items": _KEY}}}),
    Route("POST", "/v1/keys/{key_id}/rotate", "Replace a key: a new one with the same scopes, the old revoked",
          "full", 201, response=_NEW_KEY, parameters=(_path("key_id"),)),
    Route("DELETE", "/v1/keys/{key_id}", "Revoke a key (it stops working at once)", "full", response=_KEY,
          parameters=(_path("key_id"),)),
    Route("POST", "/v1/admin/accounts/{account_id}/keys", "Issue a key for an account (recovery)", "admin", 201,
          request=_KEY_REQUEST, response=_NEW_KEY, parameters=(_path("account_id"),)),
    Route("DELETE", "/v1/admin/accounts/{account_id}/keys/{key_id}",
          "Revoke an account's key (it stops working at once; its withdraw links are disabled; a repeat is 200)",
          "admin", response=_KEY, parameters=(_path("account_id"), _path("key_id"))),
    Route("POST", "/v1/lightning-address", "Claim a Lightning Address username (201; 200 if already this one's)",
          "receive", 201, request=_USERNAME, response=_ADDRESS),
    Route("GET", "/v1/lightning-address", "The account's Lightning Address and LNURL", "read", response=_ADDRESS),
    Route("PUT", "/v1/admin/accounts/{account_id}/lightning-address",
          "Set or change an account's username (the old one is retired, never reassigned; audited)", "admin",
          request=_USERNAME, response=_ADDRESS, parameters=(_path("account_id"),)),
    Route("GET", "/.well-known/lnurlp/{username}", f"LUD-16/LUD-06 pay request. {_LNURL_ERROR}", "none",
          response={"type": "object", "required": ["tag", "callback", "minSendable", "maxSendable", "metadata"],
                    "properties": {"tag": {"type": "string", "enum": ["payRequest"]}, "callback": _STR,
                                   "minSendable": _INT, "maxSendable": _INT, "metadata": _STR,
                                   "commentAllowed": {"type": "integer"}}},
          parameters=(_path("username"),)),
    Route("GET", "/lnurlp/{username}/callback",
          f"LUD-06 callback: an invoice committing to sha256(metadata). {_LNURL_ERROR}", "none",
          response={"type": "object", "required": ["pr", "routes"],
                    "properties": {"pr": _STR, "routes": {"type": "array", "items": {}},
                                   "successAction": {"type": "object"}}},
          parameters=(_path("username"), _q("amount", {"type": "string", "pattern": "^[0-9]+$"}, True),
                      _q("comment", {"type": "string", "maxLength": 140}))),
    Route("POST", "/v1/lnurl/withdraw-links", "Create an LNURL-withdraw link (bounds, uses, expiry; shown once)",
          "send", 201,
          request={"type": "object", "required": ["min_withdrawable_msat", "max_withdrawable_msat"],
                   "additionalProperties": False,
                   "properties": {"min_withdrawable_msat": _AMOUNT, "max_withdrawable_msat": _AMOUNT,
                                  "uses": {"type": "integer", "minimum": 1, "maximum": 1000},
                                  "expiry_s": {"type": "integer", "minimum": 60, "maximum": 2592000},
                                  "description": {"type": "string", "maxLength": 140}}},
          response=_LINK),
    Route("GET", "/v1/lnurl/withdraw-links", "The account's withdraw links", "read",
          response={"type": "object", "properties": {"items": {"type": "array", "items": _LINK}}}),
    Route("DELETE", "/v1/lnurl/withdraw-links/{link_id}", "Disable a withdraw link", "send", response=_LINK,
          parameters=(_path("link_id"),)),
    Route("GET", "/lnurlw/{k1}", f"LUD-03 withdraw request. {_LNURL_ERROR}", "none",
          response={"type": "object", "required": ["tag", "callback", "k1", "minWithdrawable", "maxWithdrawable"],
                    "properties": {"tag": {"type": "string", "enum": ["withdrawRequest"]}, "callback": _STR,
                                   "k1": _STR, "minWithdrawable": _INT, "maxWithdrawable": _INT,
                                   "defaultDescription": _STR}},
          parameters=(_path("k1"),)),
    Route("GET", "/lnurlw/{k1}/callback",
          f"LUD-03 callback: pays pr through the payment workflow, once per invoice. {_LNURL_ERROR}", "none",
          response={"type": "object", "properties": {"status": {"type": "string", "enum": ["OK", "ERROR"]},
                                                     "reason": _STR}},
          parameters=(_path("k1"), _q("pr", required=True))),
    Route("GET", "/v1/invoices", "The caller's invoices, newest first, by status and creation time", "read",
          response={"type": "object", "required": ["items", "next_cursor"],
                    "properties": {"items": {"type": "array", "items": _INVOICE},
                                   "next_cursor": {"type": "string", "nullable": True}}},
          parameters=(_q("status", {"type": "string", "enum": _INVOICE_STATUSES}),
                      _q("from", {"type": "string", "description": "UTC date or time, inclusive"}),
                      _q("to", {"type": "string", "description": "UTC date or time, exclusive"}),
                      _q("limit", {"type": "integer", "minimum": 1, "maximum": 100}), _q("cursor"))),
    Route("GET", "/v1/transactions/export",
          "The caller's transactions as CSV (text/csv), newest first; X-Next-Cursor when cut at 5,000 rows", "read",
          response={"type": "string", "format": "binary"},
          parameters=(_q("from", {"type": "string"}), _q("to", {"type": "string"}), _q("cursor"))),
    Route("POST", "/v1/lndhub", "An lndhub:// URI for the caller's account, backed by a new key (shown once)",
          "full", 201,
          request={"type": "object", "additionalProperties": False, "properties": {"scopes": _SCOPES}},
          response={"type": "object", "required": ["login", "password", "uri", "key_id"],
                    "properties": {"login": _STR, "password": _STR, "uri": _STR, "url": _STR, "key_id": _STR}}),
    Route("POST", "/lndhub/auth", f"{_LNDHUB} {{login, password}} or {{refresh_token}} -> tokens", "none",
          request={"type": "object", "properties": {"login": _STR, "password": _STR, "refresh_token": _STR}},
          response={"type": "object", "properties": {"access_token": _STR, "refresh_token": _STR}},
          parameters=(_q("type", {"type": "string", "enum": ["auth", "refresh_token"]}),)),
    Route("POST", "/lndhub/addinvoice", f"{_LNDHUB} {_TOKEN} {{amt (sat), memo}} -> invoice", "receive",
          request={"type": "object", "properties": {"amt": {}, "memo": _STR, "description_hash": _HASH}}),
    Route("POST", "/lndhub/payinvoice",
          f"{_LNDHUB} {_TOKEN} Waits up to 10 s for the payment; status complete | pending (funds reserved)", "send",
          request={"type": "object", "required": ["invoice"], "properties": {"invoice": _STR, "amount": {}}}),
    Route("GET", "/lndhub/balance", f"{_LNDHUB} {_TOKEN} {{BTC: {{AvailableBalance: sat}}}}", "read"),
    Route("GET", "/lndhub/gettxs", f"{_LNDHUB} {_TOKEN} Settled outgoing payments", "read",
          response={"type": "array", "items": {"type": "object"}},
          parameters=(_q("limit", {"type": "integer"}), _q("offset", {"type": "integer"}))),
    Route("GET", "/lndhub/getuserinvoices", f"{_LNDHUB} {_TOKEN} The account's invoices", "read",
          response={"type": "array", "items": {"type": "object"}}, parameters=(_q("limit", {"type": "integer"}),)),
    Route("GET", "/lndhub/getpending", f"{_LNDHUB} {_TOKEN} Outgoing payments not final yet", "read",
          response={"type": "array", "items": {"type": "object"}}),
    Route("GET", "/lndhub/decodeinvoice", f"{_LNDHUB} {_TOKEN} A BOLT11 invoice decoded", "read",
          parameters=(_q("invoice", required=True),)),
    Route("GET", "/lndhub/checkpayment/{payment_hash}", f"{_LNDHUB} {_TOKEN} {{paid: bool}} of an own invoice",
          "read", parameters=({"name": "payment_hash", "in": "path", "required": True, "schema": _HASH},)),
    Route("GET", "/lndhub/getinfo", f"{_LNDHUB} {_TOKEN} The node's public info", "read"),
    Route("GET", "/lndhub/getbtc", f"{_LNDHUB} {_TOKEN} Always [] (on-chain deposits: POST /v1/addresses)", "read",
          response={"type": "array", "items": {"type": "object"}}),
)


def document() -> dict[str, Any]:
    paths: dict[str, dict] = {}
    for r in ROUTES:
        op: dict[str, Any] = {
            "summary": r.summary,
            "operationId": f"{r.method.lower()}_{r.path.strip('/').replace('/', '_').replace('.', '_')}",
            "responses": {str(r.status): {"description": "OK", "content": {"application/json": {"schema": r.response}}},
                          "default": {"description": "Error", "content": {"application/json": {"schema": _ERROR}}}},
        }
        if r.auth == "none":
            op["security"] = []
        else:
            op["description"] = ("Admin key required." if r.auth == "admin" else
                                 "API key with every scope (read, receive, send)." if r.auth == "full" else
                                 f"API key with the '{r.auth}' scope.")
        if r.request:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": r.request}}}
        if r.parameters:
            op["parameters"] = list(r.parameters)
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "satflow", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }
