"""LND REST JSON shapes the Lightning simulator emits (lnd v0.19, proto field names, zero values present).

Checked against a real lnd v0.19.3-beta on regtest (tests/realnodes): field names, feature bits, stream shapes.

``bytes`` are standard base64, int64 are strings, ``Payment.payment_hash``/``payment_preimage`` are hex strings.
Errors follow grpc-gateway v2: unary ``{"code", "message", "details"}``; streams ``{"error": {...}}`` (with the
HTTP status of the gRPC code when nothing was streamed yet).
"""
from __future__ import annotations

import base64
import json
from typing import Any

# grpc-gateway's gRPC code -> HTTP status (the subset LND uses).
GRPC_OK = 0
GRPC_UNKNOWN = 2
GRPC_INVALID_ARGUMENT = 3
GRPC_NOT_FOUND = 5
GRPC_ALREADY_EXISTS = 6
GRPC_UNIMPLEMENTED = 12
HTTP_STATUS_FOR_GRPC = {
    GRPC_UNKNOWN: 500,
    GRPC_INVALID_ARGUMENT: 400,
    GRPC_NOT_FOUND: 404,
    GRPC_ALREADY_EXISTS: 409,
    GRPC_UNIMPLEMENTED: 501,
}
ZERO_PREIMAGE_HEX = "0" * 64
JSON_HEADERS = {"content-type": "application/json"}
INVOICE_FEATURES_JSON = {  # what lnd v0.19.3 puts in its invoices (tlv-onion is required: bit 8)
    "8": {"name": "tlv-onion", "is_required": True, "is_known": True},
    "14": {"name": "payment-addr", "is_required": True, "is_known": True},
    "17": {"name": "multi-path-payments", "is_required": False, "is_known": True},
    "25": {"name": "route-blinding", "is_required": False, "is_known": True},
}


def b64(raw_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(raw_hex)).decode() if raw_hex else ""


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def line(data: Any) -> bytes:
    """One newline-delimited stream message."""
    return dumps(data) + b"\n"


def error_status(grpc_code: int) -> int:
    return HTTP_STATUS_FOR_GRPC.get(grpc_code, 500)


def unary_error_body(grpc_code: int, message: str) -> bytes:
    return dumps({"code": grpc_code, "message": message, "details": []})


def stream_error_body(grpc_code: int, message: str) -> bytes:
    return line({"error": {"code": grpc_code, "message": message, "details": []}})


