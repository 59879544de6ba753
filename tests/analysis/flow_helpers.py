"""Helpers of the flow-analysis tests: small random models."""

from __future__ import annotations

import torch

from steerflow.config import ModelConfig
from steerflow.model.gpt import SteerFlowGPT

# float64 throughout: a Krylov space of full dimension n reproduces λ_max up to a few ulps of
# ‖S‖ (~1e-15 relative); 1e-10 leaves room for the accumulated roundoff of n matvecs.
EXACT = 1e-10


def random_model(field: str = "mlp", seed: int = 0, scale: float = 0.2, **overrides) -> SteerFlowGPT:
    """A tiny float64 hybrid whose ODE weights are perturbed so that α·F is far from zero."""
    torch.manual_seed(seed)
    config = ModelConfig.from_name("tiny", field=field, alpha_init=1.0, **overrides)
    model = SteerFlowGPT(config).double().eval()
    with torch.no_grad():
        for p in model.ode.field.parameters():
            p.add_(scale * torch.randn_like(p))
    return model
