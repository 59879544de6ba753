"""The controlled ODE block: ``dH/dτ = α · F_θ(H, τ, u)`` on τ ∈ [0, 1] (paper 1, Eq. 1).

Solving goes through ``torchdiffeq`` (``odeint`` / ``odeint_adjoint``). Fixed-step solves without
the adjoint can take a *fused* path (:func:`integrate_fixed`): the same Euler / midpoint / 3/8-rule
RK4 arithmetic as torchdiffeq's fixed-grid solvers written as a plain loop, which skips
torchdiffeq's per-step bookkeeping and lets generation keep one KV cache per vector-field
evaluation. ``tests/model/test_ode_block.py`` ties it to torchdiffeq. The ``per-token`` solver
(:mod:`steerflow.model.per_token`) gives every token of a position-wise field its own steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn

from steerflow.config import ModelConfig, SolverSpec
from steerflow.errors import ConfigError, InputError, SolverError
from steerflow.model.layers import KVCache
from steerflow.model.per_token import integrate_per_token
from steerflow.model.vector_fields import VectorField, build_field


@dataclass
class SolveStats:
    """What one solve cost. ``nfe_backward`` is filled in by the adjoint pass, after ``backward()``.

    A per-token solve counts batched field calls in ``nfe_forward`` and the evaluations of every
    token ``(B, T)`` in ``token_evals`` (None for the other solvers: every token takes them all).
    """

    solver: str
    nfe_forward: int = 0
    nfe_backward: int = 0
    accepted_steps: int = 0
    rejected_steps: int = 0
    tau_reached: float = 0.0
    phase: str = field(default="forward", repr=False)
    token_evals: Optional[torch.Tensor] = field(default=None, repr=False)

    def as_dict(self) -> dict:
        return {"solver": self.solver, "nfe_forward": self.nfe_forward,
                "nfe_backward": self.nfe_backward, "accepted_steps": self.accepted_steps,
                "rejected_steps": self.rejected_steps}


@dataclass
class ODESolution:
    """``states[i]`` is H at ``taus[i]`` (``states[-1]`` is H(1)); ``stats`` as in :class:`SolveStats`."""

    taus: torch.Tensor
    states: torch.Tensor  # (len(taus), B, T, d)
    stats: SolveStats

    @property
    def final(self) -> torch.Tensor:
        return self.states[-1]


class _Dynamics:
    """``(τ, H) ↦ α·F(H, τ, u)`` for one solve: binds u, counts evaluations, enforces max NFE.

    torchdiffeq calls ``callback_accept_step`` / ``callback_reject_step`` (and their ``_adjoint``
    twins during the adjoint pass) on adaptive solvers; we count them. A plain callable, not an
    ``nn.Module``: one is built per solve, and a module's construction and call machinery cost
    more than a one-token solve during generation (torchdiffeq takes any callable; the adjoint
    gets its parameters explicitly).
    """

    def __init__(self, block: "ODEBlock", u: torch.Tensor, spec: SolverSpec, stats: SolveStats,
                 caches: Optional[Sequence[KVCache]] = None) -> None:
        self.block = block
        self.u = u
        self.spec = spec
        self.stats = stats
        self.caches = caches

    def __call__(self, tau: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.forward(tau, h)

    def forward(self, tau: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        stats = self.stats
        if stats.phase == "forward":
            stats.nfe_forward += 1
            nfe = stats.nfe_forward
        else:
            stats.nfe_backward += 1
            nfe = stats.nfe_backward
        if nfe > self.spec.max_nfe:
            raise SolverError(
                f"ODE solve stopped: more than max_nfe={self.spec.max_nfe} vector-field evaluations "
                f"in the {stats.phase} pass ({self.spec.describe()}), τ reached "
                f"{float(stats.tau_reached):.4g}; loosen the tolerance, raise max_nfe or use a "
                f"fixed-step solver"
            )
        cache = None if self.caches is None else self.caches[nfe - 1]
        return self.block.alpha * self.block.field(tau, h, self.u, cache)


class _AdaptiveDynamics(_Dynamics):
    """:class:`_Dynamics` with step callbacks (torchdiffeq warns if a fixed-grid solve gets them)."""

    def callback_accept_step(self, t0, y0, dt):
        self.stats.accepted_steps += 1
        if self.stats.phase == "forward":
            self.stats.tau_reached = float((t0 + dt).detach())  # adaptive solvers only: one sync per step

    def callback_reject_step(self, t0, y0, dt):
        self.stats.rejected_steps += 1


def _all_finite(x: torch.Tensor) -> bool:
    """Whether every entry of ``x`` is finite, in one reduction pass and one host sync.

    NaN propagates into both ends of ``aminmax`` and an infinite entry is one of the ends, so the
    two extremes are finite exactly when every entry is (``isfinite(x).all()`` takes four passes).
    """
    if x.numel() == 0:
        return True
    lo, hi = torch.aminmax(x)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def integrate_fixed(func, h0: torch.Tensor, method: str, steps: int,
                    taus: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Fixed-step integration on τ ∈ [0, 1], the arithmetic of torchdiffeq's fixed-grid solvers.

    Hand-written (not torchdiffeq) only because it is the hot loop of inference and generation;
    ``method`` is ``euler``, ``midpoint`` or ``rk4`` (the 3/8 rule, as torchdiffeq's ``rk4``).
    Returns the states at ``taus`` (which must lie on the grid), default ``[0, 1]``.
    """
    dt = 1.0 / steps
    grid_index = {0: 0}
    if taus is not None:
        grid_index = {}
        for i, tau in enumerate(taus.tolist()):
            k = round(tau * steps)
            if abs(k * dt - tau) > 1e-6:
                raise SolverError(
                    f"τ={tau} is not on the {steps}-step grid of the fused {method} solver")
            grid_index[k] = i
    out: list[Optional[torch.Tensor]] = [None] * (len(taus) if taus is not None else 2)
    if 0 in grid_index:
        out[grid_index[0]] = h0
    h = h0
    for k in range(steps):
        t0 = k * dt  # τ as a Python float: no tensor allocated per step
        if method == "euler":
            h = torch.add(h, func(t0, h), alpha=dt)  # h + dt·f in one pass
        elif method == "midpoint":
            f0 = func(t0, h)
            h = torch.add(h, func(t0 + 0.5 * dt, torch.add(h, f0, alpha=0.5 * dt)), alpha=dt)
        elif method == "rk4":  # 3/8 rule (torchdiffeq's rk4_alt_step_func)
            k1 = func(t0, h)
            k2 = func(t0 + dt / 3, h + dt * k1 / 3)
            k3 = func(t0 + 2 * dt / 3, h + dt * (k2 - k1 / 3))
            k4 = func(t0 + dt, h + dt * (k1 - k2 + k3))
            h = h + (k1 + 3 * (k2 + k3) + k4) * (dt * 0.125)
        else:
            raise SolverError(f"fused path supports euler, midpoint, rk4; got {method!r}")
        if (k + 1) in grid_index:
            out[grid_index[k + 1]] = h
    if taus is None:
        out[-1] = h
    return torch.stack(out)  # (len(taus), B, T, d)


