"""One Lambda execution environment: a process that imports one function's handler and runs ONE event at a time.

Started by `workers.WorkerPool` as ``python -P -m satflow_dev.runtime.worker <request fd> <response fd> <handler
file> <handler attr> <module name>`` with the function's environment. The handler's own stdout/stderr (Powertools
writes its JSON log lines to stdout) stay the runtime's, so the protocol uses two extra pipe descriptors:
length-prefixed JSON messages, requests in, results out.

    -> {"ready": pid, "init_ms": ...} | {"init_error": {...}}   once, after importing the handler (the "init phase")
    <- {"event": ..., "context": {...}}                          one invocation
    -> {"result": ...} | {"error": {"errorType", "errorMessage", "stackTrace"}}

End of file on the request pipe (the runtime stopped or died) ends the process. Importing this module costs only
the standard library: what a cold start pays beyond Python itself is the handler's own imports, as in Lambda.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import struct
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

_HEADER = struct.Struct("!I")


@dataclass
class LambdaContext:
    """The attributes of the Lambda context object that our handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"
    deadline_epoch_ms: float = 0.0

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self.deadline_epoch_ms - time.time() * 1000))


def write_message(fd: int, message: bytes) -> None:
    """One message in a single write when it fits the pipe; os.write may write less, so loop."""
    data = memoryview(_HEADER.pack(len(message)) + message)
    while data:
        written = os.write(fd, data)
        data = data[written:]


def read_exactly(fd: int, size: int) -> bytes | None:
    """`size` bytes, or None at end of file (the other side closed or died)."""
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_message(fd: int) -> bytes | None:
    header = read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    return read_exactly(fd, _HEADER.unpack(header)[0])


def error_payload(exc: BaseException, error_type: str | None = None) -> dict[str, Any]:
    """What the Lambda Python runtime reports for an unhandled exception: ASL Catch/Retry match on errorType."""
    return {"errorType": error_type or type(exc).__name__, "errorMessage": str(exc),
            "stackTrace": traceback.format_exception(exc)[1:]}


def load_handler(handler_file: str, handler_attr: str, module_name: str) -> Any:
    spec = importlib.util.spec_from_file_location(module_name, handler_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pydantic look their module up in sys.modules
    spec.loader.exec_module(module)
    handler = getattr(module, handler_attr, None)
    if not callable(handler):
        raise AttributeError(f"{handler_file} has no callable {handler_attr!r}")
    return handler


def serve(request_fd: int, response_fd: int, handler_file: str, handler_attr: str, module_name: str) -> int:
    started = time.perf_counter()
    try:
        handler = load_handler(handler_file, handler_attr, module_name)
    except BaseException as exc:  # noqa: BLE001 - Lambda reports any init failure as Runtime.ImportModuleError
        write_message(response_fd, json.dumps({"init_error": error_payload(exc, "Runtime.ImportModuleError")})
                      .encode())
        return 1
    write_message(response_fd, json.dumps({"ready": os.getpid(),
                                           "init_ms": round((time.perf_counter() - started) * 1000)}).encode())
    while True:
        raw = read_message(request_fd)
        if raw is None:
            return 0
        request = json.loads(raw)
        context = LambdaContext(**request["context"])
        try:
            answer: dict[str, Any] = {"result": handler(request["event"], context)}
        except Exception as exc:  # noqa: BLE001 - a function error, the environment stays warm (as in Lambda)
            answer = {"error": error_payload(exc)}
        try:
            data = json.dumps(answer).encode()
        except (TypeError, ValueError) as exc:
            data = json.dumps({"error": error_payload(exc, "Runtime.MarshalError")}).encode()
        sys.stdout.flush()
        write_message(response_fd, data)


def main(argv: list[str]) -> int:
    # Ctrl-C in `make run` reaches the whole process group: the runtime stops its workers itself (end of file on the
    # request pipe), so a worker must not die half-way through an invocation with a KeyboardInterrupt trace.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    request_fd, response_fd, handler_file, handler_attr, module_name = argv
    return serve(int(request_fd), int(response_fd), handler_file, handler_attr, module_name)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
