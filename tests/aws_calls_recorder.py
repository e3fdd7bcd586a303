"""Records the AWS API calls made while a deployed function's code runs, and fails the test when one is not in
``satflow.aws_calls`` for that function (moto does not enforce IAM: this is how a missing grant shows up).

Which function is running is read from the call stack: a frame of ``functions/<dir>/app.py`` (the template's
CodeUri says which function that is) or of the invoice listener entry point. Calls made by test code itself, or
by use cases called directly without a handler, belong to no function and are not checked. Every botocore
client goes through ``BaseClient._make_api_call`` (boto3 clients and pynamodb's alike), which is wrapped once."""
from __future__ import annotations

import re
import sys
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_FUNCTION_FILE = re.compile(r"^" + re.escape(str(ROOT / "functions")) + r"[/\\]([a-z_]+)[/\\]app\.py$")  # ours only
_LISTENER_FILE = re.compile(r"[/\\]satflow[/\\]entrypoints[/\\]invoice_listener\.py$")
_TRANSACT_ITEM_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                          "ConditionCheck": "ConditionCheckItem"}

# SQS authorizes its batch APIs with the single-message action (there is no sqs:SendMessageBatch in IAM).
_SQS_BATCH_ACTIONS = {"SendMessageBatch": "SendMessage", "DeleteMessageBatch": "DeleteMessage",
                      "ChangeMessageVisibilityBatch": "ChangeMessageVisibility"}

_lock = threading.Lock()
_seen: list[tuple[str, str, str]] = []  # (function, action, operation) since the current test started
_installed = False


@lru_cache(maxsize=1)
def function_dirs() -> dict[str, str]:
    """functions/<dir>/ -> the template's logical id, from each function's CodeUri."""
    from satflow_dev.runtime.template import load_template_document

    resources = load_template_document(ROOT / "template.yaml")["Resources"]
    found = {}
    for logical_id, res in resources.items():
        uri = res.get("Properties", {}).get("CodeUri")
        if res.get("Type") == "AWS::Serverless::Function" and isinstance(uri, str):
            found[Path(uri).name] = logical_id
    return found


def iam_actions(prefix: str, operation: str, params: dict) -> list[str]:
    """What IAM evaluates for one API call (TransactWriteItems: each item's own action)."""
    if prefix == "dynamodb" and operation == "TransactWriteItems":
        return sorted({f"dynamodb:{_TRANSACT_ITEM_ACTIONS[kind]}" for item in params.get("TransactItems", [])
                       for kind in item})
    if prefix == "dynamodb" and operation == "TransactGetItems":
        return ["dynamodb:GetItem"]
    if prefix == "sqs":
        return [f"sqs:{_SQS_BATCH_ACTIONS.get(operation, operation)}"]
    if prefix == "execute-api":  # the @connections management API: one IAM action for post, get and delete
        return ["execute-api:ManageConnections"]
    return [f"{prefix}:{operation}"]


def _running_function() -> str | None:
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        match = _FUNCTION_FILE.search(name)
        if match:
            return function_dirs().get(match.group(1), f"functions/{match.group(1)}")
        if _LISTENER_FILE.search(name):
            return "InvoiceListenerPolicy"
        frame = frame.f_back
    return None


def install() -> None:
    global _installed
    if _installed:
        return
    from botocore.client import BaseClient

    original = BaseClient._make_api_call

    def recording(self: Any, operation_name: str, api_params: dict) -> Any:
        function = _running_function()
        if function is not None:
            model = self.meta.service_model
            prefix = model.signing_name or model.endpoint_prefix
            with _lock:
                _seen.extend((function, action, operation_name)
                             for action in iam_actions(prefix, operation_name, api_params or {}))
        return original(self, operation_name, api_params)

    BaseClient._make_api_call = recording
    _installed = True


def start() -> None:
    with _lock:
        _seen.clear()


def undeclared() -> list[str]:
    """The calls since ``start`` that satflow.aws_calls does not list for the function that made them."""
    from satflow.aws_calls import FUNCTION_CALLS, POLICY_CALLS

    declared = {**FUNCTION_CALLS, **POLICY_CALLS}
    with _lock:
        seen = list(_seen)
    return sorted({f"{function} called {operation} ({action}), which satflow/aws_calls.py does not list for it"
                   for function, action, operation in seen if action not in declared.get(function, {})})


def seen() -> list[tuple[str, str, str]]:
    with _lock:
        return list(_seen)
