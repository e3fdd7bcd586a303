"""screen_address / screen_node: a hit raises SANCTIONED_DESTINATION after an audit record and an alert metric."""
from __future__ import annotations

import pytest

from satflow.adapters.dynamodb.sanctions import DynamoSanctionsStore
from satflow.api.errors import status_for
from satflow.app.sanctions import BLOCKED_ACTION, BLOCKED_MESSAGE, screen_address, screen_node
from satflow.domain import errors

from tests.conftest import TABLE

from .conftest import (
    ACCOUNT,
    MAINNET_BASE58,
    MAINNET_BECH32,
    MAINNET_P2WSH_UPPER,
    NODE_PUBKEY,
    NODE_PUBKEY_2,
    REGTEST_P2PKH,
    REGTEST_P2TR,
    REGTEST_P2WPKH,
    UNLISTED_NODE,
    UNLISTED_REGTEST,
    audit_records,
)


def test_a_listed_address_is_blocked_with_an_audit_record_and_a_metric(ssvc, metrics):
    with pytest.raises(errors.SanctionedDestination) as info:
        screen_address(ssvc, REGTEST_P2WPKH, actor=ACCOUNT, context="payout:po_1")
    assert info.value.code == "SANCTIONED_DESTINATION" and status_for(info.value) == 403
    assert info.value.message == BLOCKED_MESSAGE == "destination is on a sanctions list"
    (record,) = audit_records(ssvc)
    head = ssvc.sanctions.head()
    assert (record.actor, record.action, record.subject_ids) == (ACCOUNT, BLOCKED_ACTION, (ACCOUNT,))
    assert record.details == {"kind": "address", "destination": REGTEST_P2WPKH, "entry": "sdn:90003",
                              "list_version": head.version, "list_sha256": head.list_sha256,
                              "context": "payout:po_1"}
    assert metrics.calls == [("SanctionsHits", 1, {"kind": "address"})]
    assert ssvc.audit.verify_all()[ssvc.audit.shard_for(_entry_for(record))].ok


def _entry_for(record):
    from satflow.domain.audit import AuditEntry

    return AuditEntry(at=record.at, actor=record.actor, action=record.action, subject_ids=record.subject_ids)


def test_a_listed_node_pubkey_is_blocked(ssvc, metrics):
    with pytest.raises(errors.SanctionedDestination):
        screen_node(ssvc, NODE_PUBKEY, actor=ACCOUNT, context="payment:pay_1")
    (record,) = audit_records(ssvc)
    assert record.details["kind"] == "node" and record.details["destination"] == NODE_PUBKEY
    assert metrics.names() == ["SanctionsHits"] and metrics.calls[0][2] == {"kind": "node"}


@pytest.mark.parametrize("address, recorded", [
    (REGTEST_P2WPKH.upper(), REGTEST_P2WPKH), (f" {REGTEST_P2WPKH} ", REGTEST_P2WPKH),
    (MAINNET_BECH32.upper(), MAINNET_BECH32), (MAINNET_P2WSH_UPPER.lower(), MAINNET_P2WSH_UPPER.lower()),
    (MAINNET_BASE58, MAINNET_BASE58), (REGTEST_P2PKH, REGTEST_P2PKH), (REGTEST_P2TR.upper(), REGTEST_P2TR),
])
def test_bech32_matches_in_any_case_and_base58_exactly(ssvc, address, recorded):
    with pytest.raises(errors.SanctionedDestination):
        screen_address(ssvc, address, actor=ACCOUNT, context="payout")
    assert audit_records(ssvc)[0].details["destination"] == recorded


def test_node_pubkeys_match_in_any_case(ssvc):
    with pytest.raises(errors.SanctionedDestination):
        screen_node(ssvc, NODE_PUBKEY_2.upper(), actor=ACCOUNT, context="payment")
    assert audit_records(ssvc)[0].details["destination"] == NODE_PUBKEY_2


