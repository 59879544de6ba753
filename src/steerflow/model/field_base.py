"""What every vector field shares: the :class:`VectorField` interface and the zero-initialised
control paths :class:`ControlOut` and :class:`ControlAdapter`. The fields themselves live in :mod:`steerflow.model.vector_fields`
and :mod:`steerflow.model.depth_field`."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from steerflow.errors import ConfigError
from steerflow.model.layers import KVCache

#: std of the near-zero init of every field's output layer (the reference code's choice: the
#: block starts close to the identity map and α·F grows only as training asks for it).
OUTPUT_INIT_STD = 1e-3


class ControlOut(nn.Module):
    """A zero-initialised control path ``g · W_o u``, ``W_o ∈ R^{d×c}``: the model is unchanged
    until training moves ``W_o``. The mlp field's direct control path and the depth-block
    field's control input.

    Through ``fc_in`` alone, u reaches F only via ``fc_out``, whose near-zero init leaves the
    gradient of ``W_u`` tiny and a short steering run with almost no u-effect (measured on
    ``small``: logits move by 0.04 between u = ±1 after 150 steps). This path writes a learned
    direction per control axis into the residual stream at every τ, as a learned ActAdd vector
    inside the flow; ``g`` is the control gain
    (:class:`~steerflow.model.vector_fields.ControlledLinear`).
    """

    def __init__(self, control_dim: int, d_out: int, gain: float = 1.0) -> None:
        super().__init__()
        self.linear = nn.Linear(control_dim, d_out, bias=False)
        nn.init.zeros_(self.linear.weight)
        self.gain = float(gain)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.gain * self.linear(u)  # (B, 1, c) -> (B, 1, d)

    @torch.no_grad()
    def set_gain_(self, gain: float) -> None:
        """Use gain ``gain`` with ``W_o`` scaled by ``old / gain`` (the same function)."""
        self.linear.weight *= self.gain / float(gain)
        self.gain = float(gain)


class ControlAdapter(nn.Module):
    """A u-gated adapter ``g · Σ_a u_a · B_a σ(A x)``, ``A ∈ R^{r×d}``, ``B_a ∈ R^{d×r}``, B zero-initialised.

    :class:`ControlOut` writes the *same* direction at every token; the contrast it learns to imitate
    (DExperts, Liu et al. 2021, Eq. 1: ``z_base + u·α·(z_expert − z_anti)``) is context-dependent and
    linear in u. This path is both: its output depends on the token's state ``x`` (the field's
    normalised input) and is exactly linear in u, so u = 0 is the pretrained field whatever the
    weights. ``A`` keeps PyTorch's default init and ``B = 0``, so the model is unchanged until
    training moves ``B`` (as LoRA starts, Hu et al. 2021).
    """

    def __init__(self, control_dim: int, d: int, rank: int, gain: float = 1.0) -> None:
        super().__init__()
        if rank < 1:
            raise ConfigError(f"control_adapter rank must be >= 1, got {rank}")
        self.control_dim, self.rank, self.gain = int(control_dim), int(rank), float(gain)
        self.down = nn.Linear(d, rank)
        self.up = nn.Linear(rank * control_dim, d, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, T, d)`` the field's normalised input, ``u`` ``(B, 1, c)`` → ``(B, T, d)``."""
        a = torch.nn.functional.silu(self.down(x))  # (B, T, r)
        gated = (a.unsqueeze(-1) * u.unsqueeze(-2)).flatten(-2)  # (B, T, r·c): u_a · σ(A x) per axis
        return self.gain * self.up(gated)

    @torch.no_grad()
    def set_gain_(self, gain: float) -> None:
        """Use gain ``gain`` with ``B`` scaled by ``old / gain`` (the same function)."""
        self.up.weight *= self.gain / float(gain)
        self.gain = float(gain)


class VectorField(nn.Module):
    """Base class. ``forward(tau, h, u, cache=None)`` → ``F(H, τ, u)`` of shape ``(B, T, d)``.

    ``position_wise`` is True when F at a token depends on that token only (no attention): then
    generation can integrate the new tokens alone, and the per-token solver calls the field on
    rows ``h`` ``(n, 1, d)`` with one τ per row (``tau`` a ``(n, 1, 1)`` tensor, ``u`` ``(n, 1, c)``).
    """

    position_wise: bool = True

    def forward(self, tau: torch.Tensor, h: torch.Tensor, u: torch.Tensor,
                cache: Optional[KVCache] = None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def output_layers(self) -> list[nn.Linear]:
        """The layers whose outputs F is a sum of, so ``F(c·W) = c·F(W)`` for these weights.

        Empty when F is not linear in its output layers (then α cannot be moved into F).
        """
        return []

    @torch.no_grad()
    def scale_output_(self, factor: torch.Tensor) -> None:
        """Multiply F by ``factor`` (a scalar or one value per channel) in place, exactly."""
        layers = self.output_layers()
        if not layers:
            raise ConfigError(f"{type(self).__name__} is not linear in an output layer; its "
                              f"output cannot be rescaled")
        for layer in layers:
            column = factor.reshape(-1, 1) if factor.ndim else factor  # rows = output channels
            layer.weight.mul_(column)
            if layer.bias is not None:
                layer.bias.mul_(factor)
