"""Perturbation growth along the flow against the log-norm bound ``exp(∫ μ dτ)`` (paper 2).

For ``dH/dτ = f(H, τ)`` a perturbation δ obeys, to first order, ``dδ/dτ = J(H(τ), τ) δ``, and
``d‖δ‖/dτ ≤ μ(J) ‖δ‖`` gives Grönwall's bound

    ‖δH(τ)‖ / ‖δH(0)‖ ≤ exp(∫₀^τ μ(s) ds),  μ(s) = λ_max((J + Jᵀ)/2) at H(s).

We integrate the unperturbed and a perturbed trajectory with the same fixed-step solver, measure
the ratio on a τ grid, estimate μ along the unperturbed trajectory with
:func:`~steerflow.analysis.lognorm.field_log_norm`, and integrate it with the trapezoid rule.
Ratios are per token for a position-wise field (each token's δ evolves on its own) and per
sequence for an attention field. :func:`stack_perturbation_growth` measures the same through a
discrete residual stack against ``exp(Σ μ_l)``, the bound its ODE reading would give.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from steerflow.analysis.lognorm import field_grouping, field_log_norm, forward_ad_attention
from steerflow.config import SolverSpec
from steerflow.errors import InputError

#: relative slack for counting a violation: the bound is checked up to the first-order
#: (linearisation), quadrature and Lanczos errors, each ≲ 1e-3 here (see :class:`PerturbationResult`)
DEFAULT_TOLERANCE = 1e-2


@dataclass
class PerturbationResult:
    """Measured growth and its bound on a τ grid, for one control value.

    Attributes:
        taus: ``(K,)`` grid on [0, 1] (for a discrete stack the depths ``0, …, L``).
        mu: ``(K, P)`` log-norm along the unperturbed trajectory (P tokens or sequences); for a
            discrete stack ``(L, P)``, one row per layer.
        ratio: ``(K, P)`` ``‖δH(τ)‖ / ‖δH(0)‖``.
        bound: ``(K, P)`` ``exp(∫₀^τ μ)`` (trapezoid rule).
        lanczos_residual: ``(K, P)`` residual of each μ estimate.
        grouping: ``"token"`` or ``"sequence"``.
        tolerance: relative slack used by :meth:`violations`.
    """

    taus: torch.Tensor
    mu: torch.Tensor
    ratio: torch.Tensor
    bound: torch.Tensor
    lanczos_residual: torch.Tensor
    grouping: str
    tolerance: float = DEFAULT_TOLERANCE

    def violations(self) -> int:
        """How many (τ > 0, token/sequence) points have ratio > bound·(1 + tolerance)."""
        return int((self.ratio[1:] > self.bound[1:] * (1 + self.tolerance)).sum())

    @property
    def max_ratio_over_bound(self) -> float:
        """The largest measured/bound over τ > 0 (at τ = 0 both are 1 by construction)."""
        return float((self.ratio[1:] / self.bound[1:]).max())


def cumulative_trapezoid(values: torch.Tensor, taus: torch.Tensor) -> torch.Tensor:
    """``∫₀^{τ_k} values dτ`` for every grid point k (values ``(K, ...)``), trapezoid rule."""
    widths = taus.diff().reshape(-1, *([1] * (values.ndim - 1)))  # (K-1, 1, ...)
    steps = 0.5 * (values[1:] + values[:-1]) * widths
    return torch.cat([torch.zeros_like(values[:1]), steps.cumsum(0)])


def _group_norm(x: torch.Tensor, grouping: str) -> torch.Tensor:
    """‖x‖ per token ``(B·T,)`` or per sequence ``(B,)`` for ``x`` of shape ``(..., B, T, d)``."""
    if grouping == "token":
        return x.norm(dim=-1).flatten(-2)
    return x.flatten(-2).norm(dim=-1)


def random_perturbation(h0: torch.Tensor, eps: float, grouping: str,
                        generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A random δ with ‖δ‖ = eps·‖H0‖ for every token (or sequence)."""
    delta = torch.randn(h0.shape, dtype=h0.dtype, device=h0.device, generator=generator)
    if grouping == "token":
        return delta * (eps * h0.norm(dim=-1, keepdim=True) / delta.norm(dim=-1, keepdim=True))
    scale = eps * h0.flatten(1).norm(dim=1) / delta.flatten(1).norm(dim=1)
    return delta * scale[:, None, None]


