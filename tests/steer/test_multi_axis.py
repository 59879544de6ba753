"""The multi-axis contrast teacher and its distillation rows (:mod:`steerflow.steer.multi_axis`),
the teacher spec (:mod:`steerflow.train.teacher_spec`) and the axis names of ``ModelConfig``.

The teacher sums one DExperts contrast per axis, so with every axis but one at 0 it is the
single-axis teacher of that axis exactly (the same float operations, then exact zeros added).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from steerflow.config import ModelConfig
from steerflow.errors import ConfigError
from steerflow.steer.distill import ContrastTeacher
from steerflow.steer.multi_axis import (SOLO_SHARE, MultiAxisDistillSource, MultiContrastTeacher,
                                        fisher_orthogonalize)
from steerflow.train.teacher_spec import ExpertPair, is_multi_axis, parse_teacher_axes


@pytest.fixture
def models(make_tiny_model):
    """A base and two expert pairs: tiny hybrids with control_dim 2 and different weights."""
    return [make_tiny_model(seed=s, control_dim=2) for s in range(5)]


def _x(rows: int = 3) -> torch.Tensor:
    return torch.randint(0, 512, (rows, 9), generator=torch.Generator().manual_seed(0))


def _u(*values: float, rows: int = 3) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).repeat(rows, 1)  # (rows, c)


def _teachers(models):
    base, p0, m0, p1, m1 = models
    multi = MultiContrastTeacher.dexperts(base, [(p0, m0), (p1, m1)], alphas=(1.5, 0.7),
                                          axes=(0, 1))
    single = [ContrastTeacher.dexperts(base, p0, m0, 1.5, axis=0),
              ContrastTeacher.dexperts(base, p1, m1, 0.7, axis=1)]
    return multi, single


def test_one_axis_of_the_multi_axis_teacher_is_the_single_axis_teacher_exactly(models):
    multi, (first, second) = _teachers(models)
    x = _x()
    for value in (-1.0, -0.3, 0.8):
        assert torch.equal(multi.logits(x, _u(value, 0.0)), first.logits(x, _u(value, 0.0)))
        assert torch.equal(multi.logits(x, _u(0.0, value)), second.logits(x, _u(0.0, value)))
    with torch.no_grad():
        base = models[0](x)[0]
    assert torch.equal(multi.logits(x, _u(0.0, 0.0)), base)


def test_the_contrasts_add(models):
    multi, _ = _teachers(models)
    x = _x()
    with torch.no_grad():
        z = [m(x)[0] for m in models]  # base, p0, m0, p1, m1: (B, T, V) each
    expected = z[0] + 0.5 * 1.5 * (z[1] - z[2]) - 1.0 * 0.7 * (z[3] - z[4])
    # two float32 sums in another order: a few ulps of |z| (~10)
    torch.testing.assert_close(multi.logits(x, _u(0.5, -1.0)), expected, rtol=0, atol=1e-5)
    rows = torch.tensor([[0.5, -1.0], [1.0, 0.0], [0.0, 0.0]])  # each row its own u
    per_row = multi.logits(x, rows)
    for i in range(3):
        torch.testing.assert_close(per_row[i], multi.logits(x[i:i + 1], rows[i:i + 1])[0],
                                   rtol=0, atol=1e-5)


def test_on_one_axis_the_teacher_samples_what_the_single_axis_teacher_samples(models):
    multi, (first, _) = _teachers(models)
    idx = _x(rows=2)[:, :4]
    u = torch.tensor([[0.9, 0.0], [-0.6, 0.0]])
    drawn = [t.sample(idx, u, 5, torch.Generator().manual_seed(7)) for t in (multi, first)]
    assert drawn[0].shape == (2, 9) and torch.equal(drawn[0], drawn[1])


def test_on_the_nucleus_the_teacher_cuts_only_what_the_base_finds_implausible(models):
    base, p0, m0, p1, m1 = models
    pairs = [(p0, m0), (p1, m1)]
    full = MultiContrastTeacher(base, pairs, alphas=(1.0, 1.0), axes=(0, 1))
    cut = MultiContrastTeacher(base, pairs, alphas=(1.0, 1.0), axes=(0, 1), top_p=0.5)
    x, u = _x(), _u(0.7, -0.4)
    z, zc = full.logits(x, u), cut.logits(x, u)  # (B, T, V)
    with torch.no_grad():
        p = models[0](x)[0].softmax(-1)  # the base's next-token distribution
    out = torch.isinf(zc)
    assert torch.equal(zc[~out], z[~out])
    kept_mass = (p * ~out).sum(-1)  # the nucleus: the fewest top tokens with mass >= 0.5
    assert bool((kept_mass >= 0.5 - 1e-6).all()) and bool(out.any(-1).all())
    with pytest.raises(ConfigError, match="top_p"):
        MultiContrastTeacher(base, pairs, alphas=(1.0, 1.0), axes=(0, 1), top_p=0.0)


def test_the_teacher_refuses_mismatched_axes(models):
    base, p0, m0, *_ = models
    with pytest.raises(ConfigError, match="one alpha and one axis"):
        MultiContrastTeacher(base, [(p0, m0)], alphas=(1.0, 2.0), axes=(0,))
    with pytest.raises(ConfigError, match="distinct"):
        MultiContrastTeacher(base, [(p0, m0), (p0, m0)], alphas=(1.0, 1.0), axes=(1, 1))
    teacher = MultiContrastTeacher(base, [(p0, m0)], alphas=(1.0,), axes=(3,))
    with pytest.raises(ConfigError, match="u has only 2"):
        teacher.logits(_x(), _u(1.0, 0.0))


# ----------------------------------------------------------------------------- orthogonal
def _cov(a: torch.Tensor, b: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Cov_p(a, b) over the last dimension, computed the long way (float64 inputs)."""
    ea, eb = (p * a).sum(-1), (p * b).sum(-1)
    return (p * (a - ea[..., None]) * (b - eb[..., None])).sum(-1)


