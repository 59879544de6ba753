"""Helpers of the flow-analysis tests: generated WikiText-like data and small random models."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from steerflow.config import ModelConfig
from steerflow.model.gpt import SteerFlowGPT

WORDS = ("the a river city was is north south old new king war song film band team game "
         "of and in on to by , . @-@ <unk> 1990 first second played built named").split()


def generated_text(n_lines: int, seed: int) -> str:
    """WikiText-like lines: a leading space, words separated by spaces, a trailing newline."""
    rng = random.Random(seed)
    return "".join(" " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 16))) + " \n"
                   for _ in range(n_lines))


def write_data(root: Path) -> Path:
    """A data folder with generated WikiText-2 splits (the only dataset analyze flow reads)."""
    (root / "wikitext-2").mkdir(parents=True)
    for split, n, seed in (("train", 600, 0), ("valid", 120, 1), ("test", 60, 2)):
        (root / "wikitext-2" / f"{split}.txt").write_text(generated_text(n, seed), encoding="utf-8")
    return root


def random_model(field: str = "mlp", seed: int = 0, scale: float = 0.2, **overrides) -> SteerFlowGPT:
    """A tiny float64 hybrid whose ODE weights are perturbed so that α·F is far from zero."""
    torch.manual_seed(seed)
    config = ModelConfig.from_name("tiny", field=field, alpha_init=1.0, **overrides)
    model = SteerFlowGPT(config).double().eval()
    with torch.no_grad():
        for p in model.ode.field.parameters():
            p.add_(scale * torch.randn_like(p))
    return model
