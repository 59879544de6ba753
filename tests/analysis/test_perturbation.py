"""Perturbation growth against the log-norm bound exp(∫μ dτ)."""

from __future__ import annotations

import math

import pytest
import torch

from steerflow.analysis.perturbation import (cumulative_trapezoid, perturbation_growth,
                                             random_perturbation)
from steerflow.config import ModelConfig
from steerflow.errors import InputError
from steerflow.model.ode_block import ODEBlock

from flow_helpers import random_model


def test_cumulative_trapezoid_is_exact_for_linear_integrands():
    taus = torch.linspace(0, 1, 5, dtype=torch.float64)
    values = torch.stack([3 * taus, 1 - taus], dim=1)  # (K, 2)
    expected = torch.stack([1.5 * taus ** 2, taus - 0.5 * taus ** 2], dim=1)
    torch.testing.assert_close(cumulative_trapezoid(values, taus), expected)


@pytest.mark.parametrize("field,seed", [("mlp", 0), ("mlp", 1), ("block", 0), ("contractive", 0)])
def test_bound_holds_on_random_small_models(field, seed):
    model = random_model(field, seed=seed, scale=0.3)
    h0 = torch.randn(1, 2 if field == "block" else 4, 32, dtype=torch.float64)
    u = torch.full((1, 1), float(seed) - 0.5, dtype=torch.float64)
    # iters = n (32 per token, 2·32 per sequence): μ exact, so only the O(eps) linearisation
    # and O(Δτ²) quadrature errors separate the measurement from Grönwall's bound
    r = perturbation_growth(model.ode, h0, u, grid_points=9, steps=32, lanczos_iters=64)
    assert r.violations() == 0
    assert r.max_ratio_over_bound <= 1.0 + 1e-3
    torch.testing.assert_close(r.ratio[0], torch.ones_like(r.ratio[0]))
    if field == "contractive":  # μ < 0 everywhere: every perturbation shrinks
        assert bool((r.mu < 0).all()) and bool((r.ratio[-1] < 1).all())


def test_bound_is_attained_for_a_symmetric_linear_field():
    # dH/dτ = A H with A symmetric: δ along the top eigenvector grows exactly like exp(λ_max τ),
    # which is exp(∫μ); a wrong bound (or a wrong ratio) breaks the equality
    class Linear(torch.nn.Module):
        position_wise = True

        def __init__(self, a):
            super().__init__()
            self.a = a

        def forward(self, tau, h, u, cache=None):
            return h @ self.a.T

    d = 6
    lam = torch.tensor([-1.0, -0.5, 0.0, 0.2, 0.4, 0.7], dtype=torch.float64)
    block = ODEBlock(ModelConfig.from_name("tiny", n_embd=d, n_head=1, alpha_init=1.0)).double()
    block.field = Linear(torch.diag(lam))
    h0 = torch.zeros(1, 1, d, dtype=torch.float64)
    h0[..., -1] = 1.0  # H0 along the top eigenvector; δ random but bounded by it
    r = perturbation_growth(block, h0, torch.zeros(1, 1, dtype=torch.float64), grid_points=5,
                            steps=64, lanczos_iters=d)
    torch.testing.assert_close(r.mu, torch.full_like(r.mu, 0.7))
    torch.testing.assert_close(r.bound[-1], torch.full_like(r.bound[-1], math.exp(0.7)))
    assert r.violations() == 0 and float(r.ratio[-1].max()) <= math.exp(0.7)


def test_random_perturbation_has_the_requested_size():
    h0 = torch.randn(2, 3, 8, dtype=torch.float64)
    per_token = random_perturbation(h0, 1e-3, "token")
    torch.testing.assert_close(per_token.norm(dim=-1), 1e-3 * h0.norm(dim=-1))
    per_seq = random_perturbation(h0, 1e-3, "sequence")
    torch.testing.assert_close(per_seq.flatten(1).norm(dim=1), 1e-3 * h0.flatten(1).norm(dim=1))


def test_bad_grid_and_eps_are_rejected():
    model = random_model("mlp")
    h0 = torch.randn(1, 2, 32, dtype=torch.float64)
    u = torch.zeros(1, 1, dtype=torch.float64)
    with pytest.raises(InputError, match="divide"):
        perturbation_growth(model.ode, h0, u, grid_points=6, steps=32)
    with pytest.raises(InputError, match="eps"):
        perturbation_growth(model.ode, h0, u, eps=2.0)
