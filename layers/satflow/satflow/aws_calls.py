"""The AWS API actions each deployed function's code calls, and the template resource each acts on: one
registry, next to the code that makes the calls. No imports, no behaviour: it is read by tests only.

Two tests hold it to the truth (moto does not enforce IAM, so nothing else would):
* tests/contracts/test_iam.py: template.yaml grants every action listed here to that function, on that resource.
* tests/aws_calls_recorder.py (autouse in every test): each AWS call made while a function's handler
  (``functions/<dir>/app.py``) or the invoice listener is on the stack must be listed here for it; a call that is
  not fails the test. DynamoDB's TransactWriteItems is checked as the per-item actions IAM evaluates (PutItem,
  UpdateItem, DeleteItem, ConditionCheckItem); TransactGetItems as GetItem.

Adding an AWS call to a function: list it here, grant it in template.yaml (only that action, on that resource).
"""
from __future__ import annotations

LEDGER = ("LedgerTable",)
_READ = ("dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem")
_WRITE = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem")


def _ledger(*actions: str) -> dict[str, tuple[str, ...]]:
    return {action: LEDGER for action in actions}


# function (template logical id) -> IAM action -> the template resources (logical ids) it acts on
FUNCTION_CALLS: dict[str, dict[str, tuple[str, ...]]] = {
    "ApiFunction": {
        **_ledger(*_READ, *_WRITE),
        "secretsmanager:GetSecretValue": ("AdminKeySecret", "LndSecret"),
        "states:StartExecution": ("PaymentStateMachine", "ReviewStateMachine"),
        # resumes a payout waiting for the external signature; wakes a payment or transfer/payout review
        "states:SendTaskSuccess": ("PayoutStateMachine", "PaymentStateMachine", "ReviewStateMachine"),
        "sqs:SendMessage": ("WebhookDeliveryQueue",),  # webhook replays
    },
    "InvoiceFunction": _ledger("dynamodb:GetItem", *_WRITE),
    "PaymentFunction": {
        **_ledger("dynamodb:GetItem", "dynamodb:Query", *_WRITE),
        "secretsmanager:GetSecretValue": ("LndSecret",),
    },
    "RiskFunction": _ledger(*_READ, *_WRITE),
    "PayoutFunction": {
        **_ledger(*_READ, *_WRITE),
        "secretsmanager:GetSecretValue": ("BitcoindSecret", "SignerSecret"),
        # await_signature answers its own token when the batch needs no signature any more; admin_submit_psbt
        # resumes the waiting workflow
        "states:SendTaskSuccess": ("PayoutStateMachine",),
    },
    "MonitorFunction": {
        **_ledger(*_READ, *_WRITE),
        "dynamodb:Scan": LEDGER,  # ledger_invariants: the daily full check, parallel segments (no request path)
        "secretsmanager:GetSecretValue": ("LndSecret", "BitcoindSecret"),
        "states:StartExecution": ("PayoutStateMachine", "ReviewStateMachine"),
        "sqs:SendMessage": ("InvoiceEventsQueue",),
    },
    "WebhookRelayFunction": {
        "dynamodb:Query": LEDGER,
        "sqs:SendMessage": ("WebhookDeliveryQueue",),
    },
    "WebhookDeliveryFunction": {
        **_ledger("dynamodb:GetItem", "dynamodb:UpdateItem"),
        "sqs:ChangeMessageVisibility": ("WebhookDeliveryQueue",),
    },
    # the WebSocket API's $connect/$disconnect/subscribe routes and the stream fan-out to open connections
    "WebSocketFunction": {
        **_ledger("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
                  "dynamodb:Query"),
        "execute-api:ManageConnections": ("WebSocketApi",),
    },
    "WebSocketFanoutFunction": {
        **_ledger("dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:Query"),
        "execute-api:ManageConnections": ("WebSocketApi",),
    },
    "AuditSealerFunction": _ledger("dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem",
                                   "dynamodb:DeleteItem"),
}

# Code that runs outside Lambda with a managed policy of the template (attached to its host's role).
POLICY_CALLS: dict[str, dict[str, tuple[str, ...]]] = {
    "InvoiceListenerPolicy": {
        **_ledger("dynamodb:GetItem", "dynamodb:UpdateItem"),
        "sqs:SendMessage": ("InvoiceEventsQueue",),
        "secretsmanager:GetSecretValue": ("LndSecret",),
    },
}
