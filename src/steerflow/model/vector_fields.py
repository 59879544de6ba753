"""Vector fields ``F_θ(H, τ, u)`` of the ODE block (the block integrates ``dH/dτ = α·F``).

Four kinds, chosen by ``ModelConfig.field``:

* ``mlp`` — paper 1: ``F = MLP(Concat(LN(H), τ, Broadcast(u)))``, position-wise.
* ``block`` — paper 2's view: a full causal transformer block is the vector field, so one Euler
  step of size 1 is exactly a pre-LN block; u (and τ) are concatenated into its MLP input.
* ``contractive`` — ``F = -γH + g(H, τ, u)`` with ``Lip_H(g) ≤ 0.9γ`` enforced by exact spectral
  normalisation, so the one-sided Lipschitz constant of F is at most ``-0.1γ`` (paper 2, §contractivity).
* ``depth-block`` — a causal transformer block whose weights are a smooth spline in τ through one
  block per replaced layer (:mod:`steerflow.model.depth_field`): an Euler step per layer is
  exactly the discrete stack, so a pretrained GPT-2 converts without changing its outputs.

``injection="add"`` is the ablation paper 1 argues against: u is projected to width d and added to
H *before* the LayerNorm, which can normalise the control away ("vanishing control").

A concatenated input ``[x, τ, u]`` goes through one ``nn.Linear`` whose weight we apply in
column blocks (``W_x x + W_τ τ + W_u u + b``): the same arithmetic as the concatenation, without
materialising a ``(B, T, d + 1 + c)`` tensor at every evaluation.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from steerflow.config import ModelConfig
from steerflow.errors import ConfigError
from steerflow.model.depth_field import DepthBlockField
from steerflow.model.field_base import OUTPUT_INIT_STD, ControlAdapter, ControlOut, VectorField
from steerflow.model.layers import CausalSelfAttention

_ACTIVATIONS = {"softplus": nn.Softplus, "gelu": nn.GELU, "tanh": nn.Tanh}


class ControlledLinear(nn.Module):
    """``Linear(Concat(x, τ, g·u))`` applied blockwise: ``W_x x + W_τ τ + g · W_u u + b``.

    x: ``(B, T, d_in)``, τ: scalar tensor, u: ``(B, 1, c)`` or None. The control gain ``g``
    (``ModelConfig.control_gain``) sets how fast u's effect moves under Adam, whose steps are
    about one learning rate per weight whatever the gradient: u is one input among ``d_in``
    normalised features, and at g = 1 a few hundred steps move ``W_u u`` by a fraction of one
    feature's share (:meth:`set_gain_` changes g and rescales ``W_u``: the same function).
    """

    def __init__(self, d_in: int, d_out: int, control_dim: int, time: bool, bias: bool = True,
                 gain: float = 1.0):
        super().__init__()
        self.d_in, self.control_dim, self.time, self.gain = d_in, control_dim, time, float(gain)
        self.linear = nn.Linear(d_in + int(time) + control_dim, d_out, bias=bias)

    def forward(self, x: torch.Tensor, tau: torch.Tensor, u: Optional[torch.Tensor]) -> torch.Tensor:
        W = self.linear.weight  # (d_out, d_in + time + c), columns ordered [x | τ | u]
        y = F.linear(x, W[:, : self.d_in])
        extra = self.linear.bias  # (d_out,) or None; the per-example terms are (B, 1, d_out)
        if self.time:
            t_term = tau * W[:, self.d_in]
            extra = t_term if extra is None else extra + t_term
        if self.control_dim:
            u_term = F.linear(u, W[:, self.d_in + int(self.time):])  # (B, 1, d_out)
            if self.gain != 1.0:
                u_term = self.gain * u_term
            extra = u_term if extra is None else extra + u_term
        return y if extra is None else y + extra

    @torch.no_grad()
    def set_gain_(self, gain: float) -> None:
        """Use gain ``gain`` with ``W_u`` scaled by ``old / gain``: ``g · W_u`` is unchanged."""
        self.linear.weight[:, self.d_in + int(self.time):] *= self.gain / float(gain)
        self.gain = float(gain)


def _control_width(config: ModelConfig) -> int:
    # with additive injection u enters through `u_proj`, not through the concatenated input
    return config.control_dim if config.injection == "concat" else 0


class MLPField(VectorField):
    """Paper 1's field: ``F(H, τ, u) = W₂ σ(W₁ [LN(H), τ, u] + b₁) + b₂``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.n_embd
        self.norm = nn.LayerNorm(d, bias=config.bias) if config.field_norm else nn.Identity()
        self.u_proj = (nn.Linear(config.control_dim, d, bias=False)
                       if config.injection == "add" else None)
        self.fc_in = ControlledLinear(d, config.field_hidden, _control_width(config),
                                      config.time_conditioning, gain=config.control_gain)
        self.act = _ACTIVATIONS[config.field_activation]()
        self.fc_out = nn.Linear(config.field_hidden, d)
        nn.init.normal_(self.fc_out.weight, std=OUTPUT_INIT_STD)
        nn.init.zeros_(self.fc_out.bias)
        self.u_out: Optional[ControlOut] = None
        if config.control_out:
            self.add_control_out(config.control_dim, config.control_gain)
        self.u_adapter: Optional[ControlAdapter] = None
        if config.control_adapter:
            self.add_control_adapter(config.control_dim, config.control_adapter,
                                     config.control_gain)

    def add_control_out(self, control_dim: int, gain: float) -> None:
        """Add the direct control path ``gain · W_o u`` to F, zero-initialised (the same model)."""
        self.u_out = ControlOut(control_dim, self.fc_out.out_features, gain)

    def add_control_adapter(self, control_dim: int, rank: int, gain: float) -> None:
        """Add the u-gated adapter of rank ``rank`` to F, zero-initialised (the same model)."""
        self.u_adapter = ControlAdapter(control_dim, self.fc_out.out_features, rank, gain)

    def forward(self, tau, h, u, cache=None):
        if self.u_proj is not None:
            h = h + self.u_proj(u)  # additive injection, before the LayerNorm (the ablation)
        normed = self.norm(h)  # (B, T, d)
        out = self.fc_out(self.act(self.fc_in(normed, tau, u if self.u_proj is None else None)))
        if self.u_out is not None:
            out = out + self.u_out(u)  # (B, T, d) + (B, 1, d)
        if self.u_adapter is not None:
            out = out + self.u_adapter(normed, u)  # (B, T, d), exactly 0 at u = 0
        return out

    def output_layers(self) -> list[nn.Linear]:
        return [self.fc_out]


