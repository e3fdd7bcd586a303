"""The invoice listener: ``python -m satflow.entrypoints.invoice_listener``.

A small long-running process (a container or a host, not a Lambda: it holds a stream open for minutes). It
subscribes to our LND node's ``/v1/invoices/subscribe`` from the persisted settle index, publishes every settled
invoice to the invoice events queue (the credit handler credits it, keyed by payment hash) and then advances the
stored cursor. The scheduled catch-up poller (``app.invoices.catch_up``) covers whatever the listener misses
while it is down; both publish the same message, so duplicates are harmless (design rule 7).

* Publish, then advance: a crash between the two republishes one event; it never skips one.
* The cursor moves one settle index at a time (LND numbers settlements without holes). LND replays nothing for a
  settle index of 0, so the first settlement a fresh listener sees may leave a hole behind it; then it runs one
  catch-up poll, which publishes the hole's invoices and moves the cursor over it.
* Sessions are bounded (``max_session_s``; a quiet stream ends after ``idle_timeout_s``): each reconnect re-reads
  the cursor, so the poller's progress is picked up too. Errors reconnect with capped, jittered exponential
  backoff; a clean session resets it.
* SIGTERM/SIGINT: the current publish-and-advance finishes, then the process exits. A worker blocked waiting on a
  quiet stream is simply abandoned after ``--shutdown-grace-s`` (nothing is half done at that point).
* Configuration comes from ``satflow.config`` (SATFLOW_LND_SECRET_ID, SATFLOW_INVOICE_QUEUE_URL, SATFLOW_TABLE,
  AWS_REGION, AWS_ENDPOINT_URL); the LND secret is read through the composition root and never logged.
"""
from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from satflow.app import invoices
from satflow.app.ports import Services
from satflow.domain.errors import SatflowError
from satflow.domain.lightning import InvoiceState

log = logging.getLogger("satflow.invoice_listener")

EXIT_CONFIG = 2


class ConfigError(Exception):
    """The process cannot run as configured (exit code 2; restarting will not help)."""


@dataclass(frozen=True)
class ListenerConfig:
    max_session_s: float = 300.0  # resubscribe at least this often (re-reads the cursor)
    idle_timeout_s: float = 60.0  # a stream silent this long ends quietly (LND sends nothing while idle)
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    min_session_s: float = 1.0  # a session that ends sooner without news counts as trouble: no hot reconnect loop


def backoff_delay(failures: int, config: ListenerConfig, rng: Callable[[], float] = random.random) -> float:
    """Capped exponential backoff with jitter: the n-th consecutive failure waits in [d/2, d], d = initial*2^(n-1)."""
    if failures <= 0:
        return 0.0
    delay = min(config.backoff_max_s, config.backoff_initial_s * 2 ** min(failures - 1, 32))
    return delay / 2 + rng() * delay / 2


def listen_once(svc: Services, stop: threading.Event, config: ListenerConfig = ListenerConfig()) -> int:
    """One subscription session from the stored cursor. Returns how many settlements it published.

    Raises what the node, the queue or the table raise; ``run`` turns that into a reconnect."""
    settle_index, add_index = svc.lightning.invoice_cursor()
    advancing = True  # False after a hole the catch-up could not close: publish only, the poller advances
    published = 0
    log.info("subscribing to invoice events after settle index %d", settle_index)
    stream = svc.lnd().subscribe_invoices(settle_index=settle_index, idle_timeout_s=config.idle_timeout_s,
                                          max_duration_s=config.max_session_s)
    try:
        for node_invoice in stream:
            if node_invoice.state is not InvoiceState.SETTLED or node_invoice.settle_index <= settle_index:
                continue  # adds (OPEN) are notified too; replays at or below the cursor are done
            svc.publish_invoice_event(invoices.invoice_event(node_invoice))
            published += 1
            if advancing and node_invoice.settle_index == settle_index + 1:
                svc.lightning.advance_invoice_cursor(node_invoice.settle_index, add_index)
                settle_index = node_invoice.settle_index
            elif advancing:
                log.warning("settle index %d follows %d: catching up on the hole",
                            node_invoice.settle_index, settle_index)
                invoices.catch_up(svc)
                stored, stored_add = svc.lightning.invoice_cursor()
                if stored >= node_invoice.settle_index:
                    settle_index, add_index = stored, stored_add
                else:
                    advancing = False
                    log.warning("the hole before settle index %d is still open; the poller will advance",
                                node_invoice.settle_index)
            if stop.is_set():
                break
    finally:
        stream.close()
    return published


