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


# --- On-chain: Bitcoin node and addresses ----------------------------------------------------------------
class InvalidAddress(ValidationError):
    """Not a well-formed Bitcoin address (bad checksum, bad length, mixed case, unknown prefix ...)."""

    code = "INVALID_ADDRESS"


class WrongNetworkAddress(InvalidAddress):
    """A well-formed address of another network (e.g. a mainnet address given to a regtest deployment)."""

    code = "WRONG_NETWORK_ADDRESS"


class UnsupportedAddressType(InvalidAddress):
    """A valid address of a type we do not pay to (segwit v1 with a non-32-byte program, or v2..v16)."""

    code = "UNSUPPORTED_ADDRESS_TYPE"


class InvalidBtcAmount(ValidationError):
    """A BTC amount that is not an exact number of satoshi (float, sub-satoshi digits, NaN, out of range)."""

    code = "INVALID_BTC_AMOUNT"


class BitcoinNodeError(SatflowError):
    """The node answered with an error that retrying the same request will not fix."""

    code = "BITCOIN_NODE_ERROR"


class BitcoinNodeUnavailable(TransientError):
    """Transport failure, timeout, HTTP 5xx without an RPC error, or the node still warming up (-28).

    Retrying with the same input is safe for every call of the port: reads are idempotent and a broadcast of an
    already-known transaction is reported as success.
    """

    code = "BITCOIN_NODE_UNAVAILABLE"


class BitcoinNodeAuthFailed(BitcoinNodeError):
    """HTTP 401/403: wrong RPC credentials (a configuration problem, not retried)."""

    code = "BITCOIN_NODE_AUTH_FAILED"


class BitcoinRpcMethodNotFound(BitcoinNodeError):
    """-32601: the node does not offer the method (wrong version, or blocked by -rpcwhitelist)."""

    code = "BITCOIN_RPC_METHOD_NOT_FOUND"


class BitcoinRpcInvalidParameter(BitcoinNodeError):
    """-8 (invalid parameter) or -5 (invalid address or key) outside the lookups that mean 'not found'."""

    code = "BITCOIN_RPC_INVALID_PARAMETER"


class BitcoinTxNotFound(NotFound):
    """-5 from getrawtransaction: neither in the mempool nor in the chain (or not in the given block)."""

    code = "BITCOIN_TX_NOT_FOUND"


class BitcoinBlockNotFound(NotFound):
    """-5 from getblock (unknown hash) or -8 from getblockhash (height above the tip)."""

    code = "BITCOIN_BLOCK_NOT_FOUND"


class TransactionRejected(BitcoinNodeError):
    """The node refused a transaction (-26 policy/consensus rejection, -25 verify error, -22 undecodable)."""

    code = "TRANSACTION_REJECTED"


class TransactionInputsMissing(TransactionRejected):
    """-25 bad-txns-inputs-missingorspent: an input is unknown or already spent.

    Not necessarily a failure of *our* transaction: it also happens when the transaction itself confirmed and all
    its outputs were spent since. Look the txid up before treating the payout as failed.
    """

    code = "TX_INPUTS_MISSING_OR_SPENT"


# --- On-chain: account keys ------------------------------------------------------------------------------
class InvalidAccountKey(ValidationError):
    """The configured account key or descriptor is unusable (malformed, private, not BIP84, wrong depth)."""

    code = "INVALID_ACCOUNT_KEY"


class WrongNetworkAccountKey(InvalidAccountKey):
    """The key's version bytes (or its origin's coin type) belong to another network than the configured one."""

    code = "WRONG_NETWORK_ACCOUNT_KEY"


# --- Lightning -------------------------------------------------------------------------------------------
class LightningNodeUnavailable(TransientError):
    """The node could not be reached or answered 5xx to an idempotent call: retry with the same input."""

    code = "LIGHTNING_NODE_UNAVAILABLE"


class LightningNodeError(SatflowError):
    """The node answered with an error we do not map (misconfiguration, permissions): retrying will not help."""

    code = "LIGHTNING_NODE_ERROR"


class LightningInvoiceNotFound(NotFound):
    """The node has no invoice with this payment hash."""

    code = "LIGHTNING_INVOICE_NOT_FOUND"


class LightningInvoiceAlreadySettled(Conflict):
    """A cancel found the invoice already settled on the node: it was paid and must be credited, not cancelled."""

    code = "LIGHTNING_INVOICE_ALREADY_SETTLED"


class InvalidPaymentRequest(ValidationError):
    """A BOLT11 payment request is malformed or for another network."""

    code = "INVALID_PAYMENT_REQUEST"