def test_fisher_orthogonal_shifts_have_zero_covariance_and_keep_the_first_shift():
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(4, 5, 50, generator=gen, dtype=torch.float64)
    p = z.softmax(-1)
    d = [torch.randn(4, 5, 50, generator=gen, dtype=torch.float64) for _ in range(3)]
    d[1] = d[1] + 0.8 * d[0]  # correlated by construction
    out = fisher_orthogonalize(d, p)
    assert torch.equal(out[0], d[0])
    assert bool((_cov(d[1], d[0], p).abs() > 1e-3).all())
    for i in range(3):
        for j in range(i):
            torch.testing.assert_close(_cov(out[i], out[j], p), torch.zeros(4, 5, dtype=torch.float64),
                                       rtol=0, atol=1e-12)
    # a shift already orthogonal is returned unchanged (up to rounding)
    again = fisher_orthogonalize([out[0], out[1]], p)
    torch.testing.assert_close(again[1], out[1], rtol=0, atol=1e-12)


def test_moving_along_an_orthogonal_shift_leaves_the_other_expectation_stationary():
    """d/dt E_softmax(z + t a)[b] = Cov_p(a, b) at t = 0: a central difference, float64."""
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(40, generator=gen, dtype=torch.float64)
    s = torch.randn(40, generator=gen, dtype=torch.float64)  # the first axis's shift
    r = 0.6 * s + torch.randn(40, generator=gen, dtype=torch.float64)  # the second's, tied to it
    _, r_orth = fisher_orthogonalize([s, r], z.softmax(-1))

    def slope(a: torch.Tensor, b: torch.Tensor, h: float = 1e-5) -> float:
        mean = lambda t: float(((z + t * a).softmax(-1) * b).sum())  # noqa: E731
        return (mean(h) - mean(-h)) / (2 * h)

    assert abs(slope(r, s) - float(_cov(r, s, z.softmax(-1)))) < 1e-7
    assert abs(slope(r, s)) > 0.05
    assert abs(slope(r_orth, s)) < 1e-8 and abs(slope(s, r_orth)) < 1e-8


def test_off_the_nucleus_and_on_a_one_token_nucleus_nothing_is_removed():
    p = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]], dtype=torch.float64)
    s = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, -1.0, 7.0, 0.0]], dtype=torch.float64)
    r = torch.tensor([[4.0, 3.0, 2.0, 1.0], [2.0, 0.0, -5.0, 9.0]], dtype=torch.float64)
    _, r_orth = fisher_orthogonalize([s, r], p)
    assert torch.equal(r_orth[0], r[0])  # Var_p(s) = 0: one token, nothing to remove
    # second row: Var_p(s) = 1, Cov_p(r, s) = 1, so r − s (entries where p = 0 follow along)
    torch.testing.assert_close(r_orth[1], r[1] - s[1], rtol=0, atol=1e-12)


def test_the_orthogonal_teacher_keeps_the_first_axis_and_decorrelates_the_second(models):
    base, p0, m0, p1, m1 = models
    pairs = [(p0, m0), (p1, m1)]
    plain = MultiContrastTeacher(base, pairs, alphas=(1.5, 0.7), axes=(0, 1), top_p=0.8)
    orth = MultiContrastTeacher(base, pairs, alphas=(1.5, 0.7), axes=(0, 1), top_p=0.8,
                                orthogonal=True)
    assert orth.describe()["orthogonal"] and not plain.describe()["orthogonal"]
    x = _x()
    for value in (-1.0, 0.4):  # the first axis alone: the plain teacher, bit for bit
        assert torch.equal(orth.logits(x, _u(value, 0.0)), plain.logits(x, _u(value, 0.0)))
    with torch.no_grad():
        z = [m(x)[0].double() for m in models]
    kept = torch.isfinite(plain.logits(x, _u(0.0, 0.0)))  # the base's nucleus
    p = torch.where(kept, z[0], float("-inf")).softmax(-1)
    d_s = z[1] - z[2]
    shift = (orth.logits(x, _u(0.0, 1.0)).double() - z[0]) / 0.7  # the second axis's shift
    shift = torch.where(kept, shift, 0.0)
    plain_shift = torch.where(kept, z[3] - z[4], 0.0)
    tied = float(_cov(plain_shift, d_s, p).abs().max())
    assert tied > 1e-4
    assert float(_cov(shift, d_s, p).abs().max()) < 1e-3 * tied  # float32 logits
    # sampling uses the same shifts: on the first axis alone, the same tokens as the plain teacher
    idx = _x(rows=2)[:, :4]
    u = torch.tensor([[0.9, 0.0], [-0.6, 0.0]])
    drawn = [t.sample(idx, u, 5, torch.Generator().manual_seed(7)) for t in (orth, plain)]
    assert torch.equal(drawn[0], drawn[1])


