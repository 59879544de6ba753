"""Agreement between judges: raw agreement and Cohen's kappa."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steerflow.errors import InputError
from steerflow.steer.judges.agreement import cohens_kappa, judge_agreement


def test_agreement_and_kappa_hand_computed() -> None:
    a = [1, 1, 0, 0, 1, 0, 1, 1]
    b = [1, 0, 0, 0, 1, 1, 1, 1]
    assert judge_agreement(a, b) == pytest.approx(6 / 8)
    # p_o = 0.75; p_a(1) = 5/8, p_b(1) = 5/8; p_e = 25/64 + 9/64 = 34/64
    assert cohens_kappa(a, b) == pytest.approx((0.75 - 34 / 64) / (1 - 34 / 64))
    assert cohens_kappa(a, a) == 1.0
    assert cohens_kappa([1, 0], [0, 1]) == -1.0
    assert np.isnan(cohens_kappa([1, 1], [1, 1]))


@settings(deadline=None)  # the first example imports scikit-learn
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=40))
def test_kappa_matches_sklearn(pairs: list[tuple[bool, bool]]) -> None:
    from sklearn.metrics import cohen_kappa_score

    a, b = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    ours = cohens_kappa(a, b)
    if np.isnan(ours):
        assert (a == a[0]).all() and (b == a[0]).all()
    else:
        assert ours == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


@pytest.mark.parametrize("a, b", [([1, 0], [1]), ([], []), ([1, 2], [1, 0]), ([[1]], [[1]])])
def test_agreement_rejects_bad_labels(a: list, b: list) -> None:
    with pytest.raises(InputError):
        judge_agreement(a, b)
