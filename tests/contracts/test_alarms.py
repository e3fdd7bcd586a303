"""template.yaml's alarms <-> the metrics the code really emits, and the alarm pattern every alarm follows.

An alarm whose metric name or dimensions differ from what the code emits never fires: CloudWatch treats every
dimension combination as its own metric. So the emitted set is not written down here; it is produced by running
the emitters with the environment the template gives the functions and parsing the Embedded Metric Format lines
they print:
* the monitor's handler (Powertools ``Metrics`` flushed by ``log_metrics``), each scheduled job with use cases that
  report 1 for every count and each sanctions refresh status;
* ``emit_metric`` (adapters/metrics.py) for every ``emit_metric(...)``/``_metric(svc, ...)`` call in the layer and
  the functions, with the values its non-constant dimensions can take (DIMENSION_VALUES);
* any other handler's ``metrics.add_metric(name=...)``, with its constant ``add_dimension`` calls.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import pkgutil
import re
import sys
import types
import typing
from pathlib import Path

import pytest

from .conftest import ROOT, function_env, resources_of

ALARM = "AWS::CloudWatch::Alarm"
ACTIONS = [{"Fn::If": ["CreateAlarmTopic", {"Ref": "AlarmTopic"}, {"Ref": "AlarmTopicArn"}]}]
MONITOR_APP = ROOT / "functions" / "monitor" / "app.py"


def _kind_values() -> tuple[str, ...]:
    from satflow.domain.sanctions import Kind

    return typing.get_args(Kind)


def _solvency_sources() -> tuple[str, ...]:
    from satflow.domain.solvency import SOURCES

    return tuple(SOURCES)


# Non-constant dimension values of emit_metric calls: keyword -> every value it can take.
DIMENSION_VALUES = {"kind": _kind_values, "Source": _solvency_sources}
# Emitted metrics that deliberately have no alarm of their own, and why.
NOT_ALARMED = {
    "SanctionsListDestinations": "a gauge of the loaded list's size, on the dashboard; a list that stops refreshing "
                                 "is the sanctions_refresh heartbeat and SanctionsRefresh* alarms",
    "MonitorJobRuns": "alarmed when MISSING, per job (the heartbeat alarms)",
    "SolvencyUnexplainedDriftMsat": "a gauge per source on the dashboard; SolvencyBreakerTripped is the alarm on it "
                                    "(the breaker compares it with SolvencyDriftThresholdsSat)",
    "SolvencyForeignMsat": "a gauge per source on the dashboard; SolvencyBreakerTripped and SuspenseBooked alarm",
}


# ------------------------------------------------------------------------------------------------ emitted metrics


def _emf(lines: str) -> set[tuple[str, str, frozenset]]:
    """(namespace, metric, {(dimension, value)}) of every EMF document among stdout lines."""
    found = set()
    for line in lines.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        for directive in (doc.get("_aws") or {}).get("CloudWatchMetrics", []):
            for dim_set in directive["Dimensions"]:
                dims = frozenset((d, str(doc[d])) for d in dim_set)
                for metric in directive["Metrics"]:
                    found.add((directive["Namespace"], metric["Name"], dims))
    return found


class _Counts(dict):
    """A use case's result in which every count is 1 (so every metric guarded by a count is emitted); an attribute
    is another such result, and iterating one yields nothing (a report's list of sources, say)."""

    def __missing__(self, key):
        return 1

    def get(self, key, default=None):
        return self[key]

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Counts(status=dict.get(self, "status"))

    def __iter__(self):
        return iter(())


class _UseCases(types.ModuleType):
    """Stands in for a satflow.app module: every function returns _Counts with the given status."""

    def __init__(self, name: str, status: str) -> None:
        super().__init__(name)
        self._status = status

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return lambda *args, **kwargs: _Counts(status=self._status)


class _Context:
    function_name = "MonitorFunction"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:MonitorFunction"
    aws_request_id = "contract"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000


def _metrics_env(template, monkeypatch) -> None:
    env = function_env(template, template["Resources"]["MonitorFunction"])
    for name in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"):
        monkeypatch.setenv(name, str(env[name]))
    for name in ("POWERTOOLS_METRICS_DISABLED", "POWERTOOLS_DEV"):
        monkeypatch.delenv(name, raising=False)


def _monitor_emits(template, monkeypatch, capsys) -> set:
    import satflow.app

    spec = importlib.util.spec_from_file_location("contract_monitor_app", MONITOR_APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "bootstrap", types.SimpleNamespace(services=lambda: None))
    app_modules = [m.name for m in pkgutil.iter_modules(satflow.app.__path__)]
    found = set()
    for status in ("stored", "unchanged", "refused", "failed"):
        for name in app_modules:  # lazy `from satflow.app import x` inside a job finds the stand-in too
            stub = _UseCases(f"satflow.app.{name}", status)
            monkeypatch.setattr(satflow.app, name, stub, raising=False)
            if isinstance(getattr(module, name, None), types.ModuleType):
                monkeypatch.setattr(module, name, stub)
        for job in module.JOBS:
            capsys.readouterr()
            module.lambda_handler({"job": job}, _Context())
            found |= _emf(capsys.readouterr().out)
    return found


def _calls(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            yield name, node


def _const(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _source_files():
    yield from sorted((ROOT / "layers" / "satflow" / "satflow").rglob("*.py"))
    yield from sorted((ROOT / "functions").rglob("*.py"))


def _emit_metric_calls() -> list[tuple[str, dict[str, tuple[str, ...]], str]]:
    """(metric, {dimension: possible values}, where) of every emit_metric / _metric(svc, ...) call with a literal
    metric name (the helpers that forward a variable name are not call sites)."""
    out = []
    for path in _source_files():
        for name, call in _calls(path):
            if name not in ("emit_metric", "_metric"):
                continue
            args = [_const(a) for a in call.args]
            metric = next((a for a in args if a), None)
            if metric is None:
                continue
            dims = {}
            for kw in call.keywords:
                if kw.arg is None:
                    continue
                value = _const(kw.value)
                if value is not None:
                    dims[kw.arg] = (value,)
                elif kw.arg in DIMENSION_VALUES:
                    dims[kw.arg] = tuple(DIMENSION_VALUES[kw.arg]())
                else:
                    pytest.fail(f"{path.relative_to(ROOT)}:{call.lineno}: {metric} dimension {kw.arg} is not a "
                                "literal; declare its values in DIMENSION_VALUES")
            out.append((metric, dims, f"{path.relative_to(ROOT)}:{call.lineno}"))
    return out


def _emit_metric_emits(template, monkeypatch, capsys) -> set:
    from satflow.adapters.metrics import emit_metric

    found = set()
    for metric, dims, _ in _emit_metric_calls():
        combos = [{}]
        for key, values in dims.items():
            combos = [{**c, key: v} for c in combos for v in values]
        for combo in combos:
            capsys.readouterr()
            emit_metric(metric, 1, **combo)
            found |= _emf(capsys.readouterr().out)
    return found


def _other_handler_emits(template) -> set:
    """add_metric(name="...") in handlers other than the monitor: the service dimension plus the module's literal
    add_dimension calls (a non-literal one fails: run that handler here like the monitor's)."""
    env = function_env(template, template["Resources"]["MonitorFunction"])
    namespace, service = str(env["POWERTOOLS_METRICS_NAMESPACE"]), str(env["POWERTOOLS_SERVICE_NAME"])
    found = set()
    for path in sorted((ROOT / "functions").rglob("*.py")):
        if path == MONITOR_APP:
            continue
        calls = list(_calls(path))
        dims = {("service", service)}
        for name, call in calls:
            if name == "add_dimension":
                kw = {k.arg: _const(k.value) for k in call.keywords}
                if kw.get("name") is None or kw.get("value") is None:
                    pytest.fail(f"{path.relative_to(ROOT)}:{call.lineno}: non-literal add_dimension; "
                                "run this handler in test_alarms like the monitor's")
                dims.add((kw["name"], kw["value"]))
        loops = _loop_literals(ast.parse(path.read_text(), filename=str(path)))
        for name, call in calls:
            if name == "add_metric":
                arg = next((k.value for k in call.keywords if k.arg == "name"), None)
                metrics = [_const(arg)] if _const(arg) else loops.get(getattr(arg, "id", None), [])
                if not metrics:
                    pytest.fail(f"{path.relative_to(ROOT)}:{call.lineno}: add_metric whose name is neither a literal "
                                "nor a loop over literals; run this handler in test_alarms like the monitor's")
                found |= {(namespace, metric, frozenset(dims)) for metric in metrics}
    return found


def _loop_literals(tree) -> dict[str, list[str]]:
    """`for a, b in (("x", "Metric"), ...)`: each loop variable -> the literals it takes (b -> ["Metric", ...])."""
    out: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.For) and isinstance(node.iter, (ast.Tuple, ast.List))):
            continue
        targets = node.target.elts if isinstance(node.target, ast.Tuple) else [node.target]
        for index, target in enumerate(targets):
            if not isinstance(target, ast.Name):
                continue
            for item in node.iter.elts:
                value = item.elts[index] if isinstance(item, ast.Tuple) and len(targets) > 1 else item
                if _const(value):
                    out.setdefault(target.id, []).append(_const(value))
    return out


@pytest.fixture(scope="module")
def emitted(template):
    """Module-scoped, so pytest's capsys is not available: stdout is redirected into a buffer instead."""
    import contextlib
    import io

    mp = pytest.MonkeyPatch()

    class _Cap:
        def __init__(self):
            self.buf = io.StringIO()

        def readouterr(self):
            out = self.buf.getvalue()
            self.buf.seek(0)
            self.buf.truncate()
            return types.SimpleNamespace(out=out)

    cap = _Cap()
    try:
        _metrics_env(template, mp)
        with contextlib.redirect_stdout(cap.buf):
            found = _monitor_emits(template, mp, cap) | _emit_metric_emits(template, mp, cap)
    finally:
        mp.undo()
        sys.modules.pop("contract_monitor_app", None)
    return found | _other_handler_emits(template)


def test_the_emitters_were_really_run(emitted):
    names = {m for _, m, _ in emitted}
    # one from each source: the monitor handler, a job's count, emit_metric with a dimension
    assert {"MonitorJobRuns", "PaymentsInFlightPastCltv", "SanctionsHits"} <= names, sorted(names)
    assert ("satflow", "MonitorJobRuns", frozenset({("job", "chain_scan"), ("service", "satflow")})) in emitted


# ------------------------------------------------------------------------------------------------ the alarms


@pytest.fixture(scope="module")
def alarms(template):
    return resources_of(template, ALARM)


def _alarm_metrics(props: dict) -> list[tuple[str, str, frozenset]]:
    """(namespace, metric, dimensions) of an alarm: its single metric, or each MetricStat of a math alarm."""
    if "MetricName" in props:
        stats = [{"Namespace": props["Namespace"], "MetricName": props["MetricName"],
                  "Dimensions": props.get("Dimensions", [])}]
    else:
        stats = [m["MetricStat"]["Metric"] for m in props["Metrics"] if "MetricStat" in m]
    return [(s["Namespace"], s["MetricName"],
             frozenset((d["Name"], d["Value"] if isinstance(d["Value"], str) else json.dumps(d["Value"]))
                       for d in s.get("Dimensions", [])))
            for s in stats]


def test_every_alarm_follows_the_pattern(alarms):
    assert len(alarms) >= 40
    for lid, alarm in alarms.items():
        props = alarm["Properties"]
        assert lid.endswith("Alarm"), lid
        assert props["AlarmName"] == {"Fn::Sub": f"${{AWS::StackName}}-{lid.removesuffix('Alarm')}"}, lid
        assert "Runbook: " in props["AlarmDescription"], f"{lid}: say what the on-call operator does"
        assert props["AlarmActions"] == ACTIONS, f"{lid}: notify the alarm topic (or AlarmTopicArn)"
        assert props["OKActions"] == ACTIONS, lid
        assert props["TreatMissingData"] in ("breaching", "notBreaching"), lid
        periods = [props["Period"]] if "Period" in props else [
            m["MetricStat"]["Period"] for m in props["Metrics"] if "MetricStat" in m]
        for period in periods:  # what PutMetricAlarm accepts, checked here rather than at deploy
            assert period in (10, 20, 30) or period % 60 == 0, f"{lid}: Period {period}"
            limit = 86400 if period < 3600 else 604800
            assert period * props["EvaluationPeriods"] <= limit, f"{lid}: Period x EvaluationPeriods > {limit} s"


def test_alarms_on_satflow_metrics_use_metrics_the_code_emits(alarms, emitted):
    for lid, alarm in alarms.items():
        for namespace, metric, dims in _alarm_metrics(alarm["Properties"]):
            if namespace.startswith("AWS/"):
                continue
            assert (namespace, metric, dims) in emitted, (
                f"{lid}: {namespace}/{metric} {sorted(dims)} is never emitted; the code emits "
                f"{sorted((m, sorted(d)) for n, m, d in emitted if m == metric)}")


def test_every_emitted_metric_has_an_alarm(alarms, emitted):
    alarmed = {(n, m, d) for a in alarms.values() for n, m, d in _alarm_metrics(a["Properties"])}
    for namespace, metric, dims in sorted(emitted, key=str):
        if metric in NOT_ALARMED:
            continue
        assert (namespace, metric, dims) in alarmed, (
            f"{metric} {sorted(dims)} is emitted but no alarm watches it: add one, or say in NOT_ALARMED why not")


def _scheduled_jobs(template) -> set[str]:
    jobs = set()
    for event in template["Resources"]["MonitorFunction"]["Properties"]["Events"].values():
        if event["Type"] in ("Schedule", "ScheduleV2"):
            jobs.add(json.loads(event["Properties"]["Input"])["job"])
    return jobs


def test_every_scheduled_job_has_a_heartbeat(template, alarms):
    jobs = _scheduled_jobs(template)
    assert "chain_scan" in jobs
    beats = {}
    for lid, alarm in alarms.items():
        props = alarm["Properties"]
        if props.get("MetricName") == "MonitorJobRuns":
            dims = {d["Name"]: d["Value"] for d in props["Dimensions"]}
            assert props["TreatMissingData"] == "breaching", f"{lid}: silence is the failure"
            assert props["ComparisonOperator"] == "LessThanThreshold" and props["Threshold"] == 1, lid
            beats[dims["job"]] = lid
    assert set(beats) == jobs, f"heartbeats {sorted(beats)} != scheduled jobs {sorted(jobs)}"


def _queue_alarm_targets(alarms) -> set[str]:
    targets = set()
    for alarm in alarms.values():
        for namespace, _, dims in _alarm_metrics(alarm["Properties"]):
            if namespace == "AWS/SQS":
                for _, value in dims:
                    m = re.search(r'"Fn::GetAtt": \["(\w+)", "QueueName"\]', value)
                    if m:
                        targets.add(m.group(1))
    return targets


def test_every_dead_letter_and_failure_queue_has_an_alarm(template, alarms):
    text = json.dumps(template["Resources"])
    dead = set(re.findall(r'"deadLetterTargetArn": \{"Fn::GetAtt": \["(\w+)", "Arn"\]\}', text))
    dead |= set(re.findall(r'"OnFailure": \{[^}]*"Destination": \{"Fn::GetAtt": \["(\w+)", "Arn"\]\}', text))
    assert {"InvoiceEventsDLQ", "WebhookDeliveryDLQ", "MonitorFailuresQueue", "StreamFailuresQueue"} <= dead
    missing = dead - _queue_alarm_targets(alarms)
    assert not missing, f"dead-letter/failure queues without an alarm: {sorted(missing)}"


def _aws_alarmed(alarms, namespace: str, metric: str) -> set[str]:
    """Logical ids referenced by the dimensions of alarms on an AWS metric."""
    out = set()
    for alarm in alarms.values():
        for ns, m, dims in _alarm_metrics(alarm["Properties"]):
            if (ns, m) == (namespace, metric):
                for _, value in dims:
                    out |= set(re.findall(r'"Ref": "(\w+)"', value))
    return out


def test_every_function_workflow_stream_and_the_api_have_alarms(template, alarms):
    functions = set(resources_of(template, "AWS::Serverless::Function"))
    machines = set(resources_of(template, "AWS::Serverless::StateMachine"))
    for metric in ("Errors", "Throttles"):
        missing = functions - _aws_alarmed(alarms, "AWS/Lambda", metric)
        assert not missing, f"add <Function>{metric}Alarm (AWS/Lambda {metric}, FunctionName) for {sorted(missing)}"
    for metric in ("ExecutionsFailed", "ExecutionsTimedOut"):
        missing = machines - _aws_alarmed(alarms, "AWS/States", metric)
        assert not missing, f"add an AWS/States {metric} alarm (StateMachineArn) for {sorted(missing)}"
    stream_consumers = {lid for lid, fn in resources_of(template, "AWS::Serverless::Function").items()
                        if any(e["Type"] in ("DynamoDB", "Kinesis") for e in fn["Properties"].get("Events", {}).values())}
    missing = stream_consumers - _aws_alarmed(alarms, "AWS/Lambda", "IteratorAge")
    assert stream_consumers and not missing, f"add an IteratorAge alarm (like WebhookRelayIteratorAgeAlarm) for {sorted(missing)}"
    assert "HttpApi" in _aws_alarmed(alarms, "AWS/ApiGateway", "5xx")


def test_alarm_topic_is_created_unless_given(template):
    topic = template["Resources"]["AlarmTopic"]
    assert topic["Type"] == "AWS::SNS::Topic" and topic["Condition"] == "CreateAlarmTopic"
    assert template["Conditions"]["CreateAlarmTopic"] == {"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}
    assert template["Resources"]["AlarmEmailSubscription"]["Condition"] == "SubscribeAlarmEmail"


def test_dashboard_is_json_and_shows_every_alarm(template, alarms):
    dashboard = template["Resources"]["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    body = json.loads(re.sub(r"\$\{[^}]+\}", "x", dashboard))
    assert body["widgets"]
    listed = set(re.findall(r"\$\{(\w+)\.Arn\}", dashboard))
    assert listed == set(alarms), f"dashboard alarm widget misses {sorted(set(alarms) - listed)}"
    referenced = set(re.findall(r"\$\{(\w+)(?:\.\w+)?\}", dashboard)) - {"AWS"}
    assert referenced <= set(template["Resources"]) | {"AWS::Region"}, referenced - set(template["Resources"])
