"""One TransactWriteItems per operation, with each item tagged so a cancellation maps back to a typed error.

pynamodb's ``TransactWrite`` regroups items by type (checks, deletes, puts, updates), which reorders the
CancellationReasons; we keep our own order instead and let pynamodb build each item's expressions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

from satflow.domain.errors import Conflict, SatflowError, TransientError

# Cancellation codes that mean "try the same transaction again" (the ids make a retry idempotent).
TRANSIENT_CODES = frozenset({
    "TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded",
    "InternalServerError",
})


@dataclass(frozen=True)
class TxItem:
    """One item of a transaction. ``on_condition_failed`` turns a failed condition into a typed error
    (it receives the item's old image when it existed, else None)."""

    tag: str
    op: Literal["Put", "Update", "ConditionCheck", "Delete"]
    params: dict[str, Any]
    on_condition_failed: Callable[[dict | None], SatflowError] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Cancellation:
    """A cancelled transaction: the failing items (tag -> (code, old image or None))."""

    failures: dict[str, tuple[str, dict | None]]
    items: Sequence[TxItem]

    def condition_failed(self, tag: str) -> bool:
        return self.failures.get(tag, ("",))[0] == "ConditionalCheckFailed"

    def old_image(self, tag: str) -> dict | None:
        return self.failures.get(tag, ("", None))[1]

    def first_transient(self) -> str | None:
        return next((code for code, _ in self.failures.values() if code in TRANSIENT_CODES), None)


def put(model: Any, condition: Any, tag: str, on_fail: Callable[[dict | None], SatflowError] | None = None) -> TxItem:
    params = model.get_save_kwargs_from_instance(condition=condition, return_values_on_condition_failure="ALL_OLD")
    return TxItem(tag, "Put", params, on_fail)


def update(model: Any, actions: list, condition: Any, tag: str,
           on_fail: Callable[[dict | None], SatflowError] | None = None) -> TxItem:
    params = model.get_update_kwargs_from_instance(
        actions=actions, condition=condition, return_values_on_condition_failure="ALL_OLD",
        add_version_condition=False,
    )
    return TxItem(tag, "Update", params, on_fail)


def check(model_cls: Any, hash_key: str, range_key: str, condition: Any, tag: str,
          on_fail: Callable[[dict | None], SatflowError] | None = None) -> TxItem:
    params = model_cls.get_operation_kwargs_from_class(hash_key, range_key=range_key, condition=condition)
    params["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    return TxItem(tag, "ConditionCheck", params, on_fail)


def transact(client: Any, items: Sequence[TxItem]) -> Cancellation | None:
    """Run ``items`` as one TransactWriteItems. Returns None on success, a Cancellation when DynamoDB cancelled
    it. Transport and service errors other than a cancellation propagate as TransientError."""
    from botocore.exceptions import BotoCoreError, ClientError

    tags = [item.tag for item in items]
    if len(set(tags)) != len(tags):
        raise ValueError(f"duplicate transaction item tags: {tags}")
    try:
        client.transact_write_items(TransactItems=[{item.op: item.params} for item in items])
        return None
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "TransactionCanceledException":
            reasons = exc.response.get("CancellationReasons") or []
            failures = {
                item.tag: (reason.get("Code", ""), reason.get("Item"))
                for item, reason in zip(items, reasons)
                if reason.get("Code") not in (None, "None")
            }
            return Cancellation(failures, items)
        if code in TRANSIENT_CODES or code in ("TransactionInProgressException", "ServiceUnavailable"):
            raise TransientError(f"DynamoDB is busy ({code}); retry with the same request") from exc
        raise
    except BotoCoreError as exc:
        # The outcome is unknown; the caller retries with the same ids, which is idempotent.
        raise TransientError(f"DynamoDB unreachable: {type(exc).__name__}") from exc


def delete(model: Any, condition: Any, tag: str,
           on_fail: Callable[[dict | None], SatflowError] | None = None) -> TxItem:
    params = model.get_delete_kwargs_from_instance(condition=condition, add_version_condition=False)
    return TxItem(tag, "Delete", params, on_fail)


def run_or_raise(client: Any, items: Sequence[TxItem]) -> None:
    """One TransactWriteItems of a store's own items (no ledger transfer). Throttling and conflicts raise
    TransientError (nothing was written: the same items may be sent again); a failed condition raises the first
    failing item's typed error, or Conflict for an item without one."""
    cancellation = transact(client, items)
    if cancellation is None:
        return
    transient = cancellation.first_transient()
    if transient:
        raise TransientError(f"DynamoDB cancelled the transaction ({transient}); retry it")
    for item in cancellation.items:
        if cancellation.condition_failed(item.tag):
            if item.on_condition_failed is not None:
                raise item.on_condition_failed(cancellation.old_image(item.tag))
            raise Conflict(f"{item.tag} changed meanwhile")
    raise RuntimeError(f"transaction cancelled unexpectedly: {cancellation.failures}")


def update_if(client: Any, model: Any, actions: list, condition: Any) -> bool:
    """One conditional UpdateItem: True when applied, False when the condition did not hold."""
    from botocore.exceptions import ClientError

    params = model.get_update_kwargs_from_instance(actions=actions, condition=condition,
                                                   return_values_on_condition_failure=None,
                                                   add_version_condition=False)
    try:
        client.update_item(**params)
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return False
        raise
