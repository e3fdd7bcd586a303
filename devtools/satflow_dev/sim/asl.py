"""A deterministic, single-threaded interpreter for the subset of Amazon States Language our state machines use.

Why not moto's interpreter (what tests/flows uses): it runs every execution on its own thread with real-time Wait
and Retry intervals, so which of two executions touches DynamoDB first is decided by the OS, not by the seed.
Here an execution advances ONE state per :meth:`Execution.step`, the simulation's scheduler decides which execution
steps next, and Wait/Retry/Timeout intervals are deadlines on the simulation's fake clock.

Covered: Pass (Result, Parameters, ResultPath, OutputPath, States.JsonMerge), Task (a Lambda ARN, or
``arn:aws:states:::lambda:invoke.waitForTaskToken`` with TimeoutSeconds[Path]), Retry (ErrorEquals, IntervalSeconds,
MaxAttempts, BackoffRate), Catch (ResultPath), Choice (String/Numeric/Boolean Equals, IsPresent, And/Or/Not),
Wait (Seconds[Path]), Succeed, Fail. Anything else raises NotImplementedError at load, not mid-run.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

WAIT_FOR_TOKEN = "arn:aws:states:::lambda:invoke.waitForTaskToken"
SUPPORTED = {"Pass", "Task", "Choice", "Wait", "Succeed", "Fail"}


class TaskError(Exception):
    """A task ended with a Lambda function error (``error`` is its errorType, what Retry/Catch match)."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause


def _get(data: Any, path: str, context: dict) -> Any:
    if path.startswith("$$"):
        data, path = context, path[1:]
    if path == "$":
        return data
    if not path.startswith("$."):
        raise NotImplementedError(f"JSONPath {path!r}")
    for part in path[2:].split("."):
        if not isinstance(data, dict) or part not in data:
            raise KeyError(path)
        data = data[part]
    return data


def _has(data: Any, path: str, context: dict) -> bool:
    try:
        _get(data, path, context)
        return True
    except KeyError:
        return False


def _set(data: Any, path: str | None, value: Any) -> Any:
    """ResultPath semantics: '$' replaces, None discards, '$.a.b' sets inside a copy."""
    if path is None:
        return data
    if path == "$":
        return value
    out = copy.deepcopy(data) if isinstance(data, dict) else {}
    node = out
    parts = path[2:].split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


_MERGE = re.compile(r"^States\.JsonMerge\((\$[^,]*),\s*(\$[^,]*),\s*(true|false)\)$")


def _merge(a: dict, b: dict, deep: bool) -> dict:
    if deep:
        raise NotImplementedError("deep JsonMerge")
    return {**a, **b}


def _parameters(template: Any, data: Any, context: dict) -> Any:
    if isinstance(template, dict):
        out = {}
        for key, value in template.items():
            if key.endswith(".$"):
                m = _MERGE.match(value)
                if m:
                    out[key[:-2]] = _merge(_get(data, m.group(1), context), _get(data, m.group(2), context),
                                           m.group(3) == "true")
                elif value.startswith("States."):
                    raise NotImplementedError(f"intrinsic {value}")
                else:
                    out[key[:-2]] = copy.deepcopy(_get(data, value, context))
            else:
                out[key] = _parameters(value, data, context)
        return out
    if isinstance(template, list):
        return [_parameters(v, data, context) for v in template]
    return copy.deepcopy(template)


def _choice_matches(rule: dict, data: Any, context: dict) -> bool:
    if "And" in rule:
        return all(_choice_matches(r, data, context) for r in rule["And"])
    if "Or" in rule:
        return any(_choice_matches(r, data, context) for r in rule["Or"])
    if "Not" in rule:
        return not _choice_matches(rule["Not"], data, context)
    var = rule["Variable"]
    if "IsPresent" in rule:
        return _has(data, var, context) == rule["IsPresent"]
    if not _has(data, var, context):
        return False
    value = _get(data, var, context)
    for op, expected in rule.items():
        if op in ("Variable", "Next"):
            continue
        if op == "StringEquals":
            return isinstance(value, str) and value == expected
        if op == "BooleanEquals":
            return isinstance(value, bool) and value == expected
        if op == "NumericEquals":
            return isinstance(value, (int, float)) and not isinstance(value, bool) and value == expected
        if op == "NumericGreaterThanEquals":
            return isinstance(value, (int, float)) and value >= expected
        if op == "NumericLessThan":
            return isinstance(value, (int, float)) and value < expected
        raise NotImplementedError(f"Choice operator {op}")
    raise NotImplementedError(f"Choice rule {rule}")


def _error_matches(names: list[str], error: str) -> bool:
    if "States.ALL" in names:
        return True
    if error in names:
        return True
    return "States.TaskFailed" in names and error != "States.Timeout"


def check_definition(definition: dict) -> None:
    for name, state in definition["States"].items():
        if state["Type"] not in SUPPORTED:
            raise NotImplementedError(f"state {name}: type {state['Type']}")


