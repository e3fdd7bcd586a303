"""Following DynamoDB pages, and the opaque cursors the API hands out for them."""
from __future__ import annotations

import base64
import json
from typing import Any, Callable, Iterator

from satflow.domain import errors


def all_items(call: Callable[..., dict], **request: Any) -> Iterator[dict]:
    """Every item of a Query or Scan (``call`` is the client's ``query`` or ``scan``), following LastEvaluatedKey."""
    while True:
        response = call(**request)
        yield from response.get("Items", [])
        if "LastEvaluatedKey" not in response:
            return
        request["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def encode_cursor(sk: str) -> str:
    """An opaque cursor for a page that ended at sort key ``sk`` (the partition is implied by the caller)."""
    return base64.urlsafe_b64encode(json.dumps({"sk": sk}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, check: Callable[[str], object] | None = None) -> str:
    """The sort key inside a cursor; anything malformed (or refused by ``check``) is a 400, never a 500."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        sk = json.loads(base64.urlsafe_b64decode(padded.encode()))["sk"]
        if not isinstance(sk, str) or "#" not in sk:
            raise ValueError(sk)
        if check is not None:
            check(sk)
        return sk
    except (ValueError, KeyError, TypeError, errors.ValidationError) as exc:
        raise errors.ValidationError("cursor is not valid", field="cursor") from exc
