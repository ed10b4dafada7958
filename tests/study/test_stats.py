"""The study's statistics on synthetic outcomes with known answers (fast: small arrays, few resamples)."""

import numpy as np
import pytest

from evalkit.study import stats


def _condition(rng, seeds, prompts, base=0.0, seed_sd=1.0):
    """0/1 outcomes [seeds, prompts]: prompt difficulty shared by every model, one propensity per seed."""
    difficulty = np.linspace(-1.5, 1.5, prompts)
    u = rng.normal(base, seed_sd, (seeds, 1))
    return (rng.random((seeds, prompts)) < 1 / (1 + np.exp(-(u + difficulty)))).astype(float)


def test_identical_conditions_are_not_resolved():
    a = _condition(np.random.default_rng(0), 5, 30)
    d = stats.paired_difference(a, a.copy(), resamples=300)
    assert d["diff"] == 0.0 and d["ci"] == [0.0, 0.0]
    assert d["p"] == 1.0 and not d["resolved"]
    assert (d["n_seeds"], d["n_prompts"]) == (5, 30)


def test_shifted_condition_is_resolved_with_the_smallest_p():
    rng = np.random.default_rng(1)
    b = _condition(rng, 6, 40, base=-1.0, seed_sd=0.3)
    a = np.maximum(b, (rng.random(b.shape) < 0.5).astype(float))  # every cell can only go up: ASR +~0.3
    d = stats.paired_difference(a, b, resamples=400)
    assert d["resolved"] and d["ci"][0] > 0.1
    assert d["ci"][0] <= d["diff"] <= d["ci"][1]
    assert d["diff"] == pytest.approx(float((a - b).mean()))
    assert d["p"] == stats.min_p(6) == pytest.approx(2 / 64)


def test_null_false_resolution_rate_with_few_seeds():
    """Independent conditions from the same distribution: the widened interval excludes 0 at most about
    5% of the time; the plain percentile bootstrap over 5 seeds does so more often."""
    rng = np.random.default_rng(2)
    plain = widened = 0
    trials = 60
    for i in range(trials):
        a, b = _condition(rng, 5, 20), _condition(rng, 5, 20)
        widened += stats.paired_difference(a, b, resamples=200, seed=i)["resolved"]
        plain += stats.paired_difference(a, b, resamples=200, seed=i, small_sample=False)["resolved"]
    assert widened / trials <= 0.08
    assert plain > widened


def test_condition_interval_covers_the_true_mean():
    rng = np.random.default_rng(3)
    covered, trials = 0, 60
    for i in range(trials):
        p_true = 0.3
        v = (rng.random((5, 25)) < p_true).astype(float)
        lo, hi = stats.mean_interval(v, resamples=300, seed=i)["ci"]
        covered += lo <= p_true <= hi
    assert covered / trials >= 0.9


def test_groups_resample_whole_phrasing_frames():
    """Three identical copies of each prompt in one group give exactly the interval of the prompts
    alone; treated as independent prompts they give a narrower (overconfident) one."""
    v = _condition(np.random.default_rng(4), 5, 12)
    tripled = np.repeat(v, 3, axis=1)
    groups = np.repeat(np.arange(12), 3).tolist()
    alone = stats.mean_interval(v, resamples=300)
    grouped = stats.mean_interval(tripled, groups=groups, resamples=300)
    naive = stats.mean_interval(tripled, resamples=300)
    assert grouped["ci"] == pytest.approx(alone["ci"])
    assert grouped["n_groups"] == 12 and grouped["n_prompts"] == 36
    assert naive["ci"][1] - naive["ci"][0] < grouped["ci"][1] - grouped["ci"][0]


def test_sign_flip_p_by_hand():
    assert stats.sign_flip_p([3.0, 1.0]) == 0.5  # |means| of the 4 flips: 2, 1, 1, 2
    assert stats.sign_flip_p([1.0] * 5) == pytest.approx(2 / 32)
    assert stats.sign_flip_p([1.0, -1.0, 2.0, -2.0]) == 1.0
    big = np.full(20, 0.5)  # beyond exact enumeration: Monte Carlo, at least 1 / (resamples + 1)
    assert 0 < stats.sign_flip_p(big, resamples=2000) < 0.01


def test_small_sample_factor_and_detectable_difference():
    assert stats.small_sample_factor(5) == pytest.approx(2.776445 / 1.959964 * (5 / 4) ** 0.5, rel=1e-5)
    assert stats.small_sample_factor(1) == 1.0
    # many seeds: the normal approximation (1.96 + 0.8416) * sd / sqrt(n)
    assert stats.detectable_difference(0.3, 4000) == pytest.approx(2.8016 * 0.3 / 4000**0.5, rel=2e-3)
    d5, d10 = stats.detectable_difference(0.3, 5), stats.detectable_difference(0.3, 10)
    assert d5 > d10 > 2.8016 * 0.3 / 10**0.5


def test_bad_input_is_refused_with_its_shape():
    with pytest.raises(ValueError, match=r"same seeds and prompts"):
        stats.paired_difference(np.zeros((5, 10)), np.zeros((4, 10)))
    with pytest.raises(ValueError, match="non-finite"):
        stats.mean_interval([[0.0, float("nan")]])
    with pytest.raises(ValueError, match="3 labels for 2"):
        stats.mean_interval([[0.0, 1.0]], groups=[0, 0, 1])
    with pytest.raises(ValueError, match="needs >= 2 seeds"):
        stats.detectable_difference(0.3, 1)


def test_one_seed_never_resolves_and_one_value_has_no_interval():
    one = stats.mean_interval([[0.7]])
    assert one["mean"] == pytest.approx(0.7) and one["ci"] is None
    d = stats.paired_difference(np.ones((1, 30)), np.zeros((1, 30)), resamples=200)
    assert d["diff"] == 1.0 and d["ci"] == [1.0, 1.0] and not d["resolved"] and d["p"] == 1.0
