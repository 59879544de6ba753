"""Equivalence of the performance changes made for issue 8 with the code they replaced."""

import math

import pytest
import torch

from steerflow.errors import InputError
from steerflow.model.gpt import SteerFlowGPT
from steerflow.model.ode_block import _all_finite

BIG = torch.finfo(torch.float32).max


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, BIG, -BIG, 0.0, 1e-45])
@pytest.mark.parametrize("where", [0, 17, -1])
def test_one_pass_finite_check_equals_isfinite_all(value, where):
    x = torch.randn(3, 5, 7)
    x.view(-1)[where] = value
    assert _all_finite(x) == bool(torch.isfinite(x).all())
    x.view(-1)[3] = BIG        # extremes that would overflow hi - lo stay "finite"
    x.view(-1)[4] = -BIG
    assert _all_finite(x) == bool(torch.isfinite(x).all())


def test_one_pass_finite_check_on_empty_and_float64():
    assert _all_finite(torch.empty(0, 4)) is True
    assert _all_finite(torch.tensor([1.0, math.nan], dtype=torch.float64)) is False


def test_token_range_check_reports_min_and_max(tiny_config):
    model = SteerFlowGPT(tiny_config)
    for bad, text in ((torch.tensor([[3, -2, 7]]), "got min -2, max 7"),
                      (torch.tensor([[3, 512, 7]], dtype=torch.int32), "got min 3, max 512")):
        with pytest.raises(InputError, match=text):
            model(bad)
    logits, _ = model(torch.tensor([[0, 511]]))
    assert logits.shape == (1, 2, 512)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_fused_backprop_gradients_equal_torchdiffeq(tiny_config, method):
    """Direct backprop through the fused loop (u's term computed once per solve, its gradient
    accumulated over the evaluations) equals backprop through torchdiffeq's odeint."""
    from steerflow.config import SolverSpec
    from steerflow.model.ode_block import ODEBlock

    torch.manual_seed(0)
    block = ODEBlock(tiny_config).double()
    with torch.no_grad():
        block.field.fc_out.weight.normal_(std=0.3)
        block.alpha.fill_(0.7)
    h = torch.randn(2, 6, 32, dtype=torch.float64)
    u = torch.tensor([[0.5], [-1.5]], dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 6, 32, dtype=torch.float64)

    def grads(fused):
        block.zero_grad(set_to_none=True)
        u.grad = None
        spec = SolverSpec(method=method, steps=3, adjoint=False, fused=fused)
        (block(h, u, spec) * g).sum().backward()
        return [p.grad.clone() for p in block.parameters()] + [u.grad.clone()]

    # same arithmetic in float64; torchdiffeq's grid times differ by rounding (~1e-16)
    for a, b in zip(grads(True), grads(False)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
