"""Lambda execution environments as processes: each function's warm environments are worker processes
(worker.py), each running ONE invocation at a time, like Lambda.

Why processes: an environment's module state must belong to one invocation. Powertools' HTTP resolver keeps the
current request on a class attribute (`BaseRouter.current_event`), so two invocations in threads of one process
read each other's request (8 clients through the old thread-based runtime: wrong answers, money moved under
another client's key). A process also gives every function its own os.environ, and a timeout can kill it.

- Spawned on demand up to the function's concurrency: `ReservedConcurrentExecutions` from the template, else
  `SATFLOW_LOCAL_CONCURRENCY` (default 4: the work is CPU-bound on a laptop). Past that, an invocation waits for
  a free environment for up to `throttle_wait_s`, then fails with `TooManyRequestsException` (Lambda would throttle
  at once; a local runtime serving several clients on few cores queues briefly instead).
- Started with subprocess (fork + exec of a fresh interpreter), never a bare fork: the runtime process has threads
  and moto's state, which a forked child would inherit half-locked. `python -P` keeps the current directory off
  sys.path: a handler sees only the layer package and the standard library, as on Lambda.
- Reused warm; a worker that crashed (end of file on its pipe) is dropped and the next invocation cold-starts a
  new one; cold starts are logged with their init time.
- Timeouts: past the function's `Timeout` the worker is killed (SIGKILL) and the invocation fails with
  `Sandbox.Timedout` "Task timed out after N.00 seconds", which is what Lambda reports (Step Functions Catch and
  Retry see that errorType; the HTTP gateway answers 500 as API Gateway does for a function error). The init
  phase has its own limit, `init_timeout_s` (Lambda: 10 s; 30 s here for a loaded machine).
- `SATFLOW_LOCAL_TIMEOUT_SCALE` (default 1) multiplies every timeout: only for machines so overloaded that a
  function's deployed timeout means nothing (a shared CI box at load 15); the context's remaining time follows it.
- Idle workers are stopped after `idle_s` (SATFLOW_LOCAL_IDLE_S, default 600 s, as Lambda reclaims idle
  environments), so memory follows load.
"""
from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from .moto_server import LambdaInvokeResult
from .template import FunctionSpec
from .worker import LambdaContext, read_message, write_message

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 4
DEFAULT_IDLE_S = 600.0
INIT_TIMEOUT_S = 30.0
THROTTLE_WAIT_S = 30.0


class FunctionError(Exception):
    """An invocation failed the way Lambda reports it: `error_type` is the payload's errorType (the handler's
    exception class name, Sandbox.Timedout, Runtime.ExitError, ...)."""

    def __init__(self, error_type: str, message: str, stack_trace: list[str] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.stack_trace = stack_trace or []

    def __str__(self) -> str:
        return f"{self.error_type}: {self.args[0]}"

    @property
    def payload(self) -> dict[str, Any]:
        return {"errorType": self.error_type, "errorMessage": self.args[0], "stackTrace": self.stack_trace}


def _read_with_deadline(fd: int, deadline: float) -> bytes | None | bool:
    """A message, None at end of file, False when the deadline passed first."""
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    ready, _, _ = select.select([fd], [], [], left)
    if not ready:
        return False
    return read_message(fd)


class Worker:
    """One execution environment: a worker process and its two pipes."""

    def __init__(self, function: FunctionSpec, env: Mapping[str, str]) -> None:
        self.function = function
        request_read, self._request_w = os.pipe()
        self._response_r, response_write = os.pipe()
        module_name = f"_satflow_local_{function.logical_id}_{function.handler_module.replace('.', '_')}"
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-P", "-m", "satflow_dev.runtime.worker", str(request_read), str(response_write),
                 str(function.handler_file), function.handler_attr, module_name],
                env=dict(env), pass_fds=(request_read, response_write), stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        except BaseException:
            for fd in (self._request_w, self._response_r):
                os.close(fd)
            raise
        finally:
            os.close(request_read)
            os.close(response_write)
        self.pid = self.process.pid
        self.invocations = 0
        self.last_used = time.monotonic()

    def wait_ready(self, timeout_s: float) -> int:
        """Wait for the init phase; returns its duration (ms) or raises FunctionError."""
        answer = _read_with_deadline(self._response_r, time.monotonic() + timeout_s)
        if answer is False:
            self.kill()
            raise FunctionError("Runtime.InitTimeout", f"init of {self.function.logical_id} took over {timeout_s:.0f} s")
        if answer is None:
            code = self.kill()
            raise FunctionError("Runtime.ExitError", f"Runtime exited during init with exit status {code}")
        message = json.loads(answer)
        if "init_error" in message:
            self.kill()
            error = message["init_error"]
            raise FunctionError(error["errorType"], error["errorMessage"], error.get("stackTrace"))
        return int(message["init_ms"])

    def send(self, event: Any, context: LambdaContext) -> None:
        """Raises OSError (BrokenPipeError) when the worker is gone: the event was not delivered."""
        request = json.dumps({"event": event, "context": context.__dict__}).encode()
        write_message(self._request_w, request)

    def receive(self, deadline: float) -> dict[str, Any] | None | bool:
        answer = _read_with_deadline(self._response_r, deadline)
        return answer if answer is None or answer is False else json.loads(answer)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> int | None:
        """SIGKILL and reap; returns the exit status."""
        if self.process.poll() is None:
            self.process.kill()
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        self._close()
        return code

    def stop(self, timeout_s: float = 2.0) -> None:
        """End of file on the request pipe lets the worker exit on its own; kill it if it does not."""
        try:
            os.close(self._request_w)
        except OSError:
            pass
        self._request_w = -1
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self._close()

    def _close(self) -> None:
        for name in ("_request_w", "_response_r"):
            fd = getattr(self, name)
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, name, -1)