# ----------------------------------------------------------------------------- the rows' u
def _source(control_dim: int = 3, axes=(0, 1), seed: int = 5) -> MultiAxisDistillSource:
    lm = SimpleNamespace(block_size=16)
    return MultiAxisDistillSource(lm, [], None, seed, 0.0, 4, control_dim, axes=axes)


def test_rows_draw_each_axis_independently_and_some_move_one_axis_alone():
    source = _source()
    u = torch.cat([source.controls(step, 256) for step in range(8)])  # (2048, 3)
    assert torch.equal(source.controls(3, 256), source.controls(3, 256))  # a function of the step
    assert not torch.equal(source.controls(3, 256), source.controls(4, 256))
    assert bool((u[:, 2] == 0).all()) and bool((u.abs() <= 1).all())
    moving = (u[:, :2] != 0).sum(dim=1)
    assert set(moving.tolist()) <= {1, 2}
    alone = (moving == 1).float()
    assert abs(float(alone.mean()) - SOLO_SHARE) < 0.05  # 2048 rows: 4.5 standard errors
    for axis in (0, 1):  # each axis alone about equally often, uniform on [-1, 1] when it moves
        solo = u[(moving == 1) & (u[:, axis] != 0), axis]
        assert abs(len(solo) / float(alone.sum()) - 0.5) < 0.06
        assert abs(float(u[u[:, axis] != 0, axis].mean())) < 0.06
    both = u[moving == 2, :2]
    assert abs(float(torch.corrcoef(both.T)[0, 1])) < 0.1  # independent draws


def test_the_rows_split_across_ranks_and_need_the_axes_in_control_dim():
    with pytest.raises(ConfigError, match="control_dim is 2"):
        _source(control_dim=2, axes=(1, 2))
    source = _source(axes=(1, 2))
    u = source.controls(0, 64)
    assert bool((u[:, 0] == 0).all()) and bool((u[:, 1:] != 0).any(dim=1).all())


# ----------------------------------------------------------------------------- the spec
def test_teacher_specs_parse_into_one_pair_per_axis():
    assert parse_teacher_axes("guidance") == ("guidance", ())
    assert parse_teacher_axes("dexperts:a,b") == ("dexperts", (ExpertPair("a", "b"),))
    kind, pairs = parse_teacher_axes("dexperts:a,b@1.5;c,d")
    assert pairs == (ExpertPair("a", "b", 1.5), ExpertPair("c", "d"))
    assert not is_multi_axis("dexperts:a,b") and not is_multi_axis("guidance")
    assert is_multi_axis("dexperts:a,b;c,d") and is_multi_axis("dexperts:a,b@2")


@pytest.mark.parametrize("spec, needle", [
    ("dexperts:a,b;c", "is not POS_DIR,NEG_DIR"),
    ("dexperts:a,b;", "is not POS_DIR,NEG_DIR"),
    ("dexperts:a,b@x", "is not a number"),
    ("dexperts:a,b@-1", ">= 0"),
    ("experts:a,b", "distill_teacher must be"),
])
def test_bad_teacher_specs_say_what_to_write(spec, needle, tmp_path):
    from steerflow.train import TrainConfig

    with pytest.raises(ConfigError, match=needle):
        parse_teacher_axes(spec)
    with pytest.raises(ConfigError, match=needle):
        TrainConfig(out=str(tmp_path / "run"), config="tiny", task="distill",
                    init_from=str(tmp_path), distill_teacher=spec)


# ----------------------------------------------------------------------------- axis names
def test_axis_names_are_checked_and_saved(tmp_path):
    config = ModelConfig.from_name("tiny", control_dim=2, control_axes=("sentiment", "register"))
    config.to_json(tmp_path / "config.json")
    assert ModelConfig.from_json(tmp_path / "config.json") == config
    data = json.loads((tmp_path / "config.json").read_text())
    del data["control_axes"]  # a checkpoint from before the field
    assert ModelConfig.from_dict(data).control_axes == ()
    with pytest.raises(ConfigError, match="one name per axis"):
        ModelConfig.from_name("tiny", control_dim=2, control_axes=("sentiment",))
    with pytest.raises(ConfigError, match="distinct"):
        ModelConfig.from_name("tiny", control_dim=2, control_axes=("a", "a"))
    with pytest.raises(ConfigError, match="control_axes must be"):
        ModelConfig.from_name("tiny", control_axes=("a", 1))