# --- Lightning payments and invoices -----------------------------------------------------------------------------
class WrongNetworkInvoice(ValidationError):
    code = "WRONG_NETWORK_INVOICE"


class InvoiceExpired(ValidationError):
    code = "INVOICE_EXPIRED"


class AmountRequired(ValidationError):
    """An amount-less invoice needs amount_msat in the request."""

    code = "AMOUNT_REQUIRED"


class AmountNotAllowed(ValidationError):
    """The invoice fixes the amount: the request must not set a different one."""

    code = "AMOUNT_NOT_ALLOWED"


class SelfPayment(BusinessRejection):
    """Paying your own invoice."""

    code = "SELF_PAYMENT"


class InvoiceNotPayable(BusinessRejection):
    """The internal invoice is already settled, expired or cancelled."""

    code = "INVOICE_NOT_PAYABLE"


class PaymentHashInFlight(Conflict):
    """Another payment of the same hash is pending or succeeded: one hash is paid at most once."""

    code = "PAYMENT_HASH_IN_USE"


class PaymentNotFound(NotFound):
    code = "PAYMENT_NOT_FOUND"


class InvoiceNotFound(NotFound):
    code = "INVOICE_NOT_FOUND"


# --- On-chain payouts ---------------------------------------------------------------------------------------------
class AmountBelowDust(ValidationError):
    """400: the amount is below the dust threshold of the destination's script (the network would not relay it)."""

    code = "AMOUNT_BELOW_DUST"


class PayoutAmountTooLarge(ValidationError):
    """400: above the per-payout maximum (MAX_PAYOUT_SAT)."""

    code = "PAYOUT_AMOUNT_TOO_LARGE"


class PayoutNotFound(NotFound):
    """404."""

    code = "PAYOUT_NOT_FOUND"


class PayoutBatchNotFound(NotFound):
    """404."""

    code = "PAYOUT_BATCH_NOT_FOUND"


class PayoutNotCancelable(BusinessRejection):
    """422: its transaction is signed or broadcast (or it is already confirmed)."""

    code = "PAYOUT_NOT_CANCELABLE"


class PayoutToOwnAddress(BusinessRejection):
    """422: the address is one of ours (a deposit address of an account, or our change): a transfer moves the
    money instantly and free; an on-chain round trip would only pay a network fee (and our change chain is no
    deposit address at all)."""

    code = "PAYOUT_TO_OWN_ADDRESS"


class BatchNotAwaitingSignature(Conflict):
    """409: export/submit of a batch with nothing waiting for the external signer."""

    code = "BATCH_NOT_AWAITING_SIGNATURE"


class InvalidPsbt(ValidationError):
    """400: not a PSBT, or not completely and validly signed."""

    code = "INVALID_PSBT"


class SignedPsbtMismatch(InvalidPsbt):
    """400: the signed PSBT is not the unsigned transaction we exported (other inputs, outputs or amounts)."""

    code = "SIGNED_PSBT_MISMATCH"


class FeeBumpRejected(BusinessRejection):
    """422: the batch is not in the mempool, the new rate is not higher, there is no change to take the fee from,
    or a fee share would exceed its payout's reserve."""

    code = "FEE_BUMP_REJECTED"



# --- Audit log ----------------------------------------------------------------------------------------------------
class AuditHeadMoved(TransientError):
    """Another writer appended to the same audit chain between our head read and our transaction: nothing was
    written; prepare the record again and retry the whole transaction (same ids, so it stays idempotent)."""

    code = "AUDIT_HEAD_MOVED"


class AuditChainBroken(SatflowError):
    """The chain's storage is inconsistent (a record exists past the head: head deleted or rolled back). Not
    retryable: writes to this shard fail closed until an operator has verified and repaired the chain."""

    code = "AUDIT_CHAIN_BROKEN"



# --- Limits and velocity ------------------------------------------------------------------------------------------
class LimitExceeded(BusinessRejection):
    """422: the send would exceed a per-transaction, rolling 24 h or rolling 30-day limit of the account's tier.
    ``details["limit"]`` is ``per_tx`` | ``daily`` | ``monthly``; the message says which and how much is left."""

    code = "LIMIT_EXCEEDED"


class VelocityExceeded(BusinessRejection):
    """422: the account already made its tier's number of sends in the last hour (``details["limit"]`` is
    ``sends_per_hour``)."""

    code = "VELOCITY_EXCEEDED"


class LimitStateChanged(TransientError):
    """The account's limit item changed between our read and our transaction (another send of the same account
    committed first). Retrying re-reads and re-admits; ``app.limits.admit_with_retry`` does so itself."""

    code = "LIMIT_STATE_CHANGED"