class ODEBlock(nn.Module):
    """Continuous-depth block: ``H(1) = H(0) + ∫₀¹ α·F_θ(H, τ, u) dτ`` (paper 1, Eq. 1-2).

    α is a learned scalar (paper) or per-channel vector, initialised to ``config.alpha_init``.
    Each solve stores its :class:`SolveStats` in ``last_stats``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.field: VectorField = build_field(config)
        shape = () if config.alpha_shape == "scalar" else (config.n_embd,)
        self.alpha = nn.Parameter(torch.full(shape, float(config.alpha_init)))
        self.last_stats: Optional[SolveStats] = None

    @torch.no_grad()
    def reset_alpha_(self, value: float) -> float:
        """Re-express ``α·F`` as ``value·F'`` with ``F' = (α / value)·F``: the same function.

        α and the scale of F's output layer are redundant, but not to Adam: a step moves each
        weight by about one learning rate, so it moves α·F by about α·lr. After a pretraining that
        shrank α (the `small` LM: 0.1 → 0.009 in 1500 steps), a frozen-α steering run learns
        ``value / α`` times slower than this reparametrisation lets it. Returns the old α (mean).
        """
        if not value > 0:
            raise ConfigError(f"α must be reset to a positive value, got {value}")
        old = self.alpha.detach().clone()
        self.field.scale_output_(old / value)
        self.alpha.fill_(value)
        return float(old.mean())

    def forward(self, h: torch.Tensor, u: torch.Tensor, solver: SolverSpec,
                caches: Optional[Sequence[KVCache]] = None) -> torch.Tensor:
        """H(1) from H(0) = ``h`` ``(B, T, d)`` under control ``u`` ``(B, c)``."""
        return self.solve(h, u, solver, caches=caches).final

    def solve(self, h: torch.Tensor, u: torch.Tensor, solver: SolverSpec,
              taus: Optional[Sequence[float] | torch.Tensor] = None,
              caches: Optional[Sequence[KVCache]] = None) -> ODESolution:
        """Integrate from τ=0 to τ=1 and return H at ``taus`` (default ``[0, 1]``) with stats.

        ``caches`` (one :class:`KVCache` per vector-field evaluation, fused fixed-step path only)
        lets an attention field decode incrementally.
        """
        self._check_control(h, u)
        u = u.to(h.dtype).unsqueeze(1)  # (B, 1, c): broadcast over tokens inside the field
        stats = SolveStats(solver=solver.describe())
        self.last_stats = stats
        if solver.is_per_token:
            return self._solve_per_token(h, u, solver, taus, caches, stats)
        func = (_Dynamics if solver.is_fixed_step else _AdaptiveDynamics)(self, u, solver, stats, caches)
        t = self._time_points(taus, h)
        fused = solver.is_fixed_step and solver.fused and not (solver.adjoint and torch.is_grad_enabled())
        if caches is not None and not fused:
            raise SolverError("KV caches need a fixed-step solver on the fused path")
        try:
            if fused:
                states = integrate_fixed(func, h, solver.method, solver.steps,
                                         None if taus is None else t)
            else:
                states = self._torchdiffeq_solve(func, h, t, solver, u)
        except AssertionError as exc:  # torchdiffeq signals step-size underflow with an assert
            raise SolverError(
                f"ODE solve failed ({solver.describe()}): {exc}; τ reached "
                f"{float(stats.tau_reached):.4g} after {stats.nfe_forward} evaluations — the "
                f"field is too stiff for this tolerance"
            ) from None
        stats.phase = "backward"
        if not _all_finite(states[-1]):
            raise SolverError(
                f"ODE solve produced non-finite states ({solver.describe()}, "
                f"{stats.nfe_forward} evaluations)")
        if solver.is_fixed_step:
            stats.accepted_steps = solver.steps
        stats.tau_reached = 1.0
        return ODESolution(taus=t, states=states, stats=stats)

    def _solve_per_token(self, h: torch.Tensor, u: torch.Tensor, solver: SolverSpec, taus,
                         caches, stats: SolveStats) -> ODESolution:
        """H(1) with every token on its own steps (:func:`integrate_per_token`); H at τ = 0 and 1
        only, since halted tokens have no state in between."""
        if not self.field.position_wise:
            raise ConfigError(f"the per-token solver needs a position-wise field (mlp, "
                              f"contractive); the {self.config.field!r} field mixes tokens")
        t = self._time_points(taus, h)
        if len(t) != 2 or caches is not None:
            raise SolverError("the per-token solver returns H at τ = 0 and 1 only, without KV "
                              "caches; use a fixed-step solver for states in between")
        out = integrate_per_token(lambda tau, x, v: self.alpha * self.field(tau, x, v), h, u,
                                  solver.steps, solver.rtol, solver.atol)
        stats.nfe_forward, stats.token_evals = out.calls, out.evals
        stats.accepted_steps, stats.tau_reached, stats.phase = out.calls, 1.0, "backward"
        if not _all_finite(out.final):
            raise SolverError(f"ODE solve produced non-finite states ({solver.describe()})")
        return ODESolution(taus=t, states=torch.stack([h, out.final]), stats=stats)

    def _check_control(self, h: torch.Tensor, u: torch.Tensor) -> None:
        """u must be ``(B, c)`` or ``(1, c)``: any other shape would broadcast against the tokens."""
        c = self.config.control_dim
        if not (isinstance(u, torch.Tensor) and u.ndim == 2 and u.shape[1] == c
                and u.shape[0] in (1, h.shape[0])):
            raise InputError(
                f"ODE block control u has shape {tuple(getattr(u, 'shape', ()))}; expected "
                f"({h.shape[0]}, {c}) or (1, {c}) (SteerFlowGPT.control() builds it)")

    def _time_points(self, taus, h: torch.Tensor) -> torch.Tensor:
        if taus is None:
            return torch.tensor([0.0, 1.0], dtype=h.dtype, device=h.device)
        t = torch.as_tensor(taus, dtype=h.dtype, device=h.device)
        if t.ndim != 1 or len(t) < 2 or t[0] != 0 or t[-1] != 1 or not bool((t.diff() > 0).all()):
            raise SolverError(f"taus must increase from 0 to 1, got {t.tolist()}")
        return t

    def _torchdiffeq_solve(self, func: _Dynamics, h: torch.Tensor, t: torch.Tensor,
                           solver: SolverSpec, u: torch.Tensor) -> torch.Tensor:
        # torchdiffeq's Butcher tableaus are module-level tensors: imported for the first time
        # under torch.inference_mode (e.g. by generate()), they would become inference tensors
        # that no later solve with gradients can use
        with torch.inference_mode(False):
            from torchdiffeq import odeint, odeint_adjoint

        kwargs: dict = {"method": solver.method}
        if solver.is_fixed_step:
            kwargs["options"] = {"step_size": 1.0 / solver.steps}
        else:
            kwargs["rtol"], kwargs["atol"] = solver.rtol, solver.atol
            if solver.method == "dopri8":
                # torchdiffeq's dopri8 dense output is far less accurate than its steps (at
                # rtol=1e-12: 1e-7 error vs 1e-12); land on the output times instead of interpolating
                kwargs["options"] = {"step_t": t}
        if solver.adjoint and torch.is_grad_enabled():
            params = tuple(p for p in self.parameters() if p.requires_grad)
            if u.requires_grad:
                params += (u,)
            return odeint_adjoint(func, h, t, adjoint_params=params, **kwargs)
        return odeint(func, h, t, **kwargs)


def alpha_value(block: ODEBlock) -> float:
    """α as one number (its mean when per-channel), for logging."""
    return float(block.alpha.detach().mean())

