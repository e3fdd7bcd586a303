"""Clocks for simulations and flow tests."""
from __future__ import annotations

import time
from datetime import datetime, timezone

# 2026-11-29T...Z: a fixed start, so two runs of one seed see the same timestamps (and the same invoice expiries).
SIM_EPOCH = 1_796_000_000.0


class Clock:
    """A settable unix clock shared by the simulator and the services (the ISO clock stays real).
    Used by tests/flows: ``offset`` moves it forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class SimClock:
    """Fake time that moves only when the simulation says so (plus 1 ms per reading, so ISO timestamps written
    one after another stay ordered, as real ones would)."""

    def __init__(self, start: float = SIM_EPOCH) -> None:
        self.now = start
        self.tick = 0.001

    def __call__(self) -> float:
        self.now += self.tick
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def iso(self) -> str:
        return datetime.fromtimestamp(self(), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