# --- Webhooks -----------------------------------------------------------------------------------------------------
class WebhookUrlRejected(ValidationError):
    """400: the webhook URL is not https, carries credentials, does not resolve, or resolves to a private,
    loopback, link-local, multicast, reserved or otherwise non-public address (allowed only in the local runtime)."""

    code = "WEBHOOK_URL_REJECTED"


class WebhookNotFound(NotFound):
    """404: no webhook subscription with this id belongs to the caller."""

    code = "WEBHOOK_NOT_FOUND"


class WebhookEventNotFound(NotFound):
    """404: a replayed event id is unknown, expired (older than the outbox TTL), or not one this subscription
    receives (another account's, or a type it does not subscribe to). Nothing was re-sent."""

    code = "WEBHOOK_EVENT_NOT_FOUND"


class TooManyWebhooks(BusinessRejection):
    """422: the caller already has the maximum number of webhook subscriptions."""

    code = "TOO_MANY_WEBHOOKS"


# --- Sanctions screening -------------------------------------------------------------------------------------------
class SanctionedDestination(SatflowError):
    """403: the destination (on-chain address or Lightning node) is on a sanctions list. The message says no more
    than that (which list and entry is in the audit record, for the operator)."""

    code = "SANCTIONED_DESTINATION"


class SanctionsListUnavailable(SatflowError):
    """503: no sanctions list was ever loaded and screening fails closed (``SATFLOW_SANCTIONS_WHEN_UNLOADED=block``):
    nothing was reserved; retry later. Deliberately not a TransientError: screening runs in the API before any
    reserve, and no workflow step should spin on a list that an operator has to load."""

    code = "SANCTIONS_LIST_UNAVAILABLE"


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



# --- Risk score and review ----------------------------------------------------------------------------------------
class RiskBlocked(BusinessRejection):
    """422: the send's risk score is at or above the block threshold. Nothing was reserved or sent;
    ``details`` carries the score (the factors are for operators, in the audit record and logs)."""

    code = "RISK_BLOCKED"


class ReviewNotFound(NotFound):
    """404: no review with this id."""

    code = "REVIEW_NOT_FOUND"


class ReviewAlreadyDecided(Conflict):
    """409: the review was already approved or rejected (by an admin or by its timeout) the other way."""

    code = "REVIEW_ALREADY_DECIDED"


# --- Solvency ------------------------------------------------------------------------------------------------------
class SendsPaused(SatflowError):
    """503: the solvency breaker paused outbound Lightning sends and on-chain payouts (unexplained drift between the
    ledger and the node or chain, or no successful solvency check for too long). Nothing was reserved; internal
    transfers still work; an admin resumes with POST /v1/admin/solvency/resume."""

    code = "SENDS_PAUSED"


class SuspenseNotFound(NotFound):
    """404: no suspense item with this id."""

    code = "SUSPENSE_NOT_FOUND"


class SuspenseAlreadyAssigned(Conflict):
    """409: the suspense item was already assigned (to another target, or with another reason)."""

    code = "SUSPENSE_ALREADY_ASSIGNED"
# --- Wallet ecosystem: keys, Lightning Address, LNURL, LndHub ------------------------------------------------------
class ApiKeyNotFound(NotFound):
    """404: no key with this id on the caller's account."""

    code = "API_KEY_NOT_FOUND"


class TooManyApiKeys(BusinessRejection):
    """422: the account already holds the maximum number of active keys."""

    code = "TOO_MANY_API_KEYS"


class UsernameTaken(Conflict):
    """409: the Lightning Address username belongs (or belonged) to another account."""

    code = "USERNAME_TAKEN"


class LightningAddressExists(Conflict):
    """409: the account already has a different Lightning Address (only the admin changes it)."""

    code = "LIGHTNING_ADDRESS_EXISTS"


class LightningAddressNotFound(NotFound):
    """404: no such Lightning Address (unknown, retired or its account closed: the same answer for all)."""

    code = "LIGHTNING_ADDRESS_NOT_FOUND"


class WithdrawLinkNotFound(NotFound):
    """404: no usable withdraw link for this k1 (unknown, disabled, expired or used up: the same answer)."""

    code = "WITHDRAW_LINK_NOT_FOUND"


class WithdrawAmountOutOfRange(BusinessRejection):
    """422: the invoice's amount is outside the withdraw link's bounds (or the invoice has no amount)."""

    code = "WITHDRAW_AMOUNT_OUT_OF_RANGE"


class RateLimited(SatflowError):
    """429: too many requests to a public route from this address; retry later."""

    code = "RATE_LIMITED"