class BlockField(VectorField):
    """A causal transformer block as the field: ``F(H) = a + MLP_u(LN₂(H + a))``, ``a = Attn(LN₁(H))``.

    ``H + F(H)`` is exactly a pre-LN block, so a 1-step Euler solve is one transformer layer.
    F is not linear in an output layer (the MLP reads ``H + a``), so α cannot be moved into it.
    """

    position_wise = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.n_embd
        self.ln_1 = nn.LayerNorm(d, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(d, bias=config.bias)
        self.u_proj = (nn.Linear(config.control_dim, d, bias=False)
                       if config.injection == "add" else None)
        self.fc_in = ControlledLinear(d, config.field_hidden, _control_width(config),
                                      config.time_conditioning, gain=config.control_gain)
        self.act = _ACTIVATIONS[config.field_activation]()
        self.fc_out = nn.Linear(config.field_hidden, d)
        nn.init.normal_(self.fc_out.weight, std=OUTPUT_INIT_STD)
        nn.init.normal_(self.attn.c_proj.weight, std=OUTPUT_INIT_STD)
        nn.init.zeros_(self.fc_out.bias)

    def forward(self, tau, h, u, cache=None):
        if self.u_proj is not None:
            h = h + self.u_proj(u)
        a = self.attn(self.ln_1(h), cache)
        x = self.fc_in(self.ln_2(h + a), tau, u if self.u_proj is None else None)
        return a + self.fc_out(self.act(x))


class ContractiveField(VectorField):
    """``F(H, τ, u) = -γ H + 0.9 γ · Ŵ₂ σ(Ŵ₁ [H, τ, u] + b₁) + b₂`` with ``Ŵ = W / ‖W‖₂``.

    σ is 1-Lipschitz (softplus or tanh) and the H-columns of Ŵ₁ have spectral norm ≤ 1, so
    ``Lip_H(g) ≤ 0.9γ`` and the log-norm of ∂F/∂H is ≤ ``-γ + 0.9γ = -0.1γ < 0``: the flow is
    contractive. Spectral norms are computed exactly (``torch.linalg.matrix_norm(ord=2)``) at each
    evaluation, so the bound holds at every step (a power-iteration estimate could undershoot).
    No LayerNorm here: its Lipschitz constant is unbounded for small-variance inputs.
    """

    _MARGIN = 0.9

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.field_activation == "gelu":
            # GELU's Lipschitz constant is about 1.13, which would void the bound.
            raise ConfigError("the contractive field needs a 1-Lipschitz activation: softplus or tanh")
        d = config.n_embd
        self.gamma = config.contractive_gamma
        self.u_proj = (nn.Linear(config.control_dim, d, bias=False)
                       if config.injection == "add" else None)
        self.fc_in = ControlledLinear(d, config.field_hidden, _control_width(config),
                                      config.time_conditioning, gain=config.control_gain)
        self.act = _ACTIVATIONS[config.field_activation]()
        self.fc_out = nn.Linear(config.field_hidden, d)

    def forward(self, tau, h, u, cache=None):
        W1 = self.fc_in.linear.weight
        scale_in = torch.linalg.matrix_norm(W1[:, : self.fc_in.d_in], ord=2)
        scale_out = torch.linalg.matrix_norm(self.fc_out.weight, ord=2)
        x = h + self.u_proj(u) if self.u_proj is not None else h
        z = self.act(self.fc_in(x, tau, u if self.u_proj is None else None) / scale_in)
        g = F.linear(z, self.fc_out.weight / scale_out, self.fc_out.bias)
        return -self.gamma * h + (self._MARGIN * self.gamma) * g


FIELDS: dict[str, type[VectorField]] = {
    "mlp": MLPField,
    "block": BlockField,
    "contractive": ContractiveField,
    "depth-block": DepthBlockField,
}


def build_field(config: ModelConfig) -> VectorField:
    """The vector field named by ``config.field``."""
    return FIELDS[config.field](config)
