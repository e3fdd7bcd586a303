"""`python -m satflow_dev.runtime` (what `make run` starts): the whole backend on one local port."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .local_runtime import DEFAULT_TEMPLATE, LocalRuntime


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m satflow_dev.runtime", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SATFLOW_PORT") or 3000),
                        help="HTTP API port (default 3000, or $SATFLOW_PORT)")
    parser.add_argument("--moto-port", type=int, default=int(os.environ.get("SATFLOW_MOTO_PORT") or 0),
                        help="port for the moto AWS endpoint (default: a free port; or $SATFLOW_MOTO_PORT)")
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE, help="SAM template (default: the repo's)")
    parser.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE",
                        help="override a template parameter, e.g. --parameter Network=signet (repeatable)")
    parser.add_argument("--backend", choices=("simulators", "regtest"),
                        default=os.environ.get("SATFLOW_BACKEND") or "simulators",
                        help="simulators (default) or regtest: real btcd + two lnd (needs `make regtest-build`)")
    parser.add_argument("--dynamodb", choices=("auto", "moto", "local"),
                        default=os.environ.get("SATFLOW_DYNAMODB") or "auto",
                        help="auto (default): DynamoDB Local when java is installed and it is fetched "
                             "(`make dynamodb-local`), else moto; local: insist on DynamoDB Local; moto: force moto")
    parser.add_argument("--log-level", default=os.environ.get("SATFLOW_RUNTIME_LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


def _configure_logging(level: str) -> None:
    """The runtime's own lines get their own handler: Powertools' Logger(service="satflow") adds a filter to every
    root handler that drops records whose logger name *contains* "satflow" (so satflow_dev.* too)."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler()
    handler.setFormatter(fmt)
    runtime_logger = logging.getLogger("satflow_dev")
    runtime_logger.addHandler(handler)
    runtime_logger.setLevel(level)
    runtime_logger.propagate = False
    logging.basicConfig(level=logging.WARNING, format=fmt._fmt)  # moto, botocore, pynamodb: warnings only


def choose_dynamodb(requested: str) -> tuple[str, str]:
    """(engine, why) for --dynamodb auto|local|moto. DynamoDB Local is the default whenever it can run: it is a real
    engine (conditions, transactions and their costs as DynamoDB has them) and its memory does not grow with the
    table the way moto's copy-per-transaction does."""
    if requested == "moto":
        return "moto", "moto (chosen: DYNAMODB=moto)"
    if requested == "local":
        return "local", "DynamoDB Local (chosen: DYNAMODB=local)"
    import shutil

    from satflow_dev.regtest.toolchain import dynamodb_local_built

    if shutil.which("java") is None:
        return "moto", ("moto, FALLBACK: java is not installed, so DynamoDB Local (the default engine) cannot run; "
                        "install java 17+ and mvn for it")
    if not dynamodb_local_built():
        return "moto", ("moto, FALLBACK: DynamoDB Local (the default engine) is not fetched; `make dynamodb-local` "
                        "fetches it from Maven Central (needs mvn and network)")
    return "local", "DynamoDB Local (the default: java is installed; DYNAMODB=moto forces moto)"


def _banner(runtime: LocalRuntime, dynamodb_why: str = "") -> str:
    assert runtime.model is not None
    routes = sorted({route.route_key for route, _ in runtime.model.routes()})
    lines = [
        "",
        f"satflow local runtime on {runtime.url}   (moto AWS endpoint: {runtime.moto_url})",
        f"  template:   {runtime.model.path}",
        f"  parameters: {', '.join(f'{k}={v}' for k, v in runtime.model.parameters.items())}",
        f"  dynamodb:   {dynamodb_why or runtime.dynamodb}",
        *([f"              {runtime.dynamodb_local.endpoint_url} (behind the AWS endpoint above)"]
          if runtime.dynamodb_local is not None else []),
        "  functions:  one worker process per warm execution environment, one invocation at a time "
        f"(up to {_concurrency_summary(runtime)})",
        f"  routes:     {len(routes)} ({', '.join(routes[:4])}{', ...' if len(routes) > 4 else ''})",
    ]
    for service in runtime.services:
        describe = getattr(service, "describe", None)
        details = list(describe()) if callable(describe) else []
        lines.append(f"  {service.name + ':':<12}{details[0] if details else 'started'}")
        lines.extend(f"              {line}" for line in details[1:])
    if runtime.admin_key:
        lines.append(f"  admin key:  {runtime.admin_key}")
        if runtime.write_admin_key_file:
            lines.append(f"              (also in {runtime.admin_key_file}; set SATFLOW_ADMIN_KEY to fix it)")
    lines += [
        "",
        f"  curl -s {runtime.url}/v1/health",
    ]
    if runtime.admin_key:
        lines.append(f"  curl -s -X POST {runtime.url}/v1/accounts -H 'Authorization: Bearer {runtime.admin_key}' "
                     "-d '{\"external_ref\":\"me:1\",\"tier\":1}'")
    lines += [
        "  make demo" + ("" if runtime.gateway is None or runtime.gateway.port == 3000 else
                          f" PORT={runtime.gateway.port}"),
        "",
        "Ctrl-C to stop.",
    ]
    return "\n".join(lines)


def _concurrency_summary(runtime: LocalRuntime) -> str:
    from .workers import ProcessInvoker, function_concurrency

    if not isinstance(runtime.invoker, ProcessInvoker):
        return "in-process"
    limits = sorted({function_concurrency(fn, os.environ) for fn in runtime.invoker.functions})
    return f"{'/'.join(map(str, limits))} per function; SATFLOW_LOCAL_CONCURRENCY"


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    _configure_logging(args.log_level.upper())
    overrides = dict(p.split("=", 1) for p in args.parameter)
    from .regtest_service import service_factories

    dynamodb, dynamodb_why = choose_dynamodb(args.dynamodb)
    print(f"table engine: {dynamodb_why}", flush=True)
    runtime = LocalRuntime(args.template, host=args.host, port=args.port, moto_port=args.moto_port,
                           parameter_overrides=overrides, service_factories=service_factories(args.backend),
                           dynamodb=dynamodb)
    stop_requested = threading.Event()
    # Explicit handlers: a shell starts background jobs with SIGINT ignored, and then Python would never raise
    # KeyboardInterrupt.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_requested.set())
    if args.backend == "regtest":
        print("starting btcd + two lnd on regtest (12-30 s)...", flush=True)
    try:
        runtime.start()
    except OSError as exc:
        print(f"cannot start the local runtime on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # the regtest build is missing, a node did not start
        print(f"cannot start the local runtime: {exc}", file=sys.stderr)
        return 1
    try:
        print(_banner(runtime, dynamodb_why), flush=True)
        stop_requested.wait()
    finally:
        print("stopping...", flush=True)
        runtime.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
