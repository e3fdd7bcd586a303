"""Identifiers. Derived ids make retries land on the same ledger item (the id is the idempotency key)."""
from __future__ import annotations

import base64
import hashlib
import secrets


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=").lower()


def derive_id(prefix: str, *parts: str) -> str:
    """A stable id from its parts: the same parts always give the same id (26 base32 chars, 130 bits)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return f"{prefix}_{_b32(digest)[:26]}"


def new_id(prefix: str) -> str:
    return f"{prefix}_{_b32(secrets.token_bytes(16))}"


def request_fingerprint(*parts: object) -> str:
    """Hash of a request's meaningful fields, stored with the transfer to tell a replay from a reused key."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]