@pytest.mark.parametrize("address", [UNLISTED_REGTEST, MAINNET_BASE58.lower(), "not an address", ""])
def test_an_unlisted_address_passes_without_side_effects(ssvc, metrics, address):
    assert screen_address(ssvc, address, actor=ACCOUNT, context="payout") is None
    assert audit_records(ssvc) == [] and metrics.calls == []


def test_an_unlisted_node_and_an_address_as_node_pass(ssvc, metrics):
    screen_node(ssvc, UNLISTED_NODE, actor=ACCOUNT, context="payment")
    screen_node(ssvc, REGTEST_P2WPKH, actor=ACCOUNT, context="payment")  # kinds do not mix
    screen_address(ssvc, NODE_PUBKEY, actor=ACCOUNT, context="payout")
    assert audit_records(ssvc) == [] and metrics.calls == []


def test_no_list_ever_loaded_fails_closed_by_default(ssvc, ddb, metrics):
    ddb.delete_item(TableName=TABLE, Key={"pk": {"S": "SANCTIONS"}, "sk": {"S": "HEAD"}})
    ssvc.sanctions = DynamoSanctionsStore(ddb, TABLE)
    with pytest.raises(errors.SanctionsListUnavailable) as info:
        screen_address(ssvc, UNLISTED_REGTEST, actor=ACCOUNT, context="payout")
    assert status_for(info.value) == 503 and info.value.code == "SANCTIONS_LIST_UNAVAILABLE"
    ssvc.sanctions = None  # not configured at all: the same
    with pytest.raises(errors.SanctionsListUnavailable):
        screen_node(ssvc, UNLISTED_NODE, actor=ACCOUNT, context="payment")
    ssvc.sanctions_when_unloaded = "allow"
    screen_address(ssvc, REGTEST_P2WPKH, actor=ACCOUNT, context="payout")  # nothing to screen against
    assert audit_records(ssvc) == [] and metrics.calls == []


def test_a_block_stands_when_the_audit_append_fails(ssvc, metrics, caplog):
    ssvc.audit = None  # record_admin_action raises: the store is missing
    with pytest.raises(errors.SanctionedDestination):
        screen_address(ssvc, REGTEST_P2WPKH, actor=ACCOUNT, context="payout")
    assert metrics.names() == ["SanctionsHits", "SanctionsAuditFailures"]
    (failure,) = [r for r in caplog.records if r.getMessage() == "sanctions block could not be audited"]
    assert (failure.destination, failure.entry, failure.actor) == (REGTEST_P2WPKH, "sdn:90003", ACCOUNT)


def test_a_broken_metric_emitter_does_not_change_the_outcome(ssvc):
    def broken(*_a, **_k):
        raise RuntimeError("cloudwatch down")

    ssvc.emit_metric = broken
    with pytest.raises(errors.SanctionedDestination):
        screen_address(ssvc, REGTEST_P2WPKH, actor=ACCOUNT, context="payout")
    assert len(audit_records(ssvc)) == 1


def test_every_attempt_is_recorded(ssvc, metrics):
    for i in range(3):
        with pytest.raises(errors.SanctionedDestination):
            screen_address(ssvc, REGTEST_P2WPKH, actor=ACCOUNT, context=f"payout:po_{i}")
    assert [r.details["context"] for r in audit_records(ssvc)] == ["payout:po_0", "payout:po_1", "payout:po_2"]
    assert [r.seq for r in audit_records(ssvc)] == [1, 2, 3] and len(metrics.calls) == 3


def test_the_emf_metric_adapter_prints_one_metric(capsys):
    import json

    from satflow.adapters.metrics import emit_metric

    emit_metric("SanctionsHits", 1, kind="node")
    blob = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert blob["SanctionsHits"] == [1.0] or blob["SanctionsHits"] == 1.0
    assert blob["kind"] == "node"
    directive = blob["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "satflow" and directive["Metrics"][0]["Name"] == "SanctionsHits"
