"""Flow-test harness: the REAL payment state machine (statemachines/*.asl.json) executed by moto's Step Functions
interpreter on the locked moto server, its Lambda tasks answered in-process by functions/payment/app.py, against
the Lightning simulator (or, for ``lightning_flow``'s ``lnd`` parameter, the real regtest master lnd) through the
LND REST adapter.

Server mode (not ``mock_aws``) because an execution runs in moto's worker thread while the test polls, and flows
with concurrent API calls need moto behind its one lock. The contract tests reuse :class:`MotoStepFunctions`.
"""
from __future__ import annotations

import json
import os
import re
import time
import traceback
import uuid
from collections import Counter
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
STATEMACHINES = ROOT / "statemachines"
PAYMENT_ASL = STATEMACHINES / "payment.asl.json"
REVIEW_ASL = STATEMACHINES / "review.asl.json"
REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/satflow-flow-tests"
PAYMENT_FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:PaymentFunction"
RISK_FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:RiskFunction"
TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def placeholders(text: str) -> set[str]:
    """The ``${Name}`` DefinitionSubstitutions an ASL file needs."""
    return set(_PLACEHOLDER.findall(text))


def render_asl(path: Path, substitutions: dict[str, str]) -> str:
    """The definition as CloudFormation would hand it to Step Functions."""
    text = path.read_text()
    missing = placeholders(text) - set(substitutions)
    assert not missing, f"{path.name}: no substitution for {sorted(missing)}"
    return _PLACEHOLDER.sub(lambda m: substitutions[m.group(1)], text)


class LambdaCrash(Exception):
    """Raise from a fault hook to make the invocation fail with an arbitrary Lambda error type, e.g. the
    runtime's own ``Sandbox.Timedout`` (a name no Python class can have)."""

    def __init__(self, error_type: str, message: str = "") -> None:
        super().__init__(message or error_type)
        self.error_type = error_type


@dataclass
class LambdaContext:
    function_name: str = "PaymentFunction"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = PAYMENT_FUNCTION_ARN
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000


class MotoStepFunctions:
    """A locked moto server with state machine execution on; Lambda Invoke is answered by registered Python
    callables (``functions[name](event) -> result``; an exception becomes the Lambda function error whose
    ``errorType`` is the class name, which is what ASL Retry/Catch match)."""

    def __init__(self) -> None:
        self.functions: dict[str, Callable[[Any], Any]] = {}
        self.url = ""
        self._stop: Callable[[], None] | None = None
        self._saved_config: dict[str, Any] = {}
        self._saved_port: str | None = None

    # -- lifecycle
    def start(self) -> "MotoStepFunctions":
        from moto.core.config import default_user_config

        from satflow_dev.runtime.moto_server import start_moto_server

        self._saved_config = deepcopy(dict(default_user_config))
        self._saved_port = os.environ.get("MOTO_PORT")
        self.url, self._stop = start_moto_server(lambda_invoker=self._invoke)
        return self

    def stop(self) -> None:
        from moto.core.config import default_user_config

        if self._stop is not None:
            self._stop()
            self._stop = None
        # moto's config is process-global: do not leak "execute state machines" into other test modules.
        default_user_config.clear()
        default_user_config.update(self._saved_config)
        if self._saved_port is None:
            os.environ.pop("MOTO_PORT", None)
        else:
            os.environ["MOTO_PORT"] = self._saved_port

    def client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(service, endpoint_url=self.url, region_name=REGION, aws_access_key_id="testing",
                            aws_secret_access_key="testing",
                            config=Config(max_pool_connections=20, retries={"total_max_attempts": 1}))

    # -- Lambda Invoke, called by the server for moto's interpreter
    def _invoke(self, function: str, payload: bytes, invocation_type: str):
        from satflow_dev.runtime.moto_server import LambdaInvokeResult

        name = function.split(":")[6] if function.startswith("arn:") else function
        handler = self.functions.get(name)
        if handler is None:
            return None
        event = json.loads(payload) if payload.strip() else {}
        try:
            result = handler(event)
        except LambdaCrash as exc:
            error = {"errorType": exc.error_type, "errorMessage": str(exc)}
            return LambdaInvokeResult(200, json.dumps(error).encode(), function_error="Unhandled")
        except Exception as exc:  # the Lambda service reports any handler error as a function error
            error = {"errorType": type(exc).__name__, "errorMessage": str(exc),
                     "stackTrace": traceback.format_exception(exc)[1:]}
            return LambdaInvokeResult(200, json.dumps(error).encode(), function_error="Unhandled")
        return LambdaInvokeResult(200, json.dumps(result).encode())

    # -- state machines
    def create_state_machine(self, path: Path, substitutions: dict[str, str], name: str | None = None) -> str:
        sfn = self.client("stepfunctions")
        definition = render_asl(path, substitutions)
        response = sfn.create_state_machine(name=name or f"{path.stem.split('.')[0]}-{uuid.uuid4().hex[:8]}",
                                            definition=definition, roleArn=ROLE_ARN, type="STANDARD")
        return response["stateMachineArn"]

    def execution_arn(self, state_machine_arn: str, name: str) -> str:
        return state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"

    def wait(self, execution_arn: str, timeout_s: float = 20.0) -> "ExecutionResult":
        """Poll until the execution is terminal (bounded), then read its history."""
        sfn = self.client("stepfunctions")
        deadline = time.monotonic() + timeout_s
        while True:
            described = sfn.describe_execution(executionArn=execution_arn)
            if described["status"] in TERMINAL:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"execution {execution_arn} still {described['status']} after {timeout_s} s")
            time.sleep(0.02)
        events = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
        entered = [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]
        return ExecutionResult(status=described["status"], states=entered,
                               output=json.loads(described["output"]) if described.get("output") else None,
                               error=described.get("error"), cause=described.get("cause"))


@dataclass(frozen=True)
class ExecutionResult:
    status: str
    states: list[str]  # every state entered, in order
    output: Any
    error: str | None
    cause: str | None

    @property
    def final_state(self) -> str:
        return self.states[-1]


class CountingTransport:
    """Wraps the transport to LND (the simulator's, or real HTTPS to the regtest master node) and records what
    reached LND: every send (by payment hash, with its body) and every track. Neither node counts for us.

    ``payment_hash_of``: decodes a payment request (a callable, or an object with that method: the simulator)."""

    def __init__(self, inner: Any, payment_hash_of: Any) -> None:
        import httpx

        self._inner = inner
        self._hash_of = getattr(payment_hash_of, "payment_hash_of", payment_hash_of)
        self.sends: Counter[str] = Counter()
        self.send_bodies: list[dict] = []
        self.tracks = 0

        outer = self

        class _Transport(httpx.BaseTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                if request.method == "POST" and request.url.path == "/v2/router/send":
                    body = json.loads(request.read() or b"{}")
                    outer.send_bodies.append(body)
                    outer.sends[outer._hash_of(body["payment_request"])] += 1
                elif request.url.path.startswith("/v2/router/track/"):
                    outer.tracks += 1
                return outer._inner.handle_request(request)

        self.transport = _Transport()
