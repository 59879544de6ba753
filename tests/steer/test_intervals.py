"""The positive rate's cluster-bootstrap interval: contains the rate, narrows with more prompts,
is reproducible, degenerates to a point without spread, and covers the truth about 95 % of the
time on simulated judges."""

from __future__ import annotations

import numpy as np
import pytest

from steerflow.errors import InputError
from steerflow.steer.intervals import difference_interval, rate_interval


def _judged(rng, n_prompts, p, samples=4):
    return [list(rng.random(samples) < p) for _ in range(n_prompts)]


def test_interval_contains_the_rate_and_narrows_with_more_prompts():
    rng = np.random.default_rng(0)
    small, large = _judged(rng, 30, 0.7), _judged(rng, 400, 0.7)
    for data in (small, large):
        low, high = rate_interval(data)
        assert low <= np.mean(data) <= high
    assert np.subtract(*rate_interval(large)[::-1]) < 0.5 * np.subtract(*rate_interval(small)[::-1])


def test_same_seed_same_interval_and_no_spread_is_a_point():
    data = _judged(np.random.default_rng(1), 50, 0.4)
    assert rate_interval(data, seed=3) == rate_interval(data, seed=3)
    assert rate_interval([[1, 1], [1, 1, 1]]) == (1.0, 1.0)
    assert rate_interval([[0, 1]]) == (0.5, 0.5)


def test_coverage_is_near_the_level():
    """200 simulated evaluations with a known rate 0.3: a 95 % interval misses it ~5 % of the
    time (binomial: between 1 % and 11 % with probability > 0.99)."""
    rng = np.random.default_rng(2)
    misses = 0
    for _ in range(200):
        low, high = rate_interval(_judged(rng, 60, 0.3), resamples=500)
        misses += not low <= 0.3 <= high
    assert 2 <= misses <= 22


@pytest.mark.parametrize("data, level", [([], 0.95), ([[]], 0.95), ([[1]], 1.0), ([[1]], 0.0)])
def test_bad_input(data, level):
    with pytest.raises(InputError):
        rate_interval(data, level)


def test_difference_interval_covers_the_true_difference_near_the_level():
    """Two independent samples of verdicts at 0.55 and 0.45: the 95 % interval of the difference
    misses 0.10 about 5 % of the time (between 1 % and 11 % of 200 with probability > 0.99)."""
    rng = np.random.default_rng(4)
    misses = 0
    for _ in range(200):
        a, b = rng.random(150) < 0.55, rng.random(120) < 0.45
        low, high = difference_interval(a, b, resamples=500)
        assert low <= a.mean() - b.mean() <= high
        misses += not low <= 0.10 <= high
    assert 2 <= misses <= 22
    assert difference_interval([1, 1, 1], [0, 0]) == (1.0, 1.0)
    with pytest.raises(InputError):
        difference_interval([1], [0, 1])