@dataclass
class Execution:
    """One execution of a state machine. ``invoke(function_name, payload) -> result`` runs a Lambda task (raising
    :class:`TaskError` on a function error); ``now()`` is the fake clock."""

    machine: str
    name: str
    definition: dict
    data: Any
    invoke: Callable[[str, Any], Any]
    now: Callable[[], float]
    resource_names: dict[str, str]  # rendered Lambda ARN -> function name
    state: str = ""
    status: str = "RUNNING"  # RUNNING | SUCCEEDED | FAILED
    error: str | None = None
    wake_at: float = 0.0
    token: str | None = None  # parked on a task token
    token_deadline: float | None = None
    attempts: dict[tuple[str, int], int] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    _token_result: Any = None
    _token_error: TaskError | None = None

    def __post_init__(self) -> None:
        self.state = self.definition["StartAt"]

    @property
    def context(self) -> dict:
        return {"Execution": {"Name": self.name}, "Task": {"Token": self.token or ""}}

    def runnable(self) -> bool:
        if self.status != "RUNNING":
            return False
        if self.token is not None:
            return self.token_deadline is not None and self.now() >= self.token_deadline
        return self.now() >= self.wake_at

    def next_deadline(self) -> float | None:
        if self.status != "RUNNING":
            return None
        if self.token is not None:
            return self.token_deadline
        return self.wake_at

    # -- task tokens
    def complete_token(self, token: str, output: Any = None, error: TaskError | None = None) -> bool:
        if self.token != token or self.status != "RUNNING":
            return False
        self._token_result, self._token_error = output, error
        self.token_deadline = self.now()  # runnable at once
        self._token_done = True
        return True

    # -- one state
    def step(self) -> None:
        spec = self.definition["States"][self.state]
        self.history.append(self.state)
        kind = spec["Type"]
        if kind == "Pass":
            value = _parameters(spec["Parameters"], self.data, self.context) if "Parameters" in spec else \
                copy.deepcopy(spec.get("Result", self.data))
            self._advance(spec, _set(self.data, spec.get("ResultPath", "$"), value))
        elif kind == "Choice":
            for rule in spec["Choices"]:
                if _choice_matches(rule, self.data, self.context):
                    self.state = rule["Next"]
                    return
            if "Default" not in spec:
                self._fail("States.NoChoiceMatched", "")
                return
            self.state = spec["Default"]
        elif kind == "Wait":
            seconds = _get(self.data, spec["SecondsPath"], self.context) if "SecondsPath" in spec \
                else spec.get("Seconds", 0)
            self.wake_at = self.now() + float(seconds)
            self.state = spec["Next"]
        elif kind == "Succeed":
            self.status = "SUCCEEDED"
        elif kind == "Fail":
            self._fail(spec.get("Error", "States.Fail"), spec.get("Cause", ""))
        elif kind == "Task":
            self._task(spec)

    def _task(self, spec: dict) -> None:
        if spec["Resource"] == WAIT_FOR_TOKEN:
            if self.token is not None:  # woken: by a token answer or by the timeout
                token_done = getattr(self, "_token_done", False)
                self.token, self.token_deadline, self._token_done = None, None, False
                if token_done and self._token_error is None:
                    self._advance(spec, _set(self.data, spec.get("ResultPath", "$"), self._token_result))
                else:
                    error = self._token_error or TaskError("States.Timeout", "task timed out")
                    self._token_error = None
                    self._handle_error(spec, error)
                return
            params = _parameters(spec["Parameters"], self.data, {**self.context,
                                                                   "Task": {"Token": self._new_token()}})
            function = params["FunctionName"]
            try:
                self.invoke(self.resource_names.get(function, function), params["Payload"])
            except TaskError as exc:
                self.token = None
                self._handle_error(spec, exc)
                return
            if getattr(self, "_token_done", False):
                return  # answered while the task that received the token was still running (interleaved)
            timeout = _get(self.data, spec["TimeoutSecondsPath"], self.context) if "TimeoutSecondsPath" in spec \
                else spec.get("TimeoutSeconds")
            self.token_deadline = self.now() + float(timeout) if timeout is not None else None
            return
        payload = _parameters(spec["Parameters"], self.data, self.context) if "Parameters" in spec else self.data
        try:
            result = self.invoke(self.resource_names[spec["Resource"]], payload)
        except TaskError as exc:
            self._handle_error(spec, exc)
            return
        self._advance(spec, _set(self.data, spec.get("ResultPath", "$"), result))

    def _new_token(self) -> str:
        self._token_seq = getattr(self, "_token_seq", 0) + 1
        self.token = f"{self.machine}:{self.name}:{self.state}:{self._token_seq}"
        return self.token

    def _handle_error(self, spec: dict, exc: TaskError) -> None:
        for index, retrier in enumerate(spec.get("Retry", [])):
            if _error_matches(retrier["ErrorEquals"], exc.error):
                done = self.attempts.get((self.state, index), 0)
                if done < retrier.get("MaxAttempts", 3):
                    self.attempts[(self.state, index)] = done + 1
                    interval = retrier.get("IntervalSeconds", 1) * retrier.get("BackoffRate", 2.0) ** done
                    self.wake_at = self.now() + interval
                    return  # same state again
                break
        for catcher in spec.get("Catch", []):
            if _error_matches(catcher["ErrorEquals"], exc.error):
                self.data = _set(self.data, catcher.get("ResultPath", "$"), {"Error": exc.error, "Cause": exc.cause})
                self.state = catcher["Next"]
                return
        self._fail(exc.error, exc.cause)

    def _advance(self, spec: dict, data: Any) -> None:
        if "OutputPath" in spec:
            data = _get(data, spec["OutputPath"], self.context)
        self.data = data
        if spec.get("End"):
            self.status = "SUCCEEDED"
        else:
            self.state = spec["Next"]
            self.attempts = {k: v for k, v in self.attempts.items() if k[0] != self.state}

    def _fail(self, error: str, cause: str) -> None:
        self.status, self.error = "FAILED", f"{error}: {cause}"


def load_definition(path: str, substitutions: dict[str, str]) -> dict:
    text = open(path).read()
    for key, value in substitutions.items():
        text = text.replace("${" + key + "}", value)
    definition = json.loads(text)
    check_definition(definition)
    return definition
