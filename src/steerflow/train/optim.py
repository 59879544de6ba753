"""The optimizer of a training run: AdamW parameter groups, the warmup + cosine schedule, and the
max-norm constraint on the ODE field's output layer.

AdamW's decay reaches the field: its weight matrices are in the decayed group (only biases,
LayerNorms, α and embeddings are not). Decay pulls toward zero, though, not toward a bound: it is
``lr · weight_decay`` of each weight per step, far smaller than Adam's ~``lr`` steps once a
steering loss keeps pushing one way, and with α reset to 1 for steering (``steer_alpha_value``)
the field's output layer carries all of α·F's scale. ``field_max_norm`` bounds it instead: after
every optimizer step the output layer's weight is scaled back to Frobenius norm R when it is
larger (the max-norm constraint used with dropout, Srivastava et al., JMLR 2014, §5.1, here on
the whole matrix rather than per unit). ``‖W‖_F ≥ ‖W‖₂``, so for the ``mlp`` field
``‖F‖ ≤ R · ‖σ(·)‖ + ‖b‖``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch
from torch import nn

from steerflow.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from steerflow.train.config import TrainConfig


@dataclass
class WarmupCosine:
    """LR multiplier: linear warmup to 1 over ``warmup`` steps, cosine to ``min_ratio`` at ``total``.

    ``m(s) = (s+1)/W`` for ``s < W``; then ``r + (1-r)·(1 + cos(π·p))/2`` with
    ``p = (s-W)/(total-W)`` (nanoGPT's schedule). A plain object so LambdaLR can save its state.
    """

    warmup: int
    total: int
    min_ratio: float

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """nanoGPT-style AdamW groups: decay on weight matrices only; none on biases, LayerNorms,
    α (a 0-d tensor) and embeddings. Frozen parameters are left out."""
    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding)
                  for p in m.parameters()}
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or id(p) in embeddings else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: "TrainConfig", extra: Sequence[torch.Tensor] = ()
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters and its :class:`WarmupCosine` schedule.

    ``extra``: parameters of the objectives (GeDi's logit scale), a third group without decay,
    added only when there are some (so other runs keep their optimizer state's layout).
    """
    groups = param_groups(model, cfg.weight_decay)
    if extra:
        groups.append({"params": list(extra), "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio))
    return optimizer, scheduler


def field_output_layer(model: nn.Module) -> nn.Linear:
    """The output layer of the ODE block's vector field (``fc_out`` of every built-in field)."""
    ode = getattr(model, "ode", None)
    if ode is None:
        raise ConfigError("field_max_norm constrains the ODE block's vector field; this model is "
                          "a discrete baseline without one")
    layers = ode.field.output_layers() or [getattr(ode.field, "fc_out", None)]
    if len(layers) != 1 or not isinstance(layers[0], nn.Linear):
        raise ConfigError(f"field_max_norm needs a field with one linear output layer; "
                          f"{type(ode.field).__name__} has none")
    return layers[0]


class FieldMaxNorm:
    """``W ← W · min(1, R / ‖W‖_F)`` on the field's output layer (module docstring)."""

    def __init__(self, layer: nn.Linear, max_norm: float) -> None:
        self.layer, self.max_norm = layer, float(max_norm)

    @torch.no_grad()
    def __call__(self) -> float:
        """Apply the constraint in place; return the weight's norm after it."""
        weight = self.layer.weight
        norm = torch.linalg.matrix_norm(weight.float())
        if bool(norm > self.max_norm):
            weight.mul_((self.max_norm / norm).to(weight.dtype))
            norm = torch.linalg.matrix_norm(weight.float())
        return float(norm)


def build_field_constraint(model: nn.Module, cfg: "TrainConfig") -> Optional[FieldMaxNorm]:
    """The run's :class:`FieldMaxNorm` (None unless ``cfg.field_max_norm``)."""
    if cfg.field_max_norm is None:
        return None
    return FieldMaxNorm(field_output_layer(model), cfg.field_max_norm)
