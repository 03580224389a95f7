"""Off-policy estimators on synthetic logged data whose truth is known (fixed seeds).

The logging policy is adaptive (the second batch's propensities depend on the first batch's
outcomes), as the bandit's are; IPS and DR must still be unbiased, and their normal intervals
must cover the truth at about the nominal rate."""

import numpy as np
import pytest

from bandit.offpolicy import (
    LoggedData,
    direct_model,
    doubly_robust,
    evaluate,
    greedy_policy,
    ips,
    snips,
    uniform_policy,
    unsupported_mass,
)

MU = np.array([[0.05, 0.10, 0.20, 0.08, 0.30],
               [0.15, 0.02, 0.05, 0.25, 0.10],
               [0.40, 0.30, 0.10, 0.05, 0.20]])
P_CONTEXT = np.array([0.5, 0.3, 0.2])
C, A = MU.shape


def truth(target: np.ndarray, mu: np.ndarray = MU) -> float:
    return float(P_CONTEXT @ (target * mu).sum(axis=1))


def log_campaign(rng: np.random.Generator, n: int = 4_000, value: bool = False):
    """Two batches: the first from a fixed skewed policy, the second from one that favours the
    first batch's empirical leader per context (with a 10% floor): adaptive, like the bandit."""
    first = np.array([[0.4, 0.3, 0.1, 0.1, 0.1], [0.1, 0.1, 0.2, 0.2, 0.4], [0.2, 0.2, 0.2, 0.2, 0.2]])
    out = []
    policy = first
    for _ in range(2):
        ctx = rng.choice(C, size=n // 2, p=P_CONTEXT)
        u = rng.random(n // 2)
        act = (u[:, None] > policy[ctx].cumsum(axis=1)).sum(axis=1)
        act = np.minimum(act, A - 1)
        reward = (rng.random(n // 2) < MU[ctx, act]).astype(float)
        if value:
            reward *= rng.gamma(2.0, 20.0, size=n // 2)  # order values, mean 40
        out.append((ctx, act, policy[ctx, act], reward))
        means = direct_model(LoggedData.from_sends(ctx, act, policy[ctx, act], reward), C, A)
        policy = np.full((C, A), 0.1 / A) + 0.9 * greedy_policy(means.argmax(axis=1), A)
    ctx, act, prop, reward = (np.concatenate(x) for x in zip(*out, strict=True))
    return LoggedData.from_sends(ctx, act, prop, reward)


TARGETS = {
    "uniform": uniform_policy(np.ones((C, A), dtype=bool)),
    "leader": greedy_policy(np.array([4, 3, 0]), A),
    "mixed": np.array([[0.5, 0.5, 0, 0, 0], [0, 0, 0, 0.2, 0.8], [0.25, 0.25, 0.25, 0.25, 0]]),
}


@pytest.fixture(scope="module")
def replications():
    rng = np.random.default_rng(20261122)
    return [log_campaign(rng) for _ in range(400)]


@pytest.mark.parametrize("policy", sorted(TARGETS))
def test_estimators_are_unbiased_and_their_intervals_cover(replications, policy):
    target = TARGETS[policy]
    v = truth(target)
    for name, fn in (("ips", ips), ("snips", snips), ("dr", doubly_robust)):
        est = [fn(d, target) for d in replications]
        values = np.array([e.value for e in est])
        ses = np.array([e.std_error for e in est])
        sd = values.std(ddof=1)
        # unbiased: the mean of 400 independent estimates is within 4 of its standard errors
        assert abs(values.mean() - v) < 4 * sd / np.sqrt(len(values)), (name, values.mean(), v)
        # the reported standard error is the estimate's real spread (within sampling error)
        assert 0.85 < ses.mean() / sd < 1.15, (name, ses.mean(), sd)
        covered = np.mean([e.ci_low <= v <= e.ci_high for e in est])
        # Binomial(400, 0.95): sd 0.011; [0.915, 0.985] is about 3 sd either side
        assert 0.915 <= covered <= 0.985, (name, covered)


def test_revenue_rewards_are_estimated_without_bias():
    rng = np.random.default_rng(7)
    target = TARGETS["uniform"]
    v = truth(target) * 40.0
    est = np.array([[ips(d, target).value, doubly_robust(d, target).value]
                     for d in (log_campaign(rng, value=True) for _ in range(300))])
    sd = est.std(axis=0, ddof=1)
    assert (np.abs(est.mean(axis=0) - v) < 4 * sd / np.sqrt(len(est))).all(), (est.mean(axis=0), v)


def test_grouped_data_gives_exactly_the_per_send_answer():
    rng = np.random.default_rng(3)
    per_send = log_campaign(rng, value=True)
    keys = np.stack([per_send.context, per_send.action, np.round(per_send.propensity * 1e12)], axis=1)
    _, group, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    group = group.ravel()
    g = counts.shape[0]

    def total(x):
        return np.bincount(group, weights=x, minlength=g)

    first = np.zeros(g, dtype=np.int64)
    first[group[::-1]] = np.arange(len(group))[::-1]  # an index of some send of each group
    grouped = LoggedData(per_send.context[first], per_send.action[first], per_send.propensity[first],
                         counts.astype(float), total(per_send.reward_sum), total(per_send.reward_sq_sum))
    assert g < 40  # the point of grouping: tens of rows instead of thousands
    for target in TARGETS.values():
        a, b = evaluate(per_send, target), evaluate(grouped, target)
        for name in a:
            assert a[name].value == pytest.approx(b[name].value, rel=1e-10)
            assert a[name].std_error == pytest.approx(b[name].std_error, rel=1e-8)
            assert a[name].effective_sample_size == pytest.approx(b[name].effective_sample_size, rel=1e-10)


def test_dr_with_a_good_model_beats_ips_and_a_wrong_model_keeps_it_unbiased(replications):
    target = TARGETS["uniform"]
    v = truth(target)
    wrong = np.array([doubly_robust(d, target, q=np.full((C, A), 0.5)).value for d in replications])
    assert abs(wrong.mean() - v) < 4 * wrong.std(ddof=1) / np.sqrt(len(wrong))
    # Where the rewards are mostly explained by (context, action), the model takes that part out
    # and only the residual is importance-weighted.
    rng = np.random.default_rng(5)
    errors = []
    for d in replications[:100]:
        r = MU[d.context, d.action] + rng.normal(0, 0.02, d.context.shape[0])
        low_noise = LoggedData.from_sends(d.context, d.action, d.propensity, r)
        cond = float((target * MU).sum(axis=1)[d.context].mean())  # truth for these contexts
        errors.append([ips(low_noise, target).value - cond, doubly_robust(low_noise, target, q=MU).value - cond,
                       doubly_robust(low_noise, target).value - cond])
    sd = np.array(errors).std(axis=0)
    assert sd[1] < 0.2 * sd[0] and sd[2] < 0.5 * sd[0], sd


def test_on_policy_target_reduces_to_the_sample_mean():
    rng = np.random.default_rng(11)
    ctx = rng.integers(0, C, 500)
    act = rng.integers(0, A, 500)
    reward = (rng.random(500) < 0.2).astype(float)
    data = LoggedData.from_sends(ctx, act, np.full(500, 1.0 / A), reward)
    est = ips(data, TARGETS["uniform"])
    assert est.value == pytest.approx(reward.mean())
    assert est.std_error == pytest.approx(reward.std(ddof=1) / np.sqrt(500))
    assert est.effective_sample_size == pytest.approx(500)
    assert snips(data, TARGETS["uniform"]).value == pytest.approx(reward.mean())


def test_direct_model_fills_unlogged_cells_with_the_context_mean():
    data = LoggedData.from_sends([0, 0, 1], [0, 1, 2], [0.5, 0.5, 1.0], [1.0, 0.0, 3.0])
    q = direct_model(data, 3, 3)
    assert q[0].tolist() == [1.0, 0.0, 0.5]
    assert q[1].tolist() == [3.0, 3.0, 3.0]
    assert q[2].tolist() == [4.0 / 3] * 3


def test_unsupported_mass_counts_the_target_mass_the_logger_never_offered():
    target = np.array([[0.5, 0.5], [0.5, 0.5]])
    logging = np.array([[1.0, 0.0], [0.3, 0.7]])
    assert unsupported_mass(target, logging, np.array([100, 300])) == pytest.approx(0.5 * 100 / 400)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"propensity": [0.0, 0.5]}, "propensity"),
        ({"propensity": [0.5, 1.5]}, "propensity"),
        ({"count": [1.0, 0.0]}, "count"),
        ({"action": [0, 1, 2]}, "action"),
        ({"reward_sq_sum": [0.0, 0.0]}, "reward_sq_sum"),
        ({"reward_sum": [np.nan, 1.0]}, "reward_sum"),
    ],
)
def test_bad_logged_data_is_refused_by_name(kwargs, message):
    base = dict(context=[0, 1], action=[0, 1], propensity=[0.5, 0.5], count=[1.0, 2.0],
                reward_sum=[1.0, 1.0], reward_sq_sum=[1.0, 1.0])
    with pytest.raises(ValueError, match=f"^{message}"):
        LoggedData(**{**base, **kwargs})


def test_a_target_that_is_not_a_distribution_is_refused():
    data = LoggedData.from_sends([0, 1], [0, 1], [0.5, 0.5], [1.0, 0.0])
    with pytest.raises(ValueError, match="^target: rows"):
        ips(data, np.array([[0.5, 0.4], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="^target: shape"):
        ips(data, np.array([[1.0]]))
    with pytest.raises(ValueError, match="^q:"):
        doubly_robust(data, np.full((2, 2), 0.5), q=np.zeros((3, 2)))
