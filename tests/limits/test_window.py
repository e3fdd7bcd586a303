"""The pure limit window: rolling edges, pruning, velocity, per-tx, config parsing. No sockets."""
import socket

import pytest

from satflow.domain.errors import BusinessRejection, TransientError
from satflow.domain.limits import (
    DAY_S,
    DEFAULT_TIER_LIMITS,
    EMPTY_WINDOW,
    HOUR_S,
    LimitExceeded,
    LimitStateChanged,
    TierLimits,
    VelocityExceeded,
    admit,
    decode_buckets,
    encode_buckets,
    parse_tier_limits,
    prune,
    release,
    usage,
    window_from,
)

SAT = 1_000
T0 = 1_795_000_000 // HOUR_S * HOUR_S  # an exact hour boundary (2026-11-18)
LIM = TierLimits(tier=9, per_tx_msat=600 * SAT, daily_msat=1_000 * SAT, monthly_msat=5_000 * SAT, sends_per_hour=5)
FULL = TierLimits(tier=9, per_tx_msat=1_000 * SAT, daily_msat=1_000 * SAT, monthly_msat=5_000 * SAT, sends_per_hour=5)


@pytest.fixture(autouse=True)
def _no_sockets(monkeypatch):
    def guard(*args, **kwargs):
        raise AssertionError("pure tests must not use the network")

    monkeypatch.setattr(socket.socket, "connect", guard)
    monkeypatch.setattr(socket, "create_connection", guard)


def test_defaults_are_documented_figures_in_msat():
    t0, t3 = DEFAULT_TIER_LIMITS[0], DEFAULT_TIER_LIMITS[3]
    assert (t0.per_tx_msat, t0.daily_msat, t0.monthly_msat, t0.sends_per_hour) == (
        100_000_000, 1_000_000_000, 10_000_000_000, 10)
    assert t3.daily_msat == 25_000_000 * SAT  # the CTR-style ceiling, configured in sat
    assert sorted(DEFAULT_TIER_LIMITS) == [0, 1, 2, 3]
    for a, b in zip(range(3), range(1, 4)):  # higher tiers never allow less
        la, lb = DEFAULT_TIER_LIMITS[a], DEFAULT_TIER_LIMITS[b]
        assert lb.per_tx_msat >= la.per_tx_msat and lb.daily_msat >= la.daily_msat
        assert lb.monthly_msat >= la.monthly_msat and lb.sends_per_hour >= la.sends_per_hour


def test_admit_counts_amount_and_send():
    s = admit(EMPTY_WINDOW, 300 * SAT, T0 + 10, LIM)
    assert usage(s, T0 + 10) == (300 * SAT, 300 * SAT, 1)
    s = admit(s, 200 * SAT, T0 + 20, LIM)
    assert usage(s, T0 + 20) == (500 * SAT, 500 * SAT, 2)
    assert len(s.hours) == len(s.days) == len(s.minutes) == 1  # same hour, day and minute: one bucket each


def test_per_tx_limit_at_and_above():
    admit(EMPTY_WINDOW, 600 * SAT, T0, LIM)  # exactly the limit passes
    with pytest.raises(LimitExceeded) as exc:
        admit(EMPTY_WINDOW, 600 * SAT + 1, T0, LIM)
    assert exc.value.code == "LIMIT_EXCEEDED" and exc.value.details["limit"] == "per_tx"
    assert "per-transaction" in exc.value.message and "600,000 sat" not in exc.value.message
    assert "600 sat" in exc.value.message


def test_daily_limit_exact_fill_then_one_msat_more():
    s = admit(EMPTY_WINDOW, 600 * SAT, T0, LIM)
    s = admit(s, 400 * SAT, T0 + 60, LIM)  # exactly 1,000 sat in 24 h
    with pytest.raises(LimitExceeded) as exc:
        admit(s, 1, T0 + 120, LIM)
    d = exc.value.details
    assert d["limit"] == "daily" and d["used_msat"] == 1_000 * SAT and d["remaining_msat"] == 0
    assert "daily" in exc.value.message and "rolling 24 h" in exc.value.message


