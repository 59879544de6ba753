"""Conditional pretraining data: general text at u = 0 mixed with labelled text at u = label.

Paper 1 pretrains at u = 0 and gives the control its first gradient only in the steering stage,
where (measured in the steering issue) the LM loss carries at most one bit per sentence about u.
Conditional pretraining instead shows the control from step 0: each row of a global batch is a
WikiText-2 window at u = 0 with probability ``1 − share``, else a labelled sentence (SST-2) at its
label's u, whose u is dropped to 0 with probability ``u_dropout`` — so the model also learns the
labelled text unconditionally, and the contrast z(u) − z(0) isolates what u adds (the
classifier-free guidance recipe, Ho & Salimans 2022, §3.2).

The global batch is a pure function of ``(seed, step)``; rank ``r`` of ``W`` takes rows
``r·B/W .. (r+1)·B/W`` of it, as every other batch source. Evaluation is the general text's
(WikiText-2 windows at u = 0), so perplexities stay comparable with plain pretraining.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from steerflow.errors import ConfigError, DataError


class ConditionalLMSource:
    """Rows of ``lm`` (u = 0) and of ``labelled`` (u = label, dropped with ``u_dropout``)."""

    def __init__(self, lm, labelled, share: float, u_dropout: float, seed: int) -> None:
        for name, value in (("share", share), ("u_dropout", u_dropout)):
            if not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ConfigError(f"conditional pretraining: {name} must be in [0, 1], got {value!r}")
        if labelled.control_dim != lm.control_dim:
            raise ConfigError(f"labelled data has control_dim {labelled.control_dim}, the model "
                              f"{lm.control_dim}")
        self.lm, self.labelled = lm, labelled
        self.share, self.u_dropout, self.seed = float(share), float(u_dropout), int(seed)
        self.block_size = lm.block_size
        self.eval_splits = lm.eval_splits

    @property
    def tokens_per_word(self) -> dict[str, float]:
        return self.lm.tokens_per_word

    @property
    def control_dim(self) -> int:
        return self.lm.control_dim

    def row_kinds(self, step: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(labelled, dropped)`` boolean masks ``(B,)`` of the global batch at ``step``."""
        rng = np.random.default_rng([self.seed, step, 0x636F6E64])  # "cond": its own stream
        labelled = rng.random(batch_size) < self.share
        dropped = labelled & (rng.random(batch_size) < self.u_dropout)
        return labelled, dropped

    def train_batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        """This rank's ``(x (B,T), y (B,T), u (B,c))`` at ``step``."""
        if batch_size % world_size:
            raise DataError(f"batch_size {batch_size} is not divisible by world_size {world_size}")
        x, y, _ = self.lm.train_batch(step, batch_size, 0, 1)  # (B, T) general text, global
        labelled, dropped = self.row_kinds(step, batch_size)
        u = torch.zeros(batch_size, self.control_dim)
        if labelled.any():
            xl, yl, ul = self.labelled.train_batch(step, batch_size, 0, 1)  # (B, T'), T' ≤ T
            pad = self.block_size - xl.shape[1]
            xl = F.pad(xl, (0, pad), value=self.labelled.pad_id)
            yl = F.pad(yl, (0, pad), value=-1)  # padded positions have no targets
            rows = torch.from_numpy(np.flatnonzero(labelled))
            x, y = x.clone(), y.clone()
            x[rows], y[rows], u[rows] = xl[rows], yl[rows], ul[rows]
            u[torch.from_numpy(np.flatnonzero(dropped))] = 0.0
        per_rank = batch_size // world_size
        mine = slice(rank * per_rank, (rank + 1) * per_rank)
        return x[mine], y[mine], u[mine]

    def eval_batches(self, split: str, batch_size: int) -> Iterator:
        """The general text's evaluation windows at u = 0."""
        return self.lm.eval_batches(split, batch_size)

    def describe(self) -> dict[str, Any]:
        return {"name": "conditional", "share": self.share, "u_dropout": self.u_dropout,
                "general": self.lm.describe(), "labelled": self.labelled.describe()}
