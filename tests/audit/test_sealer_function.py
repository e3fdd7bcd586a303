"""AuditSealerFunction: the stream batch (the template's filter applied) sealed in order, a redelivered batch sealing
nothing twice, a chain that fails transiently reported as a batch item failure, the jobs; and the function running
in the local runtime from template.yaml (stream poller + schedules)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from satflow import bootstrap
from satflow.adapters.dynamodb.audit import queue_pk
from satflow.app import audit
from satflow.app.accounts import ADMIN, create_account
from satflow.domain import errors
from satflow.domain.templates import admin_adjustment, internal_transfer

from tests.conftest import SHARDS, build_services
from tests.runtime_http import fresh_stack_name

ROOT = Path(__file__).resolve().parents[2]
NOW = "2026-11-21T12:00:00.000Z"


class Context:
    function_name, memory_limit_in_mb, aws_request_id = "AuditSealerFunction", 256, "req-1"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:AuditSealerFunction"


@pytest.fixture
def handler():
    spec = importlib.util.spec_from_file_location("audit_sealer_app", ROOT / "functions/audit_sealer/app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def svc(ddb, monkeypatch):
    svc = build_services(ddb)
    bootstrap.override(svc)
    yield svc
    bootstrap.override(None)


def stream_event(ddb, *, sequence_start: int = 100) -> dict:
    """Lambda's stream batch for every pending entry in the table, in written order (as the stream delivers)."""
    items = []
    for pk in {queue_pk(s) for s in range(4)}:
        items += ddb.query(TableName="satflow-test", KeyConditionExpression="pk = :p",
                           ExpressionAttributeValues={":p": {"S": pk}})["Items"]
    items.sort(key=lambda i: i["written_at"]["S"])
    return {"Records": [{"eventID": str(n), "eventName": "INSERT", "eventSource": "aws:dynamodb",
                         "dynamodb": {"Keys": {"pk": i["pk"], "sk": i["sk"]}, "NewImage": i,
                                      "SequenceNumber": str(sequence_start + n)}}
                        for n, i in enumerate(items)]}


def activity(svc) -> None:
    a, _ = create_account(svc, ADMIN, "tg:a", 1)
    b, _ = create_account(svc, ADMIN, "tg:b", 1)
    svc.ledger.execute(admin_adjustment(transfer_id="fund", account_id=a.account_id, amount_msat=10_000,
                                        direction="credit", reason="x", created_at=NOW, shards=SHARDS))
    for i in range(4):
        svc.ledger.execute(internal_transfer(transfer_id=f"t{i}", sender=a.account_id, recipient=b.account_id,
                                             amount_msat=10 + i, created_at=NOW, shards=SHARDS))


def chains(svc) -> list[tuple[int, int, str]]:
    return [(r.shard, r.seq, r.entry_id) for s in range(svc.audit.shards) for r in svc.audit.records(s)]


def test_a_stream_batch_is_sealed_in_order_and_a_redelivery_seals_nothing_twice(handler, svc, ddb):
    activity(svc)
    event = stream_event(ddb)
    assert len(event["Records"]) == 7
    assert handler.lambda_handler(event, Context()) == {"batchItemFailures": []}
    sealed = chains(svc)
    assert len(sealed) == 7 and all(svc.audit.pending(s) == [] for s in range(svc.audit.shards))
    written = [r["dynamodb"]["NewImage"]["entry_id"]["S"] for r in event["Records"]]
    for shard in range(svc.audit.shards):  # each chain holds its entries in stream (commit) order
        mine = [e for s, _, e in sealed if s == shard]
        assert mine == [e for e in written if e in mine]
    assert handler.lambda_handler(event, Context()) == {"batchItemFailures": []}
    assert chains(svc) == sealed and all(r.ok for r in svc.audit.verify_all().values())


def test_a_chain_failing_transiently_is_retried_from_its_first_record(handler, svc, ddb, monkeypatch):
    activity(svc)
    event = stream_event(ddb)
    real_seal, failing = svc.audit.seal, {}

    def seal(shard, entries, **kw):
        if not failing:
            failing["shard"] = shard
        if shard == failing["shard"]:
            raise errors.TransientError("throttled")
        return real_seal(shard, entries, **kw)

    monkeypatch.setattr(svc.audit, "seal", seal)
    result = handler.lambda_handler(event, Context())
    firsts = [r for r in event["Records"] if int(r["dynamodb"]["NewImage"]["shard"]["N"]) == failing["shard"]]
    assert result == {"batchItemFailures": [{"itemIdentifier": firsts[0]["dynamodb"]["SequenceNumber"]}]}
    assert svc.audit.pending(failing["shard"]) and not any(svc.audit.pending(s) for s in range(4) if s != failing["shard"])
    monkeypatch.setattr(svc.audit, "seal", real_seal)
    retry = {"Records": event["Records"][event["Records"].index(firsts[0]):]}  # Lambda restarts from there
    assert handler.lambda_handler(retry, Context()) == {"batchItemFailures": []}
    assert all(svc.audit.pending(s) == [] for s in range(4)) and len(chains(svc)) == 7


def test_the_sweep_and_verify_jobs(handler, svc):
    activity(svc)
    swept = handler.lambda_handler({"job": "sweep"}, Context())
    assert swept["job"] == "sweep" and swept["sealed"] == 0  # within the grace period the stream path owns them
    now = svc.audit.clock()
    svc.audit.clock = lambda: now + audit.SWEEP_GRACE_S + 1
    swept = handler.lambda_handler({"job": "sweep"}, Context())
    # lag: what the sweeper had to seal had waited past the grace (the stream path missed it)
    assert swept["sealed"] == 7 and swept["lag_s"] > audit.SWEEP_GRACE_S
    verified = handler.lambda_handler({"job": "verify"}, Context())
    assert verified["ok"] and verified["complete"] and verified["records"] == 7
    with pytest.raises(ValueError):
        handler.lambda_handler({"job": "nope"}, Context())