def invoice_json(
    *,
    memo: str,
    preimage_hex: str,
    payment_hash_hex: str,
    value_msat: int,
    state: str,
    creation_date: int,
    settle_date: int,
    payment_request: str,
    description_hash_hex: str,
    expiry: int,
    cltv_expiry: int,
    private: bool,
    add_index: int,
    settle_index: int,
    amt_paid_msat: int,
    payment_addr_hex: str,
    htlcs: list[dict[str, Any]],
) -> dict[str, Any]:
    """An ``lnrpc.Invoice``."""
    return {
        "memo": memo,
        "r_preimage": b64(preimage_hex),
        "r_hash": b64(payment_hash_hex),
        "value": str(value_msat // 1000),
        "value_msat": str(value_msat),
        "settled": state == "SETTLED",
        "creation_date": str(creation_date),
        "settle_date": str(settle_date),
        "payment_request": payment_request,
        "description_hash": b64(description_hash_hex),
        "expiry": str(expiry),
        "fallback_addr": "",
        "cltv_expiry": str(cltv_expiry),
        "route_hints": [],
        "private": private,
        "add_index": str(add_index),
        "settle_index": str(settle_index),
        "amt_paid": str(amt_paid_msat),
        "amt_paid_sat": str(amt_paid_msat // 1000),
        "amt_paid_msat": str(amt_paid_msat),
        "state": state,
        "htlcs": htlcs,
        "features": INVOICE_FEATURES_JSON,
        "is_keysend": False,
        "payment_addr": b64(payment_addr_hex),
        "is_amp": False,
        "amp_invoice_state": {},
        "is_blinded": False,
        "blinded_path_config": None,
    }


def invoice_htlc_json(*, amt_msat: int, accept_time: int, resolve_time: int, block_height: int) -> dict[str, Any]:
    """An ``lnrpc.InvoiceHTLC`` for a settled invoice."""
    return {
        "chan_id": "137438953473",
        "htlc_index": "0",
        "amt_msat": str(amt_msat),
        "accept_height": block_height,
        "accept_time": str(accept_time),
        "resolve_time": str(resolve_time),
        "expiry_height": block_height + 80,
        "state": "SETTLED",
        "custom_records": {},
        "mpp_total_amt_msat": str(amt_msat),
        "amp": None,
        "custom_channel_data": "",
    }


def payment_json(
    *,
    payment_hash_hex: str,
    preimage_hex: str,
    value_msat: int,
    fee_msat: int,
    creation_time_ns: int,
    payment_request: str,
    status: str,
    payment_index: int,
    failure_reason: str,
    htlcs: list[dict[str, Any]],
) -> dict[str, Any]:
    """An ``lnrpc.Payment`` (the router stream's result)."""
    return {
        "payment_hash": payment_hash_hex,
        "value": str(value_msat // 1000),
        "creation_date": str(creation_time_ns // 1_000_000_000),
        "fee": str(fee_msat // 1000),
        "payment_preimage": preimage_hex,
        "value_sat": str(value_msat // 1000),
        "value_msat": str(value_msat),
        "payment_request": payment_request,
        "status": status,
        "fee_sat": str(fee_msat // 1000),
        "fee_msat": str(fee_msat),
        "creation_time_ns": str(creation_time_ns),
        "htlcs": htlcs,
        "payment_index": str(payment_index),
        "failure_reason": failure_reason,
        "first_hop_custom_records": {},
    }


def htlc_attempt_json(
    *,
    attempt_id: int,
    status: str,
    amount_msat: int,
    fee_msat: int,
    destination_pubkey: str,
    attempt_time_ns: int,
    resolve_time_ns: int,
    preimage_hex: str,
    block_height: int,
) -> dict[str, Any]:
    """An ``lnrpc.HTLCAttempt`` over a one-hop route (hop pubkey = destination)."""
    return {
        "attempt_id": str(attempt_id),
        "status": status,
        "route": {
            "total_time_lock": block_height + 80,
            "total_fees": str(fee_msat // 1000),
            "total_amt": str((amount_msat + fee_msat) // 1000),
            "hops": [
                {
                    "chan_id": "137438953473",
                    "chan_capacity": "16777215",
                    "amt_to_forward": str(amount_msat // 1000),
                    "fee": str(fee_msat // 1000),
                    "expiry": block_height + 80,
                    "amt_to_forward_msat": str(amount_msat),
                    "fee_msat": str(fee_msat),
                    "pub_key": destination_pubkey,
                    "tlv_payload": True,
                    "mpp_record": None,
                    "amp_record": None,
                    "custom_records": {},
                    "metadata": "",
                    "blinding_point": "",
                    "encrypted_data": "",
                    "total_amt_msat": "0",
                }
            ],
            "total_fees_msat": str(fee_msat),
            "total_amt_msat": str(amount_msat + fee_msat),
            "first_hop_amount_msat": str(amount_msat + fee_msat),
            "custom_channel_data": "",
        },
        "attempt_time_ns": str(attempt_time_ns),
        "resolve_time_ns": str(resolve_time_ns),
        "failure": None,
        "preimage": b64(preimage_hex) if preimage_hex != ZERO_PREIMAGE_HEX else "",
    }


def pay_req_json(
    *,
    destination: str,
    payment_hash_hex: str,
    amount_msat: int,
    timestamp: int,
    expiry: int,
    description: str,
    description_hash_hex: str,
    cltv_expiry: int,
    payment_addr_hex: str,
) -> dict[str, Any]:
    """An ``lnrpc.PayReq`` (``payment_hash`` and ``description_hash`` are hex strings here)."""
    return {
        "destination": destination,
        "payment_hash": payment_hash_hex,
        "num_satoshis": str(amount_msat // 1000),
        "timestamp": str(timestamp),
        "expiry": str(expiry),
        "description": description,
        "description_hash": description_hash_hex,
        "fallback_addr": "",
        "cltv_expiry": str(cltv_expiry),
        "route_hints": [],
        "payment_addr": b64(payment_addr_hex),
        "num_msat": str(amount_msat),
        "features": INVOICE_FEATURES_JSON,
        "blinded_paths": [],
    }
