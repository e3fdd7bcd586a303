"""``python -m satflow_dev.regtest build | up | dynamodb``.

* ``build``    - lnd/lncli/btcd/btcctl (Go module proxy) and DynamoDB Local (Maven Central) into .build/,
                 reused while current; prints what was built or reused and how long it took.
* ``up``       - btcd + our master lnd + an external lnd on regtest, funded, channels both ways; prints the
                 connection details as JSON and runs until Ctrl-C (everything is stopped and removed then).
* ``dynamodb`` - DynamoDB Local in memory on a free port until Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time


def _build(args: argparse.Namespace) -> int:
    from . import toolchain

    reports = []
    if not args.only or args.only == "nodes":
        reports.append(toolchain.build_nodes(force=args.force))
    if not args.only or args.only == "dynamodb":
        reports.append(toolchain.build_dynamodb_local(force=args.force))
    for report in reports:
        state = "reused (cached)" if report.cached else "built"
        print(f"{report.what}: {state} in {report.seconds:.1f}s -> {report.output}")
    return 0


def _wait_for_interrupt() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass


def _up(args: argparse.Namespace) -> int:
    from .stack import RegtestStack

    started = time.monotonic()
    with RegtestStack(keep_dir=args.keep) as stack:
        print(json.dumps(stack.describe(), indent=2))
        print(f"regtest stack up in {time.monotonic() - started:.1f}s; Ctrl-C stops it", file=sys.stderr, flush=True)
        _wait_for_interrupt()
    return 0


def _dynamodb(args: argparse.Namespace) -> int:
    from .dynamodb_local import DynamoDBLocal

    with DynamoDBLocal() as ddb:
        print(json.dumps({"endpoint_url": ddb.endpoint_url}), flush=True)
        _wait_for_interrupt()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m satflow_dev.regtest")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build lnd/btcd and fetch DynamoDB Local into .build/")
    build.add_argument("--force", action="store_true", help="rebuild even when the stamp matches")
    build.add_argument("--only", choices=("nodes", "dynamodb"))
    build.set_defaults(run=_build)
    up = sub.add_parser("up", help="run btcd + two funded lnd nodes with channels until Ctrl-C")
    up.add_argument("--keep", action="store_true", help="keep the data directories and logs afterwards")
    up.set_defaults(run=_up)
    ddb = sub.add_parser("dynamodb", help="run DynamoDB Local in memory until Ctrl-C")
    ddb.set_defaults(run=_dynamodb)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
