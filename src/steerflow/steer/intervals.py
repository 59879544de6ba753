"""Confidence intervals for positive rates: a cluster bootstrap over prompts, and the difference of
two independent rates.

The samples of one prompt are not independent (they share the prompt), so the rate's uncertainty
comes from resampling **prompts**: each prompt contributes the mean judgement of its samples, and
the interval is scipy's bootstrap (BCa, Efron 1987) of the mean of those per-prompt rates. With the
same number of samples per prompt, that mean is the overall positive rate.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from steerflow.errors import InputError

#: resamples per interval; the percentile error of a 95 % interval is then well below 0.01
RESAMPLES = 2000


def rate_interval(per_prompt: Sequence[Sequence[float]], level: float = 0.95, seed: int = 0,
                  resamples: int = RESAMPLES) -> tuple[float, float]:
    """The ``level`` interval ``(low, high)`` of the positive rate from per-prompt judgements
    (``per_prompt[i]`` = the 0/1 verdicts, or scores in [0, 1], of prompt i's samples)."""
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level!r}")
    rates = np.array([float(np.mean(v)) for v in per_prompt if len(v)], dtype=float)
    if rates.size == 0:
        raise InputError("no judged samples to build an interval from")
    if rates.size == 1 or np.all(rates == rates[0]):
        return float(rates.mean()), float(rates.mean())  # no spread: the bootstrap is degenerate
    from scipy.stats import bootstrap

    result = bootstrap((rates,), np.mean, confidence_level=level, n_resamples=resamples,
                       method="BCa", random_state=np.random.default_rng(seed))
    low, high = result.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):  # BCa undefined (e.g. a near-constant sample)
        result = bootstrap((rates,), np.mean, confidence_level=level, n_resamples=resamples,
                           method="percentile", random_state=np.random.default_rng(seed))
        low, high = result.confidence_interval
    return float(low), float(high)


def difference_interval(high: Sequence[float], low: Sequence[float], level: float = 0.95,
                        seed: int = 0, resamples: int = RESAMPLES) -> tuple[float, float]:
    """The ``level`` interval of ``mean(high) − mean(low)`` for two independent samples of 0/1
    verdicts (or scores): scipy's bootstrap resampling each sample on its own (BCa, else the
    percentile interval where BCa is undefined)."""
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level!r}")
    a, b = np.asarray(high, dtype=float), np.asarray(low, dtype=float)
    if a.size < 2 or b.size < 2:
        raise InputError("a difference interval needs at least two verdicts on each side")
    if np.all(a == a[0]) and np.all(b == b[0]):
        return float(a[0] - b[0]), float(a[0] - b[0])  # no spread: the bootstrap is degenerate
    from scipy.stats import bootstrap

    def statistic(x, y, axis=-1):
        return x.mean(axis=axis) - y.mean(axis=axis)

    for method in ("BCa", "percentile"):
        result = bootstrap((a, b), statistic, confidence_level=level, n_resamples=resamples,
                           method=method, random_state=np.random.default_rng(seed))
        low_end, high_end = result.confidence_interval
        if np.isfinite(low_end) and np.isfinite(high_end):
            break
    return float(low_end), float(high_end)
