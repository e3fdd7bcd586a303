"""Use cases of on-chain payouts: the API calls, the batcher, the admin signing/fee-bump calls and the steps of the
payout workflow (statemachines/payout.asl.json).

Lifecycle of a payout: QUEUED (amount + fee reserve held by a pending ledger transfer) -> BATCHED (in a built,
unsigned transaction; its inputs RESERVED) -> [SIGNING (waiting for the external signer)] -> BROADCAST -> CONFIRMED
(posted for amount + its fee share; the rest of the reserve returns; inputs SPENT) | CANCELED (voided, all returns).

Lifecycle of a batch: BUILT -> [SIGNING] -> SIGNED -> BROADCAST -> CONFIRMED | CANCELED (only from BUILT/SIGNING:
once a signed transaction exists it may reach the network, so nothing that depends on it is undone).

Cancelling a payout whose batch is BUILT or SIGNING cancels the whole batch first (inputs released, every payout
of it back to QUEUED with ``requeues + 1``, a waiting workflow told to finish), then voids the one payout; the
others are batched again on the next batcher run. Each step is safe to run twice; the batcher also finishes what a
dead workflow left (see :func:`run_batcher`).

Callables that talk to Step Functions are parameters, not Services fields: ``send_task_success(token, output)``
(build one with :func:`sfn_task_success_sender`).
"""
from __future__ import annotations

from satflow.domain.payouts import MAX_BATCH_PAYOUTS  # noqa: F401

from .admin import batch_view, bump_fee, export_psbt, get_batch, list_open_batches, submit_signed_psbt  # noqa: F401
from .batcher import MAX_BATCHES_PER_RUN, run_batcher  # noqa: F401
from .common import (  # noqa: F401
    ALIVE, CHANGE_CHAIN, IN_BATCH, RECOVER_AFTER_S, SendTaskSuccess, sfn_task_success_sender,
)
from .request import apply_risk_verdict, cancel_payout, create_payout, get_payout, payout_view  # noqa: F401
from .workflow import (  # noqa: F401
    abandoned_predecessors, adopt_abandoned_transaction, on_our_input_spent, step_abandon, step_await_signature,
    step_broadcast, step_check, step_post, step_prepare, step_sign_hot, unposted_batch_spending,
)