def test_the_sample_event_is_sealed_and_passes_the_template_filter(handler, svc, functions_in_template):
    from satflow_dev.runtime.stream_poller import passes_filters

    event = json.loads((ROOT / "events/audit_sealer/pending_inserts.json").read_text())
    props = functions_in_template["AuditSealerFunction"]["Properties"]["Events"]["PendingEntries"]["Properties"]
    patterns = [json.loads(f["Pattern"]) for f in props["FilterCriteria"]["Filters"]]
    assert all(passes_filters(patterns, r) for r in event["Records"])
    other = {**event["Records"][0], "eventName": "REMOVE"}
    assert not passes_filters(patterns, other)
    assert props["ParallelizationFactor"] == 1 and props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    store = type(svc.audit)(svc.audit._client, svc.ledger.inner._m, shards=16)
    svc.audit = store
    assert handler.lambda_handler(event, Context()) == {"batchItemFailures": []}
    sealed = [r for s in range(16) for r in store.records(s)]
    assert sorted(r.entry_id for r in sealed) == ["aud_sample0000000000000000000", "trf_sample"]


@pytest.fixture
def functions_in_template():
    from satflow_dev.runtime.template import load_template_document

    return {k: v for k, v in load_template_document(ROOT / "template.yaml")["Resources"].items()
            if v.get("Type") == "AWS::Serverless::Function"}


# ------------------------------------------------------------------ in the local runtime, from template.yaml
@pytest.fixture(scope="module")
def runtime():
    from satflow_dev.runtime.local_runtime import LocalRuntime
    from satflow_dev.runtime.services import schedule_runner_factory
    from satflow_dev.runtime.stream_poller import StreamPoller

    factories = [lambda rt: StreamPoller.from_runtime(rt, background=False), schedule_runner_factory]
    with LocalRuntime(ROOT / "template.yaml", port=0, service_factories=factories, write_admin_key_file=False,
                      stack_name=fresh_stack_name(), environ={"SATFLOW_SCHEDULE_SCALE": "0"}) as rt:
        yield rt


def _call(runtime, method: str, path: str, key: str, body: dict | None = None, headers: dict | None = None):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(runtime.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
    request.add_header("Authorization", f"Bearer {key}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_local_runtime_feeds_the_sealer_from_the_stream(runtime):
    import uuid

    from satflow_dev.runtime.stream_poller import StreamPoller

    admin = runtime.admin_key
    status, acc = _call(runtime, "POST", "/v1/accounts", admin, {"external_ref": f"au:{uuid.uuid4().hex[:8]}",
                                                                 "tier": 1})
    assert status == 201, acc
    status, adj = _call(runtime, "POST", "/v1/admin/adjustments", admin,
                        {"account_id": acc["account_id"], "amount_msat": 5_000, "direction": "credit",
                         "reason": "audit e2e"}, {"Idempotency-Key": uuid.uuid4().hex})
    assert status == 201, adj
    batches = runtime.service(StreamPoller).drain("AuditSealerFunction")
    assert batches and all(b.error is None and b.failed_from is None for b in batches)
    items, cursor = [], None
    while True:
        status, page = _call(runtime, "GET", "/v1/admin/audit?limit=100" + (f"&cursor={cursor}" if cursor else ""),
                             admin)
        assert status == 200, page
        items += page["items"]
        if not (cursor := page["next_cursor"]):
            break
    mine = [r["action"] for r in items if acc["account_id"] in r["subject_ids"]]
    assert sorted(mine) == ["account.created", "ledger.adjustment_credit.posted"]
    status, report = _call(runtime, "GET", "/v1/admin/audit/verify", admin)
    assert status == 200 and report["ok"] and report["complete"], report
    assert runtime.service(StreamPoller).drain("AuditSealerFunction") == []  # nothing sealed twice


def test_the_audit_alarms_watch_metrics_the_sealer_emits_with_their_dimensions(handler, svc, capsys,
                                                                               functions_in_template):
    """An alarm on another name or dimension set would never fire: run the jobs and read their EMF lines."""
    from satflow_dev.runtime.template import load_template_document

    activity(svc)
    handler.lambda_handler({"job": "sweep"}, Context())
    handler.lambda_handler({"job": "verify"}, Context())
    emitted = set()
    for line in capsys.readouterr().out.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        for directive in (doc.get("_aws") or {}).get("CloudWatchMetrics", []):
            for dims in directive["Dimensions"]:
                for metric in directive["Metrics"]:
                    emitted.add((directive["Namespace"], metric["Name"], frozenset((d, doc[d]) for d in dims)))
    alarms = {k: v["Properties"] for k, v in load_template_document(ROOT / "template.yaml")["Resources"].items()
              if v.get("Type") == "AWS::CloudWatch::Alarm" and v["Properties"].get("MetricName", "").startswith("Audit")}
    assert {"AuditSealLagAlarm", "AuditIntegrityAlarm"} <= set(alarms)
    for name in ("AuditSealLagAlarm", "AuditIntegrityAlarm"):  # published on every run (heartbeats)
        a = alarms[name]
        key = (a["Namespace"], a["MetricName"], frozenset((d["Name"], d["Value"]) for d in a["Dimensions"]))
        assert key in emitted, (name, sorted(emitted, key=str))