@dataclass
class _FunctionPool:
    function: FunctionSpec
    limit: int
    idle: list[Worker] = field(default_factory=list)
    count: int = 0  # idle + busy + starting
    cold_starts: int = 0
    condition: threading.Condition = field(default_factory=threading.Condition)


def function_concurrency(function: FunctionSpec, environ: Mapping[str, str]) -> int:
    if function.reserved_concurrency is not None and function.reserved_concurrency > 0:
        return function.reserved_concurrency
    return max(1, int(environ.get("SATFLOW_LOCAL_CONCURRENCY") or DEFAULT_CONCURRENCY))


class ProcessInvoker:
    """Invokes the template's functions in worker processes; also answers Lambda Invoke calls made to moto.

    Same interface as invoker.InProcessInvoker: `invoke(function, event)` returns the handler's result or raises
    (here always a FunctionError), `lambda_api(...)` serves moto's Lambda Invoke."""

    def __init__(self, functions: Iterable[FunctionSpec], endpoint_url: str, *,
                 environ: Mapping[str, str] | None = None, init_timeout_s: float = INIT_TIMEOUT_S,
                 throttle_wait_s: float = THROTTLE_WAIT_S, idle_s: float | None = None) -> None:
        from .invoker import lambda_process_env

        self.functions = list(functions)
        self.endpoint_url = endpoint_url
        environ = dict(os.environ if environ is None else environ)
        self.init_timeout_s = init_timeout_s
        self.throttle_wait_s = throttle_wait_s
        self.idle_s = float(environ.get("SATFLOW_LOCAL_IDLE_S") or DEFAULT_IDLE_S) if idle_s is None else idle_s
        self.timeout_scale = float(environ.get("SATFLOW_LOCAL_TIMEOUT_SCALE") or 1)
        # Each worker gets the runtime's environment (PATH, HOME, SATFLOW_* knobs of `make run`) without any
        # function's variables, then its own function's: no variable leaks from one function to another.
        template_keys = {key for fn in self.functions for key in fn.env}
        base = {k: v for k, v in environ.items() if k not in template_keys}
        base["PYTHONUNBUFFERED"] = "1"  # log lines appear when written
        self._envs = {fn.logical_id: {**base, **lambda_process_env(fn, endpoint_url)} for fn in self.functions}
        self._pools = {fn.logical_id: _FunctionPool(fn, function_concurrency(fn, environ)) for fn in self.functions}
        self._stopping = False
        self._reaper = threading.Thread(target=self._reap_idle, name="worker-reaper", daemon=True)
        self._reaper_wake = threading.Event()
        self._reaper.start()

    # -- the invoker interface

    def prepare(self, *, warm: bool = True) -> None:
        """With `warm`, start one environment per function now, in parallel: a handler that does not import
        fails the start, not the first request."""
        if not warm:
            return
        errors: list[BaseException] = []

        def warm_one(fn: FunctionSpec) -> None:
            try:
                self._release(fn.logical_id, self._acquire(fn), healthy=True)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=warm_one, args=(fn,), name=f"warm:{fn.logical_id}")
                   for fn in self.functions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def prewarm(self, function: FunctionSpec | str, count: int) -> int:
        """Start environments of `function` in parallel until `count` are warm (at most its concurrency), as
        provisioned concurrency would; returns how many are warm."""
        fn = function if isinstance(function, FunctionSpec) else self.find(function)
        assert fn is not None, function
        pool = self._pools[fn.logical_id]
        # Hold `count` environments at once (warm ones reused, the rest cold-started), then release them all.
        wanted = min(count, pool.limit)
        workers: list[Worker] = []
        lock = threading.Lock()

        def start_one() -> None:
            worker = self._acquire(fn)
            with lock:
                workers.append(worker)

        threads = [threading.Thread(target=start_one, name=f"prewarm:{fn.logical_id}") for _ in range(wanted)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for worker in workers:
            self._release(fn.logical_id, worker, healthy=True)
        with pool.condition:
            return len(pool.idle)

    def find(self, name_or_arn: str) -> FunctionSpec | None:
        name = name_or_arn
        if name.startswith("arn:"):
            parts = name.split(":")
            name = parts[6] if len(parts) > 6 else name
        for fn in self.functions:
            if name in (fn.logical_id, fn.name):
                return fn
        return None

    def environment(self, function: FunctionSpec | str) -> dict[str, str]:
        fn = function if isinstance(function, FunctionSpec) else self.find(function)
        assert fn is not None
        return dict(self._envs[fn.logical_id])

    def invoke(self, function: FunctionSpec | str, event: Any) -> Any:
        fn = function if isinstance(function, FunctionSpec) else self.find(function)
        if fn is None:
            raise KeyError(f"no function {function!r} in the template")
        timeout_s = fn.timeout_s * self.timeout_scale
        for attempt in (1, 2):
            worker = self._acquire(fn)
            started = time.time()
            context = LambdaContext(function_name=fn.name, memory_limit_in_mb=fn.memory_mb,
                                    invoked_function_arn=fn.arn, log_group_name=f"/aws/lambda/{fn.name}",
                                    deadline_epoch_ms=started * 1000 + timeout_s * 1000)
            try:
                worker.send(event, context)
            except OSError:
                # An idle worker died (killed from outside): the event never reached it, so a fresh one may run it.
                self._release(fn.logical_id, worker, healthy=False)
                if attempt == 2:
                    raise FunctionError("Runtime.ExitError", "the execution environment is gone") from None
                continue
            return self._await_result(fn, worker, context, timeout_s)
        raise AssertionError("unreachable")

    def _await_result(self, fn: FunctionSpec, worker: Worker, context: LambdaContext, timeout_s: float) -> Any:
        healthy = False
        try:
            answer = worker.receive(time.monotonic() + timeout_s)
            if answer is False:
                worker.kill()
                log.warning("%s: invocation %s timed out after %.0f s; worker pid %d killed", fn.logical_id,
                            context.aws_request_id, timeout_s, worker.pid)
                raise FunctionError("Sandbox.Timedout", f"RequestId: {context.aws_request_id} Error: Task timed "
                                                        f"out after {timeout_s:.2f} seconds")
            if answer is None:
                code = worker.kill()
                log.warning("%s: worker pid %d exited (status %s) during invocation %s", fn.logical_id, worker.pid,
                            code, context.aws_request_id)
                raise FunctionError("Runtime.ExitError", f"RequestId: {context.aws_request_id} Error: Runtime "
                                                         f"exited with error: exit status {code}")
            healthy = True
            worker.invocations += 1
            if "error" in answer:
                error = answer["error"]
                raise FunctionError(error["errorType"], error["errorMessage"], error.get("stackTrace"))
            return answer["result"]
        finally:
            self._release(fn.logical_id, worker, healthy=healthy)

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
        except FunctionError as exc:
            return LambdaInvokeResult(200, json.dumps(exc.payload).encode(), function_error="Unhandled")
        except Exception as exc:  # noqa: BLE001 - the runtime's own failure still answers as a function error
            error = {"errorType": type(exc).__name__, "errorMessage": str(exc),
                     "stackTrace": traceback.format_exception(exc)[1:]}
            return LambdaInvokeResult(200, json.dumps(error).encode(), function_error="Unhandled")
        return LambdaInvokeResult(200, json.dumps(result).encode())

    def _invoke_logged(self, fn: FunctionSpec, event: Any) -> None:
        try:
            self.invoke(fn, event)
        except Exception:
            log.exception("asynchronous invocation of %s failed", fn.logical_id)

    # -- the pools

    def _acquire(self, fn: FunctionSpec) -> Worker:
        pool = self._pools[fn.logical_id]
        wait_until = time.monotonic() + self.throttle_wait_s
        with pool.condition:
            while True:
                if self._stopping:
                    raise FunctionError("Runtime.Stopping", "the local runtime is stopping")
                while pool.idle:
                    worker = pool.idle.pop()
                    if worker.alive():
                        return worker
                    pool.count -= 1  # died while idle: forget it
                    worker.kill()
                if pool.count < pool.limit:
                    pool.count += 1
                    break
                left = wait_until - time.monotonic()
                if left <= 0:
                    raise FunctionError("TooManyRequestsException",
                                        f"Rate Exceeded: all {pool.limit} environments of {fn.logical_id} are busy")
                pool.condition.wait(left)
        # A cold start, outside the lock: other invocations of this function go on meanwhile.
        started = time.perf_counter()
        try:
            worker = Worker(fn, self._envs[fn.logical_id])
            init_ms = worker.wait_ready(self.init_timeout_s)
        except BaseException:
            with pool.condition:
                pool.count -= 1
                pool.condition.notify()
            raise
        pool.cold_starts += 1
        log.info("%s: cold start, worker pid %d ready in %.0f ms (init %d ms; %d/%d environments)", fn.logical_id,
                 worker.pid, (time.perf_counter() - started) * 1000, init_ms, pool.count, pool.limit)
        return worker

    def _release(self, logical_id: str, worker: Worker, *, healthy: bool) -> None:
        pool = self._pools[logical_id]
        with pool.condition:
            if healthy and not self._stopping:
                worker.last_used = time.monotonic()
                pool.idle.append(worker)
            else:
                pool.count -= 1
            pool.condition.notify()
        if not healthy:
            worker.kill()
        elif self._stopping:
            worker.stop()

    def _reap_idle(self) -> None:
        while not self._reaper_wake.wait(min(30.0, max(0.5, self.idle_s / 4))):
            now = time.monotonic()
            for pool in self._pools.values():
                expired: list[Worker] = []
                with pool.condition:
                    for worker in list(pool.idle):
                        if now - worker.last_used > self.idle_s:
                            pool.idle.remove(worker)
                            pool.count -= 1
                            expired.append(worker)
                for worker in expired:
                    log.info("%s: idle worker pid %d stopped after %.0f s", pool.function.logical_id, worker.pid,
                             self.idle_s)
                    worker.stop()

    # -- inspection and shutdown

    def worker_pids(self) -> dict[str, list[int]]:
        """The idle (warm) workers' pids per function."""
        out = {}
        for logical_id, pool in self._pools.items():
            with pool.condition:
                out[logical_id] = [w.pid for w in pool.idle]
        return out

    def cold_starts(self, function: str) -> int:
        return self._pools[function].cold_starts

    def stop(self) -> None:
        self._stopping = True
        self._reaper_wake.set()
        idle: list[Worker] = []
        for pool in self._pools.values():
            with pool.condition:
                idle.extend(pool.idle)
                pool.count -= len(pool.idle)
                pool.idle.clear()
                pool.condition.notify_all()
        for worker in idle:
            worker.stop()


def error_summary(exc: BaseException) -> str:
    """"<errorType>: <message>" for a failed invocation, whichever invoker ran it."""
    return str(exc) if isinstance(exc, FunctionError) else f"{type(exc).__name__}: {exc}"
