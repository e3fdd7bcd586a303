"""Webhook rules (pure, no sockets): which transfers announce what, deterministic ids, target URL and address
rules, the retry schedule, signatures."""
from __future__ import annotations

import hashlib
import hmac
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satflow.domain import webhooks as w
from satflow.domain.errors import ValidationError, WebhookUrlRejected
from satflow.domain.ledger import post_pending, void_pending
from satflow.domain.templates import (
    admin_adjustment,
    deposit_credited,
    deposit_dropped,
    deposit_reversed,
    deposit_seen,
    internal_invoice_payment,
    internal_transfer,
    invoice_settled,
    payment_reserved,
    payout_reserved,
    routing_fee_overrun,
)

NOW = "2026-11-21T12:00:00.000Z"
A, B = "acc_" + "a" * 26, "acc_" + "b" * 26
HASH = "ab" * 32
OUTPOINT = "cd" * 32 + ":1"


def kinds(events):
    return [(e.type, e.account_id) for e in events]


# --- the mapping --------------------------------------------------------------------------------------------------
def test_internal_transfer_announces_settlement_to_both_sides():
    t = internal_transfer(transfer_id="trf_1", sender=A, recipient=B, amount_msat=5_000, created_at=NOW, shards=4,
                          memo="rent")
    out, into = w.events_for_transfer(t)
    assert kinds([out, into]) == [("transfer.settled", A), ("transfer.settled", B)]
    assert out.data == {"transfer_id": "trf_1", "amount_msat": 5_000, "direction": "out", "counterparty": B,
                        "memo": "rent"}
    assert into.data["direction"] == "in" and into.data["counterparty"] == A
    assert out.event_id != into.event_id and out.created_at == NOW


def test_lightning_transfers():
    settled = invoice_settled(payment_hash=HASH, account_id=B, amount_msat=7_000, created_at=NOW, shards=4)
    (e,) = w.events_for_transfer(settled)
    assert (e.type, e.account_id, e.data["payment_hash"], e.data["internal"]) == ("invoice.settled", B, HASH, False)

    internal = internal_invoice_payment(payment_id="pay_1", payer=A, payee=B, amount_msat=9_000, payment_hash=HASH,
                                        created_at=NOW, shards=4)
    assert kinds(w.events_for_transfer(internal)) == [("invoice.settled", B), ("payment.succeeded", A)]

    reserve = payment_reserved(payment_id="pay_2", account_id=A, amount_msat=10_000, fee_reserve_msat=100,
                               payment_hash=HASH, created_at=NOW, shards=4)
    assert w.events_for_transfer(reserve) == []
    (ok,) = w.events_for_transfer(post_pending(reserve, transfer_id="pay_2:post", created_at=NOW, amount=10_040))
    assert (ok.type, ok.account_id, ok.data["payment_id"], ok.data["amount_msat"], ok.data["released_msat"]) == (
        "payment.succeeded", A, "pay_2", 10_040, 60)
    (failed,) = w.events_for_transfer(void_pending(reserve, transfer_id="pay_2:void", created_at=NOW))
    assert (failed.type, failed.data["payment_id"], failed.data["released_msat"]) == ("payment.failed", "pay_2",
                                                                                     10_100)
    assert w.events_for_transfer(routing_fee_overrun(payment_id="pay_2", amount_msat=5, created_at=NOW,
                                                     shards=4)) == []


def test_on_chain_transfers():
    seen = deposit_seen(outpoint=OUTPOINT, account_id=B, amount_sat=5_000, created_at=NOW, shards=4)
    assert w.events_for_transfer(seen) == []
    (credited,) = w.events_for_transfer(deposit_credited(seen, created_at=NOW))
    assert (credited.type, credited.account_id, credited.data["outpoint"], credited.data["amount_msat"]) == (
        "deposit.credited", B, OUTPOINT, 5_000_000)
    assert w.events_for_transfer(deposit_dropped(seen, created_at=NOW)) == []
    assert w.events_for_transfer(deposit_reversed(outpoint=OUTPOINT, account_id=B, amount_sat=5_000,
                                                  created_at=NOW, shards=4)) == []

    reserve = payout_reserved(payout_id="pyt_1", account_id=A, amount_sat=3_000, fee_reserve_sat=500, created_at=NOW,
                              shards=4)
    assert w.events_for_transfer(reserve) == []
    (confirmed,) = w.events_for_transfer(post_pending(reserve, transfer_id="pyt_1:post", created_at=NOW,
                                                      amount=3_200_000))
    assert (confirmed.type, confirmed.account_id, confirmed.data["payout_id"], confirmed.data["released_msat"]) == (
        "payout.confirmed", A, "pyt_1", 300_000)
    assert w.events_for_transfer(void_pending(reserve, transfer_id="pyt_1:void", created_at=NOW)) == []