def perturbation_growth(ode_block, h0: torch.Tensor, u: torch.Tensor, grid_points: int = 17,
                        steps: int = 64, eps: float = 1e-6, lanczos_iters: int = 32,
                        seed: int = 0, tolerance: float = DEFAULT_TOLERANCE) -> PerturbationResult:
    """Perturbation growth of the ODE block's flow from ``h0`` ``(B, T, d)`` under ``u`` ``(B, c)``.

    The trajectories use rk4 with ``steps`` steps (``grid_points − 1`` must divide it); run in
    float64 so that ``eps`` can be small (first-order regime) without roundoff in the difference.
    """
    if grid_points < 2 or steps % (grid_points - 1):
        raise InputError(f"grid_points - 1 = {grid_points - 1} must divide steps = {steps}")
    if not 0 < eps < 1:
        raise InputError(f"eps must be in (0, 1), got {eps}")
    grouping = field_grouping(ode_block)
    taus = torch.linspace(0, 1, grid_points, dtype=h0.dtype, device=h0.device)
    spec = SolverSpec(method="rk4", steps=steps)
    generator = torch.Generator(device=h0.device).manual_seed(seed)
    delta0 = random_perturbation(h0, eps, grouping, generator)
    with torch.no_grad():
        path = ode_block.solve(h0, u, spec, taus=taus).states  # (K, B, T, d)
        perturbed = ode_block.solve(h0 + delta0, u, spec, taus=taus).states
    ratio = _group_norm(perturbed - path, grouping) / _group_norm(delta0, grouping)  # (K, P)
    estimates = [field_log_norm(ode_block, path[k], float(tau), u, lanczos_iters, seed)
                 for k, tau in enumerate(taus.tolist())]
    mu = torch.stack([e.mu for e in estimates])  # (K, P)
    residual = torch.stack([e.residual for e in estimates])
    bound = torch.exp(cumulative_trapezoid(mu, taus))  # Grönwall: exp(∫ μ dτ)
    return PerturbationResult(taus, mu, ratio, bound, residual, grouping, tolerance)


def stack_perturbation_growth(updates: Sequence, estimates: Sequence, seed: int = 0,
                              tolerance: float = DEFAULT_TOLERANCE) -> PerturbationResult:
    """Perturbation growth through a discrete residual stack against ``exp(Σ_{l<k} μ_l)``.

    ``updates`` are :class:`~steerflow.analysis.discrete.Update` records of
    ``x_{l+1} = x_l + f_l(x_l)`` (each with its branch ``f_l``) and ``estimates`` the per-sequence
    log-norms of those branches (:func:`~steerflow.analysis.discrete.branch_log_norms`). A random
    input direction δ is carried through the linearised stack, ``δ_{l+1} = (I + J_l) δ_l`` with
    ``J_l δ_l`` a Jacobian-vector product at ``x_l``: the first-order growth exactly, without the
    cancellation of a finite difference (which a model that computes part of a layer in float32,
    as transformers' Llama RMSNorm does, would turn into percent-level errors). ``taus`` are the
    depths ``0, …, L``; ``mu`` and ``lanczos_residual`` have one row per layer ``(L, B)``.

    ``‖I + J_l‖ ≤ 1 + μ_l + ‖J_l‖²/2`` (from ``(I + J)ᵀ(I + J) = I + 2S + JᵀJ``), so
    ``exp(Σ μ_l)`` — Grönwall's bound for the ODE the stack discretises with unit Euler steps —
    holds up to the ``O(‖J_l‖²)`` terms of each step: a measured growth above it says the stack
    is not ODE-like there, not that the estimate is wrong.
    """
    if len(updates) != len(estimates) or any(u.branch is None for u in updates):
        raise InputError("every update needs its residual branch and a log-norm estimate")
    x0 = updates[0].x
    generator = torch.Generator(device=x0.device).manual_seed(seed)
    delta = random_perturbation(x0, 1.0, "sequence", generator)  # a direction; growth is linear
    norm0, ratios = _group_norm(delta, "sequence"), [torch.ones(x0.shape[0], dtype=x0.dtype,
                                                                device=x0.device)]
    with forward_ad_attention():  # math attention: twice differentiable, for the jvp
        for upd in updates:
            _, jv = torch.autograd.functional.jvp(upd.branch, upd.x, delta)  # J_l δ_l
            delta = (delta + jv).detach()  # δ_{l+1} = (I + J_l) δ_l
            ratios.append(_group_norm(delta, "sequence") / norm0)
    mu = torch.stack([e.mu for e in estimates])  # (L, B)
    bound = torch.exp(torch.cat([torch.zeros_like(mu[:1]), mu.cumsum(0)]))  # exp(Σ_{l<k} μ_l)
    taus = torch.arange(len(updates) + 1, dtype=x0.dtype, device=x0.device)
    return PerturbationResult(taus, mu, torch.stack(ratios), bound,
                              torch.stack([e.residual for e in estimates]), "sequence", tolerance)
