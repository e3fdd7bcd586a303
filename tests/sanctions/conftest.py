"""Sanctions fixtures: the sample list, a store on in-process moto, services with audit + recorded metrics."""
from __future__ import annotations

import pytest

from tests.conftest import SANCTIONS_FIXTURE, TABLE, build_services

SAMPLE_BYTES = SANCTIONS_FIXTURE.read_bytes()
SAMPLE_URL = SANCTIONS_FIXTURE.as_uri()

# In tests/fixtures/ofac/sdn_sample.xml (entry uids in brackets)
MAINNET_BASE58 = "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"  # [90001]
MAINNET_BECH32 = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"  # [90001]
MAINNET_P2WSH_UPPER = "BC1QRP33G0Q5C5TXSP9ARYSRX4K6ZDKFS4NCE4XJ0GDCCCEFVPYSXF3QCCFMV3"  # [90002], listed upper case
REGTEST_P2WPKH = "bcrt1qfgqfxyftnzcj3kr6jkqwqew6v67x22xju763m9"  # [90003]
REGTEST_P2PKH = "mtbuUgUKqNNoNk66dGRNxbBCtoLWbgsGF1"  # [90003]
REGTEST_P2TR = "bcrt1pc2h75l0z0hw09w6s8ecqqpj9q4hd3a8wq7za6n7vafmwmpl3jr6sa7eeuj"  # [90003]
TESTNET_P2WPKH = "tb1qenn3kxsvl27malayqy9y78akmqplccyvefzcaa"  # [90003]
NODE_PUBKEY = "0294bad5f63a4c7b62031addb0b687350aebf75698d67608e3ddd643293105774c"  # [90003]
NODE_PUBKEY_2 = "030626652bf90bb60e2e9f3887e3eea9afe37e14cec303a4461bca2df34b46014a"  # [90003], listed upper case
UNLISTED_REGTEST = "bcrt1q50rtrmj2f8vl9tem8qpfw36ylw5jg9j2dkku3w"
UNLISTED_NODE = "03efe24af16da45a3e3ce3503b7b7172d64b16b28922011f8df970dd5bf6cc6be7"
ACCOUNT = "acc_01jd0000000000000000000000"


class MetricRecorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, dict]] = []

    def __call__(self, name: str, value: int = 1, **dimensions: str) -> None:
        self.calls.append((name, value, dimensions))

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]


@pytest.fixture
def store(ddb):
    """An empty sanctions store (build_services is not involved: nothing is preloaded)."""
    from satflow.adapters.dynamodb.sanctions import DynamoSanctionsStore

    return DynamoSanctionsStore(ddb, TABLE)


@pytest.fixture
def metrics():
    return MetricRecorder()


@pytest.fixture
def ssvc(ddb, metrics):
    """Services whose sanctions store holds the sample list, with an audit store and recorded metrics."""
    from satflow.adapters.dynamodb.audit import DynamoAuditStore
    from satflow.adapters.dynamodb.models import build_models
    from satflow.adapters.sanctions_source import fetch_sanctions_list

    svc = build_services(ddb)
    svc.audit = DynamoAuditStore(ddb, build_models(TABLE, "us-east-1"), shards=2)
    svc.emit_metric = metrics
    svc.fetch_sanctions = fetch_sanctions_list
    svc.sanctions_sources = (("sdn", SAMPLE_URL), ("extra", ""))
    return svc


def audit_records(svc) -> list:
    from tests.audit.helpers import sealed_records

    return sealed_records(svc)
