"""Run our Lambda handlers IN THIS PROCESS (the in-process mode), plus what both modes share.

The local runtime runs handlers in worker processes (workers.ProcessInvoker, one invocation per process, as in
Lambda): that is the default and what `make run` uses. This in-process mode remains for tests that inspect or
script a handler module's state directly (`LocalRuntime(..., invocation="in-process")`); it is NOT safe with
concurrent invocations of HTTP handlers: Powertools' resolver keeps the current request on a class attribute,
shared by every copy of the module in a process.

- Each function's handler file is imported by path under a unique module name, so several `app.py` files
  coexist. Like Lambda, only the layer package (`satflow`, installed editable) is importable from a handler;
  sibling modules in a CodeUri directory are not put on sys.path.
- Each loaded copy of a handler module is one "execution environment": it serves one invocation at a time,
  concurrent invocations load further copies. Copies share the `satflow` package's module state.
- ONE process environment is shared by all functions (os.environ is process-wide). The runtime applies the
  template env of the function being invoked, plus AWS_ENDPOINT_URL/region/fake credentials, and when anything
  changed calls `satflow.config.reset()` and drops satflow.bootstrap's cached adapters. A function-specific
  variable that differs between functions is reported at start and is only reliable while those functions'
  invocations do not overlap (worker processes do not have this limit).
- Timeouts are only logged (a thread cannot be killed).
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any
from urllib.parse import unquote

from .moto_server import LambdaInvokeResult
from .resources import FAKE_CREDENTIALS, REGION
from .template import FunctionSpec
from .worker import LambdaContext

log = logging.getLogger(__name__)

Handler = Callable[[Any, Any], Any]


# Settings that exist only for the local runtime (the contract tests keep them out of template.yaml).
LOCAL_RUNTIME_ENV = {
    # Webhooks may target http:// and loopback/private addresses (the /_sim/webhooks sink on this machine).
    "SATFLOW_WEBHOOK_ALLOW_PRIVATE": "1",
}


def lambda_process_env(function: FunctionSpec, endpoint_url: str) -> dict[str, str]:
    """What a function sees in os.environ locally: AWS pointed at moto, the local-only settings, then the
    template's variables."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,  # boto3 and pynamodb both honour it
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        **FAKE_CREDENTIALS,
        # Powertools treats this as "not in Lambda": Tracer stays off (no X-Ray daemon here).
        "AWS_SAM_LOCAL": "true",
        **LOCAL_RUNTIME_ENV,
        **function.env,
    }


class ProcessEnv:
    """Applies function environments to os.environ and can put the previous values back (tests, shutdown)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._saved: dict[str, str | None] = {}

    def apply(self, env: Mapping[str, str]) -> None:
        with self._lock:
            changed = {k: v for k, v in env.items() if os.environ.get(k) != v}
            if not changed:
                return
            for key in changed:
                self._saved.setdefault(key, os.environ.get(key))
            os.environ.update(changed)
            _reset_satflow_config()

    def restore(self) -> None:
        with self._lock:
            for key, value in self._saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self._saved.clear()
            _reset_satflow_config()


def _reset_satflow_config() -> None:
    """satflow reads its settings once and builds its adapters once: forget both after the environment changed
    (a second runtime in the same process talks to a different moto port)."""
    try:
        from satflow import config
    except ImportError:
        return
    config.reset()
    bootstrap = sys.modules.get("satflow.bootstrap")  # not imported yet -> nothing cached
    if bootstrap is not None and hasattr(bootstrap, "override"):
        bootstrap.override(None)  # the whole graph, its Step Functions client included


_module_counter = itertools.count(1)


def load_handler(function: FunctionSpec) -> Handler:
    """Import the handler file under a unique module name and return its handler callable."""
    path = function.handler_file
    if not path.is_file():
        raise FileNotFoundError(f"{function.logical_id}: handler file {path} does not exist")
    module_name = f"_satflow_local_{function.logical_id}_{function.handler_module.replace('.', '_')}_" \
                  f"{next(_module_counter)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    # Registered before executing: dataclasses and pydantic look their module up in sys.modules.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    handler = getattr(module, function.handler_attr, None)
    if not callable(handler):
        raise AttributeError(f"{function.logical_id}: {path} has no callable {function.handler_attr!r}")
    return handler


class _ExecutionEnvironments:
    """Loaded copies of one function's handler; each serves one invocation at a time."""

    def __init__(self, function: FunctionSpec) -> None:
        self._function = function
        self._idle: list[Handler] = []
        self._lock = threading.Lock()

    def acquire(self) -> Handler:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        started = time.perf_counter()
        handler = load_handler(self._function)  # a cold start, outside the lock
        log.debug("%s: cold start in %.0f ms", self._function.logical_id, (time.perf_counter() - started) * 1000)
        return handler

    def release(self, handler: Handler) -> None:
        with self._lock:
            self._idle.append(handler)


