"""Schedules: expressions, the events handlers receive, firing by hand (method and dev route), accelerated firing."""
from __future__ import annotations

import calendar
import json
import time
import urllib.error
import urllib.request

import pytest

from satflow_dev.runtime.schedules import At, Cron, Rate, ScheduleError, ScheduleRunner, parse_schedule


def _utc(text: str) -> float:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M"))


def _fmt(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M %a", time.gmtime(epoch))


# ---------------------------------------------------------------------------------------------- expressions


def test_rates():
    assert parse_schedule("rate(1 minute)") == Rate(60)
    assert parse_schedule("rate(5 minutes)") == Rate(300)
    assert parse_schedule("rate(2 hours)") == Rate(7200)
    assert parse_schedule("rate(1 day)") == Rate(86400)
    for bad in ("rate(1 minutes)", "rate(5 minute)", "rate(0 minutes)", "rate(10 seconds)", "every minute"):
        with pytest.raises(ScheduleError):
            parse_schedule(bad)
    # A late runner does not fire the missed periods one by one: the next fire is the next future multiple.
    assert Rate(60).next_after(1000, 1001) == 1060
    assert Rate(60).next_after(1000, 1185) == 1240


@pytest.mark.parametrize(("expression", "now", "expected"), [
    ("cron(0/15 * * * ? *)", "2026-11-21 13:07", "2026-11-21 13:15 Sat"),
    ("cron(0 12 ? * MON-FRI *)", "2026-11-21 13:07", "2026-11-23 12:00 Mon"),  # Saturday -> Monday
    ("cron(30 9 1 * ? *)", "2026-11-21 13:07", "2026-12-01 09:30 Tue"),
    ("cron(0 0 1 JAN ? *)", "2026-11-21 13:07", "2027-01-01 00:00 Fri"),
    ("cron(5,35 */6 ? * SUN *)", "2026-11-21 13:07", "2026-11-22 00:05 Sun"),
    ("cron(0 8 ? * 2 2030)", "2026-11-21 13:07", "2030-01-07 08:00 Mon"),  # 2 = MON
    ("cron(10-12 3 ? * * *)", "2026-11-21 03:11", "2026-11-21 03:12 Sat"),
])
def test_cron_next_fire(expression, now, expected):
    cron = parse_schedule(expression)
    assert isinstance(cron, Cron)
    assert _fmt(cron.next_after(_utc(now), _utc(now))) == expected


def test_cron_limits():
    for bad in ("cron(0 12 L * ? *)", "cron(0 12 ? * 6#3 *)", "cron(0 12 15W * ? *)", "cron(* * * *)",
                "cron(60 * * * ? *)", "cron(0 12 ? * FUNDAY *)"):
        with pytest.raises(ScheduleError):
            parse_schedule(bad)
    assert parse_schedule("cron(0 0 1 1 ? 2020)").next_after(_utc("2026-01-01 00:00"), _utc("2026-01-01 00:00")) is None


def test_one_time_schedules():
    at = parse_schedule("at(2030-01-01T00:00:00)")
    assert at == At(_utc("2030-01-01 00:00"))
    assert at.next_after(0, _utc("2029-12-31 23:59")) == _utc("2030-01-01 00:00")
    assert at.next_after(0, _utc("2030-01-01 00:01")) is None


# ---------------------------------------------------------------------------------------------- firing


@pytest.fixture(scope="module")
def runner(services_runtime) -> ScheduleRunner:
    return services_runtime.service("schedules")


def test_scale_zero_means_by_hand_only(runner):
    assert runner.scale == 0 and runner._threads == []
    assert len(runner.targets) == 5


def test_fire_passes_the_declared_input_as_the_event(runner):
    assert runner.fire("MonitorFunction") == {"job": "invoice_catchup"}
    assert runner.fire("MonitorFunction", 1) == {"job": "payment_reconciler"}
    assert runner.fire("MonitorFunction", job="invoice_catchup") == {"job": "invoice_catchup"}


def test_without_input_the_event_is_eventbridges_scheduled_event(runner, services_runtime):
    suffix = services_runtime.parameter_overrides["Suffix"]
    rule = runner.fire("MonitorFunction", event_name="Plain")
    assert rule["detail-type"] == "Scheduled Event" and rule["source"] == "aws.events"
    assert (rule["version"], rule["account"], rule["region"], rule["detail"]) == ("0", "123456789012", "us-east-1", {})
    assert rule["resources"] == [
        f"arn:aws:events:us-east-1:123456789012:rule/satflow-local-MonitorFunction-Plain"]
    assert abs(calendar.timegm(time.strptime(rule["time"], "%Y-%m-%dT%H:%M:%SZ")) - time.time()) < 5
    named = runner.fire("MonitorFunction", 3)
    assert named["source"] == "aws.scheduler"
    assert named["resources"] == [f"arn:aws:scheduler:us-east-1:123456789012:schedule/default/nightly-{suffix}"]
    assert named["id"] != runner.fire("MonitorFunction", 3)["id"]


def test_fire_errors(runner):
    from satflow_dev.runtime.workers import FunctionError

    # A disabled schedule can still be fired by hand; the handler's exception comes back from its worker process
    # as Lambda reports it (errorType = the exception's class name).
    with pytest.raises(FunctionError, match="ValueError: job exploded") as raised:
        runner.fire("MonitorFunction", job="explode")
    assert raised.value.error_type == "ValueError"
    with pytest.raises(KeyError, match="jobs: explode, invoice_catchup, payment_reconciler"):
        runner.fire("MonitorFunction", job="nope")
    with pytest.raises(KeyError, match="has no schedules"):
        runner.fire("WorkerFunction")
    with pytest.raises(KeyError, match="no index 9"):
        runner.fire("MonitorFunction", 9)


def _post(runtime, path: str, body) -> tuple[int, dict]:
    request = urllib.request.Request(runtime.url + path, method="POST", data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_dev_route_fires_by_job(services_runtime):
    status, body = _post(services_runtime, "/_sim/schedules/fire", {"function": "MonitorFunction",
                                                                    "job": "payment_reconciler"})
    assert (status, body) == (200, {"function": "MonitorFunction", "event": "Reconcile",
                                    "result": {"job": "payment_reconciler"}})
    status, body = _post(services_runtime, "/_sim/schedules/fire", {"function": "MonitorFunction", "event": "Plain"})
    assert status == 200 and body["result"]["detail-type"] == "Scheduled Event"
    status, body = _post(services_runtime, "/_sim/schedules/fire", {"function": "MonitorFunction", "job": "explode"})
    assert (status, body["error"]["code"]) == (500, "HANDLER_ERROR") and "job exploded" in body["error"]["message"]
    status, body = _post(services_runtime, "/_sim/schedules/fire", {"function": "Nope", "job": "x"})
    assert (status, body["error"]["code"]) == (404, "NOT_FOUND")
    status, body = _post(services_runtime, "/_sim/schedules/fire", {"job": "x"})
    assert (status, body["error"]["code"]) == (400, "VALIDATION_ERROR")
    with urllib.request.urlopen(services_runtime.url + "/_sim/schedules", timeout=5) as response:
        listing = json.loads(response.read())
    assert listing["scale"] == 0
    assert [(s["event"], s["job"]) for s in listing["schedules"]][:2] == [
        ("Catchup", "invoice_catchup"), ("Reconcile", "payment_reconciler")]


def test_a_scaled_clock_fires_rate_schedules_in_the_background(services_runtime, runner):
    catchup = runner.find("MonitorFunction", job="invoice_catchup")
    fast = ScheduleRunner([catchup], services_runtime.invoker, scale=0.004)  # rate(1 minute) -> every 0.24 s
    fast.start()
    try:
        deadline = time.monotonic() + 5
        while fast.fired[catchup.label] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        fast.stop()
    assert fast.fired[catchup.label] >= 2
