"""functions/monitor: the sanctions_refresh job through the real handler (schedule input and operator options)."""
from __future__ import annotations

import json

import pytest

from satflow import bootstrap
from satflow.adapters.dynamodb.sanctions import DynamoSanctionsStore

from tests.conftest import TABLE
from tests.handlers.conftest import ROOT, LambdaContext, load_handler_module

from .conftest import REGTEST_P2PKH

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@pytest.fixture
def monitor(ssvc, ddb):
    ddb.delete_item(TableName=TABLE, Key={"pk": {"S": "SANCTIONS"}, "sk": {"S": "HEAD"}})
    ssvc.sanctions = DynamoSanctionsStore(ddb, TABLE)
    bootstrap.override(ssvc)
    yield load_handler_module("monitor", "satflow_fn_monitor")
    bootstrap.override(None)


def emitted_metrics(out: str) -> set[str]:
    names = set()
    for line in out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            blob = json.loads(line)
            names |= {m["Name"] for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    return names


def test_the_scheduled_event_refreshes_then_finds_nothing_new(monitor, ssvc, capsys):
    event = json.loads((ROOT / "events" / "monitor" / "sanctions_refresh.json").read_text())
    result = monitor.lambda_handler(event, LambdaContext())
    assert result["job"] == "sanctions_refresh" and result["status"] == "stored" and result["version"] == 1
    assert {"MonitorJobRuns", "SanctionsListDestinations"} <= emitted_metrics(capsys.readouterr().out)
    assert monitor.lambda_handler(event, LambdaContext())["status"] == "unchanged"


def test_a_refused_list_raises_its_metric_and_only_an_explicit_option_accepts_it(monitor, ssvc, tmp_path, capsys):
    monitor.lambda_handler({"job": "sanctions_refresh"}, LambdaContext())
    tiny = tmp_path / "sdn.xml"
    tiny.write_text('<sdnList><sdnEntry><uid>1</uid><idList><id><idType>Digital Currency Address - XBT</idType>'
                    f"<idNumber>{REGTEST_P2PKH}</idNumber></id></idList></sdnEntry></sdnList>")
    ssvc.sanctions_sources = (("sdn", tiny.as_uri()),)
    capsys.readouterr()
    refused = monitor.lambda_handler({"job": "sanctions_refresh"}, LambdaContext())
    assert refused["status"] == "refused" and "SanctionsRefreshRefused" in emitted_metrics(capsys.readouterr().out)
    # only a JSON true counts as the operator's acceptance
    for option in ("true", 1, "yes"):
        assert monitor.lambda_handler({"job": "sanctions_refresh", "accept_shrink": option},
                                      LambdaContext())["status"] == "refused"
    accepted = monitor.lambda_handler({"job": "sanctions_refresh", "accept_shrink": True}, LambdaContext())
    assert accepted["status"] == "stored" and accepted["addresses"] == 1


def test_a_failed_fetch_is_reported_with_its_metric(monitor, ssvc, tmp_path, capsys):
    ssvc.sanctions_sources = (("sdn", (tmp_path / "missing.xml").as_uri()),)
    result = monitor.lambda_handler({"job": "sanctions_refresh"}, LambdaContext())
    assert result["status"] == "failed" and "SanctionsRefreshFailed" in emitted_metrics(capsys.readouterr().out)


def test_options_are_not_passed_to_other_jobs(monitor):
    with pytest.raises(ValueError, match="unknown monitor job"):
        monitor.lambda_handler({"job": "sanctions"}, LambdaContext())
    assert monitor.JOB_OPTIONS == {"sanctions_refresh": ("accept_shrink",)}
