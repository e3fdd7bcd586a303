"""Request parsing shared by the HTTP handlers: bad input becomes a ValidationError, never a 500."""
from __future__ import annotations

import json
from typing import Any

from satflow.domain.errors import ValidationError

MAX_BODY = 16 * 1024


def json_object(body: str | None, required: set[str], optional: set[str] = frozenset()) -> dict[str, Any]:
    """A JSON object with exactly the allowed fields (unknown fields are refused: a typo such as amount_sat
    must not be silently ignored on a money route)."""
    if not body:
        raise ValidationError("a JSON body is required")
    if len(body) > MAX_BODY:
        raise ValidationError("the body is too large")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(f"the body is not valid JSON: {exc.msg if hasattr(exc, 'msg') else exc}") from exc
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object")
    missing = sorted(required - data.keys())
    if missing:
        raise ValidationError(f"missing fields: {', '.join(missing)}", fields=missing)
    unknown = sorted(data.keys() - required - optional)
    if unknown:
        raise ValidationError(f"unknown fields: {', '.join(unknown)}", fields=unknown)
    return data


def query_int(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 6:
        raise ValidationError(f"{name} must be a positive integer", field=name)
    return int(raw)
