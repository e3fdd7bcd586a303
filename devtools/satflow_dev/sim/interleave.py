"""Concurrent invocations, interleaved deterministically at their I/O edges.

Running each invocation to completion before the next one starts hides every race between two invocations: a
monitor's read-then-write around a workflow step's write, two consumers of one redelivered message, a client retry
overlapping its own first attempt. Here an action (a client request, one workflow step, a queue poll, a monitor
job) runs on a thread of its own, but only one thread ever runs at a time: each stops at every DynamoDB call and
every node call (:meth:`Interleaver.yield_point`, called by the fault edges in world.py) and hands control back to
the simulation's scheduler, which picks — from the seed — which suspended invocation goes on next or which new action
starts. A run is still a pure function of its seed: the handoff is strict (an Event pair per task), so the OS
never chooses who runs.

Each invocation is its own Lambda execution environment. In one process, Powertools keeps the current request on
class and resolver attributes (``BaseRouter.current_event``, the resolver's ``context``): the scheduler saves and
restores that state on every switch, which is what separate processes give. ``isolate=False`` turns the swap off
and reproduces the local runtime's old bug (issue 10: concurrent handler invocations in threads of one process
mixing requests): tests/sim proves the oracle catches it.
"""
from __future__ import annotations

import sys
import threading
from typing import Any, Callable

HANDOFF_TIMEOUT_S = 120.0


class InterleaveDeadlock(RuntimeError):
    """A task neither yielded nor finished in time: a lock held across a yield point, or a real hang."""


class _Task:
    def __init__(self, key: str, fn: Callable[[], None], sched: "Interleaver") -> None:
        self.key = key
        self.fn = fn
        self.sched = sched
        self.go = threading.Event()
        self.back = threading.Event()
        self.done = False
        self.error: BaseException | None = None
        self.env: Any = None
        self.switches = 0
        self.thread = threading.Thread(target=self._main, name=f"sim-{key}", daemon=True)

    def _main(self) -> None:
        self.sched._local.task = self
        self.go.wait()
        self.go.clear()
        try:
            self.fn()
        except BaseException as exc:  # noqa: BLE001 — handed to the scheduler's thread, re-raised there
            self.error = exc
        finally:
            self.done = True
            self.back.set()


class Interleaver:
    def __init__(self, isolate: bool = True) -> None:
        self.isolate = isolate
        self.tasks: dict[str, _Task] = {}  # insertion order: deterministic
        self._local = threading.local()
        self.switches = 0
        self.max_concurrent = 0

    # -- scheduler side (the simulation's main thread)
    def busy(self, key: str) -> bool:
        return key in self.tasks

    def suspended(self) -> list[str]:
        return list(self.tasks)

    def spawn(self, key: str, fn: Callable[[], None]) -> None:
        """Start ``fn`` as a concurrent invocation; returns when it first yields or ends."""
        if key in self.tasks:
            raise RuntimeError(f"task {key} is already running")
        task = _Task(key, fn, self)
        self.tasks[key] = task
        self.max_concurrent = max(self.max_concurrent, len(self.tasks))
        task.thread.start()
        self._run(task)

    def resume(self, key: str) -> None:
        self._run(self.tasks[key])

    def drain(self, pick: Callable[[list[str]], str]) -> None:
        while self.tasks:
            self.resume(pick(self.suspended()))

    def _run(self, task: _Task) -> None:
        if self.in_task():
            raise RuntimeError("the scheduler runs on the main thread only")
        own = _capture() if self.isolate else None
        task.go.set()
        if not task.back.wait(HANDOFF_TIMEOUT_S):
            import traceback

            frame = sys._current_frames().get(task.thread.ident)
            where = "".join(traceback.format_stack(frame)[-12:]) if frame is not None else "(no frame)"
            raise InterleaveDeadlock(f"invocation {task.key} neither yielded nor ended in {HANDOFF_TIMEOUT_S:.0f} s; "
                                     f"it is at:\n{where}")
        task.back.clear()
        if own is not None:
            _restore(own)
        if task.done:
            del self.tasks[task.key]
            task.thread.join()
            if task.error is not None:
                raise task.error

    # -- task side
    def in_task(self) -> bool:
        return getattr(self._local, "task", None) is not None

    def yield_point(self) -> None:
        """Called before every DynamoDB and node call. Outside a task (setup, the oracle): nothing."""
        task = getattr(self._local, "task", None)
        if task is None:
            return
        task.switches += 1
        self.switches += 1
        if self.isolate:
            task.env = _capture()
        task.back.set()
        task.go.wait()
        task.go.clear()
        if self.isolate:
            _restore(task.env)


# ---------------------------------------------------------------- per-environment state kept in module/class state

def _resolvers() -> list[Any]:
    """The Powertools resolvers of the loaded handler modules (functions/*/app.py load as satflow_fn_*)."""
    try:
        from aws_lambda_powertools.event_handler.api_gateway import BaseRouter
    except ImportError:
        return []
    found = []
    for name, module in list(sys.modules.items()):
        if name.startswith("satflow_fn_") and module is not None:
            found += [v for v in vars(module).values() if isinstance(v, BaseRouter)]
    return found


def _capture() -> Any:
    from aws_lambda_powertools.event_handler.api_gateway import BaseRouter

    return ({"current_event": BaseRouter.__dict__.get("current_event"),
             "lambda_context": BaseRouter.__dict__.get("lambda_context")},
            [(r, dict(r.context), list(getattr(r, "processed_stack_frames", []))) for r in _resolvers()])


def _restore(state: Any) -> None:
    from aws_lambda_powertools.event_handler.api_gateway import BaseRouter

    attrs, resolvers = state
    for attr, value in attrs.items():
        if value is None:
            if attr in BaseRouter.__dict__:
                delattr(BaseRouter, attr)
        else:
            setattr(BaseRouter, attr, value)
    for resolver, context, frames in resolvers:
        resolver.context.clear()
        resolver.context.update(context)
        if hasattr(resolver, "processed_stack_frames"):
            resolver.processed_stack_frames[:] = frames
