"""Execution environments as processes (workers.ProcessInvoker): one invocation per process at a time, warm reuse,
crashes recycled, timeouts enforced by killing the worker, each function with its own environment."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from satflow_dev.runtime.template import FunctionSpec
from satflow_dev.runtime.workers import FunctionError, ProcessInvoker

HANDLER = '''\
import os
import time

CURRENT = None  # module state, as Powertools' resolver keeps the request it is resolving


class Refused(Exception):
    pass


def handler(event, context):
    global CURRENT
    CURRENT = event
    action = event.get("action")
    if action == "sleep":
        time.sleep(event["seconds"])
    elif action == "exit":
        os._exit(3)
    elif action == "raise":
        raise Refused("refused on purpose")
    elif action == "unserialisable":
        return {"value": object()}
    return {"pid": os.getpid(), "event_id": CURRENT["id"], "flavour": os.environ.get("FLAVOUR"),
            "remaining_ms": context.get_remaining_time_in_millis()}
'''


def _spec(root: Path, logical_id: str, *, timeout_s: int = 5, env: dict[str, str] | None = None,
          reserved: int | None = None) -> FunctionSpec:
    return FunctionSpec(logical_id=logical_id, name=f"local-{logical_id}",
                        arn=f"arn:aws:lambda:us-east-1:123456789012:function:local-{logical_id}",
                        code_dir=root, handler="app.handler", env=env or {}, timeout_s=timeout_s,
                        reserved_concurrency=reserved)


@pytest.fixture(scope="module")
def invoker(tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    (root / "app.py").write_text(HANDLER)
    functions = [
        _spec(root, "Vanilla", env={"FLAVOUR": "vanilla"}),
        _spec(root, "Mint", env={"FLAVOUR": "mint"}),
        _spec(root, "Quick", timeout_s=1),
        _spec(root, "Single", reserved=1),
    ]
    pool = ProcessInvoker(functions, "http://127.0.0.1:9", environ={**os.environ, "SATFLOW_LOCAL_CONCURRENCY": "4"},
                          throttle_wait_s=10)
    pool.prepare(warm=False)
    yield pool
    pool.stop()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: reaped workers disappear from /proc.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def _concurrently(n: int, call) -> list:
    results: list = [None] * n
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = call(i)
        except Exception as exc:  # noqa: BLE001 - asserted by the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_invocations_run_in_distinct_processes_and_see_only_their_own_event(invoker):
    results = _concurrently(4, lambda i: invoker.invoke("Vanilla", {"id": i, "action": "sleep", "seconds": 0.3}))
    assert [r["event_id"] for r in results] == [0, 1, 2, 3]
    pids = {r["pid"] for r in results}
    assert len(pids) == 4 and os.getpid() not in pids
    cold = invoker.cold_starts("Vanilla")
    # Warm reuse: the next invocations go to the same processes, no new cold start.
    again = [invoker.invoke("Vanilla", {"id": 10 + i}) for i in range(4)]
    assert {r["pid"] for r in again} <= pids and invoker.cold_starts("Vanilla") == cold
    assert all(0 < r["remaining_ms"] <= 5000 for r in again)


def test_each_function_has_its_own_environment(invoker):
    assert invoker.invoke("Vanilla", {"id": "v"})["flavour"] == "vanilla"
    assert invoker.invoke("Mint", {"id": "m"})["flavour"] == "mint"
    assert invoker.invoke("Quick", {"id": "q"})["flavour"] is None  # no leak from another function


def test_a_crashed_worker_fails_its_invocation_and_is_replaced(invoker):
    before = invoker.invoke("Mint", {"id": "before"})["pid"]
    with pytest.raises(FunctionError) as raised:
        invoker.invoke("Mint", {"id": "x", "action": "exit"})
    assert raised.value.error_type == "Runtime.ExitError" and "exit status 3" in str(raised.value)
    after = invoker.invoke("Mint", {"id": "after"})
    assert after["event_id"] == "after"
    assert not _pid_alive(before) or after["pid"] != before  # the dead one is never handed out again


def test_a_worker_killed_while_idle_is_replaced_without_losing_the_event(invoker):
    pid = invoker.invoke("Single", {"id": "first"})["pid"]
    os.kill(pid, 9)
    time.sleep(0.1)
    result = invoker.invoke("Single", {"id": "second"})
    assert result["event_id"] == "second" and result["pid"] != pid


def test_a_timeout_kills_the_worker_and_fails_the_invocation_like_lambda(invoker):
    warm = invoker.invoke("Quick", {"id": "warm"})["pid"]
    started = time.monotonic()
    with pytest.raises(FunctionError) as raised:
        invoker.invoke("Quick", {"id": "slow", "action": "sleep", "seconds": 30})
    elapsed = time.monotonic() - started
    assert raised.value.error_type == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in str(raised.value)
    assert elapsed < 10  # the 30 s sleep was cut short
    assert not _pid_alive(warm)  # the same warm worker ran it and was killed
    assert invoker.invoke("Quick", {"id": "next"})["pid"] != warm


def test_handler_exceptions_keep_the_environment_warm_and_carry_the_class_name(invoker):
    pid = invoker.invoke("Single", {"id": "a"})["pid"]
    with pytest.raises(FunctionError) as raised:
        invoker.invoke("Single", {"id": "b", "action": "raise"})
    assert raised.value.error_type == "Refused" and raised.value.stack_trace
    with pytest.raises(FunctionError) as raised:
        invoker.invoke("Single", {"id": "c", "action": "unserialisable"})
    assert raised.value.error_type == "Runtime.MarshalError"
    assert invoker.invoke("Single", {"id": "d"})["pid"] == pid


def test_reserved_concurrency_one_serialises_invocations_in_one_process(invoker):
    results = _concurrently(3, lambda i: invoker.invoke("Single", {"id": i, "action": "sleep", "seconds": 0.2}))
    assert [r["event_id"] for r in results] == [0, 1, 2]
    assert len({r["pid"] for r in results}) == 1


def test_the_lambda_invoke_api_reports_timeouts_and_errors_as_function_errors(invoker):
    ok = invoker.lambda_api("local-Quick", json.dumps({"id": "ok"}).encode(), "RequestResponse")
    assert (ok.status, ok.function_error, json.loads(ok.payload)["event_id"]) == (200, None, "ok")
    slow = invoker.lambda_api(
        "arn:aws:lambda:us-east-1:123456789012:function:local-Quick",
        json.dumps({"id": "slow", "action": "sleep", "seconds": 30}).encode(), "RequestResponse")
    assert (slow.status, slow.function_error) == (200, "Unhandled")
    assert json.loads(slow.payload)["errorType"] == "Sandbox.Timedout"  # what Step Functions Catch/Retry see
    refused = invoker.lambda_api("local-Quick", json.dumps({"id": "r", "action": "raise"}).encode(),
                                 "RequestResponse")
    assert json.loads(refused.payload)["errorType"] == "Refused"
    assert invoker.lambda_api("not-ours", b"{}", "RequestResponse") is None


def test_a_handler_that_does_not_import_fails_the_invocation_with_the_import_error(tmp_path):
    (tmp_path / "app.py").write_text("import module_that_does_not_exist\n")
    pool = ProcessInvoker([_spec(tmp_path, "Broken")], "http://127.0.0.1:9")
    try:
        with pytest.raises(FunctionError) as raised:
            pool.prepare()
        assert raised.value.error_type == "Runtime.ImportModuleError"
        assert "module_that_does_not_exist" in str(raised.value)
    finally:
        pool.stop()
