"""Deterministic simulation of satflow under faults, with an oracle that checks the money (issue 14).

    python -m satflow_dev.sim --seed 7 --ops 200 --workers 8 --faults all

One process, one thread: the seed picks every next action (a client request through the real API handler, one
state of a workflow execution, a queue poll, a monitor job, time passing, the node ending a payment) and every
fault (a crash before/after a DynamoDB or node call, throttling, transaction conflicts, duplicate deliveries,
Lambda re-invocations). After quiescence the oracle (oracle.py) checks the money. Modules: world.py (moto,
services, handlers, fault edges, queues), asl.py (the real ASL, stepped), workload.py (clients + reference
model), oracle.py (quiescence + checks), run.py (one seed end to end)."""
from .run import RunResult, run_seed

__all__ = ["RunResult", "run_seed"]
