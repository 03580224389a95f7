"""Waves inside a simulated period: sizes, propensities, what the second wave learns from."""

from __future__ import annotations

import numpy as np
import pytest

from bandit import AllocationConfig, Model
from bandit.simulate import (
    Waves,
    bernoulli_environment,
    factorial_environment,
    oracle_policy,
    simulate,
    thompson_policy,
    uniform_policy,
)

CONFIG = AllocationConfig(n_draws=1000, model=Model.INDEPENDENT)


def clear_winner(batch: int = 20_000):
    """10 arms, one with four times the click rate of the others."""
    return bernoulli_environment([0.08] + [0.02] * 9, batch=batch)


def recording(policy):
    """Wrap a policy to keep the history each call saw."""
    calls: list[list] = []

    def wrapped(t, history, rng):
        calls.append([list(periods) for periods in history])
        return policy(t, history, rng)

    wrapped.calls = calls  # type: ignore[attr-defined]
    return wrapped


@pytest.mark.parametrize("batch", [1, 7, 2_500])
def test_each_customer_is_mailed_once_per_period(batch):
    env = factorial_environment(levels=(2, 3), n_segments=3, customers=batch * 3 * 4, periods=4, seed=3)
    waves = Waves(share=0.15)
    result = simulate(env, {"ts": thompson_policy(env, CONFIG)}, periods=4, seed=1, waves=waves)
    trace = result.trace["ts"]
    assert len(trace) == 4
    for period in trace:
        sends = period["sends"]  # (wave, segment, arm)
        assert sends.shape == (2, env.n_segments, env.n_arms)
        assert (sends >= 0).all()
        assert (sends[0].sum(axis=1) == waves.first_wave_size(env.batch)).all()
        # the two waves' sizes add to the period's: nobody twice, nobody left out
        assert (sends.sum(axis=(0, 2)) == env.batch).all()


def test_propensities_are_logged_per_wave():
    env = clear_winner()
    waves = Waves(pending="expected")
    result = simulate(env, {"ts": thompson_policy(env, CONFIG)}, periods=2, seed=0, waves=waves)
    for period in result.trace["ts"]:
        p = period["propensity"]
        assert p.shape == (2, 1, env.n_arms)
        np.testing.assert_allclose(p.sum(axis=2), 1.0)
        assert (p >= 0).all()
    first, second = result.trace["ts"][0]["propensity"]
    np.testing.assert_allclose(first, 1.0 / env.n_arms)  # nothing known before the first wave
    assert second[0, 0] > 0.5  # the first wave's clicks moved the rest of the period to the winner


def test_second_wave_is_allocated_from_the_first_waves_clicks():
    env = clear_winner()
    policy = recording(thompson_policy(env, CONFIG))
    result = simulate(env, {"ts": policy}, periods=2, seed=4, waves=Waves(pending="window"))
    calls, trace = policy.calls, result.trace["ts"]
    assert [len(c[0]) for c in calls] == [0, 1, 1, 2]  # (period, wave): history before each allocation
    for period, (before_first, before_second) in enumerate(zip(calls[::2], calls[1::2], strict=True)):
        # the second wave sees the whole earlier periods plus the first wave of this one
        assert all(a is b for a, b in zip(before_second[0][:-1], before_first[0], strict=True))
        seen = before_second[0][-1]
        assert seen is trace[period]["first_wave_seen"][0]
        np.testing.assert_array_equal(seen.sends, trace[period]["sends"][0, 0])
        assert seen.clicks.sum() > 0
        assert (seen.clicks <= seen.sends).all() and (seen.conversions <= seen.clicks).all()
        # as the service passes them: every first-wave send without a click yet is pending
        np.testing.assert_array_equal(seen.pending_clicks, seen.sends - seen.clicks)
        np.testing.assert_array_equal(seen.pending_conversions, seen.clicks - seen.conversions)
    # later periods see the whole earlier period, not its first wave
    full = calls[2][0][0]
    np.testing.assert_array_equal(full.sends, trace[0]["sends"][:, 0].sum(axis=0))


def test_expected_pending_counts_only_events_not_due_yet():
    env = clear_winner(batch=2_000_000)
    waves = Waves(pending="expected", wait_hours=12.0, click_delay_hours=6.0)
    result = simulate(env, {"u": uniform_policy(env)}, periods=1, seed=2, waves=waves)
    seen = result.trace["u"][0]["first_wave_seen"][0]
    np.testing.assert_allclose(seen.pending_clicks, seen.sends * (1 - waves.click_due))
    assert (seen.pending_clicks <= seen.sends - seen.clicks).all()
    # a click arrives with probability click_due: the share seen matches it (binomial, 4 SE)
    seen_share = seen.clicks.sum() / (seen.sends * env.click[0]).sum()
    assert abs(seen_share - waves.click_due) < 4 * np.sqrt(1 / max(seen.clicks.sum(), 1))


def test_arrival_probabilities_match_exponential_delays():
    rng = np.random.default_rng(0)
    for click_mean, conv_mean in ((4.0, 48.0), (10.0, 10.0)):
        waves = Waves(wait_hours=24.0, click_delay_hours=click_mean, conversion_delay_hours=conv_mean)
        click = rng.exponential(click_mean, 200_000)
        conv = click + rng.exponential(conv_mean, 200_000)
        assert waves.click_due == pytest.approx((click <= 24).mean(), abs=0.005)
        assert waves.conversion_due == pytest.approx((conv <= 24).mean(), abs=0.005)
        assert 0 < waves.conversion_due < waves.click_due < 1


@pytest.mark.parametrize("pending", ["window", "expected"])
def test_waves_beat_no_waves_with_a_clear_winner(pending):
    env = clear_winner()
    shares = {}
    for label, waves in (("no waves", None), ("waves", Waves(share=0.15, pending=pending))):
        policies = {"ts": thompson_policy(env, CONFIG), "oracle": oracle_policy(env)}
        shares[label] = simulate(env, policies, periods=2, seed=7, waves=waves).share_of_oracle("ts")
    # period 1 is uniform without waves (about a third of the oracle); with waves only its first 15 %
    assert shares["waves"] > shares["no waves"] + 0.05, shares


def test_without_waves_nothing_is_traced():
    env = clear_winner(batch=500)
    result = simulate(env, {"ts": thompson_policy(env, CONFIG)}, periods=2, seed=0)
    assert result.trace == {}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"share": 0.0}, "share"),
        ({"share": 1.0}, "share"),
        ({"share": float("nan")}, "share"),
        ({"wait_hours": -1.0}, "wait_hours"),
        ({"click_delay_hours": 0.0}, "click_delay_hours"),
        ({"conversion_delay_hours": float("inf")}, "conversion_delay_hours"),
        ({"pending": "never"}, "pending"),
    ],
)
def test_bad_waves_name_the_argument(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Waves(**kwargs)


def test_a_wait_longer_than_every_delay_sees_the_whole_first_wave():
    env = factorial_environment(levels=(2, 2), n_segments=2, customers=400_000, periods=1, seed=5)
    waves = Waves(wait_hours=1e5, pending="expected")
    result = simulate(env, {"u": uniform_policy(env)}, periods=1, seed=3, waves=waves)
    period = result.trace["u"][0]
    for s, seen in enumerate(period["first_wave_seen"]):
        np.testing.assert_array_equal(seen.sends, period["sends"][0, s])
        assert seen.conversions.sum() > 0
        assert (seen.pending_clicks == 0).all() and (seen.pending_conversions == 0).all()