def test_rolling_24h_edge_is_conservative_to_the_hour():
    s = admit(EMPTY_WINDOW, 1_000 * SAT, T0, FULL)  # at the very start of an hour
    # Still counted exactly 24 h later (and up to the end of that hour): never two full limits within 24 h.
    for t in (T0 + 24 * HOUR_S - 1, T0 + 24 * HOUR_S, T0 + 25 * HOUR_S - 1):
        with pytest.raises(LimitExceeded):
            admit(s, 1, t, FULL)
    s2 = admit(s, 1_000 * SAT, T0 + 25 * HOUR_S, FULL)  # the hour bucket left the window
    assert usage(s2, T0 + 25 * HOUR_S).used_daily_msat == 1_000 * SAT
    # A send at the end of an hour counts for just over 24 h.
    late = admit(EMPTY_WINDOW, 1_000 * SAT, T0 + HOUR_S - 1, FULL)
    assert usage(late, T0 + 25 * HOUR_S - 1).used_daily_msat == 1_000 * SAT
    assert usage(late, T0 + 25 * HOUR_S).used_daily_msat == 0


def test_rolling_30_days_edge():
    lim = TierLimits(9, per_tx_msat=1_000 * SAT, daily_msat=1_000 * SAT, monthly_msat=2_000 * SAT, sends_per_hour=9)
    day0 = T0 // DAY_S * DAY_S
    s = admit(EMPTY_WINDOW, 1_000 * SAT, day0, lim)
    s = admit(s, 1_000 * SAT, day0 + 2 * DAY_S, lim)  # daily window is clear again; monthly is now full
    with pytest.raises(LimitExceeded) as exc:
        admit(s, 1, day0 + 30 * DAY_S, lim)  # day 0 still in the 30-day window (30 days to the day, rounded up)
    assert exc.value.details["limit"] == "monthly" and "rolling 30 days" in exc.value.message
    with pytest.raises(LimitExceeded):
        admit(s, 1, day0 + 31 * DAY_S - 1, lim)
    s = admit(s, 1_000 * SAT, day0 + 31 * DAY_S, lim)  # day 0 left; day 2 still counts
    assert usage(s, day0 + 31 * DAY_S).used_monthly_msat == 2_000 * SAT


def test_buckets_are_pruned_and_bounded():
    lim = TierLimits(9, per_tx_msat=1 * SAT, daily_msat=10**9, monthly_msat=10**12, sends_per_hour=10**6)
    s = EMPTY_WINDOW
    t = T0
    for _ in range(24 * 45):  # a send every hour for 45 days
        s = admit(s, 1 * SAT, t, lim)
        t += HOUR_S
    now = t - HOUR_S
    assert len(s.hours) == 25 and len(s.days) <= 31 and len(s.minutes) <= 61
    assert min(i for i, _ in s.hours) == now // HOUR_S - 24
    assert min(i for i, _ in s.days) == now // DAY_S - 30
    # sends exactly 60 min apart: the older one is still in its (rounded-up) velocity window
    assert usage(s, now) == (25 * SAT, sum(v for _, v in s.days), 2)
    assert prune(s, now + 400 * DAY_S) == EMPTY_WINDOW


def test_velocity_at_n_and_n_plus_1():
    s = EMPTY_WINDOW
    for i in range(LIM.sends_per_hour):  # N sends within the hour pass
        s = admit(s, 1, T0 + i * 60, LIM)
    assert usage(s, T0 + 300).sends_last_hour == 5
    with pytest.raises(VelocityExceeded) as exc:  # N+1 is refused
        admit(s, 1, T0 + 300, LIM)
    assert exc.value.code == "VELOCITY_EXCEEDED" and exc.value.details["limit"] == "sends_per_hour"
    assert "5 sends per hour" in exc.value.message
    # The first send (minute 0) counts until the end of minute 60, then one slot frees up.
    with pytest.raises(VelocityExceeded):
        admit(s, 1, T0 + 61 * 60 - 1, LIM)
    s = admit(s, 1, T0 + 61 * 60, LIM)
    with pytest.raises(VelocityExceeded):
        admit(s, 1, T0 + 61 * 60 + 1, LIM)


def test_rejections_are_business_rejections_and_leave_state_unchanged():
    s = admit(admit(EMPTY_WINDOW, 600 * SAT, T0, LIM), 400 * SAT, T0, LIM)
    before = s
    with pytest.raises(BusinessRejection):
        admit(s, 1, T0, LIM)
    assert s == before
    assert issubclass(LimitStateChanged, TransientError)
    assert {LimitExceeded.code, VelocityExceeded.code, LimitStateChanged.code} == {
        "LIMIT_EXCEEDED", "VELOCITY_EXCEEDED", "LIMIT_STATE_CHANGED"}


