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
    "properties": {"transfer_id": _STR, "status": {"type": "string", "enum": ["SETTLED"]}, "amount_msat": _INT,
                   "to": _STR, "created_at": {"type": "string", "format": "date-time"}},
}
_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 255}}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    auth: str  # "none" | "admin" | "read" | "send" (the scope an account key needs)
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
          response={**_ACCOUNT, "required": _ACCOUNT["required"] + ["api_key"],
                    "properties": {**_ACCOUNT["properties"], "api_key": _STR}}),
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
          parameters=(_IDEMPOTENCY,)),
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
            op["description"] = "Admin key required." if r.auth == "admin" else f"API key with the '{r.auth}' scope."
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