class InProcessInvoker:
    """Invokes the template's functions in-process; also answers Lambda Invoke calls made to moto."""

    def __init__(self, functions: Iterable[FunctionSpec], endpoint_url: str, process_env: ProcessEnv | None = None
                 ) -> None:
        self.functions = list(functions)
        self.endpoint_url = endpoint_url
        self.process_env = process_env or ProcessEnv()
        self._environments = {fn.logical_id: _ExecutionEnvironments(fn) for fn in self.functions}
        self._report_env_conflicts()

    def _report_env_conflicts(self) -> None:
        seen: dict[str, tuple[str, str]] = {}
        for fn in self.functions:
            for key, value in fn.env.items():
                if key in seen and seen[key][1] != value:
                    log.warning("env %s differs between %s and %s; functions share one process env",
                                key, seen[key][0], fn.logical_id)
                seen.setdefault(key, (fn.logical_id, value))

    def prepare(self, *, warm: bool = True) -> None:
        """Apply the shared environment up front (code outside invocations sees it too) and, with `warm`, load
        one execution environment per function now: a handler that does not import fails the start, not the
        first request."""
        for fn in self.functions:
            self.process_env.apply(lambda_process_env(fn, self.endpoint_url))
        if warm:
            for fn in self.functions:
                environments = self._environments[fn.logical_id]
                environments.release(environments.acquire())

    def find(self, name_or_arn: str) -> FunctionSpec | None:
        """By logical id, function name, or (qualified) function ARN."""
        name = name_or_arn
        if name.startswith("arn:"):
            parts = name.split(":")
            name = parts[6] if len(parts) > 6 else name
        for fn in self.functions:
            if name in (fn.logical_id, fn.name):
                return fn
        return None

    def invoke(self, function: FunctionSpec | str, event: Any) -> Any:
        """Call the handler with a fresh context; its exceptions propagate to the caller."""
        fn = function if isinstance(function, FunctionSpec) else self.find(function)
        if fn is None:
            raise KeyError(f"no function {function!r} in the template")
        self.process_env.apply(lambda_process_env(fn, self.endpoint_url))
        environments = self._environments[fn.logical_id]
        handler = environments.acquire()
        started = time.time()
        context = LambdaContext(
            function_name=fn.name,
            memory_limit_in_mb=fn.memory_mb,
            invoked_function_arn=fn.arn,
            log_group_name=f"/aws/lambda/{fn.name}",
            deadline_epoch_ms=started * 1000 + fn.timeout_s * 1000,
        )
        try:
            return handler(event, context)
        finally:
            environments.release(handler)
            elapsed = time.time() - started
            if elapsed > fn.timeout_s:
                # Not enforced (a thread cannot be killed), but AWS would have: make it visible.
                log.warning("%s took %.1f s, over its %d s timeout", fn.logical_id, elapsed, fn.timeout_s)

    # -- the Lambda Invoke API, for moto's Step Functions interpreter (see moto_server.LambdaInvoker)

    def lambda_api(self, function_name: str, payload: bytes, invocation_type: str) -> LambdaInvokeResult | None:
        fn = self.find(unquote(function_name))
        if fn is None:
            return None
        event = json.loads(payload) if payload.strip() else {}
        if invocation_type == "DryRun":
            return LambdaInvokeResult(204)
        if invocation_type == "Event":
            threading.Thread(target=self._invoke_logged, args=(fn, event), daemon=True,
                             name=f"lambda-event:{fn.logical_id}").start()
            return LambdaInvokeResult(202)
        try:
            result = self.invoke(fn, event)
        except Exception as exc:  # the Lambda service reports any handler error as a function error
            error = {
                "errorMessage": str(exc),
                "errorType": type(exc).__name__,  # ASL Catch/Retry match on this name
                "requestId": "",
                "stackTrace": traceback.format_exception(exc)[1:],
            }
            return LambdaInvokeResult(200, json.dumps(error).encode(), function_error="Unhandled")
        return LambdaInvokeResult(200, json.dumps(result).encode())

    def _invoke_logged(self, fn: FunctionSpec, event: Any) -> None:
        try:
            self.invoke(fn, event)
        except Exception:
            log.exception("asynchronous invocation of %s failed", fn.logical_id)

    def stop(self) -> None:
        """Nothing to stop: the handlers live in this process."""


FunctionInvoker = InProcessInvoker  # the name the services' type hints use
