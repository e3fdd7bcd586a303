"""Request parsing shared by the HTTP handlers: bad input becomes a ValidationError, never a 500."""
from __future__ import annotations

import json
import re
from typing import Any, Callable

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
        data = json.loads(body, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except ValueError as exc:  # JSONDecodeError, oversized integers, duplicate keys, NaN/Infinity
        raise ValidationError(f"the body is not valid JSON: {getattr(exc, 'msg', exc)}") from exc
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object")
    missing = sorted(required - data.keys())
    if missing:
        raise ValidationError(f"missing fields: {', '.join(missing)}", fields=missing)
    unknown = sorted(data.keys() - required - optional)
    if unknown:
        raise ValidationError(f"unknown fields: {', '.join(unknown)}", fields=unknown)
    return data


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate keys")  # {"amount_msat":1,"amount_msat":2} must not silently mean 2
    return dict(pairs)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def decode_body(get_body: Callable[[], str | None]) -> str | None:
    """The request body as text; undecodable base64 or non-UTF-8 bytes are the client's error."""
    try:
        return get_body()
    except (ValueError, UnicodeDecodeError) as exc:  # binascii.Error is a ValueError
        raise ValidationError("the body is not valid UTF-8 JSON") from exc


def query_int(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    if not re.fullmatch(r"[0-9]{1,6}", raw):
        raise ValidationError(f"{name} must be a positive integer", field=name)
    return int(raw)
