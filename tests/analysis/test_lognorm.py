"""Log-norm estimates μ = λ_max((J + Jᵀ)/2) from Jacobian-vector products."""

from __future__ import annotations

import pytest
import torch

from steerflow.analysis.lognorm import (dense_log_norm, field_function, field_grouping,
                                        field_log_norm, lanczos_max_eig, log_norm,
                                        symmetric_part_matvec)
from steerflow.errors import InputError

from flow_helpers import EXACT, random_model


def _dense_per_token(f, h: torch.Tensor) -> torch.Tensor:
    """μ of each token's d×d diagonal Jacobian block, from dense Jacobians."""
    B, T, _ = h.shape
    out = []
    for b in range(B):
        for t in range(T):
            def g(z, b=b, t=t):
                x = h.clone()
                x[b, t] = z
                return f(x)[b, t]
            out.append(dense_log_norm(g, h[b, t]))
    return torch.stack(out)


def _dense_per_sequence(f, h: torch.Tensor) -> torch.Tensor:
    """μ of each sequence's (T·d)×(T·d) Jacobian, from dense Jacobians."""
    out = []
    for b in range(h.shape[0]):
        def g(z, b=b):
            x = h.clone()
            x[b] = z.reshape(h.shape[1:])
            return f(x)[b].reshape(-1)
        out.append(dense_log_norm(g, h[b].reshape(-1)))
    return torch.stack(out)


@pytest.mark.parametrize("field", ["mlp", "block"])
def test_lanczos_equals_dense_jacobian_on_tiny_field(field):
    model = random_model(field, seed=3, scale=0.3)
    h = torch.randn(2, 3, 32, dtype=torch.float64)
    u = torch.full((2, 1), 0.5, dtype=torch.float64)
    f = field_function(model.ode, 0.4, u)
    grouping = field_grouping(model.ode)
    dense = (_dense_per_token if grouping == "token" else _dense_per_sequence)(f, h)
    est = field_log_norm(model.ode, h, 0.4, u, iters=10_000)  # capped at n: the exact value
    assert est.mu.shape == dense.shape
    torch.testing.assert_close(est.mu, dense, rtol=0, atol=EXACT * dense.abs().max())
    assert float(est.residual.max()) < 1e-8


def test_fewer_iterations_never_overestimate():
    # Courant–Fischer: a Ritz value of a subspace is ≤ λ_max; equality needs the top eigenvector
    model = random_model("block", seed=4, scale=0.3)
    h = torch.randn(1, 4, 32, dtype=torch.float64)
    u = torch.zeros(1, 1, dtype=torch.float64)
    exact = field_log_norm(model.ode, h, 0.0, u, iters=128).mu
    for k in (2, 8, 24):
        assert bool((field_log_norm(model.ode, h, 0.0, u, iters=k).mu <= exact + EXACT).all())


def test_linear_field_with_known_spectrum_is_exact():
    # f(x) = A x with A = Q diag(λ) Qᵀ + K, K skew-symmetric: (A + Aᵀ)/2 has eigenvalues λ exactly
    torch.manual_seed(0)
    d = 24
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    lam = torch.linspace(-3.0, 0.75, d, dtype=torch.float64)
    skew = torch.randn(d, d, dtype=torch.float64)
    a = q @ torch.diag(lam) @ q.T + 2.0 * (skew - skew.T)
    x = torch.randn(2, 5, d, dtype=torch.float64)
    est = log_norm(lambda z: z @ a.T, x, "token", iters=d)
    torch.testing.assert_close(est.mu, torch.full((10,), 0.75, dtype=torch.float64),
                               rtol=0, atol=EXACT)


def test_autograd_and_torch_func_products_agree():
    model = random_model("block", seed=5)
    h = torch.randn(2, 4, 32, dtype=torch.float64)
    f = field_function(model.ode, 0.7, torch.ones(2, 1, dtype=torch.float64))
    v = torch.randn_like(h)
    fast = symmetric_part_matvec(f, h, "autograd")(v)
    reference = symmetric_part_matvec(f, h, "func")(v)
    torch.testing.assert_close(fast, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ["softplus", "tanh"])
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_contractive_field_has_negative_log_norm_on_random_inputs(activation, gamma):
    # ContractiveField guarantees μ(∂F/∂H) ≤ −γ + 0.9γ = −0.1γ, so μ(α·F) ≤ −0.1γα for α > 0
    model = random_model("contractive", seed=6, scale=1.0, field_activation=activation,
                         contractive_gamma=gamma)
    alpha = float(model.ode.alpha.detach())
    h = 3.0 * torch.randn(3, 5, 32, dtype=torch.float64)
    u = torch.randn(3, 1, dtype=torch.float64)
    for tau in (0.0, 0.5, 1.0):
        mu = field_log_norm(model.ode, h, tau, u, iters=32).mu  # n = 32: exact
        assert bool((mu < 0).all())
        assert float(mu.max()) <= -0.1 * gamma * alpha + EXACT


def test_lanczos_rejects_bad_input():
    with pytest.raises(InputError, match="iters"):
        lanczos_max_eig(lambda v: v, 1, 4, 0)
    with pytest.raises(InputError, match="grouping"):
        log_norm(lambda z: z, torch.zeros(1, 2, 3, dtype=torch.float64), "layer")
    with pytest.raises(InputError, match=r"\(B, T, d\)"):
        log_norm(lambda z: z, torch.zeros(2, 3, dtype=torch.float64), "token")
