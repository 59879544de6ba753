"""Adaptive depth per token: every token of a position-wise field takes its own Euler steps.

The ``mlp`` field (paper 1) is position-wise: ``F(H, τ, u)`` at a token reads that token's state
only, so ``dH/dτ = α·F`` is ``B·T`` independent ODEs, one per token, and each may take its own
number of steps. Paper 1 trains with a fixed grid of Euler steps and leaves adaptive computation
at inference open; this solver asks, token by token, how much of that grid is needed.

**Method.** Euler on the training grid ``τ_k = k·g``, ``g = 1 / steps``, where one step may span
several cells. A token's first step is one cell. After a step of size ``h`` from ``(τ, y)`` the
field is evaluated at the new point, which the next step needs anyway, and the difference of
Heun's step and Euler's step on the same two stages,

    e = (h / 2) · (F(τ + h, y + h·F(τ, y)) − F(τ, y))

estimates the step's local error (an embedded Heun–Euler pair: Hairer, Nørsett & Wanner, *Solving
Ordinary Differential Equations I*, §II.4), measured per token in torchdiffeq's mixed RMS norm
``‖e / (atol + rtol · max(|y|, |y + h·F|))‖_rms``. Euler's local error grows as ``h²``, so the
next step takes the most cells ``m`` with ``err · (m·g / h)² ≤ 1``, never past τ = 1. A token
whose step lands on τ = 1 halts: it is never evaluated again, and every evaluation gathers only
the tokens still running into one ``(n_active, 1, d)`` batch (real savings, not masking).

A token that takes ``n`` steps costs ``n`` evaluations (one at τ = 0 and one after every step but
the last): at least 2 (one cell, then the rest of the span in one step; 1 when ``steps = 1``), at
most ``steps`` (the full grid, exactly the fixed-grid Euler solve). Steps are not rejected and the
step that lands on τ = 1 is not checked: the estimate of one step sizes the next, as a predictive
controller does, because checking the last step would cost one more evaluation per token (a
quarter of the 4-step grid) and a rejected step one more. The steps never go below the training
grid, so a tolerance tight enough forces every token onto the full grid.

torchdiffeq's step-size controllers choose one step for a whole solve (one norm over the whole
state), never one per row, so this controller is written by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

#: ``func(τ (n, 1, 1), h (n, 1, d), u (n, 1, c)) -> α·F (n, 1, d)``: one τ per row
RowField = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class PerTokenSolve:
    """The outcome of :func:`integrate_per_token`: H(1) ``(B, T, d)``, the field evaluations of
    every token ``(B, T)`` and the number of batched field calls (the longest token's count)."""

    final: torch.Tensor
    evals: torch.Tensor
    calls: int


def _grid_values(cells: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """``cells · (1 / steps)`` as ``(n, 1, 1)`` in ``dtype``: computed in float64 and rounded once,
    as the fixed-grid loop rounds its Python-float τ and step size."""
    return (cells.double() * (1.0 / steps)).to(dtype).view(-1, 1, 1)


def error_ratio(e: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, rtol: float,
                atol: float) -> torch.Tensor:
    """Per row ``‖e / (atol + rtol · max(|y0|, |y1|))‖_rms`` over channels, ``(n, 1, d) -> (n,)``:
    torchdiffeq's error norm, one per token. ≤ 1 means the step met the tolerance."""
    scale = atol + rtol * torch.maximum(y0.abs(), y1.abs())
    return (e / scale).square().mean(dim=(1, 2)).sqrt()


def next_cells(err: torch.Tensor, cells: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """The most cells ``m ≤ left`` with ``err · (m / cells)² ≤ 1`` (at least 1): the next step of
    each token after a step of ``cells`` cells whose error ratio was ``err``. A zero error (Euler
    exact) allows the rest of the span; a non-finite one the smallest step."""
    allowed = cells.to(err.dtype) / err.sqrt()  # inf where err = 0, NaN where err is NaN
    allowed = allowed.nan_to_num(nan=1.0).clamp(min=1.0, max=float(left.max()))
    return torch.minimum(allowed.floor().long(), left)


def integrate_per_token(func: RowField, h0: torch.Tensor, u: torch.Tensor, steps: int,
                        rtol: float, atol: float) -> PerTokenSolve:
    """Integrate every token of ``h0`` ``(B, T, d)`` from τ = 0 to 1 with its own Euler steps.

    ``u`` is the control ``(B, 1, c)`` or ``(1, 1, c)``; ``func`` evaluates ``α·F`` on a batch of
    rows, each at its own τ. Differentiable by backpropagation (gathers and scatters are plain
    indexing); the step choices are not differentiated.
    """
    B, T, d = h0.shape
    n = B * T
    if n == 0:  # no tokens: nothing to evaluate
        none = torch.zeros(B, T, dtype=torch.long, device=h0.device)
        return PerTokenSolve(final=h0, evals=none, calls=0)
    y = h0.reshape(n, 1, d)
    uu = u.expand(B, T, u.shape[-1]).reshape(n, 1, u.shape[-1])
    rows = torch.arange(n, device=h0.device)  # which token each active row is
    k = torch.zeros(n, dtype=torch.long, device=h0.device)  # grid index of τ
    m = torch.ones_like(k)  # cells of the next step
    evals = torch.ones_like(k)
    f = func(_grid_values(k, steps, h0.dtype), y, uu)  # (n, 1, d)
    calls = 1
    done_rows, done_states = [], []
    while True:
        h = _grid_values(m, steps, h0.dtype)
        y_new = torch.addcmul(y, h, f)  # y + h·f: the fixed-grid loop's arithmetic
        k = k + m
        landed = k >= steps
        if bool(landed.any()):  # these tokens reached τ = 1: halt them
            done_rows.append(rows[landed])
            done_states.append(y_new[landed])
            keep = ~landed
            if not bool(keep.any()):
                break
            y, y_new, f, h, k, m, rows, uu = (t[keep] for t in (y, y_new, f, h, k, m, rows, uu))
        f_new = func(_grid_values(k, steps, h0.dtype), y_new, uu)  # only the running tokens
        calls += 1
        evals = evals.index_add(0, rows, torch.ones_like(rows))
        err = error_ratio(0.5 * h * (f_new - f), y, y_new, rtol, atol)  # Heun − Euler
        m = next_cells(err, m, steps - k)
        y, f = y_new, f_new
    final = torch.cat(done_states)
    if len(done_rows) > 1:  # tokens halted in different rounds: put each back in its place
        final = torch.zeros_like(final).index_copy(0, torch.cat(done_rows), final)
    return PerTokenSolve(final=final.view(B, T, d), evals=evals.view(B, T), calls=calls)
