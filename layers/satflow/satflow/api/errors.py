"""The one place that maps domain errors to HTTP. A contract test keeps it exhaustive over SatflowError."""
from __future__ import annotations

from satflow.domain import errors as e

HTTP_STATUS: dict[type[e.SatflowError], int] = {
    e.SatflowError: 500,
    e.ValidationError: 400,
    e.Unauthorized: 401,
    e.Forbidden: 403,
    e.AccountFrozen: 403,
    e.NotFound: 404,
    e.AccountNotFound: 404,
    e.TransferNotFound: 404,
    e.Conflict: 409,
    e.IdempotencyKeyReused: 409,
    e.TransferExistsWithDifferentFields: 409,
    e.AccountAlreadyExists: 409,
    e.PendingAlreadyResolved: 409,
    e.BusinessRejection: 422,
    e.InsufficientFunds: 422,
    e.SelfTransfer: 422,
    e.AccountClosed: 422,
    e.PendingMismatch: 422,
    e.TransientError: 503,
    e.AuditHeadMoved: 503,
    e.LimitStateChanged: 503,
    e.LimitExceeded: 422,
    e.VelocityExceeded: 422,
    e.AuditChainBroken: 500,
    # Lightning (node faults are the upstream's: 502; unavailable is retryable: 503)
    e.InvalidPaymentRequest: 400,
    e.LightningInvoiceNotFound: 404,
    e.LightningInvoiceAlreadySettled: 409,
    e.LightningNodeError: 502,
    e.LightningNodeUnavailable: 503,
    e.WrongNetworkInvoice: 400,
    e.InvoiceExpired: 400,
    e.AmountRequired: 400,
    e.AmountNotAllowed: 400,
    e.SelfPayment: 422,
    e.InvoiceNotPayable: 422,
    e.PaymentHashInFlight: 409,
    e.PaymentNotFound: 404,
    e.InvoiceNotFound: 404,
    # On-chain
    e.AmountBelowDust: 400,
    e.PayoutAmountTooLarge: 400,
    e.InvalidPsbt: 400,
    e.SignedPsbtMismatch: 400,
    e.PayoutNotFound: 404,
    e.PayoutBatchNotFound: 404,
    e.BatchNotAwaitingSignature: 409,
    e.PayoutNotCancelable: 422,
    e.PayoutToOwnAddress: 422,
    e.FeeBumpRejected: 422,
    e.InvalidAddress: 400,
    e.WrongNetworkAddress: 400,
    e.UnsupportedAddressType: 400,
    e.InvalidBtcAmount: 400,
    e.InvalidAccountKey: 400,
    e.WrongNetworkAccountKey: 400,
    e.BitcoinTxNotFound: 404,
    e.BitcoinBlockNotFound: 404,
    e.BitcoinNodeError: 502,
    e.BitcoinNodeAuthFailed: 502,
    e.BitcoinRpcMethodNotFound: 502,
    e.BitcoinRpcInvalidParameter: 502,
    e.TransactionRejected: 502,
    e.TransactionInputsMissing: 502,
    e.BitcoinNodeUnavailable: 503,
    # Webhooks
    e.WebhookUrlRejected: 400,
    e.WebhookNotFound: 404,
    e.WebhookEventNotFound: 404,
    e.TooManyWebhooks: 422,
    # Sanctions screening
    e.SanctionedDestination: 403,
    e.SanctionsListUnavailable: 503,
    # Risk score and review
    e.RiskBlocked: 422,
    e.ReviewNotFound: 404,
    e.ReviewAlreadyDecided: 409,
    # Solvency
    e.SendsPaused: 503,
    e.SuspenseNotFound: 404,
    e.SuspenseAlreadyAssigned: 409,
    # Wallet ecosystem (keys, Lightning Address, LNURL, LndHub)
    e.ApiKeyNotFound: 404,
    e.TooManyApiKeys: 422,
    e.UsernameTaken: 409,
    e.LightningAddressExists: 409,
    e.LightningAddressNotFound: 404,
    e.WithdrawLinkNotFound: 404,
    e.WithdrawAmountOutOfRange: 422,
    e.RateLimited: 429,
}


def status_for(error: e.SatflowError) -> int:
    """The status of the error's own class; a subclass not yet in the table falls back to its nearest
    mapped ancestor (the contract test still insists every class is listed)."""
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]  # type: ignore[index]
    return 500


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}
