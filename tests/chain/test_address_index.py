"""The watched-address index: a compact matcher in memory, pages persisted with each allocation, a warm cache keyed
by the counters, and candidates confirmed by one BatchGetItem (false positives are filtered there)."""
from __future__ import annotations

import hashlib
import os

import pytest

from satflow.adapters.dynamodb.chain import forget_index_cache
from satflow.app.addresses import new_deposit_address
from satflow.domain import address_index as ai
from satflow.domain.address_index import (
    AddressIndex,
    IndexPage,
    ScriptMatcher,
    page_key,
    prefix_int,
    script_prefix,
    sorted_prefix_array,
)
from satflow.domain.addresses import DepositAddressDeriver
from satflow.domain.bitcoin import Network, script_pubkey_to_address

from .conftest import TEST_ACCOUNT_TPUB, assert_invariants, balance, principal, scan


def _script(i: int) -> str:
    return "0014" + hashlib.sha256(f"script {i}".encode()).digest()[:20].hex()


# --- pure --------------------------------------------------------------------------------------------------------
def test_the_prefix_is_the_first_8_bytes_of_sha256_of_the_script():
    script = _script(1)
    assert script_prefix(script) == hashlib.sha256(bytes.fromhex(script)).digest()[:8]
    assert script_prefix(bytes.fromhex(script)) == script_prefix(script)
    assert prefix_int(b"\x00" * 7 + b"\x01") == 1


def test_the_matcher_finds_every_member_and_nothing_else():
    members = [_script(i) for i in range(2_000)]
    matcher = ScriptMatcher.from_prefixes(script_prefix(s) for s in members)
    assert len(matcher) == 2_000
    assert all(matcher.might_own(s) for s in members)
    others = [_script(i) for i in range(2_000, 12_000)]
    assert not any(matcher.might_own(s) for s in others)
    assert matcher.candidates(members[:3] + others[:3] + members[:1]) == set(members[:3])
    assert matcher.nbytes < 2_000 * 8 + 300_000  # 8 bytes per address plus the fixed bucket directory


def test_sorted_prefix_array_orders_by_integer_value():
    prefixes = [os.urandom(8) for _ in range(500)] + [b"\x00" * 8, b"\xff" * 8]
    values = list(sorted_prefix_array(prefixes))
    assert values == sorted(prefix_int(p) for p in prefixes)


def test_full_pages_are_sealed_and_partial_pages_reread(monkeypatch):
    monkeypatch.setattr(ai, "PAGE_SIZE", 3)
    prefixes = [script_prefix(_script(i)) for i in range(8)]
    index = AddressIndex()
    assert index.stale_pages({0: 4}) == [page_key(0, 0), page_key(0, 1)]
    index.update(("v1",), [IndexPage.of(page_key(0, 0), prefixes[:3], 3),
                           IndexPage.of(page_key(0, 1), prefixes[3:4], 1)], index.stale_pages({0: 4}))
    assert len(index) == 4 and index.matcher.contains_prefix(prefix_int(prefixes[3]))
    assert len(index.matcher.sealed) == 3  # page 0 is full: sorted array; page 1: the tail set
    assert index.stale_pages({0: 7}) == [page_key(0, 1), page_key(0, 2)]  # the sealed page is never read again
    index.update(("v2",), [IndexPage.of(page_key(0, 1), prefixes[3:6], 3),
                           IndexPage.of(page_key(0, 2), prefixes[6:7], 1)], index.stale_pages({0: 7}))
    assert len(index.matcher.sealed) == 6 and len(index) == 7
    assert list(index.matcher.sealed) == sorted(prefix_int(p) for p in prefixes[:6])  # merged, still sorted
    assert all(index.matcher.contains_prefix(prefix_int(p)) for p in prefixes[:7])
    assert not index.matcher.contains_prefix(prefix_int(prefixes[7]))


# --- the store: persisted pages and the warm cache ---------------------------------------------------------------
@pytest.fixture
def round_trips(ddb):
    calls = []
    ddb.meta.events.register("before-send.dynamodb",
                             lambda request, **kw: calls.append(request.headers.get("X-Amz-Target", b"").decode()))
    return calls


def test_the_index_holds_every_issued_address_and_stays_warm(svc, alice, round_trips, monkeypatch):
    monkeypatch.setattr(ai, "PAGE_SIZE", 2)
    addresses = [new_deposit_address(svc, principal(alice)) for _ in range(5)]
    deriver = DepositAddressDeriver(TEST_ACCOUNT_TPUB, Network.REGTEST)
    scripts = [deriver.script_pubkey(a.index, 0) for a in addresses]

    round_trips.clear()
    index = svc.chain.address_index()  # cold: the counters, then every page (one BatchGetItem)
    assert all(index.matcher.might_own(s) for s in scripts) and len(index) == 5
    assert round_trips == ["DynamoDB_20120810.BatchGetItem"] * 2
    assert len(index.matcher.sealed) == 4  # pages 0 and 1 are full

    round_trips.clear()
    assert svc.chain.address_index() is index  # warm and unchanged: the counters only
    assert round_trips == ["DynamoDB_20120810.BatchGetItem"]

    new = new_deposit_address(svc, principal(alice))
    round_trips.clear()
    refreshed = svc.chain.address_index()
    assert refreshed.matcher.might_own(deriver.script_pubkey(new.index, 0)) and len(refreshed) == 6
    assert round_trips == ["DynamoDB_20120810.BatchGetItem"] * 2  # counters + the one partial page

    forget_index_cache()  # a cold container rebuilds the same index
    assert len(svc.chain.address_index()) == 6
    assert_invariants(svc)


def test_an_index_false_positive_is_filtered_by_the_owner_lookup(svc, chain_sim, alice, ddb):
    mine = new_deposit_address(svc, principal(alice))
    # A prefix in the index whose script has no owner record: what a 64-bit prefix collision would look like.
    stranger = "0014" + "ab" * 20
    ddb.update_item(TableName=svc.chain._table, Key={"pk": {"S": "ADDRPAGE"}, "sk": {"S": page_key(0, 0)}},
                    UpdateExpression="ADD prefixes :p",
                    ExpressionAttributeValues={":p": {"BS": [script_prefix(stranger)]}})
    forget_index_cache()
    chain_sim.send_to_address(script_pubkey_to_address(stranger, Network.REGTEST), 40_000)
    chain_sim.send_to_address(mine.address, 30_000)
    chain_sim.mine(1)
    result = scan(svc)
    assert result["index_false_positives"] == 1 and result["deposits_seen"] == 1
    assert balance(svc, alice) == (30_000_000, 0, 0)
    (deposit,) = svc.chain.list_deposits(alice, 10)[0]
    assert deposit.address == mine.address
    assert_invariants(svc)
