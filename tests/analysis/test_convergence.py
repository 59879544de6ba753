"""Convergence-order fits on problems with known solutions and on the real solver path."""

from __future__ import annotations

import math

import pytest
import torch

from steerflow.analysis.convergence import (EXPECTED_ORDER, convergence_study, fit_order,
                                            ode_block_convergence, roundoff_floor)
from steerflow.errors import InputError
from steerflow.model.ode_block import integrate_fixed

from flow_helpers import random_model

# The fitted slope of a p-th order method approaches −p as N grows; over N = 8..64 the
# remaining higher-order terms move it by well under 0.3 on these smooth problems.
ORDER_TOL = 0.3

Y0 = torch.linspace(0.2, 1.5, 7, dtype=torch.float64)
PROBLEMS = {
    # dy/dτ = −2τy → y = y0·exp(−τ²): non-autonomous, so the τ of every stage matters
    "gaussian": (lambda t, y: -2.0 * t * y, Y0 * math.exp(-1.0)),
    # dy/dτ = 0.3y² → y = y0 / (1 − 0.3·y0): nonlinear
    "riccati": (lambda t, y: 0.3 * y * y, Y0 / (1.0 - 0.3 * Y0)),
}


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_fitted_orders_on_problems_with_known_solutions(name):
    f, exact = PROBLEMS[name]
    study = convergence_study(lambda spec: integrate_fixed(f, Y0, spec.method, spec.steps)[-1],
                              exact, 1.0, roundoff_floor(exact))
    for method, order in EXPECTED_ORDER.items():
        slope = study.fits[method].slope
        assert slope is not None and abs(slope + order) < ORDER_TOL, (method, slope)


def test_fit_excludes_the_floor_and_uses_the_finest_points():
    steps = [1, 2, 4, 8, 16, 32, 64]
    # exact N^-4 down to a floor of 1e-6 (reached at N = 32) where the errors stop decreasing
    errors = [max(n ** -4.0, 1e-6) for n in steps]
    fit = fit_order("rk4", steps, errors, floor=2e-6, window=3)
    assert fit.used_steps == [4, 8, 16]
    assert fit.slope == pytest.approx(-4.0, abs=1e-9)
    assert fit.local_slopes[-1] == pytest.approx(0.0, abs=1e-9)  # the floor, seen but not fitted
    starved = fit_order("rk4", steps, errors, floor=0.1)  # only N = 1 (error 1) is above it
    assert starved.slope is None and "floor" in starved.reason


def test_fit_rejects_bad_input():
    with pytest.raises(InputError):
        fit_order("euler", [1, 2], [1.0])
    with pytest.raises(InputError):
        convergence_study(lambda s: Y0, Y0, 1.0, 0.0, methods=["heun"])
    with pytest.raises(InputError):
        convergence_study(lambda s: Y0, Y0, 1.0, 0.0, steps=[4, 4])


def test_ode_block_orders_against_dopri8_reference():
    # the model's own solver path (fused fixed-step loop) against torchdiffeq's dopri8 in float64
    model = random_model("mlp", seed=2, scale=0.3)
    h0 = torch.randn(1, 6, 32, dtype=torch.float64)
    study = ode_block_convergence(model.ode, h0, torch.ones(1, 1, dtype=torch.float64),
                                  steps=[2, 4, 8, 16, 32])
    assert study.info["reference_gap"] < 1e-9  # dopri8 at 1e-12 vs 1e-11 agree closely
    for method, order in EXPECTED_ORDER.items():
        assert abs(study.fits[method].slope + order) < ORDER_TOL, (method, study.fits[method])


def test_dopri8_reference_meets_its_tolerance():
    # dH/dτ = A H has H(1) = exp(A) H(0). torchdiffeq's dopri8 interpolates its output with a
    # dense output that is only ~1e-7 accurate; ODEBlock makes it land on τ = 1 instead, so the
    # reference is as accurate as its steps (≈ rtol = 1e-12 here; 1e-10 leaves margin)
    from steerflow.config import ModelConfig, SolverSpec
    from steerflow.model.ode_block import ODEBlock

    class Linear(torch.nn.Module):
        position_wise = True

        def __init__(self, a):
            super().__init__()
            self.a = a

        def forward(self, tau, h, u, cache=None):
            return h @ self.a.T

    torch.manual_seed(0)
    a = 0.8 * torch.randn(5, 5, dtype=torch.float64)
    block = ODEBlock(ModelConfig.from_name("tiny", n_embd=5, n_head=1, alpha_init=1.0)).double()
    block.field = Linear(a)
    h0 = torch.randn(1, 3, 5, dtype=torch.float64)
    spec = SolverSpec(method="dopri8", steps=None, rtol=1e-12, atol=1e-14, max_nfe=100_000)
    with torch.no_grad():
        end = block.solve(h0, torch.zeros(1, 1, dtype=torch.float64), spec).final
    exact = h0 @ torch.linalg.matrix_exp(a).T
    assert float((end - exact).norm() / exact.norm()) < 1e-10