def test_operator_adjustments_announce_nothing():
    t = admin_adjustment(transfer_id="adj_1", account_id=A, amount_msat=1, direction="credit", reason="x",
                         created_at=NOW, shards=4)
    assert w.events_for_transfer(t) == []


def test_event_ids_are_deterministic_across_a_retried_transaction():
    """A retry builds the transfer again later (another created_at): the same ids, so clients deduplicate."""
    first = internal_transfer(transfer_id="trf_9", sender=A, recipient=B, amount_msat=1, created_at=NOW, shards=4)
    retry = internal_transfer(transfer_id="trf_9", sender=A, recipient=B, amount_msat=1,
                              created_at="2026-11-21T12:00:05.000Z", shards=4)
    assert [e.event_id for e in w.events_for_transfer(first)] == [e.event_id for e in w.events_for_transfer(retry)]
    other = internal_transfer(transfer_id="trf_10", sender=A, recipient=B, amount_msat=1, created_at=NOW, shards=4)
    assert not {e.event_id for e in w.events_for_transfer(first)} & {e.event_id for e in w.events_for_transfer(other)}


def test_transition_events():
    confirmed = w.deposit_confirmed_event(outpoint=OUTPOINT, generation=0, block_hash="11" * 32, height=101,
                                          account_id=B, amount_sat=5_000, required_confirmations=3, credited=False,
                                          created_at=NOW)
    again = w.deposit_confirmed_event(outpoint=OUTPOINT, generation=0, block_hash="11" * 32, height=101,
                                      account_id=B, amount_sat=5_000, required_confirmations=3, credited=False,
                                      created_at="2026-11-21T13:00:00.000Z")
    remined = w.deposit_confirmed_event(outpoint=OUTPOINT, generation=0, block_hash="22" * 32, height=102,
                                        account_id=B, amount_sat=5_000, required_confirmations=3, credited=False,
                                        created_at=NOW)
    assert confirmed.event_id == again.event_id != remined.event_id
    assert confirmed.data["txid"] == "cd" * 32 and confirmed.data["vout"] == 1

    broadcast = w.payout_broadcast_event(payout_id="pyt_1", account_id=A, txid="33" * 32, amount_sat=1, created_at=NOW)
    bumped = w.payout_broadcast_event(payout_id="pyt_1", account_id=A, txid="44" * 32, amount_sat=1, created_at=NOW,
                                      replaces_txid="33" * 32)
    assert broadcast.event_id != bumped.event_id and bumped.data["replaces_txid"] == "33" * 32

    review = w.review_required_event("rev_1", A, NOW, {"score": 71, "payment_id": "pay_3"})
    assert (review.type, review.account_id, review.data) == ("review.required", A,
                                                             {"review_id": "rev_1", "score": 71, "payment_id": "pay_3"})
    assert review.event_id == w.review_required_event("rev_1", A, NOW, {}).event_id


# --- subscriptions --------------------------------------------------------------------------------------------------
def test_who_receives_what():
    sub = w.Subscription("whk_x", A, "https://x", ("transfer.settled",), "whsec_s", NOW)
    admin = w.Subscription("whk_y", w.ADMIN_OWNER, "https://x", ("transfer.settled", "payment.failed"), "s", NOW)
    mine = w.OutboxEvent("evt_1", "transfer.settled", A, NOW)
    theirs = w.OutboxEvent("evt_2", "transfer.settled", B, NOW)
    other_type = w.OutboxEvent("evt_3", "payment.failed", A, NOW)
    assert (sub.wants(mine), sub.wants(theirs), sub.wants(other_type)) == (True, False, False)
    assert (admin.wants(mine), admin.wants(theirs), admin.wants(other_type)) == (True, True, True)


def test_event_type_lists():
    assert w.validate_event_types(["payment.failed", "transfer.settled", "payment.failed"]) == (
        "transfer.settled", "payment.failed")
    for bad in ([], "transfer.settled", ["transfer.settled", "nope"], [1], None):
        with pytest.raises(ValidationError):
            w.validate_event_types(bad)
    with pytest.raises(ValidationError):
        w.validate_event_ids(["evt_short"])
    assert w.validate_event_ids(["evt_" + "a" * 26] * 2) == ("evt_" + "a" * 26,)


# --- target URLs ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", [
    "http://hooks.example.com/x",  # not https
    "https://user:pw@hooks.example.com/", "https://user@hooks.example.com/",  # credentials
    "https://hooks.example.com/#frag",
    "https:///nohost", "https://hooks example.com/", "https://hooks.example.com/\n",
    "https://hööks.example.com/",  # an IDN must come as punycode
    "https://hooks.example.com:0/", "https://hooks.example.com:99999/",
    "https://-bad-.example.com/", "ftp://hooks.example.com/", "", "x" * 3000, None,
])
def test_refused_urls(url):
    with pytest.raises(WebhookUrlRejected):
        w.parse_target(url)


