"""Extension point: background services that live as long as the local runtime.

moto never fires schedules and ignores batchItemFailures on SQS event sources, and the Lightning/chain
simulators need a place to run — so the runtime does those parts itself, as services. A service factory gets
the started runtime (template model, invoker, moto endpoint, HTTP gateway for `/_sim/...` routes) and returns a
service, or None when the template declares nothing for it (e.g. no SQS events yet).

DEFAULT_SERVICE_FACTORIES (what `make run` starts, in this order):
- lightning   (lightning_server.LightningService): the LND REST simulator over HTTP, its secret in moto, and
              /_sim/lightning/* — only when the template declares the LND secret. First, so the secret holds
              the simulator's URL before any handler runs.
- chain       (chain_server.ChainService): the Bitcoin Core JSON-RPC simulator over HTTP, the bitcoind secret and
              the signer secret (the BIP84 test tprv, regtest only) in moto, and /_sim/chain/* (mining fires
              MonitorFunction's {"job": "chain_scan"} schedule, when there is one) — only when the template
              declares the bitcoind secret.
- webhooks    (webhook_sink.WebhookSink): a webhook receiver at /_sim/webhooks/inbox on the gateway's port
              (records, verifies, scripts failures) — only when a function reads SATFLOW_WEBHOOK_QUEUE_URL.
- sqs-poller  (sqs_poller.SqsPoller): every SQS event source, honouring ReportBatchItemFailures.
- streams     (stream_poller.StreamPoller): every DynamoDB stream event source (filters, partial failures).
- schedules   (schedules.ScheduleRunner): every Schedule/ScheduleV2 event, SATFLOW_SCHEDULE_SCALE, /_sim/schedules.
- websocket   (websocket_gateway.WebSocketGateway): the template's WebSocket API on its own port
              (SATFLOW_WEBSOCKET_PORT, default a free one), @connections on the AWS endpoint (connections_api.py).

`--backend regtest` (`make run BACKEND=regtest`) starts regtest_service.RegtestService in place of `lightning`
and `chain`: real btcd + two lnd, the same secrets and /_sim/lightning, /_sim/chain routes driving the external
lnd and the miner (regtest_service.service_factories(backend) builds the list).

Tests pass their own list to LocalRuntime, e.g. `[lightning_service_factory, sqs_poller_factory]`, or build a
service with options: `lambda rt: SqsPoller.from_runtime(rt, background=False)`. A started runtime hands its
services out with `runtime.service("lightning")` (by name or class).

The factories import their modules on call, so importing this module stays cheap.
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

    # Optional: `describe() -> list[str]`, lines for the `make run` banner.


ServiceFactory = Callable[["LocalRuntime"], "BackgroundService | None"]


def lightning_service_factory(runtime: LocalRuntime) -> BackgroundService | None:
    from .lightning_server import LightningService

    return LightningService.from_runtime(runtime)


def chain_service_factory(runtime: LocalRuntime) -> BackgroundService | None:
    from .chain_server import ChainService

    return ChainService.from_runtime(runtime)


def webhook_sink_factory(runtime: LocalRuntime) -> BackgroundService | None:
    from .webhook_sink import WebhookSink

    return WebhookSink.from_runtime(runtime)


def stream_poller_factory(runtime: LocalRuntime) -> BackgroundService | None:
    from .stream_poller import StreamPoller

    return StreamPoller.from_runtime(runtime)


def sqs_poller_factory(runtime: LocalRuntime) -> BackgroundService | None:
    from .sqs_poller import SqsPoller

    return SqsPoller.from_runtime(runtime)


def schedule_runner_factory(runtime: LocalRuntime) -> BackgroundService | None:
    from .schedules import ScheduleRunner

    return ScheduleRunner.from_runtime(runtime)


def websocket_gateway_factory(runtime: LocalRuntime) -> BackgroundService | None:
    from .websocket_gateway import WebSocketGateway

    return WebSocketGateway.from_runtime(runtime)


# Started by `python -m satflow_dev.runtime`, in this order.
DEFAULT_SERVICE_FACTORIES: list[ServiceFactory] = [
    lightning_service_factory,
    chain_service_factory,
    webhook_sink_factory,
    sqs_poller_factory,
    stream_poller_factory,
    schedule_runner_factory,
    websocket_gateway_factory,
]