def run(svc: Services, stop: threading.Event, config: ListenerConfig = ListenerConfig(), *,
        rng: Callable[[], float] = random.random, monotonic: Callable[[], float] = time.monotonic) -> None:
    """Listen until ``stop`` is set: session after session, backing off while the node (or AWS) is in trouble."""
    failures = 0
    while not stop.is_set():
        started = monotonic()
        try:
            published = listen_once(svc, stop, config)
        except Exception as exc:  # noqa: BLE001 - any failure means: reconnect later; the cursor is intact
            failures += 1
            # Our own errors and httpx/botocore messages carry no credentials; a traceback only for the unexpected.
            log.warning("invoice stream failed (%s: %s); reconnect attempt %d", type(exc).__name__, exc, failures,
                        exc_info=not isinstance(exc, SatflowError))
        else:
            if published == 0 and monotonic() - started < config.min_session_s:
                failures += 1  # the stream ended at once without news: treat like an error, do not spin
            else:
                failures = 0
            log.info("invoice stream session ended: %d settlement(s) published", published)
        if failures and not stop.is_set():
            stop.wait(backoff_delay(failures, config, rng))
    log.info("invoice listener stopped")


def listener_services() -> Services:
    """The slice of the composition root the listener needs: the table, the LND client, the queue publisher."""
    from satflow.config import settings

    s = settings()
    missing = [name for name, value in (("SATFLOW_LND_SECRET_ID", s.lnd_secret_id),
                                        ("SATFLOW_INVOICE_QUEUE_URL", s.invoice_queue_url)) if not value]
    if missing:
        raise ConfigError(f"set {', '.join(missing)}")

    from satflow import bootstrap
    from satflow.adapters.dynamodb.accounts import DynamoAccounts
    from satflow.adapters.dynamodb.audit import DynamoAuditStore
    from satflow.app.recorded_ledger import RecordedLedger
    from satflow.adapters.dynamodb.ledger import DynamoLedger
    from satflow.adapters.dynamodb.lightning import DynamoLightningStore
    from satflow.adapters.dynamodb.models import build_models

    client = bootstrap.aws_client("dynamodb")
    models = build_models(s.table_name, s.region, s.endpoint_url)

    def no_admin_key() -> str:
        raise RuntimeError("the invoice listener has no admin key")

    audit = DynamoAuditStore(client, models, shards=s.audit_shards)
    return Services(
        ledger=RecordedLedger(DynamoLedger(client, models, s.system_shards), audit), audit=audit,
        accounts=DynamoAccounts(client, models),
        admin_key=no_admin_key, system_shards=s.system_shards, network=s.network,
        lightning=DynamoLightningStore(client, models), lnd=bootstrap._lnd_provider(),
        publish_invoice_event=bootstrap._invoice_publisher(),
    )


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    d = ListenerConfig()
    parser = argparse.ArgumentParser(prog="python -m satflow.entrypoints.invoice_listener",
                                     description="Publish settled LND invoices to the invoice events queue.")
    parser.add_argument("--max-session-s", type=float, default=d.max_session_s)
    parser.add_argument("--idle-timeout-s", type=float, default=d.idle_timeout_s)
    parser.add_argument("--backoff-initial-s", type=float, default=d.backoff_initial_s)
    parser.add_argument("--backoff-max-s", type=float, default=d.backoff_max_s)
    parser.add_argument("--shutdown-grace-s", type=float, default=5.0)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, *, services: Callable[[], Services] = listener_services) -> int:
    args = _args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for chatty in ("httpx", "httpcore", "botocore", "boto3", "urllib3", "pynamodb"):  # request logs: no business here
        logging.getLogger(chatty).setLevel(logging.WARNING)
    config = ListenerConfig(max_session_s=args.max_session_s, idle_timeout_s=args.idle_timeout_s,
                            backoff_initial_s=args.backoff_initial_s, backoff_max_s=args.backoff_max_s)
    try:
        svc = services()
    except ConfigError as exc:
        log.error("invoice listener not configured: %s", exc)
        return EXIT_CONFIG
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker = threading.Thread(target=run, args=(svc, stop, config), name="invoice-listener", daemon=True)
        worker.start()
        while worker.is_alive() and not stop.wait(0.5):
            pass
        stop.set()
        worker.join(args.shutdown_grace_s)
        if worker.is_alive():
            log.info("worker still waiting on the stream after %.1fs; exiting anyway", args.shutdown_grace_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