def test_accepted_urls_and_where_they_connect():
    t = w.parse_target("https://Hooks.Example.com/in?x=1")
    assert (t.host, t.port, t.target, t.url_for("203.0.113.9")) == ("hooks.example.com", 443, "/in?x=1",
                                                                     "https://203.0.113.9:443/in?x=1")
    v6 = w.parse_target("https://[2606:4700::1111]:8443")
    assert (v6.host, v6.port, v6.target, v6.url_for("2606:4700::1111")) == (
        "2606:4700::1111", 8443, "/", "https://[2606:4700::1111]:8443/")
    local = w.parse_target("http://127.0.0.1:3000/_sim/webhooks/inbox", allow_private=True)
    assert (local.scheme, local.port) == ("http", 3000)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "100.64.0.1",
    "224.0.0.1", "255.255.255.255", "240.0.0.1", "192.0.2.1", "198.18.0.1",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
    "2002:7f00:1::1", "2002:a9fe:a9fe::1",  # 6to4 of 127.0.0.1 / 169.254.169.254
    "64:ff9b::a9fe:a9fe", "64:ff9b:1::1",  # NAT64
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "fec0::1",  # deprecated site-local (review: it passed)
])
def test_non_public_addresses_are_forbidden(address):
    assert w.forbidden_reason(address) is not None
    with pytest.raises(WebhookUrlRejected):
        w.check_addresses("hooks.example.com", [address])
    assert w.check_addresses("hooks.example.com", [address], allow_private=True) == (address,)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address):
    assert w.forbidden_reason(address) is None


def test_one_bad_answer_taints_the_name():
    with pytest.raises(WebhookUrlRejected, match="10.0.0.1"):
        w.check_addresses("hooks.example.com", ["93.184.216.34", "10.0.0.1"])
    with pytest.raises(WebhookUrlRejected, match="does not resolve"):
        w.check_addresses("hooks.example.com", [])


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_every_ipv4_address_and_its_mapped_form_agree(n):
    v4 = ipaddress.IPv4Address(n)
    public = w.forbidden_reason(str(v4)) is None
    assert public == (v4.is_global and not v4.is_multicast and not v4.is_reserved)
    assert (w.forbidden_reason(f"::ffff:{v4}") is None) == public


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_no_private_ipv6_address_passes(n):
    v6 = ipaddress.IPv6Address(n)
    if w.forbidden_reason(str(v6)) is None:
        assert not (v6.is_private or v6.is_loopback or v6.is_link_local or v6.is_multicast or v6.is_unspecified)
        if v6.ipv4_mapped is not None:
            assert v6.ipv4_mapped.is_global


# --- retries and signatures -----------------------------------------------------------------------------------------
@given(st.integers(min_value=1, max_value=60), st.floats(min_value=0, max_value=1))
def test_backoff_grows_is_capped_and_jittered(attempt, draw):
    delay = w.backoff_s(attempt, rand=lambda: draw)
    ceiling = min(w.RETRY_CAP_S, w.RETRY_BASE_S * 2 ** (attempt - 1))
    assert ceiling / 2 - 1 <= delay <= ceiling + 1
    assert delay <= w.RETRY_CAP_S
    assert w.backoff_s(attempt, base=0, rand=lambda: draw) == 0


def test_backoff_schedule_fits_the_queue():
    worst = sum(w.backoff_s(n, rand=lambda: 1.0) for n in range(1, w.MAX_ATTEMPTS))
    assert 4 * 3600 < worst < 12 * 3600  # hours of retrying, inside the queue's 14-day retention
    with pytest.raises(ValueError):
        w.backoff_s(0)


def test_signature_is_hmac_sha256_over_timestamp_dot_body():
    body = w.event_body(w.OutboxEvent("evt_1", "transfer.settled", A, NOW, {"memo": "café"}))
    assert body == ('{"account_id":"%s","created_at":"%s","data":{"memo":"café"},"id":"evt_1",'
                    '"type":"transfer.settled"}' % (A, NOW)).encode()
    expected = hmac.new(b"whsec_k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert w.sign("whsec_k", 1700000000, body) == f"v1={expected}"
    assert w.sign("whsec_k", 1700000001, body) != w.sign("whsec_k", 1700000000, body)


def test_secrets_and_ids():
    secrets_made = {w.new_secret() for _ in range(50)}
    assert len(secrets_made) == 50 and all(s.startswith("whsec_") and len(s) >= 48 for s in secrets_made)
    assert w.validate_subscription_id(w.new_subscription_id())
    assert w.expires_at_unix(NOW) - w.expires_at_unix(NOW, days=0) == w.OUTBOX_TTL_DAYS * 86400
