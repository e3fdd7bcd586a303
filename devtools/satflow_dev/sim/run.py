"""One seed, end to end: build the world, run the workload, quiesce, judge."""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

from .oracle import Verdict, check, quiesce
from .workload import Workload
from .world import Faults, World


@dataclass
class RunResult:
    seed: int
    ops: int
    workers: int
    faults: str
    verdict: Verdict
    actions: int
    invocations: int
    crashes: int
    injected: dict[str, int]
    executions: int
    quiesce_rounds: int
    seconds: float
    trace_digest: str
    counts: dict[str, int] = field(default_factory=dict)
    mix: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    dynamodb: str = "moto"
    internal_share: float = 0.0
    interleave: bool = True
    onchain_share: float | None = None  # None: the default for the interleave mode (workload.onchain_default)
    isolate_environments: bool = True
    switches: int = 0  # interleaving: how often an invocation stopped at an I/O edge for another to run
    max_concurrent: int = 0

    def replay_command(self) -> str:
        return (f"python -m satflow_dev.sim --seed {self.seed} --ops {self.ops} --workers {self.workers} "
                f"--faults {self.faults}" + (" --dynamodb local" if self.dynamodb == "local" else "")
                + (f" --internal-share {self.internal_share}" if self.internal_share else "")
                + ("" if self.interleave else " --no-interleave")
                + (f" --onchain-share {self.onchain_share}" if self.onchain_share is not None else "")
                + ("" if self.isolate_environments else " --shared-environments"))

    def summary(self) -> str:
        lines = [f"seed {self.seed}: {'OK' if self.ok else 'ANOMALIES'} — {self.ops} ops, {self.workers} workers, "
                 f"{self.actions} actions, {self.invocations} invocations, {self.executions} workflows, "
                 f"{self.crashes} crashes, faults {self.injected}, "
                 f"interleaved: {self.switches} switches, up to {self.max_concurrent} concurrent, "
                 f"quiesced in {self.quiesce_rounds} rounds, "
                 f"{self.seconds:.1f} s ({self.ops / max(self.seconds, 1e-9):.1f} ops/s), trace {self.trace_digest}"]
        lines.append(f"  workload: {self.mix}")
        lines += [f"  checked: {c}" for c in self.verdict.checks]
        lines += [f"  SKIPPED: {s}" for s in self.verdict.skipped]
        lines += [f"  ANOMALY: {a}" for a in self.verdict.anomalies]
        if not self.ok:
            lines.append(f"  replay: {self.replay_command()}")
        return "\n".join(lines)


def run_seed(seed: int, ops: int = 100, workers: int = 4, faults: str = "all", accounts: int = 6,
             endpoint_url: str | None = None, internal_share: float = 0.0, interleave: bool = True,
             onchain_share: float | None = None,
             isolate_environments: bool = True) -> RunResult:
    started = time.perf_counter()
    world = World(seed, Faults.parse(faults), endpoint_url=endpoint_url, interleave=interleave,
                  isolate_environments=isolate_environments).start()
    try:
        from .workload import onchain_default

        wl = Workload(world, seed, ops, workers, accounts, internal_share,
                      onchain_default(interleave) if onchain_share is None else onchain_share)
        wl.setup()
        world.faults.enabled = True
        actions = 0
        while wl.busy():
            wl.tick()
            actions += 1
            if actions > ops * 200:
                wl.model.anomalies.append(f"liveness: workload did not finish in {actions} actions")
                break
        rounds = quiesce(wl)
        verdict = check(wl)
        return RunResult(seed=seed, ops=ops, workers=workers, faults=faults, verdict=verdict, actions=actions,
                         invocations=world.invocations, crashes=world.crashes, injected=dict(world.faults.injected),
                         executions=len(world.executions), quiesce_rounds=rounds,
                         seconds=time.perf_counter() - started,
                         trace_digest=hashlib.sha256("\n".join(wl.trace).encode()).hexdigest()[:16],
                         counts=dict(wl.counts), mix=wl.mix(), dynamodb="local" if endpoint_url else "moto",
                         internal_share=internal_share, interleave=interleave, onchain_share=onchain_share,
                         isolate_environments=isolate_environments, switches=world.sched.switches,
                         max_concurrent=world.sched.max_concurrent)
    finally:
        world.stop()
