"""Extension point: background services that live as long as the local runtime.

moto never fires schedules and ignores batchItemFailures on SQS event sources, and the Lightning/chain
simulators need a place to run — so the runtime does those parts itself, as services. A service factory gets
the started runtime (template model, invoker, moto endpoint, HTTP gateway for `/_sim/...` routes) and returns a
service, or None when the template declares nothing for it (e.g. no SQS events yet).

Planned factories (later issues): an SQS poller per SQS event source (honouring ReportBatchItemFailures), a
schedule runner for Schedule events, the LND REST / Bitcoin Core RPC simulator. Add them to
DEFAULT_SERVICE_FACTORIES so `make run` starts them; tests can pass their own list to LocalRuntime.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .local_runtime import LocalRuntime


class BackgroundService(Protocol):
    name: str

    def start(self) -> None:
        """Begin work (typically a daemon thread). Called after resources exist, before HTTP is served."""

    def stop(self) -> None:
        """Stop and join; called in reverse start order on shutdown."""


ServiceFactory = Callable[["LocalRuntime"], "BackgroundService | None"]

# Started by `python -m satflow_dev.runtime`, in this order.
DEFAULT_SERVICE_FACTORIES: list[ServiceFactory] = []
