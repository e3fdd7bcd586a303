"""Typed domain errors.

Every error a client can see is a subclass of ``SatflowError`` with a stable ``code``. The HTTP status of each
class lives in exactly one table (``satflow.api.errors.HTTP_STATUS``), kept exhaustive by a contract test.
Class names are also the Step Functions Retry/Catch contract (ASL ``ErrorEquals``), so never rename one lightly.
"""
from __future__ import annotations


class SatflowError(Exception):
    """Base of every typed, client-visible error."""

    code = "INTERNAL"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


# --- 400 ---------------------------------------------------------------------------------------------------------
class ValidationError(SatflowError):
    code = "VALIDATION_ERROR"


# --- 401 / 403 ---------------------------------------------------------------------------------------------------
class Unauthorized(SatflowError):
    code = "UNAUTHORIZED"


class Forbidden(SatflowError):
    code = "FORBIDDEN"


class AccountFrozen(SatflowError):
    """The debited account is frozen or closed: it cannot send."""

    code = "ACCOUNT_FROZEN"


# --- 404 ---------------------------------------------------------------------------------------------------------
class NotFound(SatflowError):
    code = "NOT_FOUND"


class AccountNotFound(NotFound):
    code = "ACCOUNT_NOT_FOUND"


class TransferNotFound(NotFound):
    code = "TRANSFER_NOT_FOUND"


# --- 409 ---------------------------------------------------------------------------------------------------------
class Conflict(SatflowError):
    code = "CONFLICT"


class IdempotencyKeyReused(Conflict):
    """The same Idempotency-Key was used with a different request body."""

    code = "IDEMPOTENCY_KEY_REUSED"


class TransferExistsWithDifferentFields(Conflict):
    """A transfer with this id exists but differs: the id is an idempotency key, never reused."""

    code = "TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS"


class AccountAlreadyExists(Conflict):
    code = "ACCOUNT_EXISTS"


class PendingAlreadyResolved(Conflict):
    """A pending transfer was already posted or voided by another transfer."""

    code = "PENDING_ALREADY_RESOLVED"


# --- 422 business rejections -------------------------------------------------------------------------------------
class BusinessRejection(SatflowError):
    code = "REJECTED"


class InsufficientFunds(BusinessRejection):
    code = "INSUFFICIENT_FUNDS"


class SelfTransfer(BusinessRejection):
    code = "SELF_TRANSFER"


class AccountClosed(BusinessRejection):
    """The credited account is closed and accepts no new funds."""

    code = "ACCOUNT_CLOSED"


class PendingMismatch(BusinessRejection):
    """A post/void named a pending transfer whose fields differ from the caller's view (or it is not pending)."""

    code = "PENDING_MISMATCH"


# --- transient: safe to retry with the same input (ASL retries only these on forward steps) ----------------------
class TransientError(SatflowError):
    code = "TEMPORARILY_UNAVAILABLE"


def all_error_classes() -> list[type[SatflowError]]:
    """Every SatflowError subclass, transitively (used by the exhaustive HTTP mapping and contract tests)."""
    seen: list[type[SatflowError]] = [SatflowError]
    stack = list(SatflowError.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls not in seen:
            seen.append(cls)
            stack.extend(cls.__subclasses__())
    return seen
