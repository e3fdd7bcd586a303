"""`make run` starts the default services the template asks for, and the banner lists them."""
from __future__ import annotations

import pytest

from satflow_dev.runtime.__main__ import _banner
from satflow_dev.runtime.local_runtime import LocalRuntime
from satflow_dev.runtime.services import DEFAULT_SERVICE_FACTORIES
from satflow_dev.runtime.sqs_poller import SqsPoller

from .conftest import write_services_project


def test_default_services_follow_the_template(tmp_path):
    template = write_services_project(tmp_path)
    with LocalRuntime(template, port=0, parameter_overrides={"Suffix": "defaults"}, write_admin_key_file=False,
                      environ={"SATFLOW_SCHEDULE_SCALE": "0.5"}) as runtime:
        assert runtime.service_factories == DEFAULT_SERVICE_FACTORIES
        assert [s.name for s in runtime.services] == ["lightning", "sqs-poller", "schedules"]
        assert runtime.service(SqsPoller).background is True
        assert runtime.service("schedules").scale == 0.5
        banner = _banner(runtime)
        assert f"lightning:  LND REST simulator on {runtime.service('lightning').url}" in banner
        assert "WorkerFunction <- SQS work-defaults (with a dead-letter queue): batch 10, ReportBatchItemFailures" \
            in banner
        assert "scale 0.5 (2x faster)" in banner and 'MonitorFunction rate(1 minute) {"job":"invoice_catchup"}' \
            in banner
        with pytest.raises(KeyError, match="started: lightning, sqs-poller, schedules"):
            runtime.service("chain")
    assert runtime.services == []


def test_no_lnd_secret_no_lightning_simulator(tiny_template):
    with LocalRuntime(tiny_template, port=0, parameter_overrides={"Suffix": "nolnd"}, write_admin_key_file=False,
                      environ={"SATFLOW_SCHEDULE_SCALE": "0"}) as runtime:
        assert [s.name for s in runtime.services] == ["sqs-poller", "schedules"]
