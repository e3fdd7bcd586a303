"""The local runtime loads its sanctions list (devtools/satflow_dev/fixtures/sdn_local.xml) before it serves, and
that list names what the simulators can produce: the sanctioned node's invoices and a regtest address."""
from __future__ import annotations

import pytest

from .conftest import REAL_TEMPLATE
from tests.runtime_http import fresh_stack_name

from .test_e2e_api import _call

LOCAL_LISTED_ADDRESS = "bcrt1qfgqfxyftnzcj3kr6jkqwqew6v67x22xju763m9"  # the README's blocked payout example


@pytest.fixture(scope="module")
def runtime():
    from satflow_dev.runtime.local_runtime import LocalRuntime
    from satflow_dev.runtime.services import lightning_service_factory

    with LocalRuntime(REAL_TEMPLATE, port=0, service_factories=[lightning_service_factory],
                      stack_name=fresh_stack_name(), write_admin_key_file=False) as rt:
        yield rt


def test_the_runtime_points_the_list_at_the_local_fixture_and_loads_it(runtime):
    from satflow_dev.runtime.local_runtime import LOCAL_SANCTIONS_LIST

    assert runtime.model.parameters["SanctionsListUrl"] == LOCAL_SANCTIONS_LIST.as_uri()
    status, body = _call(runtime, "GET", "/v1/admin/sanctions", key=runtime.admin_key)
    assert status == 200 and body["loaded"] is True and body["version"] >= 1
    assert (body["addresses"], body["node_pubkeys"]) == (2, 1)
    assert body["sources"][0]["entries"] == 3


def test_the_local_list_names_the_simulated_sanctioned_node_and_the_documented_address():
    from satflow.domain.sanctions import parse_sdn_xml
    from satflow_dev.runtime.local_runtime import LOCAL_SANCTIONS_LIST
    from satflow_dev.simulators.lightning import LightningSimulator

    listed = parse_sdn_xml(LOCAL_SANCTIONS_LIST.read_bytes())
    sim = LightningSimulator()
    assert listed.lookup("node", sim.sanctioned_node.pubkey_hex) is not None
    assert listed.lookup("node", sim.external_node.pubkey_hex) is None  # ordinary payments still work locally
    assert listed.lookup("node", sim.our_node.pubkey_hex) is None
    assert listed.lookup("address", LOCAL_LISTED_ADDRESS) is not None


def test_the_simulator_issues_invoices_from_the_sanctioned_node(runtime):
    from satflow.domain.payments import decode_payment_request

    sim = runtime.service("lightning").simulator
    status, body = _call(runtime, "POST", "/_sim/lightning/invoices", body={"amount_msat": 1000, "payee": "sanctioned"})
    assert status == 201
    decoded = decode_payment_request(body["payment_request"], "regtest", sim._clock())
    assert decoded.destination == sim.sanctioned_node.pubkey_hex
    assert _call(runtime, "POST", "/_sim/lightning/invoices", body={"amount_msat": 1, "payee": "x"})[0] == 400
