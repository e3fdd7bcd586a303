"""JSON for the chain simulator: BTC amounts written as JSON numbers with 8 decimals, as Bitcoin Core writes them.

The standard ``json`` module cannot emit a Decimal as a number without going through float, so responses are
serialized by a small writer that handles exactly the types the simulator produces.
"""
from __future__ import annotations

import json
from decimal import Decimal
from typing import Any


def dumps_rpc_json(value: Any) -> str:
    """Serialize dict/list/tuple/str/int/bool/None/Decimal; Decimals become numbers like ``0.00100000``."""
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts)


def loads_rpc_json(text: str | bytes) -> Any:
    """Parse a request or response body the way the adapter does: numbers with a fraction become Decimal."""
    return json.loads(text, parse_float=Decimal)


def _write(value: Any, parts: list[str]) -> None:
    if value is None or isinstance(value, (bool, str)):
        parts.append(json.dumps(value))
    elif isinstance(value, int):
        parts.append(str(value))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("non-finite Decimal in an RPC response")
        parts.append(_decimal_text(value))
    elif isinstance(value, dict):
        parts.append("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                parts.append(",")
            parts.append(json.dumps(str(key)))
            parts.append(":")
            _write(item, parts)
        parts.append("}")
    elif isinstance(value, (list, tuple)):
        parts.append("[")
        for i, item in enumerate(value):
            if i:
                parts.append(",")
            _write(item, parts)
        parts.append("]")
    else:
        # float included on purpose: a float in a response is a bug in the simulator.
        raise TypeError(f"cannot serialize {type(value).__name__} in an RPC response")


def _decimal_text(value: Decimal) -> str:
    exponent = value.as_tuple().exponent
    places = max(8, -exponent) if isinstance(exponent, int) and exponent < 0 else 8
    return f"{value:.{places}f}"
