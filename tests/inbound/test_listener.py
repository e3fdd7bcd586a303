"""The invoice listener (satflow.entrypoints.invoice_listener) against the simulated node's
/v1/invoices/subscribe: each settlement published once, the cursor advanced after publishing, restarts resume
from the stored cursor, failures reconnect with backoff, SIGTERM stops it, the macaroon never reaches a log."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time

import pytest

from satflow.app import invoices
from satflow.domain.lightning import LightningNodeUnavailable
from satflow.entrypoints import invoice_listener as listener
from satflow.entrypoints.invoice_listener import ListenerConfig

FAST = ListenerConfig(max_session_s=5.0, idle_timeout_s=1.0, backoff_initial_s=0.01, backoff_max_s=0.05,
                      min_session_s=0.0)


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.fixture
def open_invoices(svc, users):
    """Five OPEN invoices of alice (add indexes 1..5), created before any listener thread touches moto."""
    alice, _ = users
    return [invoices.create_invoice(svc, alice, amount_msat=1_000 * (i + 1)) for i in range(5)]


class Running:
    """The listener's run() in a thread: the test thread only drives the simulated node meanwhile (moto is not
    thread-safe; the listener thread is its only user until stop())."""

    def __init__(self, svc, config: ListenerConfig = FAST) -> None:
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=listener.run, args=(svc, self.stop_flag, config), daemon=True)

    def __enter__(self) -> "Running":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def live(sim):
    sim.stream_idle_s = 0.2  # a quiet stream ends after 0.2 s (the client's read timeout), then reconnects
    return sim


def hashes(published):
    return [e["payment_hash"] for e in published]


def test_settlements_while_running_are_published_once_each_and_the_cursor_advances(svc, live, open_invoices,
                                                                                   published, lnd):
    with Running(svc):
        wait_for(lambda: live.invoice_subscribers == 1)
        for inv in open_invoices[:3]:
            live.external_pay(inv.payment_request)
        lnd.add_invoice(5_000, memo="an add event, not a settlement")
        wait_for(lambda: len(published) == 3)
        time.sleep(0.5)  # a couple of reconnects later: still nothing republished
    assert hashes(published) == [inv.payment_hash for inv in open_invoices[:3]]
    assert [e["settle_index"] for e in published] == [1, 2, 3]
    assert published[0] == invoices.invoice_event(lnd.lookup_invoice(open_invoices[0].payment_hash))
    assert svc.lightning.invoice_cursor() == (3, 0)


def test_a_restart_resumes_from_the_stored_cursor(svc, live, open_invoices, published):
    with Running(svc):
        wait_for(lambda: live.invoice_subscribers == 1)
        live.external_pay(open_invoices[0].payment_request)
        live.external_pay(open_invoices[1].payment_request)
        wait_for(lambda: len(published) == 2)
    # down: two more settle
    live.external_pay(open_invoices[2].payment_request)
    live.external_pay(open_invoices[3].payment_request)
    assert svc.lightning.invoice_cursor()[0] == 2
    with Running(svc):
        wait_for(lambda: len(published) == 4)  # LND replays settlements after index 2
        live.external_pay(open_invoices[4].payment_request)
        wait_for(lambda: len(published) == 5)
        time.sleep(0.3)
    assert hashes(published) == [inv.payment_hash for inv in open_invoices]
    assert svc.lightning.invoice_cursor()[0] == 5


def test_a_fresh_listener_catches_up_on_the_hole_behind_its_first_settlement(svc, live, open_invoices, published):
    """LND replays nothing for settle index 0, so settlements before the first start would be skipped if the
    cursor simply jumped to the first live one. The hole triggers one catch-up poll instead."""
    live.external_pay(open_invoices[0].payment_request)
    live.external_pay(open_invoices[1].payment_request)
    with Running(svc):
        wait_for(lambda: live.invoice_subscribers == 1)
        live.external_pay(open_invoices[2].payment_request)  # settle index 3, cursor 0
        wait_for(lambda: {1, 2, 3} <= {e["settle_index"] for e in published})
    assert set(hashes(published)) == {inv.payment_hash for inv in open_invoices[:3]}
    assert svc.lightning.invoice_cursor() == (3, 3)  # and the catch-up set the scan watermark


def test_publish_before_advance_a_failed_publish_is_retried_not_skipped(svc, sim, open_invoices, published):
    for inv in open_invoices[:3]:
        sim.external_pay(inv.payment_request)
    svc.lightning.advance_invoice_cursor(1, 0)  # settlement 1 was handled earlier
    calls = []

    def flaky_publish(event):
        calls.append(event)
        if len(calls) == 1:
            raise ConnectionError("queue unreachable")
        published.append(event)

    svc.publish_invoice_event = flaky_publish
    stop = threading.Event()
    with pytest.raises(ConnectionError):
        listener.listen_once(svc, stop, FAST)  # stream_idle_s 0: the replay, then the stream ends
    assert svc.lightning.invoice_cursor()[0] == 1  # not advanced past the unpublished settlement
    assert listener.listen_once(svc, stop, FAST) == 2
    assert [e["settle_index"] for e in published] == [2, 3]
    assert svc.lightning.invoice_cursor()[0] == 3
    assert listener.listen_once(svc, stop, FAST) == 0  # a further restart republishes nothing


def test_stop_ends_the_session_after_the_current_publish(svc, sim, open_invoices, published):
    for inv in open_invoices[:3]:
        sim.external_pay(inv.payment_request)
    svc.lightning.advance_invoice_cursor(1, 0)
    stop = threading.Event()
    stop.set()
    assert listener.listen_once(svc, stop, FAST) == 1
    assert svc.lightning.invoice_cursor()[0] == 2
    listener.run(svc, stop, FAST)  # already stopped: returns at once
    assert len(published) == 1


def test_node_trouble_reconnects_with_backoff(svc, live, open_invoices, published, lnd, caplog):
    attempts = []

    def flaky_lnd():
        attempts.append(time.monotonic())
        if len(attempts) <= 3:
            raise LightningNodeUnavailable("LND subscribe_invoices: ConnectError", operation="subscribe_invoices")
        return lnd

    svc.lnd = flaky_lnd
    config = ListenerConfig(max_session_s=5, idle_timeout_s=1, backoff_initial_s=0.05, backoff_max_s=0.1,
                            min_session_s=0)
    with caplog.at_level(logging.WARNING, logger="satflow.invoice_listener"), Running(svc, config):
        wait_for(lambda: live.invoice_subscribers == 1)
        live.external_pay(open_invoices[0].payment_request)
        wait_for(lambda: len(published) == 1)
    gaps = [b - a for a, b in zip(attempts, attempts[1:4])]
    assert all(gap >= 0.025 for gap in gaps), gaps  # waited (jittered backoff) between attempts
    assert "LightningNodeUnavailable" in caplog.text and "reconnect attempt 3" in caplog.text


def test_a_stream_that_ends_at_once_does_not_spin(svc, sim, open_invoices, monkeypatch):
    """sim.stream_idle_s = 0: every session ends immediately without news; min_session_s turns that into backoff."""
    sessions = []
    real = listener.listen_once

    def counting(*args, **kwargs):
        sessions.append(time.monotonic())
        return real(*args, **kwargs)

    config = ListenerConfig(idle_timeout_s=1, backoff_initial_s=0.05, backoff_max_s=0.05, min_session_s=1.0)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    monkeypatch.setattr(listener, "listen_once", counting)
    listener.run(svc, stop, config)
    assert 2 <= len(sessions) <= 10, len(sessions)


def test_backoff_is_exponential_jittered_and_capped():
    config = ListenerConfig(backoff_initial_s=1, backoff_max_s=60)
    assert listener.backoff_delay(0, config) == 0
    assert [listener.backoff_delay(n, config, rng=lambda: 1.0) for n in (1, 2, 3, 4, 7, 8, 500)] == \
        [1, 2, 4, 8, 60, 60, 60]
    assert [listener.backoff_delay(n, config, rng=lambda: 0.0) for n in (1, 2, 8)] == [0.5, 1, 30]


def test_the_macaroon_never_reaches_a_log(svc, live, open_invoices, published, lnd, caplog, monkeypatch):
    secret = live.macaroon_hex
    calls = []

    def flaky_lnd():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")  # an unexpected error: logged with its traceback
        return lnd

    svc.lnd = flaky_lnd
    for name in ("httpx", "httpcore"):  # request logs at their most talkative too
        monkeypatch.setattr(logging.getLogger(name), "level", logging.DEBUG)
    with caplog.at_level(logging.DEBUG), Running(svc):
        wait_for(lambda: live.invoice_subscribers == 1)
        live.external_pay(open_invoices[0].payment_request)
        wait_for(lambda: len(published) == 1)
    assert caplog.records and "boom" in caplog.text
    assert secret not in caplog.text and secret not in repr(lnd)


def test_main_runs_until_sigterm_and_restores_the_signal_handlers(svc, live, open_invoices, published):
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    started = time.monotonic()
    code = listener.main(["--idle-timeout-s", "0.5", "--shutdown-grace-s", "2"], services=lambda: svc)
    assert code == 0 and time.monotonic() - started < 5
    assert signal.getsignal(signal.SIGTERM) is before


def test_main_without_configuration_exits_with_2(monkeypatch):
    from satflow import config

    monkeypatch.delenv("SATFLOW_LND_SECRET_ID", raising=False)
    monkeypatch.delenv("SATFLOW_INVOICE_QUEUE_URL", raising=False)
    config.reset()
    try:
        assert listener.main([]) == listener.EXIT_CONFIG
    finally:
        config.reset()
