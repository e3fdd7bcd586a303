"""Schedules: fire the template's Schedule / ScheduleV2 events in-process (moto never fires them).

Expressions (parse_schedule):
- `rate(N minute|minutes|hour|hours|day|days)`: first fire one period after the runtime started (as a new
  EventBridge rule does), then every period.
- `cron(minutes hours day-of-month month day-of-week year)`, EventBridge's six fields, evaluated in UTC: `*`, `?`,
  numbers, `a-b` ranges, `,` lists, `/` steps (`*/5`, `10/15`, `1-30/2`), JAN-DEC and SUN-SAT (1 = SUN ... 7 = SAT).
  Limits: `L`, `W` and `#` are refused (the schedule is then only fired by hand), ScheduleExpressionTimezone is
  ignored (UTC), and when both day fields are given they must both match.
- `at(yyyy-mm-ddThh:mm:ss)` (ScheduleV2 one-time schedules): fired once if still ahead.

The event is the schedule's `Input` JSON when declared (EventBridge passes the constant as the whole event), else
the scheduled-event shape: `{"version": "0", "id", "detail-type": "Scheduled Event", "source": "aws.events"
(Schedule) / "aws.scheduler" (ScheduleV2), "account", "time", "region", "resources": [rule or schedule ARN],
"detail": {}}`. `time` is the real wall-clock time of the firing.

Speed-up: `SATFLOW_SCHEDULE_SCALE` (default 1) multiplies every wait: 0.1 runs the clock ten times faster
(rate(1 minute) fires every 6 s; cron is evaluated on that accelerated clock). 0 disables background firing: the
schedules are then only fired by hand (`fire()` or `POST /_sim/schedules/fire`).

Differences from AWS, on purpose: one thread per schedule fires synchronously and never overlaps itself (a run
longer than the period delays the next one; missed periods collapse into one); a handler error is logged, not
retried (Lambda retries asynchronous invocations twice). State machine schedules start an execution.

Dev routes: `GET /_sim/schedules` lists them; `POST /_sim/schedules/fire {"function": "MonitorFunction",
"job": "invoice_catchup"}` fires the schedule whose Input has that job (or `"event": "<event name>"`, or
`"index": n`) and answers `{"function", "event", "result"}` (500 `{"error": ...}` when the handler raised).
"""
from __future__ import annotations

import calendar
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from .dev_http import dev_error, jsonable
from .template import ACCOUNT_ID, REGION, FunctionSpec, ScheduleEvent, StateMachineSpec
from .workers import error_summary

if TYPE_CHECKING:
    from .invoker import FunctionInvoker
    from .local_runtime import LocalRuntime

log = logging.getLogger(__name__)

SCALE_ENV = "SATFLOW_SCHEDULE_SCALE"


class ScheduleError(ValueError):
    """An expression the local runner cannot evaluate."""


# ---------------------------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Rate:
    seconds: int

    def next_after(self, previous: float, now: float) -> float:
        """The first multiple of the period after `previous` that is later than `now`."""
        nxt = previous + self.seconds
        if nxt <= now:
            nxt += ((now - nxt) // self.seconds + 1) * self.seconds
        return nxt


@dataclass(frozen=True)
class At:
    when: float  # epoch seconds, UTC

    def next_after(self, previous: float, now: float) -> float | None:
        return self.when if self.when > now else None


_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {name: i for i, name in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], start=1)}
_DAYS = {name: i for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], start=1)}


