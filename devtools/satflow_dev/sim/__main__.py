"""python -m satflow_dev.sim --seed N --ops K --workers W [--faults all|none|name=p,...] [--seeds M]"""
from __future__ import annotations

import argparse
import sys
import time

from .run import run_seed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m satflow_dev.sim", description=__doc__)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seeds", type=int, default=1, help="run seeds seed .. seed+N-1")
    p.add_argument("--ops", type=int, default=100)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--accounts", type=int, default=6)
    p.add_argument("--faults", default="all")
    args = p.parse_args(argv)
    started = time.perf_counter()
    total_ops = failures = 0
    for seed in range(args.seed, args.seed + args.seeds):
        result = run_seed(seed, args.ops, args.workers, args.faults, args.accounts)
        print(result.summary(), flush=True)
        total_ops += args.ops
        failures += not result.ok
    elapsed = time.perf_counter() - started
    print(f"{args.seeds} seed(s), {total_ops} ops in {elapsed:.1f} s: {total_ops / elapsed:.1f} ops/s, "
          f"{failures} seed(s) with anomalies")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
