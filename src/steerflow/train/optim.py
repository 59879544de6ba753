"""The optimizer of a training run: AdamW parameter groups and the warmup + cosine schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

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


def build_optimizer(model: nn.Module, cfg: "TrainConfig"
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters and its :class:`WarmupCosine` schedule."""
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                  betas=(cfg.beta1, cfg.beta2))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio))
    return optimizer, scheduler
