"""The depth-block field: a causal transformer block whose weights move smoothly with depth.

With K knots (one per layer the ODE block replaces) at the Euler grid points ``τ_k = k/K``::

    F(H, τ, u) = K · (a + m),   a = Attn_{W(τ)}(LN₁(H)),   m = MLP_{W(τ)}(LN₂(H + a)) (+ g·W_u u inside)
    W(τ) = Σ_k b_k(τ) W_k

where ``b_k`` are the cardinal functions of the natural cubic spline through the knots, extended
linearly past the end knots (so W is C² in τ), and ``W_k`` are the weights of the ``k``-th knot
block. ``W(τ_k) = W_k`` exactly, so with α = 1 the K-step Euler solve
``H ← H + (1/K)·K·(a_k + m_k)`` is the stack of the K blocks (Chen et al. 2018's residual-step
view, paper 2), while adaptive solvers integrate the smooth field between the knots. This is
what lets a pretrained GPT-2 become a continuous-depth model without changing its outputs
(:mod:`steerflow.hf.convert`).

u enters as in the other fields — added to the MLP's input layer (``injection="concat"``) or to H
before LN₁ (``"add"``) — through :class:`~steerflow.model.field_base.ControlOut`, whose weights
start at zero: a converted model ignores u until steering training moves them. The knots are
ordinary :class:`~steerflow.model.layers.Block` modules (``layers.k``) with the discrete blocks'
parameter names and shapes (MLP width 4d, GELU per ``config.gelu_approximate``).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from steerflow.config import ModelConfig
from steerflow.model.field_base import OUTPUT_INIT_STD, ControlOut, VectorField
from steerflow.model.layers import Block, KVCache, causal_attention

#: τ·K within this of an integer k counts as the knot τ_k (the fused solver's τ = k·(1/K) can be
#: off by an ulp); there the knot's own tensors are used, bit for bit
KNOT_TOLERANCE = 1e-6


def spline_curvatures(size: int) -> list[list[float]]:
    """``S`` with ``M = S y``: second derivatives of the natural cubic spline through values ``y``
    at knots ``0, 1, …, size−1`` (unit spacing; ``M_0 = M_{size−1} = 0``).

    Solves ``M_{i−1} + 4 M_i + M_{i+1} = 6 (y_{i−1} − 2 y_i + y_{i+1})`` by the Thomas algorithm
    for each unit vector y, in plain Python floats (no tensor: the model may live on ``meta``).
    """
    curv = [[0.0] * size for _ in range(size)]  # curv[i][j] = M_i for y = e_j
    inner = size - 2
    for j in range(size):
        rhs = [6.0 * ((i - 1 == j) - 2.0 * (i == j) + (i + 1 == j)) for i in range(1, size - 1)]
        diag, sol = [4.0] * inner, rhs[:]
        for i in range(1, inner):  # forward sweep on the tridiagonal (1, 4, 1) system
            ratio = 1.0 / diag[i - 1]
            diag[i] -= ratio
            sol[i] -= ratio * sol[i - 1]
        for i in reversed(range(inner)):
            nxt = sol[i + 1] if i + 1 < inner else 0.0
            sol[i] = (sol[i] - nxt) / diag[i]
        for i in range(inner):
            curv[i + 1][j] = sol[i]
    return curv


def spline_coefficients(x: float, curv: list[list[float]]) -> list[float]:
    """``b_j(x)``: the weight of knot j in the natural cubic spline at ``x`` (knots at 0 … K−1),
    extended linearly past both ends."""
    size = len(curv)
    if size == 1:
        return [1.0]
    if x > size - 1 or x < 0:  # linear: the end value plus the end slope times the distance
        end = size - 1 if x > 0 else 0
        inner = end - 1 if x > 0 else 1
        sign = 1.0 if x > 0 else -1.0
        return [(j == end) + (x - end) * sign * ((j == end) - (j == inner) + curv[inner][j] / 6.0)
                for j in range(size)]
    i = min(int(math.floor(x)), size - 2)
    t = x - i
    s = 1.0 - t
    return [s * (j == i) + t * (j == i + 1)
            + ((s ** 3 - s) * curv[i][j] + (t ** 3 - t) * curv[i + 1][j]) / 6.0
            for j in range(size)]


class DepthBlockField(VectorField):
    """``F(H, τ, u) = K · (a + m)`` with block weights ``W(τ)`` splined through K knot blocks."""

    position_wise = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        start, end = config.ode_span
        self.n_knots = end - start
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.gelu_approximate = config.gelu_approximate
        self.layers = nn.ModuleList(Block(config) for _ in range(self.n_knots))
        self.curvatures = spline_curvatures(self.n_knots)
        c, d = config.control_dim, config.n_embd
        concat = config.injection == "concat"
        self.u_in = ControlOut(c, 4 * d, config.control_gain) if concat else None
        self.u_proj = None if concat else ControlOut(c, d, config.control_gain)
        self._init_knots()

    @torch.no_grad()
    def _init_knots(self) -> None:
        """GPT-2's init for the first knot, output projections near zero (as the block field),
        copied to every knot: the field starts depth-independent."""
        first = self.layers[0]
        for module in first.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(first.attn.c_proj.weight, std=OUTPUT_INIT_STD)
        nn.init.normal_(first.mlp.c_proj.weight, std=OUTPUT_INIT_STD)
        for layer in self.layers[1:]:
            layer.load_state_dict(first.state_dict())

    def weights_at(self, tau: float) -> dict[str, torch.Tensor]:
        """``W(τ)`` by parameter name (``ln_1.weight``, ``attn.c_attn.weight``, …): at a knot the
        knot block's own tensors, elsewhere the spline's weighted sum of all knots."""
        x = tau * self.n_knots
        k = round(x)
        if abs(x - k) < KNOT_TOLERANCE and 0 <= k < self.n_knots:
            return dict(self.layers[k].named_parameters())
        coeffs = spline_coefficients(x, self.curvatures)
        knots = [dict(layer.named_parameters()) for layer in self.layers]
        return {name: sum(b * knot[name] for b, knot in zip(coeffs, knots)) for name in knots[0]}

    def forward(self, tau, h: torch.Tensor, u: torch.Tensor,
                cache: Optional[KVCache] = None) -> torch.Tensor:
        w = self.weights_at(float(tau.detach()) if isinstance(tau, torch.Tensor) else float(tau))
        drop = self.dropout if self.training else 0.0
        if self.u_proj is not None:
            h = h + self.u_proj(u)  # (B, T, d) + (B, 1, d)
        eps = self.layers[0].ln_1.eps
        x = F.layer_norm(h, h.shape[-1:], w["ln_1.weight"], w.get("ln_1.bias"), eps)
        y = causal_attention(F.linear(x, w["attn.c_attn.weight"], w.get("attn.c_attn.bias")),
                             self.n_head, cache, drop)  # (B, T, d)
        a = F.dropout(F.linear(y, w["attn.c_proj.weight"], w.get("attn.c_proj.bias")),
                      self.dropout, self.training)
        x = F.layer_norm(h + a, h.shape[-1:], w["ln_2.weight"], w.get("ln_2.bias"), eps)
        z = F.linear(x, w["mlp.c_fc.weight"], w.get("mlp.c_fc.bias"))  # (B, T, 4d)
        if self.u_in is not None:
            z = z + self.u_in(u)  # (B, 1, 4d): g·W_u u, zero until trained
        z = F.gelu(z, approximate=self.gelu_approximate)
        m = F.dropout(F.linear(z, w["mlp.c_proj.weight"], w.get("mlp.c_proj.bias")),
                      self.dropout, self.training)
        return self.n_knots * (a + m)
