"""Convergence order of fixed-step solvers: error against the number of steps N, slope by regression.

A method of order p has global error ``C·N^(−p)`` once N is large enough (the *asymptotic range*)
and before the error reaches the floor set by the reference's own error and float64 roundoff.
We fit ``log err = a + s·log N`` by least squares on the finest points above that floor; the
slope ``s`` should be ≈ −1 (Euler), −2 (midpoint), −4 (torchdiffeq's rk4, the 3/8 rule).
Paper 2's claim that a residual stack converges to its ODE at rate O(1/N) is the Euler case.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from steerflow.analysis.settings import DEFAULT_STEPS, EXPECTED_ORDER, check_methods
from steerflow.config import SolverSpec
from steerflow.errors import InputError

#: roundoff floor in units of eps·‖H‖: N steps accumulate ~√N·eps·‖H‖ (≤ 8 eps‖H‖ at N = 64),
#: so 100 leaves an order of magnitude of margin
ROUNDOFF_FACTOR = 100.0


@dataclass
class OrderFit:
    """The least-squares slope of log error against log N (None when too few usable points)."""

    method: str
    expected: int
    slope: Optional[float]
    intercept: Optional[float]
    used_steps: list[int]
    local_slopes: list[Optional[float]]
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def loglog_fit(xs: Sequence[float], ys: Sequence[Optional[float]]
               ) -> tuple[Optional[float], Optional[float]]:
    """Least-squares line ``log y = intercept + slope · log x``: ``(slope, intercept)``.

    Only pairs with ``x > 0`` and a finite ``y > 0`` enter the fit; with fewer than two distinct
    ``x`` among them there is no line and the result is ``(None, None)``. Every log-log slope in
    :mod:`steerflow.analysis` (convergence orders, NFE growth) is fitted here.
    """
    pairs = [(x, y) for x, y in zip(xs, ys)
             if y is not None and x > 0 and math.isfinite(y) and y > 0]
    if len({x for x, _ in pairs}) < 2:
        return None, None
    slope, intercept = np.polyfit(np.log([x for x, _ in pairs]), np.log([y for _, y in pairs]), 1)
    return float(slope), float(intercept)


def local_slopes(steps: Sequence[int], errors: Sequence[float]) -> list[Optional[float]]:
    """``log(e_{i+1}/e_i) / log(N_{i+1}/N_i)`` between consecutive points (None if an error is 0)."""
    out: list[Optional[float]] = []
    for (n0, e0), (n1, e1) in zip(zip(steps, errors), zip(steps[1:], errors[1:])):
        ok = e0 > 0 and e1 > 0 and math.isfinite(e0) and math.isfinite(e1)
        out.append(math.log(e1 / e0) / math.log(n1 / n0) if ok else None)
    return out


def fit_order(method: str, steps: Sequence[int], errors: Sequence[float], floor: float = 0.0,
              window: int = 4, min_points: int = 2) -> OrderFit:
    """Fit the slope of log error vs log N on the ``window`` finest points with error above ``floor``.

    Points at or below ``floor`` (reference error / roundoff) carry no information on the order.
    Among the others the finest ones (largest N) are the most asymptotic.
    """
    if len(steps) != len(errors):
        raise InputError(f"{len(steps)} step counts but {len(errors)} errors")
    if window < min_points:
        raise InputError(f"window={window} must be >= min_points={min_points}")
    usable = [(n, e) for n, e in zip(steps, errors) if math.isfinite(e) and e > floor]
    usable = sorted(usable)[-window:]
    expected = EXPECTED_ORDER.get(method, 0)
    slopes = local_slopes(list(steps), list(errors))
    if len(usable) < min_points:
        return OrderFit(method, expected, None, None, [n for n, _ in usable], slopes,
                        reason=f"only {len(usable)} point(s) above the error floor {floor:.2e}")
    slope, intercept = loglog_fit([n for n, _ in usable], [e for _, e in usable])
    reason = "" if slope is not None else "the points above the error floor share one step count"
    return OrderFit(method, expected, slope, intercept, [n for n, _ in usable], slopes, reason)


@dataclass
class ConvergenceStudy:
    """Errors of each method at each N, the floor below which points are ignored, and the fits."""

    steps: list[int]
    errors: dict[str, list[float]]
    floor: float
    fits: dict[str, OrderFit]
    info: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"steps": self.steps, "errors": self.errors, "floor": self.floor,
                "fits": {m: f.as_dict() for m, f in self.fits.items()}, **self.info}


def convergence_study(solve: Callable[[SolverSpec], torch.Tensor], reference: torch.Tensor,
                      scale: float, floor: float, methods: Sequence[str] = tuple(EXPECTED_ORDER),
                      steps: Sequence[int] = DEFAULT_STEPS, window: int = 4) -> ConvergenceStudy:
    """Errors ``‖solve(method, N) − reference‖ / scale`` for every method and N, and fitted orders.

    Args:
        solve: returns the end state for a fixed-step :class:`SolverSpec`.
        reference: the (near-)exact end state.
        scale: the error's unit (e.g. the norm of the displacement ``‖H(1) − H(0)‖``).
        floor: errors at or below this (same unit) are excluded from the fit.
    """
    check_methods(methods, steps)
    steps = sorted(int(n) for n in set(steps))
    errors = {m: [] for m in methods}
    for method in methods:
        for n in steps:
            end = solve(SolverSpec(method=method, steps=n))
            errors[method].append(float((end - reference).norm() / scale))
    fits = {m: fit_order(m, steps, errors[m], floor, window) for m in methods}
    return ConvergenceStudy(steps, errors, floor, fits)


def roundoff_floor(state: torch.Tensor) -> float:
    """The roundoff level ``ROUNDOFF_FACTOR · eps · ‖state‖`` of a state in its dtype."""
    return ROUNDOFF_FACTOR * torch.finfo(state.dtype).eps * float(state.norm())


def ode_block_convergence(ode_block, h0: torch.Tensor, u: torch.Tensor,
                          methods: Sequence[str] = tuple(EXPECTED_ORDER),
                          steps: Sequence[int] = DEFAULT_STEPS, ref_rtol: float = 1e-12,
                          window: int = 4) -> ConvergenceStudy:
    """Convergence study of a model's ODE block from ``h0`` ``(B, T, d)`` under control ``u`` ``(B, c)``.

    Runs in the dtype of ``h0`` (use float64). The reference is dopri8 at ``ref_rtol``; a second
    dopri8 solve at ``10·ref_rtol`` bounds its error (the looser solve's error is the larger one,
    so ``‖ref − check‖`` over-estimates the reference's). Errors are relative to the
    displacement ``‖H(1) − H(0)‖``, the part of the state the solver actually computes.
    """
    reference_spec = SolverSpec(method="dopri8", steps=None, rtol=ref_rtol, atol=ref_rtol * 1e-2,
                                max_nfe=1_000_000)
    with torch.no_grad():
        ref_solution = ode_block.solve(h0, u, reference_spec)
        reference = ref_solution.final
        check = ode_block.solve(h0, u, reference_spec.replace(rtol=10 * ref_rtol,
                                                              atol=10 * reference_spec.atol)).final
        scale = float((reference - h0).norm())
        if scale == 0:
            raise InputError("the ODE block does not move its input (α·F = 0): no order to measure")
        ref_gap = float((reference - check).norm())
        floor = max(ref_gap, roundoff_floor(reference)) / scale
        study = convergence_study(lambda spec: ode_block.solve(h0, u, spec).final, reference, scale,
                                  floor, methods, steps, window)
    study.info = {"reference": reference_spec.describe(),
                  "reference_nfe": ref_solution.stats.nfe_forward,
                  "reference_gap": ref_gap / scale,
                  "displacement_over_state": scale / float(reference.norm())}
    return study
