"""Errors and status codes of the chain simulator's RPC surface, shared by its modules."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Bitcoin Core RPC error codes (src/rpc/protocol.h) the simulator answers with.
RPC_MISC_ERROR = -1
RPC_TYPE_ERROR = -3
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_WALLET_INSUFFICIENT_FUNDS = -6
RPC_INVALID_PARAMETER = -8
RPC_DESERIALIZATION_ERROR = -22
RPC_VERIFY_ERROR = -25
RPC_VERIFY_REJECTED = -26
RPC_VERIFY_ALREADY_IN_CHAIN = -27
RPC_IN_WARMUP = -28
RPC_INVALID_REQUEST = -32600
RPC_METHOD_NOT_FOUND = -32601
RPC_INTERNAL_ERROR = -32603
RPC_PARSE_ERROR = -32700


class RpcError(Exception):
    """An error answered to an RPC caller as ``{"error": {"code", "message"}}``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TxRejected(RpcError):
    """A transaction refused by the mempool; ``reason`` is the token testmempoolaccept reports."""

    def __init__(self, code: int, reason: str, detail: str = "", test_reason: str | None = None) -> None:
        super().__init__(code, f"{reason}, {detail}" if detail else reason)
        self.reason = test_reason or reason


def rpc_http_status(response: Mapping[str, Any]) -> int:
    """The HTTP status Bitcoin Core sends with a JSON-RPC 1.0 response (errors are 500, unknown method 404)."""
    error = response.get("error")
    if not error:
        return 200
    code = error.get("code")
    if code == RPC_METHOD_NOT_FOUND:
        return 404
    if code == RPC_INVALID_REQUEST:
        return 400
    return 500


class FaucetInsufficientFunds(RuntimeError):
    """The external faucet wallet has not enough mature coins: mine more blocks to it."""
