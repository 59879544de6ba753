"""The depth-block field: weights splined in τ through knot blocks (interpolating, exact on
lines, C²), a one-step-per-knot Euler solve that is the knot blocks in turn, u through
zero-initialised weights, KV-cache decoding equal to full recompute, and GPT-2's GELU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from steerflow.config import ModelConfig, SolverSpec
from steerflow.model.depth_field import spline_coefficients, spline_curvatures
from steerflow.model.gpt import SteerFlowGPT

from .cache_check import assert_cached_decoding_equals_recompute

pytestmark = pytest.mark.usefixtures("single_thread")
D = 32  # tiny preset width


def _spline(values: list[float]):
    curv = spline_curvatures(len(values))
    return lambda x: sum(b * v for b, v in zip(spline_coefficients(x, curv), values))


@pytest.mark.parametrize("knots", [1, 2, 3, 5, 8])
def test_spline_weights_interpolate_sum_to_one_and_reproduce_lines(knots):
    curv = spline_curvatures(knots)
    for k in range(knots):  # at a knot: that knot alone, exactly
        assert spline_coefficients(float(k), curv) == [float(j == k) for j in range(knots)]
    for x in torch.linspace(-0.5, knots - 0.5, 23).tolist():
        b = spline_coefficients(x, curv)
        assert abs(sum(b) - 1.0) < 1e-12  # constants stay constant
        if knots > 1:  # a natural cubic spline through points on a line is that line
            assert abs(sum(j * bj for j, bj in enumerate(b)) - x) < 1e-12


def test_spline_is_twice_continuously_differentiable_at_the_knots():
    values = [0.3, -1.2, 2.0, 0.5, 1.1]
    s = _spline(values)
    h = 1e-3
    for x in (1.0, 2.0, 3.0, 4.0):  # interior knots and the last one (linear beyond it)
        left = (s(x) - 2 * s(x - h) + s(x - 2 * h)) / h ** 2
        right = (s(x + 2 * h) - 2 * s(x + h) + s(x)) / h ** 2
        # one-sided second differences carry an O(h·|s'''|) error, |s'''| < 60 here
        assert abs(left - right) < 0.1, (x, left, right)
    assert abs((s(4.6) - 2 * s(4.3) + s(4.0)) / 0.09) < 1e-9  # straight past the last knot


def _depth_model(liven, span=(0, 3), alpha: float = 1.0, **overrides) -> SteerFlowGPT:
    torch.manual_seed(0)
    model = SteerFlowGPT(ModelConfig.from_name("tiny", field="depth-block", ode_span=span,
                                               **overrides)).double().eval()
    liven(model, alpha=alpha)  # distinct O(1) weights per knot, u's weights included
    return model


def test_one_euler_step_per_knot_is_the_knot_blocks_in_turn(liven):
    model = _depth_model(liven)
    h = torch.randn(2, 6, D, dtype=torch.float64)  # (B, T, d)
    u0 = model.control(0.0, 2, dtype=torch.float64)
    out = model.ode(h, u0, SolverSpec(method="euler", steps=3))
    expected = h
    for block in model.ode.field.layers:
        expected = block(expected)
    assert (expected - h).abs().max() > 0.5  # three O(1) layers
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)  # float64 rounding


def test_between_two_knots_the_field_is_the_block_with_averaged_weights(liven):
    """K = 2: the natural spline is the straight line, so at τ = 1/4 (x = 1/2) W = (W₀ + W₁)/2."""
    model = _depth_model(liven, span=(1, 3))
    field = model.ode.field
    h = torch.randn(2, 5, D, dtype=torch.float64)
    u0 = torch.zeros(2, 1, 1, dtype=torch.float64)
    knots = [dict(layer.named_parameters()) for layer in field.layers]
    mean = {name: (knots[0][name] + knots[1][name]) / 2 for name in knots[0]}
    block = functional_call(field.layers[0], mean, (h,))
    torch.testing.assert_close(field(0.25, h, u0), 2 * (block - h), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("injection", ["concat", "add"])
def test_u_enters_through_weights_that_start_at_zero(injection):
    torch.manual_seed(0)
    model = SteerFlowGPT(ModelConfig.from_name("tiny", field="depth-block",
                                               injection=injection)).eval()
    idx = torch.randint(0, 512, (2, 7))
    with torch.no_grad():
        assert torch.equal(model(idx, 2.0)[0], model(idx, -2.0)[0])
        path = model.ode.field.u_in if injection == "concat" else model.ode.field.u_proj
        path.linear.weight.normal_()
        assert not torch.equal(model(idx, 2.0)[0], model(idx, -2.0)[0])


@pytest.mark.parametrize("solver", ["euler:2", "rk4:2", "midpoint:3"])
def test_cached_decoding_equals_full_recompute(liven, solver):
    model = _depth_model(liven, span=(1, 3), alpha=0.5).float()
    assert_cached_decoding_equals_recompute(model, solver, steps=6)


def test_a_depth_block_model_from_scratch_starts_depth_independent_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = SteerFlowGPT(ModelConfig.from_name("tiny", field="depth-block")).eval()
    first, second = (dict(layer.named_parameters()) for layer in model.ode.field.layers)
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert "ode.field.layers.1.attn.c_attn.weight" in model.state_dict()
    model.save_pretrained(tmp_path)
    loaded = SteerFlowGPT.from_pretrained(tmp_path)
    idx = torch.randint(0, 512, (2, 9))
    with torch.no_grad():
        assert torch.equal(loaded(idx, 0.5)[0], model(idx, 0.5)[0])


def test_gelu_approximate_tanh_is_gpt2s_gelu_and_the_default_is_exact():
    x = torch.linspace(-4, 4, 101, dtype=torch.float64)
    gpt2 = 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3)))
    tanh = SteerFlowGPT(ModelConfig.from_name("tiny", gelu_approximate="tanh")).blocks[0].mlp.gelu
    torch.testing.assert_close(tanh(x), gpt2, rtol=1e-12, atol=1e-12)
    exact = SteerFlowGPT(ModelConfig.from_name("tiny")).blocks[0].mlp.gelu
    torch.testing.assert_close(exact(x), F.gelu(x), rtol=0, atol=0)
