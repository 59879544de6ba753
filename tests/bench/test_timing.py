"""The timing harness: warm-up, alternating rounds, paired ratios."""

import pytest

from steerflow.bench.timing import Timing, paired_ratio, time_alternating
from steerflow.errors import ConfigError


def test_rounds_alternate_after_warmup():
    calls = []
    t = time_alternating({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                         reps=3, warmup=2)
    assert calls == ["a", "b", "a", "b",        # warm-up, untimed
                     "a", "b", "b", "a", "a", "b"]  # each round flips the order
    assert len(t["a"].samples) == len(t["b"].samples) == 3


def test_paired_ratio_is_the_median_of_per_round_ratios():
    a = Timing((2.0, 4.0, 9.0))
    b = Timing((1.0, 1.0, 3.0))
    r = paired_ratio(a, b)
    assert r.median == 3.0 and r.q1 == 2.5 and r.q3 == 3.5   # ratios 2, 4, 3
    assert paired_ratio(a, b, invert=True).median == pytest.approx(1 / 3)
    assert a.median == 4.0 and a.iqr == pytest.approx(6.5 - 3.0)


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError):
        time_alternating({"a": lambda: None}, reps=0)
    with pytest.raises(ConfigError):
        paired_ratio(Timing((1.0,)), Timing((1.0, 2.0)))


def test_profile_top_ops_name_the_work_and_align_side_by_side():
    import torch

    from steerflow.bench.profile import side_by_side, top_ops

    a = torch.randn(64, 64)
    mm = top_ops(lambda: torch.mm(a, a), reps=2)
    add = top_ops(lambda: a + a, reps=2)
    assert mm[0]["op"] == "aten::mm" and mm[0]["calls"] == 1.0
    rows = {r[0]: r for r in side_by_side(mm, add)}
    assert rows["aten::mm"][3] == "-" and rows["aten::add"][1] == "-"  # each only on its side
