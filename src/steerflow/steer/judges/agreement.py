"""Agreement between two judges' binary labels: raw agreement and Cohen's kappa."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from steerflow.errors import InputError


def _binary_pair(
    labels_a: Sequence[bool] | np.ndarray, labels_b: Sequence[bool] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(labels_a), np.asarray(labels_b)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise InputError(
            f"labels must be two non-empty 1-D arrays of equal length, got {a.shape} and {b.shape}"
        )
    if not (np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all()):
        raise InputError("labels must be binary (bool or 0/1)")
    return a.astype(bool), b.astype(bool)


def judge_agreement(
    labels_a: Sequence[bool] | np.ndarray, labels_b: Sequence[bool] | np.ndarray
) -> float:
    """Fraction of items on which two judges' binary labels are equal."""
    a, b = _binary_pair(labels_a, labels_b)
    return float(np.mean(a == b))


def cohens_kappa(
    labels_a: Sequence[bool] | np.ndarray, labels_b: Sequence[bool] | np.ndarray
) -> float:
    """Cohen's kappa ``(p_o - p_e) / (1 - p_e)`` of two binary labelings.

    NaN when chance agreement ``p_e`` is 1 (both judges give one and the same label to every
    item), where kappa is undefined.
    """
    a, b = _binary_pair(labels_a, labels_b)
    p_o = float(np.mean(a == b))
    pa, pb = float(np.mean(a)), float(np.mean(b))
    p_e = pa * pb + (1.0 - pa) * (1.0 - pb)
    return math.nan if p_e == 1.0 else (p_o - p_e) / (1.0 - p_e)
