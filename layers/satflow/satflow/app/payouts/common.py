"""What every phase of a payout shares: the workflow's routing, keys, network, batch loading, constants."""
from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any, Callable

from satflow.domain.bitcoin import BitcoinTxNotFound, Network
from satflow.domain.onchain import PayoutStatus
from satflow.domain.payouts import Batch, BatchStatus, PayoutBatchNotFound, WalletKeys

from ..ports import Services

log = logging.getLogger(__name__)

SendTaskSuccess = Callable[[str, dict], None]

CHANGE_CHAIN = 1
RECOVER_AFTER_S = 900  # the batcher finishes batches a workflow left untouched this long
MAX_BATCHES_PER_RUN = 10  # bounds one run's work (coin selection, transactions); the rest waits for the next run
IN_BATCH = (PayoutStatus.BATCHED, PayoutStatus.SIGNING)
ALIVE = (PayoutStatus.BATCHED, PayoutStatus.SIGNING, PayoutStatus.BROADCAST)


def _route(batch_id: str, nxt: str, **extra: Any) -> dict[str, Any]:
    return {"batch_id": batch_id, "next": nxt, "attempt": 0, **extra}


def _route_for(svc: Services, batch: Batch) -> dict[str, Any]:
    status = batch.status
    if status is BatchStatus.BUILT:
        nxt = "HOT" if batch.value_sat <= svc.hot_sign_limit_sat else "EXTERNAL"
    else:
        nxt = {BatchStatus.SIGNING: "EXTERNAL", BatchStatus.SIGNED: "BROADCAST", BatchStatus.BROADCAST: "CHECK",
               BatchStatus.CONFIRMED: "DONE", BatchStatus.CANCELED: "DONE", BatchStatus.ABANDONED: "DONE",
               BatchStatus.SUPERSEDED: "DONE"}[status]
    return _route(batch.batch_id, nxt, status=status.value)


def sfn_task_success_sender(sfn_client: Any) -> SendTaskSuccess:
    """``send_task_success`` over a boto3 Step Functions client. A token whose task already finished or timed out
    is not an error here (a second submit, or a cancel racing the timeout)."""

    def send(token: str, output: dict) -> None:
        try:
            sfn_client.send_task_success(taskToken=token, output=json.dumps(output))
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("TaskTimedOut", "InvalidToken", "TaskDoesNotExist"):
                log.info("task token no longer live (%s)", code)
                return
            raise

    return send


_KEYS: dict[tuple[str, str], WalletKeys] = {}


def _keys(svc: Services) -> WalletKeys:
    if not svc.deposit_account_key:
        raise RuntimeError("no deposit account key configured")
    cache_key = (svc.deposit_account_key, svc.network)
    if cache_key not in _KEYS:
        _KEYS[cache_key] = WalletKeys.from_account_key(svc.deposit_account_key, _network(svc))
    return _KEYS[cache_key]


def _network(svc: Services) -> Network:
    return Network.from_name(svc.network)


def _load_batch(svc: Services, batch_id: object) -> Batch:
    if not isinstance(batch_id, str) or not batch_id.startswith("bat_") or len(batch_id) > 64:
        raise PayoutBatchNotFound("no such payout batch")
    batch = svc.payouts.get_batch(batch_id)
    if batch is None:
        raise PayoutBatchNotFound(f"payout batch {batch_id} not found")
    return batch


def _known(rpc: Any, txid: str) -> bool:
    try:
        rpc.getrawtransaction(txid)
        return True
    except BitcoinTxNotFound:
        return False


def _age_s(then: str, now: str) -> float:
    def parse(s: str) -> datetime:
        return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ")

    return (parse(now) - parse(then)).total_seconds()
