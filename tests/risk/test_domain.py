"""satflow.domain.risk: the score is explainable (factors sum to it), bounded, monotone in every risky input, and
the decision follows the thresholds. Pure: no I/O."""
from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings, strategies as st

from satflow.domain.risk import (
    DEFAULT_POLICY, MAX_SCORE, Decision, DestinationKind, RiskAssessment, RiskFeatures, RiskPolicy, assess,
    parse_risk_thresholds,
)

DAY = 86_400
MSAT = 1_000


def features(**overrides) -> RiskFeatures:
    """A settled account's ordinary send: old, tier 2, a known destination, a usual amount, quiet."""
    base = dict(account_age_s=400 * DAY, tier=2, destination_kind=DestinationKind.INTERNAL, new_destination=False,
                amount_msat=50_000 * MSAT, per_tx_limit_msat=5_000_000 * MSAT, past_sends=12,
                max_past_send_msat=80_000 * MSAT, sends_last_hour=0, sends_per_hour_limit=60,
                used_daily_msat=0, daily_limit_msat=20_000_000 * MSAT, seconds_since_last_credit=30 * DAY)
    base.update(overrides)
    return RiskFeatures(**base)


def test_an_established_accounts_usual_send_scores_zero_and_is_allowed():
    result = assess(features())
    assert (result.score, result.decision) == (0, Decision.ALLOW)
    assert {f.name for f in result.factors} == {"account_age", "tier", "new_destination", "destination_kind",
                                               "amount_vs_history", "velocity", "daily_usage", "recent_credit"}


def test_a_brand_new_just_funded_accounts_first_small_send_is_allowed_by_default():
    """The shape of honest first use (and of most integration tests): it must not park in review."""
    for kind in DestinationKind:
        first = features(account_age_s=5, tier=0, destination_kind=kind, new_destination=True, past_sends=0,
                         max_past_send_msat=None, amount_msat=20_000 * MSAT, per_tx_limit_msat=100_000 * MSAT,
                         sends_per_hour_limit=10, daily_limit_msat=1_000_000 * MSAT, seconds_since_last_credit=5)
        result = assess(first)
        assert result.decision is Decision.ALLOW, (kind, result)


def test_draining_a_fresh_deposit_far_above_the_accounts_history_to_a_new_address_is_reviewed_then_blocked():
    takeover = features(account_age_s=30 * 60, tier=0, destination_kind=DestinationKind.ONCHAIN,
                        new_destination=True, past_sends=3, max_past_send_msat=5_000 * MSAT,
                        amount_msat=90_000 * MSAT, per_tx_limit_msat=100_000 * MSAT, sends_last_hour=3,
                        sends_per_hour_limit=10, used_daily_msat=15_000 * MSAT, daily_limit_msat=1_000_000 * MSAT,
                        seconds_since_last_credit=300)
    reviewed = assess(takeover)
    assert reviewed.decision is Decision.REVIEW, reviewed
    blocked = assess(replace(takeover, account_age_s=60, sends_last_hour=8, used_daily_msat=800_000 * MSAT))
    assert blocked.decision is Decision.BLOCK, blocked
    named = {f.name: f for f in blocked.factors}
    assert named["amount_vs_history"].points == 30 and "18.0x the largest" in named["amount_vs_history"].detail
    assert named["new_destination"].detail == "first send to this onchain destination"


def test_policy_thresholds_and_their_configuration():
    assert parse_risk_thresholds(None) == parse_risk_thresholds("") == DEFAULT_POLICY == RiskPolicy(75, 90)
    assert parse_risk_thresholds('{"review": 60}') == RiskPolicy(60, 90)
    assert parse_risk_thresholds('{"review": 50, "block": 101}').decide(100) is Decision.REVIEW  # never blocks
    for bad in ('{"review": 95}', '{"block": 0}', '{"review": 5.5}', '{"revew": 5}', "[1]", "nope",
                '{"review": true}', '{"block": 102}'):
        with pytest.raises(ValueError):
            parse_risk_thresholds(bad)


def test_features_are_validated():
    with pytest.raises(ValueError):
        features(amount_msat=0)
    with pytest.raises(ValueError):
        features(account_age_s=-1)
    with pytest.raises(ValueError):
        features(new_destination="yes")
    with pytest.raises(ValueError):
        features(max_past_send_msat=1.5)


def test_assessment_round_trips_through_its_dict():
    result = assess(features(new_destination=True, tier=0))
    assert RiskAssessment.from_dict(result.to_dict()) == result


# ------------------------------------------------------------------------------------------------ properties
amounts = st.integers(1, 10**12)
feature_sets = st.builds(
    RiskFeatures,
    account_age_s=st.integers(0, 10**9), tier=st.integers(0, 3), destination_kind=st.sampled_from(DestinationKind),
    new_destination=st.booleans(), amount_msat=amounts, per_tx_limit_msat=amounts, past_sends=st.integers(0, 50),
    max_past_send_msat=st.none() | amounts, sends_last_hour=st.integers(0, 200),
    sends_per_hour_limit=st.integers(1, 200),
    used_daily_msat=st.integers(0, 10**13), daily_limit_msat=amounts,
    seconds_since_last_credit=st.none() | st.integers(0, 10**9))
policies = st.integers(1, MAX_SCORE + 1).flatmap(
    lambda review: st.builds(RiskPolicy, st.just(review), st.integers(review, MAX_SCORE + 1)))


@settings(max_examples=300, deadline=None)
@given(feature_sets, policies)
def test_score_is_in_range_explained_by_its_factors_and_decided_by_the_thresholds(f, policy):
    result = assess(f, policy)
    assert 0 <= result.score <= MAX_SCORE
    assert result.score == min(MAX_SCORE, sum(x.points for x in result.factors))
    assert all(x.points >= 0 and x.name and x.detail for x in result.factors)
    expected = (Decision.BLOCK if result.score >= policy.block_at else
                Decision.REVIEW if result.score >= policy.review_at else Decision.ALLOW)
    assert result.decision is expected
    assert assess(f, policy) == result  # deterministic


def _riskier(f: RiskFeatures, data) -> RiskFeatures:
    """The same send with one input made riskier (or equal)."""
    which = data.draw(st.sampled_from(["age", "tier", "new", "amount", "history", "velocity", "daily", "credit"]))
    if which == "age":
        return replace(f, account_age_s=data.draw(st.integers(0, f.account_age_s)))
    if which == "tier":
        return replace(f, tier=data.draw(st.integers(0, f.tier)))
    if which == "new":
        return replace(f, new_destination=True)
    if which == "amount":
        return replace(f, amount_msat=data.draw(st.integers(f.amount_msat, 10**13)))
    if which == "history" and f.max_past_send_msat:
        return replace(f, max_past_send_msat=data.draw(st.integers(1, f.max_past_send_msat)))
    if which == "velocity":
        return replace(f, sends_last_hour=data.draw(st.integers(f.sends_last_hour, 500)))
    if which == "daily":
        return replace(f, used_daily_msat=data.draw(st.integers(f.used_daily_msat, 10**14)))
    if which == "credit" and f.seconds_since_last_credit is not None:
        return replace(f, seconds_since_last_credit=data.draw(st.integers(0, f.seconds_since_last_credit)))
    return f


@settings(max_examples=400, deadline=None)
@given(feature_sets, st.data())
def test_score_never_falls_when_a_risky_input_gets_riskier(f, data):
    riskier = _riskier(f, data)
    assert assess(riskier).score >= assess(f).score
    assert list(Decision).index(assess(riskier).decision) >= list(Decision).index(assess(f).decision)
