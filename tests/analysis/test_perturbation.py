"""Perturbation growth against the log-norm bound exp(∫μ dτ)."""

from __future__ import annotations

import math

import pytest
import torch

from steerflow.analysis.discrete import Update, branch_log_norms
from steerflow.analysis.perturbation import (cumulative_trapezoid, perturbation_growth,
                                             random_perturbation, stack_perturbation_growth)
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


def _linear_stack(maps: list[torch.Tensor], x: torch.Tensor) -> list[Update]:
    """The updates of ``x_{l+1} = x_l + x_l A_lᵀ`` (each ``A_l`` acts on every token)."""
    updates = []
    for a in maps:
        branch = lambda z, a=a: z @ a.T  # noqa: E731
        updates.append(Update(f"block {len(updates)}", x, branch(x), branch))
        x = x + branch(x)
    return updates


def test_stack_growth_of_a_contraction_is_exact_and_under_the_bound():
    # f_l(x) = −c_l x: δ shrinks by (1 − c_l) per layer exactly, μ_l = −c_l, 1 − c ≤ exp(−c)
    cs = [0.1, 0.3, 0.05]
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    updates = _linear_stack([-c * torch.eye(4, dtype=torch.float64) for c in cs], x)
    r = stack_perturbation_growth(updates, branch_log_norms(updates, iters=12))
    shrink = torch.tensor([1.0, 0.9, 0.9 * 0.7, 0.9 * 0.7 * 0.95], dtype=torch.float64)
    torch.testing.assert_close(r.ratio, shrink[:, None].expand(4, 2))
    torch.testing.assert_close(r.mu, -torch.tensor(cs, dtype=torch.float64)[:, None].expand(3, 2))
    torch.testing.assert_close(r.bound[-1], torch.full((2,), math.exp(-sum(cs)),
                                                       dtype=torch.float64))
    assert r.taus.tolist() == [0, 1, 2, 3] and r.violations() == 0


def test_stack_growth_exceeds_exp_sum_mu_by_the_second_order_term():
    # f(x) = θ R x with R a rotation generator (R² = −I): μ = 0 but ‖(I + θR) δ‖ = √(1 + θ²)‖δ‖,
    # the O(‖J‖²) gap between a unit Euler step and the flow: every layer is a violation
    theta, layers = 0.5, 3
    rot = torch.zeros(4, 4, dtype=torch.float64)
    rot[0, 1], rot[1, 0], rot[2, 3], rot[3, 2] = -1.0, 1.0, -1.0, 1.0
    updates = _linear_stack([theta * rot] * layers, torch.randn(1, 2, 4, dtype=torch.float64))
    r = stack_perturbation_growth(updates, branch_log_norms(updates, iters=8), tolerance=1e-2)
    assert float(r.mu.abs().max()) < 1e-12 and torch.equal(r.bound, torch.ones_like(r.bound))
    growth = (1 + theta ** 2) ** (0.5 * torch.arange(layers + 1, dtype=torch.float64))
    torch.testing.assert_close(r.ratio[:, 0], growth)
    assert r.violations() == layers


def test_stack_growth_needs_a_branch_and_an_estimate_per_update():
    x = torch.randn(1, 2, 4, dtype=torch.float64)
    updates = _linear_stack([torch.eye(4, dtype=torch.float64)], x)
    with pytest.raises(InputError, match="branch"):
        stack_perturbation_growth(updates, [])