class Cron:
    """An EventBridge cron expression (six fields, UTC). See the module docstring for what is supported."""

    def __init__(self, fields: str) -> None:
        parts = fields.split()
        if len(parts) != 6:
            raise ScheduleError(f"cron needs 6 fields (minutes hours day-of-month month day-of-week year): {fields!r}")
        self.text = fields
        self.minutes = _cron_field(parts[0], 0, 59, {})
        self.hours = _cron_field(parts[1], 0, 23, {})
        self.days_of_month = _cron_field(parts[2], 1, 31, {})
        self.months = _cron_field(parts[3], 1, 12, _MONTHS)
        self.days_of_week = _cron_field(parts[4], 1, 7, _DAYS)
        self.years = _cron_field(parts[5], 1970, 2199, {})

    def matches(self, t: datetime) -> bool:
        return (t.year in self.years and t.month in self.months and self._day_matches(t)
                and t.hour in self.hours and t.minute in self.minutes)

    def _day_matches(self, t: datetime) -> bool:
        aws_weekday = (t.weekday() + 1) % 7 + 1  # Python: MON=0..SUN=6; EventBridge: SUN=1..SAT=7
        return t.day in self.days_of_month and aws_weekday in self.days_of_week

    def next_after(self, previous: float, now: float) -> float | None:
        """The first matching minute strictly after max(previous, now), or None if there is none (a past year)."""
        start = max(previous, now)
        t = datetime.fromtimestamp(start, timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(200_000):  # jumps by month/day/hour make this a few hundred steps at most
            if t.year > max(self.years):
                return None
            if t.year not in self.years:
                t = t.replace(year=t.year + 1, month=1, day=1, hour=0, minute=0)
            elif t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t += timedelta(minutes=1)
            else:
                return t.timestamp()
        return None


def _cron_field(text: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    if text in ("*", "?"):
        return frozenset(range(low, high + 1))
    values: set[int] = set()
    for part in text.upper().split(","):
        if any(c in part for c in "LW#"):
            raise ScheduleError(f"cron field {text!r}: L, W and # are not supported by the local runner")
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ScheduleError(f"cron field {text!r}: step must be >= 1")
        if body in ("*", "?"):
            first, last = low, high
        elif "-" in body:
            a, b = body.split("-", 1)
            first, last = _cron_value(a, names), _cron_value(b, names)
        else:
            first = _cron_value(body, names)
            last = high if step_text else first
        if not (low <= first <= high and low <= last <= high) or first > last:
            raise ScheduleError(f"cron field {text!r}: values must lie in {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _cron_value(text: str, names: dict[str, int]) -> int:
    if text in names:
        return names[text]
    if not text.isdigit():
        choices = f" or one of {', '.join(names)}" if names else ""
        raise ScheduleError(f"cron value {text!r} is not a number{choices}")
    return int(text)


def parse_schedule(expression: str) -> Rate | Cron | At:
    text = expression.strip()
    m = _RATE.match(text)
    if m:
        value, unit = int(m.group(1)), m.group(2)
        if value < 1:
            raise ScheduleError(f"{expression}: the rate must be positive")
        if (value == 1) != (not unit.endswith("s")):  # EventBridge: "1 minute", "5 minutes"
            raise ScheduleError(f"{expression}: EventBridge wants the singular unit for 1 and the plural otherwise")
        return Rate(value * _UNIT_SECONDS[unit.rstrip("s")])
    m = _CRON.match(text)
    if m:
        return Cron(m.group(1))
    m = _AT.match(text)
    if m:
        return At(calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")))
    raise ScheduleError(f"unsupported schedule expression {expression!r} (rate(...), cron(...) or at(...))")


# ---------------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class ScheduledTarget:
    """One schedule event of a function or a state machine."""

    target: FunctionSpec | StateMachineSpec
    event: ScheduleEvent
    index: int  # position among the target's schedules (fire(..., event_index))

    @property
    def logical_id(self) -> str:
        return self.target.logical_id

    @property
    def label(self) -> str:
        return f"{self.target.logical_id}.{self.event.event_name}"

    @property
    def job(self) -> str | None:
        """The `job` of the declared Input, if it is a JSON object with one."""
        try:
            data = json.loads(self.event.input) if self.event.input else None
        except ValueError:
            return None
        return str(data["job"]) if isinstance(data, dict) and "job" in data else None

    def resource_arn(self) -> str:
        name = self.event.name or f"{self.target.name}-{self.event.event_name}"
        if self.event.kind == "ScheduleV2":
            return f"arn:aws:scheduler:{REGION}:{ACCOUNT_ID}:schedule/default/{name}"
        return f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{name}"


def scheduled_event(target: ScheduledTarget, now: float | None = None) -> Any:
    """What the target receives: the declared Input, else EventBridge's scheduled event."""
    if target.event.input is not None:
        try:
            return json.loads(target.event.input)
        except ValueError:
            return target.event.input  # EventBridge passes non-JSON text as is
    now = time.time() if now is None else now
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler" if target.event.kind == "ScheduleV2" else "aws.events",
        "account": ACCOUNT_ID,
        "time": datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [target.resource_arn()],
        "detail": {},
    }


def scheduled_targets(functions: Sequence[FunctionSpec], machines: Sequence[StateMachineSpec] = ()
                      ) -> list[ScheduledTarget]:
    out: list[ScheduledTarget] = []
    for target in (*functions, *machines):
        out.extend(ScheduledTarget(target, event, i) for i, event in enumerate(target.schedules))
    return out


# ---------------------------------------------------------------------------------------------- the service


class ScheduleRunner:
    """Fires the template's schedules (BackgroundService). One daemon thread per enabled, parseable schedule."""

    name = "schedules"

    def __init__(
        self,
        targets: Sequence[ScheduledTarget],
        invoker: FunctionInvoker,
        *,
        moto_url: str = "",
        state_machine_arns: dict[str, str] | None = None,
        scale: float = 1.0,
        clock: Any = time.time,
    ) -> None:
        if scale < 0:
            raise ValueError(f"{SCALE_ENV} must be >= 0 (0: fire by hand only), got {scale}")
        self.targets = list(targets)
        self.invoker = invoker
        self.moto_url = moto_url
        self.state_machine_arns = dict(state_machine_arns or {})
        self.scale = scale
        self._clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._next: dict[str, float | None] = {}  # label -> real epoch seconds of the next fire
        self.parsed: dict[str, Rate | Cron | At | None] = {}
        self.fired: dict[str, int] = {t.label: 0 for t in self.targets}
        for t in self.targets:
            try:
                self.parsed[t.label] = parse_schedule(t.event.expression)
            except ScheduleError as exc:
                log.warning("%s: %s; it can only be fired by hand", t.label, exc)
                self.parsed[t.label] = None
            if t.event.timezone and t.event.timezone.upper() != "UTC":
                log.info("%s: ScheduleExpressionTimezone %s is ignored locally (UTC)", t.label, t.event.timezone)
        self._sfn: Any = None
        self._started_at = 0.0

    @classmethod
    def from_runtime(cls, runtime: LocalRuntime, **kwargs: Any) -> ScheduleRunner | None:
        assert runtime.model is not None and runtime.invoker is not None
        targets = scheduled_targets(runtime.model.functions, runtime.model.state_machines)
        if not targets:
            return None
        if "scale" not in kwargs:
            kwargs["scale"] = float(runtime.environ.get(SCALE_ENV) or 1.0)
        arns = runtime.resources.state_machine_arns if runtime.resources else {}
        runner = cls(targets, runtime.invoker, moto_url=runtime.moto_url, state_machine_arns=arns, **kwargs)
        if runtime.gateway is not None:
            runtime.gateway.register_dev_route("/_sim/schedules", runner.dev_route)
        return runner

    def describe(self) -> list[str]:
        speed = ("fired by hand only (SATFLOW_SCHEDULE_SCALE=0)" if self.scale == 0
                 else f"scale {self.scale:g}" + ("" if self.scale == 1 else f" ({1 / self.scale:g}x faster)"))
        lines = [f"{speed}; POST /_sim/schedules/fire {{\"function\": ..., \"job\": ...}}"]
        for t in self.targets:
            state = "" if t.event.enabled else " [disabled]"
            if self.parsed.get(t.label) is None:
                state += " [unsupported: by hand only]"
            lines.append(f"{t.logical_id} {t.event.expression} {t.event.input or ''}{state}".rstrip())
        return lines

    # -- lifecycle

    def start(self) -> None:
        self._started_at = self._clock()
        if self.scale == 0:
            return
        for target in self.targets:
            if not target.event.enabled or self.parsed.get(target.label) is None:
                continue
            thread = threading.Thread(target=self._run, args=(target,), name=f"schedule:{target.label}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    def _virtual(self, real: float) -> float:
        """The accelerated clock: equal to real time at start, running 1/scale times as fast."""
        return self._started_at + (real - self._started_at) / self.scale

    def _real(self, virtual: float) -> float:
        return self._started_at + (virtual - self._started_at) * self.scale

    def _run(self, target: ScheduledTarget) -> None:
        expression = self.parsed[target.label]
        assert expression is not None
        previous = self._virtual(self._clock())  # rate: the first fire is one period after the start
        while not self._stop.is_set():
            nxt = expression.next_after(previous, self._virtual(self._clock()))
            if nxt is None:
                self._next[target.label] = None
                return
            self._next[target.label] = self._real(nxt)
            if self._stop.wait(max(0.0, self._real(nxt) - self._clock())):
                return
            previous = nxt
            try:
                self.fire_target(target)
            except Exception:
                log.exception("scheduled %s failed", target.label)

    # -- firing

    def find(self, logical_id: str, *, event_index: int | None = None, event_name: str | None = None,
             job: str | None = None) -> ScheduledTarget:
        mine = [t for t in self.targets if t.logical_id == logical_id]
        if not mine:
            known = sorted({t.logical_id for t in self.targets})
            raise KeyError(f"{logical_id!r} has no schedules (scheduled: {', '.join(known)})")
        if job is not None:
            matched = [t for t in mine if t.job == job]
            if not matched:
                jobs = sorted(j for j in (t.job for t in mine) if j)
                raise KeyError(f"{logical_id} has no schedule with job {job!r} (jobs: {', '.join(jobs)})")
            return matched[0]
        if event_name is not None:
            matched = [t for t in mine if t.event.event_name == event_name]
            if not matched:
                raise KeyError(f"{logical_id} has no schedule event {event_name!r}")
            return matched[0]
        index = event_index or 0
        if not 0 <= index < len(mine):
            raise KeyError(f"{logical_id} has {len(mine)} schedule(s); no index {index}")
        return mine[index]

    def fire(self, function_logical_id: str, event_index: int = 0, *, job: str | None = None,
             event_name: str | None = None) -> Any:
        """Fire one schedule now, synchronously; returns the handler's result (its exception propagates). For a
        state machine, starts an execution and returns its ARN."""
        target = self.find(function_logical_id, event_index=event_index, event_name=event_name, job=job)
        return self.fire_target(target, by_hand=True)

    def fire_target(self, target: ScheduledTarget, *, by_hand: bool = False) -> Any:
        event = scheduled_event(target, self._clock())
        self.fired[target.label] = self.fired.get(target.label, 0) + 1
        log.info("%s fires %s%s", "by hand:" if by_hand else f"schedule {target.event.expression}", target.label,
                 f" {target.event.input}" if target.event.input else "")
        if isinstance(target.target, StateMachineSpec):
            return self._start_execution(target, event)
        return self.invoker.invoke(target.target, event)

    def _start_execution(self, target: ScheduledTarget, event: Any) -> str:
        from .resources import aws_client

        if self._sfn is None:
            self._sfn = aws_client("stepfunctions", self.moto_url)
        arn = self.state_machine_arns.get(target.logical_id, target.target.arn)
        response = self._sfn.start_execution(stateMachineArn=arn, name=f"schedule-{uuid.uuid4().hex}",
                                             input=json.dumps(event))
        return str(response["executionArn"])

    # -- the dev route

    def dev_route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        sub = path[len("/_sim/schedules"):].strip("/")
        if sub == "" and method == "GET":
            now = self._clock()
            return 200, {"scale": self.scale, "schedules": [
                {"target": t.logical_id, "event": t.event.event_name, "kind": t.event.kind,
                 "expression": t.event.expression, "input": t.event.input, "job": t.job,
                 "enabled": t.event.enabled, "fired": self.fired.get(t.label, 0),
                 "next_in_s": None if self._next.get(t.label) is None else round(self._next[t.label] - now, 3)}
                for t in self.targets]}
        if sub != "fire":
            return 404, dev_error("NOT_FOUND", "GET /_sim/schedules or POST /_sim/schedules/fire")
        if method != "POST":
            return 405, dev_error("METHOD_NOT_ALLOWED", "POST /_sim/schedules/fire")
        if not isinstance(body, dict) or not isinstance(body.get("function"), str):
            return 400, dev_error("VALIDATION_ERROR", 'body must be {"function": "<logical id>", "job"?, "event"?, '
                                                   '"index"?}')
        index = body.get("index", 0)
        if isinstance(index, bool) or not isinstance(index, int):
            return 400, dev_error("VALIDATION_ERROR", "index must be an integer")
        try:
            target = self.find(body["function"], event_index=index, event_name=body.get("event"),
                               job=None if body.get("job") is None else str(body["job"]))
        except KeyError as exc:
            return 404, dev_error("NOT_FOUND", str(exc.args[0]))
        try:
            result = self.fire_target(target, by_hand=True)
        except Exception as exc:
            log.exception("%s failed when fired by hand", target.label)
            return 500, dev_error("HANDLER_ERROR", error_summary(exc))
        return 200, {"function": target.logical_id, "event": target.event.event_name, "result": jsonable(result)}