def test_per_tx_is_checked_before_window_limits():
    s = admit(admit(EMPTY_WINDOW, 600 * SAT, T0, LIM), 400 * SAT, T0, LIM)
    with pytest.raises(LimitExceeded) as exc:
        admit(s, 700 * SAT, T0, LIM)
    assert exc.value.details["limit"] == "per_tx"


@pytest.mark.parametrize("amount", [0, -1, 1.0, True, "5"])
def test_admit_refuses_non_positive_or_non_integer_amounts(amount):
    with pytest.raises(ValueError):
        admit(EMPTY_WINDOW, amount, T0, LIM)


def test_release_gives_amount_back_but_keeps_the_attempt():
    s = admit(EMPTY_WINDOW, 600 * SAT, T0, LIM)
    s = admit(s, 400 * SAT, T0 + 2 * HOUR_S, LIM)
    s = release(s, 600 * SAT, T0, T0 + 2 * HOUR_S + 5)
    assert usage(s, T0 + 2 * HOUR_S + 5) == (400 * SAT, 400 * SAT, 1)  # the first send left velocity already
    admit(s, 600 * SAT, T0 + 2 * HOUR_S + 5, LIM)
    # Releasing more than a bucket holds (or a bucket already gone) never goes below zero.
    r = release(s, 10**9, T0 - 40 * DAY_S, T0 + 2 * HOUR_S + 5)
    assert usage(r, T0 + 2 * HOUR_S + 5) == usage(s, T0 + 2 * HOUR_S + 5)
    assert release(EMPTY_WINDOW, 5, T0, T0) == EMPTY_WINDOW


def test_bucket_encoding_round_trips_exactly():
    s = window_from(hours=[(498_611, 10**18), (498_610, 1)], days=[(20_775, 7)], minutes=[(29_916_660, 3)])
    for b in (s.hours, s.days, s.minutes, ()):
        assert decode_buckets(encode_buckets(b)) == b
    assert encode_buckets(s.hours) == "498610:1,498611:1000000000000000000"
    for bad in ("1:2:3", "a:1", "1:-2", "1:1.5", "1"):
        with pytest.raises(ValueError):
            decode_buckets(bad)


def test_parse_tier_limits_merges_overrides_onto_defaults():
    assert parse_tier_limits(None) == dict(DEFAULT_TIER_LIMITS)
    assert parse_tier_limits("  ") == dict(DEFAULT_TIER_LIMITS)
    got = parse_tier_limits('{"3": {"daily_sat": 30000000}, "0": {"sends_per_hour": 5, "per_tx_sat": 50000}}')
    assert got[3].daily_msat == 30_000_000 * SAT and got[3].per_tx_msat == DEFAULT_TIER_LIMITS[3].per_tx_msat
    assert got[0].sends_per_hour == 5 and got[0].per_tx_msat == 50_000 * SAT
    assert got[1] == DEFAULT_TIER_LIMITS[1] and got[0].tier == 0


@pytest.mark.parametrize("raw", [
    "[]", "{", '{"4": {}}', '{"0": 5}', '{"0": {"daily": 1}}', '{"0": {"daily_sat": 1.5}}',
    '{"0": {"daily_sat": 1e9}}', '{"0": {"daily_sat": 0}}', '{"0": {"daily_sat": true}}',
    '{"0": {"daily_sat": "100"}}', '{"0": {"per_tx_sat": 2000000}}',  # per_tx above daily
    '{"0": {"daily_sat": NaN}}',
])
def test_parse_tier_limits_refuses_malformed_config(raw):
    with pytest.raises(ValueError):
        parse_tier_limits(raw)


def test_release_from_an_earlier_bucket_never_under_counts():
    """The record's created_at may fall in the hour before the admission (taken just before an hour boundary):
    releasing from that earlier bucket must never leave usage below the truth at any later time."""
    other = admit(EMPTY_WINDOW, 300 * SAT, T0 + 10, LIM)  # send Y in hour 0
    s = admit(other, 500 * SAT, T0 + HOUR_S, LIM)  # send X admitted in hour 1 (its record says hour 0)
    s = release(s, 500 * SAT, T0 + HOUR_S - 1, T0 + HOUR_S + 5)  # X failed: released from hour 0
    for t in range(T0 + HOUR_S + 5, T0 + 27 * HOUR_S, 600):
        assert usage(s, t).used_daily_msat >= usage(other, t).used_daily_msat  # truth: only Y remains
    # A record time after "now" (clocks that disagree): nothing is given back rather than from a wrong bucket.
    assert release(s, 500 * SAT, T0 + HOUR_S + 6, T0 + HOUR_S + 5) == prune(s, T0 + HOUR_S + 5)
