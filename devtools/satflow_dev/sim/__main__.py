"""python -m satflow_dev.sim --seed N --ops K --workers W [--faults all|none|name=p,...] [--seeds M]

--via-runtime: concurrent HTTP clients against the real local runtime instead (see runtime_mode.py)."""
from __future__ import annotations

import argparse
import sys
import time

from .run import run_seed


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--via-runtime" in argv:  # the same kind of workload through the real local runtime (runtime_mode.py)
        from .runtime_mode import main as runtime_main

        argv.remove("--via-runtime")
        return runtime_main(argv)
    p = argparse.ArgumentParser(prog="python -m satflow_dev.sim", description=__doc__)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seeds", type=int, default=1, help="run seeds seed .. seed+N-1")
    p.add_argument("--ops", type=int, default=100)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--accounts", type=int, default=6)
    p.add_argument("--faults", default="all")
    p.add_argument("--dynamodb", choices=("moto", "local"), default="moto",
                   help="local: DynamoDB Local (make regtest-build fetches it); moto slows down as tables grow")
    p.add_argument("--internal-share", type=float, default=0.0,
                   help="extra share of internal payments (aims a search at internal-invoice paths)")
    p.add_argument("--onchain-share", type=float, default=None,
                   help="share of on-chain client operations (default: 0.45 without interleaving, 0 with it: the "
                        "on-chain workload under interleaving has open anomalies, see README)")
    p.add_argument("--no-interleave", action="store_true",
                   help="run each invocation to completion before the next starts (no concurrent invocations)")
    p.add_argument("--shared-environments", action="store_true",
                   help="concurrent invocations share one environment's module state: reproduces the local "
                        "runtime's old request mixing (issue 10) to show the oracle catches it")
    p.add_argument("--quiet", action="store_true", help="one line per seed; details only for anomalies")
    args = p.parse_args(argv)
    ddb = None
    if args.dynamodb == "local":
        from satflow_dev.regtest.dynamodb_local import DynamoDBLocal

        ddb = DynamoDBLocal().start()
    try:
        return _run(args, ddb.endpoint_url if ddb else None)
    finally:
        if ddb is not None:
            ddb.stop()


def _run(args: argparse.Namespace, endpoint_url: str | None) -> int:
    started = time.perf_counter()
    total_ops = failures = anomalies = invocations = crashes = 0
    for seed in range(args.seed, args.seed + args.seeds):
        result = run_seed(seed, args.ops, args.workers, args.faults, args.accounts, endpoint_url,
                          args.internal_share, interleave=not args.no_interleave,
                          isolate_environments=not args.shared_environments, onchain_share=args.onchain_share)
        summary = result.summary()
        print(summary.splitlines()[0] if args.quiet and result.ok else summary, flush=True)
        total_ops += args.ops
        failures += not result.ok
        anomalies += len(result.verdict.anomalies)
        invocations += result.invocations
        crashes += result.crashes
    elapsed = time.perf_counter() - started
    print(f"{args.seeds} seed(s), {total_ops} ops, {args.workers} workers, {invocations} invocations, {crashes} "
          f"crashes injected, DynamoDB {args.dynamodb}, {elapsed:.1f} s: {total_ops / elapsed:.2f} ops/s; "
          f"anomalies: {anomalies} in {failures} seed(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
