"""infra/checkov_gate.py: `make lint` fails on a checkov finding nobody accepted and on an acceptance that no longer
matches anything; every acceptance in the committed list carries a reason."""
from __future__ import annotations

import importlib.util

import pytest

from .conftest import ROOT


@pytest.fixture(scope="module")
def gate_module():
    spec = importlib.util.spec_from_file_location("checkov_gate", ROOT / "infra" / "checkov_gate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(*failed: tuple[str, str]) -> dict:
    return {"results": {"failed_checks": [
        {"check_id": check, "resource": f"AWS::Serverless::Function.{lid}", "check_name": "name"}
        for check, lid in failed]}}


def test_accepted_findings_pass_and_others_fail(gate_module):
    accepted = [{"check": "CKV_AWS_117", "resources": ["*"], "reason": "r"},
                {"check": "CKV_AWS_115", "resources": ["ApiFunction"], "reason": "r"}]
    unaccepted, stale, taken = gate_module.gate(
        _report(("CKV_AWS_117", "ApiFunction"), ("CKV_AWS_117", "NewFunction"), ("CKV_AWS_115", "ApiFunction"),
                ("CKV_AWS_115", "NewFunction")), accepted)
    assert [line.split(":")[0] for line in unaccepted] == ["CKV_AWS_115 NewFunction"]
    assert stale == [] and len(taken) == 3


def test_an_acceptance_that_matches_nothing_is_stale(gate_module):
    accepted = [{"check": "CKV_AWS_115", "resources": ["ApiFunction", "GoneFunction"], "reason": "r"},
                {"check": "CKV_AWS_27", "resources": ["*"], "reason": "r"}]
    unaccepted, stale, _ = gate_module.gate(_report(("CKV_AWS_115", "ApiFunction")), accepted)
    assert unaccepted == []
    assert sorted(stale) == ["CKV_AWS_115 GoneFunction", "CKV_AWS_27 ['*']"]


def test_the_committed_list_has_a_reason_for_every_entry(gate_module):
    entries = gate_module.load_accepted(ROOT / "infra" / "checkov-accepted.yaml")
    assert entries
    for entry in entries:
        assert len(entry["reason"].split()) >= 15, f"{entry['check']}: say why, not just that"


def test_an_entry_without_a_reason_is_refused(gate_module, tmp_path):
    path = tmp_path / "accepted.yaml"
    path.write_text("- check: CKV_AWS_117\n  resources: ['*']\n  reason: ''\n")
    with pytest.raises(SystemExit):
        gate_module.load_accepted(path)
